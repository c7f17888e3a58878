/* Policy reconciler: validates a Policy, runs its tests against the
 * tailnet's Devices, and puts it in force only when both hold; the store
 * of policies in force that netmaps and registrations read. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coord.h"
#include "json.h"
#include "kube/informer.h"
#include "kube/meta.h"
#include "log.h"
#include "operator.h"
#include "policy.h"

/* ---- pure ---- */

int policy_device_from_json(const struct json *dev, struct policy_device *out, const char **tags,
			    struct policy_prefix *routes)
{
	const struct json *spec = json_get(dev, "spec");
	const struct json *addrs = json_path(dev, "status", "addresses", NULL);
	const struct json *tv = json_get(spec, "tags"), *rv = json_get(spec, "advertisedRoutes");
	const struct json *pod = json_get(spec, "ownerPod");

	memset(out, 0, sizeof(*out));
	out->name = kube_name(dev);
	out->user = json_str(json_get(spec, "user"));
	if (!out->name || json_array_len(addrs) > POLICY_MAX_ADDRS || json_array_len(tv) > POLICY_DEVICE_MAX_TAGS ||
	    json_array_len(rv) > POLICY_DEVICE_MAX_ROUTES)
		return -EINVAL;
	for (size_t k = 0; k < json_array_len(addrs); k++) {
		struct policy_prefix *a = &out->addrs[out->n_addrs];

		if (!policy_prefix_parse(json_str(json_array_at(addrs, k)) ?: "", a) ||
		    a->bits != (a->family == 4 ? 32 : 128))
			return -EINVAL;
		out->n_addrs++;
	}
	for (size_t k = 0; k < json_array_len(tv); k++)
		if (!(tags[k] = json_str(json_array_at(tv, k))))
			return -EINVAL;
	out->tags = tags;
	out->n_tags = json_array_len(tv);
	if (out->n_tags)
		out->user = NULL; /* a tagged device has no user */
	for (size_t k = 0; k < json_array_len(rv); k++)
		if (!policy_prefix_parse(json_str(json_array_at(rv, k)) ?: "", &routes[k]))
			return -EINVAL;
	out->routes = routes;
	out->n_routes = json_array_len(rv);
	if (pod) {
		out->pod = true;
		out->pod_namespace = json_str(json_get(pod, "namespace"));
		out->pod_serviceaccount = json_str(json_get(pod, "serviceAccount"));
	}
	return 0;
}

int policy_net_add_devices(struct policy_net *net, const struct json *devs)
{
	struct policy_prefix *routes = calloc(POLICY_DEVICE_MAX_ROUTES, sizeof(*routes));
	const char *tags[POLICY_DEVICE_MAX_TAGS];
	int ret = routes ? 0 : -ENOMEM;

	for (size_t i = 0; !ret && i < json_array_len(devs); i++) {
		struct policy_device d;

		if (policy_device_from_json(json_array_at(devs, i), &d, tags, routes))
			continue;
		ret = policy_net_add(net, &d, NULL);
		if (ret == -EEXIST || ret == -EINVAL)
			ret = 0; /* skipped: the compiler cannot take it */
	}
	free(routes);
	return ret;
}

bool policy_check_text(const char *text, size_t len, const struct json *devs, struct policy **out, bool *valid,
		       char *err, size_t errlen)
{
	struct json_error jerr = { 0 };
	struct policy *p = policy_parse(text, len, &jerr);
	struct policy_net *net = NULL;
	bool ok = false;

	*valid = p != NULL;
	if (!p) {
		snprintf(err, errlen, "%zu:%zu: %s", jerr.line, jerr.column, jerr.msg);
		goto out;
	}
	/* The net is for the tests alone: at 10,000 Devices, building it for
	 * a policy without tests was a tenth of a change's time. */
	if (devs && policy_has_tests(p)) {
		net = policy_net_new(p);
		if (!net || policy_net_add_devices(net, devs)) {
			snprintf(err, errlen, "out of memory compiling the policy");
			goto out;
		}
	}
	if (!policy_tests_run(p, net, &jerr)) {
		snprintf(err, errlen, "%zu:%zu: %s", jerr.line, jerr.column, jerr.msg);
		goto out;
	}
	ok = true;
out:
	policy_net_free(net);
	if (ok && out)
		*out = p;
	else
		policy_free(p);
	return ok;
}

