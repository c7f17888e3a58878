/* The policy file parser: huJSON in, struct policy (model.h) out, every
 * error at the line:column of the value or key at fault. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hujson.h"
#include "model.h"

#define SA_PREFIX "system:serviceaccount:"
#define NS_PREFIX "system:serviceaccounts:"

struct parser {
	struct policy *p;
	const char *text;
	struct json_error *err;
	const struct json *hosts;
	size_t destinations; /* rule destinations so far */
};

/* Where a selector stands decides what it may be. */
enum ctx {
	C_SRC,
	C_DST,
	C_MEMBER,   /* of a group */
	C_OWNER,    /* of a tag */
	C_APPROVER, /* autoApprovers */
	C_TEST_SRC,
	C_TEST_DST,
};

static bool __attribute__((format(printf, 3, 4)))
fail(struct parser *P, size_t off, const char *fmt, ...)
{
	char msg[sizeof(P->err->msg)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_error_set(P->err, P->text, off, "%s", msg);
	return false;
}

static bool oom(struct parser *P)
{
	return fail(P, 0, "out of memory");
}

/* ---- freeing --------------------------------------------------------- */

static void sels_free(struct sel *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(s[i].name);
	free(s);
}

static void owners_free(struct owners *o, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(o[i].key);
		sels_free(o[i].sels, o[i].n);
	}
	free(o);
}

static void test_dsts_free(struct test_dst *d, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(d[i].text);
		free(d[i].sel.name);
	}
	free(d);
}

void policy_free(struct policy *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n_groups; i++) {
		free(p->groups[i].name);
		sels_free(p->groups[i].members, p->groups[i].n);
	}
	free(p->groups);
	owners_free(p->tag_owners, p->n_tag_owners);
	owners_free(p->route_approvers, p->n_route_approvers);
	sels_free(p->exit_approvers, p->n_exit_approvers);
	for (size_t i = 0; i < p->n_rules; i++) {
		sels_free(p->rules[i].src, p->rules[i].n_src);
		for (size_t j = 0; j < p->rules[i].n_dst; j++) {
			free(p->rules[i].dst[j].sel.name);
			free(p->rules[i].dst[j].ports);
		}
		free(p->rules[i].dst);
	}
	free(p->rules);
	for (size_t i = 0; i < p->n_tests; i++) {
		free(p->tests[i].src_text);
		free(p->tests[i].src.name);
		test_dsts_free(p->tests[i].accept, p->tests[i].n_accept);
		test_dsts_free(p->tests[i].deny, p->tests[i].n_deny);
	}
	free(p->tests);
	json_free(p->ssh);
	json_free(p->ssh_tests);
	json_free(p->node_attrs);
	free(p);
}

/* ---- small parsers --------------------------------------------------- */

static const struct {
	const char *name;
	uint8_t num;
} protos[] = {
	{ "icmp", 1 },	 { "igmp", 2 },	       { "ipv4", 4 },	     { "ip-in-ip", 4 },
	{ "tcp", 6 },	 { "egp", 8 },	       { "igp", 9 },	     { "udp", 17 },
	{ "gre", 47 },	 { "esp", 50 },	       { "ah", 51 },	     { "ipv6-icmp", 58 },
	{ "icmpv6", 58 }, { "sctp", 132 },
};

bool proto_has_ports(uint8_t proto)
{
	return proto == 6 || proto == 17 || proto == 132;
}

/* A protocol by IANA name or decimal number. */
static bool proto_parse(const char *s, size_t n, uint8_t *out)
{
	unsigned v = 0;

	for (size_t i = 0; i < sizeof(protos) / sizeof(protos[0]); i++) {
		if (strlen(protos[i].name) == n && !strncmp(protos[i].name, s, n)) {
			*out = protos[i].num;
			return true;
		}
	}
	if (n == 0 || n > 3)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > 255)
		return false;
	*out = (uint8_t)v;
	return true;
}

static bool port_num(const char *s, size_t n, uint16_t *out)
{
	unsigned long v = 0;

	if (n == 0 || n > 5)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v > 65535)
		return false;
	*out = (uint16_t)v;
	return true;
}

