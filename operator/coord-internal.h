/* What the coordination server's files share: coord.c (sessions, HTTP
 * handlers, lifecycle), mapstream.c (publishing Devices, feeding map
 * streams, soft state) over changelog.c (the change log, pure), and
 * register.c (the worker pool: registration, logout, online writes).
 * Not for other modules: they use coord.h. */
#ifndef KNIT_OPERATOR_COORD_INTERNAL_H
#define KNIT_OPERATOR_COORD_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "buf.h"
#include "changelog.h"
#include "control/channel.h"
#include "net/endpoint.h"
#include "coord.h"

struct httpd;
struct httpd_req;
struct httpd_stream;
struct json;
struct loop;
struct loop_timer;
struct metrics_family;
struct mapview;
struct strmap;

#define CONTROL_SECRET "knit-control-key"
#define MAX_CALL_BODY (64u << 10)
#define MAX_SESSIONS 65536u
/* Sessions of machines the tailnet does not know yet (a first
 * registration): few, short-lived, and a few per address, so a flood of
 * fresh machine keys can never crowd out a registered device, whose
 * sessions are only bounded by MAX_SESSIONS. */
#define MAX_UNKNOWN_SESSIONS 4096u
#define UNKNOWN_SESSIONS_PER_IP 32u
#define UNKNOWN_SESSION_IDLE_MS 30000u
/* A handshake timestamp (TAI64N) may run this far ahead of our clock. */
#define HANDSHAKE_FUTURE_S 600
#define MAX_JOBS 1024u
#define JOB_WORKERS 4
#define STREAM_QUEUE (8u << 20)
#define STREAM_LOW_WATER (16u << 10) /* pull the next record below this */
/* Peer text per record, about. With the low water it bounds what a stream
 * buffers (~32 KiB): when 10,000 agents connect at once and read slowly,
 * the backlog waits in the change log, not in 10,000 queues. */
#define RECORD_CHUNK (16u << 10)
/* A stream's packetFilter text, at most. */
#define POLICY_FILTER_MAX_BYTES (4u << 20)
#define FLUSH_MIN_MS 25 /* streams are woken at most this often... */
#define SOFT_FLUSH_MS 1000 /* ...and this late for soft state alone */
#define TRIM_EVERY_MS 1000
#define TRIM_AFTER_BYTES (16u << 20) /* sent since the last trim, and... */
#define TRIM_QUIET_BYTES (1u << 20) /* ...less than this in the last second */

struct coord;

struct session {
	struct channel_session ch;
	char mkey[80]; /* "mkey:<hex>" */
	char idhex[17];
	uint64_t last_used;
	bool known; /* a Device had this machine key (else: counted in unknown_*) */
	char ip[46]; /* the client's address */
};

/* One open map stream. It pulls its records from the change log (see
 * changelog.h) whenever its socket can take more: a full netmap in pieces
 * first, then deltas, each covering the log from its cursor on. A slow
 * client simply gets fewer, larger deltas. */
struct mapconn {
	struct coord *c;
	struct httpd_stream *st;
	struct node *node; /* our device's soft state; holds a stream count */
	struct channel_session ch; /* sealing state for this stream's frames */
	char device[254];
	char tailnet[254];
	struct changelog_cursor cur; /* .device, .tailnet point at the above */
	struct strmap *peers; /* under a policy: the peers it sees (mappolicy.c) */
	bool ended; /* an error record ended it; closing */
	struct mapview *view; /* under a policy: its filter, a view change to send (mappolicy.c) */
	struct mapconn *prev, *next;
};

/* Soft state and the published record per device: never written to the
 * API server at heartbeat rate. Freed once deleted, streamless and out of
 * the log (pub.refs). */
struct node {
	struct changelog_node pub; /* first: the log's unref hands it back */
	struct endpoint *endpoints; /* validated by the codec (control/fields.h) */
	size_t nendpoints;
	int relay;
	int streams;
	uint64_t hard_hash; /* of the record without soft state: see flush_soon() */
	bool dead; /* the Device is gone */
};

