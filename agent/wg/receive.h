/* The receive path: datagrams from the hub's sockets classified; data
 * messages opened in parallel by the crypt workers and written to the TUN
 * in order per peer (after the replay window and the allowed-IPs source
 * check), with roaming; handshake messages handled on the loop thread
 * with the cookie checks of whitepaper section 5.3. */
#ifndef KNIT_AGENT_WG_RECEIVE_H
#define KNIT_AGENT_WG_RECEIVE_H

#include <stddef.h>
#include <stdint.h>

#include "net/udp.h"

struct hub;
struct job;
struct peer;

/* Receive thread: takes ownership of every msgs[i].data (a pool slot). */
void receive_datagrams(struct hub *h, struct udp_msg *msgs, size_t n);
/* Loop thread: one WireGuard message that came through a relay from node
 * key src, copied and demultiplexed like the socket's datagrams, with no
 * source address: it never moves the peer's endpoint (roaming). A
 * handshake's cookie is bound to src (not an address), and a cookie reply
 * goes back through the relay to src (engine_config.relay_send). Too long
 * or not WireGuard: counted as invalid. */
void receive_relayed(struct hub *h, const uint8_t src[32], const uint8_t *pkt, size_t len);
/* Crypt worker: opens an rx job and marks it done (the job may be gone
 * once this returns); peer_flush() then delivers the peer's done jobs. */
void receive_job_open(struct job *j);
/* The flusher (peer_flush()): delivers a list of opened jobs, in order. */
void receive_deliver(struct peer *p, struct job *list);
/* Loop thread: works through queued handshake messages (a bounded
 * number per call; wakes the loop again if more are left). */
void receive_handshakes(struct hub *h);

#endif
