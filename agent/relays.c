#include "relays.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/ssl.h>
#include <sodium.h>

#include "buf.h"
#include "control/relaymap.h"
#include "disco/message.h"
#include "json.h"
#include "log.h"
#include "loop.h"
#include "net/lookup.h"
#include "net/tlsio.h"
#include "relay/client.h"
#include "wg/hub.h"
#include "wg/receive.h"

#define READ_CHUNK 65536
#define TICK_MS 500
/* A relay's address found by name (getaddrinfo_a, polled on the tick) is
 * used this long before it is looked up again. */
#define RESOLVED_TTL_MS 300000u
/* What a queued or pending packet costs besides its bytes. */
#define FRAME_OVERHEAD (RELAY_FRAME_HDR + RELAY_KEY_LEN)

enum conn_state {
	CONN_IDLE,	 /* not connected; retried at retry_at */
	CONN_RESOLVING,	 /* looking the node's hostName up */
	CONN_CONNECTING, /* TCP connect in flight */
	CONN_TLS,	 /* TLS handshake */
	CONN_HELLO,	 /* upgrade and proof of key (the core's) */
	CONN_READY,
};

struct conn {
	struct relays *r;
	struct conn *next;
	int region;
	size_t node; /* index into the region's nodes */
	enum conn_state state;
	int fd;
	SSL *ssl;
	bool writing; /* LOOP_WRITE asked for */
	bool feeding; /* inside relay_client_feed(): flushing waits for it */
	struct relay_client core;
	bool core_live;
	struct buf out;	    /* frames not yet written */
	struct buf pending; /* peer (32) | len (2) | packet, until ready */
	uint64_t started, last_rx, last_tx, last_used, retry_at, backoff;
	uint32_t keepalive_ms;
	/* A node given by name only: the lookup in flight, and its answer. */
	struct lookup lookup;
	char gai_host[254];
	struct endpoint resolved;
	size_t resolved_node;
	uint64_t resolved_at;
	bool has_resolved;
};

struct qpkt {
	struct qpkt *next;
	uint8_t peer[32];
	size_t len;
	uint8_t data[];
};

struct relays {
	struct relays_config cfg;
	uint8_t priv[32], pub[32];
	struct json *map_json;
	struct relaymap map;
	int home;
	struct conn *conns;
	struct loop_timer *tick;
	SSL_CTX *tls;
	char *ca_file;
	int efd;

	pthread_mutex_t qlock; /* guards qhead, qtail, qcount, qbytes */
	struct qpkt *qhead, *qtail;
	size_t qcount, qbytes;

	_Atomic unsigned long long st_tx_packets, st_tx_bytes, st_rx_packets, st_rx_bytes;
	_Atomic unsigned long long st_drop_queue, st_drop_region, st_drop_ready, st_drop_out;
	_Atomic unsigned long long st_connects, st_failures, st_key_refusals;
};

bool relays_node_endpoint(const struct relaymap_node *n, uint16_t port, struct endpoint *out)
{
	const char *cands[3] = { n->ipv4, n->ipv6, n->host };

	memset(out, 0, sizeof(*out));
	for (size_t i = 0; i < 3; i++) {
		if (!cands[i][0])
			continue;
		if (inet_pton(AF_INET, cands[i], &out->addr.in4.sin_addr) == 1) {
			out->addr.in4.sin_family = AF_INET;
			out->addr.in4.sin_port = htons(port);
			return true;
		}
		if (inet_pton(AF_INET6, cands[i], &out->addr.in6.sin6_addr) == 1) {
			out->addr.in6.sin6_family = AF_INET6;
			out->addr.in6.sin6_port = htons(port);
			return true;
		}
	}
	return false;
}

static const struct relaymap_region *region_of(const struct relays *r, int region)
{
	return region > 0 ? relaymap_region(&r->map, region) : NULL;
}

static const struct relaymap_node *node_of(const struct conn *c)
{
	const struct relaymap_region *reg = region_of(c->r, c->region);

	return reg && c->node < reg->nnodes ? &reg->nodes[c->node] : NULL;
}

/* ---- one connection ---- */

static void conn_drop_socket(struct conn *c)
{
	lookup_stop(&c->lookup); /* the request lives in the connection */
	if (c->fd >= 0) {
		loop_fd_del(c->r->cfg.loop, c->fd);
		close(c->fd);
		c->fd = -1;
	}
	if (c->ssl) {
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->core_live) {
		relay_client_free(&c->core);
		c->core_live = false;
	}
	buf_free(&c->out);
	c->writing = false;
}

