/* knit-relay's core; see server.h. The wire format is in
 * docs/relay-protocol.md; this file holds the connections (inbound clients
 * and outbound mesh links share the I/O code), the key tables and the
 * routing:
 *
 *   SEND_PACKET(dst) from client A:
 *     dst connected here          -> RECV_PACKET(A) queued to dst
 *     dst on a meshed relay R     -> FORWARD_PACKET(A, dst) on our link to R
 *     nowhere                     -> PEER_GONE(dst, not here) back to A
 *   FORWARD_PACKET(src, dst) from a mesh peer: delivered here or dropped
 *   (never forwarded again, so no loops).
 *
 * Every queue is capped; frames that would overflow it are dropped and
 * counted. Connections are freed in two phases: closed (fd off the loop,
 * out of the tables) at once, freed at the next event, so nothing running
 * holds a freed pointer. */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "net/endpoint.h"
#include "net/lookup.h"
#include "net/tlsio.h"
#include "relay/frame.h"
#include "relay/hello.h"
#include "relay/keymap.h"
#include "relay/upgrade.h"

#define READ_CHUNK (64u << 10)
#define SENDERS_MAX 8
/* Room beyond the packet cap for control frames (PEER_GONE, PONG, ...),
 * so that a full queue of packets does not also lose them. */
#define CONTROL_SLACK 4096u
#define SWEEP_MS 1000u
#define MESH_BACKOFF_MIN_MS 500u
#define MESH_BACKOFF_MAX_MS 30000u

enum conn_state {
	ST_TLS,		 /* TLS handshake */
	ST_HTTP,	 /* inbound: reading the upgrade request */
	ST_HELLO,	 /* inbound: SERVER_KEY sent, waiting for CLIENT_INFO */
	ST_ACTIVE,
	ST_CONNECTING,	 /* outbound: TCP connect in progress */
	ST_UPGRADE_WAIT, /* outbound: request sent, reading the 101 */
	ST_KEY_WAIT,	 /* outbound: waiting for SERVER_KEY */
	ST_INFO_WAIT,	 /* outbound: CLIENT_INFO sent, waiting for SERVER_INFO */
	ST_DEAD,
};

/* The last few keys that sent packets to a destination: who to tell with
 * PEER_GONE when it goes. A ring; allocated on first use. */
struct senders {
	uint8_t (*keys)[32];
	uint8_t n, next;
};

struct mesh_peer;

struct conn {
	struct relay_server *s;
	struct conn *prev, *next; /* s->conns, or s->dead once closed */
	struct conn *flush_next;
	int fd;
	SSL *ssl;
	enum conn_state state;
	enum conn_state after_tls;
	bool outbound, mesh, watcher, flushing, want_write, registered;
	uint8_t key[32];
	uint8_t challenge[RELAY_CHALLENGE_LEN];
	uint8_t nonce[RELAY_NONCE_LEN];	/* outbound: our CLIENT_INFO's */
	struct buf head;		/* upgrade request/response while incomplete */
	struct relay_parser parser;
	struct buf out;
	uint64_t created, last_rx, last_tx;
	struct senders senders;
	struct mesh_peer *mp; /* outbound */
	char addr[64];
};

/* A client on a meshed relay, reachable through that relay's link. */
struct remote {
	struct mesh_peer *mp;
	struct senders senders;
};

struct mesh_peer {
	struct relay_server *s;
	char *url, *host, *port;
	bool tls;
	struct conn *conn;
	struct loop_timer *retry;
	uint32_t backoff_ms;
	bool up;
	bool self; /* the URL leads back to this relay: never dialled again */
	/* The name is looked up without blocking (lookup.h), polled on the
	 * retry timer, so a slow or failing DNS never stalls the loop (and
	 * /healthz). */
	struct lookup lookup;
	uint64_t resolve_deadline; /* monotonic ms */
};

struct relay_server {
	struct loop *loop;
	int lfd;
	uint16_t port;
	bool accepting;
	uint8_t priv[32], pub[32];
	uint8_t mesh_key[RELAY_MESH_KEY_LEN];
	bool have_mesh_key;
	SSL_CTX *tls, *mesh_tls;
	size_t queue_bytes;
	uint32_t keepalive_ms, idle_timeout_ms, handshake_timeout_ms;
	unsigned max_clients;
	struct conn *conns, *dead, *flush;
	size_t nconns;
	struct keymap *clients; /* key -> struct conn (ST_ACTIVE) */
	struct keymap *remote;	/* key -> struct remote */
	struct mesh_peer **peers;
	size_t npeers;
	struct loop_timer *sweep, *accept_retry;
	uint8_t *rbuf;
	struct relay_server_stats st;
	struct {
		struct metric *clients, *remote, *mesh_up, *queued, *accepts;
		struct metric *pk_in, *pk_out, *pk_fwd, *by_in, *by_out;
		struct metric *drop_full, *drop_unknown, *drop_mesh, *bad_frames;
		struct metric *hs_upgrade, *hs_proof, *hs_timeout, *hs_limit;
	} m;
};

static void conn_close(struct conn *c, const char *why);
static void conn_flush(struct conn *c);
static void mesh_schedule(struct mesh_peer *mp);
static void mesh_lost(struct mesh_peer *mp);

/* ---- metrics ------------------------------------------------------------ */

