/* control/client.c against an in-test coordination server built from
 * lib/httpd and the channel: trust on first use, pinned keys, calls, 401
 * and re-handshake, the map stream (full, delta, keepalive), reconnects
 * with backoff after drops and stalls, application errors, clean stops.
 * Client and server share one loop in the test's thread. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "buf.h"
#include "control/channel.h"
#include "control/client.h"
#include "control/messages.h"
#include "control/stream.h"
#include "httpd.h"
#include "json.h"
#include "log.h"
#include "loop.h"
#include "wg/aead.h"

#define TEST_DEADLINE_S 60
#define WAIT_MS 5000
#define MAX_SESS 32

#define H8(c) c c c c c c c c
#define H64(c) H8(c) H8(c) H8(c) H8(c) H8(c) H8(c) H8(c) H8(c)
#define NK(c) "\"nodekey:" H64(c) "\""

/* ---- the in-test server ----------------------------------------------------- */

struct srv {
	struct loop *loop;
	struct httpd *h;
	char url[64];
	uint8_t priv[32], pub[32];
	struct channel_session sess[MAX_SESS];
	bool live[MAX_SESS];
	uint64_t next_id;
	uint8_t last_ts[12];
	int key_fetches, handshakes, handshake_refusals, calls, maps;
	int calls_401; /* answer this many calls with 401 */
	bool map_error; /* answer map requests with a bare sealed error */
	bool map_silent; /* send nothing on a new map stream */
	bool bogus_msg2; /* answer handshakes with random bytes */
	/* the open map stream, which owns its session */
	struct httpd_stream *st;
	struct channel_session map_cs;
	uint64_t map_seq;
};

static struct channel_session *sess_find(struct srv *s, const void *frame, size_t len)
{
	uint64_t id;

	if (!channel_frame_session(frame, len, &id))
		return NULL;
	for (int i = 0; i < MAX_SESS; i++)
		if (s->live[i] && s->sess[i].id == id)
			return &s->sess[i];
	return NULL;
}

static void srv_forget_sessions(struct srv *s)
{
	for (int i = 0; i < MAX_SESS; i++) {
		s->live[i] = false;
		channel_session_wipe(&s->sess[i]);
	}
}

static void h_key(struct httpd_req *req, void *arg)
{
	struct srv *s = arg;
	char text[MESSAGES_KEY_TEXT_LEN], body[160];

	s->key_fetches++;
	channel_key_format(s->pub, "ctrlkey:", text, sizeof(text));
	snprintf(body, sizeof(body), "{\"controlKey\":\"%s\"}\n", text);
	httpd_respond(req, 200, "application/json", body, strlen(body));
}

static void h_handshake(struct httpd_req *req, void *arg)
{
	struct srv *s = arg;
	uint8_t msg2[CHANNEL_MSG2_LEN], ts[12];
	struct channel_session cs;
	size_t len;
	const void *body = httpd_req_body(req, &len);
	int slot;

	s->handshakes++;
	if (s->bogus_msg2) {
		randombytes_buf(msg2, sizeof(msg2));
		msg2[0] = 2;
		httpd_respond(req, 200, "application/octet-stream", msg2, sizeof(msg2));
		return;
	}
	if (channel_respond(s->priv, body, len, ++s->next_id, msg2, &cs, ts)) {
		s->handshake_refusals++;
		httpd_respond_text(req, 400, "handshake refused\n");
		return;
	}
	/* As the operator does: a timestamp not newer than the last is a replay. */
	if (memcmp(ts, s->last_ts, 12) <= 0) {
		s->handshake_refusals++;
		channel_session_wipe(&cs);
		httpd_respond_text(req, 400, "handshake refused (replayed)\n");
		return;
	}
	memcpy(s->last_ts, ts, 12);
	for (slot = 0; slot < MAX_SESS && s->live[slot]; slot++)
		;
	assert_true(slot < MAX_SESS);
	s->sess[slot] = cs;
	s->live[slot] = true;
	httpd_respond(req, 200, "application/octet-stream", msg2, sizeof(msg2));
}

