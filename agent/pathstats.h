/* Path discovery's Prometheus series (knitd --http-listen): the node
 * identity's peers by path kind, its relay traffic, connections and drops,
 * its disco messages, and the node's STUN probes and the disco/STUN
 * datagrams dropped as garbage. Mirrored from the components' own counters
 * every PATHSTATS_INTERVAL_MS on the loop (nothing on the data path). */
#ifndef KNIT_AGENT_PATHSTATS_H
#define KNIT_AGENT_PATHSTATS_H

struct datagrams;
struct identity;
struct loop;
struct metrics;
struct netstun;
struct pathstats;

#define PATHSTATS_INTERVAL_MS 500u

/* Registers the families in reg. 0, -ENOMEM or -EEXIST. */
int pathstats_new(struct pathstats **out, struct loop *loop, struct metrics *reg, struct identity *id,
		  struct datagrams *dg, struct netstun *stun);
void pathstats_free(struct pathstats *ps);

#endif
