/* The tailnet policy of one identity, from its netmap into its engine's
 * packet filter (lib/policy/filter.h): the netmap's packetFilter when it
 * changed (a refusal keeps the rules in force; none is allow-all), and
 * the destinations inbound packets may have (its addresses and the routes
 * it serves). */
#ifndef KNIT_AGENT_ENFORCE_H
#define KNIT_AGENT_ENFORCE_H

#include <stdbool.h>

struct filter;
struct json;
struct netmap;

/* f NULL: nothing to do. nm NULL: no netmap (allow-all, no destination
 * check). *applied holds a copy of the packetFilter in force and *set
 * whether it says what f has; both are the caller's to keep. */
void enforce_sync(struct filter *f, const struct netmap *nm, struct json **applied, bool *set);

#endif