static void seal_json(struct channel_session *cs, const char *text, struct buf *out)
{
	assert_int_equal(channel_seal(cs, text, strlen(text), out), 0);
}

static struct json *open_req(struct srv *s, struct httpd_req *req, struct channel_session **cs)
{
	struct buf plain = BUF_INIT(1 << 20);
	size_t len;
	const void *body = httpd_req_body(req, &len);
	struct json *j;

	*cs = sess_find(s, body, len);
	if (!*cs || channel_open(*cs, body, len, &plain)) {
		httpd_respond_text(req, 401, "unknown session: handshake again\n");
		buf_free(&plain);
		return NULL;
	}
	j = json_parse((const char *)plain.data, plain.len, NULL);
	buf_free(&plain);
	assert_non_null(j);
	return j;
}

static void h_call(struct httpd_req *req, void *arg)
{
	struct srv *s = arg;
	struct channel_session *cs;
	struct buf out = BUF_INIT(1 << 20);
	struct json *j;
	const char *type;

	s->calls++;
	if (s->calls_401 > 0) {
		s->calls_401--;
		httpd_respond_text(req, 401, "unknown session: handshake again\n");
		return;
	}
	if (!(j = open_req(s, req, &cs)))
		return;
	type = messages_type(j);
	if (type && strcmp(type, "register") == 0) {
		struct register_request r;

		assert_true(register_request_from_json(j, &r, NULL, 0));
		if (r.auth_key && strcmp(r.auth_key, "knit-auth-good") == 0)
			seal_json(cs, "{\"device\":\"laptop-3f9a2c\",\"name\":\"laptop\",\"addresses\":"
				      "[\"100.64.0.5\",\"fd7a:115c:a1e0::5\"],\"ephemeral\":false,"
				      "\"dnsSuffix\":\"tailnet.knit\"}", &out);
		else
			seal_json(cs, "{\"error\":\"auth key not valid\",\"code\":\"AuthKeyInvalid\"}", &out);
		register_request_free(&r);
	} else {
		seal_json(cs, "{\"ok\":true}", &out);
	}
	json_free(j);
	httpd_respond_buf(req, 200, "application/octet-stream", &out);
	buf_free(&out);
}

static void srv_send(struct srv *s, const char *text)
{
	struct buf frame = BUF_INIT(1 << 20), rec = BUF_INIT(1 << 20);

	assert_non_null(s->st);
	seal_json(&s->map_cs, text, &frame);
	assert_int_equal(stream_record_append(&rec, frame.data, frame.len), 0);
	assert_int_equal(httpd_stream_write(s->st, rec.data, rec.len), 0);
	buf_free(&frame);
	buf_free(&rec);
}

static void srv_send_raw(struct srv *s, const void *data, size_t len)
{
	assert_int_equal(httpd_stream_write(s->st, data, len), 0);
}

static void on_stream_close(struct httpd_stream *st, void *arg)
{
	struct srv *s = arg;

	if (s->st == st)
		s->st = NULL;
}

static void h_map(struct httpd_req *req, void *arg)
{
	struct srv *s = arg;
	struct channel_session *cs;
	struct json *j;
	char text[1024];

	s->maps++;
	if (!(j = open_req(s, req, &cs)))
		return;
	assert_string_equal(messages_type(j), "map");
	json_free(j);
	if (s->map_error) {
		struct buf out = BUF_INIT(4096);

		seal_json(cs, "{\"error\":\"this machine is not registered: run knit up --authkey KEY\","
			      "\"code\":\"NotRegistered\"}", &out);
		httpd_respond_buf(req, 200, "application/octet-stream", &out);
		buf_free(&out);
		return;
	}
	/* The stream takes the session over: calls on it now get 401. */
	if (s->st)
		httpd_stream_close(s->st);
	channel_session_wipe(&s->map_cs);
	s->map_cs = *cs;
	s->live[cs - s->sess] = false;
	s->st = httpd_stream_start(req, 200, "application/octet-stream", 0, on_stream_close, s);
	assert_non_null(s->st);
	if (s->map_silent)
		return;
	snprintf(text, sizeof(text),
		 "{\"type\":\"full\",\"seq\":%llu,\"self\":{\"name\":\"laptop\",\"nodeKey\":" NK("1")
		 ",\"addresses\":[\"100.64.0.5/32\"]},\"peers\":[{\"name\":\"db\",\"nodeKey\":" NK("a")
		 ",\"addresses\":[\"100.64.0.7/32\"]}],\"dns\":{\"suffix\":\"tailnet.knit\"}}",
		 (unsigned long long)++s->map_seq);
	srv_send(s, text);
}

