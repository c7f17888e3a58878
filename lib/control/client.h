/* The agent's end of the control protocol (docs/control-protocol.md) on a
 * knit event loop: calls (register, update, logout) and the map stream.
 *
 * Sessions: calls share one session, made by a handshake when the first
 * call needs it and again when the server answers 401 (then the call is
 * sent once more). A map request takes its session over, so every map
 * connection makes a session of its own.
 *
 * The control key: pinned by the caller, or (none pinned) fetched from
 * GET /knit/v1/key before the first handshake and offered to
 * on_control_key, which may refuse it; once accepted it is pinned for the
 * client's life. A handshake only succeeds with the server holding the
 * private half of the pinned key.
 *
 * The map stream reconnects by itself until control_client_map_stop():
 * after the stream ends or fails, after no record arrived for
 * stall_timeout_ms (the server sends a keepalive every 30 s), or after a
 * record that does not open. Delays grow from backoff_min_ms, doubling up
 * to backoff_max_ms, each picked at random in [d/2, d]; a stream that
 * stayed up stable_ms resets them.
 *
 * Everything runs on the loop thread. Callbacks may start and cancel calls
 * and stop or restart the map stream, but must not free the client. */
#ifndef KNIT_CONTROL_CLIENT_H
#define KNIT_CONTROL_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "control/channel.h"

struct http_client;
struct json;
struct loop;
struct control_client;
struct control_call;

/* A fetched control key, not yet trusted: return true to pin it (and
 * persist it), false to refuse (the handshake then fails with
 * -EKEYREJECTED). */
typedef bool (*control_key_fn)(struct control_client *c, const uint8_t key[CHANNEL_KEY_LEN], void *arg);
/* One map stream record, opened and parsed: {"type":"full"...}, "delta",
 * "keepalive", or an application error {"error":...,"code":...} (after
 * which the stream is retried like a failed one). rec is valid until the
 * callback returns. Returning false drops the connection and reconnects
 * with a backoff (for a record the caller cannot use, say a delta that
 * does not apply: the next connection starts with a full netmap). */
typedef bool (*control_record_fn)(struct control_client *c, const struct json *rec, void *arg);
/* Optional: sees each opened map record's text before it is parsed;
 * returning false skips it (no parse, no on_record; it counts as a
 * delivered record). For clients that only look for something in the
 * stream (benchmarks, probes) and must not pay for parsing it all. */
typedef bool (*control_record_text_fn)(struct control_client *c, const char *text, size_t len, void *arg);
/* The map stream came up (its first record arrived) or went down; err and
 * why say why it went down, retry_ms when it is tried again. */
typedef void (*control_map_state_fn)(struct control_client *c, bool up, int err, const char *why,
				     uint64_t retry_ms, void *arg);
/* A call's outcome. err == 0: resp is the server's answer (possibly an
 * application error: see messages_error()), valid until the callback
 * returns. err < 0: no answer; why says what happened:
 *   -ECONNREFUSED, -ETIMEDOUT, ... the transport (see lib/http.h)
 *   -EKEYREJECTED  the server does not hold the pinned control key, the
 *                  caller refused a fetched key, or a frame did not open
 *   -EACCES        the server refused our session again after a re-handshake
 *   -EPROTO        an HTTP status other than 200/401, or a malformed answer
 *   -EAGAIN        429 or 503: the server is busy or not serving yet */
typedef void (*control_call_fn)(struct control_client *c, int err, const struct json *resp,
				const char *why, void *arg);

#define CONTROL_CALL_TIMEOUT_DEFAULT_MS 30000u
#define CONTROL_STALL_TIMEOUT_DEFAULT_MS 60000u
#define CONTROL_BACKOFF_MIN_DEFAULT_MS 1000u
#define CONTROL_BACKOFF_MAX_DEFAULT_MS 60000u
#define CONTROL_STABLE_DEFAULT_MS 60000u
#define CONTROL_MAX_RECORD_DEFAULT ((size_t)16 << 20)

struct control_client_opts {
	const char *server_url; /* "http://knit-control.knit-system:8080"; copied */
	const uint8_t *machine_priv; /* 32 bytes; copied, wiped on free */
	const uint8_t *control_key; /* 32 bytes to pin, or NULL: fetch it */
	control_key_fn on_control_key; /* required when control_key is NULL */
	control_record_fn on_record; /* required for the map stream */
	control_record_text_fn on_record_text; /* optional */
	control_map_state_fn on_map_state; /* optional */
	void *arg;

	uint32_t call_timeout_ms; /* each HTTP exchange (key, handshake, call); 0: default */
	uint32_t stall_timeout_ms; /* map: longest gap between records; 0: default */
	uint32_t backoff_min_ms, backoff_max_ms, stable_ms; /* 0: defaults */
	size_t max_record; /* 0: CONTROL_MAX_RECORD_DEFAULT */
	/* An HTTP client (one curl multi, one connection cache) to share with
	 * other control clients on the same loop, or NULL: the client makes
	 * its own. Many simulated agents in one process share one, so idle
	 * connections are reused instead of each agent keeping its own. It
	 * must outlive every client using it. */
	struct http_client *http;
};

/* Returns 0, -EINVAL (no URL, no key and no on_control_key, bad URL),
 * -ENOMEM. Nothing is sent until a call or the map stream starts. */
int control_client_new(struct loop *loop, const struct control_client_opts *o, struct control_client **out);
/* Cancels every call (no callback runs) and the map stream, and wipes the
 * keys. Not from inside the client's callbacks. NULL is a no-op. */
void control_client_free(struct control_client *c);

/* The control key in use, false if none is pinned yet. */
bool control_client_control_key(const struct control_client *c, uint8_t key[CHANNEL_KEY_LEN]);
/* Control key rotation (control/ctrlpin.h): pins pin, and keeps next (or
 * NULL) to try in turn with it whenever a handshake is refused (400). Live
 * sessions are kept. */
void control_client_set_keys(struct control_client *c, const uint8_t pin[CHANNEL_KEY_LEN], const uint8_t *next);
/* The control key the map stream's current session was made with (records
 * delivered to on_record came over it); false when no map request is up. */
bool control_client_map_key(const struct control_client *c, uint8_t key[CHANNEL_KEY_LEN]);

/* Sends req (a JSON object with "type") as a call; cb gets the outcome
 * exactly once unless the call is cancelled. The request text is wiped
 * when the call ends (register carries the auth key). *out (may be NULL)
 * is valid until cb runs. Returns 0, -ENOMEM or -EINVAL. */
int control_client_call(struct control_client *c, const struct json *req, control_call_fn cb, void *arg,
			struct control_call **out);
/* No callback of the call runs after this. */
void control_call_cancel(struct control_call *call);

/* Starts (or restarts, with a new request) the map stream: req is
 * {"type":"map","endpoints":[...]}, sent again on every reconnect. The
 * first connection is made at once. Returns 0, -ENOMEM or -EINVAL. */
int control_client_map_start(struct control_client *c, const struct json *req);
/* Drops the stream and stops reconnecting. */
void control_client_map_stop(struct control_client *c);
/* True while a map stream has delivered records and not failed since. */
bool control_client_map_up(const struct control_client *c);

#endif