/* The connection failed: the next node of the region, after the backoff. */
static void conn_fail(struct conn *c, const char *why)
{
	const struct relaymap_region *reg = region_of(c->r, c->region);
	const struct relaymap_node *n = node_of(c);
	uint64_t now = loop_mono_ms();

	log_warn("relay connection failed", "region=%d node=%s why=\"%s\"", c->region, n ? n->name : "?", why);
	atomic_fetch_add(&c->r->st_failures, 1);
	conn_drop_socket(c);
	c->state = CONN_IDLE;
	if (reg && reg->nnodes)
		c->node = (c->node + 1) % reg->nnodes;
	c->backoff = c->backoff ? c->backoff * 2 : RELAYS_BACKOFF_MIN_MS;
	if (c->backoff > RELAYS_BACKOFF_MAX_MS)
		c->backoff = RELAYS_BACKOFF_MAX_MS;
	/* A random point in the second half, so clients a relay dropped at
	 * once do not all come back at once. */
	c->retry_at = now + c->backoff / 2 + randombytes_uniform((uint32_t)(c->backoff / 2 + 1));
}

static void conn_want_write(struct conn *c, bool on)
{
	if (c->fd < 0 || c->writing == on)
		return;
	c->writing = on;
	loop_fd_modify(c->r->cfg.loop, c->fd, LOOP_READ | (on ? LOOP_WRITE : 0));
}

/* Writes what is queued; false if the connection failed. */
static bool conn_flush(struct conn *c)
{
	/* A callback of the core sent something: the reader flushes after
	 * the feed, so a failed write never frees the core under it. */
	if (c->feeding)
		return true;
	while (c->out.len) {
		ssize_t n = tlsio_write(c->fd, c->ssl, c->out.data, c->out.len);

		if (n == -EAGAIN) {
			conn_want_write(c, true);
			return true;
		}
		if (n <= 0) {
			conn_fail(c, "write failed");
			return false;
		}
		buf_consume(&c->out, (size_t)n);
		c->last_tx = loop_mono_ms();
	}
	conn_want_write(c, false);
	return true;
}

/* Appends a SEND_PACKET for a ready connection, within the cap. */
static int conn_send(struct conn *c, const uint8_t peer[32], const void *pkt, size_t len)
{
	if (c->out.len + len + FRAME_OVERHEAD > RELAYS_OUT_BYTES) {
		atomic_fetch_add(&c->r->st_drop_out, 1);
		return -ENOBUFS;
	}
	if (relay_client_send(&c->core, peer, pkt, len, &c->out)) {
		atomic_fetch_add(&c->r->st_drop_out, 1);
		return -ENOBUFS;
	}
	atomic_fetch_add(&c->r->st_tx_packets, 1);
	atomic_fetch_add(&c->r->st_tx_bytes, len);
	c->last_used = loop_mono_ms();
	return 0;
}

static void on_ready(const struct relay_server_info *info, void *arg)
{
	struct conn *c = arg;
	const struct relaymap_node *n = node_of(c);
	size_t off = 0;

	c->state = CONN_READY;
	c->backoff = 0;
	c->keepalive_ms = info->keepalive_ms ? info->keepalive_ms : 60000;
	atomic_fetch_add(&c->r->st_connects, 1);
	log_info("relay connected", "region=%d node=%s home=%d", c->region, n ? n->name : "?", c->region == c->r->home);
	/* What waited for the connection. */
	while (off + 34 <= c->pending.len) {
		const uint8_t *rec = c->pending.data + off;
		size_t len = (size_t)rec[32] << 8 | rec[33];

		conn_send(c, rec, rec + 34, len);
		off += 34 + len;
	}
	buf_free(&c->pending);
}

static void on_packet(const uint8_t src[RELAY_KEY_LEN], const uint8_t *data, size_t len, void *arg)
{
	struct conn *c = arg;
	struct relays *r = c->r;

	c->last_used = loop_mono_ms();
	atomic_fetch_add(&r->st_rx_packets, 1);
	atomic_fetch_add(&r->st_rx_bytes, len);
	if (disco_is(data, len)) {
		if (r->cfg.on_disco)
			r->cfg.on_disco(r->cfg.arg, src, data, len);
		return;
	}
	receive_relayed(r->cfg.hub, src, data, len);
}

static void on_health(const char *problem, size_t len, void *arg)
{
	struct conn *c = arg;

	if (len)
		log_warn("relay reports a problem", "region=%d problem=\"%.*s\"", c->region, (int)len, problem);
}

