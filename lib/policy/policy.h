/* The tailnet policy: Tailscale's policy file (huJSON) parsed, compiled
 * per device into packet filters, visible peers and approved routes, and
 * its own `tests` run. Pure: text and structs in, structs out, no I/O.
 *
 * Use:
 *   pol = policy_parse(text, len, &err);        once per policy change
 *   net = policy_net_new(pol);                  the device index
 *   policy_net_add(net, &dev, &touched);        per device joining: touched
 *   policy_net_remove(net, name, &touched);     names whose filter/peers change
 *   policy_net_filter(net, name, &filter);      per device, on demand
 *   policy_net_peers(net, name, &peers);
 *   policy_net_routes(net, name, &routes);
 *   policy_tests_run(pol, net, &err);           before the policy takes effect
 *
 * A device joining or leaving changes the filters and peer lists of itself
 * and of its visible peers only (a filter names a source's addresses only
 * if that source may reach the device, which makes them peers), so
 * `touched` is exactly what to recompile. A policy change builds a new net.
 *
 * Errors are struct json_error: line:column of the offending value or key
 * in the original text and a message naming the field
 * ("acls[2].dst[0]: group \"group:eng\" is not defined"). docs/policy.md
 * says what is supported and every choice knit makes.
 */
#ifndef KNIT_POLICY_H
#define KNIT_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "json.h"

struct buf;
struct policy;
struct policy_net;

/* The largest policy text accepted. */
#define POLICY_MAX_BYTES ((size_t)4 << 20)
/* Grants multiply: each (ip entry, dst) pair becomes a rule destination.
 * The policy may hold at most this many in all. */
#define POLICY_MAX_DESTINATIONS ((size_t)1 << 20)
/* A test with group sources or destinations asks every (member, member)
 * pair; at most this many per assertion. */
#define POLICY_MAX_TEST_PAIRS ((size_t)1 << 16)
#define POLICY_MAX_ADDRS 4

struct policy_prefix {
	uint8_t family; /* 4 or 6 */
	uint8_t bits;
	uint8_t addr[16]; /* IPv4 in the first 4 bytes; host bits zero */
};

/* "100.64.0.1", "10.0.0.0/8", "fd7a::1", "fd7a::/48". Host bits past
 * the prefix length are cleared. */
bool policy_prefix_parse(const char *s, struct policy_prefix *out);
/* "100.64.0.1/32": writes at most n bytes, returns false if they were too
 * few (INET6_ADDRSTRLEN + 4 always suffice). */
bool policy_prefix_format(const struct policy_prefix *p, char *out, size_t n);
bool policy_prefix_contains(const struct policy_prefix *outer, const struct policy_prefix *inner);
bool policy_prefix_overlaps(const struct policy_prefix *a, const struct policy_prefix *b);

/* ---- the policy ------------------------------------------------------ */

/* Returns the parsed policy or NULL with *err set (err may be NULL). */
struct policy *policy_parse(const char *text, size_t len, struct json_error *err);
void policy_free(struct policy *p);
/* false when the file has neither `acls` nor `grants`: then, as in
 * Tailscale, every device may reach every other on every port. */
bool policy_has_rules(const struct policy *p);
/* Does the file have `tests` (which policy_tests_run asks of a net)? */
bool policy_has_tests(const struct policy *p);
/* The sections knit keeps for later but does not evaluate (NULL if absent;
 * owned by the policy). */
const struct json *policy_ssh(const struct policy *p);
const struct json *policy_ssh_tests(const struct policy *p);
const struct json *policy_node_attrs(const struct policy *p);

/* ---- devices --------------------------------------------------------- */

struct policy_device {
	const char *name;
	struct policy_prefix addrs[POLICY_MAX_ADDRS]; /* each /32 or /128 */
	size_t n_addrs;
	/* The owner's login; NULL or "" when tagged. An untagged pod
	 * identity with no user is owned by its ServiceAccount's login,
	 * "system:serviceaccount:<namespace>:<name>". */
	const char *user;
	const char *const *tags; /* "tag:web" */
	size_t n_tags;
	const struct policy_prefix *routes; /* advertised */
	size_t n_routes;
	bool pod;
	const char *pod_namespace, *pod_serviceaccount;
};

/* May `who` claim `tag`? Per tagOwners: an owner that is a user, group,
 * tag, pod principal or autogroup:member which `who` matches. */
bool policy_tag_allowed(const struct policy *p, const char *tag, const struct policy_device *who);
/* For the refusal's message: the tag's owners as written, comma-separated
 * ("group:eng, tag:ops"; "" when it has none), truncated to n bytes.
 * Returns false when the tag is not in tagOwners at all. */
bool policy_tag_owners(const struct policy *p, const char *tag, char *out, size_t n);

/* ---- compiled output ------------------------------------------------- */

struct policy_port_range {
	uint16_t first, last;
};

struct policy_dst_port {
	struct policy_prefix ip;
	struct policy_port_range ports;
};

/* Tailscale's FilterRule: packets from any of src_ips to any dst_ports
 * entry with an IP protocol in protos are allowed. */
struct policy_rule {
	struct policy_prefix *src_ips;
	size_t n_src;
	struct policy_dst_port *dst_ports;
	size_t n_dst;
	uint8_t protos[8];
	size_t n_protos;
};

struct policy_filter {
	struct policy_rule *rules;
	size_t n_rules;
};

