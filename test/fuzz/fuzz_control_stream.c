/* The map stream as the agent parses it after opening each frame: record
 * framing from arbitrary chunk splits, then each record as a JSON netmap,
 * delta or call response, and the control key set a netmap or delta
 * carries through the pin rule (control/ctrlpin.h). The first byte picks
 * the chunk size. */
#include <stdint.h>
#include <string.h>

#include "control/ctrlpin.h"
#include "control/messages.h"
#include "control/stream.h"
#include "json.h"

struct ctx {
	struct netmap nm;
	bool have;
	struct ctrlpin pin;
};

static bool on_record(const uint8_t *rec, size_t len, void *arg, char *msg, size_t msglen)
{
	struct ctx *c = arg;
	struct json *j = json_parse_max((const char *)rec, len, len, NULL);
	struct netmap_delta d;
	struct register_response r;
	struct netmap nm;
	const char *t;
	char err[160];

	if (!j)
		return true;
	t = messages_type(j);
	if (t && (strcmp(t, "full") == 0 || strcmp(t, "delta") == 0)) {
		struct ctrlpin_keys k;
		uint8_t session[CHANNEL_KEY_LEN];

		memcpy(session, c->pin.key, sizeof(session));
		if (ctrlpin_keys_from_json(j, &k, err, sizeof(err)))
			ctrlpin_learn(&c->pin, session, &k);
	}
	if (t && strcmp(t, "full") == 0) {
		if (netmap_from_json(j, &nm, err, sizeof(err))) {
			struct json *back = netmap_to_json(&nm);

			json_free(back);
			netmap_free(&c->nm);
			c->nm = nm;
			c->have = true;
		}
	} else if (t && strcmp(t, "delta") == 0) {
		if (netmap_delta_from_json(j, &d, err, sizeof(err))) {
			if (c->have)
				netmap_apply_delta(&c->nm, &d, err, sizeof(err));
			netmap_delta_free(&d);
		}
	} else if (register_response_from_json(j, &r, err, sizeof(err))) {
		register_response_free(&r);
	}
	json_free(j);
	return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ctx c = { 0 };
	struct stream s;
	size_t chunk, off = 1;

	if (size < 1)
		return 0;
	chunk = (size_t)data[0] + 1;
	stream_init(&s, 1 << 20);
	while (off < size) {
		size_t n = size - off < chunk ? size - off : chunk;

		if (!stream_feed(&s, data + off, n, on_record, &c))
			break;
		off += n;
	}
	stream_free(&s);
	netmap_free(&c.nm);
	return 0;
}