static struct srv *srv_new(struct loop *loop)
{
	struct srv *s = calloc(1, sizeof(*s));
	struct httpd_opts o = { .listen = "127.0.0.1:0", .listen_fd = -1 };

	assert_non_null(s);
	s->loop = loop;
	channel_keygen(s->priv);
	channel_public_key(s->pub, s->priv);
	assert_int_equal(httpd_new(loop, &o, &s->h), 0);
	assert_int_equal(httpd_route(s->h, "GET", "/knit/v1/key", 0, h_key, s), 0);
	assert_int_equal(httpd_route(s->h, "POST", "/knit/v1/handshake", 4096, h_handshake, s), 0);
	assert_int_equal(httpd_route(s->h, "POST", "/knit/v1/call", 1 << 20, h_call, s), 0);
	assert_int_equal(httpd_route(s->h, "POST", "/knit/v1/map", 1 << 20, h_map, s), 0);
	snprintf(s->url, sizeof(s->url), "http://127.0.0.1:%u/", httpd_port(s->h));
	return s;
}

static void srv_free(struct srv *s)
{
	httpd_free(s->h);
	srv_forget_sessions(s);
	channel_session_wipe(&s->map_cs);
	free(s);
}

/* ---- the client side ---------------------------------------------------------- */

struct fx {
	struct loop *loop;
	struct srv *srv;
	struct control_client *c;
	uint8_t machine[32];
	/* trust on first use */
	bool accept_key;
	int keys_offered;
	uint8_t offered[32];
	/* calls */
	int done;
	int err;
	char why[256];
	char code[64];
	char device[64];
	/* map */
	int records, fulls, deltas, keepalives, errors;
	int ups, downs;
	int last_down_err;
	char last_down_why[256];
	uint64_t retry_ms[16];
	uint64_t down_at[16], up_at[16];
	struct netmap nm;
	bool have_nm;
	bool stop_in_record;
	bool refuse_records;
};

static bool on_key(struct control_client *c, const uint8_t key[32], void *arg)
{
	struct fx *fx = arg;

	fx->keys_offered++;
	memcpy(fx->offered, key, 32);
	return fx->accept_key;
}

static bool on_record(struct control_client *c, const struct json *rec, void *arg)
{
	struct fx *fx = arg;
	const char *type = messages_type(rec);
	char err[200];

	fx->records++;
	if (messages_error(rec, NULL, NULL)) {
		fx->errors++;
	} else if (strcmp(type, "full") == 0) {
		netmap_free(&fx->nm);
		assert_true(netmap_from_json(rec, &fx->nm, err, sizeof(err)));
		fx->have_nm = true;
		fx->fulls++;
	} else if (strcmp(type, "delta") == 0) {
		struct netmap_delta d;

		assert_true(netmap_delta_from_json(rec, &d, err, sizeof(err)));
		assert_int_equal(netmap_apply_delta(&fx->nm, &d, err, sizeof(err)), 0);
		netmap_delta_free(&d);
		fx->deltas++;
	} else if (strcmp(type, "keepalive") == 0) {
		fx->keepalives++;
	}
	if (fx->stop_in_record)
		control_client_map_stop(c);
	return !fx->refuse_records;
}

