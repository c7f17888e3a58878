/* Gateway mode (docs/cni.md): when knit-cni's entry in the node's CNI
 * configuration says "mode": "gateway" or "identity+gateway", the node
 * identity advertises the pod ranges of the chain's host-local IPAM as
 * subnet routes (approved by the policy's autoApprovers), so tailnet
 * devices with --accept-routes reach every pod of the node through it.
 * The configuration is read at start and every few seconds after (level
 * triggered: a changed range or mode is re-advertised); while the chain
 * has no knit-cni entry (between a knitd pod's preStop and its successor's
 * init container) the ranges in force stay. Loop thread. */
#ifndef KNIT_AGENT_GATEWAY_H
#define KNIT_AGENT_GATEWAY_H

struct gateway;
struct identity;
struct loop;

/* conf_dir: the node's CNI configuration directory (/etc/cni/net.d). */
int gateway_new(struct gateway **out, struct loop *loop, struct identity *node, const char *conf_dir);
/* NULL is a no-op. */
void gateway_free(struct gateway *g);

#endif
