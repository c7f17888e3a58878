#include "control/client.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "buf.h"
#include "control/messages.h"
#include "control/stream.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "loop.h"
#include "wg/noise.h"

#define WHY_LEN 256
#define ERRTEXT_MAX 512 /* what we keep of a plain-text error body */
#define BARE_MAX (64u << 10) /* a map request answered with one frame */
#define KEY_BODY_MAX 4096
#define CALL_BODY_MAX (4u << 20)

enum hs_kind { HS_CALL, HS_MAP };

/* One handshake: fetch the control key if none is pinned, then message 1
 * out, message 2 back. */
struct hs {
	struct control_client *c;
	enum hs_kind kind;
	struct channel_initiator init;
	struct http_request *req;
};

struct control_call {
	struct control_client *c;
	struct control_call *prev, *next;
	char *body; /* the request JSON; may hold an auth key */
	size_t len;
	control_call_fn cb;
	void *arg;
	struct http_request *req;
	uint64_t gen; /* the call session it was sealed with */
	bool retried; /* re-sent after a 401 */
	bool in_cb;
};

enum map_state { MAP_OFF, MAP_WAIT, MAP_HANDSHAKE, MAP_REQUEST };

struct control_client {
	struct loop *loop;
	struct http_client *http;
	bool own_http; /* made here (not opts.http): freed here */
	struct control_client_opts o;
	char *url;
	uint8_t machine_priv[CHANNEL_KEY_LEN];
	uint8_t server_pub[CHANNEL_KEY_LEN];
	bool have_server_key;
	/* The key announced to follow the pinned one (control_client_set_keys):
	 * tried in turn with server_pub whenever a handshake is refused. */
	uint8_t alt_pub[CHANNEL_KEY_LEN];
	bool have_alt_key;
	uint8_t last_ts[CHANNEL_TAI64N_LEN];

	/* Calls share one session. */
	struct channel_session call_sess;
	bool call_ready;
	uint64_t call_gen;
	struct hs *call_hs;
	struct control_call *calls;

	/* The map stream owns its connection's session. */
	enum map_state map_state;
	char *map_req;
	size_t map_req_len;
	struct hs *map_hs;
	struct http_request *map_http;
	struct channel_session map_sess;
	long map_status;
	struct stream map_stream;
	uint8_t map_head[8]; /* decides record stream vs. one bare frame */
	size_t map_head_len;
	bool map_bare;
	struct buf map_body; /* bare frame, or error text */
	bool map_up;
	uint64_t map_up_since;
	unsigned map_attempt;
	uint64_t map_gen; /* bumped whenever a connection is torn down */
	struct loop_timer *map_retry, *map_stall;
};

static void whyf(char *why, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void whyf(char *why, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, WHY_LEN, fmt, ap);
	va_end(ap);
}

static char *url_for(struct control_client *c, const char *path)
{
	char *u = NULL;

	if (asprintf(&u, "%s%s", c->url, path) < 0)
		return NULL;
	return u;
}

/* TAI64N for message 1, strictly newer than the last one we sent: the
 * server refuses a timestamp it has seen from this machine key, and
 * noise_tai64n() rounds to 2^24 ns, so two handshakes in a row (a call's
 * and the map's) would otherwise tie. */
static void next_timestamp(struct control_client *c, uint8_t ts[CHANNEL_TAI64N_LEN])
{
	struct timespec now;

	clock_gettime(CLOCK_REALTIME, &now);
	noise_tai64n(ts, &now);
	if (memcmp(ts, c->last_ts, CHANNEL_TAI64N_LEN) <= 0) {
		uint64_t sec = 0;
		uint32_t ns = 0;

		for (int i = 0; i < 8; i++)
			sec = sec << 8 | c->last_ts[i];
		for (int i = 8; i < 12; i++)
			ns = ns << 8 | c->last_ts[i];
		if (++ns >= 1000000000u) {
			ns = 0;
			sec++;
		}
		for (int i = 7; i >= 0; i--, sec >>= 8)
			ts[i] = (uint8_t)sec;
		for (int i = 11; i >= 8; i--, ns >>= 8)
			ts[i] = (uint8_t)ns;
	}
	memcpy(c->last_ts, ts, CHANNEL_TAI64N_LEN);
}