/* "*", "22", "80-90", "22,80,443-445". */
static bool ports_parse(const char *s, struct policy_port_range **out, size_t *n_out)
{
	struct policy_port_range *v = NULL;
	size_t n = 0;

	if (!strcmp(s, "*")) {
		v = malloc(sizeof(*v));
		if (!v)
			return false;
		v[0] = (struct policy_port_range){ 0, 65535 };
		*out = v;
		*n_out = 1;
		return true;
	}
	for (const char *p = s;;) {
		const char *comma = strchr(p, ','), *end = comma ? comma : p + strlen(p);
		const char *dash = memchr(p, '-', (size_t)(end - p));
		struct policy_port_range r, *nv;

		if (dash) {
			if (!port_num(p, (size_t)(dash - p), &r.first) ||
			    !port_num(dash + 1, (size_t)(end - dash - 1), &r.last) || r.first > r.last)
				goto bad;
		} else {
			if (!port_num(p, (size_t)(end - p), &r.first))
				goto bad;
			r.last = r.first;
		}
		nv = reallocarray(v, n + 1, sizeof(*v));
		if (!nv)
			goto bad;
		v = nv;
		v[n++] = r;
		if (!comma)
			break;
		p = comma + 1;
	}
	*out = v;
	*n_out = n;
	return true;
bad:
	free(v);
	return false;
}

bool ports_contain(const struct policy_port_range *r, size_t n, uint16_t port)
{
	for (size_t i = 0; i < n; i++)
		if (port >= r[i].first && port <= r[i].last)
			return true;
	return false;
}

static bool valid_tag(const char *s)
{
	size_t n;

	if (strncmp(s, "tag:", 4))
		return false;
	s += 4;
	n = strlen(s);
	if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-'))
			return false;
	}
	return true;
}

/* A Kubernetes name (DNS label) in a pod principal. */
static bool valid_k8s_name(const char *s, size_t n)
{
	if (n == 0 || n > 253)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.'))
			return false;
	}
	return true;
}

static const struct owners *find_owner(const struct owners *o, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(o[i].key, key))
			return &o[i];
	return NULL;
}

static bool is_admin_autogroup(const char *s)
{
	static const char *const admins[] = { "autogroup:admin",	 "autogroup:owner",
					      "autogroup:it-admin",	 "autogroup:network-admin",
					      "autogroup:billing-admin", "autogroup:auditor" };

	for (size_t i = 0; i < sizeof(admins) / sizeof(admins[0]); i++)
		if (!strcmp(s, admins[i]))
			return true;
	return false;
}

/* ---- selectors ------------------------------------------------------- */

static bool sel_parse(struct parser *P, const char *s, size_t off, const char *path, enum ctx c,
		      struct sel *out)
{
	bool principal_only = c == C_MEMBER || c == C_OWNER || c == C_APPROVER;
	const struct json *host;

	memset(out, 0, sizeof(*out));
	if (!strcmp(s, "*")) {
		if (principal_only || c == C_TEST_SRC || c == C_TEST_DST)
			return fail(P, off, "%s: \"*\" is not allowed here", path);
		out->kind = SEL_ALL;
		return true;
	}
	if (!strncmp(s, "autogroup:", 10)) {
		if (is_admin_autogroup(s)) {
			out->kind = SEL_NONE;
		} else if (!strcmp(s, "autogroup:member") && c != C_MEMBER && c != C_TEST_SRC &&
			   c != C_TEST_DST) {
			out->kind = SEL_MEMBER;
		} else if (!strcmp(s, "autogroup:tagged") && c != C_MEMBER && c != C_OWNER &&
			   c != C_TEST_SRC && c != C_TEST_DST) {
			out->kind = SEL_TAGGED;
		} else if (!strcmp(s, "autogroup:self") && c == C_DST) {
			out->kind = SEL_SELF;
		} else if (!strcmp(s, "autogroup:internet") && c == C_DST) {
			out->kind = SEL_INTERNET;
		} else if (!strcmp(s, "autogroup:member") || !strcmp(s, "autogroup:tagged") ||
			   !strcmp(s, "autogroup:self") || !strcmp(s, "autogroup:internet")) {
			return fail(P, off, "%s: \"%s\" is not allowed here", path, s);
		} else {
			return fail(P, off, "%s: unknown autogroup \"%s\"", path, s);
		}
		if (c == C_MEMBER && out->kind == SEL_NONE)
			return fail(P, off, "%s: \"%s\" is not allowed in a group", path, s);
		return true;
	}
	if (!strncmp(s, "group:", 6)) {
		if (c == C_MEMBER)
			return fail(P, off, "%s: nested group \"%s\": groups may not contain groups",
				    path, s);
		for (size_t i = 0; i < P->p->n_groups; i++) {
			if (!strcmp(P->p->groups[i].name, s)) {
				out->kind = SEL_GROUP;
				out->group = i;
				goto named;
			}
		}
		return fail(P, off, "%s: group \"%s\" is not defined", path, s);
	}
	if (!strncmp(s, "tag:", 4)) {
		if (c == C_MEMBER)
			return fail(P, off, "%s: a group may not contain tag \"%s\"", path, s);
		if (!valid_tag(s))
			return fail(P, off, "%s: invalid tag \"%s\"", path, s);
		if (!find_owner(P->p->tag_owners, P->p->n_tag_owners, s))
			return fail(P, off, "%s: tag \"%s\" has no owner in tagOwners", path, s);
		out->kind = SEL_TAG;
		goto named;
	}
	if (!strncmp(s, SA_PREFIX, strlen(SA_PREFIX))) {
		const char *ns = s + strlen(SA_PREFIX), *colon = strchr(ns, ':');

		if (!colon || !valid_k8s_name(ns, (size_t)(colon - ns)) ||
		    !valid_k8s_name(colon + 1, strlen(colon + 1)))
			return fail(P, off,
				    "%s: \"%s\" is not system:serviceaccount:<namespace>:<name>",
				    path, s);
		out->kind = SEL_USER;
		goto named;
	}
	if (!strncmp(s, NS_PREFIX, strlen(NS_PREFIX))) {
		const char *ns = s + strlen(NS_PREFIX);

		if (!valid_k8s_name(ns, strlen(ns)))
			return fail(P, off, "%s: \"%s\" is not system:serviceaccounts:<namespace>",
				    path, s);
		out->kind = SEL_NS;
		out->name = strdup(ns);
		return out->name ? true : oom(P);
	}
	if (strchr(s, '@')) {
		if (s[0] == '@' || strchr(s, ' '))
			return fail(P, off, "%s: invalid user \"%s\"", path, s);
		out->kind = SEL_USER;
		/* "alice@" names the login "alice" (a Kubernetes user without a
		 * domain, e.g. a client certificate's CN). */
		out->name = strlen(s) > 1 && s[strlen(s) - 1] == '@' ? strndup(s, strlen(s) - 1)
								     : strdup(s);
		return out->name ? true : oom(P);
	}
	if (principal_only) {
		if (c == C_MEMBER)
			return fail(P, off, "%s: group member \"%s\" is not a user", path, s);
		return fail(P, off, "%s: \"%s\" is not a user, group or tag", path, s);
	}
	if (policy_prefix_parse(s, &out->pfx)) {
		out->kind = SEL_PREFIX;
		return true;
	}
	host = json_get(P->hosts, s);
	if (host) {
		out->kind = SEL_PREFIX;
		if (!policy_prefix_parse(json_str(host), &out->pfx))
			return fail(P, off, "%s: host \"%s\" has no valid address", path, s);
		goto named;
	}
	return fail(P, off, "%s: \"%s\" is not a user, group, tag, autogroup, host or address", path,
		    s);
named:
	out->name = strdup(s);
	return out->name ? true : oom(P);
}

