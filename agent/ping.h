/* knit ping: ICMP echo to a peer's tailnet address through one identity's
 * TUN device (a raw socket bound to it), answered through the local API
 * with the latency and the path the engine used. Resent every 500 ms,
 * given up after 5 s. Loop thread. */
#ifndef KNIT_AGENT_PING_H
#define KNIT_AGENT_PING_H

struct engine;
struct localapi_reply;
struct loop;
struct netmap_node;
struct ping;

/* Pings n (its first IPv4 address) and completes reply when it answers or
 * times out; on failure to start, completes reply with the error. The ping
 * is linked into *list, which owns it. peer is what the user asked for. */
void ping_start(struct ping **list, struct loop *loop, struct engine *e, const struct netmap_node *n,
		const char *peer, struct localapi_reply *reply);
/* Drops every ping in *list (their replies are left to the local API,
 * which frees replies still outstanding). */
void ping_free_all(struct ping **list);

#endif
