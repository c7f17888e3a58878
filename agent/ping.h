/* knit ping: a disco ping along the path to the peer (as tailscale ping),
 * or, for a peer without a disco key, ICMP echo to its tailnet address
 * through one identity's TUN device (a raw socket bound to it); answered
 * through the local API with the latency and the path taken. ICMP is
 * resent every 500 ms; both are given up after 5 s. Loop thread. */
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
/* knit ping for a peer with a disco key: one disco ping along the path in
 * use (paths.h), answered with the path the pong came back on. */
struct paths;
void ping_start_disco(struct ping **list, struct paths *paths, const struct netmap_node *n, const char *peer,
		      struct localapi_reply *reply);
/* Drops every ping in *list (their replies are left to the local API,
 * which frees replies still outstanding). */
void ping_free_all(struct ping **list);

#endif