static const struct relay_client_cb core_cb = {
	.ready = on_ready,
	.packet = on_packet,
	.health = on_health,
};

static void conn_start_relay(struct conn *c)
{
	const struct relaymap_node *n = node_of(c);

	c->state = CONN_HELLO;
	/* A key in the map is pinned: a relay announcing another is refused
	 * before CLIENT_INFO, and SERVER_INFO must open with the pinned key. */
	relay_client_init(&c->core, c->r->pub, c->r->priv, n && n->has_key ? n->key : NULL, &core_cb, c);
	c->core_live = true;
	if (relay_client_start(&c->core, n ? n->host : "relay", &c->out)) {
		conn_fail(c, "cannot build the upgrade request");
		return;
	}
	conn_flush(c);
}

static void conn_read(struct conn *c)
{
	static uint8_t chunk[READ_CHUNK]; /* loop thread only */

	for (int rounds = 0; rounds < 16 || (c->ssl && SSL_pending(c->ssl) > 0); rounds++) {
		ssize_t n = tlsio_read(c->fd, c->ssl, chunk, sizeof(chunk));

		if (n == -EAGAIN)
			break;
		if (n <= 0) {
			conn_fail(c, n == 0 ? "closed by the relay" : "read failed");
			return;
		}
		c->last_rx = loop_mono_ms();
		c->feeding = true;
		n = relay_client_feed(&c->core, chunk, (size_t)n, &c->out);
		c->feeding = false;
		if (n < 0) {
			/* Either way the region's next node is tried next. */
			if (c->core.wrong_key)
				atomic_fetch_add(&c->r->st_key_refusals, 1);
			conn_fail(c, c->core.error[0] ? c->core.error : "protocol error");
			return;
		}
		if (c->state == CONN_IDLE)
			return;
	}
	conn_flush(c);
}

static void conn_tls_step(struct conn *c)
{
	char why[160];
	bool want_write;
	int r = tlsio_handshake(c->ssl, &want_write, "TLS handshake", why, sizeof(why));

	if (r == -EPROTO) {
		conn_fail(c, why);
		return;
	}
	conn_want_write(c, want_write);
	if (r == 0)
		conn_start_relay(c);
}

static void on_conn_io(struct loop *loop, int fd, unsigned events, void *arg)
{
	struct conn *c = arg;

	if (c->state == CONN_CONNECTING) {
		int err = 0;
		socklen_t len = sizeof(err);

		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) || err) {
			conn_fail(c, strerror(err ? err : errno));
			return;
		}
		if (!(events & (LOOP_WRITE | LOOP_READ)))
			return;
		if (c->ssl) {
			c->state = CONN_TLS;
			conn_tls_step(c);
		} else {
			conn_want_write(c, false);
			conn_start_relay(c);
		}
		return;
	}
	if (c->state == CONN_TLS) {
		conn_tls_step(c);
		return;
	}
	if (events & (LOOP_READ | LOOP_HUP | LOOP_ERROR))
		conn_read(c);
	if (c->state != CONN_IDLE && (events & LOOP_WRITE))
		conn_flush(c);
}

static SSL_CTX *tls_ctx(struct relays *r)
{
	/* Made on the first TLS relay; tried again on the next when it fails. */
	if (!r->tls && !(r->tls = tlsio_client_ctx(r->ca_file)))
		log_warn("cannot load TLS trust anchors for relays", "ca=%s", r->ca_file ? r->ca_file : "(system)");
	return r->tls;
}

