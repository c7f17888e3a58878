#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "cnierror.h"
#include "cniresult.h"
#include "json.h"
#include "knitdapi.h"
#include "plugin.h"
#include "podns.h"

static const char *cmd_name(enum netconf_cmd c)
{
	static const char *const names[] = { "ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC" };

	return names[c];
}

static int emit_json(const struct json *j, struct buf *out, struct cnierror *e)
{
	buf_reset(out);
	if (json_dump(j, out, 0) || buf_add_byte(out, '\n')) {
		buf_reset(out);
		cnierror_set(e, CNI_ERR_IO, "cannot write the result", "the result does not fit in memory");
		return e->code;
	}
	return 0;
}

/* VERSION answers whatever cniVersion it was given (SPEC.md section 5). */
static int cmd_version(const char *in, size_t len, struct buf *out, struct cnierror *e, const char **ver)
{
	struct json *doc = NULL, *o = NULL, *vs = NULL;
	const char *v = "1.1.0";
	int ret;

	if (len > 0 && (!in || !(doc = json_parse_max(in, len, NETCONF_MAX_BYTES, NULL)))) {
		cnierror_set(e, CNI_ERR_DECODE, "failed to decode version", "stdin is not JSON");
		return e->code;
	}
	if (json_str(json_get(doc, "cniVersion")) && json_str_len(json_get(doc, "cniVersion")) <= 32)
		v = json_str(json_get(doc, "cniVersion"));
	if (!(o = json_new_object()) || !(vs = json_new_array()) ||
	    json_object_set(o, "cniVersion", json_new_string(v)))
		goto nomem;
	for (size_t i = 0; i < netconf_nversions; i++)
		if (json_array_append(vs, json_new_string(netconf_versions[i])))
			goto nomem;
	ret = json_object_set(o, "supportedVersions", vs);
	vs = NULL; /* o's now, even on failure */
	if (ret)
		goto nomem;
	ret = emit_json(o, out, e);
	goto out;
nomem:
	cnierror_set(e, CNI_ERR_IO, "out of memory", "knit-cni ran out of memory");
	ret = e->code;
out:
	*ver = NULL;
	json_free(vs);
	json_free(o);
	json_free(doc);
	return ret;
}

static struct knitdapi api_of(const struct netconf *nc)
{
	return (struct knitdapi){ .socket = nc->socket, .connect_timeout_ms = nc->connect_timeout_ms };
}

/* Whether the network gives annotated pods identities (gateway mode alone
 * does not: the node's knitd advertises the pod ranges instead). */
static bool identity_mode(const struct netconf *nc)
{
	return nc->mode == MODE_IDENTITY || nc->mode == MODE_IDENTITY_GATEWAY;
}

static bool needs_identity(const struct netconf *nc)
{
	return identity_mode(nc) && nc->want_identity;
}

static int require_prev(const struct netconf *nc, struct cnierror *e)
{
	if (nc->prev_result)
		return 0;
	cnierror_set(e, CNI_ERR_INVALID_CONFIG, "invalid network configuration",
		     "no prevResult: knit-cni is a chained plugin and must come after the primary plugin "
		     "in the plugins list of the conflist (\"knit-cni install\" puts it there)");
	return e->code;
}

static int deliver_result(struct buf *out, plugin_deliver_fn deliver, struct cnierror *e)
{
	int err;

	if (!deliver)
		return 0;
	if ((err = deliver(out))) {
		cnierror_set(e, CNI_ERR_IO, "cannot write the result", "writing the result to stdout: %s",
			     strerror(-err));
		return e->code;
	}
	buf_reset(out);
	return 0;
}