static void metrics_setup(struct relay_server *s, struct metrics *m)
{
	struct metrics_family *f;
	static const char *const reason[] = { "reason", NULL };

	if (!m)
		return;
	if ((f = metrics_gauge_new(m, "knit_relay_clients", "Clients connected and authenticated.", NULL)))
		s->m.clients = metrics_with(f, NULL);
	if ((f = metrics_gauge_new(m, "knit_relay_remote_clients", "Clients known on meshed relays.", NULL)))
		s->m.remote = metrics_with(f, NULL);
	if ((f = metrics_gauge_new(m, "knit_relay_mesh_peers_up", "Outbound mesh links established.", NULL)))
		s->m.mesh_up = metrics_with(f, NULL);
	if ((f = metrics_gauge_new(m, "knit_relay_queued_bytes", "Bytes in all send queues (sampled every second).", NULL)))
		s->m.queued = metrics_with(f, NULL);
	if ((f = metrics_counter_new(m, "knit_relay_accepts_total", "TCP connections accepted.", NULL)))
		s->m.accepts = metrics_with(f, NULL);
	if ((f = metrics_counter_new(m, "knit_relay_packets_received_total",
				     "Packets received from clients and mesh peers.", NULL)))
		s->m.pk_in = metrics_with(f, NULL);
	if ((f = metrics_counter_new(m, "knit_relay_packets_sent_total", "Packets queued to local clients.", NULL)))
		s->m.pk_out = metrics_with(f, NULL);
	if ((f = metrics_counter_new(m, "knit_relay_packets_forwarded_total",
				     "Packets forwarded to meshed relays.", NULL)))
		s->m.pk_fwd = metrics_with(f, NULL);
	if ((f = metrics_counter_new(m, "knit_relay_bytes_received_total", "Packet bytes received.", NULL)))
		s->m.by_in = metrics_with(f, NULL);
	if ((f = metrics_counter_new(m, "knit_relay_bytes_sent_total", "Packet bytes queued to clients.", NULL)))
		s->m.by_out = metrics_with(f, NULL);
	if ((f = metrics_counter_new(m, "knit_relay_dropped_packets_total",
				     "Packets dropped: queue_full (the destination reads too slowly), "
				     "unknown_dest (no relay has it), mesh_queue_full.", reason))) {
		s->m.drop_full = METRICS_WITH(f, "queue_full");
		s->m.drop_unknown = METRICS_WITH(f, "unknown_dest");
		s->m.drop_mesh = METRICS_WITH(f, "mesh_queue_full");
	}
	if ((f = metrics_counter_new(m, "knit_relay_bad_frames_total",
				     "Malformed or unexpected frames dropped.", NULL)))
		s->m.bad_frames = metrics_with(f, NULL);
	if ((f = metrics_counter_new(m, "knit_relay_handshake_failures_total",
				     "Connections refused before they were clients: bad_upgrade, no_proof "
				     "(the key was not proven), timeout, limit.", reason))) {
		s->m.hs_upgrade = METRICS_WITH(f, "bad_upgrade");
		s->m.hs_proof = METRICS_WITH(f, "no_proof");
		s->m.hs_timeout = METRICS_WITH(f, "timeout");
		s->m.hs_limit = METRICS_WITH(f, "limit");
	}
}

static void gauges_update(struct relay_server *s)
{
	s->st.clients = keymap_len(s->clients);
	s->st.remote_clients = keymap_len(s->remote);
	metrics_set(s->m.clients, (double)s->st.clients);
	metrics_set(s->m.remote, (double)s->st.remote_clients);
	metrics_set(s->m.mesh_up, (double)s->st.mesh_peers_up);
}

/* ---- senders ------------------------------------------------------------ */

static void senders_note(struct senders *ss, const uint8_t key[32])
{
	for (uint8_t i = 0; i < ss->n; i++)
		if (memcmp(ss->keys[i], key, 32) == 0)
			return;
	if (!ss->keys && !(ss->keys = calloc(SENDERS_MAX, 32)))
		return; /* only PEER_GONE is lost */
	memcpy(ss->keys[ss->next], key, 32);
	ss->next = (uint8_t)((ss->next + 1) % SENDERS_MAX);
	if (ss->n < SENDERS_MAX)
		ss->n++;
}

static void senders_free(struct senders *ss)
{
	free(ss->keys);
	ss->keys = NULL;
	ss->n = ss->next = 0;
}

/* ---- queueing ----------------------------------------------------------- */

static void flush_later(struct conn *c)
{
	if (c->flushing || c->state == ST_DEAD)
		return;
	c->flushing = true;
	c->flush_next = c->s->flush;
	c->s->flush = c;
}

static void flush_all(struct relay_server *s)
{
	while (s->flush) {
		struct conn *c = s->flush;

		s->flush = c->flush_next;
		c->flushing = false;
		if (c->state != ST_DEAD)
			conn_flush(c);
	}
}

/* Queues one frame (header + up to three parts) if it fits under cap.
 * Returns false if it was dropped. */
static bool enqueue(struct conn *c, uint8_t type, size_t cap, const void *a, size_t alen,
		    const void *b, size_t blen, const void *d, size_t dlen)
{
	size_t body = alen + blen + dlen, need = RELAY_FRAME_HDR + body;
	uint8_t *p;
	int err;

	if (c->state == ST_DEAD || c->out.len + need > cap)
		return false;
	p = buf_reserve(&c->out, need, &err);
	if (!p)
		return false; /* ENOMEM: the buffer was reset, the queue lost */
	relay_frame_header(p, type, body);
	p += RELAY_FRAME_HDR;
	if (alen)
		memcpy(p, a, alen);
	if (blen)
		memcpy(p + alen, b, blen);
	if (dlen)
		memcpy(p + alen + blen, d, dlen);
	buf_commit(&c->out, need);
	c->s->st.queued_bytes += need;
	flush_later(c);
	return true;
}

static bool enqueue_control(struct conn *c, uint8_t type, const void *a, size_t alen, const void *b,
			    size_t blen)
{
	return enqueue(c, type, c->s->queue_bytes + CONTROL_SLACK, a, alen, b, blen, NULL, 0);
}

static void peer_gone(struct conn *to, const uint8_t key[32], uint8_t reason)
{
	enqueue_control(to, RELAY_FRAME_PEER_GONE, key, 32, &reason, 1);
}

/* ---- routing ------------------------------------------------------------ */

static void deliver(struct relay_server *s, struct conn *dst, const uint8_t src[32],
		    const uint8_t *data, size_t len)
{
	if (!enqueue(dst, RELAY_FRAME_RECV_PACKET, s->queue_bytes, src, 32, data, len, NULL, 0)) {
		s->st.drops_queue_full++;
		metrics_inc(s->m.drop_full);
		return;
	}
	senders_note(&dst->senders, src);
	s->st.packets_out++;
	metrics_inc(s->m.pk_out);
	metrics_add(s->m.by_out, (double)len);
}