/* "503: not serving: ..." from a plain-text error body. */
static void status_why(char *why, const char *what, long status, const struct buf *body)
{
	char text[160];
	size_t n = 0;

	for (size_t i = 0; body && i < body->len && n + 1 < sizeof(text); i++) {
		uint8_t ch = body->data[i];

		if (ch == '\n' || ch == '\r')
			break;
		text[n++] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
	}
	text[n] = '\0';
	whyf(why, "%s: HTTP %ld%s%s", what, status, n ? ": " : "", text);
}

static int status_err(long status)
{
	if (status == 401)
		return -EACCES;
	if (status == 429 || status == 503)
		return -EAGAIN;
	return -EPROTO;
}

/* ---- handshakes ---------------------------------------------------------- */

static void call_session_ready(struct control_client *c, int err, const char *why, struct channel_session *s);
static void map_session_ready(struct control_client *c, int err, const char *why, struct channel_session *s);

static void hs_free(struct hs *hs)
{
	if (!hs)
		return;
	if (hs->req)
		http_request_cancel(hs->req);
	sodium_memzero(&hs->init, sizeof(hs->init));
	free(hs);
}

/* Detaches hs from its client, frees it, and reports. */
static void hs_finish(struct hs *hs, int err, const char *why, struct channel_session *s)
{
	struct control_client *c = hs->c;
	enum hs_kind kind = hs->kind;

	if (kind == HS_CALL)
		c->call_hs = NULL;
	else
		c->map_hs = NULL;
	hs->req = NULL; /* finished: nothing to cancel */
	hs_free(hs);
	if (kind == HS_CALL)
		call_session_ready(c, err, why, s);
	else
		map_session_ready(c, err, why, s);
}

static void hs_fail(struct hs *hs, int err, const char *why)
{
	hs_finish(hs, err, why, NULL);
}

static void on_handshake_done(struct http_request *r, const struct http_result *res, void *arg)
{
	struct hs *hs = arg;
	struct control_client *c = hs->c;
	struct channel_session s;
	char why[WHY_LEN], key[MESSAGES_KEY_TEXT_LEN];
	int err;

	hs->req = NULL;
	if (res->err) {
		whyf(why, "control server %s: handshake: %s", c->url, res->errmsg);
		hs_fail(hs, res->err, why);
		return;
	}
	if (res->status != 200) {
		char what[WHY_LEN];

		snprintf(what, sizeof(what), "control server %s refused the handshake", c->url);
		status_why(why, what, res->status, res->body);
		if (res->status == 400 && c->have_alt_key) {
			/* Perhaps it moved on to the announced key (we slept through
			 * the rotation): the next handshake tries that one. */
			uint8_t t[CHANNEL_KEY_LEN];

			memcpy(t, c->server_pub, CHANNEL_KEY_LEN);
			memcpy(c->server_pub, c->alt_pub, CHANNEL_KEY_LEN);
			memcpy(c->alt_pub, t, CHANNEL_KEY_LEN);
		}
		hs_fail(hs, status_err(res->status) == -EACCES ? -EPROTO : status_err(res->status), why);
		return;
	}
	err = channel_finish(&hs->init, res->body->data, res->body->len, &s);
	if (err) {
		channel_key_format(c->server_pub, "ctrlkey:", key, sizeof(key));
		whyf(why, "control server %s did not prove it holds %s (its handshake answer does not "
		     "authenticate): a server with another key, or something in between", c->url, key);
		hs_fail(hs, -EKEYREJECTED, why);
		return;
	}
	hs_finish(hs, 0, NULL, &s);
	channel_session_wipe(&s);
}

/* Sends message 1. Returns 0 or a negative errno; on error hs is untouched
 * and nothing is in flight. */
static int hs_send(struct hs *hs)
{
	struct control_client *c = hs->c;
	uint8_t msg1[CHANNEL_MSG1_LEN], ts[CHANNEL_TAI64N_LEN];
	static const char *const hdrs[] = { "Content-Type: application/octet-stream", NULL };
	struct http_opts o = {
		.method = "POST",
		.headers = hdrs,
		.body = msg1,
		.body_len = sizeof(msg1),
		.timeout_ms = c->o.call_timeout_ms,
		.max_body = 4096,
		.on_done = on_handshake_done,
		.arg = hs,
	};
	char *url = url_for(c, "/knit/v1/handshake");
	int err;

	next_timestamp(c, ts);
	err = url ? channel_initiate(&hs->init, c->machine_priv, c->server_pub, ts, msg1) : -ENOMEM;
	if (!err) {
		o.url = url;
		err = http_request_start(c->http, &o, &hs->req);
	}
	sodium_memzero(msg1, sizeof(msg1));
	free(url);
	return err;
}

