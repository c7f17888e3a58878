/* The pinned control key and the key announced to follow it (issue 15.10,
 * docs/control-protocol.md "Control key rotation"). Map records that carry
 * "controlKey" carry the server's whole key set: "controlKey" (the key it
 * serves as current) and "nextControlKey" (the key it will switch to, or
 * absent/null). An agent learns them only from a record that came over a
 * session authenticated with the key it pins (or the next key that key
 * announced), so it never trusts a key the pinned one did not tell it. */
#ifndef KNIT_CONTROL_CTRLPIN_H
#define KNIT_CONTROL_CTRLPIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "control/channel.h"

struct json;

struct ctrlpin {
	uint8_t key[CHANNEL_KEY_LEN]; /* pinned */
	uint8_t next[CHANNEL_KEY_LEN]; /* announced by the pinned key */
	bool has_next;
};

/* A record's key set. */
struct ctrlpin_keys {
	bool has; /* the record carries "controlKey" */
	uint8_t current[CHANNEL_KEY_LEN];
	bool has_next;
	uint8_t next[CHANNEL_KEY_LEN];
};

/* Reads the key set of a map record (full netmap or delta). false (and a
 * reason in err) for a malformed key. */
bool ctrlpin_keys_from_json(const struct json *rec, struct ctrlpin_keys *out, char *err, size_t errlen);
/* Members "controlKey" and "nextControlKey" (next NULL: null) on o. 0 or
 * -ENOMEM. */
int ctrlpin_keys_to_json(struct json *o, const uint8_t current[CHANNEL_KEY_LEN], const uint8_t *next);

enum {
	CTRLPIN_UNTRUSTED = 1u << 0, /* the session's key is neither pinned nor announced: ignored */
	CTRLPIN_NEXT_SAVED = 1u << 1, /* pin->next changed (set or cleared) */
	CTRLPIN_SWITCHED = 1u << 2, /* pin->key changed */
};

/* Applies keys, which came over a session with session_key, to pin.
 * Returns CTRLPIN_* flags (0: nothing changed). */
unsigned ctrlpin_learn(struct ctrlpin *pin, const uint8_t session_key[CHANNEL_KEY_LEN],
		       const struct ctrlpin_keys *keys);

#endif