void policy_filter_free(struct policy_filter *f);
/* The netmap's `packetFilter`: [{"srcIPs":[...],"dstPorts":[{"ip":...,
 * "ports":{"first":..,"last":..}}],"ipProto":[...]}]. NULL on ENOMEM. */
struct json *policy_filter_to_json(const struct policy_filter *f);
/* The same appended to out as text; 0 or -ENOMEM/-ENOSPC. */
int policy_filter_dump(const struct policy_filter *f, struct buf *out);
/* Does f allow a packet from src to dst:port with protocol proto? A plain
 * reading of the rules for tests and tools; knitd's enforcement is
 * stateful and lives elsewhere. port is ignored for protocols without. */
bool policy_filter_allows(const struct policy_filter *f, const struct policy_prefix *src,
			  const struct policy_prefix *dst, uint8_t proto, uint16_t port);

/* Device names; the strings belong to the net and stay valid until its
 * next change. */
struct policy_names {
	const char **v;
	size_t len;
};
void policy_names_free(struct policy_names *n);

struct policy_routes {
	struct policy_prefix *approved; /* advertised routes autoApprovers allow */
	size_t n_approved;
	bool exit_node; /* an advertised 0.0.0.0/0 or ::/0 is approved */
};
void policy_routes_free(struct policy_routes *r);

/* ---- the device index ------------------------------------------------ */

/* A net is not thread-safe (its owner locks); a policy is immutable once
 * parsed and may be shared. A device that changes (tags, routes,
 * addresses) is removed and added again: recompile both touched sets. */

/* Borrows p, which must outlive the net. NULL on ENOMEM. */
struct policy_net *policy_net_new(const struct policy *p);
void policy_net_free(struct policy_net *n);
size_t policy_net_len(const struct policy_net *n);
/* Copies d in. touched (may be NULL) gets d's name and its visible peers:
 * the devices to recompile. -EEXIST for a known name, -EINVAL for a
 * device without name or with too many addresses, -ENOMEM. */
int policy_net_add(struct policy_net *n, const struct policy_device *d,
		   struct policy_names *touched);
/* touched gets the peers it had. -ENOENT for an unknown name. */
int policy_net_remove(struct policy_net *n, const char *name, struct policy_names *touched);
/* The device with this address, or NULL. */
const char *policy_net_lookup(const struct policy_net *n, const struct policy_prefix *addr);

/* Per device; -ENOENT for an unknown name, -ENOMEM. */
int policy_net_filter(const struct policy_net *n, const char *name, struct policy_filter *out);
int policy_net_peers(const struct policy_net *n, const char *name, struct policy_names *out);
int policy_net_routes(const struct policy_net *n, const char *name, struct policy_routes *out);

/* A device's packet filter as policy_filter_dump(policy_net_filter())
 * writes it, appended to out, faster: each rule's sources are expanded
 * and written once and shared by every device the rule reaches, until a
 * device they name joins or leaves (then that rule alone is built again).
 * Not thread-safe even on a const net (the shared text is filled on
 * use). -ENOENT for an unknown name, -ENOMEM/-ENOSPC (out is left as it
 * was, or freed by a failed append). */
int policy_net_filter_dump(const struct policy_net *n, const char *name, struct buf *out);

/* What a net has compiled since it was made, for tests and benchmarks. */
struct policy_net_stats {
	size_t filters; /* device filters (policy_net_filter, _filter_dump) */
	size_t peer_sets; /* device peer lists (policy_net_peers, and those add, remove, affected ask for) */
	size_t source_builds; /* rules whose shared sources were (re)built */
};
void policy_net_stats(const struct policy_net *n, struct policy_net_stats *out);

/* ---- a policy change -------------------------------------------------- */

/* Two nets over (nearly) the same devices, under an old and a new policy:
 * the devices whose packet filter or visible peers may differ between
 * them — those a rule only one policy has names as a source or a
 * destination, and those only one net has with their peers; every device
 * when the approvers (hence approved routes) or the allow-all default
 * differ. Devices outside it have the same filter and peers in both, so a
 * policy change recompiles only these. Names belong to `to` (or, for
 * devices only `from` has, to `from`). -ENOMEM. */
int policy_net_affected(const struct policy_net *from, const struct policy_net *to, struct policy_names *out);
/* The same, and in peers (a subset of out) the devices whose visible
 * peers may differ; for the rest of out only the filter may. A changed
 * rule that names no device on one side (a CIDR source, say) changes its
 * destinations' filters but not whom anyone sees. */
int policy_net_affected_views(const struct policy_net *from, const struct policy_net *to, struct policy_names *out,
			      struct policy_names *peers);

struct strmap;
/* A device saw the peers in had (a set of names; NULL: none) and now sees
 * now: added gets the names of now it did not see (strings of now),
 * removed those of had it no longer sees (strings of had). -ENOMEM. */
int policy_view_diff(const struct strmap *had, const struct policy_names *now, struct policy_names *added,
		     struct policy_names *removed);

/* ---- tests ----------------------------------------------------------- */

/* Runs the policy's `tests`. net (may be NULL) lets an IP source or
 * destination stand for the device that has it. Returns true when every
 * assertion holds; else false with the first failing one in *err (its
 * position in the policy text and e.g. "tests[1]: alice@example.com
 * -> tag:db:5432 (tcp) expected accept, got deny"). */
bool policy_tests_run(const struct policy *p, const struct policy_net *net, struct json_error *err);

#endif