enum job_type { JOB_REGISTER, JOB_LOGOUT, JOB_ONLINE, JOB_COUNT_USE, JOB_REGISTER_POD, JOB_SWEEP_PODS };

struct job {
	enum job_type type;
	struct coord *c;
	char sess_id[17]; /* reply through this session (loop thread looks it up) */
	struct httpd_stream *st; /* deferred reply; NULL once the client left */
	/* The stream's on_close argument, which points back at this job: the
	 * two forget each other, whichever of the job and the stream ends first. */
	struct job **slot;
	char mkey[80];
	struct json *req;
	struct json *reply; /* set by the worker */
	/* JOB_ONLINE: device; JOB_COUNT_USE: the AuthKey, mkey = namespace, device = name */
	char device[254];
	bool online;
	time_t at;
	/* JOB_ONLINE, under c->lock: a worker is writing it (it stays in
	 * online_pending meanwhile), and a newer transition came (written
	 * next by the same worker: writes of one device never overtake). */
	bool running, again;
	struct job *next;
};

struct coord {
	struct operator *op;
	struct coord_opts o;
	struct httpd *http;
	bool ready; /* control key loaded */
	bool stopping;
	/* ctrlkey.c, on the key loader thread: */
	bool key_mismatch_warned;
	unsigned long keeper_restores;
	/* keys_lock guards priv, pub, next_*, prev_* (written by the key
	 * loader thread, read by the loop and the workers); pub_text and
	 * next_text are the loop thread's (ctrlkey_announce). A rotation
	 * (ctrlkey.c) adds next (announced, accepted) and then previous
	 * (accepted, for agents that slept through it). */
	pthread_mutex_t keys_lock;
	uint8_t priv[32], pub[32];
	uint8_t next_priv[32], next_pub[32];
	uint8_t prev_priv[32], prev_pub[32];
	bool has_next, has_prev;
	char pub_text[80], next_text[80];

	/* Loop thread only: */
	struct strmap *sessions; /* idhex -> session */
	struct strmap *handshake_ts; /* mkey -> last TAI64N + when seen (HS_TS_LEN) */
	struct strmap *unknown_per_ip; /* ip -> unknown sessions (a pointer-sized count) */
	unsigned unknown_sessions;
	struct strmap *nodes; /* device -> node (live devices only) */
	struct strmap *policies; /* tailnet -> struct mappolicy (mappolicy.c) */
	struct mapconn *conns;
	struct loop_timer *keepalive, *sweep, *flush;
	struct changelog log;
	bool flush_armed;
	uint64_t flush_due, last_flush;
	uint64_t sent_since_trim, sent_at_tick; /* record bytes queued: see on_trim() */
	struct loop_timer *trim;
	struct loop_timer *pod_sweep; /* podident.c */
	struct informer *pod_watch; /* podident.c: Pods labelled PODIDENT_LABEL */
	int pod_sweep_queued; /* atomic: a JOB_SWEEP_PODS waits or runs */
	struct coord_stats stats;
	struct strmap *limits; /* mkey -> struct ratelimit (ratelimit.h): call limits */
	struct metrics_family *m_refusals; /* knit_coord_refusals_total{call,reason} */
	/* Devices still marked online with no stream here are marked offline
	 * once this leader has served OFFLINE_SWEEP_GRACE_MS (agents had time
	 * to reconnect): a crashed leader wrote no offline transitions. */
	uint64_t serving_since; /* 0: not serving (yet) */
	bool offline_swept;

	/* jobs: lock guards head, tail, njobs, ohead, otail, online_pending, stop */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct job *head, *tail; /* calls: register, logout */
	unsigned njobs;
	struct job *ohead, *otail; /* online writes, one per device: */
	struct strmap *online_pending; /* device -> its job in that queue */
	/* Registrations waiting for their Device's addresses sleep on
	 * dev_cond; every Device event bumps dev_gen (CLOCK_MONOTONIC cond). */
	pthread_cond_t dev_cond;
	unsigned dev_gen, addr_waiters;
	bool stop;
	/* Graceful stop (SIGTERM): the offline transitions of the streams just
	 * closed are written, until drain_until (loop_mono_ms), before the
	 * Lease goes; a lost leader writes nothing. */
	bool drain_online;
	uint64_t drain_until;
	pthread_t workers[JOB_WORKERS];
	int nworkers;
	pthread_t key_loader;
	bool key_loader_started;
};

