/* The parsed policy as lib/policy's modules share it (not for callers):
 * selectors resolved (hosts to prefixes, groups to their members), every
 * acl and grant normalized into rules of one shape. */
#ifndef KNIT_POLICY_MODEL_H
#define KNIT_POLICY_MODEL_H

#include "policy.h"

enum sel_kind {
	SEL_NONE,     /* autogroup:admin and the like: no device in knit */
	SEL_ALL,      /* "*" */
	SEL_USER,     /* a login, also system:serviceaccount:<ns>:<sa> */
	SEL_GROUP,    /* group:<name>, members in the policy's groups[] */
	SEL_TAG,      /* tag:<name> */
	SEL_NS,       /* system:serviceaccounts:<ns>: untagged pods in ns */
	SEL_MEMBER,   /* autogroup:member: untagged devices */
	SEL_TAGGED,   /* autogroup:tagged */
	SEL_SELF,     /* autogroup:self (destinations only) */
	SEL_INTERNET, /* autogroup:internet (destinations only) */
	SEL_PREFIX,   /* an address, a CIDR or a host */
};

struct sel {
	enum sel_kind kind;
	char *name; /* user, tag, namespace or group name as written */
	size_t group; /* SEL_GROUP: index in policy.groups */
	struct policy_prefix pfx; /* SEL_PREFIX */
};

struct dst {
	struct sel sel;
	struct policy_port_range *ports;
	size_t n_ports;
};

/* One acl, or one grant crossed with one entry of its `ip`. */
struct rule {
	struct sel *src;
	size_t n_src;
	struct dst *dst;
	size_t n_dst;
	uint8_t protos[8];
	size_t n_protos;
	bool has_ports; /* the protocols carry ports (tcp, udp, sctp) */
};

struct group {
	char *name;
	struct sel *members; /* SEL_USER or SEL_NS */
	size_t n;
};

struct owners {
	char *key; /* a tag, or a route prefix as written */
	struct policy_prefix pfx; /* routes */
	struct sel *sels;
	size_t n;
};

struct test_dst {
	char *text; /* as written */
	size_t offset, line, column;
	struct sel sel;
	uint16_t port;
};

struct test {
	char *src_text;
	size_t offset, src_offset;
	struct sel src;
	uint8_t proto;
	struct test_dst *accept, *deny;
	size_t n_accept, n_deny;
};

struct policy {
	struct group *groups;
	size_t n_groups;
	struct owners *tag_owners;
	size_t n_tag_owners;
	struct owners *route_approvers;
	size_t n_route_approvers;
	struct sel *exit_approvers;
	size_t n_exit_approvers;
	struct rule *rules;
	size_t n_rules;
	bool has_rules;
	struct test *tests;
	size_t n_tests;
	struct json *ssh, *ssh_tests, *node_attrs;
};

/* The device as the net keeps it, and what the selectors match on. */
struct dev {
	char *name;
	struct policy_prefix addrs[POLICY_MAX_ADDRS];
	size_t n_addrs;
	char *user; /* NULL when tagged */
	char **tags;
	size_t n_tags;
	struct policy_prefix *routes; /* approved */
	size_t n_routes;
	bool exit_node;
	char *ns; /* untagged pods: their namespace */
	bool live;
};

bool sel_match(const struct policy *p, const struct sel *s, const struct dev *d);
/* Does any rule let src reach dst on proto/port? Principal-level, as the
 * policy's tests ask it: devices here may be stand-ins without addresses. */
bool rules_allow(const struct policy *p, const struct dev *src, const struct dev *dst,
		 uint8_t proto, uint16_t port);
/* The net's device with that name, or NULL. */
const struct dev *net_dev(const struct policy_net *n, const char *name);
bool ports_contain(const struct policy_port_range *r, size_t n, uint16_t port);
bool proto_has_ports(uint8_t proto);

#endif