/* An array of selector strings. */
static bool sels_parse(struct parser *P, const struct json *arr, size_t arr_off, const char *path,
		       enum ctx c, bool nonempty, struct sel **out, size_t *n_out)
{
	size_t n = json_array_len(arr);
	struct sel *v;

	*out = NULL;
	*n_out = 0;
	if (!json_is_array(arr))
		return fail(P, arr_off, "%s: must be an array of strings", path);
	if (nonempty && n == 0)
		return fail(P, arr_off, "%s: must not be empty", path);
	v = calloc(n ? n : 1, sizeof(*v));
	if (!v)
		return oom(P);
	for (size_t i = 0; i < n; i++) {
		const struct json *e = json_array_at(arr, i);
		char sub[160];

		snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
		if (!json_str(e)) {
			sels_free(v, i);
			return fail(P, json_offset(e), "%s: must be a string", sub);
		}
		if (!sel_parse(P, json_str(e), json_offset(e), sub, c, &v[i])) {
			sels_free(v, i);
			return false;
		}
	}
	*out = v;
	*n_out = n;
	return true;
}

/* Only the listed keys; the first other one is an error at its key. */
static bool keys_check(struct parser *P, const struct json *obj, const char *path,
		       const char *const *allowed)
{
	const char *key;
	struct json *val;
	size_t i;

	json_object_foreach(obj, i, key, val) {
		bool ok = false;

		for (const char *const *a = allowed; *a; a++)
			ok = ok || !strcmp(key, *a);
		if (!ok)
			return fail(P, json_key_offset(obj, i), "%s: unknown key \"%s\"", path, key);
	}
	return true;
}

static size_t key_off(const struct json *obj, const char *key)
{
	const char *k;
	struct json *val;
	size_t i;

	json_object_foreach(obj, i, k, val)
		if (!strcmp(k, key))
			return json_key_offset(obj, i);
	return json_offset(obj);
}

/* ---- sections -------------------------------------------------------- */

