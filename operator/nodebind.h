/* Binding a node's Device to its Kubernetes Node (docs/cni.md): knitd in
 * the DaemonSet sends its pod's projected ServiceAccount token in
 * register (podToken); the operator asks the API server whose it is (a
 * TokenReview), which pod it is bound to, and takes that pod's
 * spec.nodeName as the Device's spec.node. register_pod then vouches only
 * for pods on that node. The checks are pure functions of the API
 * server's answers, for the unit tests; nodebind_verify() makes the two
 * calls (worker thread). */
#ifndef KNIT_OPERATOR_NODEBIND_H
#define KNIT_OPERATOR_NODEBIND_H

#include <stddef.h>

struct coord;
struct json;

/* The token's audience: knit's own, so it is no credential against the
 * Kubernetes API (whose audience is the API server's issuer). */
#define NODEBIND_AUDIENCE "knit.dev/node"
#define NODEBIND_DEFAULT_SA "knitd"

struct nodebind_pod {
	char name[254];
	char uid[128];
};

/* A TokenReview answer (the whole object) → the pod the token is bound
 * to. want_user: "system:serviceaccount:<ns>:<sa>". NULL when it checks
 * out, else the refusal's reason (CamelCase: Unauthenticated,
 * WrongAudience, WrongServiceAccount, NoPodBinding) with why set. */
const char *nodebind_review_check(const struct json *review, const char *want_user, struct nodebind_pod *pod,
				  char *why, size_t whylen);
/* The Pod object (NULL: not found) the review named → its node. NULL and
 * node set, or the reason (PodNotFound, PodUIDMismatch, PodNotRunning,
 * NotDaemonSetPod, PodNotScheduled) with why set. */
const char *nodebind_pod_check(const struct json *pod, const struct nodebind_pod *want, char *node, size_t nodelen,
			       char *why, size_t whylen);
/* May node_dev (the Device of the node asking) vouch for pod? NULL: yes;
 * else why not (no spec.node; another node). */
const char *nodebind_vouches(const struct json *node_dev, const struct json *pod, char *why, size_t whylen);

/* Worker thread: the TokenReview and the Pod read for token. NULL and
 * node set when the token binds a Node; else the error reply
 * (PodTokenInvalid, or Unavailable when the API server cannot be asked),
 * the refusal counted as knit_coord_refusals_total{call="nodebind"}. */
struct json *nodebind_verify(struct coord *c, const char *token, char *node, size_t nodelen);
/* Sets spec.node (node NULL: removes it). 0 or -ENOMEM. */
int nodebind_set(struct json *spec, const char *node);

#endif
