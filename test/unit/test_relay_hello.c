/* Relay handshake: a client holding its key is accepted and the server
 * proven; a client without the key, a replayed answer, a wrong server key,
 * a wrong or missing mesh key are each refused; the client core with a
 * pinned relay key takes that relay and refuses one announcing another
 * key, or announcing the pinned key without holding it. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "buf.h"
#include "relay/client.h"
#include "relay/frame.h"
#include "relay/hello.h"
#include "relay/upgrade.h"

struct keys {
	uint8_t spub[32], spriv[32], cpub[32], cpriv[32];
};

static void keys_new(struct keys *k)
{
	crypto_box_keypair(k->spub, k->spriv);
	crypto_box_keypair(k->cpub, k->cpriv);
}

/* Decodes the single frame in b. */
static void one(struct buf *b, struct relay_msg *m)
{
	struct relay_parser p;
	struct relay_frame f;
	const uint8_t *d = b->data;
	size_t n = b->len;

	relay_parser_init(&p, 0);
	assert_int_equal(relay_parser_next(&p, &d, &n, &f), 1);
	assert_int_equal(n, 0);
	assert_true(relay_frame_decode(&f, m, NULL, 0));
	relay_parser_free(&p);
}

static void test_accept(void **state)
{
	struct keys k;
	struct buf sk = BUF_INIT(4096), ci = BUF_INIT(4096), si = BUF_INIT(4096);
	uint8_t challenge[32], nonce[24];
	struct relay_msg m_sk, m_ci, m_si;
	struct relay_client_info info;
	struct relay_server_info sinfo = { 0, 60000, 65535, 1 << 20 }, got;
	char err[128];

	keys_new(&k);
	assert_int_equal(relay_hello_server_key(&sk, k.spub, challenge), 0);
	one(&sk, &m_sk);
	assert_memory_equal(m_sk.key, k.spub, 32);
	assert_int_equal(relay_hello_client_info(&ci, &m_sk, k.spub, k.cpub, k.cpriv, NULL, nonce), 0);
	one(&ci, &m_ci);
	assert_true(relay_hello_verify_client(&m_ci, k.spriv, k.spub, challenge, NULL, &info, err, sizeof(err)));
	assert_memory_equal(info.key, k.cpub, 32);
	assert_false(info.mesh);
	assert_int_equal(relay_hello_server_info(&si, k.spriv, &info, &sinfo), 0);
	one(&si, &m_si);
	assert_true(relay_hello_open_server_info(&m_si, k.spub, k.cpriv, nonce, &got, err, sizeof(err)));
	assert_int_equal(got.version, RELAY_PROTOCOL_VERSION);
	assert_int_equal(got.keepalive_ms, 60000);
	assert_int_equal(got.max_packet, 65535);
	assert_int_equal(got.queue_bytes, 1 << 20);

	/* The answer to another hello (other nonce) is refused by the client. */
	nonce[0] ^= 1;
	assert_false(relay_hello_open_server_info(&m_si, k.spub, k.cpriv, nonce, &got, err, sizeof(err)));
	nonce[0] ^= 1;
	/* So is a server info from a server without the expected key. */
	{
		uint8_t other[32], otherpriv[32];

		crypto_box_keypair(other, otherpriv);
		assert_false(relay_hello_open_server_info(&m_si, other, k.cpriv, nonce, &got, err, sizeof(err)));
	}
	buf_free(&sk);
	buf_free(&ci);
	buf_free(&si);
}