static bool hosts_parse(struct parser *P, const struct json *hosts)
{
	const char *key;
	struct json *val;
	size_t i;

	if (!hosts)
		return true;
	if (!json_is_object(hosts))
		return fail(P, json_offset(hosts), "hosts: must be an object");
	json_object_foreach(hosts, i, key, val) {
		struct policy_prefix pfx;

		if (!*key || strchr(key, '@') || strchr(key, ':') || strchr(key, '/') ||
		    policy_prefix_parse(key, &pfx) || !strcmp(key, "*"))
			return fail(P, json_key_offset(hosts, i), "hosts: invalid host name \"%s\"",
				    key);
		if (!policy_prefix_parse(json_str(val), &pfx))
			return fail(P, json_offset(val),
				    "hosts.%s: must be an IP address or CIDR string", key);
	}
	P->hosts = hosts;
	return true;
}

static bool groups_parse(struct parser *P, const struct json *groups)
{
	struct policy *p = P->p;
	const char *key;
	struct json *val;
	size_t i;

	if (!groups)
		return true;
	if (!json_is_object(groups))
		return fail(P, json_offset(groups), "groups: must be an object");
	p->groups = calloc(json_object_len(groups) + 1, sizeof(*p->groups));
	if (!p->groups)
		return oom(P);
	json_object_foreach(groups, i, key, val) {
		struct group *g = &p->groups[p->n_groups];
		char path[160];

		if (strncmp(key, "group:", 6) || !key[6] || strchr(key + 6, ':'))
			return fail(P, json_key_offset(groups, i),
				    "groups: \"%s\" must be named group:<name>", key);
		g->name = strdup(key);
		if (!g->name)
			return oom(P);
		p->n_groups++;
		snprintf(path, sizeof(path), "groups.%s", key);
		if (!sels_parse(P, val, json_offset(val), path, C_MEMBER, false, &g->members, &g->n))
			return false;
	}
	return true;
}

static bool tag_owners_parse(struct parser *P, const struct json *to)
{
	struct policy *p = P->p;
	const char *key;
	struct json *val;
	size_t i;

	if (!to)
		return true;
	if (!json_is_object(to))
		return fail(P, json_offset(to), "tagOwners: must be an object");
	p->tag_owners = calloc(json_object_len(to) + 1, sizeof(*p->tag_owners));
	if (!p->tag_owners)
		return oom(P);
	/* Names first: an owner may be another tag defined further down. */
	json_object_foreach(to, i, key, val) {
		if (!valid_tag(key))
			return fail(P, json_key_offset(to, i), "tagOwners: invalid tag \"%s\"", key);
		p->tag_owners[i].key = strdup(key);
		if (!p->tag_owners[i].key)
			return oom(P);
		p->n_tag_owners++;
	}
	json_object_foreach(to, i, key, val) {
		char path[160];

		snprintf(path, sizeof(path), "tagOwners.%s", key);
		if (!sels_parse(P, val, json_offset(val), path, C_OWNER, false,
				&p->tag_owners[i].sels, &p->tag_owners[i].n))
			return false;
	}
	return true;
}

static bool rule_add(struct parser *P, struct rule **r)
{
	struct rule *v = reallocarray(P->p->rules, P->p->n_rules + 1, sizeof(*v));

	if (!v)
		return oom(P);
	P->p->rules = v;
	*r = &v[P->p->n_rules++];
	memset(*r, 0, sizeof(**r));
	return true;
}

static const uint8_t default_protos[] = { 6, 17, 1, 58 };

static void protos_default(struct rule *r)
{
	memcpy(r->protos, default_protos, sizeof(default_protos));
	r->n_protos = sizeof(default_protos);
	r->has_ports = true;
}

/* "host:ports", the host part possibly "[v6]". */
static bool dst_split(const char *s, char *host, size_t hn, const char **ports)
{
	const char *colon;
	size_t len;

	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (!close || close[1] != ':')
			return false;
		len = (size_t)(close - s - 1);
		if (len >= hn)
			return false;
		memcpy(host, s + 1, len);
		*ports = close + 2;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return false;
		len = (size_t)(colon - s);
		if (len >= hn)
			return false;
		memcpy(host, s, len);
		*ports = colon + 1;
	}
	host[len] = '\0';
	return len > 0;
}

