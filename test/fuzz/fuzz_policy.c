/* Parses a policy; a refused one must say where (a position inside the
 * input), an accepted one is compiled for a fixed set of devices (every
 * filter, peer list and route set, the filter's JSON), its tests are run
 * and a device is removed and added back. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "policy/policy.h"

static const char *const tags_web[] = { "tag:web" };
static const char *const tags_db[] = { "tag:db", "tag:web" };

static void addr(struct policy_device *d, const char *a)
{
	if (!policy_prefix_parse(a, &d->addrs[d->n_addrs++]))
		abort();
}

static void devices(struct policy_device *d, struct policy_prefix *routes)
{
	memset(d, 0, 5 * sizeof(*d));
	d[0].name = "alice";
	d[0].user = "alice@example.com";
	addr(&d[0], "100.64.0.1");
	addr(&d[0], "fd7a:115c:a1e0::1");
	d[1].name = "bob";
	d[1].user = "bob@example.com";
	addr(&d[1], "100.64.0.2");
	d[2].name = "web";
	d[2].tags = tags_web;
	d[2].n_tags = 1;
	addr(&d[2], "100.64.0.3");
	d[3].name = "router";
	d[3].tags = tags_db;
	d[3].n_tags = 2;
	addr(&d[3], "100.64.0.4");
	policy_prefix_parse("10.0.0.0/24", &routes[0]);
	policy_prefix_parse("0.0.0.0/0", &routes[1]);
	d[3].routes = routes;
	d[3].n_routes = 2;
	d[4].name = "pod";
	d[4].pod = true;
	d[4].pod_namespace = "prod";
	d[4].pod_serviceaccount = "api";
	addr(&d[4], "100.64.0.5");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct policy_device d[5];
	struct policy_prefix routes[2];
	struct json_error err;
	struct policy_net *net;
	struct policy *p = policy_parse((const char *)data, size, &err);

	if (!p) {
		if (err.line < 1 || err.column < 1 || err.offset > size || !err.msg[0])
			abort();
		return 0;
	}
	devices(d, routes);
	net = policy_net_new(p);
	for (size_t i = 0; net && i < 5; i++)
		policy_net_add(net, &d[i], NULL);
	for (size_t i = 0; net && i < 5; i++) {
		struct policy_filter f;
		struct policy_names n;
		struct policy_routes r;
		struct buf b = BUF_INIT(1 << 24);

		if (!policy_net_filter(net, d[i].name, &f)) {
			policy_filter_dump(&f, &b);
			policy_filter_free(&f);
		}
		if (!policy_net_peers(net, d[i].name, &n))
			policy_names_free(&n);
		if (!policy_net_routes(net, d[i].name, &r))
			policy_routes_free(&r);
		buf_free(&b);
	}
	if (net) {
		struct policy_names t;

		if (!policy_net_remove(net, "router", &t))
			policy_names_free(&t);
		if (!policy_net_add(net, &d[3], &t))
			policy_names_free(&t);
	}
	policy_tests_run(p, net, &err);
	policy_tests_run(p, NULL, &err);
	policy_tag_allowed(p, "tag:web", &d[0]);
	policy_net_free(net);
	policy_free(p);
	return 0;
}