static void conn_connect(struct conn *c)
{
	const struct relaymap_node *n = node_of(c);
	struct endpoint ep;
	uint32_t mark = hub_fwmark(c->r->cfg.hub);
	int one = 1;

	c->started = c->last_rx = c->last_tx = loop_mono_ms();
	if (!n) {
		conn_fail(c, "no such node");
		return;
	}
	if (!relays_node_endpoint(n, n->relay_port, &ep)) {
		/* By name: looked up without blocking the loop (on_tick polls). */
		if (!c->has_resolved || c->resolved_node != c->node || c->started - c->resolved_at > RESOLVED_TTL_MS) {
			snprintf(c->gai_host, sizeof(c->gai_host), "%s", n->host);
			if (lookup_start(&c->lookup, c->gai_host, NULL, SOCK_STREAM)) {
				conn_fail(c, "cannot look the relay's name up");
				return;
			}
			c->state = CONN_RESOLVING;
			return;
		}
		ep = c->resolved;
		if (ep.addr.sa.sa_family == AF_INET6)
			ep.addr.in6.sin6_port = htons(n->relay_port);
		else
			ep.addr.in4.sin_port = htons(n->relay_port);
	}
	buf_init(&c->out, RELAYS_OUT_BYTES + RELAY_FRAME_HDR + RELAY_MAX_FRAME + 4096);
	c->fd = socket(ep.addr.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		conn_fail(c, strerror(errno));
		return;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* Like the WireGuard socket: never routed through the tailnet itself. */
	if (mark)
		setsockopt(c->fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark));
	if (n->tls) {
		if (!(c->ssl = tlsio_client_new(tls_ctx(c->r), c->fd, n->host))) {
			conn_fail(c, "cannot set up TLS");
			return;
		}
	}
	if (connect(c->fd, &ep.addr.sa, endpoint_socklen(&ep)) && errno != EINPROGRESS) {
		conn_fail(c, strerror(errno));
		return;
	}
	c->state = CONN_CONNECTING;
	c->writing = true;
	if (loop_fd_add(c->r->cfg.loop, c->fd, LOOP_READ | LOOP_WRITE, on_conn_io, c)) {
		c->writing = false;
		conn_fail(c, "cannot watch the socket");
	}
}

static void conn_free(struct conn *c)
{
	conn_drop_socket(c);
	buf_free(&c->pending);
	free(c);
}

static struct conn *conn_find(const struct relays *r, int region)
{
	for (struct conn *c = r->conns; c; c = c->next)
		if (c->region == region)
			return c;
	return NULL;
}

static struct conn *conn_get(struct relays *r, int region)
{
	struct conn *c = conn_find(r, region);

	if (c || !region_of(r, region))
		return c;
	if (!(c = calloc(1, sizeof(*c))))
		return NULL;
	c->r = r;
	c->region = region;
	c->fd = -1;
	c->last_used = loop_mono_ms();
	buf_init(&c->out, RELAYS_OUT_BYTES + RELAY_FRAME_HDR + RELAY_MAX_FRAME + 4096);
	buf_init(&c->pending, RELAYS_PENDING_BYTES);
	c->next = r->conns;
	r->conns = c;
	conn_connect(c);
	return c;
}

static void conns_close(struct relays *r, bool all)
{
	for (struct conn **pp = &r->conns; *pp;) {
		struct conn *c = *pp;

		if (all || !region_of(r, c->region)) {
			*pp = c->next;
			conn_free(c);
		} else {
			pp = &c->next;
		}
	}
}

static int send_via(struct relays *r, int region, const uint8_t peer[32], const void *pkt, size_t len)
{
	struct conn *c;
	uint8_t hdr[34];

	if (len > RELAY_MAX_PACKET || !(c = conn_get(r, region))) {
		atomic_fetch_add(&r->st_drop_region, 1);
		return -ENOENT;
	}
	if (c->state == CONN_READY)
		return conn_send(c, peer, pkt, len);
	c->last_used = loop_mono_ms();
	memcpy(hdr, peer, 32);
	hdr[32] = (uint8_t)(len >> 8);
	hdr[33] = (uint8_t)len;
	if (c->pending.len + sizeof(hdr) + len > RELAYS_PENDING_BYTES || buf_add(&c->pending, hdr, sizeof(hdr)) ||
	    buf_add(&c->pending, pkt, len)) {
		atomic_fetch_add(&r->st_drop_ready, 1);
		return -ENOBUFS;
	}
	return 0;
}

int relays_send(struct relays *r, int region, const uint8_t peer[32], const void *pkt, size_t len)
{
	int err = send_via(r, region, peer, pkt, len);
	struct conn *c = conn_find(r, region);

	if (c && c->state == CONN_READY)
		conn_flush(c);
	return err;
}

/* ---- the queue from the data path ---- */

