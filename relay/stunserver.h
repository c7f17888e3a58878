/* knit-relay's STUN server: answers RFC 5389 Binding requests on one UDP
 * socket with the source address they came from (XOR-MAPPED-ADDRESS), so
 * agents learn their reflexive endpoints. Requests with unknown
 * comprehension-required attributes get 420; anything else that is not a
 * well-formed Binding request is dropped and counted. On the loop thread. */
#ifndef KNIT_RELAY_STUNSERVER_H
#define KNIT_RELAY_STUNSERVER_H

#include <stdint.h>

struct loop;
struct metrics;
struct stunserver;

/* addr: "[::]:3478" (dual-stack), "0.0.0.0:3478", "127.0.0.1:0". */
int stunserver_new(struct loop *loop, const char *addr, struct metrics *m, struct stunserver **out);
void stunserver_free(struct stunserver *s);
uint16_t stunserver_port(const struct stunserver *s);

#endif