static void on_key_done(struct http_request *r, const struct http_result *res, void *arg)
{
	struct hs *hs = arg;
	struct control_client *c = hs->c;
	struct json *j = NULL;
	uint8_t key[CHANNEL_KEY_LEN];
	char why[WHY_LEN], text[MESSAGES_KEY_TEXT_LEN];
	int err;

	hs->req = NULL;
	if (res->err) {
		whyf(why, "control server %s: fetching its key: %s", c->url, res->errmsg);
		hs_fail(hs, res->err, why);
		return;
	}
	if (res->status != 200) {
		char what[WHY_LEN];

		snprintf(what, sizeof(what), "control server %s: GET /knit/v1/key", c->url);
		status_why(why, what, res->status, res->body);
		hs_fail(hs, status_err(res->status) == -EACCES ? -EPROTO : status_err(res->status), why);
		return;
	}
	j = json_parse((const char *)res->body->data, res->body->len, NULL);
	if (!channel_key_parse(json_str(json_get(j, "controlKey")), "ctrlkey:", key)) {
		json_free(j);
		whyf(why, "control server %s: GET /knit/v1/key did not answer {\"controlKey\":\"ctrlkey:...\"}",
		     c->url);
		hs_fail(hs, -EPROTO, why);
		return;
	}
	json_free(j);
	channel_key_format(key, "ctrlkey:", text, sizeof(text));
	if (c->have_server_key) {
		/* Another handshake pinned one meanwhile. */
		if (memcmp(key, c->server_pub, CHANNEL_KEY_LEN) != 0) {
			whyf(why, "control server %s now offers %s, not the key pinned moments ago", c->url, text);
			hs_fail(hs, -EKEYREJECTED, why);
			return;
		}
	} else if (!c->o.on_control_key(c, key, c->o.arg)) {
		whyf(why, "control server %s offered %s and it was not accepted", c->url, text);
		hs_fail(hs, -EKEYREJECTED, why);
		return;
	} else {
		memcpy(c->server_pub, key, CHANNEL_KEY_LEN);
		c->have_server_key = true;
		log_info("control key trusted on first use", "server=%s key=%s", c->url, text);
	}
	err = hs_send(hs);
	if (err) {
		whyf(why, "control server %s: cannot start the handshake: %s", c->url, strerror(-err));
		hs_fail(hs, err, why);
	}
}

/* Starts a handshake of this kind; its outcome arrives later through
 * call_session_ready() / map_session_ready(). On error nothing runs. */
static int hs_start(struct control_client *c, enum hs_kind kind, struct hs **out)
{
	struct hs *hs = calloc(1, sizeof(*hs));
	struct http_opts o = {
		.timeout_ms = c->o.call_timeout_ms,
		.max_body = KEY_BODY_MAX,
		.on_done = on_key_done,
	};
	char *url;
	int err;

	if (!hs)
		return -ENOMEM;
	hs->c = c;
	hs->kind = kind;
	if (c->have_server_key) {
		err = hs_send(hs);
	} else if (!(url = url_for(c, "/knit/v1/key"))) {
		err = -ENOMEM;
	} else {
		o.url = url;
		o.arg = hs;
		err = http_request_start(c->http, &o, &hs->req);
		free(url);
	}
	if (err) {
		hs_free(hs);
		return err;
	}
	*out = hs;
	return 0;
}

/* ---- calls ------------------------------------------------------------------ */

static void call_free(struct control_call *call)
{
	if (call->req)
		http_request_cancel(call->req);
	if (call->body) {
		sodium_memzero(call->body, call->len);
		free(call->body);
	}
	free(call);
}

static void call_unlink(struct control_call *call)
{
	struct control_client *c = call->c;

	if (call->prev)
		call->prev->next = call->next;
	else if (c->calls == call)
		c->calls = call->next;
	if (call->next)
		call->next->prev = call->prev;
	call->prev = call->next = NULL;
}

static void call_finish(struct control_call *call, int err, const struct json *resp, const char *why)
{
	call_unlink(call);
	call->req = NULL;
	call->in_cb = true;
	call->cb(call->c, err, resp, why ? why : "", call->arg);
	call_free(call);
}

