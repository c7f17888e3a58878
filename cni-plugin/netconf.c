#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "json.h"
#include "netconf.h"

const char *const netconf_versions[] = { "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0" };
const size_t netconf_nversions = sizeof(netconf_versions) / sizeof(netconf_versions[0]);

/* containerd (>= 1.5) and CRI-O pass the pod's annotations to plugins whose
 * conflist entry declares this capability. */
#define CAP_POD_ANNOTATIONS "io.kubernetes.cri.pod-annotations"
#define ANN_IDENTITY "knit.dev/identity"
#define ANN_TAGS "knit.dev/tags"
#define ANN_HOSTNAME "knit.dev/hostname"
#define CNI_ARGS_MAX 4096

bool netconf_version_supported(const char *v)
{
	for (size_t i = 0; v && i < netconf_nversions; i++)
		if (strcmp(v, netconf_versions[i]) == 0)
			return true;
	return false;
}

bool netconf_version_is_1x(const char *v)
{
	return v && v[0] != '0';
}

bool netconf_command_parse(const char *s, enum netconf_cmd *out)
{
	static const struct {
		const char *name;
		enum netconf_cmd cmd;
	} cmds[] = {
		{ "ADD", CMD_ADD }, { "DEL", CMD_DEL }, { "CHECK", CMD_CHECK },
		{ "VERSION", CMD_VERSION }, { "STATUS", CMD_STATUS }, { "GC", CMD_GC },
	};

	for (size_t i = 0; s && i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (strcmp(s, cmds[i].name) == 0) {
			*out = cmds[i].cmd;
			return true;
		}
	return false;
}

/* SPEC.md: "Must start with an alphanumeric character, optionally followed
 * by any combination of one or more alphanumeric characters, underscore,
 * dot (.) or hyphen (-)." */
bool netconf_containerid_valid(const char *s)
{
	if (!s || !isalnum((unsigned char)s[0]))
		return false;
	for (const char *p = s; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '_' && *p != '.' && *p != '-')
			return false;
	return strlen(s) <= 1024;
}

/* Linux: at most IFNAMSIZ-1 bytes, no '/', no whitespace, not "." or "..". */
bool netconf_ifname_valid(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n == 0 || n > 15 || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
		return false;
	for (const char *p = s; *p; p++)
		if (*p == '/' || *p == ':' || isspace((unsigned char)*p) || (unsigned char)*p < 0x21 ||
		    (unsigned char)*p > 0x7e)
			return false;
	return true;
}

bool netconf_hostname_valid(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
		return false;
	for (const char *p = s; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '-')
			return false;
	return true;
}

/* tag:<name>, the name as Tailscale's: letters, digits, '-'. */
static bool tag_valid(const char *t, size_t n)
{
	if (n <= 4 || n > 4 + 63 || strncmp(t, "tag:", 4) != 0 || !isalpha((unsigned char)t[4]))
		return false;
	for (size_t i = 4; i < n; i++)
		if (!isalnum((unsigned char)t[i]) && t[i] != '-')
			return false;
	return true;
}

bool netconf_tags_parse(const char *csv, char **tags, size_t max, size_t *n, char *why, size_t whylen)
{
	const char *p = csv;

	*n = 0;
	while (*p) {
		const char *comma = strchr(p, ',');
		size_t len = comma ? (size_t)(comma - p) : strlen(p);

		while (len > 0 && isspace((unsigned char)*p)) {
			p++;
			len--;
		}
		while (len > 0 && isspace((unsigned char)p[len - 1]))
			len--;
		if (len > 0) {
			if (!tag_valid(p, len)) {
				errbuf_printf(why, whylen, "\"%.*s\" is not a tag (tag:<letters, digits, ->)",
					      (int)(len > 80 ? 80 : len), p);
				goto fail;
			}
			if (*n == max) {
				errbuf_printf(why, whylen, "more than %zu tags", max);
				goto fail;
			}
			if (!(tags[*n] = strndup(p, len))) {
				errbuf_printf(why, whylen, "out of memory");
				goto fail;
			}
			++*n;
		}
		if (!comma)
			break;
		p = comma + 1;
	}
	return true;
fail:
	while (*n > 0)
		free(tags[--*n]);
	return false;
}

/* CNI_ARGS: "K=V;K=V". containerd sends K8S_POD_NAMESPACE, K8S_POD_NAME,
 * K8S_POD_UID, K8S_POD_INFRA_CONTAINER_ID and IgnoreUnknown=1; the rest is
 * none of our business. */
static bool args_parse(struct netconf *nc, const char *args, char *why, size_t whylen)
{
	const char *p = args;

	if (strlen(args) > CNI_ARGS_MAX) {
		errbuf_printf(why, whylen, "CNI_ARGS is longer than %d bytes", CNI_ARGS_MAX);
		return false;
	}
	while (*p) {
		const char *semi = strchr(p, ';');
		size_t len = semi ? (size_t)(semi - p) : strlen(p);
		const char *eq = memchr(p, '=', len);
		char **dst = NULL;

		if (len > 0) {
			if (!eq || eq == p) {
				errbuf_printf(why, whylen, "CNI_ARGS: \"%.*s\" is not KEY=VALUE",
					      (int)(len > 80 ? 80 : len), p);
				return false;
			}
			if ((size_t)(eq - p) == 17 && strncmp(p, "K8S_POD_NAMESPACE", 17) == 0)
				dst = &nc->pod_namespace;
			else if ((size_t)(eq - p) == 12 && strncmp(p, "K8S_POD_NAME", 12) == 0)
				dst = &nc->pod_name;
			else if ((size_t)(eq - p) == 11 && strncmp(p, "K8S_POD_UID", 11) == 0)
				dst = &nc->pod_uid;
			if (dst) {
				free(*dst);
				if (!(*dst = strndup(eq + 1, len - (size_t)(eq + 1 - p)))) {
					errbuf_printf(why, whylen, "out of memory");
					return false;
				}
			}
		}
		if (!semi)
			break;
		p = semi + 1;
	}
	return true;
}

/* A positive number of milliseconds, or the default when absent. */
static bool timeout_get(const struct json *doc, const char *key, long def, long *out, struct cnierror *e)
{
	const struct json *v = json_get(doc, key);

	if (!v) {
		*out = def;
		return true;
	}
	if (!json_is_int(v) || json_int(v, 0) <= 0 || json_int(v, 0) > 600000) {
		cnierror_set(e, CNI_ERR_INVALID_CONFIG, "invalid network configuration",
			     "\"%s\" must be a number of milliseconds in 1..600000", key);
		return false;
	}
	*out = (long)json_int(v, 0);
	return true;
}

static int config_parse(struct netconf *nc, struct cnierror *e)
{
	const struct json *doc = nc->doc, *v, *rc, *ann;
	const char *s;
	char why[256];

	nc->name = json_str(json_get(doc, "name"));
	if (!nc->name || !nc->name[0]) {
		cnierror_set(e, CNI_ERR_INVALID_CONFIG, "invalid network configuration",
			     "\"name\" (the network's name) is missing: the runtime inserts it from the conflist");
		return e->code;
	}
	v = json_get(doc, "mode");
	s = json_str(v);
	if (!v || (s && strcmp(s, "identity") == 0)) {
		nc->mode = MODE_IDENTITY;
	} else if (s && strcmp(s, "gateway") == 0) {
		nc->mode = MODE_GATEWAY;
	} else if (s && strcmp(s, "identity+gateway") == 0) {
		nc->mode = MODE_IDENTITY_GATEWAY;
	} else {
		cnierror_set(e, CNI_ERR_INVALID_CONFIG, "invalid network configuration",
			     "\"mode\" must be \"identity\" (default), \"gateway\" or \"identity+gateway\"");
		return e->code;
	}
	v = json_get(doc, "socket");
	nc->socket = v ? json_str(v) : NETCONF_SOCKET_DEFAULT;
	if (!nc->socket || nc->socket[0] != '/' || strlen(nc->socket) >= 108) {
		cnierror_set(e, CNI_ERR_INVALID_CONFIG, "invalid network configuration",
			     "\"socket\" must be the absolute path of knitd's local API socket (shorter than 108 bytes), default "
			     NETCONF_SOCKET_DEFAULT);
		return e->code;
	}
	v = json_get(doc, "ifName");
	nc->pod_ifname = v ? json_str(v) : NETCONF_IFNAME_DEFAULT;
	if (!netconf_ifname_valid(nc->pod_ifname)) {
		cnierror_set(e, CNI_ERR_INVALID_CONFIG, "invalid network configuration",
			     "\"ifName\" must be a Linux interface name (1-15 characters, no '/', ':' or spaces), default "
			     NETCONF_IFNAME_DEFAULT);
		return e->code;
	}
	if (!timeout_get(doc, "addTimeoutMs", 30000, &nc->add_timeout_ms, e) ||
	    !timeout_get(doc, "delTimeoutMs", 10000, &nc->del_timeout_ms, e) ||
	    !timeout_get(doc, "connectTimeoutMs", 1000, &nc->connect_timeout_ms, e))
		return e->code;

	v = json_get(doc, "prevResult");
	if (v && !json_is_object(v)) {
		cnierror_set(e, CNI_ERR_DECODE, "failed to decode prevResult", "\"prevResult\" must be an object");
		return e->code;
	}
	nc->prev_result = v;

	rc = json_get(doc, "runtimeConfig");
	if (rc && !json_is_object(rc)) {
		cnierror_set(e, CNI_ERR_DECODE, "failed to decode runtimeConfig", "\"runtimeConfig\" must be an object");
		return e->code;
	}
	ann = json_get(rc, CAP_POD_ANNOTATIONS);
	if (ann && !json_is_object(ann)) {
		cnierror_set(e, CNI_ERR_DECODE, "failed to decode runtimeConfig",
			     "runtimeConfig[\"" CAP_POD_ANNOTATIONS "\"] must be an object of strings");
		return e->code;
	}
	nc->have_annotations = ann != NULL;
	v = json_get(ann, ANN_IDENTITY);
	if (v) {
		s = json_str(v);
		if (s && strcmp(s, "true") == 0) {
			nc->want_identity = true;
		} else if (!s || strcmp(s, "false") != 0) {
			cnierror_set(e, KNIT_ERR_ANNOTATION, "invalid pod annotation",
				     "annotation " ANN_IDENTITY " must be \"true\" or \"false\"");
			return e->code;
		}
	}
	if (!nc->want_identity)
		return 0;
	v = json_get(ann, ANN_TAGS);
	if (v && (!json_str(v) || !netconf_tags_parse(json_str(v), nc->tags, NETCONF_MAX_TAGS, &nc->ntags,
						       why, sizeof(why)))) {
		cnierror_set(e, KNIT_ERR_ANNOTATION, "invalid pod annotation",
			     "annotation " ANN_TAGS " must be comma-separated tags like \"tag:ci,tag:web\": %s",
			     json_str(v) ? why : "not a string");
		return e->code;
	}
	v = json_get(ann, ANN_HOSTNAME);
	if (v && !netconf_hostname_valid(json_str(v))) {
		cnierror_set(e, KNIT_ERR_ANNOTATION, "invalid pod annotation",
			     "annotation " ANN_HOSTNAME " must be a DNS label (letters, digits, '-', at most 63)");
		return e->code;
	}
	nc->hostname = json_str(v);
	return 0;
}

static bool env_require(const char *name, const char *val, struct cnierror *e)
{
	if (val && val[0])
		return true;
	cnierror_set(e, CNI_ERR_INVALID_ENV, "invalid environment variables",
		     "%s is not set: knit-cni is run by a container runtime, which sets CNI_COMMAND, "
		     "CNI_CONTAINERID, CNI_NETNS and CNI_IFNAME",
		     name);
	return false;
}

static int env_parse(struct netconf *nc, const struct netconf_env *env, struct cnierror *e)
{
	bool attach = nc->cmd == CMD_ADD || nc->cmd == CMD_DEL || nc->cmd == CMD_CHECK;
	char why[256];

	if (!attach)
		return 0;
	if (!env_require("CNI_CONTAINERID", env->containerid, e) || !env_require("CNI_IFNAME", env->ifname, e) ||
	    (nc->cmd != CMD_DEL && !env_require("CNI_NETNS", env->netns, e)))
		return e->code;
	if (!netconf_containerid_valid(env->containerid)) {
		cnierror_set(e, CNI_ERR_INVALID_ENV, "invalid environment variables",
			     "CNI_CONTAINERID must start with a letter or digit, then letters, digits, '_', '.', '-'");
		return e->code;
	}
	if (!netconf_ifname_valid(env->ifname)) {
		cnierror_set(e, CNI_ERR_INVALID_ENV, "invalid environment variables",
			     "CNI_IFNAME is not a valid interface name");
		return e->code;
	}
	if (env->netns && env->netns[0] && env->netns[0] != '/') {
		cnierror_set(e, CNI_ERR_INVALID_ENV, "invalid environment variables",
			     "CNI_NETNS must be the path of a network namespace (e.g. /var/run/netns/cni-...)");
		return e->code;
	}
	nc->containerid = env->containerid;
	nc->ifname = env->ifname;
	nc->netns = env->netns && env->netns[0] ? env->netns : NULL;
	if (env->args && !args_parse(nc, env->args, why, sizeof(why))) {
		cnierror_set(e, CNI_ERR_INVALID_ENV, "invalid environment variables", "CNI_ARGS: %s", why);
		return e->code;
	}
	return 0;
}

int netconf_parse(struct netconf *nc, const struct netconf_env *env, const char *in, size_t len,
		  struct cnierror *e)
{
	struct json_error je;
	int ret;

	memset(nc, 0, sizeof(*nc));
	if (!netconf_command_parse(env->command, &nc->cmd)) {
		cnierror_set(e, CNI_ERR_INVALID_ENV, "invalid environment variables",
			     "CNI_COMMAND must be ADD, DEL, CHECK, VERSION, STATUS or GC%s",
			     env->command ? "" : " (it is not set: knit-cni is run by a container runtime; "
						 "\"knit-cni install\" installs it)");
		return e->code;
	}
	if ((ret = env_parse(nc, env, e)))
		goto out;
	if (len > NETCONF_MAX_BYTES) {
		cnierror_set(e, CNI_ERR_DECODE, "failed to decode network configuration",
			     "the configuration on stdin is larger than %zu bytes", NETCONF_MAX_BYTES);
		ret = e->code;
		goto out;
	}
	if (!(nc->doc = json_parse_max(in, len, NETCONF_MAX_BYTES, &je))) {
		cnierror_set(e, CNI_ERR_DECODE, "failed to decode network configuration",
			     "stdin is not JSON (line %zu, column %zu: %s)", je.line, je.column, je.msg);
		ret = e->code;
		goto out;
	}
	if (!json_is_object(nc->doc)) {
		cnierror_set(e, CNI_ERR_DECODE, "failed to decode network configuration",
			     "the configuration must be a JSON object");
		ret = e->code;
		goto out;
	}
	nc->cni_version = json_str(json_get(nc->doc, "cniVersion"));
	if (!netconf_version_supported(nc->cni_version)) {
		const char *v = nc->cni_version;

		nc->cni_version = NULL; /* the error is reported in our newest version */
		cnierror_set(e, CNI_ERR_INCOMPATIBLE_VERSION, "incompatible CNI version",
			     "cniVersion %s%.40s%s is not supported: knit-cni supports 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0",
			     v ? "\"" : "", v ? v : "(missing)", v ? "\"" : "");
		ret = e->code;
		goto out;
	}
	if (nc->cmd == CMD_CHECK && !netconf_version_is_1x(nc->cni_version) &&
	    strcmp(nc->cni_version, "0.4.0") != 0) {
		cnierror_set(e, CNI_ERR_INCOMPATIBLE_VERSION, "incompatible CNI version",
			     "CHECK needs cniVersion 0.4.0 or later, the configuration says %s", nc->cni_version);
		ret = e->code;
		goto out;
	}
	if ((nc->cmd == CMD_STATUS || nc->cmd == CMD_GC) && strcmp(nc->cni_version, "1.1.0") != 0) {
		cnierror_set(e, CNI_ERR_INCOMPATIBLE_VERSION, "incompatible CNI version",
			     "%s needs cniVersion 1.1.0, the configuration says %s",
			     nc->cmd == CMD_GC ? "GC" : "STATUS", nc->cni_version);
		ret = e->code;
		goto out;
	}
	if (nc->cmd == CMD_VERSION)
		return 0;
	ret = config_parse(nc, e);
out:
	if (ret) {
		/* Keep the version for the error object: the static copy, as
		 * the one in doc goes. */
		const char *v = NULL;

		for (size_t i = 0; nc->cni_version && i < netconf_nversions; i++)
			if (strcmp(nc->cni_version, netconf_versions[i]) == 0)
				v = netconf_versions[i];
		netconf_free(nc);
		nc->cni_version = v;
	}
	return ret;
}

void netconf_free(struct netconf *nc)
{
	free(nc->pod_namespace);
	free(nc->pod_name);
	free(nc->pod_uid);
	for (size_t i = 0; i < nc->ntags; i++)
		free(nc->tags[i]);
	json_free(nc->doc);
	memset(nc, 0, sizeof(*nc));
}