static void on_map_state(struct control_client *c, bool up, int err, const char *why, uint64_t retry_ms,
			 void *arg)
{
	struct fx *fx = arg;

	if (up) {
		if (fx->ups < 16)
			fx->up_at[fx->ups] = loop_mono_ms();
		fx->ups++;
		return;
	}
	if (fx->downs < 16) {
		fx->retry_ms[fx->downs] = retry_ms;
		fx->down_at[fx->downs] = loop_mono_ms();
	}
	fx->downs++;
	fx->last_down_err = err;
	snprintf(fx->last_down_why, sizeof(fx->last_down_why), "%s", why);
}

static void on_call(struct control_client *c, int err, const struct json *resp, const char *why, void *arg)
{
	struct fx *fx = arg;
	const char *code = "", *msg;
	struct register_response r;

	fx->done++;
	fx->err = err;
	snprintf(fx->why, sizeof(fx->why), "%s", why);
	fx->code[0] = fx->device[0] = '\0';
	if (err)
		return;
	if (messages_error(resp, &code, &msg)) {
		snprintf(fx->code, sizeof(fx->code), "%s", code);
		return;
	}
	if (register_response_from_json(resp, &r, NULL, 0)) {
		snprintf(fx->device, sizeof(fx->device), "%s", r.device);
		register_response_free(&r);
	}
}

static bool wait_for(struct fx *fx, const int *counter, int want)
{
	uint64_t end = loop_mono_ms() + WAIT_MS;

	while (*counter < want && loop_mono_ms() < end)
		assert_true(loop_run_once(fx->loop, 20) >= 0);
	return *counter >= want;
}

static void run_for(struct fx *fx, int ms)
{
	uint64_t end = loop_mono_ms() + (uint64_t)ms;

	while (loop_mono_ms() < end)
		assert_true(loop_run_once(fx->loop, 10) >= 0);
}

static void client_new(struct fx *fx, const char *url, const uint8_t *pin)
{
	struct control_client_opts o = {
		.server_url = url,
		.machine_priv = fx->machine,
		.control_key = pin,
		.on_control_key = on_key,
		.on_record = on_record,
		.on_map_state = on_map_state,
		.arg = fx,
		.call_timeout_ms = 3000,
		.stall_timeout_ms = 400,
		.backoff_min_ms = 100,
		.backoff_max_ms = 400,
		.stable_ms = 10000,
	};

	control_client_free(fx->c);
	fx->c = NULL;
	assert_int_equal(control_client_new(fx->loop, &o, &fx->c), 0);
}

static void call(struct fx *fx, const char *text)
{
	struct json *j = json_parse(text, strlen(text), NULL);

	assert_non_null(j);
	assert_int_equal(control_client_call(fx->c, j, on_call, fx, NULL), 0);
	json_free(j);
}

static void call_register(struct fx *fx, const char *authkey)
{
	char text[512];

	snprintf(text, sizeof(text), "{\"type\":\"register\",\"authKey\":\"%s\",\"nodeKey\":" NK("1")
		 ",\"discoKey\":\"discokey:" H64("2") "\",\"hostname\":\"laptop\"}", authkey);
	call(fx, text);
}

static void map_start(struct fx *fx)
{
	static const char text[] = "{\"type\":\"map\",\"endpoints\":[\"192.0.2.1:41641\"]}";
	struct json *j = json_parse(text, strlen(text), NULL);

	assert_non_null(j);
	assert_int_equal(control_client_map_start(fx->c, j), 0);
	json_free(j);
}

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));

	alarm(TEST_DEADLINE_S);
	assert_non_null(fx);
	fx->loop = loop_new();
	assert_non_null(fx->loop);
	fx->srv = srv_new(fx->loop);
	channel_keygen(fx->machine);
	fx->accept_key = true;
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fx *fx = *state;

	control_client_free(fx->c);
	srv_free(fx->srv);
	netmap_free(&fx->nm);
	loop_free(fx->loop);
	free(fx);
	alarm(0);
	return 0;
}

/* ---- tests ----------------------------------------------------------------------- */