static bool acl_parse(struct parser *P, const struct json *acl, size_t idx)
{
	static const char *const keys[] = { "action", "src", "dst", "proto", "users", "ports", NULL };
	const struct json *action = json_get(acl, "action"), *proto = json_get(acl, "proto");
	const struct json *src = json_get(acl, "src"), *dst = json_get(acl, "dst");
	struct rule *r;
	char path[64];

	snprintf(path, sizeof(path), "acls[%zu]", idx);
	if (!json_is_object(acl))
		return fail(P, json_offset(acl), "%s: must be an object", path);
	if (!keys_check(P, acl, path, keys))
		return false;
	if (!src)
		src = json_get(acl, "users");
	if (!dst)
		dst = json_get(acl, "ports");
	if (!action)
		return fail(P, json_offset(acl), "%s: \"action\" is required", path);
	if (!json_str(action) || strcmp(json_str(action), "accept"))
		return fail(P, json_offset(action), "%s.action: must be \"accept\"", path);
	if (!src || !dst)
		return fail(P, json_offset(acl), "%s: \"%s\" is required", path, src ? "dst" : "src");
	if (!rule_add(P, &r))
		return false;
	if (proto) {
		char buf[8];
		const char *ps = json_str(proto);

		if (json_is_int(proto) && json_int(proto, -1) >= 0 && json_int(proto, -1) <= 255) {
			snprintf(buf, sizeof(buf), "%d", (int)json_int(proto, 0));
			ps = buf;
		}
		if (!ps || !proto_parse(ps, strlen(ps), &r->protos[0]))
			return fail(P, json_offset(proto), "%s.proto: unknown protocol", path);
		r->n_protos = 1;
		r->has_ports = proto_has_ports(r->protos[0]);
	} else {
		protos_default(r);
	}
	{
		char sp[80];

		snprintf(sp, sizeof(sp), "%s.src", path);
		if (!sels_parse(P, src, json_offset(src), sp, C_SRC, true, &r->src, &r->n_src))
			return false;
	}
	if (!json_is_array(dst) || json_array_len(dst) == 0)
		return fail(P, json_offset(dst), "%s.dst: must be a non-empty array of strings",
			    path);
	P->destinations += json_array_len(dst);
	if (P->destinations > POLICY_MAX_DESTINATIONS)
		return fail(P, json_offset(dst), "%s.dst: more than %zu destinations in the policy",
			    path, POLICY_MAX_DESTINATIONS);
	r->dst = calloc(json_array_len(dst), sizeof(*r->dst));
	if (!r->dst)
		return oom(P);
	for (size_t i = 0; i < json_array_len(dst); i++) {
		const struct json *e = json_array_at(dst, i);
		const char *s = json_str(e), *ports;
		struct dst *d = &r->dst[r->n_dst];
		char host[320], sub[96];

		snprintf(sub, sizeof(sub), "%s.dst[%zu]", path, i);
		if (!s)
			return fail(P, json_offset(e), "%s: must be a string", sub);
		/* "tag:web" splits into "tag" and "web": a missing port. */
		if (!dst_split(s, host, sizeof(host), &ports) || !strcmp(host, "tag") ||
		    !strcmp(host, "group") || !strcmp(host, "autogroup"))
			return fail(P, json_offset(e), "%s: \"%s\" is not host:ports", sub, s);
		if (!sel_parse(P, host, json_offset(e), sub, C_DST, &d->sel))
			return false;
		r->n_dst++;
		if (!ports_parse(ports, &d->ports, &d->n_ports))
			return fail(P, json_offset(e), "%s: bad port \"%s\"", sub, ports);
		if (!r->has_ports && strcmp(ports, "*"))
			return fail(P, json_offset(e),
				    "%s: protocol %u has no ports: the port must be \"*\"", sub,
				    r->protos[0]);
	}
	return true;
}

/* One grant `ip` entry: "*", "443", "80-90,8080", "tcp:443", "icmp:*". */
static bool ip_spec_parse(const char *s, struct rule *r, struct policy_port_range **ports,
			  size_t *n_ports)
{
	const char *colon = strchr(s, ':'), *pp = s;

	if (colon) {
		if (!proto_parse(s, (size_t)(colon - s), &r->protos[0]))
			return false;
		r->n_protos = 1;
		r->has_ports = proto_has_ports(r->protos[0]);
		pp = colon + 1;
		if (!r->has_ports && strcmp(pp, "*"))
			return false;
	} else if (strcmp(s, "*") && proto_parse(s, strlen(s), &r->protos[0]) &&
		   (s[0] < '0' || s[0] > '9')) {
		r->n_protos = 1; /* "icmp": a protocol on all its ports */
		r->has_ports = proto_has_ports(r->protos[0]);
		pp = "*";
	} else {
		protos_default(r);
	}
	return ports_parse(pp, ports, n_ports);
}

