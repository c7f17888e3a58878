#include "gateway.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cniconf.h"
#include "identity.h"
#include "json.h"
#include "log.h"
#include "loop.h"
#include "state.h"

#define GATEWAY_PERIOD_MS 5000
#define GATEWAY_RETRY_MS 1000 /* after a failed registration (a 409 while the Device is written) */

struct gateway {
	struct loop *loop;
	struct identity *node;
	char *conf_dir;
	struct loop_timer *timer;
	struct netmap_prefix want[CNICONF_MAX_RANGES]; /* what the configuration says */
	size_t nwant;
	bool known; /* want was read at least once */
	bool sent; /* a registration with want succeeded */
	bool in_flight;
	char last_why[256]; /* the last complaint, logged once */
};

static bool same_set(const struct netmap_prefix *a, size_t na, const struct netmap_prefix *b, size_t nb)
{
	if (na != nb)
		return false;
	for (size_t i = 0; i < na; i++)
		if (a[i].family != b[i].family || a[i].bits != b[i].bits || memcmp(a[i].addr, b[i].addr, 16))
			return false;
	return true;
}

static void complain(struct gateway *g, const char *why)
{
	if (strcmp(why, g->last_why) == 0)
		return;
	snprintf(g->last_why, sizeof(g->last_why), "%s", why);
	log_warn("gateway mode: the pod ranges are not advertised", "conf_dir=%s why=\"%s\"", g->conf_dir, why);
}

static void registered(void *arg, int err, const struct json *resp, const char *why)
{
	struct gateway *g = arg;
	const char *code, *msg;

	g->in_flight = false;
	if (err || messages_error(resp, &code, &msg)) {
		log_warn("gateway mode: advertising the pod ranges failed; retrying", "why=\"%s\"",
			 err ? (why ? why : strerror(-err)) : msg);
		loop_timer_arm(g->timer, GATEWAY_RETRY_MS);
		return;
	}
	g->sent = true;
	log_info("gateway mode: pod ranges advertised", "ranges=%zu", g->nwant);
}

/* Reads the configuration; true when want changed. */
static bool read_conf(struct gateway *g)
{
	struct netmap_prefix r[CNICONF_MAX_RANGES];
	struct json *conf;
	char why[512] = "";
	size_t n = 0;
	int ret;

	if (!(conf = cniconf_load(g->conf_dir, NULL, why, sizeof(why)))) {
		complain(g, why);
		return false;
	}
	ret = cniconf_gateway_ranges(conf, r, CNICONF_MAX_RANGES, &n, why, sizeof(why));
	json_free(conf);
	if (ret == -ENOENT)
		return false; /* knit-cni not in the chain now: keep what is in force */
	if (ret < 0) {
		complain(g, why);
		n = 0; /* a broken configuration advertises nothing it cannot vouch for */
	} else {
		g->last_why[0] = '\0';
	}
	if (g->known && same_set(r, n, g->want, g->nwant))
		return false;
	memcpy(g->want, r, n * sizeof(*r));
	g->nwant = n;
	g->known = true;
	return true;
}

static bool has_prefix(const struct netmap_prefix *list, size_t n, const struct netmap_prefix *p)
{
	for (size_t i = 0; i < n; i++)
		if (same_set(&list[i], 1, p, 1))
			return true;
	return false;
}

/* At start, whether the Device already says what the configuration wants:
 * the saved netmap's self holds every wanted range among its allowed IPs,
 * and no range beyond its addresses and knit up's routes. Then no
 * registration is sent (each one restarts the map stream). */
static bool already_advertised(const struct gateway *g)
{
	const struct netmap *nm = identity_netmap(g->node);
	const struct state *st = identity_state(g->node);

	if (!nm)
		return false;
	for (size_t i = 0; i < g->nwant; i++)
		if (!has_prefix(nm->self.allowed_ips, nm->self.nallowed_ips, &g->want[i]))
			return false;
	for (size_t i = 0; i < nm->self.nallowed_ips; i++) {
		const struct netmap_prefix *p = &nm->self.allowed_ips[i];
		if (!has_prefix(nm->self.addresses, nm->self.naddresses, p) && !has_prefix(g->want, g->nwant, p) &&
		    !has_prefix(st->routes, st->nroutes, p))
			return false;
	}
	return true;
}

/* A new wish: the identity advertises it from its next registration on;
 * not logged in yet, that is the one that logs it in. */
static void want_changed(struct gateway *g, bool at_start)
{
	char list[CNICONF_MAX_RANGES * 48] = "";
	size_t off = 0;

	for (size_t i = 0; i < g->nwant; i++) {
		char one[64];
		if (netmap_prefix_format(&g->want[i], false, one, sizeof(one)) > 0)
			off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s", i ? "," : "", one);
	}
	log_info("gateway mode: pod ranges", "ranges=\"%s\"", list);
	identity_set_extra_routes(g->node, g->want, g->nwant);
	g->sent = !identity_logged_in(g->node) || (at_start && already_advertised(g));
}

static void tick(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct gateway *g = arg;
	int err;

	if (read_conf(g))
		want_changed(g, false);
	/* Logged in: come back with the machine key, the new routes in the
	 * request. */
	if (g->known && !g->sent && !g->in_flight && identity_logged_in(g->node)) {
		if ((err = identity_register(g->node, NULL, registered, g)))
			log_warn("gateway mode: cannot send the registration", "err=%d", err);
		else
			g->in_flight = true;
	}
	loop_timer_arm(t, GATEWAY_PERIOD_MS);
}

int gateway_new(struct gateway **out, struct loop *loop, struct identity *node, const char *conf_dir)
{
	struct gateway *g = calloc(1, sizeof(*g));

	*out = NULL;
	if (!g || !(g->conf_dir = strdup(conf_dir)) || !(g->timer = loop_timer_new(loop, tick, g))) {
		gateway_free(g);
		return -ENOMEM;
	}
	g->loop = loop;
	g->node = node;
	/* Now, before a join registers: that registration carries them. */
	if (read_conf(g))
		want_changed(g, true);
	loop_timer_arm(g->timer, GATEWAY_PERIOD_MS);
	*out = g;
	return 0;
}

void gateway_free(struct gateway *g)
{
	if (!g)
		return;
	loop_timer_free(g->timer);
	free(g->conf_dir);
	free(g);
}