static void route(struct relay_server *s, struct conn *from, const uint8_t dst[32],
		  const uint8_t *data, size_t len)
{
	struct conn *d = keymap_get(s->clients, dst);
	struct remote *r;

	s->st.packets_in++;
	metrics_inc(s->m.pk_in);
	metrics_add(s->m.by_in, (double)len);
	if (d && !d->mesh) {
		deliver(s, d, from->key, data, len);
		return;
	}
	r = keymap_get(s->remote, dst);
	if (r && r->mp->conn && r->mp->conn->state == ST_ACTIVE) {
		if (!enqueue(r->mp->conn, RELAY_FRAME_FORWARD_PACKET, s->queue_bytes, from->key, 32, dst,
			     32, data, len)) {
			s->st.drops_queue_full++;
			metrics_inc(s->m.drop_mesh);
			return;
		}
		senders_note(&r->senders, from->key);
		s->st.packets_forwarded++;
		metrics_inc(s->m.pk_fwd);
		return;
	}
	s->st.drops_unknown_dest++;
	metrics_inc(s->m.drop_unknown);
	peer_gone(from, dst, RELAY_GONE_NOT_HERE);
}

/* A mesh peer's FORWARD_PACKET: delivered here or dropped, never sent on. */
static void route_forwarded(struct relay_server *s, const uint8_t src[32], const uint8_t dst[32],
			    const uint8_t *data, size_t len)
{
	struct conn *d = keymap_get(s->clients, dst);

	s->st.packets_in++;
	metrics_inc(s->m.pk_in);
	metrics_add(s->m.by_in, (double)len);
	if (!d || d->mesh) {
		s->st.drops_unknown_dest++;
		metrics_inc(s->m.drop_unknown);
		return;
	}
	deliver(s, d, src, data, len);
}

static void tell_watchers(struct relay_server *s, const uint8_t key[32], bool present)
{
	for (struct conn *c = s->conns; c; c = c->next) {
		if (!c->watcher || c->state != ST_ACTIVE)
			continue;
		if (present)
			enqueue_control(c, RELAY_FRAME_PEER_PRESENT, key, 32, NULL, 0);
		else
			peer_gone(c, key, RELAY_GONE_DISCONNECTED);
	}
}

/* Tells the recent senders to key that it has gone. */
static void tell_senders(struct relay_server *s, struct senders *ss, const uint8_t key[32])
{
	for (uint8_t i = 0; i < ss->n; i++) {
		struct conn *c = keymap_get(s->clients, ss->keys[i]);

		if (c && !c->mesh)
			peer_gone(c, key, RELAY_GONE_DISCONNECTED);
	}
}

static void remote_drop(struct relay_server *s, const uint8_t key[32])
{
	struct remote *r = keymap_del(s->remote, key);

	if (!r)
		return;
	/* A client that moved here from the other relay is not gone. */
	if (!keymap_get(s->clients, key))
		tell_senders(s, &r->senders, key);
	senders_free(&r->senders);
	free(r);
}

/* ---- connection I/O ----------------------------------------------------- */

static void set_write_interest(struct conn *c, bool on)
{
	if (c->want_write == on || c->state == ST_DEAD)
		return;
	c->want_write = on;
	loop_fd_modify(c->s->loop, c->fd, LOOP_READ | (on ? LOOP_WRITE : 0));
}

/* Bytes read, 0 at EOF, -EAGAIN, or another negative errno (tlsio.h). */
static ssize_t conn_read(struct conn *c, uint8_t *p, size_t n)
{
	return tlsio_read(c->fd, c->ssl, p, n);
}

static ssize_t conn_write(struct conn *c, const uint8_t *p, size_t n)
{
	return tlsio_write(c->fd, c->ssl, p, n);
}

static void conn_flush(struct conn *c)
{
	size_t before = c->out.len;

	if (c->state == ST_TLS || c->state == ST_CONNECTING)
		return; /* the handshake's own events flush later */
	while (c->out.len) {
		ssize_t n = conn_write(c, c->out.data, c->out.len);

		if (n == -EAGAIN) {
			set_write_interest(c, true);
			break;
		}
		if (n <= 0) {
			c->s->st.queued_bytes -= c->out.len;
			buf_free(&c->out);
			conn_close(c, "write failed");
			return;
		}
		buf_consume(&c->out, (size_t)n);
	}
	c->s->st.queued_bytes -= before - c->out.len;
	if (before != c->out.len)
		c->last_tx = loop_now(c->s->loop);
	if (!c->out.len) {
		set_write_interest(c, false);
		/* An idle connection keeps no queue storage. */
		if (c->out.alloc > 16384)
			buf_free(&c->out);
	}
}

/* ---- connection lifecycle ------------------------------------------------ */

static struct conn *conn_new(struct relay_server *s, int fd)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->s = s;
	c->fd = fd;
	buf_init(&c->head, RELAY_UPGRADE_MAX_HEAD);
	buf_init(&c->out, s->queue_bytes + CONTROL_SLACK + RELAY_FRAME_HDR + RELAY_MAX_FRAME);
	relay_parser_init(&c->parser, 0);
	c->created = c->last_rx = c->last_tx = loop_now(s->loop);
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->nconns++;
	return c;
}

static void unregister(struct conn *c)
{
	struct relay_server *s = c->s;

	if (!c->registered)
		return;
	c->registered = false;
	if (keymap_get(s->clients, c->key) == c)
		keymap_del(s->clients, c->key);
	if (!c->mesh) {
		tell_senders(s, &c->senders, c->key);
		tell_watchers(s, c->key, false);
	}
	gauges_update(s);
}

