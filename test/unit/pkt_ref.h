/* Packet helpers for the offload and TUN tests, written independently of
 * lib/net (an obviously-correct Internet checksum and big-endian fields),
 * so the tests do not check the code with itself. */
#ifndef KNIT_TEST_PKT_REF_H
#define KNIT_TEST_PKT_REF_H

#include <stddef.h>
#include <stdint.h>

/* One's-complement sum of n bytes onto s, folded to 16 bits. */
static inline uint16_t ref_sum(const uint8_t *p, size_t n, uint32_t s)
{
	for (size_t i = 0; i < n; i += 2)
		s += (uint32_t)p[i] << 8 | (i + 1 < n ? p[i + 1] : 0);
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)s;
}

static inline uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void wr16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v & 0xff;
}

static inline void wr32(uint8_t *p, uint32_t v)
{
	wr16(p, v >> 16);
	wr16(p + 2, v & 0xffff);
}

#endif