static void test_refusals(void **state)
{
	struct keys k;
	struct buf sk = BUF_INIT(4096), ci = BUF_INIT(4096);
	uint8_t challenge[32], nonce[24], other_pub[32], other_priv[32];
	struct relay_msg m_sk, m_ci;
	struct relay_client_info info;
	char err[128];

	keys_new(&k);
	crypto_box_keypair(other_pub, other_priv);
	assert_int_equal(relay_hello_server_key(&sk, k.spub, challenge), 0);
	one(&sk, &m_sk);

	/* The client expects another server key. */
	assert_int_equal(relay_hello_client_info(&ci, &m_sk, other_pub, k.cpub, k.cpriv, NULL, nonce), -EPERM);

	/* Claims cpub but holds another private key: no proof. */
	buf_reset(&ci);
	assert_int_equal(relay_hello_client_info(&ci, &m_sk, NULL, k.cpub, other_priv, NULL, nonce), 0);
	one(&ci, &m_ci);
	assert_false(relay_hello_verify_client(&m_ci, k.spriv, k.spub, challenge, NULL, &info, err, sizeof(err)));
	assert_non_null(strstr(err, "no proof"));

	/* A valid answer replayed against a new challenge. */
	buf_reset(&ci);
	assert_int_equal(relay_hello_client_info(&ci, &m_sk, NULL, k.cpub, k.cpriv, NULL, nonce), 0);
	one(&ci, &m_ci);
	{
		uint8_t fresh[32];
		struct buf sk2 = BUF_INIT(4096);

		assert_int_equal(relay_hello_server_key(&sk2, k.spub, fresh), 0);
		assert_false(relay_hello_verify_client(&m_ci, k.spriv, k.spub, fresh, NULL, &info, err, sizeof(err)));
		assert_non_null(strstr(err, "replay"));
		buf_free(&sk2);
	}
	/* A tampered box. */
	{
		uint8_t *box = (uint8_t *)m_ci.box;

		box[3] ^= 0x40;
		assert_false(relay_hello_verify_client(&m_ci, k.spriv, k.spub, challenge, NULL, &info, err, sizeof(err)));
	}
	buf_free(&sk);
	buf_free(&ci);
}

static void test_mesh(void **state)
{
	struct keys k;
	struct buf sk = BUF_INIT(4096), ci = BUF_INIT(4096);
	uint8_t challenge[32], nonce[24], mk[32], wrong[32];
	struct relay_msg m_sk, m_ci;
	struct relay_client_info info;
	char err[128];

	keys_new(&k);
	relay_hello_mesh_key(mk, "region secret", 13);
	relay_hello_mesh_key(wrong, "region secreT", 13);
	assert_memory_not_equal(mk, wrong, 32);
	assert_int_equal(relay_hello_server_key(&sk, k.spub, challenge), 0);
	one(&sk, &m_sk);

	assert_int_equal(relay_hello_client_info(&ci, &m_sk, NULL, k.cpub, k.cpriv, mk, nonce), 0);
	one(&ci, &m_ci);
	assert_true(relay_hello_verify_client(&m_ci, k.spriv, k.spub, challenge, mk, &info, err, sizeof(err)));
	assert_true(info.mesh);
	/* A relay without a mesh key, or with another, refuses the claim. */
	assert_false(relay_hello_verify_client(&m_ci, k.spriv, k.spub, challenge, NULL, &info, err, sizeof(err)));
	assert_false(relay_hello_verify_client(&m_ci, k.spriv, k.spub, challenge, wrong, &info, err, sizeof(err)));
	assert_non_null(strstr(err, "wrong mesh key"));
	/* An ordinary client at a relay with a mesh key is an ordinary client. */
	buf_reset(&ci);
	assert_int_equal(relay_hello_client_info(&ci, &m_sk, NULL, k.cpub, k.cpriv, NULL, nonce), 0);
	one(&ci, &m_ci);
	assert_true(relay_hello_verify_client(&m_ci, k.spriv, k.spub, challenge, mk, &info, err, sizeof(err)));
	assert_false(info.mesh);
	buf_free(&sk);
	buf_free(&ci);
}

static int ready_calls;

static void on_ready(const struct relay_server_info *info, void *arg)
{
	ready_calls++;
}

static const struct relay_client_cb ready_cb = { .ready = on_ready };

