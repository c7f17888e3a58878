#include "routeplan.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

bool routeplan_prefix_covers(const struct netmap_prefix *a, const struct netmap_prefix *b)
{
	unsigned full, rest;

	if (a->family != b->family || a->bits > b->bits)
		return false;
	full = a->bits / 8u;
	rest = a->bits % 8u;
	if (memcmp(a->addr, b->addr, full))
		return false;
	if (rest) {
		uint8_t mask = (uint8_t)(0xffu << (8u - rest));
		if ((a->addr[full] & mask) != (b->addr[full] & mask))
			return false;
	}
	return true;
}

const char *routeplan_skip_name(enum routeplan_skip s)
{
	switch (s) {
	case ROUTEPLAN_SKIP_NOT_ACCEPTED: return "not_accepted";
	case ROUTEPLAN_SKIP_NO_EXIT: return "not_exit_node";
	case ROUTEPLAN_SKIP_HOST_ROUTE: return "host_route";
	default: return "unknown";
	}
}

static int entry_cmp(const void *pa, const void *pb)
{
	const struct routeplan_entry *a = pa, *b = pb;
	int c;

	if (a->prefix.family != b->prefix.family)
		return a->prefix.family < b->prefix.family ? -1 : 1;
	c = memcmp(a->prefix.addr, b->prefix.addr, a->prefix.family == AF_INET ? 4 : 16);
	if (c)
		return c;
	if (a->prefix.bits != b->prefix.bits)
		return a->prefix.bits < b->prefix.bits ? -1 : 1;
	return (int)a->type - (int)b->type;
}

static bool inside_any(const struct netmap_prefix *p, const struct netmap_prefix *set, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (routeplan_prefix_covers(&set[i], p))
			return true;
	return false;
}

/* Sorts and drops duplicates in place. */
static void normalise(struct routeplan *p)
{
	size_t w = 0;

	if (!p->n)
		return;
	qsort(p->entries, p->n, sizeof(*p->entries), entry_cmp);
	for (size_t r = 1; r < p->n; r++)
		if (entry_cmp(&p->entries[w], &p->entries[r]))
			p->entries[++w] = p->entries[r];
	p->n = w + 1;
}

/* Throws for the host prefixes some route covers. */
static void add_throws(struct routeplan *p, size_t nroutes, const struct netmap_prefix *set, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		for (size_t r = 0; r < nroutes; r++) {
			if (routeplan_prefix_covers(&p->entries[r].prefix, &set[i])) {
				p->entries[p->n++] = (struct routeplan_entry){ .prefix = set[i], .type = ROUTEPLAN_THROW };
				break;
			}
		}
	}
}

int routeplan_build(const struct routeplan_want *want, size_t nwant, const struct routeplan_host *host,
		    const struct routeplan_opts *opts, struct routeplan *out)
{
	size_t cap = nwant + host->nconnected + host->nkeep, nroutes;

	memset(out, 0, sizeof(*out));
	if (!cap)
		return 0;
	out->entries = calloc(cap, sizeof(*out->entries));
	if (!out->entries)
		return -ENOMEM;
	for (size_t i = 0; i < nwant; i++) {
		const struct routeplan_want *w = &want[i];
		bool is_default = w->prefix.bits == 0;

		if (is_default || w->kind == ROUTEPLAN_EXIT) {
			/* A default route is only ever an exit node's. */
			if (!is_default || !opts->use_exit_node || !w->from_exit_node) {
				out->skipped[ROUTEPLAN_SKIP_NO_EXIT]++;
				continue;
			}
		} else if (w->kind == ROUTEPLAN_SUBNET && !opts->accept_routes) {
			out->skipped[ROUTEPLAN_SKIP_NOT_ACCEPTED]++;
			continue;
		} else if (inside_any(&w->prefix, host->connected, host->nconnected) ||
			   inside_any(&w->prefix, host->keep, host->nkeep)) {
			out->skipped[ROUTEPLAN_SKIP_HOST_ROUTE]++;
			continue;
		}
		out->entries[out->n++] = (struct routeplan_entry){ .prefix = w->prefix, .type = ROUTEPLAN_ROUTE };
	}
	nroutes = out->n;
	add_throws(out, nroutes, host->connected, host->nconnected);
	add_throws(out, nroutes, host->keep, host->nkeep);
	normalise(out);
	return 0;
}

/* Entries of a not in b (both normalised) into out. */
static int minus(const struct routeplan *a, const struct routeplan *b, struct routeplan *out)
{
	size_t j = 0;

	memset(out, 0, sizeof(*out));
	if (!a->n)
		return 0;
	out->entries = calloc(a->n, sizeof(*out->entries));
	if (!out->entries)
		return -ENOMEM;
	for (size_t i = 0; i < a->n; i++) {
		int c = 1;
		while (j < b->n && (c = entry_cmp(&b->entries[j], &a->entries[i])) < 0)
			j++;
		if (j >= b->n || c != 0)
			out->entries[out->n++] = a->entries[i];
	}
	return 0;
}

int routeplan_diff(const struct routeplan *from, const struct routeplan *to, struct routeplan *add,
		   struct routeplan *del)
{
	int err;

	memset(del, 0, sizeof(*del));
	err = minus(to, from, add);
	if (!err)
		err = minus(from, to, del);
	if (err) {
		routeplan_free(add);
		routeplan_free(del);
	}
	return err;
}

void routeplan_free(struct routeplan *p)
{
	free(p->entries);
	memset(p, 0, sizeof(*p));
}