static int cmd_add(const struct netconf *nc, struct buf *out, plugin_deliver_fn deliver, struct cnierror *e)
{
	struct knitdapi api = api_of(nc);
	struct knitdapi_identity id = { 0 };
	struct json *res = NULL;
	struct cnierror ignored;
	bool attached = false, absent;
	int ret;

	if ((ret = require_prev(nc, e)))
		return ret;
	if (!(res = cniresult_convert(nc->prev_result, nc->cni_version, nc->cni_version, e)))
		return e->code;
	if (!needs_identity(nc)) {
		if (!(ret = emit_json(res, out, e)))
			ret = deliver_result(out, deliver, e);
		goto out;
	}
	if (cniresult_find_interface(res, nc->pod_ifname, NULL) >= 0) {
		cnierror_set(e, KNIT_ERR_CONFLICT, "interface name taken",
			     "an earlier plugin already made an interface \"%s\": set knit-cni's \"ifName\" "
			     "in the conflist to another name",
			     nc->pod_ifname);
		ret = e->code;
		goto out;
	}
	struct knitdapi_attach_req req = {
		.containerid = nc->containerid,
		.ifname = nc->pod_ifname,
		.netns = nc->netns,
		.network = nc->name,
		.pod_namespace = nc->pod_namespace,
		.pod_name = nc->pod_name,
		.pod_uid = nc->pod_uid,
		.tags = (const char *const *)nc->tags,
		.ntags = nc->ntags,
		.hostname = nc->hostname,
	};
	if ((ret = knitdapi_attach(&api, &req, nc->add_timeout_ms, &id, &attached, e)))
		goto out; /* attached: knitd may have made it (no answer, or an unusable one) */
	attached = true;
	struct cniresult_attach a = {
		.ifname = id.interface,
		.sandbox = nc->netns,
		.addresses = (const char *const *)id.addresses,
		.naddresses = id.naddresses,
		.routes = (const char *const *)id.routes,
		.nroutes = id.nroutes,
	};
	if (cniresult_append(res, nc->cni_version, &a)) {
		cnierror_set(e, CNI_ERR_IO, "out of memory", "knit-cni ran out of memory building the result");
		ret = e->code;
		goto out;
	}
	if ((ret = emit_json(res, out, e)) || (ret = deliver_result(out, deliver, e)))
		goto out;
	fprintf(stderr, "knit-cni: %s/%s (%s): identity %s on %s\n", nc->pod_namespace ? nc->pod_namespace : "-",
		nc->pod_name ? nc->pod_name : "-", nc->containerid, id.device_name ? id.device_name : "-",
		id.interface);
out:
	if (ret && attached && knitdapi_detach(&api, nc->containerid, nc->pod_ifname, nc->del_timeout_ms, &absent,
					       &ignored))
		fprintf(stderr, "knit-cni: rolling back %s/%s failed: %s\n", nc->containerid, nc->pod_ifname,
			ignored.details);
	knitdapi_identity_free(&id);
	json_free(res);
	return ret;
}

static int cmd_del(const struct netconf *nc, struct cnierror *e)
{
	struct knitdapi api = api_of(nc);
	bool absent;
	int ret;

	/* An unannotated pod never had an identity. When the runtime did not
	 * pass annotations at all, ask knitd anyway: a missed DEL would
	 * leave the identity to the operator's backstop. */
	if (!identity_mode(nc) || (nc->have_annotations && !nc->want_identity))
		return 0;
	ret = knitdapi_detach(&api, nc->containerid, nc->pod_ifname, nc->del_timeout_ms, &absent, e);
	if (!ret && absent && nc->want_identity)
		fprintf(stderr, "knit-cni: knitd is not running; %s/%s is left to knitd's restart and the operator\n",
			nc->containerid, nc->pod_ifname);
	return ret;
}

static bool has_prefix(char *const *v, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i], s) == 0)
			return true;
	return false;
}