size_t relays_enqueue(void *arg, const uint8_t peer[32], const struct iovec *pkts, size_t n)
{
	struct relays *r = arg;
	struct qpkt *head = NULL, **tail = &head, *last = NULL;
	size_t taken = 0, bytes = 0, made = 0;
	bool wake;

	for (size_t i = 0; i < n; i++) {
		struct qpkt *q = malloc(sizeof(*q) + pkts[i].iov_len);

		if (!q)
			break;
		memcpy(q->peer, peer, 32);
		q->len = pkts[i].iov_len;
		memcpy(q->data, pkts[i].iov_base, q->len);
		q->next = NULL;
		*tail = q;
		tail = &q->next;
		last = q;
		made++;
	}
	pthread_mutex_lock(&r->qlock);
	wake = r->qcount == 0;
	/* Whole packets until a cap is reached; the rest are dropped. */
	for (struct qpkt *q = head; q && r->qcount + taken < RELAYS_QUEUE_PACKETS &&
				    r->qbytes + bytes + q->len <= RELAYS_QUEUE_BYTES;
	     q = q->next) {
		taken++;
		bytes += q->len;
		last = q;
	}
	if (taken) {
		struct qpkt *rest = last->next;

		last->next = NULL;
		if (r->qtail)
			r->qtail->next = head;
		else
			r->qhead = head;
		r->qtail = last;
		r->qcount += taken;
		r->qbytes += bytes;
		head = rest;
	}
	pthread_mutex_unlock(&r->qlock);
	while (head) {
		struct qpkt *q = head;
		head = q->next;
		free(q);
	}
	if (n > taken)
		atomic_fetch_add(&r->st_drop_queue, n - taken);
	(void)made;
	if (taken && wake) {
		uint64_t v = 1;
		ssize_t w = write(r->efd, &v, sizeof(v));
		(void)w;
	}
	return taken;
}

static void on_queue(struct loop *loop, int fd, unsigned events, void *arg)
{
	struct relays *r = arg;
	struct qpkt *list;
	uint64_t v;
	ssize_t n = read(r->efd, &v, sizeof(v));

	(void)n;
	pthread_mutex_lock(&r->qlock);
	list = r->qhead;
	r->qhead = r->qtail = NULL;
	r->qcount = r->qbytes = 0;
	pthread_mutex_unlock(&r->qlock);
	while (list) {
		struct qpkt *q = list;
		int region = r->cfg.peer_region ? r->cfg.peer_region(r->cfg.arg, q->peer) : 0;

		list = q->next;
		send_via(r, region, q->peer, q->data, q->len);
		free(q);
	}
	for (struct conn *c = r->conns; c; c = c->next)
		if (c->state == CONN_READY && c->out.len)
			conn_flush(c);
}

/* ---- timers: connect deadlines, keepalives, idle and reconnects ---- */

/* A name lookup in flight: done, failed, or still waiting. */
static void conn_resolved(struct conn *c, uint64_t now)
{
	struct addrinfo *res, *ai;
	int err = lookup_result(&c->lookup, &res);

	if (err == EAI_INPROGRESS) {
		if (now - c->started > RELAYS_CONNECT_TIMEOUT_MS)
			conn_fail(c, "the relay's name did not resolve in time");
		return;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		if (ai->ai_family == AF_INET || ai->ai_family == AF_INET6) {
			memset(&c->resolved, 0, sizeof(c->resolved));
			memcpy(&c->resolved.addr, ai->ai_addr, ai->ai_addrlen <= sizeof(c->resolved.addr) ? ai->ai_addrlen : 0);
			c->has_resolved = true;
			c->resolved_node = c->node;
			c->resolved_at = now;
			break;
		}
	}
	if (res)
		freeaddrinfo(res);
	if (!ai) {
		conn_fail(c, err ? gai_strerror(err) : "the relay's name has no address");
		return;
	}
	conn_connect(c);
}

static void on_tick(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct relays *r = arg;
	uint64_t now = loop_mono_ms();

	if (r->home && !conn_find(r, r->home))
		conn_get(r, r->home);
	for (struct conn **pp = &r->conns; *pp;) {
		struct conn *c = *pp;
		bool home = c->region == r->home;

		if (!home && now - c->last_used > RELAYS_IDLE_MS) {
			*pp = c->next;
			log_debug("relay connection idle: closed", "region=%d", c->region);
			conn_free(c);
			continue;
		}
		pp = &c->next;
		switch (c->state) {
		case CONN_IDLE:
			if (now >= c->retry_at)
				conn_connect(c);
			break;
		case CONN_RESOLVING:
			conn_resolved(c, now);
			break;
		case CONN_CONNECTING:
		case CONN_TLS:
		case CONN_HELLO:
			if (now - c->started > RELAYS_CONNECT_TIMEOUT_MS)
				conn_fail(c, "not ready in time");
			break;
		case CONN_READY:
			/* The server sends something every keepalive_ms: silence
			 * well past that is a dead connection. */
			if (now - c->last_rx > (uint64_t)c->keepalive_ms * 5 / 2) {
				conn_fail(c, "the relay went silent");
			} else if (now - c->last_tx >= c->keepalive_ms / 2 && !c->out.len) {
				if (!relay_client_keepalive(&c->core, &c->out))
					conn_flush(c);
			}
			break;
		}
	}
	loop_timer_arm(t, TICK_MS);
}

