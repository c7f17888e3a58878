/* Netmap application in knitd (agent/applied.c): a full netmap and the
 * deltas after it, as the map stream delivers them (one JSON record per
 * line of the input), planned against what the engine holds, the plan's
 * operations "run" (each fails or not by a bit of the input, as a busy
 * kernel would make it), the outcome committed. What holds throughout:
 * after a plan whose operations all succeeded, the records hold exactly
 * the netmap's peers; a failed operation is retried by the next full
 * plan. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "applied.h"
#include "control/messages.h"
#include "json.h"

#define MAX_RECORDS 16

static bool run(struct applied *a, struct applied_plan *plan, uint32_t *fail_bits)
{
	bool all_ok = true;

	for (size_t i = 0; i < plan->nops; i++) {
		plan->ops[i].err = (*fail_bits & 1) ? -EBUSY : 0;
		all_ok &= plan->ops[i].err == 0;
		*fail_bits = (*fail_bits >> 1) | (*fail_bits << 31);
	}
	if (applied_commit(a, plan)) {
		applied_reset(a);
		all_ok = false;
	}
	applied_plan_free(plan);
	return all_ok;
}

static void check_peers(const struct applied *a, const struct netmap *nm)
{
	for (size_t i = 0; i < nm->npeers; i++)
		if (!applied_has_peer(a, nm->peers[i].node_key))
			abort();
	if (applied_peers(a) != nm->npeers)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct applied *a = applied_new();
	struct netmap nm;
	struct applied_plan plan;
	uint32_t fail_bits = 0;
	const char *p = (const char *)data, *end = p + size;
	bool have_nm = false;
	char err[256];

	if (!a)
		return 0;
	if (size >= 4) {
		memcpy(&fail_bits, data, 4);
		p += 4;
	}
	for (int rec = 0; p < end && rec < MAX_RECORDS; rec++) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
		struct json *j = json_parse_max(p, len, 64u << 10, NULL);

		p += len + (nl != NULL);
		if (!j)
			continue;
		if (!have_nm) {
			if (netmap_from_json(j, &nm, err, sizeof(err))) {
				have_nm = true;
				if (applied_plan_netmap(a, &nm, &plan) == 0 && run(a, &plan, &fail_bits))
					check_peers(a, &nm);
			}
		} else {
			struct netmap_delta d;

			if (netmap_delta_from_json(j, &d, err, sizeof(err))) {
				/* Planned against what is applied, before nm takes d. */
				if (applied_plan_delta(a, &d, &plan) == 0) {
					if (netmap_apply_delta(&nm, &d, err, sizeof(err)) == 0)
						run(a, &plan, &fail_bits);
					else
						applied_plan_free(&plan);
				}
				netmap_delta_free(&d);
			}
			/* Every so often a full plan, as a reconnect makes: it
			 * converges whatever failed before. */
			if (rec % 4 == 3 && applied_plan_netmap(a, &nm, &plan) == 0) {
				uint32_t none = 0;
				if (run(a, &plan, &none))
					check_peers(a, &nm);
			}
		}
		json_free(j);
	}
	if (have_nm) {
		if (applied_plan_clear(a, &plan) == 0) {
			uint32_t none = 0;
			run(a, &plan, &none);
			if (applied_peers(a) != 0 || applied_routes(a) != 0)
				abort();
		}
		netmap_free(&nm);
	}
	applied_free(a);
	return 0;
}