static void test_options(void **state)
{
	struct fx *fx = *state;
	struct control_client_opts o = { .server_url = fx->srv->url, .machine_priv = fx->machine };
	struct control_client *c = NULL;
	struct json *j = json_new_array();

	assert_int_equal(control_client_new(fx->loop, &o, &c), -EINVAL); /* no key, no on_control_key */
	o.control_key = fx->srv->pub;
	o.server_url = "ftp://x";
	assert_int_equal(control_client_new(fx->loop, &o, &c), -EINVAL);
	o.server_url = fx->srv->url;
	assert_int_equal(control_client_new(fx->loop, &o, &c), 0);
	assert_int_equal(control_client_call(c, j, on_call, fx, NULL), -EINVAL);
	assert_int_equal(control_client_map_start(c, j), -EINVAL); /* no on_record either */
	control_client_free(c);
	control_client_free(NULL);
	json_free(j);
}

static void test_tofu_register(void **state)
{
	struct fx *fx = *state;
	uint8_t key[32];

	client_new(fx, fx->srv->url, NULL);
	assert_false(control_client_control_key(fx->c, key));
	call_register(fx, "knit-auth-good");
	assert_true(wait_for(fx, &fx->done, 1));
	assert_int_equal(fx->err, 0);
	assert_string_equal(fx->device, "laptop-3f9a2c");
	assert_int_equal(fx->keys_offered, 1);
	assert_memory_equal(fx->offered, fx->srv->pub, 32);
	assert_true(control_client_control_key(fx->c, key));
	assert_memory_equal(key, fx->srv->pub, 32);
	/* An application error is an answer, on the same session. */
	call_register(fx, "knit-auth-bad");
	assert_true(wait_for(fx, &fx->done, 2));
	assert_int_equal(fx->err, 0);
	assert_string_equal(fx->code, "AuthKeyInvalid");
	/* Two concurrent calls share the one session. */
	call(fx, "{\"type\":\"update\",\"endpoints\":[]}");
	call(fx, "{\"type\":\"update\",\"endpoints\":[]}");
	assert_true(wait_for(fx, &fx->done, 4));
	assert_int_equal(fx->err, 0);
	assert_int_equal(fx->srv->key_fetches, 1);
	assert_int_equal(fx->srv->handshakes, 1);
}

static void test_tofu_refused(void **state)
{
	struct fx *fx = *state;

	fx->accept_key = false;
	client_new(fx, fx->srv->url, NULL);
	call(fx, "{\"type\":\"update\"}");
	assert_true(wait_for(fx, &fx->done, 1));
	assert_int_equal(fx->err, -EKEYREJECTED);
	assert_non_null(strstr(fx->why, "was not accepted"));
	assert_int_equal(fx->srv->handshakes, 0);
}

static void test_wrong_pinned_key(void **state)
{
	struct fx *fx = *state;
	uint8_t other[32], pub[32];

	channel_keygen(other);
	channel_public_key(pub, other);
	client_new(fx, fx->srv->url, pub);
	call(fx, "{\"type\":\"update\"}");
	assert_true(wait_for(fx, &fx->done, 1));
	/* The server cannot even open message 1 made for another key. */
	assert_int_equal(fx->err, -EPROTO);
	assert_non_null(strstr(fx->why, "refused the handshake: HTTP 400: handshake refused"));
	assert_int_equal(fx->srv->key_fetches, 0);
	assert_int_equal(fx->keys_offered, 0);
}

/* Something between us and the server answers the handshake itself: its
 * message 2 does not authenticate, and the client says so. */
static void test_impostor(void **state)
{
	struct fx *fx = *state;

	fx->srv->bogus_msg2 = true;
	client_new(fx, fx->srv->url, fx->srv->pub);
	call(fx, "{\"type\":\"update\"}");
	assert_true(wait_for(fx, &fx->done, 1));
	assert_int_equal(fx->err, -EKEYREJECTED);
	assert_non_null(strstr(fx->why, "did not prove it holds ctrlkey:"));
	assert_int_equal(fx->srv->calls, 0);
}

