/* The Policy reconciler and the policies in force. A Policy (spec.policy:
 * the Tailscale policy file) takes effect only when it parses and its own
 * tests pass against the tailnet's Devices; otherwise the last good one
 * stays in force, and a tailnet without one stays allow-all. The
 * admission webhook runs the same check (policy_admission_check).
 *
 * The policies in force live in a store (one per operator) that the
 * coordination server reads when it builds netmaps and registrations:
 * policy_store_get() hands out a reference to an immutable parsed policy,
 * so readers never hold the store's lock while they compile. */
#ifndef KNIT_OPERATOR_POLICY_H
#define KNIT_OPERATOR_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "policy/policy.h"

struct json;
struct operator;
struct policy_store;

/* A policy in force: immutable, shared by reference. */
struct policy_ref {
	struct policy *p;
	char name[254]; /* the Policy object */
	int64_t generation;
	unsigned refs; /* under the store's lock */
};

/* ---- pure ---- */

#define POLICY_DEVICE_MAX_TAGS 32
#define POLICY_DEVICE_MAX_ROUTES 256

/* A Device object as the compiler's device: borrows strings from dev;
 * tags (POLICY_DEVICE_MAX_TAGS) and routes (POLICY_DEVICE_MAX_ROUTES) are
 * caller storage. -EINVAL for a Device the compiler cannot take (no name,
 * too many addresses, tags or routes, a malformed one). */
int policy_device_from_json(const struct json *dev, struct policy_device *out, const char **tags,
			    struct policy_prefix *routes);

/* Adds every usable Device of devs (a JSON array) to net; the ones the
 * compiler refuses are skipped. Returns 0 or -ENOMEM. */
int policy_net_add_devices(struct policy_net *net, const struct json *devs);

/* The whole check: parse text, build a net from devs (may be NULL), run
 * the tests. true with *out (may be NULL: then freed) when valid and every
 * test holds; else false with the reason in err ("L:C: ...") and *valid
 * telling which step failed. */
bool policy_check_text(const char *text, size_t len, const struct json *devs, struct policy **out, bool *valid,
		       char *err, size_t errlen);

/* Updates status (a copy of the current one) for Policy obj: conditions
 * Valid and TestsPassed, observedGeneration, and appliedGeneration when
 * this generation takes effect (then true with *out, the parsed policy to
 * put in force). devs: the tailnet's Devices (a JSON array; may be NULL). */
bool policy_desired_status(const struct json *obj, const struct json *devs, time_t now, struct json *status,
			   struct policy **out);

/* Registration under policy p: may a device registered with an AuthKey
 * (its spec.user and spec.tags) carry tags? The key's own tags count as
 * owned; any other tag must be owned, per tagOwners, by the requester
 * (the key's user, or — for a tagged key — its tags). 0, or -EPERM with
 * why naming the tag and its owners. */
int policy_tags_permitted(const struct policy *p, const char *key_user, const struct json *key_tags,
			  const struct json *tags, char *why, size_t whylen);
/* The routes of Device dev (spec.advertisedRoutes, its tags and user)
 * that autoApprovers approve, as a JSON array of CIDR strings; NULL on
 * ENOMEM or a Device the compiler cannot take. */
struct json *policy_auto_approved(const struct policy *p, const struct json *dev);

/* Which approved routes autoApprovers put there, so that a policy that
 * stops approving one withdraws it and never an admin's approval. */
#define POLICY_AUTO_ROUTES_ANNOTATION "knit.dev/auto-approved-routes"

/* Route approvals of Device dev under policy p (NULL: no policy, so no
 * autoApprovers): spec.approvedRoutes should hold what an admin approved
 * (the routes the annotation does not list) and what autoApprovers
 * approve now of spec.advertisedRoutes; the annotation lists the latter,
 * comma-separated. Returns the merge patch that gets dev there, NULL with
 * *err = 0 when it is there already, or NULL with *err = -ENOMEM. */
struct json *policy_routes_patch(const struct policy *p, const struct json *dev, int *err);

/* ---- the store ---- */

struct policy_store *policy_store_new(void);
void policy_store_free(struct policy_store *s);
/* Puts p (taken) in force for tailnet as Policy name at generation gen. */
int policy_store_set(struct policy_store *s, const char *tailnet, const char *name, int64_t gen, struct policy *p);
/* The Policy name stops being in force wherever it was; true if it was. */
bool policy_store_drop(struct policy_store *s, const char *name, char *tailnet, size_t tailnet_len);
/* The policy in force for tailnet (a reference: policy_store_put it), or
 * NULL: allow-all. s may be NULL. */
struct policy_ref *policy_store_get(struct policy_store *s, const char *tailnet);
void policy_store_put(struct policy_store *s, struct policy_ref *r);
/* Bumped on every change (streams compare it to know they are stale). */
uint64_t policy_store_version(struct policy_store *s);

/* ---- the reconciler and the webhook's check ---- */

int policy_reconcile(struct operator *op, const char *ns, const char *name, uint64_t *requeue_ms);
/* admission_policy_check_fn: arg is the operator. */
bool policy_admission_check(void *arg, const char *text, size_t len, char *err, size_t errlen);

#endif