bool policy_desired_status(const struct json *obj, const struct json *devs, time_t now, struct json *status,
			   struct policy **out)
{
	const char *text = json_str(json_path(obj, "spec", "policy", NULL));
	int64_t gen = kube_generation(obj);
	char why[1024] = "";
	bool valid = false, ok = false;

	*out = NULL;
	if (!text)
		snprintf(why, sizeof(why), "spec.policy must be the policy document, as a string");
	else
		ok = policy_check_text(text, strlen(text), devs, out, &valid, why, sizeof(why));
	if (!valid) {
		kube_condition_set(status, "Valid", "False", "ParseError", why, gen, now);
		kube_condition_set(status, "TestsPassed", "Unknown", "NotValid", "the policy does not parse", gen,
				   now);
	} else {
		kube_condition_set(status, "Valid", "True", "Parsed", "the policy is valid", gen, now);
		if (ok)
			kube_condition_set(status, "TestsPassed", "True", "AllTestsPassed", "every test holds", gen,
					   now);
		else
			kube_condition_set(status, "TestsPassed", "False", "TestFailed", why, gen, now);
	}
	json_object_set(status, "observedGeneration", json_new_int(gen));
	if (ok) {
		/* Kept so a restarted operator puts the last good one back in
		 * force when the current generation is refused. */
		json_object_set(status, "appliedGeneration", json_new_int(gen));
		json_object_set(status, "appliedPolicy", json_new_string(text));
	}
	return ok;
}

static bool json_strv_has(const struct json *a, const char *s)
{
	for (size_t k = 0; k < json_array_len(a); k++)
		if (!strcmp(json_str(json_array_at(a, k)) ?: "", s))
			return true;
	return false;
}

int policy_tags_permitted(const struct policy *p, const char *key_user, const struct json *key_tags,
			  const struct json *tags, char *why, size_t whylen)
{
	const char *ktags[POLICY_DEVICE_MAX_TAGS];
	struct policy_device who = { .name = "registration" };
	char owners[512];

	for (size_t k = 0; k < json_array_len(key_tags) && k < POLICY_DEVICE_MAX_TAGS; k++)
		ktags[who.n_tags++] = json_str(json_array_at(key_tags, k)) ?: "";
	who.tags = ktags;
	who.user = who.n_tags ? NULL : key_user;
	for (size_t i = 0; i < json_array_len(tags); i++) {
		const char *tag = json_str(json_array_at(tags, i)) ?: "";

		if (json_strv_has(key_tags, tag) || policy_tag_allowed(p, tag, &who))
			continue;
		if (!policy_tag_owners(p, tag, owners, sizeof(owners)))
			snprintf(why, whylen, "tag %s is not in the policy's tagOwners: nobody may claim it", tag);
		else
			snprintf(why, whylen, "tag %s needs one of its owners (%s) in tagOwners; the registering identity (%s) is none of them",
				 tag, *owners ? owners : "none",
				 who.n_tags ? "the auth key's tags" : key_user && *key_user ? key_user : "a key without user");
		return -EPERM;
	}
	return 0;
}

struct json *policy_auto_approved(const struct policy *p, const struct json *dev)
{
	struct policy_prefix *routes = calloc(POLICY_DEVICE_MAX_ROUTES, sizeof(*routes));
	const char *tags[POLICY_DEVICE_MAX_TAGS];
	struct policy_routes r = { 0 };
	struct policy_net *net = NULL;
	struct policy_device d;
	struct json *out = NULL;
	char cidr[64];

	if (!routes || policy_device_from_json(dev, &d, tags, routes) || !(net = policy_net_new(p)) ||
	    policy_net_add(net, &d, NULL) || policy_net_routes(net, d.name, &r) || !(out = json_new_array()))
		goto out;
	for (size_t i = 0; i < r.n_approved; i++) {
		if (!policy_prefix_format(&r.approved[i], cidr, sizeof(cidr)) ||
		    json_array_append(out, json_new_string(cidr))) {
			json_free(out);
			out = NULL;
			goto out;
		}
	}
out:
	policy_routes_free(&r);
	policy_net_free(net);
	free(routes);
	return out;
}

