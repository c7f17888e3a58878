/* A name lookup that never blocks an event loop: getaddrinfo_a() started
 * here, polled by the caller (on its timer or tick), stopped on teardown.
 *
 *   lookup_start(&l, host, "8080", SOCK_STREAM);
 *   ... later, on the loop:
 *   r = lookup_result(&l, &res);   EAI_INPROGRESS: poll again
 *                                  0: res is the answer (caller frees it
 *                                     with freeaddrinfo); else an EAI_ error
 *   lookup_stop(&l);               abandon one in flight
 *
 * host and service must stay valid while the lookup is live: glibc reads
 * them from its own thread. */
#ifndef KNIT_NET_LOOKUP_H
#define KNIT_NET_LOOKUP_H

#include <netdb.h>
#include <stdbool.h>

struct lookup {
	struct gaicb gai;
	struct addrinfo hints;
	bool live;
};

/* 0, or the EAI_ error of getaddrinfo_a (nothing is then in flight). */
int lookup_start(struct lookup *l, const char *host, const char *service, int socktype);
/* EAI_INPROGRESS while under way; otherwise the lookup is over (not live). */
int lookup_result(struct lookup *l, struct addrinfo **res);
/* Cancels a lookup in flight (waits for it if glibc cannot cancel it).
 * No-op when none is. */
void lookup_stop(struct lookup *l);

#endif
