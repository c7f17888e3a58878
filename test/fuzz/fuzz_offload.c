/* Input: a virtio_net_hdr, then a packet as read from a TUN device.
 * Segments it into slots of varying size (must never write out of bounds),
 * then feeds the segments to the coalescer (trusting checksums or not, by
 * a bit of the input), and every merged group back to the segmenter: a
 * group must cut back into exactly its members. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/offload.h"

#define NSLOT 128

static uint8_t mem[NSLOT][2048];
static uint8_t super[OFFLOAD_MAX_PACKET + 1];
static uint8_t back[NSLOT][OFFLOAD_MAX_PACKET];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct virtio_net_hdr vh;
	struct pktbuf pb[NSLOT], out[NSLOT];
	struct offload_group groups[NSLOT];
	size_t order[NSLOT], ng;
	int n, total;
	size_t max;

	if (size < sizeof(vh) + 2)
		return 0;
	memcpy(&vh, data, sizeof(vh));
	size_t skip = data[sizeof(vh)] % 4;
	unsigned cflags = data[sizeof(vh)] & 4 ? OFFLOAD_CSUM_TRUSTED : 0;
	size_t cap = 64 + (size_t)data[sizeof(vh) + 1] * 8;
	data += sizeof(vh) + 2;
	size -= sizeof(vh) + 2;

	for (int i = 0; i < NSLOT; i++)
		pb[i] = (struct pktbuf){ .data = mem[i], .cap = i % 2 ? sizeof(mem[i]) : cap };
	total = offload_segment_count(&vh, data, size);
	max = offload_segment_max(&vh, data, size);
	n = offload_segment(&vh, data, size, skip, pb, NSLOT);
	if ((total < 0) != (n == -EINVAL) || (total < 0) != (max == 0))
		abort();
	if (n <= 0)
		return 0;
	if ((size_t)n > (size_t)total - skip)
		abort();
	for (int i = 0; i < n; i++)
		if (pb[i].len > max)
			abort();

	ng = offload_coalesce(pb, (size_t)n, groups, order, cflags);
	for (size_t g = 0; g < ng; g++) {
		size_t len = offload_group_build(&groups[g], pb, order, super, sizeof(super));
		if (!len || len > OFFLOAD_MAX_PACKET)
			abort();
		for (int i = 0; i < NSLOT; i++)
			out[i] = (struct pktbuf){ .data = back[i], .cap = sizeof(back[i]) };
		int m = offload_segment(&groups[g].vnet, super, len, 0, out, NSLOT);
		if (m != (int)groups[g].count)
			abort();
		for (int k = 0; k < m; k++) {
			const struct pktbuf *o = &pb[order[groups[g].first + (size_t)k]];
			if (out[k].len != o->len || memcmp(out[k].data, o->data, o->len))
				abort();
		}
	}
	return 0;
}
