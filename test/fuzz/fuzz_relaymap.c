/* The relay map as knitd gets it in a netmap and knit netcheck reads it
 * from a file: JSON, then relaymap_parse(). What parses must hold what the
 * header promises (ids 1-65535 and unique, every region with 1-16 named
 * nodes, hosts non-empty) and survive a lookup of every id. */
#include <stdint.h>
#include <string.h>

#include "control/relaymap.h"
#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct json_error je;
	struct json *j = json_parse((const char *)data, size, &je);
	struct relaymap m;
	char err[256];

	if (!j)
		return 0;
	if (relaymap_parse(j, &m, err, sizeof(err))) {
		for (size_t i = 0; i < m.nregions; i++) {
			const struct relaymap_region *r = &m.regions[i];

			if (r->id < 1 || r->id > 65535 || relaymap_region(&m, r->id) != r || r->nnodes < 1 ||
			    r->nnodes > RELAYMAP_MAX_NODES)
				__builtin_trap();
			for (size_t k = 0; k < r->nnodes; k++)
				if (!r->nodes[k].name[0] || !r->nodes[k].host[0] || !r->nodes[k].relay_port)
					__builtin_trap();
		}
		relaymap_free(&m);
	} else if (m.nregions || m.regions) {
		__builtin_trap(); /* a refusal leaves the map empty */
	}
	json_free(j);
	return 0;
}
