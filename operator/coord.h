/* The coordination server (docs/control-protocol.md): agents handshake,
 * register with auth keys, and follow their netmap over a long-lived map
 * stream, first in full, then as deltas. Durable results (Devices, AuthKey
 * uses) go to the API server; soft state (endpoints, online) stays here
 * and agents re-announce it after a reconnect.
 *
 * Runs on the operator's loop; registration's API writes run on a small
 * worker pool. Only the leader serves (the caches live there): others
 * answer 503, and readiness routes traffic to the leader. */
#ifndef KNIT_OPERATOR_COORD_H
#define KNIT_OPERATOR_COORD_H

#include <stdbool.h>
#include <stdint.h>

struct json;
struct operator;
struct coord;

struct coord_opts {
	const char *listen; /* "0.0.0.0:9443" */
	uint32_t keepalive_ms; /* map stream keepalive; 0: 30 s */
	uint32_t session_idle_ms; /* 0: 10 min */
	uint32_t register_wait_ms; /* how long register waits for addresses; 0: 15 s */
	uint32_t record_bytes; /* peer text per map record, about; 0: 16 KiB */
	unsigned per_ip_limit; /* open connections per client address; 0: unlimited */
	bool new_control_key; /* no Secret: mint a key even if Tailnets publish one */
	/* Control key rotation: how long the next key is announced before it
	 * becomes current, and the old one is accepted after; 0: 24 h. */
	uint32_t rotate_grace_s;
	/* The knitd DaemonSet's ServiceAccount in the operator's namespace
	 * (nodebind.h); NULL: "knitd". */
	const char *knitd_service_account;
};

/* The listener's own counts (refusals by reason, bodies held). */
struct httpd_stats;
void coord_http_stats(const struct coord *c, struct httpd_stats *out);

int coord_new(struct operator *op, const struct coord_opts *o, struct coord **out);
/* Two-phase stop, because registration workers wait on the loop for API
 * calls: coord_shutdown() on the loop thread (non-blocking), coord_join()
 * off it, then coord_free() once the loop has stopped. */
void coord_shutdown(struct coord *c);
void coord_join(struct coord *c);
void coord_free(struct coord *c);
uint16_t coord_port(const struct coord *c);
/* The public control key as text once loaded ("" before). */
const char *coord_control_key(const struct coord *c);
bool coord_ready(const struct coord *c);

/* Informer hooks (loop thread): keep streams in step with the caches. */
void coord_device_changed(struct coord *c, const struct json *old, const struct json *dev);
void coord_device_deleted(struct coord *c, const struct json *dev);
/* A Tailnet's spec changed (old: the object before). */
void coord_tailnet_changed(struct coord *c, const struct json *old, const struct json *tn);
/* Leadership lost or shutting down: close every stream and session. */
void coord_drop_all(struct coord *c);
/* A graceful stop (SIGTERM), before coord_drop_all(): the devices whose
 * streams it closes are written offline before coord_join() returns (for
 * up to 5 s), so the next leader and the ephemeral-device collection see
 * them offline. Not after lost leadership: another leader writes then. */
void coord_stop_gracefully(struct coord *c);

struct coord_stats {
	unsigned long sessions, streams, handshakes, handshake_failures, registrations, frames_rejected;
	/* handshakes of unknown machines refused: the table of them full, too
	 * many from one address; any machine's with a timestamp far ahead */
	unsigned long refused_unknown_full, refused_unknown_per_ip, refused_future;
	unsigned long unknown_sessions;
	unsigned long policy_changes; /* compiled policies put in force */
};
void coord_stats(const struct coord *c, struct coord_stats *out);
/* The policy in force for tailnet changed (operator/policy.h's store):
 * recompile and restart its streams. Any thread; c may be NULL. */
void coord_policy_changed(struct coord *c, const char *tailnet);

#endif