static bool grant_parse(struct parser *P, const struct json *g, size_t idx)
{
	static const char *const keys[] = { "src", "dst", "ip", "app", "via", "srcPosture", NULL };
	const struct json *src = json_get(g, "src"), *dst = json_get(g, "dst");
	const struct json *ip = json_get(g, "ip");
	struct sel *srcs = NULL, *dsts = NULL;
	size_t n_src = 0, n_dst = 0;
	char path[64], sub[96];
	bool ok = false;

	snprintf(path, sizeof(path), "grants[%zu]", idx);
	if (!json_is_object(g))
		return fail(P, json_offset(g), "%s: must be an object", path);
	if (!keys_check(P, g, path, keys))
		return false;
	if (json_get(g, "app"))
		return fail(P, key_off(g, "app"),
			    "%s.app: application capabilities are not supported by knit", path);
	if (json_get(g, "via"))
		return fail(P, key_off(g, "via"), "%s.via: routing through via is not supported by knit",
			    path);
	if (json_get(g, "srcPosture"))
		return fail(P, key_off(g, "srcPosture"),
			    "%s.srcPosture: device posture is not supported by knit", path);
	if (!src || !dst)
		return fail(P, json_offset(g), "%s: \"%s\" is required", path, src ? "dst" : "src");
	if (!ip)
		return fail(P, json_offset(g), "%s: \"ip\" is required", path);
	if (!json_is_array(ip) || json_array_len(ip) == 0)
		return fail(P, json_offset(ip), "%s.ip: must be a non-empty array of strings", path);
	/* Each ip entry repeats every dst: refuse before multiplying. */
	if (json_array_len(dst) > POLICY_MAX_DESTINATIONS / json_array_len(ip) ||
	    (P->destinations += json_array_len(dst) * json_array_len(ip)) >
		    POLICY_MAX_DESTINATIONS)
		return fail(P, json_offset(ip), "%s.ip: more than %zu destinations in the policy",
			    path, POLICY_MAX_DESTINATIONS);
	snprintf(sub, sizeof(sub), "%s.src", path);
	if (!sels_parse(P, src, json_offset(src), sub, C_SRC, true, &srcs, &n_src))
		goto out;
	snprintf(sub, sizeof(sub), "%s.dst", path);
	if (!sels_parse(P, dst, json_offset(dst), sub, C_DST, true, &dsts, &n_dst))
		goto out;
	for (size_t i = 0; i < json_array_len(ip); i++) {
		const struct json *e = json_array_at(ip, i);
		struct policy_port_range *ports = NULL;
		size_t n_ports = 0;
		struct rule *r;

		snprintf(sub, sizeof(sub), "%s.ip[%zu]", path, i);
		if (!json_str(e)) {
			fail(P, json_offset(e), "%s: must be a string", sub);
			goto out;
		}
		if (!rule_add(P, &r))
			goto out;
		if (!ip_spec_parse(json_str(e), r, &ports, &n_ports)) {
			fail(P, json_offset(e), "%s: \"%s\" is not [proto:]ports", sub, json_str(e));
			goto out;
		}
		r->src = calloc(n_src, sizeof(*r->src));
		r->dst = calloc(n_dst, sizeof(*r->dst));
		if (!r->src || !r->dst) {
			free(ports);
			oom(P);
			goto out;
		}
		for (size_t k = 0; k < n_src; k++) {
			r->src[k] = srcs[k];
			r->src[k].name = srcs[k].name ? strdup(srcs[k].name) : NULL;
			r->n_src++;
			if (srcs[k].name && !r->src[k].name) {
				free(ports);
				oom(P);
				goto out;
			}
		}
		for (size_t k = 0; k < n_dst; k++) {
			struct dst *d = &r->dst[k];

			d->sel = dsts[k];
			d->sel.name = dsts[k].name ? strdup(dsts[k].name) : NULL;
			d->ports = malloc(n_ports * sizeof(*ports));
			r->n_dst++;
			if ((dsts[k].name && !d->sel.name) || !d->ports) {
				free(ports);
				oom(P);
				goto out;
			}
			memcpy(d->ports, ports, n_ports * sizeof(*ports));
			d->n_ports = n_ports;
		}
		free(ports);
	}
	ok = true;
out:
	sels_free(srcs, n_src);
	sels_free(dsts, n_dst);
	return ok;
}

static bool rules_parse(struct parser *P, const struct json *acls, const struct json *grants)
{
	if (acls && !json_is_array(acls))
		return fail(P, json_offset(acls), "acls: must be an array");
	if (grants && !json_is_array(grants))
		return fail(P, json_offset(grants), "grants: must be an array");
	for (size_t i = 0; i < json_array_len(acls); i++)
		if (!acl_parse(P, json_array_at(acls, i), i))
			return false;
	for (size_t i = 0; i < json_array_len(grants); i++)
		if (!grant_parse(P, json_array_at(grants, i), i))
			return false;
	P->p->has_rules = acls || grants;
	if (!P->p->has_rules) {
		/* Tailscale's behaviour for a file without either: allow all. */
		struct rule *r;

		if (!rule_add(P, &r))
			return false;
		protos_default(r);
		r->src = calloc(1, sizeof(*r->src));
		r->dst = calloc(1, sizeof(*r->dst));
		if (!r->src || !r->dst)
			return oom(P);
		r->src[0].kind = SEL_ALL;
		r->n_src = 1;
		r->dst[0].sel.kind = SEL_ALL;
		r->n_dst = 1;
		if (!ports_parse("*", &r->dst[0].ports, &r->dst[0].n_ports))
			return oom(P);
	}
	return true;
}

