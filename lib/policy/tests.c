/* The policy's `tests`: each source, as a principal, against each accept
 * and deny destination, asked of the rules as Tailscale asks them (by
 * identity, not by the devices that happen to exist). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

/* A stand-in device for what a test names. Strings point into the policy
 * or the net; nothing is owned. */
struct who {
	struct dev d;
	char *tag[1];
	char label[200];
	char ns[254]; /* a ServiceAccount user's namespace */
};

/* The principals a selector stands for: a group is each of its members. */
static size_t principals(const struct policy *p, const struct policy_net *net,
			 const struct sel *s, struct who *out, size_t max)
{
	size_t n = 0;

	if (s->kind == SEL_GROUP) {
		const struct group *g = &p->groups[s->group];

		for (size_t i = 0; i < g->n && n < max; i++) {
			struct who *w = &out[n++];

			memset(w, 0, sizeof(*w));
			if (g->members[i].kind == SEL_NS) {
				/* A pod of some ServiceAccount there: an untagged
				 * device whose user no selector names (users have an
				 * '@' or the system:serviceaccount: prefix). */
				w->d.ns = g->members[i].name;
				w->d.user = w->d.ns;
				snprintf(w->label, sizeof(w->label),
					 "%s member system:serviceaccounts:%s", s->name, w->d.ns);
			} else {
				w->d.user = g->members[i].name;
				snprintf(w->label, sizeof(w->label), "%s member %s", s->name,
					 w->d.user);
			}
		}
		return n;
	}
	if (max == 0)
		return 0;
	memset(out, 0, sizeof(*out));
	switch (s->kind) {
	case SEL_USER: {
		static const char sa[] = "system:serviceaccount:";

		out->d.user = s->name;
		snprintf(out->label, sizeof(out->label), "%s", s->name);
		/* A ServiceAccount's pods are in its namespace, so they are
		 * also system:serviceaccounts:<namespace> (the parser checked
		 * the <namespace>:<name> form). */
		if (!strncmp(s->name, sa, sizeof(sa) - 1)) {
			const char *ns = s->name + sizeof(sa) - 1, *colon = strchr(ns, ':');

			if (colon && (size_t)(colon - ns) < sizeof(out->ns)) {
				memcpy(out->ns, ns, (size_t)(colon - ns));
				out->ns[colon - ns] = '\0';
				out->d.ns = out->ns;
			}
		}
		break;
	}
	case SEL_TAG:
		out->tag[0] = s->name;
		out->d.tags = out->tag;
		out->d.n_tags = 1;
		snprintf(out->label, sizeof(out->label), "%s", s->name);
		break;
	case SEL_PREFIX: {
		const char *name;
		const struct dev *d;
		char a[64];

		out->d.addrs[0] = s->pfx;
		out->d.addrs[0].bits = s->pfx.family == 4 ? 32 : 128;
		out->d.n_addrs = 1;
		policy_prefix_format(&out->d.addrs[0], a, sizeof(a));
		*strchr(a, '/') = '\0';
		snprintf(out->label, sizeof(out->label), "%s%s%s%s", s->name ? s->name : a,
			 s->name ? " (" : "", s->name ? a : "", s->name ? ")" : "");
		/* With devices known, an address is the device that has it. */
		name = net ? policy_net_lookup(net, &out->d.addrs[0]) : NULL;
		d = name ? net_dev(net, name) : NULL;
		if (d) {
			out->d.user = d->user;
			out->d.tags = d->tags;
			out->d.n_tags = d->n_tags;
			out->d.ns = d->ns;
			out->d.routes = d->routes;
			out->d.n_routes = d->n_routes;
			out->d.exit_node = d->exit_node;
		}
		break;
	}
	default:
		return 0;
	}
	return 1;
}

static const char *proto_name(uint8_t proto, char *buf, size_t n)
{
	switch (proto) {
	case 1:
		return "icmp";
	case 6:
		return "tcp";
	case 17:
		return "udp";
	case 58:
		return "ipv6-icmp";
	case 132:
		return "sctp";
	default:
		snprintf(buf, n, "proto %u", proto);
		return buf;
	}
}

static size_t count(const struct policy *p, const struct sel *s)
{
	return s->kind == SEL_GROUP ? p->groups[s->group].n : 1;
}

static void report(const struct test_dst *d, struct json_error *err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void report(const struct test_dst *d, struct json_error *err, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return;
	err->line = d->line;
	err->column = d->column;
	err->offset = d->offset;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
}

static bool check(const struct policy *p, const struct policy_net *net, const struct test *t,
		  size_t ti, const struct test_dst *d, size_t di, bool want, struct who *srcs,
		  size_t n_src, struct json_error *err)
{
	struct who *dsts = calloc(count(p, &d->sel) + 1, sizeof(*dsts));
	size_t n_dst;
	char pb[16];
	bool ok = true;

	if (!dsts) {
		report(d, err, "out of memory");
		return false;
	}
	n_dst = principals(p, net, &d->sel, dsts, count(p, &d->sel));
	if (n_dst && n_src > POLICY_MAX_TEST_PAIRS / n_dst) {
		report(d, err, "tests[%zu].%s[%zu]: more than %zu source and destination pairs", ti,
		       want ? "accept" : "deny", di, POLICY_MAX_TEST_PAIRS);
		free(dsts);
		return false;
	}
	for (size_t s = 0; s < n_src && ok; s++) {
		for (size_t k = 0; k < n_dst && ok; k++) {
			bool got = rules_allow(p, &srcs[s].d, &dsts[k].d, t->proto, d->port);

			if (got == want)
				continue;
			report(d, err, "tests[%zu].%s[%zu]: %s -> %s%s%s (%s): expected %s, got %s",
			       ti, want ? "accept" : "deny", di, srcs[s].label, d->text,
			       n_dst > 1 ? " for " : "", n_dst > 1 ? dsts[k].label : "",
			       proto_name(t->proto, pb, sizeof(pb)), want ? "accept" : "deny",
			       got ? "accept" : "deny");
			ok = false;
		}
	}
	free(dsts);
	return ok;
}

bool policy_tests_run(const struct policy *p, const struct policy_net *net, struct json_error *err)
{
	bool ok = true;

	for (size_t i = 0; i < p->n_tests && ok; i++) {
		const struct test *t = &p->tests[i];
		struct who *srcs = calloc(count(p, &t->src) + 1, sizeof(*srcs));
		size_t n_src;

		if (!srcs) {
			json_error_set(err, NULL, 0, "out of memory");
			return false;
		}
		n_src = principals(p, net, &t->src, srcs, count(p, &t->src));
		for (size_t k = 0; k < t->n_accept && ok; k++)
			ok = check(p, net, t, i, &t->accept[k], k, true, srcs, n_src, err);
		for (size_t k = 0; k < t->n_deny && ok; k++)
			ok = check(p, net, t, i, &t->deny[k], k, false, srcs, n_src, err);
		free(srcs);
	}
	return ok;
}
