/* lib/cniconf.c: gateway mode's pod ranges from whatever a node's CNI
 * configuration holds. The answer is one of the four documented, at most
 * max ranges, each one a prefix that formats and parses back the same. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cniconf.h"
#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct netmap_prefix r[4];
	struct json *conf = json_parse_max((const char *)data, size, CNICONF_MAX_BYTES, NULL);
	char why[256];
	size_t n = 99;
	int ret;

	if (!conf)
		return 0;
	ret = cniconf_gateway_ranges(conf, r, 4, &n, why, sizeof(why));
	json_free(conf);
	if (ret != 1 && ret != 0 && ret != -ENOENT && ret != -EINVAL)
		abort();
	if ((ret == 1 && (n < 1 || n > 4)) || (ret != 1 && n != 0))
		abort();
	for (size_t i = 0; i < n; i++) {
		struct netmap_prefix back;
		char text[64];
		if (netmap_prefix_format(&r[i], false, text, sizeof(text)) <= 0 || !netmap_prefix_parse(&back, text) ||
		    back.family != r[i].family || back.bits != r[i].bits || memcmp(back.addr, r[i].addr, 16))
			abort();
		for (size_t k = 0; k < i; k++)
			if (r[k].family == r[i].family && r[k].bits == r[i].bits && !memcmp(r[k].addr, r[i].addr, 16))
				abort(); /* deduplicated */
	}
	return 0;
}
