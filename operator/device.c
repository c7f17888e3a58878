/* Device reconciler: gives every Device one address from each of its
 * Tailnet's pools, marks key expiry, and removes ephemeral devices that
 * stayed offline past the inactivity timeout.
 *
 * An address is allocated by creating an AddressClaim named after it: the
 * API server refuses a second object of that name, so an address is never
 * handed out twice, whether by racing workers, two operators or an
 * operator that restarted and forgot everything. The claim is owned by
 * the Device, so deleting the Device frees the address. status.addresses
 * only mirrors the claims; a claim whose status write was lost is found
 * again through the claims index and reused, and surplus claims from a
 * race are deleted. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ipam.h"
#include "json.h"
#include "kube/informer.h"
#include "kube/meta.h"
#include "log.h"
#include "operator.h"
#include "device.h"

#define MAX_CLAIM_CONFLICTS 256 /* API refusals before giving up for this round */

struct claim_ref {
	char name[300];
	char address[64];
	char uid[64];
	int family;
};

struct claims {
	struct claim_ref items[16];
	int n;
	const char *tailnet;
	/* Claims the device holds in other tailnets (it moved): released. */
	const char *uid;
	struct claim_ref other[16];
	int nother;
};

static void collect_claim(const struct json *claim, void *arg)
{
	struct claims *c = arg;
	const char *addr = json_str(json_path(claim, "spec", "address", NULL));
	const char *tn = json_str(json_path(claim, "spec", "tailnet", NULL));
	unsigned char buf[16];
	struct claim_ref *r;

	if (!addr || !tn)
		return;
	if (strcmp(tn, c->tailnet) != 0) {
		if (c->nother >= (int)(sizeof(c->other) / sizeof(c->other[0])) || !c->uid || !kube_owned_by(claim, c->uid))
			return;
		r = &c->other[c->nother++];
		snprintf(r->name, sizeof(r->name), "%s", kube_name(claim) ?: "");
		snprintf(r->address, sizeof(r->address), "%s", addr);
		snprintf(r->uid, sizeof(r->uid), "%s", kube_uid(claim) ?: "");
		return;
	}
	if (c->n >= (int)(sizeof(c->items) / sizeof(c->items[0])))
		return;
	r = &c->items[c->n];
	r->family = inet_pton(AF_INET, addr, buf) == 1 ? AF_INET : AF_INET6;
	snprintf(r->name, sizeof(r->name), "%s", kube_name(claim) ?: "");
	snprintf(r->address, sizeof(r->address), "%s", addr);
	snprintf(r->uid, sizeof(r->uid), "%s", kube_uid(claim) ?: "");
	c->n++;
}

static struct json *new_claim(const struct json *dev, const char *claim_name, const char *tailnet,
			      const char *addr)
{
	struct json *c = json_new_object(), *meta = json_new_object(), *spec = json_new_object(),
		    *refs = json_new_array(), *labels = json_new_object();

	if (!c || !meta || !spec || !refs || !labels ||
	    json_object_set(c, "apiVersion", json_new_string(KNIT_API_VERSION)) ||
	    json_object_set(c, "kind", json_new_string("AddressClaim")) ||
	    json_object_set(meta, "name", json_new_string(claim_name)) ||
	    json_object_set(labels, "app.kubernetes.io/managed-by", json_new_string(OPERATOR_MANAGER)) ||
	    json_object_set(meta, "labels", labels) ||
	    json_array_append(refs, kube_owner_ref(dev)) ||
	    json_object_set(meta, "ownerReferences", refs) ||
	    json_object_set(c, "metadata", meta) ||
	    json_object_set(spec, "tailnet", json_new_string(tailnet)) ||
	    json_object_set(spec, "address", json_new_string(addr)) ||
	    json_object_set(spec, "device", json_new_string(kube_name(dev))) ||
	    json_object_set(c, "spec", spec)) {
		json_free(c);
		return NULL;
	}
	return c;
}

