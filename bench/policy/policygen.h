/* The benchmarks' policy (bench_policy, coord_bench --policy-rules): R
 * rules over a tailnet where users own 3 devices each (60 % of the
 * devices), 200 tags are on the rest, and 100 groups hold 10 users each.
 * Rule mix, repeating: group to tag on a port, tag to tag on a range, a
 * user to a tag, autogroup:member to autogroup:self, a CIDR to a tag with
 * a protocol, and a group and tag to a routed /16; plus one grant. extra
 * (may be "") is put first in acls, followed by a comma. */
#ifndef KNIT_BENCH_POLICYGEN_H
#define KNIT_BENCH_POLICYGEN_H

#include <stddef.h>

#include "buf.h"

#define TAGS 200
#define GROUPS 100
#define GROUP_SIZE 10

static void policy_text(struct buf *b, size_t users, size_t rules, const char *extra)
{
	buf_add_str(b, "{\n\"groups\": {\n");
	for (size_t g = 0; g < GROUPS; g++) {
		buf_addf(b, "%s\"group:g%zu\": [", g ? ",\n" : "", g);
		for (size_t k = 0; k < GROUP_SIZE; k++)
			buf_addf(b, "%s\"user%zu@example.com\"", k ? ", " : "",
				 (g * GROUP_SIZE + k) % users);
		buf_add_str(b, "]");
	}
	buf_add_str(b, "},\n\"tagOwners\": {\n");
	for (size_t t = 0; t < TAGS; t++)
		buf_addf(b, "%s\"tag:t%zu\": [\"group:g%zu\"]", t ? ",\n" : "", t, t % GROUPS);
	buf_add_str(b, "},\n\"autoApprovers\": {\"routes\": {\"10.0.0.0/8\": [\"tag:t0\"]}},\n");
	buf_add_str(b, "\"acls\": [\n");
	if (*extra)
		buf_addf(b, "%s,\n", extra);
	for (size_t r = 0; r < rules; r++) {
		const char *sep = r ? ",\n" : "";

		switch (r % 6) {
		case 0:
			buf_addf(b, "%s{\"action\": \"accept\", \"src\": [\"group:g%zu\"], \"dst\": [\"tag:t%zu:%zu\"]}",
				 sep, r % GROUPS, r % TAGS, 1000 + r);
			break;
		case 1:
			buf_addf(b, "%s{\"action\": \"accept\", \"src\": [\"tag:t%zu\"], \"dst\": [\"tag:t%zu:8000-8100\"]}",
				 sep, r % TAGS, (r * 7 + 3) % TAGS);
			break;
		case 2:
			buf_addf(b, "%s{\"action\": \"accept\", \"src\": [\"user%zu@example.com\"], \"dst\": [\"tag:t%zu:22,443\"]}",
				 sep, (r * 13) % users, (r * 11) % TAGS);
			break;
		case 3:
			buf_addf(b, "%s{\"action\": \"accept\", \"src\": [\"autogroup:member\"], \"dst\": [\"autogroup:self:%zu\"]}",
				 sep, r);
			break;
		case 4:
			buf_addf(b, "%s{\"action\": \"accept\", \"src\": [\"100.%zu.0.0/16\"], \"dst\": [\"tag:t%zu:*\"], \"proto\": \"udp\"}",
				 sep, 64 + r % 64, (r * 3) % TAGS);
			break;
		default:
			buf_addf(b, "%s{\"action\": \"accept\", \"src\": [\"group:g%zu\", \"tag:t%zu\"], \"dst\": [\"10.%zu.0.0/16:*\"]}",
				 sep, (r * 5) % GROUPS, (r * 9) % TAGS, r % 256);
			break;
		}
	}
	buf_add_str(b, "],\n\"grants\": [{\"src\": [\"group:g1\"], \"dst\": [\"tag:t1\"], \"ip\": [\"tcp:443\", \"icmp:*\"]}]\n}\n");
}

#endif