/* ---- the set ---- */

int relays_new(struct relays **out, const struct relays_config *cfg)
{
	struct relays *r = calloc(1, sizeof(*r));
	int err = -ENOMEM;

	*out = NULL;
	if (!r)
		return -ENOMEM;
	r->cfg = *cfg;
	r->efd = -1;
	pthread_mutex_init(&r->qlock, NULL);
	if (cfg->node_priv)
		relays_set_key(r, cfg->node_priv);
	if ((cfg->ca_file && !(r->ca_file = strdup(cfg->ca_file))) || !(r->tick = loop_timer_new(cfg->loop, on_tick, r)))
		goto out;
	r->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (r->efd < 0) {
		err = -errno;
		goto out;
	}
	if ((err = loop_fd_add(cfg->loop, r->efd, LOOP_READ, on_queue, r)))
		goto out;
	loop_timer_arm(r->tick, TICK_MS);
	*out = r;
	err = 0;
out:
	if (err)
		relays_free(r);
	return err;
}

void relays_free(struct relays *r)
{
	if (!r)
		return;
	conns_close(r, true);
	if (r->efd >= 0) {
		loop_fd_del(r->cfg.loop, r->efd);
		close(r->efd);
	}
	while (r->qhead) {
		struct qpkt *q = r->qhead;
		r->qhead = q->next;
		free(q);
	}
	loop_timer_free(r->tick);
	SSL_CTX_free(r->tls);
	json_free(r->map_json);
	relaymap_free(&r->map);
	free(r->ca_file);
	pthread_mutex_destroy(&r->qlock);
	sodium_memzero(r->priv, sizeof(r->priv));
	free(r);
}

void relays_set_map(struct relays *r, const struct json *relay_map)
{
	struct relaymap m;
	char err[256];

	if (json_equal(relay_map, r->map_json) || (!relay_map && !r->map_json))
		return;
	if (!relaymap_parse(relay_map, &m, err, sizeof(err))) {
		log_warn("relay map not usable", "error=\"%s\"", err);
		return;
	}
	json_free(r->map_json);
	r->map_json = relay_map ? json_clone(relay_map) : NULL;
	relaymap_free(&r->map);
	r->map = m;
	/* A node may have moved: connections start over on the new map. */
	conns_close(r, true);
	if (r->home && !region_of(r, r->home))
		r->home = 0;
}

void relays_set_key(struct relays *r, const uint8_t node_priv[32])
{
	if (!sodium_memcmp(r->priv, node_priv, 32))
		return;
	memcpy(r->priv, node_priv, 32);
	crypto_scalarmult_base(r->pub, r->priv);
	conns_close(r, true);
}

void relays_set_home(struct relays *r, int region)
{
	if (region && !region_of(r, region))
		region = 0;
	if (region == r->home)
		return;
	r->home = region;
	if (region)
		conn_get(r, region);
}

int relays_home(const struct relays *r)
{
	return r->home;
}

bool relays_has_region(const struct relays *r, int region)
{
	return region_of(r, region) != NULL;
}

const char *relays_region_code(const struct relays *r, int region)
{
	const struct relaymap_region *reg = region_of(r, region);

	return reg ? reg->code : "";
}

bool relays_connected(const struct relays *r, int region)
{
	const struct conn *c = conn_find(r, region);

	return c && c->state == CONN_READY;
}

void relays_stats(const struct relays *r, struct relays_stats *out)
{
	out->tx_packets = atomic_load(&r->st_tx_packets);
	out->tx_bytes = atomic_load(&r->st_tx_bytes);
	out->rx_packets = atomic_load(&r->st_rx_packets);
	out->rx_bytes = atomic_load(&r->st_rx_bytes);
	out->drop_queue_full = atomic_load(&r->st_drop_queue);
	out->drop_no_region = atomic_load(&r->st_drop_region);
	out->drop_not_ready = atomic_load(&r->st_drop_ready);
	out->drop_out_full = atomic_load(&r->st_drop_out);
	out->connects = atomic_load(&r->st_connects);
	out->failures = atomic_load(&r->st_failures);
	out->key_refusals = atomic_load(&r->st_key_refusals);
}
