/* The AuthKey reconciler's pure half: the status an AuthKey should have,
 * from the AuthKey and what its Secret holds. */
#ifndef KNIT_OPERATOR_AUTHKEY_H
#define KNIT_OPERATOR_AUTHKEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct json;

/* What the reconciler found in the key's Secret. */
struct authkey_secret {
	const char *name; /* "<authkey>-authkey" */
	bool conflict; /* a Secret of that name that the AuthKey does not own */
	const char *prefix, *hash; /* of the key it holds; NULL: it holds none */
};

enum authkey_step {
	AUTHKEY_DONE, /* status is what it should be */
	AUTHKEY_NEED_SECRET, /* call again with the Secret's facts */
};

/* The Secret's name for AuthKey name; false if too long for one. */
bool authkey_secret_name(const char *name, char *out, size_t outlen);
/* Updates status (a copy of the current one). secret is NULL before the
 * Secret was looked at: the spec is checked first, and AUTHKEY_NEED_SECRET
 * asks for it when the spec is good. *requeue_ms: when to look again (the
 * key's expiry). */
/* spec.expiry "0s" (any zero duration): the key never expires (the
 * bootstrapped node key's default, so it ships no dated outage). */
bool authkey_never_expires(const struct json *ak);
enum authkey_step authkey_desired_status(const struct json *ak, const struct authkey_secret *secret, time_t now,
					 struct json *status, uint64_t *requeue_ms);

#endif