void control_call_cancel(struct control_call *call)
{
	if (!call || call->in_cb)
		return;
	call_unlink(call);
	call_free(call);
}

static void call_resend(struct control_call *call);

static void on_call_done(struct http_request *r, const struct http_result *res, void *arg)
{
	struct control_call *call = arg;
	struct control_client *c = call->c;
	struct buf plain = BUF_INIT(CALL_BODY_MAX);
	struct json_error je;
	struct json *j;
	char why[WHY_LEN];
	int err;

	call->req = NULL;
	if (res->err) {
		whyf(why, "control server %s: %s", c->url, res->errmsg);
		call_finish(call, res->err, NULL, why);
		return;
	}
	if (res->status == 401) {
		/* The server forgot our session (restart, idle): a new one,
		 * and the call once more. */
		if (call->gen == c->call_gen && c->call_ready) {
			c->call_ready = false;
			channel_session_wipe(&c->call_sess);
		}
		if (call->retried) {
			status_why(why, "control server refused a fresh session", res->status, res->body);
			call_finish(call, -EACCES, NULL, why);
			return;
		}
		call->retried = true;
		call_resend(call);
		return;
	}
	if (res->status != 200) {
		char what[WHY_LEN];

		snprintf(what, sizeof(what), "control server %s", c->url);
		status_why(why, what, res->status, res->body);
		call_finish(call, status_err(res->status), NULL, why);
		return;
	}
	if (call->gen != c->call_gen || !c->call_ready) {
		whyf(why, "control server %s: the session was replaced while the call was in flight", c->url);
		call_finish(call, -EKEYREJECTED, NULL, why);
		return;
	}
	err = channel_open(&c->call_sess, res->body->data, res->body->len, &plain);
	if (err) {
		whyf(why, "control server %s: its answer does not open (%s)", c->url, strerror(-err));
		buf_free(&plain);
		call_finish(call, -EKEYREJECTED, NULL, why);
		return;
	}
	j = json_parse((const char *)plain.data, plain.len, &je);
	buf_free_secure(&plain);
	if (!j || !json_is_object(j)) {
		whyf(why, "control server %s: its answer is not a JSON object%s%s", c->url, j ? "" : ": ",
		     j ? "" : je.msg);
		json_free(j);
		call_finish(call, -EPROTO, NULL, why);
		return;
	}
	call_finish(call, 0, j, NULL);
	messages_json_free_secret(j);
}

/* Seals and posts call, or queues it behind the call session's handshake.
 * Returns 0 or a negative errno (nothing in flight, no callback run). */
static int call_send(struct control_call *call)
{
	struct control_client *c = call->c;
	struct buf frame = BUF_INIT(CALL_BODY_MAX + CHANNEL_OVERHEAD);
	static const char *const hdrs[] = { "Content-Type: application/octet-stream", NULL };
	struct http_opts o = {
		.method = "POST",
		.headers = hdrs,
		.timeout_ms = c->o.call_timeout_ms,
		.max_body = CALL_BODY_MAX + CHANNEL_OVERHEAD,
		.on_done = on_call_done,
		.arg = call,
	};
	char *url;
	int err;

	if (!c->call_ready)
		/* Sent from call_session_ready(). */
		return c->call_hs ? 0 : hs_start(c, HS_CALL, &c->call_hs);
	url = url_for(c, "/knit/v1/call");
	err = url ? channel_seal(&c->call_sess, call->body, call->len, &frame) : -ENOMEM;
	if (!err) {
		o.url = url;
		o.body = frame.data;
		o.body_len = frame.len;
		call->gen = c->call_gen;
		err = http_request_start(c->http, &o, &call->req);
	}
	free(url);
	buf_free(&frame);
	if (err == -EOVERFLOW) {
		/* Counter exhausted: the next call makes a new session. */
		c->call_ready = false;
		channel_session_wipe(&c->call_sess);
	}
	return err;
}

static void call_resend(struct control_call *call)
{
	char why[WHY_LEN];
	int err = call_send(call);

	if (err) {
		whyf(why, "control server %s: cannot send the call: %s", call->c->url, strerror(-err));
		call_finish(call, err, NULL, why);
	}
}

static void call_session_ready(struct control_client *c, int err, const char *why, struct channel_session *s)
{
	struct control_call *call;

	if (!err) {
		c->call_sess = *s;
		c->call_ready = true;
		c->call_gen++;
	}
	/* Callbacks may add and cancel calls: rescan after each. */
	for (;;) {
		for (call = c->calls; call && (call->req || call->in_cb); call = call->next)
			;
		if (!call || c->call_hs)
			break;
		if (err)
			call_finish(call, err, NULL, why);
		else
			call_resend(call);
	}
}