static bool approvers_parse(struct parser *P, const struct json *aa)
{
	static const char *const keys[] = { "routes", "exitNode", "services", NULL };
	struct policy *p = P->p;
	const struct json *routes = json_get(aa, "routes"), *exit = json_get(aa, "exitNode");
	const char *key;
	struct json *val;
	size_t i;

	if (!aa)
		return true;
	if (!json_is_object(aa))
		return fail(P, json_offset(aa), "autoApprovers: must be an object");
	if (!keys_check(P, aa, "autoApprovers", keys))
		return false;
	if (json_get(aa, "services"))
		return fail(P, key_off(aa, "services"),
			    "autoApprovers.services: services are not supported by knit");
	if (routes && !json_is_object(routes))
		return fail(P, json_offset(routes), "autoApprovers.routes: must be an object");
	p->route_approvers = calloc(json_object_len(routes) + 1, sizeof(*p->route_approvers));
	if (!p->route_approvers)
		return oom(P);
	json_object_foreach(routes, i, key, val) {
		struct owners *o = &p->route_approvers[i];
		char path[160];

		o->key = strdup(key);
		if (!o->key)
			return oom(P);
		p->n_route_approvers++;
		if (!policy_prefix_parse(key, &o->pfx))
			return fail(P, json_key_offset(routes, i),
				    "autoApprovers.routes: \"%s\" is not a CIDR", key);
		snprintf(path, sizeof(path), "autoApprovers.routes.%s", key);
		if (!sels_parse(P, val, json_offset(val), path, C_APPROVER, false, &o->sels, &o->n))
			return false;
	}
	if (exit && !sels_parse(P, exit, json_offset(exit), "autoApprovers.exitNode", C_APPROVER,
				false, &p->exit_approvers, &p->n_exit_approvers))
		return false;
	return true;
}

static bool test_dst_parse(struct parser *P, const struct json *e, const char *sub,
			   struct test_dst *d)
{
	const char *s = json_str(e), *ports;
	char host[320];
	unsigned long port;
	char *end;

	struct json_error pos;

	d->offset = json_offset(e);
	json_error_set(&pos, P->text, d->offset, "test");
	d->line = pos.line;
	d->column = pos.column;
	if (!s)
		return fail(P, json_offset(e), "%s: must be a string", sub);
	d->text = strdup(s);
	if (!d->text)
		return oom(P);
	if (!dst_split(s, host, sizeof(host), &ports))
		return fail(P, json_offset(e), "%s: \"%s\" is not host:port", sub, s);
	if (!sel_parse(P, host, json_offset(e), sub, C_TEST_DST, &d->sel))
		return false;
	port = strtoul(ports, &end, 10);
	if (ports[0] < '0' || ports[0] > '9' || *end || port > 65535)
		return fail(P, json_offset(e), "%s: bad port \"%s\": a test names one port", sub,
			    ports);
	d->port = (uint16_t)port;
	return true;
}

static bool test_dsts_parse(struct parser *P, const struct json *arr, const char *path,
			    struct test_dst **out, size_t *n_out)
{
	if (!arr)
		return true;
	if (!json_is_array(arr))
		return fail(P, json_offset(arr), "%s: must be an array of strings", path);
	*out = calloc(json_array_len(arr) + 1, sizeof(**out));
	if (!*out)
		return oom(P);
	for (size_t i = 0; i < json_array_len(arr); i++) {
		char sub[96];

		snprintf(sub, sizeof(sub), "%s[%zu]", path, i);
		(*n_out)++;
		if (!test_dst_parse(P, json_array_at(arr, i), sub, &(*out)[i]))
			return false;
	}
	return true;
}

