/* A decrypted call as the coordination server parses it (register, update,
 * map), and any record as the agent parses it, through the one codec
 * (lib/control). Beyond not crashing: whatever parses must come back from
 * its own JSON equal and with nothing skipped, since both ends build with
 * the writers and parse with the readers of control/fields.h. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "control/messages.h"
#include "json.h"

static void check_register(const struct json *j)
{
	struct register_request a, b;
	struct json *back;
	char err[200];

	if (!register_request_from_json(j, &a, err, sizeof(err)))
		return;
	back = register_request_to_json(&a);
	if (back && !register_request_from_json(back, &b, err, sizeof(err)))
		abort(); /* what we build, we parse */
	if (back) {
		if (memcmp(a.node_key, b.node_key, sizeof(a.node_key)) || a.ntags != b.ntags || a.nroutes != b.nroutes)
			abort();
		for (size_t i = 0; i < a.nroutes; i++)
			if (!netmap_prefix_equal(&a.routes[i], &b.routes[i]))
				abort();
		register_request_free(&b);
	}
	messages_json_free_secret(back);
	register_request_free(&a);
}

static void check_update(const struct json *j)
{
	struct update_request a, b;
	struct json *back;
	bool is_map, is_map2;
	char err[200];

	if (!update_request_from_json(j, &a, &is_map, err, sizeof(err)))
		return;
	back = is_map ? map_request_to_json(&a) : update_request_to_json(&a);
	if (back) {
		if (!update_request_from_json(back, &b, &is_map2, err, sizeof(err)) || is_map2 != is_map ||
		    a.nendpoints != b.nendpoints || a.relay != b.relay || a.has_relay != b.has_relay)
			abort();
		update_request_free(&b);
	}
	json_free(back);
	update_request_free(&a);
}

static void check_netmap(const struct json *j)
{
	struct netmap a, b;
	struct json *back;
	char err[200];

	if (!netmap_from_json(j, &a, err, sizeof(err)))
		return;
	back = netmap_to_json(&a);
	if (back) {
		if (!netmap_from_json(back, &b, err, sizeof(err)) || b.skipped || b.npeers != a.npeers ||
		    !netmap_node_equal(&a.self, &b.self))
			abort();
		for (size_t i = 0; i < a.npeers; i++)
			if (!netmap_node_equal(&a.peers[i], &b.peers[i]))
				abort();
		netmap_free(&b);
	}
	json_free(back);
	netmap_free(&a);
}

static void check_delta(const struct json *j)
{
	struct netmap_delta a, b;
	struct json *back;
	char err[200];

	if (!netmap_delta_from_json(j, &a, err, sizeof(err)))
		return;
	back = netmap_delta_to_json(&a);
	if (back) {
		if (!netmap_delta_from_json(back, &b, err, sizeof(err)) || b.skipped || b.nupsert != a.nupsert ||
		    b.nremove != a.nremove || b.has != a.has)
			abort();
		netmap_delta_free(&b);
	}
	json_free(back);
	netmap_delta_free(&a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct json *j = json_parse_max((const char *)data, size, 64u << 10, NULL);

	if (!j)
		return 0;
	check_register(j);
	check_update(j);
	check_netmap(j);
	check_delta(j);
	json_free(j);
	return 0;
}
