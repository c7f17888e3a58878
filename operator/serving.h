/* Which replica the operator's Services send traffic to: the leader.
 *
 * Every replica listens for coordination and admission reviews, but only
 * the leader answers them with the whole picture (its caches, the map
 * streams, the Devices a policy's tests name). So those Services have no
 * selector: the leader, once its caches are synced, points an EndpointSlice
 * of each (named <service>-leader, owned by the Service so it goes with it)
 * at its own pod, and empties it when it stops leading. This needs no
 * write access to any Pod (a Pod patch could swap the image of a
 * privileged knitd pod): RBAC lets the operator create EndpointSlices in
 * its namespace and patch those two by name, and read the two Services.
 * Every replica stays Ready (healthy), so a PodDisruptionBudget counts
 * them all.
 *
 * A leader that dies without withdrawing leaves its address until the next
 * leader writes its own, at most a Lease duration later (the Lease's own
 * bound); a restarted container keeps its pod's name, which is its Lease
 * identity, and so usually leads again at once. The writes are made by a
 * thread of its own with the blocking client. */
#ifndef KNIT_OPERATOR_SERVING_H
#define KNIT_OPERATOR_SERVING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct json;
struct kube_client;
struct loop;
struct serving;

#define SERVING_MAX 4
#define SERVING_SLICE_SUFFIX "-leader"
#define SERVING_MANAGER "knit-operator" /* endpointslice.kubernetes.io/managed-by */

struct serving_target {
	const char *service; /* the Endpoints object, named as its Service */
	const char *port_name; /* the Service port's name */
	uint16_t port; /* where this replica listens */
};

struct serving_opts {
	const char *namespace;
	const char *pod_ip; /* this replica's address */
	const char *pod_name; /* the Endpoints' targetRef; may be NULL */
	const struct serving_target *targets;
	size_t ntargets; /* 1..SERVING_MAX */
};

/* The merge patch (RFC 7386) that points a slice at ip:port, or at no
 * endpoint when ip is NULL; with rv, only if the slice is still at that
 * resourceVersion (else the API server answers 409). Caller frees; NULL on
 * allocation failure. */
struct json *serving_patch(const struct serving_target *t, const char *ns, const char *ip, const char *pod_name,
			   const char *rv);
/* The whole EndpointSlice <service>-leader (api_version
 * "discovery.k8s.io/v1" or "/v1beta1"), owned by service (its object, for
 * the uid). NULL without a uid or memory. */
struct json *serving_slice(const struct serving_target *t, const char *ns, const char *ip, const char *pod_name,
			   const char *api_version, const struct json *service);

/* Copies o. -EINVAL on a bad address or count, -ENOMEM. Loop thread. */
int serving_new(struct kube_client *c, struct loop *loop, const struct serving_opts *o, struct serving **out);
/* Loop thread; NULL is a no-op. Writes in flight are orphaned. */
void serving_free(struct serving *s);
/* Any thread: send the Services to us (true), or take back what we wrote
 * (false: a slice we never wrote, or that another replica has written
 * since, is left alone). Each write is retried every second until it
 * succeeds or the wish changes. */
void serving_set(struct serving *s, bool leading);
/* Loop thread: serving_set(s, false), then done(arg) once every write has
 * ended or after timeout_ms, never from inside this call. */
void serving_withdraw(struct serving *s, uint32_t timeout_ms, void (*done)(void *arg), void *arg);
/* Every slice says what serving_set last asked for. Any thread. */
bool serving_settled(struct serving *s);

#endif
