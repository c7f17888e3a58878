/* Packet buffers for the data path: fixed-size slots cut from one slab and
 * handed out and taken back in bulk, so moving a packet never mallocs.
 *
 * A slot is laid out for WireGuard's in-place transport crypto: the
 * 16-byte data header in front of the payload, and room behind it for
 * padding to 16 bytes and the 16-byte tag. A received datagram is read
 * into the slot from its start; a TUN packet is read at POOL_HEADROOM.
 *
 * Thread-safe: one mutex, taken once per bulk call. */
#ifndef KNIT_AGENT_WG_POOL_H
#define KNIT_AGENT_WG_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "wg/messages.h"

#define POOL_BUF_SIZE 2048
#define POOL_HEADROOM MESSAGE_DATA_HEADER_LEN
#define POOL_TAILROOM (MESSAGE_DATA_TAG_LEN + MESSAGE_PADDING_MULTIPLE)
/* The largest inner packet: tunnel MTUs above this drop what does not fit. */
#define POOL_PAYLOAD_MAX (POOL_BUF_SIZE - POOL_HEADROOM - POOL_TAILROOM)

struct pool;

/* nbufs slots of POOL_BUF_SIZE. Returns 0 or -ENOMEM. */
int pool_new(struct pool **out, size_t nbufs);
/* Every slot should be back; NULL is a no-op. */
void pool_free(struct pool *p);

/* Takes up to n free slots into bufs; returns how many (0 when empty). */
size_t pool_get(struct pool *p, uint8_t **bufs, size_t n);
/* Gives n slots back; NULL entries are skipped. */
void pool_put(struct pool *p, uint8_t *const *bufs, size_t n);
size_t pool_available(struct pool *p);
size_t pool_size(const struct pool *p);

#endif