static void conn_close(struct conn *c, const char *why)
{
	struct relay_server *s = c->s;
	char hex[65];

	if (c->state == ST_DEAD)
		return;
	if (c->registered || c->outbound)
		log_info("connection closed", "addr=%s key=%.16s mesh=%d reason=\"%s\"", c->addr,
			 relay_key_hex(c->key, hex), c->mesh || c->outbound, why);
	else
		log_debug("connection closed", "addr=%s reason=\"%s\"", c->addr, why);
	c->state = ST_DEAD;
	unregister(c);
	loop_fd_del(s->loop, c->fd);
	if (c->ssl) {
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	close(c->fd);
	c->fd = -1;
	s->st.queued_bytes -= c->out.len;
	buf_free(&c->out);
	buf_free(&c->head);
	relay_parser_free(&c->parser);
	senders_free(&c->senders);
	if (c->mp) {
		struct mesh_peer *mp = c->mp;

		c->mp = NULL;
		mp->conn = NULL;
		mesh_lost(mp);
	}
	/* Unlink from conns, link into dead: freed at the next event. */
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = NULL;
	c->next = s->dead;
	s->dead = c;
	s->nconns--;
}

static void reap(struct relay_server *s)
{
	while (s->dead) {
		struct conn *c = s->dead;

		/* Every event handler ends with flush_all(), which takes
		 * dead connections off the flush list: none is on it here. */
		s->dead = c->next;
		free(c);
	}
}

/* ---- inbound protocol ----------------------------------------------------- */

static void client_accepted(struct conn *c, const struct relay_client_info *ci)
{
	struct relay_server *s = c->s;
	struct relay_server_info info = {
		.version = RELAY_PROTOCOL_VERSION,
		.keepalive_ms = s->keepalive_ms,
		.max_packet = RELAY_MAX_PACKET,
		.queue_bytes = (uint32_t)s->queue_bytes,
	};
	struct buf si = BUF_INIT(512);
	struct conn *old = NULL;
	char hex[65];

	memcpy(c->key, ci->key, 32);
	c->mesh = ci->mesh;
	if (relay_hello_server_info(&si, s->priv, ci, &info) != 0 ||
	    !enqueue_control(c, si.data[0], si.data + RELAY_FRAME_HDR, si.len - RELAY_FRAME_HDR, NULL, 0)) {
		buf_free(&si);
		conn_close(c, "cannot queue SERVER_INFO");
		return;
	}
	buf_free(&si);
	old = keymap_get(s->clients, c->key);
	if (old) {
		/* The same node again (a reconnect racing the old socket's
		 * death): the newest connection wins. */
		old->registered = false;
		keymap_del(s->clients, c->key);
		conn_close(old, "replaced by a newer connection");
	}
	if (keymap_set(s->clients, c->key, c, NULL) != 0) {
		conn_close(c, "out of memory");
		return;
	}
	c->registered = true;
	c->state = ST_ACTIVE;
	enqueue_control(c, RELAY_FRAME_HEALTH, NULL, 0, NULL, 0);
	if (!c->mesh)
		tell_watchers(s, c->key, true);
	gauges_update(s);
	log_info("client connected", "addr=%s key=%.16s mesh=%d", c->addr, relay_key_hex(c->key, hex),
		 c->mesh);
}

static void bad_frame(struct conn *c, const char *why)
{
	c->s->st.bad_frames++;
	metrics_inc(c->s->m.bad_frames);
	log_debug("frame dropped", "addr=%s reason=\"%s\"", c->addr, why);
}

static void add_present(const uint8_t key[32], void *value, void *arg)
{
	struct conn *w = arg, *c = value;

	if (!c->mesh)
		enqueue_control(w, RELAY_FRAME_PEER_PRESENT, key, 32, NULL, 0);
}

/* One frame from an inbound connection. False if the connection closed. */
static bool inbound_frame(struct conn *c, const struct relay_frame *f)
{
	struct relay_server *s = c->s;
	struct relay_msg m;
	char err[128];

	if (!relay_frame_decode(f, &m, err, sizeof(err))) {
		if (c->state != ST_ACTIVE) {
			s->st.handshake_failures++;
			metrics_inc(s->m.hs_proof);
			conn_close(c, err);
			return false;
		}
		bad_frame(c, err);
		return true;
	}
	if (c->state == ST_HELLO) {
		struct relay_client_info ci;

		if (m.type != RELAY_FRAME_CLIENT_INFO) {
			s->st.handshake_failures++;
			metrics_inc(s->m.hs_proof);
			conn_close(c, "frame before CLIENT_INFO");
			return false;
		}
		if (!relay_hello_verify_client(&m, s->priv, s->pub, c->challenge,
					       s->have_mesh_key ? s->mesh_key : NULL, &ci, err, sizeof(err))) {
			s->st.handshake_failures++;
			metrics_inc(s->m.hs_proof);
			log_warn("client refused", "addr=%s reason=\"%s\"", c->addr, err);
			conn_close(c, err);
			return false;
		}
		client_accepted(c, &ci);
		return c->state == ST_ACTIVE;
	}
	switch (m.type) {
	case RELAY_FRAME_SEND_PACKET:
		route(s, c, m.key, m.data, m.data_len);
		break;
	case RELAY_FRAME_FORWARD_PACKET:
		if (!c->mesh) {
			bad_frame(c, "FORWARD_PACKET from a client that is not a mesh peer");
			break;
		}
		route_forwarded(s, m.key, m.dst, m.data, m.data_len);
		break;
	case RELAY_FRAME_WATCH_CONNS:
		if (!c->mesh) {
			bad_frame(c, "WATCH_CONNS from a client that is not a mesh peer");
			break;
		}
		if (!c->watcher) {
			c->watcher = true;
			keymap_each(s->clients, add_present, c);
		}
		break;
	case RELAY_FRAME_PING:
		enqueue_control(c, RELAY_FRAME_PONG, m.data, m.data_len, NULL, 0);
		break;
	case RELAY_FRAME_KEEPALIVE:
	case RELAY_FRAME_PONG:
		break;
	case RELAY_FRAME_SERVER_KEY:
	case RELAY_FRAME_CLIENT_INFO:
	case RELAY_FRAME_SERVER_INFO:
	case RELAY_FRAME_RECV_PACKET:
	case RELAY_FRAME_PEER_GONE:
	case RELAY_FRAME_PEER_PRESENT:
	case RELAY_FRAME_HEALTH:
		bad_frame(c, "a server's frame from a client");
		break;
	default:
		break; /* unknown types are for later versions */
	}
	return true;
}

/* ---- outbound (mesh) protocol ------------------------------------------- */

static bool outbound_frame(struct conn *c, const struct relay_frame *f)
{
	struct relay_server *s = c->s;
	struct relay_msg m;
	char err[128];

	if (!relay_frame_decode(f, &m, err, sizeof(err))) {
		conn_close(c, err);
		return false;
	}
	if (c->state == ST_KEY_WAIT) {
		struct buf ci = BUF_INIT(512);
		int r;

		if (m.type != RELAY_FRAME_SERVER_KEY) {
			conn_close(c, "mesh peer: no SERVER_KEY");
			return false;
		}
		memcpy(c->key, m.key, 32);
		/* Every relay of a region may be given the same list (a
		 * StatefulSet's pods share one spec): the one entry that is
		 * this relay shows our own key, and is dropped for good. */
		if (sodium_memcmp(m.key, s->pub, 32) == 0) {
			log_info("mesh peer is this relay itself, not meshing with it", "peer=%s", c->mp->url);
			c->mp->self = true;
			conn_close(c, "mesh peer is this relay");
			return false;
		}
		r = relay_hello_client_info(&ci, &m, NULL, s->pub, s->priv, s->mesh_key, c->nonce);
		if (r == 0)
			enqueue_control(c, ci.data[0], ci.data + RELAY_FRAME_HDR, ci.len - RELAY_FRAME_HDR, NULL, 0);
		buf_free(&ci);
		if (r) {
			conn_close(c, "mesh peer: cannot build CLIENT_INFO");
			return false;
		}
		c->state = ST_INFO_WAIT;
		return true;
	}
	if (c->state == ST_INFO_WAIT) {
		struct relay_server_info info;

		if (m.type != RELAY_FRAME_SERVER_INFO ||
		    !relay_hello_open_server_info(&m, c->key, s->priv, c->nonce, &info, err, sizeof(err))) {
			conn_close(c, m.type == RELAY_FRAME_SERVER_INFO ? err : "mesh peer refused us");
			return false;
		}
		c->state = ST_ACTIVE;
		c->mp->backoff_ms = 0;
		c->mp->up = true;
		s->st.mesh_peers_up++;
		gauges_update(s);
		enqueue_control(c, RELAY_FRAME_WATCH_CONNS, NULL, 0, NULL, 0);
		log_info("mesh link up", "peer=%s", c->mp->url);
		return true;
	}
	switch (m.type) {
	case RELAY_FRAME_PEER_PRESENT: {
		struct remote *r = keymap_get(s->remote, m.key);

		if (!r) {
			r = calloc(1, sizeof(*r));
			if (!r || keymap_set(s->remote, m.key, r, NULL) != 0) {
				free(r);
				break;
			}
		}
		r->mp = c->mp;
		gauges_update(s);
		break;
	}
	case RELAY_FRAME_PEER_GONE: {
		struct remote *r = keymap_get(s->remote, m.key);

		if (r && r->mp == c->mp) {
			remote_drop(s, m.key);
			gauges_update(s);
		}
		break;
	}
	case RELAY_FRAME_PING:
		enqueue_control(c, RELAY_FRAME_PONG, m.data, m.data_len, NULL, 0);
		break;
	default:
		break; /* KEEPALIVE, HEALTH, PONG, unknown */
	}
	return true;
}

/* ---- reading ---------------------------------------------------------------- */

static bool frames(struct conn *c, const uint8_t *p, size_t n)
{
	for (;;) {
		struct relay_frame f;
		int r = relay_parser_next(&c->parser, &p, &n, &f);

		if (r == 0)
			return true;
		if (r < 0) {
			if (!c->outbound && c->state == ST_ACTIVE) {
				bad_frame(c, c->parser.error);
			} else if (!c->outbound) {
				c->s->st.handshake_failures++;
				metrics_inc(c->s->m.hs_proof);
			}
			conn_close(c, c->parser.error);
			return false;
		}
		if (!(c->outbound ? outbound_frame(c, &f) : inbound_frame(c, &f)))
			return false;
	}
}

static bool start_hello(struct conn *c)
{
	struct relay_server *s = c->s;
	uint8_t *p;
	int err;

	if (relay_upgrade_response(&c->out) != 0)
		return false;
	p = buf_reserve(&c->out, RELAY_FRAME_HDR + 72, &err);
	if (!p)
		return false;
	randombytes_buf(c->challenge, sizeof(c->challenge));
	relay_frame_header(p, RELAY_FRAME_SERVER_KEY, 72);
	memcpy(p + RELAY_FRAME_HDR, "KNITRLY1", 8);
	memcpy(p + RELAY_FRAME_HDR + 8, s->pub, 32);
	memcpy(p + RELAY_FRAME_HDR + 40, c->challenge, 32);
	buf_commit(&c->out, RELAY_FRAME_HDR + 72);
	s->st.queued_bytes += c->out.len;
	c->state = ST_HELLO;
	flush_later(c);
	return true;
}

/* Upgrade head bytes: inbound request or outbound response. Passes what
 * follows the head to the frame parser. */
static bool head_bytes(struct conn *c, const uint8_t *p, size_t n)
{
	struct relay_server *s = c->s;
	size_t head_len = 0, old = c->head.len;
	char err[128];
	int r;

	if (buf_add(&c->head, p, n > RELAY_UPGRADE_MAX_HEAD ? RELAY_UPGRADE_MAX_HEAD : n) < 0 &&
	    c->head.len == 0) {
		r = -EMSGSIZE;
		snprintf(err, sizeof(err), "upgrade head over %u bytes", RELAY_UPGRADE_MAX_HEAD);
	} else if (c->outbound) {
		r = relay_upgrade_response_parse((const char *)c->head.data, c->head.len, &head_len, err,
						 sizeof(err));
	} else {
		r = relay_upgrade_request_parse((const char *)c->head.data, c->head.len, &head_len, err,
						sizeof(err));
	}
	if (r == 0)
		return true;
	if (r < 0) {
		if (!c->outbound) {
			struct buf refusal = BUF_INIT(1024);

			s->st.handshake_failures++;
			metrics_inc(s->m.hs_upgrade);
			if (relay_upgrade_refusal(&refusal, r) == 0)
				conn_write(c, refusal.data, refusal.len);
			buf_free(&refusal);
		}
		conn_close(c, err);
		return false;
	}
	/* What came after the head in this read: frames. */
	{
		size_t used = head_len - old;

		buf_free(&c->head);
		if (c->outbound) {
			c->state = ST_KEY_WAIT;
		} else if (!start_hello(c)) {
			conn_close(c, "out of memory");
			return false;
		}
		return used < n ? frames(c, p + used, n - used) : true;
	}
}

static void conn_readable(struct conn *c)
{
	struct relay_server *s = c->s;

	for (int rounds = 0; rounds < 16 || (c->ssl && SSL_pending(c->ssl) > 0); rounds++) {
		ssize_t n = conn_read(c, s->rbuf, READ_CHUNK);
		bool ok;

		if (n == -EAGAIN)
			return;
		if (n <= 0) {
			conn_close(c, n == 0 ? "closed by peer" : "read failed");
			return;
		}
		c->last_rx = loop_now(s->loop);
		if (c->state == ST_HTTP || c->state == ST_UPGRADE_WAIT)
			ok = head_bytes(c, s->rbuf, (size_t)n);
		else
			ok = frames(c, s->rbuf, (size_t)n);
		/* Hand each chunk's packets to their sockets before reading
		 * the next: a fast sender must not fill a destination's queue
		 * (and see drops) while that socket could take the bytes. */
		flush_all(s);
		if (!ok || c->state == ST_DEAD)
			return;
		if ((size_t)n < READ_CHUNK && !(c->ssl && SSL_pending(c->ssl) > 0))
			return;
	}
}

static void tls_step(struct conn *c)
{
	char why[160];
	bool want_write;
	int r = tlsio_handshake(c->ssl, &want_write, "TLS handshake", why, sizeof(why));

	if (r == 0) {
		c->state = c->after_tls;
		set_write_interest(c, c->out.len > 0);
		if (c->out.len)
			flush_later(c);
	} else if (r == -EAGAIN) {
		set_write_interest(c, want_write);
	} else {
		if (!c->outbound) {
			c->s->st.handshake_failures++;
			metrics_inc(c->s->m.hs_upgrade);
		}
		conn_close(c, why);
	}
}

static void outbound_connected(struct conn *c)
{
	int soerr = 0;
	socklen_t sl = sizeof(soerr);

	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr) {
		conn_close(c, soerr ? strerror(soerr) : "connect failed");
		return;
	}
	if (relay_upgrade_request(&c->out, c->mp->host) != 0) {
		conn_close(c, "out of memory");
		return;
	}
	c->s->st.queued_bytes += c->out.len;
	if (c->ssl) {
		c->state = ST_TLS;
		c->after_tls = ST_UPGRADE_WAIT;
		tls_step(c);
	} else {
		c->state = ST_UPGRADE_WAIT;
		flush_later(c);
	}
}