/* The client core pinned to pin, against a relay holding srv_priv that
 * announces announce: its CLIENT_INFO (if any) is answered by that relay.
 * Returns what the last feed returned; *sent_ci says a CLIENT_INFO left. */
static int pinned_hello(const uint8_t *pin, const uint8_t announce[32], const uint8_t srv_pub[32],
			const uint8_t srv_priv[32], const struct keys *k, struct relay_client *c, bool *sent_ci)
{
	struct buf in = BUF_INIT(8192), out = BUF_INIT(8192);
	uint8_t challenge[32];
	struct relay_msg m_ci;
	struct relay_client_info info;
	struct relay_server_info sinfo = { 0, 60000, 65535, 1 << 20 };
	char err[128];
	int r;

	relay_client_init(c, k->cpub, k->cpriv, pin, &ready_cb, NULL);
	assert_int_equal(relay_client_start(c, "relay.test", &out), 0);
	buf_reset(&out);
	assert_int_equal(relay_upgrade_response(&in), 0);
	assert_int_equal(relay_hello_server_key(&in, announce, challenge), 0);
	r = relay_client_feed(c, in.data, in.len, &out);
	*sent_ci = out.len > 0;
	if (r == 0 && out.len) {
		one(&out, &m_ci);
		/* The relay opens the box with its own key: an impostor cannot,
		 * and answers with its own key as a MITM would. */
		if (!relay_hello_verify_client(&m_ci, srv_priv, srv_pub, challenge, NULL, &info, err, sizeof(err))) {
			memcpy(info.key, k->cpub, 32);
			memcpy(info.nonce, m_ci.nonce, 24);
		}
		buf_reset(&in);
		assert_int_equal(relay_hello_server_info(&in, srv_priv, &info, &sinfo), 0);
		r = relay_client_feed(c, in.data, in.len, &out);
	}
	buf_free(&in);
	buf_free(&out);
	return r;
}

static void test_client_pin(void **state)
{
	struct keys k;
	struct relay_client c;
	uint8_t other_pub[32], other_priv[32];
	bool sent;

	keys_new(&k);
	crypto_box_keypair(other_pub, other_priv);

	/* The pinned relay: ready. */
	ready_calls = 0;
	assert_int_equal(pinned_hello(k.spub, k.spub, k.spub, k.spriv, &k, &c, &sent), 0);
	assert_true(sent);
	assert_true(relay_client_ready(&c));
	assert_false(c.wrong_key);
	assert_int_equal(ready_calls, 1);
	relay_client_free(&c);

	/* Nothing pinned: any relay that proves its key. */
	assert_int_equal(pinned_hello(NULL, other_pub, other_pub, other_priv, &k, &c, &sent), 0);
	assert_true(relay_client_ready(&c));
	relay_client_free(&c);

	/* Another relay announcing its own key: refused before CLIENT_INFO. */
	ready_calls = 0;
	assert_int_equal(pinned_hello(k.spub, other_pub, other_pub, other_priv, &k, &c, &sent), -EPROTO);
	assert_false(sent);
	assert_true(c.wrong_key);
	assert_false(relay_client_ready(&c));
	assert_non_null(strstr(c.error, "pinned"));
	assert_int_equal(ready_calls, 0);
	relay_client_free(&c);

	/* An impostor replaying the pinned relay's key without holding it: its
	 * SERVER_INFO does not open with the pinned key. */
	assert_int_equal(pinned_hello(k.spub, k.spub, other_pub, other_priv, &k, &c, &sent), -EPROTO);
	assert_true(sent);
	assert_false(c.wrong_key);
	assert_false(relay_client_ready(&c));
	assert_non_null(strstr(c.error, "does not open"));
	assert_int_equal(ready_calls, 0);
	relay_client_free(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_accept),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_mesh),
		cmocka_unit_test(test_client_pin),
	};
	if (sodium_init() < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
