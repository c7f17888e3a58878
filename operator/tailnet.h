/* The Tailnet reconciler's pure half: the status a Tailnet should have,
 * from the Tailnet and what the caches count. */
#ifndef KNIT_OPERATOR_TAILNET_H
#define KNIT_OPERATOR_TAILNET_H

#include <time.h>

struct json;

struct tailnet_facts {
	long devices, ipv4_allocated, ipv6_allocated;
	const char *control_key; /* NULL: not loaded yet (status keeps what it had) */
};

/* Updates status (a copy of the current one) to what it should be. */
void tailnet_desired_status(const struct json *tn, const struct tailnet_facts *f, time_t now, struct json *status);

#endif