static void conn_event(struct loop *loop, int fd, unsigned events, void *arg)
{
	struct conn *c = arg;
	struct relay_server *s = c->s;

	reap(s);
	if (c->state == ST_CONNECTING) {
		if (events & (LOOP_WRITE | LOOP_ERROR | LOOP_HUP))
			outbound_connected(c);
	} else if (c->state == ST_TLS) {
		tls_step(c);
		/* Data that came with the handshake's last flight sits in
		 * the SSL buffer, where epoll cannot see it. */
		if (c->state != ST_TLS && c->state != ST_DEAD)
			conn_readable(c);
	} else {
		if (events & LOOP_WRITE)
			conn_flush(c);
		if (c->state != ST_DEAD && (events & (LOOP_READ | LOOP_ERROR | LOOP_HUP)))
			conn_readable(c);
	}
	flush_all(s);
}

/* ---- accepting ---------------------------------------------------------- */

static void accept_event(struct loop *loop, int fd, unsigned events, void *arg)
{
	struct relay_server *s = arg;

	reap(s);
	for (int i = 0; i < 64; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int cfd = accept4(fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct conn *c;
		struct endpoint ep;
		int one = 1;

		if (cfd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				/* Out of descriptors: level-triggered epoll would
				 * spin on the pending connection. Pause accepting. */
				log_warn("accept paused: out of file descriptors", "errno=%d", errno);
				loop_fd_del(s->loop, s->lfd);
				loop_timer_arm(s->accept_retry, 250);
			}
			break;
		}
		metrics_inc(s->m.accepts);
		if (!s->accepting || s->nconns >= s->max_clients) {
			s->st.handshake_failures++;
			metrics_inc(s->m.hs_limit);
			close(cfd);
			continue;
		}
		setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c = conn_new(s, cfd);
		if (!c) {
			close(cfd);
			continue;
		}
		memset(&ep, 0, sizeof(ep));
		memcpy(&ep.addr, &ss, sl < sizeof(ep.addr) ? sl : sizeof(ep.addr));
		if (endpoint_format(&ep, c->addr, sizeof(c->addr)) < 0)
			snprintf(c->addr, sizeof(c->addr), "?");
		c->state = ST_HTTP;
		if (s->tls) {
			c->ssl = SSL_new(s->tls);
			if (!c->ssl || SSL_set_fd(c->ssl, cfd) != 1) {
				conn_close(c, "SSL_new failed");
				continue;
			}
			SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
						     SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
						     SSL_MODE_RELEASE_BUFFERS);
			SSL_set_accept_state(c->ssl);
			c->state = ST_TLS;
			c->after_tls = ST_HTTP;
		}
		if (loop_fd_add(s->loop, cfd, LOOP_READ, conn_event, c) != 0)
			conn_close(c, "loop_fd_add failed");
	}
	flush_all(s);
}

