#include "wg/exporter.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#include "metrics.h"
#include "policy/filter.h"
#include "wg/engine.h"
#include "wg/hub.h"

/* A series that mirrors a counter kept elsewhere: each collect adds what
 * it grew by since the last. */
struct mirror {
	struct metric *m;
	unsigned long long last;
};

enum {
	IN_BYTES,
	OUT_BYTES,
	HS_SENT,
	HS_RECEIVED,
	KEEPALIVES,
	COOKIE_REPLIES,
	RATELIMITED,
	HS_QUEUE_DROPPED,
	LARGE_TAKEN,
	/* knitd_dropped_packets_total, direction and reason */
	DROP_NO_ROUTE,
	DROP_NO_ENDPOINT,
	DROP_OUT_OVERFLOW,
	DROP_SEND_FAILED,
	DROP_BAD_SOURCE,
	DROP_BAD_PACKET,
	DROP_AUTH_FAILED,
	DROP_REPLAYED,
	DROP_IN_OVERFLOW,
	DROP_INVALID,
	DROP_UNKNOWN_INDEX,
	DROP_TOO_BIG,
	DROP_TX_NO_LARGE,
	DROP_RX_NO_LARGE,
	/* the tailnet policy's packet filter (mesh mode) */
	DROP_F_NO_RULE,
	DROP_F_NOT_TRACKED,
	DROP_F_MALFORMED,
	DROP_F_TABLE_FULL,
	DROP_F_NOT_LOCAL,
	NMIRRORS
};

static const struct {
	const char *direction, *reason;
} drops[] = {
	[DROP_NO_ROUTE - DROP_NO_ROUTE] = { "outbound", "no_route" },
	[DROP_NO_ENDPOINT - DROP_NO_ROUTE] = { "outbound", "no_endpoint" },
	[DROP_OUT_OVERFLOW - DROP_NO_ROUTE] = { "outbound", "overflow" },
	[DROP_SEND_FAILED - DROP_NO_ROUTE] = { "outbound", "send_failed" },
	[DROP_BAD_SOURCE - DROP_NO_ROUTE] = { "inbound", "bad_source" },
	[DROP_BAD_PACKET - DROP_NO_ROUTE] = { "inbound", "bad_packet" },
	[DROP_AUTH_FAILED - DROP_NO_ROUTE] = { "inbound", "auth_failed" },
	[DROP_REPLAYED - DROP_NO_ROUTE] = { "inbound", "replayed" },
	[DROP_IN_OVERFLOW - DROP_NO_ROUTE] = { "inbound", "overflow" },
	[DROP_INVALID - DROP_NO_ROUTE] = { "inbound", "invalid" },
	[DROP_UNKNOWN_INDEX - DROP_NO_ROUTE] = { "inbound", "unknown_index" },
	[DROP_TOO_BIG - DROP_NO_ROUTE] = { "outbound", "too_big" },
	[DROP_TX_NO_LARGE - DROP_NO_ROUTE] = { "outbound", "no_large_buffer" },
	[DROP_RX_NO_LARGE - DROP_NO_ROUTE] = { "inbound", "no_large_buffer" },
	[DROP_F_NO_RULE - DROP_NO_ROUTE] = { "inbound", "policy_no_rule" },
	[DROP_F_NOT_TRACKED - DROP_NO_ROUTE] = { "inbound", "policy_not_tracked" },
	[DROP_F_MALFORMED - DROP_NO_ROUTE] = { "inbound", "policy_malformed" },
	[DROP_F_TABLE_FULL - DROP_NO_ROUTE] = { "outbound", "policy_table_full" },
	[DROP_F_NOT_LOCAL - DROP_NO_ROUTE] = { "inbound", "policy_not_local" },
};
_Static_assert(sizeof(drops) / sizeof(drops[0]) == NMIRRORS - DROP_NO_ROUTE, "a label pair per drop reason");

struct exporter {
	struct engine *e;
	struct metric *peers, *peers_session, *buffers_free, *large_made, *large_in_use;
	struct mirror mirrors[NMIRRORS];
};

static struct metric *one(struct metrics_family *f)
{
	return f ? metrics_with(f, NULL) : NULL;
}

struct exporter *exporter_new(struct metrics *reg, struct engine *e)
{
	struct exporter *x = calloc(1, sizeof(*x));
	struct metrics_family *hs, *dropped;
	struct mirror *mi;
	bool ok;