/* Tries to claim addr for dev: 1 claimed, 0 taken by someone else, < 0 error. */
static int try_claim(struct operator *op, const struct json *dev, const char *tailnet, const char *addr)
{
	char name[300];
	struct kube_result r;
	struct json *claim;
	int err;

	if (ipam_claim_name(tailnet, addr, name, sizeof(name)))
		return -ENAMETOOLONG;
	claim = new_claim(dev, name, tailnet, addr);
	if (!claim)
		return -ENOMEM;
	err = kube_create(op->kube, &res_addressclaims, NULL, claim, &r);
	json_free(claim);
	if (err)
		return err;
	if (kube_ok(&r))
		err = 1;
	else if (r.status == 409)
		err = 0;
	else {
		log_warn("address claim refused", "claim=%s status=%ld reason=%s message=\"%s\"", name, r.status,
			 r.reason, r.message);
		err = -EIO;
	}
	kube_result_clear(&r);
	return err;
}

/* Is addr claimed by this device right now? Asks the API server when the
 * cache does not know (it lags our own writes). 1 yes, 0 no (absent or
 * someone else's), < 0 error; *absent tells which. */
static int claim_is_ours(struct operator *op, const struct json *dev, const char *tailnet, const char *addr,
			 bool *absent)
{
	char name[300];
	struct json *claim;
	struct kube_result r;
	int ours;

	*absent = false;
	if (ipam_claim_name(tailnet, addr, name, sizeof(name)))
		return -ENAMETOOLONG;
	claim = informer_get(op->claims, NULL, name);
	if (!claim) {
		int err = kube_get(op->kube, &res_addressclaims, NULL, name, &r);
		if (err)
			return err;
		if (r.status == 404) {
			*absent = true;
			kube_result_clear(&r);
			return 0;
		}
		if (!kube_ok(&r))
			return -EIO;
		claim = kube_result_take(&r);
	}
	ours = kube_owned_by(claim, kube_uid(dev));
	json_free(claim);
	return ours;
}

/* Finds and claims an address for dev in pool, starting at start. Writes
 * it to out. -ENOSPC if the pool is full. */
static int allocate(struct operator *op, const struct json *dev, const char *tailnet,
		    const struct ipam_pool *pool, uint64_t start, char *out, size_t outlen)
{
	uint64_t size = ipam_pool_size(pool);
	int conflicts = 0;

	for (uint64_t i = 0; i < size; i++) {
		char addr[64], name[300];
		struct json *cached;
		int got;

		if (!ipam_address_at(pool, (start + i) % size, addr, sizeof(addr)))
			continue;
		if (ipam_claim_name(tailnet, addr, name, sizeof(name)))
			return -ENAMETOOLONG;
		/* Known taken: skip without asking. Correctness does not rest on
		 * this; the create below does. */
		cached = informer_get(op->claims, NULL, name);
		if (cached) {
			json_free(cached);
			continue;
		}
		got = try_claim(op, dev, tailnet, addr);
		if (got < 0)
			return got;
		if (got == 1) {
			snprintf(out, outlen, "%s", addr);
			return 0;
		}
		if (++conflicts >= MAX_CLAIM_CONFLICTS)
			return -EAGAIN;
	}
	return -ENOSPC;
}

/* Settles dev's address in one family. cur is the address status shows (or
 * NULL). Returns 0 with out set, or a negative errno. */
static int settle_family(struct operator *op, const struct json *dev, const char *tailnet,
			 const struct ipam_pool *pool, const char *cur, const struct claims *mine,
			 uint64_t start, char *out, size_t outlen)
{
	uint64_t off;
	bool absent;
	int r;

	out[0] = '\0';
	if (cur && ipam_offset_of(pool, cur, &off)) {
		r = claim_is_ours(op, dev, tailnet, cur, &absent);
		if (r < 0)
			return r;
		if (r == 1 || (absent && (r = try_claim(op, dev, tailnet, cur)) == 1)) {
			snprintf(out, outlen, "%s", cur);
			return 0;
		}
		if (r < 0)
			return r;
		log_warn("device lost its address, allocating anew", "device=%s address=%s", kube_name(dev), cur);
	}
	/* A claim of ours that status does not show yet (a lost status write). */
	for (int i = 0; i < mine->n; i++) {
		if (mine->items[i].family == pool->family && ipam_offset_of(pool, mine->items[i].address, &off)) {
			snprintf(out, outlen, "%s", mine->items[i].address);
			return 0;
		}
	}
	return allocate(op, dev, tailnet, pool, start, out, outlen);
}