static bool device_compilable(const struct json *dev)
{
	struct policy_prefix *routes = calloc(POLICY_DEVICE_MAX_ROUTES, sizeof(*routes));
	const char *tags[POLICY_DEVICE_MAX_TAGS];
	struct policy_device d;
	bool ok = routes && policy_device_from_json(dev, &d, tags, routes) == 0;

	free(routes);
	return ok;
}

static bool strv_has(const char *const *v, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(v[i], s))
			return true;
	return false;
}

/* The annotation's comma-separated list, split in place into v. */
static size_t split_routes(char *list, const char **v, size_t max)
{
	size_t n = 0;

	for (char *save = NULL, *t = strtok_r(list, ",", &save); t && n < max; t = strtok_r(NULL, ",", &save))
		v[n++] = t;
	return n;
}

struct json *policy_routes_patch(const struct policy *p, const struct json *dev, int *err)
{
	const struct json *approved = json_path(dev, "spec", "approvedRoutes", NULL);
	const char *ann = json_str(json_path(dev, "metadata", "annotations", POLICY_AUTO_ROUTES_ANNOTATION, NULL));
	const char *prev[POLICY_DEVICE_MAX_ROUTES], *admin[POLICY_DEVICE_MAX_ROUTES], *mine[POLICY_DEVICE_MAX_ROUTES];
	size_t n_prev, n_admin = 0, n_mine = 0;
	struct json *now = NULL, *want = NULL, *patch = NULL, *spec = NULL, *meta = NULL, *anns = NULL;
	char *list = strdup(ann ? ann : ""), annv[POLICY_DEVICE_MAX_ROUTES * 44 + 1] = "";
	bool same;

	*err = 0;
	if (!list) {
		*err = -ENOMEM;
		goto out;
	}
	if (!json_array_len(json_path(dev, "spec", "advertisedRoutes", NULL)) && !ann)
		goto out; /* nothing to approve, nothing approved before */
	/* NULL from policy_auto_approved: out of memory, or a Device the
	 * compiler refuses (which then has nothing approved automatically). */
	if (p && !(now = policy_auto_approved(p, dev)) && (device_compilable(dev) || !(now = json_new_array()))) {
		*err = -ENOMEM;
		goto out;
	}
	n_prev = split_routes(list, prev, POLICY_DEVICE_MAX_ROUTES);
	/* An admin's approvals are those the operator did not add. */
	for (size_t i = 0; i < json_array_len(approved) && n_admin < POLICY_DEVICE_MAX_ROUTES; i++) {
		const char *r = json_str(json_array_at(approved, i));

		if (r && !strv_has(prev, n_prev, r) && !strv_has(admin, n_admin, r))
			admin[n_admin++] = r;
	}
	for (size_t i = 0; i < json_array_len(now) && n_mine < POLICY_DEVICE_MAX_ROUTES; i++) {
		const char *r = json_str(json_array_at(now, i));

		if (r && !strv_has(admin, n_admin, r) && !strv_has(mine, n_mine, r))
			mine[n_mine++] = r;
	}
	want = json_new_array();
	if (!want) {
		*err = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n_admin + n_mine && !*err; i++)
		*err = json_array_append(want, json_new_string(i < n_admin ? admin[i] : mine[i - n_admin]));
	for (size_t i = 0; i < n_mine; i++) {
		size_t len = strlen(annv);

		snprintf(annv + len, sizeof(annv) - len, "%s%s", i ? "," : "", mine[i]);
	}
	if (*err)
		goto out;
	same = (approved ? json_equal(want, approved) : json_array_len(want) == 0) && !strcmp(ann ? ann : "", annv);
	if (same)
		goto out;
	patch = json_new_object();
	spec = json_new_object();
	meta = json_new_object();
	anns = json_new_object();
	if (!patch || !spec || !meta || !anns) {
		*err = -ENOMEM;
		goto out;
	}
	json_put(anns, POLICY_AUTO_ROUTES_ANNOTATION, *annv ? json_new_string(annv) : json_new_null(), err);
	json_put(meta, "annotations", anns, err);
	anns = NULL;
	json_put(patch, "metadata", meta, err);
	meta = NULL;
	json_put(spec, "approvedRoutes", want, err);
	want = NULL;
	json_put(patch, "spec", spec, err);
	spec = NULL;
	if (*err) {
		json_free(patch);
		patch = NULL;
	}
out:
	json_free(anns);
	json_free(meta);
	json_free(spec);
	json_free(want);
	json_free(now);
	free(list);
	return patch;
}