	if (!x)
		return NULL;
	x->e = e;
	mi = x->mirrors;
	x->peers = one(metrics_gauge_new(reg, "knitd_peers", "WireGuard peers configured.", NULL));
	x->peers_session = one(metrics_gauge_new(reg, "knitd_peers_with_session",
						 "Peers with a current session (a completed handshake that may send).", NULL));
	mi[IN_BYTES].m = one(metrics_counter_new(reg, "knitd_inbound_bytes_total",
						 "WireGuard datagram bytes received from peers (wg show's transfer, summed).", NULL));
	mi[OUT_BYTES].m = one(metrics_counter_new(reg, "knitd_outbound_bytes_total",
						  "WireGuard datagram bytes sent to peers (wg show's transfer, summed).", NULL));
	hs = metrics_counter_new(reg, "knitd_handshakes_total", "Handshake messages (initiations and responses).",
				 (const char *[]){ "direction", NULL });
	mi[HS_SENT].m = hs ? METRICS_WITH(hs, "sent") : NULL;
	mi[HS_RECEIVED].m = hs ? METRICS_WITH(hs, "received") : NULL;
	mi[KEEPALIVES].m = one(metrics_counter_new(reg, "knitd_keepalives_sent_total", "Keepalives sent.", NULL));
	mi[COOKIE_REPLIES].m = one(metrics_counter_new(reg, "knitd_cookie_replies_sent_total",
						       "Cookie replies sent to handshakes that arrived under load.", NULL));
	mi[RATELIMITED].m = one(metrics_counter_new(reg, "knitd_handshakes_ratelimited_total",
						    "Handshakes and cookie replies refused by the per-source limits.", NULL));
	mi[HS_QUEUE_DROPPED].m = one(metrics_counter_new(reg, "knitd_handshake_queue_dropped_total",
							 "Handshake messages dropped because the queue was full.", NULL));
	dropped = metrics_counter_new(reg, "knitd_dropped_packets_total", "Packets dropped, by direction and reason.",
				      (const char *[]){ "direction", "reason", NULL });
	for (int i = DROP_NO_ROUTE; i < NMIRRORS && dropped; i++)
		mi[i].m = METRICS_WITH(dropped, drops[i - DROP_NO_ROUTE].direction, drops[i - DROP_NO_ROUTE].reason);
	x->buffers_free = one(metrics_gauge_new(reg, "knitd_packet_buffers_free",
						"Free packet buffers in the data path's pool.", NULL));
	/* Large slots (agent/wg/pool.h): packets of tunnel MTUs above ~1.9 KB. */
	x->large_made = one(metrics_gauge_new(reg, "knitd_large_packet_buffers",
					      "64 KiB packet buffers allocated for large tunnel MTUs (0 until the first large packet).",
					      NULL));
	x->large_in_use = one(metrics_gauge_new(reg, "knitd_large_packet_buffers_in_use",
						"64 KiB packet buffers held by packets now.", NULL));
	mi[LARGE_TAKEN].m = one(metrics_counter_new(reg, "knitd_large_packet_buffers_taken_total",
						    "Packets given a 64 KiB buffer (they did not fit a small one).", NULL));
	ok = x->peers && x->peers_session && x->buffers_free && x->large_made && x->large_in_use;
	for (int i = 0; i < NMIRRORS; i++)
		ok = ok && mi[i].m;
	if (!ok) {
		/* The registry keeps what did register; errno says why the rest did not. */
		free(x);
		x = NULL;
		if (!errno)
			errno = ENOMEM;
	}
	return x;
}

static void mirror(struct mirror *mi, unsigned long long now)
{
	if (now > mi->last)
		metrics_add(mi->m, (double)(now - mi->last));
	mi->last = now;
}

void exporter_collect(void *arg)
{
	struct exporter *x = arg;
	struct mirror *mi = x->mirrors;
	struct engine_stats es;
	struct hub_stats hs;
	unsigned long long v[NMIRRORS];

	engine_stats(x->e, &es);
	hub_stats(x->e->hub, &hs);
	v[IN_BYTES] = es.rx_bytes;
	v[OUT_BYTES] = es.tx_bytes;
	v[HS_SENT] = es.handshakes_sent;
	v[HS_RECEIVED] = es.handshakes_received;
	v[KEEPALIVES] = es.keepalives_sent;
	v[COOKIE_REPLIES] = hs.cookie_replies_sent;
	v[RATELIMITED] = hs.handshakes_ratelimited;
	v[HS_QUEUE_DROPPED] = hs.handshakes_dropped;
	v[DROP_NO_ROUTE] = es.tx_no_route;
	v[DROP_NO_ENDPOINT] = es.tx_no_endpoint;
	v[DROP_OUT_OVERFLOW] = es.tx_dropped;
	v[DROP_SEND_FAILED] = hs.udp[0].dropped_tx + hs.udp[1].dropped_tx;
	v[DROP_BAD_SOURCE] = es.rx_bad_source;
	v[DROP_BAD_PACKET] = es.rx_bad_packet;
	v[DROP_AUTH_FAILED] = es.rx_auth_failed;
	v[DROP_REPLAYED] = es.rx_replayed;
	v[DROP_IN_OVERFLOW] = es.rx_dropped;
	v[DROP_INVALID] = hs.rx_invalid;
	v[DROP_UNKNOWN_INDEX] = hs.rx_unknown_index;
	v[DROP_TOO_BIG] = es.tun.too_big;
	v[DROP_TX_NO_LARGE] = es.tx_no_large;
	v[DROP_RX_NO_LARGE] = hs.rx_no_large;
	v[LARGE_TAKEN] = hs.pool_large.taken;
	{
		struct filter_counts fc = { 0 };
		if (x->e->filter)
			filter_counters(x->e->filter, &fc);
		v[DROP_F_NO_RULE] = fc.dropped[FILTER_DROP_NO_RULE];
		v[DROP_F_NOT_TRACKED] = fc.dropped[FILTER_DROP_NOT_TRACKED];
		v[DROP_F_MALFORMED] = fc.dropped[FILTER_DROP_MALFORMED];
		v[DROP_F_TABLE_FULL] = fc.dropped[FILTER_DROP_TABLE_FULL];
		v[DROP_F_NOT_LOCAL] = fc.dropped[FILTER_DROP_NOT_LOCAL];
	}
	for (int i = 0; i < NMIRRORS; i++)
		mirror(&mi[i], v[i]);
	metrics_set(x->peers, (double)es.peers);
	metrics_set(x->peers_session, (double)es.peers_with_session);
	metrics_set(x->buffers_free, (double)hs.pool_free);
	metrics_set(x->large_made, (double)hs.pool_large.made);
	metrics_set(x->large_in_use, (double)hs.pool_large.in_use);
}

void exporter_free(struct exporter *x)
{
	free(x);
}