static void accept_resume(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct relay_server *s = arg;

	if (s->lfd >= 0 && s->accepting)
		loop_fd_add(loop, s->lfd, LOOP_READ, accept_event, s);
}

/* ---- mesh links ----------------------------------------------------------- */

#define MESH_RESOLVE_POLL_MS 20
#define MESH_RESOLVE_TIMEOUT_MS 10000

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Starts the lookup of mp's name; mesh_retry polls it. */
static void mesh_resolve(struct mesh_peer *mp)
{
	int r = lookup_start(&mp->lookup, mp->host, mp->port, SOCK_STREAM);

	if (r != 0) {
		log_warn("mesh peer unresolvable", "peer=%s error=\"%s\"", mp->url, gai_strerror(r));
		mesh_schedule(mp);
		return;
	}
	mp->resolve_deadline = mono_ms() + MESH_RESOLVE_TIMEOUT_MS;
	loop_timer_arm(mp->retry, MESH_RESOLVE_POLL_MS);
}

static void mesh_connect(struct mesh_peer *mp, struct addrinfo *res)
{
	struct relay_server *s = mp->s;
	struct conn *c;
	int fd = -1, one = 1;

	fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || (connect(fd, res->ai_addr, res->ai_addrlen) != 0 && errno != EINPROGRESS)) {
		log_warn("mesh connect failed", "peer=%s errno=%d", mp->url, errno);
		if (fd >= 0)
			close(fd);
		freeaddrinfo(res);
		mesh_schedule(mp);
		return;
	}
	freeaddrinfo(res);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c = conn_new(s, fd);
	if (!c) {
		close(fd);
		mesh_schedule(mp);
		return;
	}
	snprintf(c->addr, sizeof(c->addr), "%s", mp->url);
	c->outbound = true;
	c->mp = mp;
	mp->conn = c;
	c->state = ST_CONNECTING;
	if (mp->tls) {
		if (!(c->ssl = tlsio_client_new(s->mesh_tls, fd, mp->host))) {
			conn_close(c, "TLS setup failed");
			return;
		}
	}
	c->want_write = true;
	if (loop_fd_add(s->loop, fd, LOOP_READ | LOOP_WRITE, conn_event, c) != 0)
		conn_close(c, "loop_fd_add failed");
}

