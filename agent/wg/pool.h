/* Packet buffers for the data path: fixed-size slots cut from one slab and
 * handed out and taken back in bulk, so moving a packet never mallocs.
 *
 * A slot is laid out for WireGuard's in-place transport crypto: the
 * 16-byte data header in front of the payload, and room behind it for
 * padding to 16 bytes and the 16-byte tag. A received datagram is read
 * into the slot from its start; a TUN packet is read at POOL_HEADROOM.
 *
 * Two sizes: many small slots for packets at common tunnel MTUs, and a
 * few large ones, each holding any datagram or any IP packet, swapped in
 * for the rare packet that does not fit a small one (pool_swap_large()).
 * The large slab is made on first use, so a node that never sees a large
 * MTU never pays for it.
 *
 * Thread-safe: one mutex, taken once per bulk call. */
#ifndef KNIT_AGENT_WG_POOL_H
#define KNIT_AGENT_WG_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wg/messages.h"

#define POOL_BUF_SIZE 2048
/* 64 KB plus the data header and the tailroom, cache-line rounded. */
#define POOL_LARGE_SIZE (65536 + 64)
#define POOL_HEADROOM MESSAGE_DATA_HEADER_LEN
#define POOL_TAILROOM (MESSAGE_DATA_TAG_LEN + MESSAGE_PADDING_MULTIPLE)
/* The largest inner packet in a small slot and in a large one. */
#define POOL_PAYLOAD_MAX (POOL_BUF_SIZE - POOL_HEADROOM - POOL_TAILROOM)
#define POOL_LARGE_PAYLOAD_MAX (POOL_LARGE_SIZE - POOL_HEADROOM - POOL_TAILROOM)

struct pool;

/* nbufs small slots and up to nlarge large ones (made on first use).
 * Returns 0 or -ENOMEM. */
int pool_new(struct pool **out, size_t nbufs, size_t nlarge);
/* Every slot should be back; NULL is a no-op. */
void pool_free(struct pool *p);

/* Takes up to n free small slots into bufs; returns how many (0 when empty). */
size_t pool_get(struct pool *p, uint8_t **bufs, size_t n);
/* Gives n slots of either size back; NULL entries are skipped. */
void pool_put(struct pool *p, uint8_t *const *bufs, size_t n);
/* Replaces the small slot *buf with a large one (the small one goes back;
 * its bytes are not copied). False, leaving *buf, when none is free. */
bool pool_swap_large(struct pool *p, uint8_t **buf);
/* A reader that found no large slot for a packet: -ENOBUFS while it may
 * wait for one (helping the crypt jobs that hold them meanwhile); from
 * POOL_LARGE_WAIT_MS after the first refusal until it gets one again,
 * -ENOMEM: drop the packet, so large slots held by stalled peers (staged
 * packets waiting for a handshake) never stop a device. *since is the
 * reader's own (0: not waiting); the reader sets it to 0 when it gets one. */
#define POOL_LARGE_WAIT_MS 20
int pool_large_wait(uint64_t *since, uint64_t now);
/* Small slots: free, and in all. */
size_t pool_available(struct pool *p);
size_t pool_size(const struct pool *p);
/* Large slots free (0 before the first is used). */
size_t pool_large_available(struct pool *p);

struct pool_large_stats {
	size_t made; /* 0 until the first large packet, then all of them */
	size_t in_use; /* held by packets now */
	unsigned long long taken; /* pool_swap_large() calls that got one */
};
void pool_large_stats(struct pool *p, struct pool_large_stats *out);

#endif
