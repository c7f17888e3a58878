#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "buf.h"
#include "control/channel.h"
#include "wg/aead.h"
#include "wg/noise.h"

struct pair {
	uint8_t server_priv[32], server_pub[32], machine_priv[32], machine_pub[32];
	struct channel_session agent, server;
};

static void tai(uint8_t out[12], long sec)
{
	struct timespec ts = { .tv_sec = sec };
	noise_tai64n(out, &ts);
}

static int setup(void **state)
{
	static struct pair p;

	aead_init(AEAD_IMPL_AUTO);
	memset(&p, 0, sizeof(p));
	channel_keygen(p.server_priv);
	channel_public_key(p.server_pub, p.server_priv);
	channel_keygen(p.machine_priv);
	channel_public_key(p.machine_pub, p.machine_priv);
	*state = &p;
	return 0;
}

static void handshake(struct pair *p)
{
	struct channel_initiator st;
	uint8_t m1[CHANNEL_MSG1_LEN], m2[CHANNEL_MSG2_LEN], ts[12], got_ts[12];

	tai(ts, 1795392000);
	assert_int_equal(channel_initiate(&st, p->machine_priv, p->server_pub, ts, m1), 0);
	assert_int_equal(channel_respond(p->server_priv, m1, sizeof(m1), 0x1122334455667788ull, m2, &p->server, got_ts), 0);
	assert_memory_equal(got_ts, ts, 12);
	/* The server learns the agent by its machine key. */
	assert_memory_equal(p->server.peer_static, p->machine_pub, 32);
	assert_int_equal(channel_finish(&st, m2, sizeof(m2), &p->agent), 0);
	assert_int_equal(p->agent.id, 0x1122334455667788ull);
	assert_memory_equal(p->agent.send_key, p->server.recv_key, 32);
	assert_memory_equal(p->agent.recv_key, p->server.send_key, 32);
	assert_memory_not_equal(p->agent.send_key, p->agent.recv_key, 32);
}

static void test_round_trip(void **state)
{
	struct pair *p = *state;
	struct buf f = BUF_INIT(4096), out = BUF_INIT(4096);

	handshake(p);
	assert_int_equal(channel_seal(&p->agent, "{\"type\":\"register\"}", 19, &f), 0);
	assert_int_equal(f.len, 19 + CHANNEL_OVERHEAD);
	uint64_t id;
	assert_true(channel_frame_session(f.data, f.len, &id));
	assert_int_equal(id, p->server.id);
	assert_int_equal(channel_open(&p->server, f.data, f.len, &out), 0);
	assert_string_equal(buf_str(&out), "{\"type\":\"register\"}");
	/* Replayed frame. */
	buf_reset(&out);
	assert_int_equal(channel_open(&p->server, f.data, f.len, &out), -EALREADY);
	assert_int_equal(out.len, 0);
	/* And the other way. */
	buf_reset(&f);
	assert_int_equal(channel_seal(&p->server, "ok", 2, &f), 0);
	assert_int_equal(channel_open(&p->agent, f.data, f.len, &out), 0);
	assert_string_equal(buf_str(&out), "ok");
	/* A frame cannot be reflected back to its sender. */
	buf_reset(&out);
	assert_int_equal(channel_open(&p->server, f.data, f.len, &out), -EKEYREJECTED);
	buf_free(&f);
	buf_free(&out);
}

static void test_out_of_order_within_window(void **state)
{
	struct pair *p = *state;
	struct buf f[3] = { BUF_INIT(256), BUF_INIT(256), BUF_INIT(256) }, out = BUF_INIT(256);

	handshake(p);
	for (int i = 0; i < 3; i++)
		assert_int_equal(channel_seal(&p->server, "x", 1, &f[i]), 0);
	assert_int_equal(channel_open(&p->agent, f[2].data, f[2].len, &out), 0);
	assert_int_equal(channel_open(&p->agent, f[0].data, f[0].len, &out), 0);
	assert_int_equal(channel_open(&p->agent, f[1].data, f[1].len, &out), 0);
	assert_int_equal(channel_open(&p->agent, f[1].data, f[1].len, &out), -EALREADY);
	for (int i = 0; i < 3; i++)
		buf_free(&f[i]);
	buf_free(&out);
}