static void mesh_retry(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct mesh_peer *mp = arg;
	struct addrinfo *res;
	int r;

	reap(mp->s);
	if (mp->lookup.live) {
		r = lookup_result(&mp->lookup, &res);
		if (r == EAI_INPROGRESS && mono_ms() < mp->resolve_deadline) {
			loop_timer_arm(t, MESH_RESOLVE_POLL_MS);
			return;
		}
		if (r == 0 && res && !mp->conn && mp->s->accepting) {
			mesh_connect(mp, res);
		} else {
			log_warn("mesh peer unresolvable", "peer=%s error=\"%s\"", mp->url,
				 r == EAI_INPROGRESS ? "timed out" : gai_strerror(r));
			if (res)
				freeaddrinfo(res);
			lookup_stop(&mp->lookup);
			mesh_schedule(mp);
		}
	} else if (!mp->conn && mp->s->accepting) {
		mesh_resolve(mp);
	}
	flush_all(mp->s);
}

static void mesh_schedule(struct mesh_peer *mp)
{
	if (!mp->s->accepting || mp->self)
		return;
	mp->backoff_ms = mp->backoff_ms ? mp->backoff_ms * 2 : MESH_BACKOFF_MIN_MS;
	if (mp->backoff_ms > MESH_BACKOFF_MAX_MS)
		mp->backoff_ms = MESH_BACKOFF_MAX_MS;
	loop_timer_arm(mp->retry, mp->backoff_ms);
}

struct lost_ctx {
	struct mesh_peer *mp;
	uint8_t (*keys)[32];
	size_t n, cap;
};

static void collect_lost(const uint8_t key[32], void *value, void *arg)
{
	struct lost_ctx *l = arg;
	struct remote *r = value;

	if (r->mp != l->mp)
		return;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		void *k = realloc(l->keys, cap * 32);

		if (!k)
			return;
		l->keys = k;
		l->cap = cap;
	}
	memcpy(l->keys[l->n++], key, 32);
}

/* The link to mp went down: its clients are unreachable until it returns. */
static void mesh_lost(struct mesh_peer *mp)
{
	struct relay_server *s = mp->s;
	struct lost_ctx l = { .mp = mp };

	keymap_each(s->remote, collect_lost, &l);
	for (size_t i = 0; i < l.n; i++)
		remote_drop(s, l.keys[i]);
	free(l.keys);
	if (mp->up) {
		mp->up = false;
		s->st.mesh_peers_up--;
	}
	gauges_update(s);
	mesh_schedule(mp);
}

static int mesh_peer_new(struct relay_server *s, const char *url, struct mesh_peer **out)
{
	struct mesh_peer *mp = calloc(1, sizeof(*mp));
	const char *rest, *colon;

	if (!mp)
		return -ENOMEM;
	mp->s = s;
	if (strncmp(url, "http://", 7) == 0) {
		rest = url + 7;
	} else if (strncmp(url, "https://", 8) == 0) {
		rest = url + 8;
		mp->tls = true;
	} else {
		free(mp);
		return -EINVAL;
	}
	mp->url = strdup(url);
	if (rest[0] == '[') {
		const char *close_br = strchr(rest, ']');

		if (!close_br)
			goto bad;
		mp->host = strndup(rest + 1, (size_t)(close_br - rest - 1));
		colon = close_br[1] == ':' ? close_br + 1 : NULL;
	} else {
		colon = strchr(rest, ':');
		mp->host = colon ? strndup(rest, (size_t)(colon - rest)) : strdup(rest);
	}
	mp->port = strdup(colon ? colon + 1 : (mp->tls ? "443" : "80"));
	if (!mp->url || !mp->host || !mp->port)
		goto bad;
	{
		char *slash = strchr(mp->port, '/');

		if (slash)
			*slash = 0;
	}
	if (!mp->host[0] || !mp->port[0] || (mp->tls && !s->mesh_tls))
		goto bad;
	mp->retry = loop_timer_new(s->loop, mesh_retry, mp);
	if (!mp->retry)
		goto bad;
	*out = mp;
	return 0;
bad:
	free(mp->url);
	free(mp->host);
	free(mp->port);
	free(mp);
	return -EINVAL;
}

/* ---- timers ------------------------------------------------------------- */

static void sweep(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct relay_server *s = arg;
	uint64_t now = loop_now(loop);
	struct conn *c, *next;

	reap(s);
	for (c = s->conns; c; c = next) {
		next = c->next;
		if (c->state != ST_ACTIVE) {
			if (now - c->created > s->handshake_timeout_ms) {
				if (!c->outbound) {
					s->st.handshake_failures++;
					metrics_inc(s->m.hs_timeout);
				}
				conn_close(c, "handshake timeout");
			}
			continue;
		}
		if (now - c->last_rx > s->idle_timeout_ms) {
			conn_close(c, "idle timeout");
			continue;
		}
		if (now - c->last_tx >= s->keepalive_ms && c->out.len == 0) {
			enqueue_control(c, RELAY_FRAME_KEEPALIVE, NULL, 0, NULL, 0);
			c->last_tx = now;
		}
	}
	metrics_set(s->m.queued, (double)s->st.queued_bytes);
	flush_all(s);
	loop_timer_arm(t, SWEEP_MS);
}

/* ---- public API ------------------------------------------------------- */

