#include "pathstats.h"

#include <errno.h>
#include <stdlib.h>

#include "datagrams.h"
#include "identity.h"
#include "loop.h"
#include "metrics.h"
#include "netstun.h"
#include "paths.h"
#include "relays.h"

/* A counter mirrored from a component's own running total. */
struct mirror {
	struct metric *m;
	unsigned long long last;
};

enum {
	RELAY_TX_BYTES, RELAY_RX_BYTES, RELAY_TX_PACKETS, RELAY_RX_PACKETS,
	RELAY_DROP_QUEUE, RELAY_DROP_REGION, RELAY_DROP_READY, RELAY_DROP_OUT,
	RELAY_CONNECTS, RELAY_FAILURES, RELAY_KEY_REFUSALS,
	DISCO_PINGS, DISCO_PONGS, DISCO_PINGS_RX, DISCO_CMM_TX, DISCO_CMM_RX, DISCO_BAD,
	PATH_UP, PATH_DOWN,
	DG_GARBAGE, DG_FULL, DG_DISCO_UNKNOWN, DG_STUN_UNKNOWN,
	STUN_REQUESTS, STUN_RESPONSES, STUN_BAD,
	NMIRRORS
};

struct pathstats {
	struct loop_timer *timer;
	struct identity *id;
	struct datagrams *dg;
	struct netstun *stun;
	struct mirror mi[NMIRRORS];
	struct metric *paths[3], *home, *hard_nat;
};

static void mirror(struct mirror *x, unsigned long long now)
{
	if (now > x->last)
		metrics_add(x->m, (double)(now - x->last));
	x->last = now;
}

static void on_timer(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct pathstats *p = arg;
	struct paths *paths = identity_paths(p->id);
	struct relays *relays = identity_relays(p->id);
	struct datagrams_stats ds;
	struct netstun_stats ns;

	if (paths && relays) {
		struct paths_stats ps;
		struct relays_stats rs;

		paths_stats(paths, &ps);
		relays_stats(relays, &rs);
		metrics_set(p->paths[0], (double)ps.direct);
		metrics_set(p->paths[1], (double)ps.relay);
		metrics_set(p->paths[2], (double)ps.other);
		metrics_set(p->home, relays_home(relays));
		mirror(&p->mi[RELAY_TX_BYTES], rs.tx_bytes);
		mirror(&p->mi[RELAY_RX_BYTES], rs.rx_bytes);
		mirror(&p->mi[RELAY_TX_PACKETS], rs.tx_packets);
		mirror(&p->mi[RELAY_RX_PACKETS], rs.rx_packets);
		mirror(&p->mi[RELAY_DROP_QUEUE], rs.drop_queue_full);
		mirror(&p->mi[RELAY_DROP_REGION], rs.drop_no_region);
		mirror(&p->mi[RELAY_DROP_READY], rs.drop_not_ready);
		mirror(&p->mi[RELAY_DROP_OUT], rs.drop_out_full);
		mirror(&p->mi[RELAY_CONNECTS], rs.connects);
		mirror(&p->mi[RELAY_FAILURES], rs.failures);
		mirror(&p->mi[RELAY_KEY_REFUSALS], rs.key_refusals);
		mirror(&p->mi[DISCO_PINGS], ps.pings_sent);
		mirror(&p->mi[DISCO_PONGS], ps.pongs_received);
		mirror(&p->mi[DISCO_PINGS_RX], ps.pings_received);
		mirror(&p->mi[DISCO_CMM_TX], ps.call_me_maybe_sent);
		mirror(&p->mi[DISCO_CMM_RX], ps.call_me_maybe_received);
		mirror(&p->mi[DISCO_BAD], ps.bad);
		mirror(&p->mi[PATH_UP], ps.upgrades);
		mirror(&p->mi[PATH_DOWN], ps.fallbacks);
	}
	datagrams_stats(p->dg, &ds);
	mirror(&p->mi[DG_GARBAGE], ds.garbage);
	mirror(&p->mi[DG_FULL], ds.dropped);
	mirror(&p->mi[DG_DISCO_UNKNOWN], ds.disco_unknown);
	mirror(&p->mi[DG_STUN_UNKNOWN], ds.stun_unknown);
	netstun_stats(p->stun, &ns);
	mirror(&p->mi[STUN_REQUESTS], ns.requests);
	mirror(&p->mi[STUN_RESPONSES], ns.responses);
	mirror(&p->mi[STUN_BAD], ns.bad + ns.unmatched);
	metrics_set(p->hard_nat, netstun_mapping_varies(p->stun));
	loop_timer_arm(t, PATHSTATS_INTERVAL_MS);
}

static struct metric *one(struct metrics_family *f)
{
	return f ? metrics_with(f, NULL) : NULL;
}

int pathstats_new(struct pathstats **out, struct loop *loop, struct metrics *reg, struct identity *id,
		  struct datagrams *dg, struct netstun *stun)
{
	struct pathstats *p = calloc(1, sizeof(*p));
	int err = -ENOMEM;
	struct metrics_family *paths, *rbytes, *rpkts, *rdrop, *disco, *dgdrop, *changes;
	static const char *const kind[] = { "kind", NULL }, *const dir[] = { "direction", NULL },
				 *const reason[] = { "reason", NULL }, *const type[] = { "type", NULL },
				 *const to[] = { "to", NULL };