int control_client_call(struct control_client *c, const struct json *req, control_call_fn cb, void *arg,
			struct control_call **out)
{
	struct buf text = BUF_INIT(CALL_BODY_MAX);
	struct control_call *call;
	int err;

	if (!json_is_object(req) || !cb)
		return -EINVAL;
	call = calloc(1, sizeof(*call));
	if (!call)
		return -ENOMEM;
	err = json_dump(req, &text, 0);
	if (err) {
		buf_free_secure(&text);
		free(call);
		return err;
	}
	call->c = c;
	call->cb = cb;
	call->arg = arg;
	call->body = buf_steal(&text, &call->len);
	if (!call->body) {
		buf_free_secure(&text);
		free(call);
		return -ENOMEM;
	}
	call->next = c->calls;
	if (c->calls)
		c->calls->prev = call;
	c->calls = call;
	if (out)
		*out = call;
	err = call_send(call);
	if (err) {
		call_unlink(call);
		call_free(call);
	}
	return err;
}

/* ---- the map stream ------------------------------------------------------------ */

static void map_connect(struct control_client *c);

/* Ends the current connection attempt, whatever stage it is at. */
static void map_teardown(struct control_client *c)
{
	c->map_gen++;
	if (c->map_hs) {
		hs_free(c->map_hs);
		c->map_hs = NULL;
	}
	if (c->map_http) {
		http_request_cancel(c->map_http);
		c->map_http = NULL;
	}
	channel_session_wipe(&c->map_sess);
	stream_free(&c->map_stream);
	buf_free_secure(&c->map_body);
	c->map_head_len = 0;
	c->map_bare = false;
	c->map_status = 0;
	loop_timer_disarm(c->map_stall);
	loop_timer_disarm(c->map_retry);
}

static uint64_t backoff(struct control_client *c)
{
	uint64_t d = c->o.backoff_min_ms;

	for (unsigned i = 0; i < c->map_attempt && d < c->o.backoff_max_ms; i++)
		d *= 2;
	if (d > c->o.backoff_max_ms)
		d = c->o.backoff_max_ms;
	if (c->map_attempt < 64)
		c->map_attempt++;
	/* Equal jitter: agents that lost the server together come back spread out. */
	return d / 2 + randombytes_uniform((uint32_t)(d / 2 + 1));
}

static void map_fail(struct control_client *c, int err, const char *why)
{
	bool was_up = c->map_up;
	uint64_t delay;

	if (was_up && loop_now(c->loop) - c->map_up_since >= c->o.stable_ms)
		c->map_attempt = 0;
	map_teardown(c);
	c->map_up = false;
	delay = backoff(c);
	c->map_state = MAP_WAIT;
	loop_timer_arm(c->map_retry, delay);
	log_warn("map stream down", "server=%s err=%d retry_ms=%llu why=\"%s\"", c->url, err,
		 (unsigned long long)delay, why);
	if (c->o.on_map_state)
		c->o.on_map_state(c, false, err, why, delay, c->o.arg);
}

static void on_map_retry(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct control_client *c = arg;

	if (c->map_state == MAP_WAIT)
		map_connect(c);
}

static void on_map_stall(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct control_client *c = arg;
	char why[WHY_LEN];

	whyf(why, "control server %s: nothing on the map stream for %u ms", c->url, c->o.stall_timeout_ms);
	map_fail(c, -ETIMEDOUT, why);
}

/* An opened, parsed record: to the caller. False if the connection is gone
 * (torn down by the caller or failed here). */
static bool map_deliver(struct control_client *c, const struct json *j)
{
	uint64_t gen = c->map_gen;
	const char *code, *msg;
	char why[WHY_LEN];
	bool ok;

	loop_timer_arm(c->map_stall, c->o.stall_timeout_ms);
	if (!c->map_up && !messages_error(j, NULL, NULL)) {
		c->map_up = true;
		c->map_up_since = loop_now(c->loop);
		if (c->o.on_map_state) {
			c->o.on_map_state(c, true, 0, "", 0, c->o.arg);
			if (gen != c->map_gen)
				return false;
		}
	}
	ok = c->o.on_record(c, j, c->o.arg);
	if (gen != c->map_gen)
		return false;
	if (messages_error(j, &code, &msg)) {
		whyf(why, "control server %s refused the map stream: %s%s%s", c->url, code, *code ? ": " : "", msg);
		map_fail(c, -EPROTO, why);
		return false;
	}
	if (!ok) {
		whyf(why, "control server %s: a map record was not usable; starting over", c->url);
		map_fail(c, -EBADMSG, why);
		return false;
	}
	return true;
}