/* ---- the store ---- */

struct policy_slot {
	char tailnet[254];
	struct policy_ref *ref;
	struct policy_slot *next;
};

struct policy_store {
	pthread_mutex_t lock;
	struct policy_slot *slots;
	uint64_t version;
};

struct policy_store *policy_store_new(void)
{
	struct policy_store *s = calloc(1, sizeof(*s));

	if (s)
		pthread_mutex_init(&s->lock, NULL);
	return s;
}

static void ref_put_locked(struct policy_ref *r)
{
	if (r && --r->refs == 0) {
		policy_free(r->p);
		free(r);
	}
}

void policy_store_free(struct policy_store *s)
{
	if (!s)
		return;
	for (struct policy_slot *n, *sl = s->slots; sl; sl = n) {
		n = sl->next;
		ref_put_locked(sl->ref);
		free(sl);
	}
	pthread_mutex_destroy(&s->lock);
	free(s);
}

int policy_store_set(struct policy_store *s, const char *tailnet, const char *name, int64_t gen, struct policy *p)
{
	struct policy_ref *r = calloc(1, sizeof(*r));
	struct policy_slot *sl;

	if (!r) {
		policy_free(p);
		return -ENOMEM;
	}
	r->p = p;
	r->refs = 1;
	r->generation = gen;
	snprintf(r->name, sizeof(r->name), "%s", name);
	pthread_mutex_lock(&s->lock);
	for (sl = s->slots; sl && strcmp(sl->tailnet, tailnet) != 0; sl = sl->next)
		;
	if (!sl && (sl = calloc(1, sizeof(*sl)))) {
		snprintf(sl->tailnet, sizeof(sl->tailnet), "%s", tailnet);
		sl->next = s->slots;
		s->slots = sl;
	}
	if (!sl) {
		pthread_mutex_unlock(&s->lock);
		policy_free(p);
		free(r);
		return -ENOMEM;
	}
	ref_put_locked(sl->ref);
	sl->ref = r;
	s->version++;
	pthread_mutex_unlock(&s->lock);
	return 0;
}

bool policy_store_drop(struct policy_store *s, const char *name, char *tailnet, size_t tailnet_len)
{
	bool found = false;

	pthread_mutex_lock(&s->lock);
	for (struct policy_slot **pp = &s->slots; *pp; pp = &(*pp)->next) {
		struct policy_slot *sl = *pp;

		if (strcmp(sl->ref->name, name) != 0)
			continue;
		snprintf(tailnet, tailnet_len, "%s", sl->tailnet);
		*pp = sl->next;
		ref_put_locked(sl->ref);
		free(sl);
		s->version++;
		found = true;
		break;
	}
	pthread_mutex_unlock(&s->lock);
	return found;
}

struct policy_ref *policy_store_get(struct policy_store *s, const char *tailnet)
{
	struct policy_ref *r = NULL;

	if (!s)
		return NULL;
	pthread_mutex_lock(&s->lock);
	for (struct policy_slot *sl = s->slots; sl; sl = sl->next)
		if (!strcmp(sl->tailnet, tailnet)) {
			r = sl->ref;
			r->refs++;
			break;
		}
	pthread_mutex_unlock(&s->lock);
	return r;
}

void policy_store_put(struct policy_store *s, struct policy_ref *r)
{
	if (!s || !r)
		return;
	pthread_mutex_lock(&s->lock);
	ref_put_locked(r);
	pthread_mutex_unlock(&s->lock);
}

