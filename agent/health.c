#include "health.h"

#include <errno.h>
#include <stdlib.h>

#include "metrics.h"
#include "wg/exporter.h"

struct health {
	struct metrics *metrics;
	struct exporter *exporter;
	struct httpd *http;
};

static void healthz(struct httpd_req *req, void *arg)
{
	/* Answered on the loop thread: the agent's loop is turning. */
	httpd_respond_text(req, 200, "ok\n");
}

int health_new(struct health **out, struct loop *loop, const char *listen, struct engine *e, httpd_handler_fn readyz,
	       void *arg)
{
	struct httpd_opts ho = { .listen = listen, .listen_fd = -1 };
	struct health *h = calloc(1, sizeof(*h));
	int ret = -ENOMEM;

	*out = NULL;
	if (!h)
		return -ENOMEM;
	h->metrics = metrics_new();
	if (!h->metrics)
		goto out;
	h->exporter = exporter_new(h->metrics, e);
	if (!h->exporter) {
		ret = -errno; /* exporter_new() always sets it */
		goto out;
	}
	metrics_set_collector(h->metrics, exporter_collect, h->exporter);
	if ((ret = httpd_new(loop, &ho, &h->http)))
		goto out;
	if ((ret = httpd_route(h->http, "GET", "/healthz", 0, healthz, NULL)) ||
	    (readyz && (ret = httpd_route(h->http, "GET", "/readyz", 0, readyz, arg))) ||
	    (ret = httpd_serve_metrics(h->http, h->metrics)))
		goto out;
	*out = h;
out:
	if (ret)
		health_free(h);
	return ret;
}

struct metrics *health_metrics(struct health *h)
{
	return h->metrics;
}

uint16_t health_port(const struct health *h)
{
	return httpd_port(h->http);
}

void health_free(struct health *h)
{
	if (!h)
		return;
	httpd_free(h->http);
	exporter_free(h->exporter);
	metrics_free(h->metrics);
	free(h);
}