static int listen_on(const char *addr, int *fd_out, uint16_t *port)
{
	struct endpoint ep;
	const char *why;
	int fd, one = 1;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (!endpoint_parse(&ep, addr, &why))
		return -EINVAL;
	fd = socket(ep.addr.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ep.addr.sa.sa_family == AF_INET6) {
		int zero = 0;

		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	}
	if (bind(fd, &ep.addr.sa, endpoint_socklen(&ep)) != 0 || listen(fd, 1024) != 0 ||
	    getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
		int e = -errno;

		close(fd);
		return e;
	}
	*port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
					       : ((struct sockaddr_in *)&ss)->sin_port);
	*fd_out = fd;
	return 0;
}

int relay_server_new(struct loop *loop, const struct relay_server_opts *o, struct relay_server **out)
{
	struct relay_server *s;
	int ret = -ENOMEM;

	if (!o->private_key || (!o->listen && o->listen_fd < 0))
		return -EINVAL;
	if (o->mesh_with && o->mesh_with[0] && !o->mesh_key)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->loop = loop;
	s->lfd = -1;
	memcpy(s->priv, o->private_key, 32);
	crypto_scalarmult_base(s->pub, s->priv);
	if (o->mesh_key) {
		memcpy(s->mesh_key, o->mesh_key, RELAY_MESH_KEY_LEN);
		s->have_mesh_key = true;
	}
	s->tls = o->tls;
	s->mesh_tls = o->mesh_tls;
	s->queue_bytes = o->queue_bytes ? o->queue_bytes : RELAY_QUEUE_BYTES_DEFAULT;
	s->keepalive_ms = o->keepalive_ms ? o->keepalive_ms : RELAY_KEEPALIVE_MS_DEFAULT;
	s->idle_timeout_ms = o->idle_timeout_ms ? o->idle_timeout_ms : RELAY_IDLE_TIMEOUT_MS_DEFAULT;
	s->handshake_timeout_ms = o->handshake_timeout_ms ? o->handshake_timeout_ms
							  : RELAY_HANDSHAKE_TIMEOUT_MS_DEFAULT;
	s->max_clients = o->max_clients ? o->max_clients : RELAY_MAX_CLIENTS_DEFAULT;
	s->accepting = true;
	s->clients = keymap_new();
	s->remote = keymap_new();
	s->rbuf = malloc(READ_CHUNK);
	s->sweep = loop_timer_new(loop, sweep, s);
	s->accept_retry = loop_timer_new(loop, accept_resume, s);
	if (!s->clients || !s->remote || !s->rbuf || !s->sweep || !s->accept_retry)
		goto out;
	metrics_setup(s, o->metrics);
	if (o->listen_fd >= 0) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);

		if (getsockname(o->listen_fd, (struct sockaddr *)&ss, &sl) != 0) {
			ret = -errno;
			goto out;
		}
		s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
							 : ((struct sockaddr_in *)&ss)->sin_port);
		s->lfd = o->listen_fd;
		fcntl(s->lfd, F_SETFL, fcntl(s->lfd, F_GETFL) | O_NONBLOCK);
	} else if ((ret = listen_on(o->listen, &s->lfd, &s->port))) {
		goto out;
	}
	if ((ret = loop_fd_add(loop, s->lfd, LOOP_READ, accept_event, s)))
		goto out;
	for (size_t i = 0; o->mesh_with && o->mesh_with[i]; i++) {
		struct mesh_peer **p = realloc(s->peers, (s->npeers + 1) * sizeof(*p));

		if (!p) {
			ret = -ENOMEM;
			goto out;
		}
		s->peers = p;
		if ((ret = mesh_peer_new(s, o->mesh_with[i], &s->peers[s->npeers])))
			goto out;
		s->npeers++;
		loop_timer_arm(s->peers[s->npeers - 1]->retry, 0);
	}
	loop_timer_arm(s->sweep, SWEEP_MS);
	*out = s;
	ret = 0;
out:
	if (ret) {
		if (o->listen_fd >= 0 && s->lfd == o->listen_fd)
			s->lfd = -1; /* stays the caller's on failure */
		relay_server_free(s);
	}
	return ret;
}

static void free_remote(const uint8_t key[32], void *value, void *arg)
{
	struct remote *r = value;

	senders_free(&r->senders);
	free(r);
}

void relay_server_free(struct relay_server *s)
{
	if (!s)
		return;
	s->accepting = false;
	while (s->conns)
		conn_close(s->conns, "relay shutting down");
	s->flush = NULL;
	for (struct conn *c = s->dead; c; c = c->next)
		c->flushing = false;
	reap(s);
	for (size_t i = 0; i < s->npeers; i++) {
		lookup_stop(&s->peers[i]->lookup);
		loop_timer_free(s->peers[i]->retry);
		free(s->peers[i]->url);
		free(s->peers[i]->host);
		free(s->peers[i]->port);
		free(s->peers[i]);
	}
	free(s->peers);
	if (s->lfd >= 0) {
		loop_fd_del(s->loop, s->lfd);
		close(s->lfd);
	}
	if (s->remote)
		keymap_each(s->remote, free_remote, NULL);
	keymap_free(s->remote);
	keymap_free(s->clients);
	loop_timer_free(s->sweep);
	loop_timer_free(s->accept_retry);
	free(s->rbuf);
	sodium_memzero(s->priv, sizeof(s->priv));
	sodium_memzero(s->mesh_key, sizeof(s->mesh_key));
	free(s);
}

uint16_t relay_server_port(const struct relay_server *s)
{
	return s->port;
}

void relay_server_public_key(const struct relay_server *s, uint8_t out[32])
{
	memcpy(out, s->pub, 32);
}

void relay_server_shutdown(struct relay_server *s)
{
	static const char why[] = "relay shutting down";

	s->accepting = false;
	loop_timer_disarm(s->accept_retry);
	if (s->lfd >= 0) {
		loop_fd_del(s->loop, s->lfd);
		close(s->lfd);
		s->lfd = -1;
	}
	for (size_t i = 0; i < s->npeers; i++)
		loop_timer_disarm(s->peers[i]->retry);
	for (struct conn *c = s->conns; c; c = c->next)
		if (c->state == ST_ACTIVE && !c->outbound)
			enqueue_control(c, RELAY_FRAME_HEALTH, why, sizeof(why) - 1, NULL, 0);
	flush_all(s);
}

void relay_server_stats(const struct relay_server *s, struct relay_server_stats *st)
{
	*st = s->st;
	st->clients = keymap_len(s->clients);
	st->remote_clients = keymap_len(s->remote);
}