static void test_401_rehandshake(void **state)
{
	struct fx *fx = *state;

	client_new(fx, fx->srv->url, fx->srv->pub);
	call(fx, "{\"type\":\"update\"}");
	assert_true(wait_for(fx, &fx->done, 1));
	assert_int_equal(fx->err, 0);
	assert_int_equal(fx->srv->handshakes, 1);
	/* The server restarts: sessions gone. One 401, a new handshake, the
	 * call again. */
	srv_forget_sessions(fx->srv);
	call(fx, "{\"type\":\"update\"}");
	assert_true(wait_for(fx, &fx->done, 2));
	assert_int_equal(fx->err, 0);
	assert_int_equal(fx->srv->handshakes, 2);
	assert_int_equal(fx->srv->calls, 3);
	/* 401 again after the fresh session: give up, say so. */
	fx->srv->calls_401 = 2;
	call(fx, "{\"type\":\"update\"}");
	assert_true(wait_for(fx, &fx->done, 3));
	assert_int_equal(fx->err, -EACCES);
	assert_non_null(strstr(fx->why, "refused a fresh session"));
	assert_int_equal(fx->srv->handshakes, 3);
	assert_int_equal(fx->srv->handshake_refusals, 0);
}

static void test_map_stream(void **state)
{
	struct fx *fx = *state;
	uint8_t ka[32], kb[32];

	memset(ka, 0xaa, 32);
	memset(kb, 0xbb, 32);
	client_new(fx, fx->srv->url, fx->srv->pub);
	/* A call and the map at once: two handshakes back to back, both
	 * with timestamps the server takes as new. */
	call(fx, "{\"type\":\"update\"}");
	map_start(fx);
	assert_true(wait_for(fx, &fx->fulls, 1));
	assert_true(wait_for(fx, &fx->done, 1));
	assert_int_equal(fx->err, 0);
	assert_int_equal(fx->srv->handshakes, 2);
	assert_int_equal(fx->srv->handshake_refusals, 0);
	assert_int_equal(fx->ups, 1);
	assert_true(control_client_map_up(fx->c));
	assert_int_equal(fx->nm.npeers, 1);
	assert_non_null(netmap_find_peer(&fx->nm, ka));

	/* Delta, then keepalive, in one write and split across writes. */
	{
		struct buf frame = BUF_INIT(1 << 16), rec = BUF_INIT(1 << 16);
		const char *d = "{\"type\":\"delta\",\"seq\":2,\"upsert\":[{\"name\":\"web\",\"nodeKey\":" NK("b")
				",\"addresses\":[\"100.64.0.8/32\"]}],\"remove\":[" NK("a") "]}";
		const char *k = "{\"type\":\"keepalive\"}";

		seal_json(&fx->srv->map_cs, d, &frame);
		assert_int_equal(stream_record_append(&rec, frame.data, frame.len), 0);
		buf_reset(&frame);
		seal_json(&fx->srv->map_cs, k, &frame);
		assert_int_equal(stream_record_append(&rec, frame.data, frame.len), 0);
		srv_send_raw(fx->srv, rec.data, 3);
		run_for(fx, 30);
		srv_send_raw(fx->srv, rec.data + 3, rec.len - 3);
		buf_free(&frame);
		buf_free(&rec);
	}
	assert_true(wait_for(fx, &fx->keepalives, 1));
	assert_int_equal(fx->deltas, 1);
	assert_int_equal(fx->nm.seq, 2);
	assert_null(netmap_find_peer(&fx->nm, ka));
	assert_non_null(netmap_find_peer(&fx->nm, kb));

	/* Calls still work: they have their own session. */
	call(fx, "{\"type\":\"update\"}");
	assert_true(wait_for(fx, &fx->done, 2));
	assert_int_equal(fx->err, 0);

	/* Keepalives within the stall timeout keep it up. */
	for (int i = 0; i < 4; i++) {
		run_for(fx, 200);
		srv_send(fx->srv, "{\"type\":\"keepalive\"}");
	}
	run_for(fx, 50);
	assert_int_equal(fx->downs, 0);
	assert_int_equal(fx->srv->maps, 1);
	control_client_map_stop(fx->c);
	assert_false(control_client_map_up(fx->c));
	run_for(fx, 100);
	assert_null(fx->srv->st); /* the server saw the client go */
}