/* Deletes this device's claims other than the ones kept (race leftovers),
 * and those of tailnets it has left (issue 15: a moved Device kept them,
 * and with them addresses of a tailnet it no longer belongs to). */
static void drop_surplus(struct operator *op, const struct claims *mine, const char *keep4, const char *keep6)
{
	for (int i = 0; i < mine->nother; i++) {
		const struct claim_ref *c = &mine->other[i];
		struct kube_result r;

		log_info("releasing the address claim of a tailnet the device left", "claim=%s address=%s", c->name,
			 c->address);
		if (kube_delete(op->kube, &res_addressclaims, NULL, c->name, c->uid, NULL, &r) == 0)
			kube_result_clear(&r);
	}
	for (int i = 0; i < mine->n; i++) {
		const struct claim_ref *c = &mine->items[i];
		struct kube_result r;
		if (strcmp(c->address, keep4) == 0 || strcmp(c->address, keep6) == 0)
			continue;
		log_info("releasing surplus address claim", "claim=%s", c->name);
		if (kube_delete(op->kube, &res_addressclaims, NULL, c->name, c->uid, NULL, &r) == 0)
			kube_result_clear(&r);
	}
}

static const char *status_address(const struct json *dev, int family)
{
	struct json *addrs = json_path(dev, "status", "addresses", NULL);
	unsigned char buf[16];

	for (size_t i = 0; i < json_array_len(addrs); i++) {
		const char *a = json_str(json_array_at(addrs, i));
		if (a && inet_pton(family, a, buf) == 1)
			return a;
	}
	return NULL;
}

static void lower(uint64_t *requeue_ms, uint64_t ms)
{
	if (!*requeue_ms || ms < *requeue_ms)
		*requeue_ms = ms;
}

/* Ephemeral devices offline longer than the Tailnet's inactivity timeout
 * are deleted: true if dev is one; else *requeue_ms when it would be. */
static bool ephemeral_expired(const struct json *dev, const struct json *tn, time_t now, uint64_t *requeue_ms)
{
	const char *ref_s = json_str(json_path(dev, "status", "lastSeen", NULL));
	const char *timeout_s = json_str(json_path(tn, "spec", "ephemeralInactivityTimeout", NULL));
	uint64_t timeout_ms = 5 * 60 * 1000;
	time_t ref;
	int64_t idle_ms;

	if (!json_bool(json_path(dev, "spec", "ephemeral", NULL), false) ||
	    json_bool(json_path(dev, "status", "online", NULL), false))
		return false;
	if (timeout_s)
		kube_duration_parse(timeout_s, &timeout_ms);
	if (!ref_s)
		ref_s = json_str(json_path(dev, "metadata", "creationTimestamp", NULL));
	if (!ref_s || !kube_time_parse(ref_s, &ref))
		return false;
	idle_ms = ((int64_t)now - (int64_t)ref) * 1000;
	if (idle_ms < (int64_t)timeout_ms) {
		lower(requeue_ms, timeout_ms - (uint64_t)idle_ms + 500);
		return false;
	}
	return true;
}

enum device_step device_plan(const struct json *dev, const struct json *tn, time_t now, struct json *status,
			     struct device_plan *plan)
{
	int64_t gen = kube_generation(dev);
	char err_msg[256] = "";

