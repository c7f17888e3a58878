/* The pinned control key and its announced successor: see ctrlpin.h. */
#include <errno.h>
#include <string.h>

#include <sodium.h>

#include "control/ctrlpin.h"
#include "control/fields.h"
#include "json.h"

bool ctrlpin_keys_from_json(const struct json *rec, struct ctrlpin_keys *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	return fields_get_key(rec, "", "controlKey", "ctrlkey:", false, out->current, &out->has, err, errlen) &&
	       fields_get_key(rec, "", "nextControlKey", "ctrlkey:", false, out->next, &out->has_next, err, errlen) &&
	       (out->has || !out->has_next || fields_fail(err, errlen, "nextControlKey: without controlKey"));
}

int ctrlpin_keys_to_json(struct json *o, const uint8_t current[CHANNEL_KEY_LEN], const uint8_t *next)
{
	char text[80];
	int err = 0;

	channel_key_format(current, "ctrlkey:", text, sizeof(text));
	json_put_str(o, "controlKey", text, &err);
	if (next) {
		channel_key_format(next, "ctrlkey:", text, sizeof(text));
		json_put_str(o, "nextControlKey", text, &err);
	} else {
		json_put(o, "nextControlKey", json_new_null(), &err);
	}
	return err;
}

unsigned ctrlpin_learn(struct ctrlpin *pin, const uint8_t session_key[CHANNEL_KEY_LEN],
		       const struct ctrlpin_keys *keys)
{
	unsigned changed = 0;

	if (!keys->has)
		return 0;
	if (sodium_memcmp(session_key, pin->key, CHANNEL_KEY_LEN) != 0 &&
	    (!pin->has_next || sodium_memcmp(session_key, pin->next, CHANNEL_KEY_LEN) != 0))
		return CTRLPIN_UNTRUSTED;
	/* Told by a key we trust: the server's current key becomes the pin
	 * (an agent that slept through the announcement learns it here, over
	 * a session its old pin authenticated), the next one is kept. */
	if (sodium_memcmp(keys->current, pin->key, CHANNEL_KEY_LEN) != 0) {
		memcpy(pin->key, keys->current, CHANNEL_KEY_LEN);
		changed |= CTRLPIN_SWITCHED;
	}
	if (keys->has_next && sodium_memcmp(keys->next, pin->key, CHANNEL_KEY_LEN) != 0) {
		if (!pin->has_next || sodium_memcmp(keys->next, pin->next, CHANNEL_KEY_LEN) != 0)
			changed |= CTRLPIN_NEXT_SAVED;
		memcpy(pin->next, keys->next, CHANNEL_KEY_LEN);
		pin->has_next = true;
	} else if (pin->has_next) {
		sodium_memzero(pin->next, CHANNEL_KEY_LEN);
		pin->has_next = false;
		changed |= CTRLPIN_NEXT_SAVED;
	}
	return changed;
}
