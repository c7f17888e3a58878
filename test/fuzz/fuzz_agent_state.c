/* knitd's state file loader (agent/state.c state_parse: the part of
 * state_load that reads what is on disk): a truncated, hand-edited or
 * corrupt file is refused with the field named, or loads; whatever loads
 * holds keys and, if it has a netmap, one that parses again. */
#include <stdint.h>
#include <stdlib.h>

#include "control/messages.h"
#include "state.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct state *st = NULL;
	struct netmap nm;
	char err[300];

	if (state_parse((const char *)data, size, &st, err, sizeof(err)) != 0) {
		if (st)
			abort(); /* nothing loaded on error */
		return 0;
	}
	if (st->netmap) {
		if (!state_get_netmap(st, &nm, err, sizeof(err)))
			abort(); /* checked when loaded */
		netmap_free(&nm);
	}
	state_free(st);
	return 0;
}