uint64_t policy_store_version(struct policy_store *s)
{
	uint64_t v;

	if (!s)
		return 0;
	pthread_mutex_lock(&s->lock);
	v = s->version;
	pthread_mutex_unlock(&s->lock);
	return v;
}

/* ---- the reconciler ---- */

struct collect_arg {
	struct json *arr;
	int err;
};

static void collect(const struct json *dev, void *arg)
{
	struct collect_arg *a = arg;

	if (!a->err && json_array_append(a->arr, json_clone(dev)))
		a->err = -ENOMEM;
}

/* The tailnet's Devices (NULL: every Device) as a JSON array. */
static struct json *tailnet_devices(struct operator *op, const char *tailnet)
{
	struct collect_arg a = { .arr = json_new_array() };

	if (!a.arr)
		return NULL;
	if (tailnet)
		informer_foreach_indexed(op->devices, OPERATOR_INDEX_TAILNET, tailnet, collect, &a);
	else
		informer_foreach(op->devices, collect, &a);
	if (a.err) {
		json_free(a.arr);
		return NULL;
	}
	return a.arr;
}

/* autoApprovers, level-triggered: every Device of the tailnet gets the
 * route approvals the policy in force gives (none without a policy). A
 * merge patch with the resourceVersion read: a Device that changed
 * meanwhile is a conflict, and the reconcile runs again. The patches are
 * worked out on the informer's Devices in place (most need none: no
 * copy of 10,000 Devices per change) and sent after. */
struct route_patch {
	char name[254];
	struct json *patch;
	struct route_patch *next;
};

struct routes_arg {
	const struct policy *p;
	struct route_patch *list;
	int err;
};

static void route_patch_one(const struct json *dev, void *arg)
{
	struct routes_arg *a = arg;
	struct json *patch;
	struct route_patch *rp;

	if (a->err || !(patch = policy_routes_patch(a->p, dev, &a->err)))
		return;
	json_put_str(json_get(patch, "metadata"), "resourceVersion",
		     json_str(json_path(dev, "metadata", "resourceVersion", NULL)), &a->err);
	if (a->err || !(rp = calloc(1, sizeof(*rp)))) {
		a->err = a->err ? a->err : -ENOMEM;
		json_free(patch);
		return;
	}
	snprintf(rp->name, sizeof(rp->name), "%s", kube_name(dev) ?: "");
	rp->patch = patch;
	rp->next = a->list;
	a->list = rp;
}

static int routes_reconcile(struct operator *op, const char *tailnet, uint64_t *requeue_ms)
{
	struct policy_ref *ref = policy_store_get(op->policies, tailnet);
	struct routes_arg a = { .p = ref ? ref->p : NULL };
	int err;

	informer_foreach_indexed(op->devices, OPERATOR_INDEX_TAILNET, tailnet, route_patch_one, &a);
	err = a.err;
	while (a.list) {
		struct route_patch *rp = a.list;
		struct kube_result r = { 0 };

		a.list = rp->next;
		if (!err)
			err = kube_patch(op->kube, &res_devices, NULL, rp->name, KUBE_PATCH_MERGE, rp->patch, false, &r);
		if (!err && r.status == 409) {
			*requeue_ms = 1000;
		} else if (!err && !kube_ok(&r)) {
			log_warn("policy: cannot update a device's approved routes", "device=%s status=%ld message=\"%s\"",
				 rp->name, r.status, r.message);
			*requeue_ms = 5000;
		} else if (!err) {
			log_info("policy: autoApprovers changed a device's approved routes", "device=%s routes=%s",
				 rp->name,
				 json_str(json_path(rp->patch, "metadata", "annotations", POLICY_AUTO_ROUTES_ANNOTATION, NULL)) ?: "");
		}
		kube_result_clear(&r);
		json_free(rp->patch);
		free(rp);
	}
	policy_store_put(op->policies, ref);
	return err;
}

/* The Devices for a policy's tests: copied only when its text might have
 * `tests` (the key is spelled "tests" unless escapes spell it, so text
 * with neither has none); else an empty list. NULL on ENOMEM. */