	memset(plan, 0, sizeof(*plan));
	if (!tn) {
		kube_condition_set(status, "Ready", "False", "TailnetNotFound", "the Device's Tailnet does not exist", gen, now);
		plan->requeue_ms = 10000;
		return DEVICE_WRITE_STATUS;
	}
	if (!ipam_pool_parse(json_str(json_path(tn, "spec", "ipv4Pool", NULL)) ?: OPERATOR_DEFAULT_IPV4_POOL, &plan->pool4,
			     err_msg, sizeof(err_msg)) ||
	    !ipam_pool_parse(json_str(json_path(tn, "spec", "ipv6Pool", NULL)) ?: OPERATOR_DEFAULT_IPV6_POOL, &plan->pool6,
			     err_msg, sizeof(err_msg)) ||
	    plan->pool4.family != AF_INET || plan->pool6.family != AF_INET6) {
		kube_condition_set(status, "Ready", "False", "InvalidPool",
				   *err_msg ? err_msg : "ipv4Pool must be IPv4 and ipv6Pool IPv6", gen, now);
		return DEVICE_WRITE_STATUS;
	}
	if (ephemeral_expired(dev, tn, now, &plan->requeue_ms))
		return DEVICE_DELETE;
	return DEVICE_ALLOCATE;
}

void device_key_warning(time_t expiry, time_t now, int64_t gen, struct json *status, uint64_t *requeue_ms)
{
	char msg[160], ts[32];

	if (!expiry) {
		kube_condition_set(status, "KeyExpiringSoon", "False", "NoExpiry", "the node key does not expire", gen, now);
		return;
	}
	kube_time_format(expiry, ts, sizeof(ts));
	if (expiry <= now) {
		snprintf(msg, sizeof(msg), "the node key expired at %s", ts);
		kube_condition_set(status, "KeyExpiringSoon", "False", "KeyExpired", msg, gen, now);
	} else if (expiry - now <= DEVICE_KEY_WARN_SECONDS) {
		snprintf(msg, sizeof(msg), "the node key expires at %s and has not been renewed", ts);
		kube_condition_set(status, "KeyExpiringSoon", "True", "KeyExpiresWithinAWeek", msg, gen, now);
	} else {
		snprintf(msg, sizeof(msg), "the node key expires at %s", ts);
		kube_condition_set(status, "KeyExpiringSoon", "False", "KeyValid", msg, gen, now);
		lower(requeue_ms, (uint64_t)(expiry - now - DEVICE_KEY_WARN_SECONDS) * 1000 + 500);
	}
}

int device_desired_status(const struct json *dev, const char *v4, const char *v6, time_t now, struct json *status,
			  uint64_t *requeue_ms)
{
	const char *expiry_s = json_str(json_path(dev, "spec", "keyExpiry", NULL));
	struct json *addrs = json_new_array();
	int64_t gen = kube_generation(dev);
	bool key_expired = false;
	time_t expiry;

	if (!addrs || json_array_append(addrs, json_new_string(v4)) || json_array_append(addrs, json_new_string(v6)) ||
	    json_object_set(status, "addresses", addrs))
		return -ENOMEM;
	if (expiry_s && kube_time_parse(expiry_s, &expiry)) {
		key_expired = now >= expiry;
		if (!key_expired)
			lower(requeue_ms, (uint64_t)(expiry - now) * 1000 + 500);
	}
	json_object_set(status, "keyExpired", json_new_bool(key_expired));
	device_key_warning(expiry_s ? expiry : 0, now, gen, status, requeue_ms);
	if (key_expired)
		kube_condition_set(status, "Ready", "False", "KeyExpired", "the node key has expired; re-authenticate the device", gen, now);
	else
		kube_condition_set(status, "Ready", "True", "AddressesAllocated", "the device has its tailnet addresses", gen, now);
	return 0;
}

/* Deletes dev: 0 once gone (or already), -EIO. */
static int delete_device(struct operator *op, const struct json *dev)
{
	struct kube_result r;
	int err = -EIO;

	log_info("removing inactive ephemeral device", "device=%s", kube_name(dev));
	if (kube_delete(op->kube, &res_devices, NULL, kube_name(dev), kube_uid(dev), NULL, &r) == 0) {
		if (kube_ok(&r) || r.status == 404)
			err = 0;
		kube_result_clear(&r);
	}
	return err;
}

