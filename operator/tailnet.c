/* Tailnet reconciler: validates the pools and reports how many devices
 * and addresses the tailnet holds. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "coord.h"
#include "ipam.h"
#include "json.h"
#include "kube/informer.h"
#include "kube/meta.h"
#include "operator.h"
#include "tailnet.h"

bool tailnet_authkey_namespace_allowed(const struct json *tn, const char *ns, const char *operator_ns)
{
	const struct json *list = json_path(tn, "spec", "authKeyNamespaces", NULL);

	if (!ns)
		return false;
	if (!json_is_array(list))
		return operator_ns && strcmp(ns, operator_ns) == 0;
	for (size_t i = 0; i < json_array_len(list); i++)
		if (json_str(json_array_at(list, i)) && strcmp(json_str(json_array_at(list, i)), ns) == 0)
			return true;
	return false;
}

void tailnet_desired_status(const struct json *tn, const struct tailnet_facts *f, time_t now, struct json *status)
{
	struct ipam_pool p4, p6;
	char err4[256] = "", err6[256] = "", msg[600];
	int64_t gen = kube_generation(tn);
	bool ok4, ok6;

	ok4 = ipam_pool_parse(json_str(json_path(tn, "spec", "ipv4Pool", NULL)) ?: OPERATOR_DEFAULT_IPV4_POOL, &p4, err4,
			      sizeof(err4));
	ok6 = ipam_pool_parse(json_str(json_path(tn, "spec", "ipv6Pool", NULL)) ?: OPERATOR_DEFAULT_IPV6_POOL, &p6, err6,
			      sizeof(err6));
	if (ok4 && p4.family != AF_INET) {
		ok4 = false;
		snprintf(err4, sizeof(err4), "ipv4Pool is not an IPv4 CIDR");
	}
	if (ok6 && p6.family != AF_INET6) {
		ok6 = false;
		snprintf(err6, sizeof(err6), "ipv6Pool is not an IPv6 CIDR");
	}
	json_object_set(status, "devices", json_new_int(f->devices > 0 ? f->devices : 0));
	if (f->control_key)
		json_object_set(status, "controlKey", json_new_string(f->control_key));
	json_object_set(status, "ipv4Allocated", json_new_int(f->ipv4_allocated > 0 ? f->ipv4_allocated : 0));
	json_object_set(status, "ipv6Allocated", json_new_int(f->ipv6_allocated > 0 ? f->ipv6_allocated : 0));
	if (ok4 && ok6) {
		kube_condition_set(status, "Ready", "True", "PoolsValid", "address pools are valid", gen, now);
	} else {
		snprintf(msg, sizeof(msg), "%s%s%s", err4, *err4 && *err6 ? "; " : "", err6);
		kube_condition_set(status, "Ready", "False", "InvalidPool", msg, gen, now);
	}
	json_object_set(status, "observedGeneration", json_new_int(gen));
}

int tailnet_reconcile(struct operator *op, const char *ns, const char *name, uint64_t *requeue_ms)
{
	struct json *tn = informer_get(op->tailnets, NULL, name), *status;
	struct tailnet_facts f = { 0 };
	int err;

	if (!tn || kube_deleting(tn)) {
		json_free(tn);
		return 0;
	}
	status = json_clone(json_get(tn, "status"));
	if (!status && !(status = json_new_object())) {
		json_free(tn);
		return -ENOMEM;
	}
	f.devices = informer_index_count(op->devices, OPERATOR_INDEX_TAILNET, name);
	f.ipv4_allocated = informer_index_count(op->claims, OPERATOR_INDEX_TAILNET4, name);
	f.ipv6_allocated = informer_index_count(op->claims, OPERATOR_INDEX_TAILNET6, name);
	f.control_key = coord_ready(op->coord) ? coord_control_key(op->coord) : NULL;
	tailnet_desired_status(tn, &f, time(NULL), status);
	err = operator_update_status(op, &res_tailnets, tn, status);
	if (err == -EAGAIN) {
		*requeue_ms = 1;
		err = 0;
	}
	json_free(tn);
	return err;
}
