/* The data plane's Prometheus series: one engine's peers, traffic, drops
 * and handshakes, and its hub's handshake-path counters, as knitd_* in a
 * registry (lib/metrics.h).
 *
 * The engine and the hub keep their own counters (atomics the data path
 * bumps anyway); nothing here touches a packet. exporter_collect() copies
 * them into the registry's series, so it runs just before a render: make it
 * (or a function that calls it) the registry's collector. It reads the
 * engine, so it runs on the hub's loop thread, which is where an httpd on
 * that loop renders.
 *
 *   struct exporter *x = exporter_new(reg, engine);
 *   metrics_set_collector(reg, exporter_collect, x);
 *   httpd_serve_metrics(http, reg);
 *
 * Hub-wide series (cookie replies, rate limits, the handshake queue) count
 * every identity on the hub; a node agent has one. */
#ifndef KNIT_AGENT_WG_EXPORTER_H
#define KNIT_AGENT_WG_EXPORTER_H

struct engine;
struct metrics;
struct exporter;

/* Registers the families in reg. NULL with errno (ENOMEM, EEXIST: reg
 * already has them). Both must outlive the result. */
struct exporter *exporter_new(struct metrics *reg, struct engine *e);
/* Loop thread. arg: the struct exporter. */
void exporter_collect(void *arg);
/* The series stay in the registry; NULL is a no-op. */
void exporter_free(struct exporter *x);

#endif
