#include "routes.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "control/messages.h"
#include "log.h"
#include "net/iface.h"
#include "routeplan.h"

#define HOST_PREFIXES_MAX 256
#define KEEP_MAX 8

struct routes {
	char *ifname;
	bool accept_routes;
	char *exit_node;
	bool rules; /* our policy rules are in place */
	struct routeplan installed;
	size_t skipped[ROUTEPLAN_SKIP_MAX]; /* as last logged */
	char *keep_url; /* the URL keep[] was resolved from */
	struct netmap_prefix keep[KEEP_MAX];
	size_t nkeep;
};

struct routes *routes_new(const char *ifname, const struct routes_opts *o)
{
	struct routes *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->ifname = strdup(ifname);
	r->accept_routes = o->accept_routes;
	r->exit_node = o->exit_node && *o->exit_node ? strdup(o->exit_node) : NULL;
	if (!r->ifname || (o->exit_node && *o->exit_node && !r->exit_node)) {
		routes_free(r);
		return NULL;
	}
	return r;
}

/* ---- what the host has ---- */

struct host_collect {
	struct netmap_prefix *p;
	size_t n;
};

static void on_host_route(void *arg, const char *cidr, enum iface_route_kind kind)
{
	struct host_collect *c = arg;

	if (kind == IFACE_ROUTE_CONNECTED && c->n < HOST_PREFIXES_MAX && netmap_prefix_parse(&c->p[c->n], cidr))
		c->n++;
}

/* The coordination server's addresses, from its URL's host, once per URL:
 * a name is resolved (the one blocking call here, at most once a login). */
static void resolve_keep(struct routes *r, const char *url)
{
	const char *h, *end;
	char host[256];
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai = NULL;
	size_t n;

	if (!url || (r->keep_url && !strcmp(r->keep_url, url)))
		return;
	free(r->keep_url);
	r->keep_url = strdup(url);
	r->nkeep = 0;
	h = strstr(url, "://");
	h = h ? h + 3 : url;
	if (*h == '[') {
		h++;
		end = strchr(h, ']');
	} else {
		end = h + strcspn(h, ":/");
	}
	n = end ? (size_t)(end - h) : 0;
	if (!n || n >= sizeof(host))
		return;
	memcpy(host, h, n);
	host[n] = '\0';
	if (getaddrinfo(host, NULL, &hints, &ai) != 0)
		return;
	for (struct addrinfo *a = ai; a && r->nkeep < KEEP_MAX; a = a->ai_next) {
		struct netmap_prefix *p = &r->keep[r->nkeep];
		memset(p, 0, sizeof(*p));
		if (a->ai_family == AF_INET) {
			p->family = AF_INET;
			p->bits = 32;
			memcpy(p->addr, &((struct sockaddr_in *)a->ai_addr)->sin_addr, 4);
		} else if (a->ai_family == AF_INET6) {
			p->family = AF_INET6;
			p->bits = 128;
			memcpy(p->addr, &((struct sockaddr_in6 *)a->ai_addr)->sin6_addr, 16);
		} else {
			continue;
		}
		r->nkeep++;
	}
	freeaddrinfo(ai);
}

/* ---- what the netmap wants ---- */

static bool node_is(const struct netmap_node *n, const char *what)
{
	char ip[64];

	if (!what)
		return false;
	if ((n->name && !strcmp(n->name, what)) || (n->fqdn && !strcmp(n->fqdn, what)) ||
	    (n->device && !strcmp(n->device, what)))
		return true;
	for (size_t i = 0; i < n->naddresses; i++)
		if (netmap_prefix_format(&n->addresses[i], true, ip, sizeof(ip)) > 0 && !strcmp(ip, what))
			return true;
	return false;
}

static bool is_own_address(const struct netmap_node *n, const struct netmap_prefix *p)
{
	for (size_t i = 0; i < n->naddresses; i++)
		if (netmap_prefix_equal(&n->addresses[i], p))
			return true;
	return false;
}

static size_t wants(const struct netmap *nm, const char *exit_node, struct routeplan_want **out)
{
	size_t n = 0, cap = 0;
	struct routeplan_want *w;

	for (size_t i = 0; nm && i < nm->npeers; i++)
		cap += nm->peers[i].nallowed_ips;
	*out = NULL;
	if (!cap)
		return 0;
	w = calloc(cap, sizeof(*w));
	if (!w)
		return (size_t)-1;
	for (size_t i = 0; i < nm->npeers; i++) {
		const struct netmap_node *peer = &nm->peers[i];
		bool exit = node_is(peer, exit_node);

		for (size_t j = 0; j < peer->nallowed_ips; j++) {
			const struct netmap_prefix *p = &peer->allowed_ips[j];
			w[n].prefix = *p;
			w[n].kind = p->bits == 0 ? ROUTEPLAN_EXIT
						 : is_own_address(peer, p) ? ROUTEPLAN_TAILNET : ROUTEPLAN_SUBNET;
			w[n].from_exit_node = exit;
			n++;
		}
	}
	*out = w;
	return n;
}