	*out = NULL;
	if (!p)
		return -ENOMEM;
	p->id = id;
	p->dg = dg;
	p->stun = stun;
	paths = metrics_gauge_new(reg, "knitd_paths", "Peers by the path their packets take now.", kind);
	p->paths[0] = METRICS_WITH(paths, "direct");
	p->paths[1] = METRICS_WITH(paths, "relay");
	p->paths[2] = METRICS_WITH(paths, "endpoint");
	p->home = one(metrics_gauge_new(reg, "knitd_relay_home_region", "The relay region peers reach this node at (0: none).", NULL));
	p->hard_nat = one(metrics_gauge_new(reg, "knitd_nat_mapping_varies",
					    "1 when STUN servers saw different mappings of the socket (hard NAT).", NULL));
	rbytes = metrics_counter_new(reg, "knitd_relay_bytes_total", "Packet bytes through relays.", dir);
	p->mi[RELAY_TX_BYTES].m = METRICS_WITH(rbytes, "tx");
	p->mi[RELAY_RX_BYTES].m = METRICS_WITH(rbytes, "rx");
	rpkts = metrics_counter_new(reg, "knitd_relay_packets_total", "Packets through relays.", dir);
	p->mi[RELAY_TX_PACKETS].m = METRICS_WITH(rpkts, "tx");
	p->mi[RELAY_RX_PACKETS].m = METRICS_WITH(rpkts, "rx");
	rdrop = metrics_counter_new(reg, "knitd_relay_dropped_packets_total", "Packets for relays dropped, by reason.", reason);
	p->mi[RELAY_DROP_QUEUE].m = METRICS_WITH(rdrop, "queue_full");
	p->mi[RELAY_DROP_REGION].m = METRICS_WITH(rdrop, "no_region");
	p->mi[RELAY_DROP_READY].m = METRICS_WITH(rdrop, "not_connected");
	p->mi[RELAY_DROP_OUT].m = METRICS_WITH(rdrop, "socket_backlog");
	p->mi[RELAY_CONNECTS].m = one(metrics_counter_new(reg, "knitd_relay_connects_total", "Relay connections made ready.", NULL));
	p->mi[RELAY_FAILURES].m = one(metrics_counter_new(reg, "knitd_relay_failures_total", "Relay connections that failed.", NULL));
	p->mi[RELAY_KEY_REFUSALS].m = one(metrics_counter_new(reg, "knitd_relay_key_refusals_total",
							      "Relays refused for proving a key other than the relay map pins.", NULL));
	disco = metrics_counter_new(reg, "knitd_disco_messages_total", "Disco messages, by type.", type);
	p->mi[DISCO_PINGS].m = METRICS_WITH(disco, "ping_sent");
	p->mi[DISCO_PONGS].m = METRICS_WITH(disco, "pong_received");
	p->mi[DISCO_PINGS_RX].m = METRICS_WITH(disco, "ping_received");
	p->mi[DISCO_CMM_TX].m = METRICS_WITH(disco, "call_me_maybe_sent");
	p->mi[DISCO_CMM_RX].m = METRICS_WITH(disco, "call_me_maybe_received");
	p->mi[DISCO_BAD].m = METRICS_WITH(disco, "bad");
	changes = metrics_counter_new(reg, "knitd_path_changes_total", "Peers moved to a direct path or back to the relay.", to);
	p->mi[PATH_UP].m = METRICS_WITH(changes, "direct");
	p->mi[PATH_DOWN].m = METRICS_WITH(changes, "relay");
	dgdrop = metrics_counter_new(reg, "knitd_datagrams_dropped_total",
				     "Non-WireGuard datagrams on the UDP socket dropped, by reason.", reason);
	p->mi[DG_GARBAGE].m = METRICS_WITH(dgdrop, "garbage");
	p->mi[DG_FULL].m = METRICS_WITH(dgdrop, "queue_full");
	p->mi[DG_DISCO_UNKNOWN].m = METRICS_WITH(dgdrop, "disco_unknown");
	p->mi[DG_STUN_UNKNOWN].m = METRICS_WITH(dgdrop, "stun_unknown");
	p->mi[STUN_REQUESTS].m = one(metrics_counter_new(reg, "knitd_stun_requests_total", "STUN binding requests sent.", NULL));
	p->mi[STUN_RESPONSES].m = one(metrics_counter_new(reg, "knitd_stun_responses_total", "STUN answers to our requests.", NULL));
	p->mi[STUN_BAD].m = one(metrics_counter_new(reg, "knitd_stun_bad_total", "STUN messages that were not an answer to us.", NULL));
	p->timer = loop_timer_new(loop, on_timer, p);
	for (size_t i = 0; i < NMIRRORS; i++)
		if (!p->mi[i].m)
			goto out;
	if (!p->timer || !p->paths[0] || !p->paths[1] || !p->paths[2] || !p->home || !p->hard_nat)
		goto out;
	loop_timer_arm(p->timer, 0);
	*out = p;
	err = 0;
out:
	if (err)
		pathstats_free(p);
	return err;
}

void pathstats_free(struct pathstats *p)
{
	if (!p)
		return;
	loop_timer_free(p->timer);
	free(p);
}
