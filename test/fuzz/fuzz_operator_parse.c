/* The operator's parsers of what users write in CRDs: RFC 3339 times
 * (keyExpiry, lastSeen, expiresAt), Go durations (keyExpiry, expiry,
 * ephemeralInactivityTimeout) and address pools (ipv4Pool, ipv6Pool),
 * with what holds for anything they accept: a time formats and parses
 * back to itself; a pool's addresses are in the pool, at their offset. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "ipam.h"
#include "kube/meta.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1), text[64], err[200];
	struct ipam_pool pool;
	uint64_t ms, off;
	time_t t, back;

	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	if (kube_time_parse(s, &t) && t >= 0 && t < (time_t)253402300799) {
		kube_time_format(t, text, sizeof(text));
		if (!kube_time_parse(text, &back) || back != t)
			abort();
	}
	kube_duration_parse(s, &ms);
	if (ipam_pool_parse(s, &pool, err, sizeof(err))) {
		uint64_t n = ipam_pool_size(&pool);

		if (pool.family != AF_INET && pool.family != AF_INET6)
			abort();
		off = ipam_start_offset(&pool, s);
		if (n && off >= n)
			abort();
		for (uint64_t i = 0; i < 4 && n; i++) {
			uint64_t at = (off + i) % n, got;

			if (ipam_address_at(&pool, at, text, sizeof(text)) &&
			    (!ipam_offset_of(&pool, text, &got) || got != at))
				abort();
		}
	}
	free(s);
	return 0;
}
