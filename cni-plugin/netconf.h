/* What one knit-cni invocation was asked: the CNI_* environment, the
 * network configuration on stdin, the pod's annotations (runtimeConfig
 * capability "io.kubernetes.cri.pod-annotations") and its CNI_ARGS.
 *
 * Pure: bytes and strings in, a struct and a CNI error out. The order of
 * checks is the reference skeleton's: the environment (code 4), then
 * decoding stdin (6), then the version (1), then the configuration (7). */
#ifndef KNIT_CNI_NETCONF_H
#define KNIT_CNI_NETCONF_H

#include <stdbool.h>
#include <stddef.h>

#include "cnierror.h"

struct json;

/* The whole configuration on stdin, prevResult included. */
#define NETCONF_MAX_BYTES ((size_t)1 << 20)
#define NETCONF_SOCKET_DEFAULT "/var/run/knit/knitd.sock"
#define NETCONF_IFNAME_DEFAULT "knit0"
#define NETCONF_MAX_TAGS 32

enum netconf_cmd { CMD_ADD, CMD_DEL, CMD_CHECK, CMD_VERSION, CMD_STATUS, CMD_GC };
/* identity+gateway: both; knitd reads the mode from the conflist too (docs/cni.md). */
enum netconf_mode { MODE_IDENTITY, MODE_GATEWAY, MODE_IDENTITY_GATEWAY };

/* The environment a runtime sets; NULL for a variable not set. */
struct netconf_env {
	const char *command, *containerid, *netns, *ifname, *args, *path;
};

struct netconf {
	enum netconf_cmd cmd;
	const char *containerid, *netns, *ifname; /* from the environment */
	struct json *doc; /* stdin, owned */
	const char *cni_version; /* into doc */
	const char *name;
	enum netconf_mode mode;
	const char *socket;
	const char *pod_ifname; /* knit's interface in the pod, "knit0" */
	long add_timeout_ms, del_timeout_ms, connect_timeout_ms;
	const struct json *prev_result; /* NULL if none */

	/* CNI_ARGS; NULL when not given. Owned. */
	char *pod_namespace, *pod_name, *pod_uid;
	/* The pod's annotations, when the runtime passed them. */
	bool have_annotations;
	bool want_identity; /* knit.dev/identity: "true" */
	const char *hostname; /* knit.dev/hostname, into doc */
	char *tags[NETCONF_MAX_TAGS]; /* knit.dev/tags, owned */
	size_t ntags;
};

/* The versions knit-cni speaks, oldest first. 0.3.x results have the 0.4.0
 * shape; 0.3.x has no CHECK. */
extern const char *const netconf_versions[];
extern const size_t netconf_nversions;
bool netconf_version_supported(const char *v);
/* "1.0.0" and later: results without ips[].version. */
bool netconf_version_is_1x(const char *v);

/* CNI_COMMAND alone (VERSION needs nothing more). false: unknown. */
bool netconf_command_parse(const char *s, enum netconf_cmd *out);

/* Parses everything for cmd. Returns 0 and fills *nc (netconf_free it),
 * or a CNI error code with e filled in (and *nc freed). */
int netconf_parse(struct netconf *nc, const struct netconf_env *env, const char *in, size_t len,
		  struct cnierror *e);
void netconf_free(struct netconf *nc);

/* Helpers exposed for the tests. */
bool netconf_containerid_valid(const char *s);
bool netconf_ifname_valid(const char *s);
/* "tag:a, tag:b" into tags[] (strdup'd). false with why on a bad tag or
 * too many. */
bool netconf_tags_parse(const char *csv, char **tags, size_t max, size_t *n, char *why, size_t whylen);
/* RFC 1123 label: what a tailnet device name may be. */
bool netconf_hostname_valid(const char *s);

#endif