static bool tests_parse(struct parser *P, const struct json *tests)
{
	static const char *const keys[] = { "src", "proto", "accept", "deny", NULL };
	struct policy *p = P->p;

	if (!tests)
		return true;
	if (!json_is_array(tests))
		return fail(P, json_offset(tests), "tests: must be an array");
	p->tests = calloc(json_array_len(tests) + 1, sizeof(*p->tests));
	if (!p->tests)
		return oom(P);
	for (size_t i = 0; i < json_array_len(tests); i++) {
		const struct json *t = json_array_at(tests, i), *src = json_get(t, "src");
		const struct json *proto = json_get(t, "proto");
		struct test *x = &p->tests[i];
		char path[64], sub[80];

		snprintf(path, sizeof(path), "tests[%zu]", i);
		p->n_tests++;
		x->offset = json_offset(t);
		if (!json_is_object(t))
			return fail(P, json_offset(t), "%s: must be an object", path);
		if (!keys_check(P, t, path, keys))
			return false;
		if (!json_str(src))
			return fail(P, src ? json_offset(src) : json_offset(t),
				    "%s.src: a string is required", path);
		x->src_offset = json_offset(src);
		x->src_text = strdup(json_str(src));
		if (!x->src_text)
			return oom(P);
		snprintf(sub, sizeof(sub), "%s.src", path);
		if (!sel_parse(P, json_str(src), json_offset(src), sub, C_TEST_SRC, &x->src))
			return false;
		x->proto = 6;
		if (proto && (!json_str(proto) ||
			      !proto_parse(json_str(proto), strlen(json_str(proto)), &x->proto)))
			return fail(P, json_offset(proto), "%s.proto: unknown protocol", path);
		snprintf(sub, sizeof(sub), "%s.accept", path);
		if (!test_dsts_parse(P, json_get(t, "accept"), sub, &x->accept, &x->n_accept))
			return false;
		snprintf(sub, sizeof(sub), "%s.deny", path);
		if (!test_dsts_parse(P, json_get(t, "deny"), sub, &x->deny, &x->n_deny))
			return false;
	}
	return true;
}

/* ssh, sshTests, nodeAttrs: arrays of objects, kept as they are. */
static bool kept_parse(struct parser *P, const struct json *v, const char *name, struct json **out)
{
	if (!v)
		return true;
	if (!json_is_array(v))
		return fail(P, json_offset(v), "%s: must be an array", name);
	for (size_t i = 0; i < json_array_len(v); i++)
		if (!json_is_object(json_array_at(v, i)))
			return fail(P, json_offset(json_array_at(v, i)), "%s[%zu]: must be an object",
				    name, i);
	*out = json_clone(v);
	return *out ? true : oom(P);
}

struct policy *policy_parse(const char *text, size_t len, struct json_error *err)
{
	static const char *const keys[] = { "acls",	 "grants", "groups", "tagOwners",
					    "hosts",	 "autoApprovers", "tests", "sshTests",
					    "ssh",	 "nodeAttrs", NULL };
	static const char *const unsupported[] = { "postures", "ipsets", "derpMap",
						   "disableIPv4", "randomizeClientPort",
						   "attrConfig", "OneCGNATRoute", NULL };
	struct parser P = { .text = text, .err = err };
	struct json *doc = NULL;
	const char *key;
	struct json *val;
	size_t i;
	bool ok = false;

	if (len > POLICY_MAX_BYTES) {
		json_error_set(err, text, 0, "policy larger than %zu bytes", POLICY_MAX_BYTES);
		return NULL;
	}
	doc = hujson_parse(text, len, err);
	if (!doc)
		return NULL;
	P.p = calloc(1, sizeof(*P.p));
	if (!P.p) {
		oom(&P);
		goto out;
	}
	if (!json_is_object(doc)) {
		fail(&P, json_offset(doc), "the policy must be an object");
		goto out;
	}
	json_object_foreach(doc, i, key, val) {
		bool known = false;

		for (const char *const *u = unsupported; *u; u++) {
			if (!strcmp(key, *u)) {
				fail(&P, json_key_offset(doc, i), "\"%s\" is not supported by knit",
				     key);
				goto out;
			}
		}
		for (const char *const *k = keys; *k; k++)
			known = known || !strcmp(key, *k);
		if (!known) {
			fail(&P, json_key_offset(doc, i), "unknown key \"%s\"", key);
			goto out;
		}
	}
	ok = hosts_parse(&P, json_get(doc, "hosts")) && groups_parse(&P, json_get(doc, "groups")) &&
	     tag_owners_parse(&P, json_get(doc, "tagOwners")) &&
	     rules_parse(&P, json_get(doc, "acls"), json_get(doc, "grants")) &&
	     approvers_parse(&P, json_get(doc, "autoApprovers")) &&
	     tests_parse(&P, json_get(doc, "tests")) &&
	     kept_parse(&P, json_get(doc, "ssh"), "ssh", &P.p->ssh) &&
	     kept_parse(&P, json_get(doc, "sshTests"), "sshTests", &P.p->ssh_tests) &&
	     kept_parse(&P, json_get(doc, "nodeAttrs"), "nodeAttrs", &P.p->node_attrs);
out:
	json_free(doc);
	if (!ok) {
		policy_free(P.p);
		return NULL;
	}
	return P.p;
}

bool policy_has_rules(const struct policy *p)
{
	return p->has_rules;
}

bool policy_has_tests(const struct policy *p)
{
	return p->n_tests > 0;
}

const struct json *policy_ssh(const struct policy *p)
{
	return p->ssh;
}

const struct json *policy_ssh_tests(const struct policy *p)
{
	return p->ssh_tests;
}

const struct json *policy_node_attrs(const struct policy *p)
{
	return p->node_attrs;
}
