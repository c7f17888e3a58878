#include "admission.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "buf.h"
#include "json.h"

#define ADMIN_GROUP "system:masters"
/* A login, as Kubernetes names its users: printable, no controls. */
#define USER_MAX 253

bool admission_request_parse(const struct json *review, struct admission_request *out, char *err,
			     size_t errlen)
{
	const struct json *req = json_get(review, "request"), *groups;
	const char *api = json_str(json_get(review, "apiVersion"));

	memset(out, 0, sizeof(*out));
	if (!api || strcmp(api, "admission.k8s.io/v1") || !json_is_object(req)) {
		errbuf_printf(err, errlen, "not an admission.k8s.io/v1 AdmissionReview request");
		return false;
	}
	out->uid = json_str(json_get(req, "uid"));
	out->kind = json_str(json_path(req, "kind", "kind", NULL));
	out->operation = json_str(json_get(req, "operation"));
	out->username = json_str(json_path(req, "userInfo", "username", NULL));
	if (!out->uid || !*out->uid || !out->kind || !out->operation) {
		errbuf_printf(err, errlen, "request.uid, request.kind.kind and request.operation are required");
		return false;
	}
	groups = json_path(req, "userInfo", "groups", NULL);
	for (size_t i = 0; groups && json_array_at(groups, i); i++) {
		const char *g = json_str(json_array_at(groups, i));
		if (g && !strcmp(g, ADMIN_GROUP))
			out->admin = true;
	}
	out->object = json_get(req, "object");
	out->old_object = json_get(req, "oldObject");
	if (out->object && !json_is_object(out->object))
		out->object = NULL;
	if (out->old_object && !json_is_object(out->old_object))
		out->old_object = NULL;
	return true;
}

struct json *admission_response(const char *uid, bool allowed, unsigned code, const char *message,
				const char *patch)
{
	struct json *root = json_new_object(), *resp = json_new_object(), *status;
	int err = 0;

	json_put_str(root, "apiVersion", "admission.k8s.io/v1", &err);
	json_put_str(root, "kind", "AdmissionReview", &err);
	json_put_str(resp, "uid", uid, &err);
	json_put(resp, "allowed", json_new_bool(allowed), &err);
	if (!allowed || message) {
		status = json_new_object();
		if (code)
			json_put_int(status, "code", code, &err);
		json_put_str(status, "message", message, &err);
		json_put(resp, "status", status, &err);
	}
	if (patch) {
		size_t n = strlen(patch), b64len = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_ORIGINAL);
		char *b64 = malloc(b64len);
		if (b64)
			sodium_bin2base64(b64, b64len, (const unsigned char *)patch, n, sodium_base64_VARIANT_ORIGINAL);
		json_put(resp, "patch", b64 ? json_new_string(b64) : NULL, &err);
		json_put_str(resp, "patchType", "JSONPatch", &err);
		free(b64);
	}
	json_put(root, "response", resp, &err);
	if (err) {
		json_free(root);
		return NULL;
	}
	return root;
}

static const char *spec_user(const struct json *obj)
{
	const char *u = json_str(json_path(obj, "spec", "user", NULL));

	return u && *u ? u : NULL;
}

/* [{"op":"add","path":"/spec/user","value":USER}], or adding /spec itself
 * when the object has none. */
static int user_patch(const struct json *obj, const char *user, char **patch)
{
	struct json *arr = json_new_array(), *op = json_new_object(), *spec;
	struct buf out = BUF_INIT(64u << 10);
	bool has_spec = json_is_object(json_get(obj, "spec"));
	int err = 0;

	json_put_str(op, "op", "add", &err);
	json_put_str(op, "path", has_spec ? "/spec/user" : "/spec", &err);
	if (has_spec) {
		json_put_str(op, "value", user, &err);
	} else {
		spec = json_new_object();
		json_put_str(spec, "user", user, &err);
		json_put(op, "value", spec, &err);
	}
	if (err || !arr) {
		json_free(op);
		err = err ? err : -ENOMEM;
		goto out;
	}
	err = json_array_append(arr, op); /* takes op on every path */
	if (err)
		goto out;
	err = json_dump(arr, &out, 0);
	if (err)
		goto out;
	*patch = strdup(buf_str(&out));
	if (!*patch)
		err = -ENOMEM;
out:
	json_free(arr);
	buf_free(&out);
	return err;
}

static bool user_ok(const char *u)
{
	size_t n = strlen(u);

	if (!n || n > USER_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)u[i] < 0x20 || u[i] == 0x7f)
			return false;
	return true;
}

int admission_authkey(const struct admission_request *r, char **patch, char *msg, size_t msglen)
{
	const char *want, *old;

	*patch = NULL;
	if (!r->object || (strcmp(r->operation, "CREATE") && strcmp(r->operation, "UPDATE")))
		return 0;
	want = spec_user(r->object);
	if (!strcmp(r->operation, "UPDATE")) {
		old = r->old_object ? spec_user(r->old_object) : NULL;
		if (!old || (want && !strcmp(want, old)))
			return 0;
		if (!want)
			return user_patch(r->object, old, patch);
		errbuf_printf(msg, msglen, "spec.user is immutable (was \"%s\"): create a new AuthKey for \"%s\"",
			      old, want);
		return -EPERM;
	}
	if (want) {
		if (!user_ok(want)) {
			errbuf_printf(msg, msglen, "spec.user must be a login of 1 to %d printable characters", USER_MAX);
			return -EPERM;
		}
		if (r->admin || (r->username && !strcmp(want, r->username)))
			return 0;
		errbuf_printf(msg, msglen,
			      "spec.user \"%s\" is not you (\"%s\"): leave it empty to make a key of your own, "
			      "or ask a cluster administrator (group " ADMIN_GROUP ") to make it",
			      want, r->username ? r->username : "?");
		return -EPERM;
	}
	if (!r->username || !user_ok(r->username)) {
		errbuf_printf(msg, msglen, "the request names no user to own this key: set spec.user");
		return -EPERM;
	}
	return user_patch(r->object, r->username, patch);
}

int admission_policy(const struct admission_request *r, admission_policy_check_fn check, void *arg,
		     char *msg, size_t msglen)
{
	const struct json *p;
	const char *text;
	char why[1024];

	if (!r->object || (strcmp(r->operation, "CREATE") && strcmp(r->operation, "UPDATE")))
		return 0;
	p = json_path(r->object, "spec", "policy", NULL);
	text = json_str(p);
	if (!text) {
		errbuf_printf(msg, msglen, "spec.policy must be the policy document, as a string");
		return -EPERM;
	}
	why[0] = '\0';
	if (check(arg, text, strlen(text), why, sizeof(why)))
		return 0;
	errbuf_printf(msg, msglen, "policy refused: %s", why[0] ? why : "invalid");
	return -EPERM;
}
