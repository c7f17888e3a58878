/* Rolling updates of knitd's DaemonSet (manifests/20-knitd.yaml): a
 * replaced knitd pod leaves the API as soon as its kubelet reports every
 * container stopped, not up to ~12 s later.
 *
 * On Kubernetes < 1.25 (no DaemonSet maxSurge) the DaemonSet controller
 * makes a node's new pod only once the old one is gone from the API, and
 * the kubelet (1.20) deletes it only when its status manager's 10 s batch
 * tick finds the containers, the sandbox, the volumes and the cgroup
 * cleaned up: 1-12 s after knitd exited, measured, during which the node
 * has no knitd. The leader does that final delete itself (grace period 0,
 * the pod's UID as precondition), on the kubelet's own rule for it: the
 * pod is being deleted and none of its containers runs. The kubelet still
 * reclaims the rest after; a host-network pod with host paths only shares
 * nothing with its successor but the host's directories. */
#ifndef KNIT_OPERATOR_ROLLOUT_H
#define KNIT_OPERATOR_ROLLOUT_H

#include <stdbool.h>

struct json;
struct kube_client;
struct rollout;

/* The pods of knitd's DaemonSet, in the operator's namespace. */
#define ROLLOUT_KNITD_SELECTOR "app.kubernetes.io/name=knitd"

/* Pure: obj is a Pod whose deletion has begun (metadata.deletionTimestamp)
 * and which the kubelet reported with at least one container and none of
 * them, nor of its init containers, running. */
bool rollout_pod_stopped(const struct json *pod);

/* Loop thread: watches the pods matching selector in ns and deletes the
 * stopped ones. NULL on ENOMEM. */
struct rollout *rollout_start(struct kube_client *kube, const char *ns, const char *selector);
/* Loop thread; NULL is a no-op. */
void rollout_free(struct rollout *r);

#endif