#define OFFLINE_SWEEP_GRACE_MS 15000u
#define OFFLINE_DRAIN_MS 5000u

/* coord.c */
uint64_t coord_now_ms(struct coord *c);
/* Counts a refused call (knit_coord_refusals_total): call is "register",
 * "renew" (a register with oldNodeKey), "update", "map", ...; reason the error code or "RateLimited". Any thread. */
void coord_refused(struct coord *c, const char *call, const char *reason);
struct json *coord_jstr(const char *s);
struct json *coord_error_reply(const char *code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int coord_seal_json(struct channel_session *ch, const struct json *j, struct buf *out);
/* Appends one map-stream record (4-byte big-endian length + sealed frame)
 * of text to out. */
int coord_seal_record(struct channel_session *ch, const void *text, size_t len, struct buf *out);
void coord_respond_sealed(struct httpd_req *req, struct session *s, const struct json *j);

/* mapstream.c (loop thread) */
void mapstream_init(struct coord *c);
struct node *mapstream_node_get(struct coord *c, const char *device, const char *tailnet);
/* A stream of the node opened or closed. The first open and the last
 * close are online transitions (written to the API server); the record is
 * republished then, and whenever dev (the Device, its new soft state
 * already set) is given. */
void mapstream_node_stream(struct coord *c, struct node *n, bool opened, const struct json *dev);
bool mapstream_device_usable(const struct json *dev);
struct json *mapstream_dns_suffix_json(struct coord *c, const char *tailnet);
int mapstream_send(struct mapconn *m, const char *text, size_t len);
int mapstream_send_json(struct mapconn *m, const struct json *j);
void mapstream_publish_device(struct coord *c, const struct json *dev);
void mapstream_device_deleted(struct coord *c, const struct json *dev);
void mapstream_tailnet_changed(struct coord *c, const struct json *old, const struct json *tn);
/* Starts (or restarts) m's full netmap; records follow as the client reads. */
void mapstream_sync(struct mapconn *m);
/* httpd fill callback of map streams. */
void mapstream_fill(struct httpd_stream *st, void *arg);
/* The flush timer: wakes streams with log entries to pull. */
void mapstream_flush(struct loop *loop, struct loop_timer *t, void *arg);
void mapstream_free(struct coord *c);
/* Tailnet-wide members ("key":value,...) in every stream's next delta, of
 * every tailnet (changelog_tailnet_fields). 0 or -ENOMEM. */
int mapstream_all_tailnets_fields(struct coord *c, const char *text);

/* mappolicy.c (loop thread) */
/* A Device changed or was deleted: recompile what it touches under its
 * tailnet's policy, restarting the streams whose view changes. */
void mappolicy_device_changed(struct coord *c, const struct json *dev, bool deleted);
/* m's full netmap starts: takes its view (visible peers into m->cur) and
 * appends its packetFilter ("null": no policy) to packet_filter. */
int mappolicy_view(struct coord *c, struct mapconn *m, struct buf *packet_filter);
/* Before m's next delta: a view change waiting (a policy change, a peer
 * joining or leaving its view) goes into it through m->cur.extra, or —
 * when it would be larger than the peers' text of a full netmap is worth
 * — restarts m's full netmap. Then, after the record:
 * mappolicy_extra_done(m, sent). */
void mappolicy_extra(struct coord *c, struct mapconn *m);
void mappolicy_extra_done(struct mapconn *m, bool sent);
void mappolicy_stream_closed(struct mapconn *m);
void mappolicy_free_all(struct coord *c);

/* register.c */
int register_job_submit(struct coord *c, struct job *j);
void *register_job_worker(void *arg);
void register_job_free(struct job *j);
void register_reply_stream_closed(struct httpd_stream *st, void *arg);
/* A graceful stop: the offline transitions queued now are written (for
 * up to OFFLINE_DRAIN_MS) before the workers end. */
void register_drain_offline(struct coord *c);
/* Waits for the Device controller to give name its addresses. */
struct json *register_wait_addresses(struct coord *c, const char *name);

/* podident.c: register_pod (worker thread); the sweep of Devices whose
 * Pod is gone (worker thread), queued by podident_timer every second. */
struct json *podident_register(struct coord *c, const char *mkey, const struct json *req);
void podident_sweep(struct coord *c);
void podident_timer(struct loop *loop, struct loop_timer *t, void *arg);
/* The label knit puts on a Pod it gave an identity, and the watch on such
 * Pods that runs the sweep at once when one is deleted or finishes.
 * 0 or -ENOMEM. */
#define PODIDENT_LABEL "knit.dev/pod-identity"
int podident_watch_start(struct coord *c);
/* A copy of the Device this machine key registered, or NULL (any thread). */
struct json *register_device_by_machine(struct coord *c, const char *mkey);
struct json *register_device_doc(const struct json *existing, const char *host, const char *mkey, char *name,
				 size_t namelen, struct json **spec);
/* Queues the online/offline transition for the API server. */
void register_online_changed(struct coord *c, const char *device, bool online);

/* renew.c: node key lifetimes and renewal (worker threads). */
struct register_request;
/* How long a node key registered with ak (NULL: none) lives in Tailnet tn:
 * the AuthKey's spec.nodeKeyExpiry if set, else none for a tagged device,
 * else the Tailnet's spec.keyExpiry. 0: never expires. */
uint64_t renew_key_lifetime_ms(const struct json *tn, const struct json *ak, bool tagged);
/* spec.keyExpiry = now + life_ms, or no keyExpiry for 0. */
void renew_set_expiry(struct json *spec, uint64_t life_ms, time_t now);
/* A Device's spec.keyExpiry as Unix seconds; 0: none. */
int64_t renew_expiry_of(const struct json *dev);
/* A register call with oldNodeKey: checks it against existing (this
 * machine's Device) and the proof, and gives spec (the Device being
 * written) a new lifetime. NULL: go ahead; else the error reply. */
struct json *renew_check(struct coord *c, const char *mkey, const struct register_request *rq,
			 const struct json *existing, struct json *spec, time_t now);

/* ctrlkey.c: the control key's Secret, kept (key loader thread). */
bool ctrlkey_decode(const struct json *secret, uint8_t priv[32]);
/* The Secret holding priv (caller frees with json_free_secret). */
struct json *ctrlkey_secret_doc(const uint8_t priv[32]);
/* No Secret at start: may a key be minted? Only on a fresh install (no
 * Tailnet publishes a control key) or with --new-control-key; says why not. */
bool ctrlkey_may_mint(struct coord *c);
/* Until c->stopping: restores a deleted or emptied Secret with c->priv,
 * and runs a rotation (ctrlkey.c) step by step. */
void ctrlkey_keep(struct coord *c);
/* The Secret's next and previous keys as c's (at start, before serving). */
void ctrlkey_adopt_start(struct coord *c, const struct json *secret);
/* The private keys a handshake may be made with: current, next, previous
 * (keys_lock taken). Returns how many; the caller wipes them. Any thread. */
size_t ctrlkey_accepted(struct coord *c, uint8_t keys[3][32]);
/* Loop thread: pub_text/next_text from the keys, and when they changed
 * and streams are up, the new key set to every stream as a delta. */
void ctrlkey_announce(struct coord *c, bool deltas);
/* "controlKey" and "nextControlKey" members, as JSON text to append
 * (",\"controlKey\":...,\"nextControlKey\":..."). Loop thread. 0 or -ENOMEM. */
int ctrlkey_fields(struct coord *c, struct buf *out);

#endif