static struct json *devices_for_tests(struct operator *op, const char *tailnet, const char *text)
{
	if (text && !strstr(text, "tests") && !strstr(text, "\\u"))
		return json_new_array();
	return tailnet_devices(op, tailnet);
}

int policy_reconcile(struct operator *op, const char *ns, const char *name, uint64_t *requeue_ms)
{
	struct json *obj = informer_get(op->policies_inf, NULL, name), *status = NULL, *devs = NULL;
	struct policy_ref *cur = NULL;
	struct policy *p = NULL;
	const char *tailnet;
	char was[254];
	int err = 0;

	if (!obj || kube_deleting(obj)) {
		if (policy_store_drop(op->policies, name, was, sizeof(was))) {
			log_info("policy no longer in force: the tailnet is allow-all", "policy=%s tailnet=%s", name,
				 was);
			coord_policy_changed(op->coord, was);
			err = routes_reconcile(op, was, requeue_ms);
		}
		goto out;
	}
	tailnet = operator_tailnet_of(obj);
	status = json_clone(json_get(obj, "status"));
	devs = devices_for_tests(op, tailnet, json_str(json_path(obj, "spec", "policy", NULL)));
	if ((!status && !(status = json_new_object())) || !devs) {
		err = -ENOMEM;
		goto out;
	}
	if (policy_desired_status(obj, devs, time(NULL), status, &p)) {
		cur = policy_store_get(op->policies, tailnet);
		if (cur && !strcmp(cur->name, name) && cur->generation == kube_generation(obj)) {
			policy_free(p); /* already in force */
		} else {
			err = policy_store_set(op->policies, tailnet, name, kube_generation(obj), p);
			if (err)
				goto out;
			log_info("policy in force", "policy=%s tailnet=%s generation=%lld", name, tailnet,
				 (long long)kube_generation(obj));
			coord_policy_changed(op->coord, tailnet);
		}
	} else {
		const struct json *c = json_get(status, "conditions");
		const char *last = json_str(json_get(status, "appliedPolicy"));
		bool valid;

		/* Refused, and nothing in force (a restarted operator): the last
		 * good generation, kept in the status, goes back in force. */
		cur = policy_store_get(op->policies, tailnet);
		if (!cur && last && !json_array_len(devs)) {
			json_free(devs);
			if (!(devs = devices_for_tests(op, tailnet, last))) {
				err = -ENOMEM;
				goto out;
			}
		}
		if (!cur && last && policy_check_text(last, strlen(last), devs, &p, &valid, NULL, 0)) {
			err = policy_store_set(op->policies, tailnet, name,
					       json_int(json_get(status, "appliedGeneration"), 0), p);
			if (err)
				goto out;
			log_info("policy refused; its last good generation is back in force", "policy=%s tailnet=%s", name,
				 tailnet);
			coord_policy_changed(op->coord, tailnet);
		}

		for (size_t i = 0; i < json_array_len(c); i++) {
			const struct json *ci = json_array_at(c, i);

			if (!strcmp(json_str(json_get(ci, "status")) ?: "", "False"))
				log_warn("policy refused: the last good one stays in force", "policy=%s reason=%s message=\"%s\"",
					 name, json_str(json_get(ci, "reason")) ?: "",
					 json_str(json_get(ci, "message")) ?: "");
		}
	}
	err = routes_reconcile(op, tailnet, requeue_ms);
	if (err)
		goto out;
	err = operator_update_status(op, &res_policies, obj, status);
	status = NULL;
	if (err == -EAGAIN) {
		*requeue_ms = 1;
		err = 0;
	}
out:
	policy_store_put(op->policies, cur);
	json_free(status);
	json_free(devs);
	json_free(obj);
	return err;
}

bool policy_admission_check(void *arg, const char *text, size_t len, char *err, size_t errlen)
{
	struct operator *op = arg;
	struct json *devs = op->devices ? tailnet_devices(op, NULL) : NULL;
	bool valid, ok = policy_check_text(text, len, devs, NULL, &valid, err, errlen);

	json_free(devs);
	return ok;
}