/* ---- applying ---- */

static int entry_op(struct routes *r, const struct routeplan_entry *e, bool add)
{
	char cidr[64];

	if (netmap_prefix_format(&e->prefix, false, cidr, sizeof(cidr)) < 0)
		return -EINVAL;
	if (e->type == ROUTEPLAN_ROUTE)
		return add ? iface_table_route_add(r->ifname, cidr, ROUTEPLAN_TABLE)
			   : iface_table_route_del(r->ifname, cidr, ROUTEPLAN_TABLE);
	return add ? iface_table_throw_add(cidr, ROUTEPLAN_TABLE) : iface_table_throw_del(cidr, ROUTEPLAN_TABLE);
}

static int rules(bool add)
{
	static const int fam[] = { AF_INET, AF_INET6 };
	int err = 0, e;

	for (size_t i = 0; i < 2; i++) {
		e = add ? iface_rule_add(fam[i], ROUTEPLAN_BYPASS_PRIORITY, 254, ROUTEPLAN_FWMARK, ROUTEPLAN_FWMASK)
			: iface_rule_del(fam[i], ROUTEPLAN_BYPASS_PRIORITY, 254, ROUTEPLAN_FWMARK, ROUTEPLAN_FWMASK);
		if (e && !err)
			err = e;
		e = add ? iface_rule_add(fam[i], ROUTEPLAN_RULE_PRIORITY, ROUTEPLAN_TABLE, 0, 0)
			: iface_rule_del(fam[i], ROUTEPLAN_RULE_PRIORITY, ROUTEPLAN_TABLE, 0, 0);
		if (e && !err)
			err = e;
	}
	return err;
}

int routes_sync(struct routes *r, const struct netmap *nm, const char *coordination_url)
{
	struct netmap_prefix host[HOST_PREFIXES_MAX];
	struct host_collect hc = { host, 0 };
	struct routeplan_want *w = NULL;
	struct routeplan plan = { 0 }, add = { 0 }, del = { 0 }, now = { 0 };
	struct routeplan_host h;
	struct routeplan_opts o = { .accept_routes = r->accept_routes, .use_exit_node = r->exit_node != NULL };
	size_t nw;
	int err = 0, e;

	if (!r->rules) {
		e = rules(true);
		if (e)
			log_warn("cannot add knit's routing rules", "table=%u err=%d", ROUTEPLAN_TABLE, e);
		else
			r->rules = true;
	}
	resolve_keep(r, coordination_url);
	iface_host_routes(0, r->ifname, on_host_route, &hc);
	h = (struct routeplan_host){ host, hc.n, r->keep, r->nkeep };
	nw = wants(nm, r->exit_node, &w);
	if (nw == (size_t)-1)
		return -ENOMEM;
	err = routeplan_build(w, nw, &h, &o, &plan);
	free(w);
	if (!err)
		err = routeplan_diff(&r->installed, &plan, &add, &del);
	if (err)
		goto out;
	/* What ends up installed: the plan, less adds that failed, plus
	 * removals that failed (tried again next time). */
	now.entries = calloc(plan.n + del.n + 1, sizeof(*now.entries));
	if (!now.entries) {
		err = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < del.n; i++) {
		if ((e = entry_op(r, &del.entries[i], false))) {
			now.entries[now.n++] = del.entries[i];
			err = err ? err : e;
		}
	}
	for (size_t i = 0, j = 0; i < plan.n; i++) {
		bool is_new = j < add.n && !memcmp(&plan.entries[i], &add.entries[j], sizeof(add.entries[j]));
		if (is_new) {
			j++;
			if ((e = entry_op(r, &plan.entries[i], true))) {
				log_warn("cannot add a route to knit's table", "dev=%s err=%d", r->ifname, e);
				err = err ? err : e;
				continue;
			}
		}
		now.entries[now.n++] = plan.entries[i];
	}
	for (int s = 0; s < ROUTEPLAN_SKIP_MAX; s++) {
		if (plan.skipped[s] != r->skipped[s] && plan.skipped[s])
			log_info("routes not installed", "reason=%s count=%zu", routeplan_skip_name((enum routeplan_skip)s),
				 plan.skipped[s]);
		r->skipped[s] = plan.skipped[s];
	}
	routeplan_free(&r->installed);
	r->installed = now;
	now.entries = NULL;
out:
	routeplan_free(&plan);
	routeplan_free(&add);
	routeplan_free(&del);
	free(now.entries);
	return err;
}

unsigned routes_installed(const struct routes *r)
{
	unsigned n = 0;

	for (size_t i = 0; r && i < r->installed.n; i++)
		n += r->installed.entries[i].type == ROUTEPLAN_ROUTE;
	return n;
}

void routes_free(struct routes *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->installed.n; i++)
		entry_op(r, &r->installed.entries[i], false);
	routeplan_free(&r->installed);
	if (r->rules)
		rules(false);
	free(r->keep_url);
	free(r->exit_node);
	free(r->ifname);
	free(r);
}