static void test_reconnect_backoff(void **state)
{
	struct fx *fx = *state;

	client_new(fx, fx->srv->url, fx->srv->pub);
	map_start(fx);
	assert_true(wait_for(fx, &fx->fulls, 1));
	/* Dropped three times: each time a down, a wait that grows, a new
	 * session, and a full netmap first. */
	for (int i = 0; i < 3; i++) {
		uint64_t lo = (100u << i) / 2, hi = 100u << i;

		httpd_stream_close(fx->srv->st);
		assert_true(wait_for(fx, &fx->downs, i + 1));
		assert_int_equal(fx->last_down_err, -ECONNRESET);
		assert_non_null(strstr(fx->last_down_why, "closed the map stream"));
		assert_true(fx->retry_ms[i] >= lo && fx->retry_ms[i] <= hi);
		assert_false(control_client_map_up(fx->c));
		assert_true(wait_for(fx, &fx->fulls, i + 2));
		assert_true(fx->up_at[i + 1] - fx->down_at[i] + 5 >= fx->retry_ms[i]);
	}
	assert_int_equal(fx->srv->maps, 4);
	assert_int_equal(fx->srv->handshakes, 4);
	assert_int_equal(fx->ups, 4);
	/* Capped at backoff_max_ms. */
	for (int i = 3; i < 6; i++) {
		httpd_stream_close(fx->srv->st);
		assert_true(wait_for(fx, &fx->downs, i + 1));
		assert_true(fx->retry_ms[i] >= 200 && fx->retry_ms[i] <= 400);
		assert_true(wait_for(fx, &fx->fulls, i + 2));
	}
}

static void test_server_gone(void **state)
{
	struct fx *fx = *state;
	char url[64];

	/* Nobody listens there any more. */
	snprintf(url, sizeof(url), "%s", fx->srv->url);
	client_new(fx, url, fx->srv->pub);
	httpd_free(fx->srv->h);
	fx->srv->h = NULL;
	call(fx, "{\"type\":\"update\"}");
	map_start(fx);
	assert_true(wait_for(fx, &fx->done, 1));
	assert_int_equal(fx->err, -ECONNREFUSED);
	assert_non_null(strstr(fx->why, "http://127.0.0.1:"));
	assert_true(wait_for(fx, &fx->downs, 3));
	assert_int_equal(fx->last_down_err, -ECONNREFUSED);
	assert_int_equal(fx->ups, 0);
	control_client_map_stop(fx->c);
	/* httpd_free(NULL) in teardown is fine. */
}

static void test_stall(void **state)
{
	struct fx *fx = *state;

	client_new(fx, fx->srv->url, fx->srv->pub);
	map_start(fx);
	assert_true(wait_for(fx, &fx->fulls, 1));
	/* Nothing more: after stall_timeout_ms the client gives up on it. */
	assert_true(wait_for(fx, &fx->downs, 1));
	assert_int_equal(fx->last_down_err, -ETIMEDOUT);
	assert_non_null(strstr(fx->last_down_why, "nothing on the map stream for 400 ms"));
	assert_true(wait_for(fx, &fx->fulls, 2));
	/* A server that accepts and says nothing at all stalls too. */
	fx->srv->map_silent = true;
	assert_true(wait_for(fx, &fx->downs, 2));
	assert_int_equal(fx->last_down_err, -ETIMEDOUT);
	assert_int_equal(fx->ups, 2);
}

static void test_map_error(void **state)
{
	struct fx *fx = *state;

	fx->srv->map_error = true;
	client_new(fx, fx->srv->url, fx->srv->pub);
	map_start(fx);
	assert_true(wait_for(fx, &fx->downs, 1));
	assert_int_equal(fx->errors, 1);
	assert_int_equal(fx->last_down_err, -EPROTO);
	assert_non_null(strstr(fx->last_down_why, "refused the map stream: NotRegistered: this machine is not registered"));
	assert_int_equal(fx->ups, 0);
	/* It keeps trying, with backoff, until stopped. */
	assert_true(wait_for(fx, &fx->downs, 2));
	control_client_map_stop(fx->c);
	run_for(fx, 500);
	assert_int_equal(fx->downs, 2);
}

