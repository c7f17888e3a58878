#include "operator.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "json.h"
#include "kube/event.h"
#include "kube/meta.h"
#include "log.h"

const struct kube_resource res_tailnets = { "knit.dev", "v1alpha1", "tailnets", "Tailnet", false };
const struct kube_resource res_authkeys = { "knit.dev", "v1alpha1", "authkeys", "AuthKey", true };
const struct kube_resource res_policies = { "knit.dev", "v1alpha1", "policies", "Policy", false };
const struct kube_resource res_devices = { "knit.dev", "v1alpha1", "devices", "Device", false };
const struct kube_resource res_addressclaims = { "knit.dev", "v1alpha1", "addressclaims", "AddressClaim", false };

const char *operator_tailnet_of(const struct json *obj)
{
	return json_str(json_path(obj, "spec", "tailnet", NULL)) ?: "default";
}

int operator_update_status(struct operator *op, const struct kube_resource *res,
			   const struct json *current, struct json *desired_status)
{
	struct kube_result r;
	struct json *obj;
	int err;

	if (json_equal(json_get(current, "status"), desired_status)) {
		json_free(desired_status);
		return 0;
	}
	obj = json_clone(current);
	if (!obj || json_object_set(obj, "status", desired_status)) {
		json_free(obj);
		return -ENOMEM;
	}
	/* PUT carries metadata.resourceVersion: a concurrent writer makes it 409. */
	err = kube_update(op->kube, res, kube_namespace(obj), obj, true, &r);
	if (!err && r.status == 409)
		err = -EAGAIN;
	else if (!err && r.status == 404)
		err = 0; /* deleted meanwhile: nothing to report on */
	else if (!err && !kube_ok(&r)) {
		log_warn("status update refused", "kind=%s name=%s status=%ld reason=%s message=\"%s\"",
			 res->kind, kube_name(obj), r.status, r.reason, r.message);
		err = -EIO;
	}
	kube_result_clear(&r);
	json_free(obj);
	return err;
}

void operator_event(struct operator *op, const struct json *obj, bool warning, const char *reason,
		    const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	int err;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	err = kube_event_emit(op->kube, obj, warning ? "Warning" : "Normal", reason, "%s", msg);
	if (err)
		log_warn("cannot record event", "reason=%s err=%d", reason, err);
}