static void test_tampered_frames(void **state)
{
	struct pair *p = *state;
	struct buf f = BUF_INIT(256), out = BUF_INIT(256);

	handshake(p);
	assert_int_equal(channel_seal(&p->agent, "hello", 5, &f), 0);
	for (size_t i = 0; i < f.len; i++) {
		f.data[i] ^= 0x01;
		int r = channel_open(&p->server, f.data, f.len, &out);
		/* Flipping the id names another session; anything else fails authentication. */
		assert_int_equal(r, i < 8 ? -EBADMSG : -EKEYREJECTED);
		assert_int_equal(out.len, 0);
		f.data[i] ^= 0x01;
	}
	assert_int_equal(channel_open(&p->server, f.data, 10, &out), -EBADMSG);
	assert_int_equal(channel_open(&p->server, f.data, f.len, &out), 0);
	buf_free(&f);
	buf_free(&out);
}

static void test_wrong_server_key(void **state)
{
	struct pair *p = *state;
	struct channel_initiator st;
	uint8_t other_priv[32], other_pub[32], m1[CHANNEL_MSG1_LEN], m2[CHANNEL_MSG2_LEN], ts[12];
	struct channel_session s;

	channel_keygen(other_priv);
	channel_public_key(other_pub, other_priv);
	tai(ts, 100);
	/* The agent pinned another key: the real server cannot read message 1. */
	assert_int_equal(channel_initiate(&st, p->machine_priv, other_pub, ts, m1), 0);
	assert_int_equal(channel_respond(p->server_priv, m1, sizeof(m1), 1, m2, &s, ts), -EBADMSG);
	/* An impostor holding another key answers: the agent refuses message 2. */
	assert_int_equal(channel_initiate(&st, p->machine_priv, p->server_pub, ts, m1), 0);
	struct channel_initiator copy = st;
	assert_int_equal(channel_respond(p->server_priv, m1, sizeof(m1), 1, m2, &s, ts), 0);
	m2[40] ^= 1;
	assert_int_equal(channel_finish(&copy, m2, sizeof(m2), &s), -EBADMSG);
}

static void test_malformed_handshakes(void **state)
{
	struct pair *p = *state;
	struct channel_initiator st;
	uint8_t m1[CHANNEL_MSG1_LEN], m2[CHANNEL_MSG2_LEN], ts[12];
	struct channel_session s;

	tai(ts, 100);
	assert_int_equal(channel_initiate(&st, p->machine_priv, p->server_pub, ts, m1), 0);
	for (size_t n = 0; n < sizeof(m1); n++)
		assert_int_equal(channel_respond(p->server_priv, m1, n, 1, m2, &s, ts), -EBADMSG);
	for (size_t i = 0; i < sizeof(m1); i++) {
		m1[i] ^= 0x80;
		assert_int_not_equal(channel_respond(p->server_priv, m1, sizeof(m1), 1, m2, &s, ts), 0);
		m1[i] ^= 0x80;
	}
	assert_int_equal(channel_respond(p->server_priv, m1, sizeof(m1), 1, m2, &s, ts), 0);
	assert_int_equal(channel_finish(&st, m2, sizeof(m2) - 1, &s), -EBADMSG);
}

static void test_keys_text(void **state)
{
	uint8_t k[32], back[32];
	char text[80];

	channel_keygen(k);
	channel_key_format(k, "ctrlkey:", text, sizeof(text));
	assert_int_equal(strlen(text), 8 + 64);
	assert_true(channel_key_parse(text, "ctrlkey:", back));
	assert_memory_equal(k, back, 32);
	assert_false(channel_key_parse(text, "mkey:", back));
	assert_false(channel_key_parse("ctrlkey:zz", "ctrlkey:", back));
	text[20] = 'g';
	assert_false(channel_key_parse(text, "ctrlkey:", back));
	assert_false(channel_key_parse(NULL, "ctrlkey:", back));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_round_trip, setup),
		cmocka_unit_test_setup(test_out_of_order_within_window, setup),
		cmocka_unit_test_setup(test_tampered_frames, setup),
		cmocka_unit_test_setup(test_wrong_server_key, setup),
		cmocka_unit_test_setup(test_malformed_handshakes, setup),
		cmocka_unit_test_setup(test_keys_text, setup),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
