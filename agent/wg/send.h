/* The transmit path: TUN packets to their peer (allowed IPs by
 * destination), staged until a session exists, sealed in parallel by the
 * crypt workers, sent in order in UDP GSO batches; plus the handshake
 * messages and keepalives the loop sends. */
#ifndef KNIT_AGENT_WG_SEND_H
#define KNIT_AGENT_WG_SEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/offload.h"

struct engine;
struct job;
struct peer;

/* TUN thread: routes pkts[0..n) (read into bufs[i] + POOL_HEADROOM) and
 * takes ownership of bufs[0..n). */
void send_tun_packets(struct engine *e, uint8_t **bufs, const struct pktbuf *pkts, size_t n);
/* Any thread: seals what is staged if a session can send, else asks the
 * loop for a handshake. */
void send_staged(struct peer *p);
/* Any thread: what is staged, or else one keepalive. */
void send_keepalive(struct peer *p);
/* Drops the staged packets (the handshake was given up). */
void send_drop_staged(struct peer *p);
/* Crypt worker: seals a tx job and marks it done (the job may be gone
 * once this returns); peer_flush() then sends the peer's done jobs. */
void send_job_seal(struct job *j);
/* The flusher (peer_flush()): sends a list of sealed jobs, in order. */
void send_transmit(struct peer *p, struct job *list);

/* Loop thread: a handshake initiation, rate-limited by the timers. */
void send_initiation(struct peer *p, bool is_retry);
/* Loop thread: the response to the initiation just consumed. */
void send_response(struct peer *p);

#endif