/* Opens and parses one frame; false (with why) if it does not. */
static bool map_open(struct control_client *c, const uint8_t *frame, size_t len, struct json **out,
		     char *why, size_t whylen)
{
	struct buf plain = BUF_INIT(c->o.max_record);
	struct json_error je;
	int err;

	*out = NULL;
	err = channel_open(&c->map_sess, frame, len, &plain);
	if (err) {
		snprintf(why, whylen, "a map record does not open (%s)", strerror(-err));
		buf_free(&plain);
		return false;
	}
	if (c->o.on_record_text && !c->o.on_record_text(c, (const char *)buf_str(&plain), plain.len, c->o.arg)) {
		buf_free(&plain);
		return true; /* skipped: *out stays NULL */
	}
	*out = json_parse_max((const char *)buf_str(&plain), plain.len, c->o.max_record, &je);
	buf_free(&plain);
	if (!*out || !json_is_object(*out)) {
		snprintf(why, whylen, "a map record is not a JSON object%s%.120s", *out ? "" : ": ",
			 *out ? "" : je.msg);
		json_free(*out);
		*out = NULL;
		return false;
	}
	return true;
}

struct feed_ctx {
	struct control_client *c;
	bool gone; /* the connection was torn down inside a callback */
};

static bool on_map_frame(const uint8_t *rec, size_t len, void *arg, char *msg, size_t msglen)
{
	struct feed_ctx *f = arg;
	struct json *j;
	bool ok;

	if (!map_open(f->c, rec, len, &j, msg, msglen))
		return false;
	if (!j) {
		loop_timer_arm(f->c->map_stall, f->c->o.stall_timeout_ms);
		return true;
	}
	ok = map_deliver(f->c, j);
	json_free(j);
	if (!ok)
		f->gone = true;
	return ok;
}

static int on_map_headers(struct http_request *r, long status, void *arg)
{
	struct control_client *c = arg;

	c->map_status = status;
	buf_init(&c->map_body, status == 200 ? BARE_MAX : ERRTEXT_MAX);
	return 0;
}

static int map_feed(struct control_client *c, const uint8_t *p, size_t len)
{
	struct feed_ctx f = { .c = c };
	char why[WHY_LEN];

	if (c->map_bare) {
		if (buf_add(&c->map_body, p, len)) {
			whyf(why, "control server %s: map answer over %u bytes", c->url, BARE_MAX);
			map_fail(c, -EMSGSIZE, why);
			return -EMSGSIZE;
		}
		return 0;
	}
	if (stream_feed(&c->map_stream, p, len, on_map_frame, &f))
		return 0;
	if (f.gone)
		return -ECANCELED;
	whyf(why, "control server %s: %s", c->url, stream_error(&c->map_stream));
	map_fail(c, -EBADMSG, why);
	return -EBADMSG;
}

static int on_map_data(struct http_request *r, const void *data, size_t len, void *arg)
{
	struct control_client *c = arg;
	const uint8_t *p = data;
	uint64_t id;
	size_t take;
	int err;

	if (c->map_status != 200) {
		/* Plain-text error: keep the start for the message. */
		if (c->map_body.len < ERRTEXT_MAX)
			buf_add(&c->map_body, p, len < ERRTEXT_MAX - c->map_body.len ? len : ERRTEXT_MAX - c->map_body.len);
		return 0;
	}
	if (c->map_head_len < sizeof(c->map_head)) {
		/* A record starts with its length, an application error
		 * answered as one bare frame with our session id: the first
		 * eight bytes tell them apart. */
		take = sizeof(c->map_head) - c->map_head_len;
		if (take > len)
			take = len;
		memcpy(c->map_head + c->map_head_len, p, take);
		c->map_head_len += take;
		p += take;
		len -= take;
		if (c->map_head_len < sizeof(c->map_head))
			return 0;
		memcpy(&id, c->map_head, sizeof(id)); /* as channel_seal() writes it */
		c->map_bare = id == c->map_sess.id;
		if ((err = map_feed(c, c->map_head, sizeof(c->map_head))))
			return err;
	}
	return len ? map_feed(c, p, len) : 0;
}

