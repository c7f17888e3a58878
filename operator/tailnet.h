/* The Tailnet reconciler's pure half: the status a Tailnet should have,
 * from the Tailnet and what the caches count. */
#ifndef KNIT_OPERATOR_TAILNET_H
#define KNIT_OPERATOR_TAILNET_H

#include <stdbool.h>
#include <time.h>

struct json;

struct tailnet_facts {
	long devices, ipv4_allocated, ipv6_allocated;
	const char *control_key; /* NULL: not loaded yet (status keeps what it had) */
};

/* May an AuthKey in namespace ns join devices to tn? tn's
 * spec.authKeyNamespaces lists the namespaces that may hold its keys; when
 * absent (or tn is NULL: a Tailnet not created yet) only the operator's own
 * namespace, operator_ns, may. */
bool tailnet_authkey_namespace_allowed(const struct json *tn, const char *ns, const char *operator_ns);

/* Updates status (a copy of the current one) to what it should be. */
void tailnet_desired_status(const struct json *tn, const struct tailnet_facts *f, time_t now, struct json *status);

#endif
