/* Where peers can reach this machine directly: the addresses of its up,
 * non-loopback interfaces (not link-local IPv6), with the WireGuard port,
 * at most what the coordination server takes (FIELDS_MAX_ENDPOINTS). */
#ifndef KNIT_AGENT_ENDPOINTS_H
#define KNIT_AGENT_ENDPOINTS_H

#include <stddef.h>
#include <stdint.h>

#include "control/messages.h"

/* skip(arg, ifname) leaves an interface out (our own TUN devices). sig
 * gets the endpoints as text, to tell a change. The caller frees the
 * result with update_request_free(). */
struct update_request endpoints_collect(uint16_t port, bool (*skip)(void *arg, const char *ifname), void *arg,
					char *sig, size_t siglen);

/* The soft state to announce (the update call): local endpoints as
 * collected, then the reflexive ones STUN found that are not among them,
 * capped at FIELDS_MAX_ENDPOINTS, and the home relay region (0: none).
 * sig gets all of it as text, to tell a change. -ENOMEM (out is then
 * empty); the caller frees out with update_request_free(). */
int endpoints_announce(struct update_request *out, const struct update_request *local,
		       const struct endpoint *reflexive, size_t nreflexive, int home, char *sig, size_t siglen);

#endif