static void on_map_done(struct http_request *r, const struct http_result *res, void *arg)
{
	struct control_client *c = arg;
	char why[WHY_LEN];
	struct json *j;

	c->map_http = NULL;
	if (res->err) {
		whyf(why, "control server %s: map stream: %s", c->url, res->errmsg);
		map_fail(c, res->err, why);
		return;
	}
	if (res->status != 200) {
		char what[WHY_LEN];

		snprintf(what, sizeof(what), "control server %s refused the map request", c->url);
		status_why(why, what, res->status, &c->map_body);
		map_fail(c, status_err(res->status), why);
		return;
	}
	if (c->map_head_len < sizeof(c->map_head) && c->map_head_len > 0) {
		whyf(why, "control server %s: map answer of %zu bytes", c->url, c->map_head_len);
		map_fail(c, -EBADMSG, why);
		return;
	}
	if (c->map_bare) {
		char msg[WHY_LEN - 64];

		if (!map_open(c, c->map_body.data, c->map_body.len, &j, msg, sizeof(msg))) {
			whyf(why, "control server %s: %s", c->url, msg);
			map_fail(c, -EKEYREJECTED, why);
			return;
		}
		if (!j || map_deliver(c, j)) {
			whyf(why, "control server %s answered the map request without a stream", c->url);
			map_fail(c, -EPROTO, why);
		}
		json_free(j);
		return;
	}
	if (!stream_at_boundary(&c->map_stream)) {
		whyf(why, "control server %s: the map stream ended inside a record", c->url);
		map_fail(c, -EPIPE, why);
		return;
	}
	whyf(why, "control server %s closed the map stream", c->url);
	map_fail(c, -ECONNRESET, why);
}

static void map_session_ready(struct control_client *c, int err, const char *why, struct channel_session *s)
{
	struct buf frame = BUF_INIT(CALL_BODY_MAX + CHANNEL_OVERHEAD);
	static const char *const hdrs[] = { "Content-Type: application/octet-stream", NULL };
	struct http_opts o = {
		.method = "POST",
		.headers = hdrs,
		.on_headers = on_map_headers,
		.on_data = on_map_data,
		.on_done = on_map_done,
		.arg = c,
	};
	char buf[WHY_LEN];
	char *url;

	if (err) {
		map_fail(c, err, why);
		return;
	}
	c->map_sess = *s;
	stream_init(&c->map_stream, c->o.max_record + CHANNEL_OVERHEAD);
	url = url_for(c, "/knit/v1/map");
	err = url ? channel_seal(&c->map_sess, c->map_req, c->map_req_len, &frame) : -ENOMEM;
	if (!err) {
		o.url = url;
		o.body = frame.data;
		o.body_len = frame.len;
		err = http_request_start(c->http, &o, &c->map_http);
	}
	free(url);
	buf_free(&frame);
	if (err) {
		whyf(buf, "cannot send the map request: %s", strerror(-err));
		map_fail(c, err, buf);
		return;
	}
	c->map_state = MAP_REQUEST;
}

static void map_connect(struct control_client *c)
{
	char why[WHY_LEN];
	int err;

	map_teardown(c);
	c->map_state = MAP_HANDSHAKE;
	/* The stall timer covers the handshake and the first record too. */
	loop_timer_arm(c->map_stall, c->o.stall_timeout_ms);
	err = hs_start(c, HS_MAP, &c->map_hs);
	if (err) {
		whyf(why, "cannot start a handshake: %s", strerror(-err));
		map_fail(c, err, why);
	}
}

int control_client_map_start(struct control_client *c, const struct json *req)
{
	struct buf text = BUF_INIT(CALL_BODY_MAX);
	int err;

	if (!json_is_object(req) || !c->o.on_record)
		return -EINVAL;
	err = json_dump(req, &text, 0);
	if (err) {
		buf_free(&text);
		return err;
	}
	control_client_map_stop(c);
	c->map_req = buf_steal(&text, &c->map_req_len);
	if (!c->map_req)
		return -ENOMEM;
	c->map_attempt = 0;
	map_connect(c);
	return 0;
}

