/* knit netcheck (netcheck.c): this host's view of the network for the
 * tailnet, from the relay map (knitd's netmap or a file). */
#ifndef KNIT_CLI_NETCHECK_H
#define KNIT_CLI_NETCHECK_H

struct json;

enum { NETCHECK_FAIL = 1, NETCHECK_USAGE = 2 };

extern const char netcheck_usage[];

/* argv[0] is "netcheck". knitd_status(arg) returns knitd's status (its
 * "relayMap" member is the map; caller frees) or NULL after printing why;
 * it is called only without --relay-map. Returns the exit status. */
int netcheck_main(int argc, char **argv, struct json *(*knitd_status)(void *arg), void *arg);

#endif