static int cmd_check(const struct netconf *nc, struct cnierror *e)
{
	struct knitdapi api = api_of(nc);
	struct knitdapi_identity *ids = NULL, *mine = NULL;
	const struct json *ips;
	const char **addrs = NULL;
	size_t n = 0, naddrs = 0;
	char why[512];
	bool absent;
	int ret, idx;

	if ((ret = require_prev(nc, e)))
		return ret;
	if (!needs_identity(nc))
		return 0;
	idx = cniresult_find_interface(nc->prev_result, nc->pod_ifname, nc->netns);
	if (idx < 0) {
		cnierror_set(e, KNIT_ERR_CHECK, "knit's interface is not in prevResult",
			     "prevResult has no interface %s in %s: the pod was not attached by knit-cni; "
			     "delete the pod to attach it again",
			     nc->pod_ifname, nc->netns);
		return e->code;
	}
	if ((ret = knitdapi_list(&api, nc->del_timeout_ms, &ids, &n, &absent, e)))
		goto out;
	for (size_t i = 0; i < n && !mine; i++)
		if (strcmp(ids[i].containerid, nc->containerid) == 0 && strcmp(ids[i].ifname, nc->pod_ifname) == 0)
			mine = &ids[i];
	if (!mine) {
		cnierror_set(e, KNIT_ERR_CHECK, "knitd has no identity for this pod",
			     "knitd does not carry %s/%s: the identity was removed (GC, or the Device deleted); "
			     "delete the pod to get a new one",
			     nc->containerid, nc->pod_ifname);
		ret = e->code;
		goto out;
	}
	ips = json_get(nc->prev_result, "ips");
	if (!(addrs = calloc(json_array_len(ips) + 1, sizeof(*addrs)))) {
		cnierror_set(e, CNI_ERR_IO, "out of memory", "knit-cni ran out of memory");
		ret = e->code;
		goto out;
	}
	for (size_t i = 0; i < json_array_len(ips); i++) {
		const struct json *ip = json_array_at(ips, i);
		const char *a = json_str(json_get(ip, "address"));

		if (json_int(json_get(ip, "interface"), -1) != idx || !a)
			continue;
		if (!has_prefix(mine->addresses, mine->naddresses, a)) {
			cnierror_set(e, KNIT_ERR_CHECK, "address changed",
				     "prevResult gives %s address %s, knitd's identity does not have it: "
				     "delete the pod to attach it again",
				     nc->pod_ifname, a);
			ret = e->code;
			goto out;
		}
		addrs[naddrs++] = a;
	}
	struct podns_expect x = {
		.ifname = nc->pod_ifname,
		.addresses = addrs,
		.naddresses = naddrs,
		.routes = (const char *const *)mine->routes,
		.nroutes = mine->nroutes,
	};
	ret = podns_check(nc->netns, &x, why, sizeof(why));
	if (ret == -ESRCH) {
		cnierror_set(e, KNIT_ERR_CHECK, "pod network differs from the result",
			     "%s: something in the pod changed knit's interface; delete the pod to attach it again", why);
		ret = e->code;
	} else if (ret) {
		cnierror_set(e, KNIT_ERR_NETNS, "cannot inspect the pod's netns", "%s", why);
		ret = e->code;
	}
out:
	for (size_t i = 0; i < n; i++)
		knitdapi_identity_free(&ids[i]);
	free(ids);
	free(addrs);
	return ret;
}

static int cmd_status(const struct netconf *nc, struct cnierror *e)
{
	struct knitdapi api = api_of(nc);
	struct json *st = NULL;
	const char *state;
	bool absent;
	int ret;

	if ((ret = knitdapi_status(&api, nc->del_timeout_ms, &st, &absent, e))) {
		/* knitd down: no new identities, and the pods that have one
		 * (or sit behind the gateway route) are cut off. */
		char details[sizeof(e->details)];

		memcpy(details, e->details, sizeof(details));
		cnierror_set(e, ret == CNI_ERR_TRY_AGAIN ? CNI_ERR_NOT_AVAILABLE_LIMITED : CNI_ERR_NOT_AVAILABLE,
			     "knitd is not available", "%s", details);
		ret = e->code;
		goto out;
	}
	state = json_str(json_get(st, "backendState"));
	if (!state || strcmp(state, "Running") != 0) {
		const char *health = json_str(json_get(st, "health"));

		cnierror_set(e, CNI_ERR_NOT_AVAILABLE, "knitd is not in the tailnet",
			     "knitd's state is %s%s%s: it must be Running (knit status on the node; "
			     "NeedsLogin means its auth key is missing or refused)",
			     state ? state : "(unknown)", health ? ": " : "", health ? health : "");
		ret = e->code;
	}
out:
	json_free(st);
	return ret;
}