static bool condition_is(const struct json *status, const char *type, const char *want)
{
	const struct json *conds = json_get(status, "conditions");

	for (size_t i = 0; i < json_array_len(conds); i++) {
		const struct json *c = json_array_at(conds, i);
		if (!strcmp(json_str(json_get(c, "type")) ?: "", type))
			return !strcmp(json_str(json_get(c, "status")) ?: "", want);
	}
	return false;
}

int device_reconcile(struct operator *op, const char *ns, const char *name, uint64_t *requeue_ms)
{
	struct json *dev = informer_get(op->devices, NULL, name), *tn = NULL, *status = NULL;
	const char *tailnet;
	char v4[64] = "", v6[64] = "";
	struct device_plan plan;
	struct claims mine = { .n = 0 };
	time_t now = time(NULL);
	uint64_t off4;
	int err = 0;

	if (!dev || kube_deleting(dev))
		goto out;
	tailnet = operator_tailnet_of(dev);
	status = json_clone(json_get(dev, "status"));
	if (!status && !(status = json_new_object())) {
		err = -ENOMEM;
		goto out;
	}
	tn = informer_get(op->tailnets, NULL, tailnet);
	switch (device_plan(dev, tn, now, status, &plan)) {
	case DEVICE_WRITE_STATUS:
		if (plan.requeue_ms)
			*requeue_ms = plan.requeue_ms;
		goto write;
	case DEVICE_DELETE:
		err = delete_device(op, dev);
		if (!err)
			operator_event(op, dev, false, "EphemeralExpired", "Removed ephemeral device %s after inactivity", name);
		goto out;
	case DEVICE_ALLOCATE:
		if (plan.requeue_ms)
			lower(requeue_ms, plan.requeue_ms);
		break;
	}

	mine.tailnet = tailnet;
	mine.uid = kube_uid(dev);
	informer_foreach_indexed(op->claims, "device", name, collect_claim, &mine);
	err = settle_family(op, dev, tailnet, &plan.pool4, status_address(dev, AF_INET), &mine,
			    ipam_start_offset(&plan.pool4, name), v4, sizeof(v4));
	if (!err) {
		/* Mirror the IPv4 offset in IPv6 when free: 100.64.0.5 <-> fd7a:115c:a1e0::5. */
		if (!ipam_offset_of(&plan.pool4, v4, &off4))
			off4 = ipam_start_offset(&plan.pool6, name);
		err = settle_family(op, dev, tailnet, &plan.pool6, status_address(dev, AF_INET6), &mine, off4, v6,
				    sizeof(v6));
	}
	if (err == -ENOSPC) {
		kube_condition_set(status, "Ready", "False", "PoolExhausted", "no free address left in the Tailnet's pool",
				   kube_generation(dev), now);
		operator_event(op, dev, true, "PoolExhausted", "No free address in Tailnet %s", tailnet);
		err = 0;
		*requeue_ms = 30000;
		goto write;
	}
	if (err)
		goto out;
	drop_surplus(op, &mine, v4, v6);
	err = device_desired_status(dev, v4, v6, now, status, requeue_ms);
	if (err)
		goto out;
	if (condition_is(status, "KeyExpiringSoon", "True") && !condition_is(json_get(dev, "status"), "KeyExpiringSoon", "True"))
		operator_event(op, dev, true, "KeyExpiringSoon", "Node key of %s expires within a week (%s); knitd renews "
			       "it by itself: check that the device is online", name, json_str(json_path(dev, "spec", "keyExpiry", NULL)) ?: "?");
write:
	json_object_set(status, "observedGeneration", json_new_int(kube_generation(dev)));
	err = operator_update_status(op, &res_devices, dev, status);
	status = NULL;
	if (err == -EAGAIN) {
		*requeue_ms = 1;
		err = 0;
	}
out:
	json_free(status);
	json_free(tn);
	json_free(dev);
	return err;
}
