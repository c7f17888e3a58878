/* The local API's operations (localapi.h) on one identity: status and
 * whois read its netmap, its state and its engine's peer counters; up,
 * down, logout and ping go to the identity. Today knitd serves its node
 * identity; pod identities (the CNI plugin) will be named per request. */
#ifndef KNIT_AGENT_API_H
#define KNIT_AGENT_API_H

#include "localapi.h"

struct identity;

/* The ops table for id (localapi_new() copies it). */
struct localapi_ops api_ops(struct identity *id);

#endif
