/* knitd's HTTP endpoint for operators (--http-listen): /healthz, Prometheus
 * /metrics with the data plane's knitd_* series (wg/exporter.h), and, when
 * the caller says what ready means, /readyz. Runs on the loop the engine's
 * hub runs on: handlers, the exporter and any gauge the caller adds to the
 * registry are read there. */
#ifndef KNIT_AGENT_HEALTH_H
#define KNIT_AGENT_HEALTH_H

#include "httpd.h"

struct engine;
struct loop;
struct metrics;
struct health;

/* Listens on listen ("127.0.0.1:9102", "[::]:9102"). readyz NULL: no
 * /readyz route. Returns 0 or a negative errno (-EADDRINUSE, -ENOMEM...). */
int health_new(struct health **out, struct loop *loop, const char *listen, struct engine *e, httpd_handler_fn readyz,
	       void *arg);
/* The registry, for the caller's own families (registered before the
 * first scrape or at any time: the registry is thread-safe). */
struct metrics *health_metrics(struct health *h);
uint16_t health_port(const struct health *h);
/* Stops serving and frees the registry; NULL is a no-op. */
void health_free(struct health *h);

#endif