static bool attachment_valid(const struct json *valid, const char *cid, const char *ifname)
{
	for (size_t i = 0; i < json_array_len(valid); i++) {
		const struct json *a = json_array_at(valid, i);
		const char *c = json_str(json_get(a, "containerID")), *f = json_str(json_get(a, "ifname"));

		if (c && f && strcmp(c, cid) == 0 && strcmp(f, ifname) == 0)
			return true;
	}
	return false;
}

static int cmd_gc(const struct netconf *nc, struct cnierror *e)
{
	struct knitdapi api = api_of(nc);
	struct knitdapi_identity *ids = NULL;
	const struct json *valid;
	struct cnierror first = { 0 }, one;
	size_t n = 0, failed = 0, removed = 0;
	bool absent;
	int ret;

	/* libcni sends both keys: the spec's text said cni.dev/attachments,
	 * its types say cni.dev/valid-attachments (cni#1101). */
	valid = json_get(nc->doc, "cni.dev/valid-attachments");
	if (!valid)
		valid = json_get(nc->doc, "cni.dev/attachments");
	if (valid && !json_is_array(valid)) {
		cnierror_set(e, CNI_ERR_DECODE, "failed to decode cni.dev/valid-attachments",
			     "cni.dev/valid-attachments must be an array of {containerID, ifname}");
		return e->code;
	}
	if (!identity_mode(nc))
		return 0;
	if ((ret = knitdapi_list(&api, nc->del_timeout_ms, &ids, &n, &absent, e))) {
		if (absent) {
			fprintf(stderr, "knit-cni: GC: knitd is not running, nothing to collect now\n");
			ret = 0;
		}
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		if (!ids[i].network || strcmp(ids[i].network, nc->name) != 0 ||
		    attachment_valid(valid, ids[i].containerid, ids[i].ifname))
			continue;
		if (knitdapi_detach(&api, ids[i].containerid, ids[i].ifname, nc->del_timeout_ms, &absent, &one)) {
			if (failed++ == 0)
				first = one;
			continue;
		}
		removed++;
	}
	if (removed)
		fprintf(stderr, "knit-cni: GC removed %zu stale identities\n", removed);
	if (failed) {
		cnierror_set(e, KNIT_ERR_GC, "GC could not remove every stale identity",
			     "%zu of %zu stale identities remain; the first failure: %s", failed, failed + removed,
			     first.details);
		ret = e->code;
	}
out:
	for (size_t i = 0; i < n; i++)
		knitdapi_identity_free(&ids[i]);
	free(ids);
	return ret;
}

int plugin_run(const struct netconf_env *env, const char *in, size_t len, struct buf *out,
	       plugin_deliver_fn deliver)
{
	struct netconf nc;
	struct cnierror e = { 0 };
	enum netconf_cmd cmd;
	const char *ver = NULL;
	int ret;

	buf_reset(out);
	if (netconf_command_parse(env->command, &cmd) && cmd == CMD_VERSION) {
		ret = cmd_version(in, len, out, &e, &ver);
		goto out;
	}
	if ((ret = netconf_parse(&nc, env, in, len, &e))) {
		ver = nc.cni_version;
		goto out;
	}
	switch (nc.cmd) {
	case CMD_ADD:
		ret = cmd_add(&nc, out, deliver, &e);
		break;
	case CMD_DEL:
		ret = cmd_del(&nc, &e);
		break;
	case CMD_CHECK:
		ret = cmd_check(&nc, &e);
		break;
	case CMD_STATUS:
		ret = cmd_status(&nc, &e);
		break;
	case CMD_GC:
		ret = cmd_gc(&nc, &e);
		break;
	case CMD_VERSION:
		break;
	}
	/* netconf_free drops the string; the static one stays. */
	for (size_t i = 0; i < netconf_nversions; i++)
		if (strcmp(nc.cni_version, netconf_versions[i]) == 0)
			ver = netconf_versions[i];
	if (ret)
		fprintf(stderr, "knit-cni: %s %s: %s: %s\n", cmd_name(nc.cmd), nc.containerid ? nc.containerid : "",
			e.msg, e.details);
	netconf_free(&nc);
out:
	if (!ret)
		return 0;
	if (cnierror_dump(&e, ver, out))
		buf_reset(out);
	return 1;
}
