/* knit-operator's shared state: one per process. The reconcilers (one per
 * kind, in a file named for it) read the informer caches and write through
 * the blocking kube client from worker threads. */
#ifndef KNIT_OPERATOR_H
#define KNIT_OPERATOR_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "kube/client.h"

struct controller;
struct coord;
struct informer;
struct json;
struct loop;
struct metrics;
struct metrics_family;
struct policy_store;

extern const struct kube_resource res_tailnets;
extern const struct kube_resource res_authkeys;
extern const struct kube_resource res_policies;
extern const struct kube_resource res_devices;
extern const struct kube_resource res_addressclaims;

#define KNIT_API_VERSION "knit.dev/v1alpha1"
#define OPERATOR_MANAGER "knit-operator"
/* A Tailnet's address pools when its spec names none (the CRD defaults
 * them too: manifests/crds/tailnets.yaml). */
#define OPERATOR_DEFAULT_IPV4_POOL "100.64.0.0/10"
#define OPERATOR_DEFAULT_IPV6_POOL "fd7a:115c:a1e0::/48"
/* Informer indexes by tailnet: Devices, and IPv4 / IPv6 AddressClaims. */
#define OPERATOR_INDEX_TAILNET "tailnet"
#define OPERATOR_INDEX_TAILNET4 "tailnet4"
#define OPERATOR_INDEX_TAILNET6 "tailnet6"

struct operator {
	struct loop *loop;
	struct kube_client *kube;
	char namespace[254]; /* where the operator runs: Lease, Secrets of cluster-wide things */
	bool create_default_tailnet;
	int workers;

	struct informer *tailnets, *authkeys, *devices, *claims, *secrets;
	struct informer *policies_inf;
	struct controller *tailnet_ctl, *authkey_ctl, *device_ctl, *policy_ctl;
	struct policy_store *policies; /* the policies in force (operator/policy.h) */
	struct metrics *metrics;
	/* {kind,result}, {kind}, {kind}: registered in main, updated by controllers. */
	struct metrics_family *m_reconciles, *m_reconcile_seconds, *m_queue_depth;
	atomic_bool running; /* controllers started (we lead) */
	struct coord *coord; /* coordination server; NULL if disabled */
};

/* Reconciler result: 0 done, < 0 error (requeued with backoff), and
 * *requeue_ms > 0 asks to be looked at again after that long. */
typedef int (*reconcile_fn)(struct operator *op, const char *ns, const char *name,
			    uint64_t *requeue_ms);

int tailnet_reconcile(struct operator *op, const char *ns, const char *name, uint64_t *requeue_ms);
int authkey_reconcile(struct operator *op, const char *ns, const char *name, uint64_t *requeue_ms);
int device_reconcile(struct operator *op, const char *ns, const char *name, uint64_t *requeue_ms);

/* The Tailnet a Device, AddressClaim or AuthKey belongs to: spec.tailnet,
 * "default" when unset. */
const char *operator_tailnet_of(const struct json *obj);

/* Writes obj's status through the /status subresource when it differs
 * from current; the object's resourceVersion is the precondition. Returns
 * 0, -EAGAIN on conflict (requeue), or another negative errno. */
int operator_update_status(struct operator *op, const struct kube_resource *res,
			   const struct json *current, struct json *desired_status);
/* A core/v1 Event on obj (best effort: failures are logged). */
void operator_event(struct operator *op, const struct json *obj, bool warning, const char *reason,
		    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#endif