void control_client_map_stop(struct control_client *c)
{
	map_teardown(c);
	c->map_state = MAP_OFF;
	c->map_up = false;
	free(c->map_req);
	c->map_req = NULL;
	c->map_req_len = 0;
}

bool control_client_map_up(const struct control_client *c)
{
	return c->map_up;
}

/* ---- lifecycle -------------------------------------------------------------------- */

bool control_client_control_key(const struct control_client *c, uint8_t key[CHANNEL_KEY_LEN])
{
	if (!c->have_server_key)
		return false;
	memcpy(key, c->server_pub, CHANNEL_KEY_LEN);
	return true;
}

void control_client_set_keys(struct control_client *c, const uint8_t pin[CHANNEL_KEY_LEN],
			     const uint8_t *next)
{
	memcpy(c->server_pub, pin, CHANNEL_KEY_LEN);
	c->have_server_key = true;
	c->have_alt_key = next != NULL;
	if (next)
		memcpy(c->alt_pub, next, CHANNEL_KEY_LEN);
	else
		sodium_memzero(c->alt_pub, CHANNEL_KEY_LEN);
}

bool control_client_map_key(const struct control_client *c, uint8_t key[CHANNEL_KEY_LEN])
{
	if (c->map_state != MAP_REQUEST)
		return false;
	memcpy(key, c->map_sess.peer_static, CHANNEL_KEY_LEN);
	return true;
}

int control_client_new(struct loop *loop, const struct control_client_opts *o, struct control_client **out)
{
	struct control_client *c;
	size_t n;

	if (!o->server_url || !o->machine_priv || (!o->control_key && !o->on_control_key) ||
	    (strncmp(o->server_url, "http://", 7) && strncmp(o->server_url, "https://", 8)))
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->loop = loop;
	c->o = *o;
	c->o.server_url = NULL;
	c->o.machine_priv = NULL;
	c->o.control_key = NULL;
	if (!c->o.call_timeout_ms)
		c->o.call_timeout_ms = CONTROL_CALL_TIMEOUT_DEFAULT_MS;
	if (!c->o.stall_timeout_ms)
		c->o.stall_timeout_ms = CONTROL_STALL_TIMEOUT_DEFAULT_MS;
	if (!c->o.backoff_min_ms)
		c->o.backoff_min_ms = CONTROL_BACKOFF_MIN_DEFAULT_MS;
	if (!c->o.backoff_max_ms)
		c->o.backoff_max_ms = CONTROL_BACKOFF_MAX_DEFAULT_MS;
	if (c->o.backoff_max_ms < c->o.backoff_min_ms)
		c->o.backoff_max_ms = c->o.backoff_min_ms;
	if (!c->o.stable_ms)
		c->o.stable_ms = CONTROL_STABLE_DEFAULT_MS;
	if (!c->o.max_record)
		c->o.max_record = CONTROL_MAX_RECORD_DEFAULT;
	memcpy(c->machine_priv, o->machine_priv, CHANNEL_KEY_LEN);
	if (o->control_key) {
		memcpy(c->server_pub, o->control_key, CHANNEL_KEY_LEN);
		c->have_server_key = true;
	}
	c->url = strdup(o->server_url);
	c->http = o->http;
	if (!c->http) {
		c->http = http_client_new(loop);
		c->own_http = true;
	}
	c->map_retry = loop_timer_new(loop, on_map_retry, c);
	c->map_stall = loop_timer_new(loop, on_map_stall, c);
	if (!c->url || !c->http || !c->map_retry || !c->map_stall) {
		control_client_free(c);
		return -ENOMEM;
	}
	n = strlen(c->url);
	while (n > 0 && c->url[n - 1] == '/')
		c->url[--n] = '\0';
	stream_init(&c->map_stream, 0);
	buf_init(&c->map_body, BARE_MAX);
	*out = c;
	return 0;
}

void control_client_free(struct control_client *c)
{
	if (!c)
		return;
	if (c->map_retry && c->map_stall)
		control_client_map_stop(c);
	while (c->calls) {
		struct control_call *call = c->calls;

		call_unlink(call);
		call_free(call);
	}
	hs_free(c->call_hs);
	if (c->own_http)
		http_client_free(c->http);
	loop_timer_free(c->map_retry);
	loop_timer_free(c->map_stall);
	channel_session_wipe(&c->call_sess);
	channel_session_wipe(&c->map_sess);
	sodium_memzero(c->machine_priv, sizeof(c->machine_priv));
	free(c->url);
	free(c);
}