static void test_bad_records(void **state)
{
	struct fx *fx = *state;
	static const uint8_t zero[] = { 0, 0, 0, 0 };
	uint8_t junk[4 + 40];

	client_new(fx, fx->srv->url, fx->srv->pub);
	map_start(fx);
	assert_true(wait_for(fx, &fx->fulls, 1));
	/* A frame that does not authenticate. */
	memset(junk, 0x41, sizeof(junk));
	junk[0] = junk[1] = junk[2] = 0;
	junk[3] = 40;
	memcpy(junk + 4, &fx->srv->map_cs.id, 8);
	srv_send_raw(fx->srv, junk, sizeof(junk));
	assert_true(wait_for(fx, &fx->downs, 1));
	assert_int_equal(fx->last_down_err, -EBADMSG);
	assert_non_null(strstr(fx->last_down_why, "a map record does not open"));
	assert_true(wait_for(fx, &fx->fulls, 2));
	/* Broken framing. */
	srv_send_raw(fx->srv, zero, sizeof(zero));
	assert_true(wait_for(fx, &fx->downs, 2));
	assert_non_null(strstr(fx->last_down_why, "has length 0"));
	assert_true(wait_for(fx, &fx->fulls, 3));
	/* Sealed, but not JSON. */
	srv_send(fx->srv, "not json");
	assert_true(wait_for(fx, &fx->downs, 3));
	assert_non_null(strstr(fx->last_down_why, "not a JSON object"));
	assert_true(wait_for(fx, &fx->fulls, 4));
	/* A record the caller cannot use. */
	fx->refuse_records = true;
	srv_send(fx->srv, "{\"type\":\"keepalive\"}");
	assert_true(wait_for(fx, &fx->downs, 4));
	assert_int_equal(fx->last_down_err, -EBADMSG);
	fx->refuse_records = false;
	assert_true(wait_for(fx, &fx->fulls, 5));
	/* The stream ends in the middle of a record. */
	srv_send_raw(fx->srv, zero, 3);
	httpd_stream_close(fx->srv->st);
	assert_true(wait_for(fx, &fx->downs, 5));
	assert_int_equal(fx->last_down_err, -EPIPE);
}

static void test_stop_inside(void **state)
{
	struct fx *fx = *state;

	client_new(fx, fx->srv->url, fx->srv->pub);
	fx->stop_in_record = true;
	map_start(fx);
	assert_true(wait_for(fx, &fx->records, 1));
	run_for(fx, 600); /* past the stall timeout and a backoff: nothing */
	assert_int_equal(fx->records, 1);
	assert_int_equal(fx->downs, 0);
	assert_int_equal(fx->srv->maps, 1);
	/* Restart the stream, then free the client with a call and the map
	 * in flight: no callback runs. */
	fx->stop_in_record = false;
	map_start(fx);
	call(fx, "{\"type\":\"update\"}");
	control_client_free(fx->c);
	fx->c = NULL;
	run_for(fx, 200);
	assert_int_equal(fx->done, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_options, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tofu_register, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tofu_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wrong_pinned_key, setup, teardown),
		cmocka_unit_test_setup_teardown(test_impostor, setup, teardown),
		cmocka_unit_test_setup_teardown(test_401_rehandshake, setup, teardown),
		cmocka_unit_test_setup_teardown(test_map_stream, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reconnect_backoff, setup, teardown),
		cmocka_unit_test_setup_teardown(test_server_gone, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stall, setup, teardown),
		cmocka_unit_test_setup_teardown(test_map_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_records, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stop_inside, setup, teardown),
	};

	aead_init(AEAD_IMPL_AUTO);
	log_init("test", LOG_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
