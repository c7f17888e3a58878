/* Relay framing: every typed frame round-trips through the parser fed in
 * every split; malformed bodies and oversized headers are refused; unknown
 * types pass as frames. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "relay/frame.h"

static const uint8_t k1[32] = { 1, 2, 3 }, k2[32] = { 9, 8, 7 };

/* Builds a stream of every frame type, then parses it in chunks of every
 * size from 1 to the whole, checking each decoded frame. */
static void test_roundtrip_splits(void **state)
{
	struct buf s = BUF_INIT(1 << 20);
	uint8_t big[RELAY_MAX_PACKET];
	const uint8_t ping[8] = "pingpong";

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)(i * 7);
	assert_int_equal(relay_frame_send_packet(&s, k1, "hello", 5), 0);
	assert_int_equal(relay_frame_recv_packet(&s, k2, big, sizeof(big)), 0);
	assert_int_equal(relay_frame_forward_packet(&s, k1, k2, "fw", 2), 0);
	assert_int_equal(relay_frame_peer_gone(&s, k2, RELAY_GONE_NOT_HERE), 0);
	assert_int_equal(relay_frame_peer_present(&s, k1), 0);
	assert_int_equal(relay_frame_ping(&s, RELAY_FRAME_PING, ping), 0);
	assert_int_equal(relay_frame_ping(&s, RELAY_FRAME_PONG, ping), 0);
	assert_int_equal(relay_frame_health(&s, "draining"), 0);
	assert_int_equal(relay_frame_empty(&s, RELAY_FRAME_KEEPALIVE), 0);
	assert_int_equal(relay_frame_empty(&s, RELAY_FRAME_WATCH_CONNS), 0);
	assert_int_equal(relay_frame_append(&s, 0x7f, "xyz", 3, NULL, 0, NULL, 0), 0); /* unknown */
	assert_int_equal(relay_frame_send_packet(&s, k1, big, sizeof(big) + 1), -EMSGSIZE);
	assert_int_equal(relay_frame_empty(&s, RELAY_FRAME_PING), -EINVAL);

	static const size_t chunks[] = { 1, 2, 3, 4, 5, 6, 7, 31, 37, 1000, 4096, 65536, 1 << 20 };
	for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
		struct relay_parser p;
		size_t off = 0, nframes = 0;

		relay_parser_init(&p, 0);
		while (off < s.len) {
			const uint8_t *d = s.data + off;
			size_t n = s.len - off < chunks[c] ? s.len - off : chunks[c], left = n;
			struct relay_frame f;
			int r;

			while ((r = relay_parser_next(&p, &d, &left, &f)) == 1) {
				struct relay_msg m;
				char err[96];

				assert_true(relay_frame_decode(&f, &m, err, sizeof(err)));
				switch (nframes++) {
				case 0:
					assert_int_equal(m.type, RELAY_FRAME_SEND_PACKET);
					assert_memory_equal(m.key, k1, 32);
					assert_int_equal(m.data_len, 5);
					assert_memory_equal(m.data, "hello", 5);
					break;
				case 1:
					assert_int_equal(m.type, RELAY_FRAME_RECV_PACKET);
					assert_memory_equal(m.key, k2, 32);
					assert_int_equal(m.data_len, sizeof(big));
					assert_memory_equal(m.data, big, sizeof(big));
					break;
				case 2:
					assert_int_equal(m.type, RELAY_FRAME_FORWARD_PACKET);
					assert_memory_equal(m.key, k1, 32);
					assert_memory_equal(m.dst, k2, 32);
					assert_memory_equal(m.data, "fw", 2);
					break;
				case 3:
					assert_int_equal(m.type, RELAY_FRAME_PEER_GONE);
					assert_int_equal(m.reason, RELAY_GONE_NOT_HERE);
					break;
				case 4:
					assert_int_equal(m.type, RELAY_FRAME_PEER_PRESENT);
					break;
				case 5:
				case 6:
					assert_int_equal(m.type, nframes == 6 ? RELAY_FRAME_PING : RELAY_FRAME_PONG);
					assert_memory_equal(m.data, ping, 8);
					break;
				case 7:
					assert_int_equal(m.type, RELAY_FRAME_HEALTH);
					assert_int_equal(m.data_len, 8);
					break;
				case 8:
					assert_int_equal(m.type, RELAY_FRAME_KEEPALIVE);
					break;
				case 9:
					assert_int_equal(m.type, RELAY_FRAME_WATCH_CONNS);
					break;
				case 10:
					assert_int_equal(m.type, 0x7f);
					assert_int_equal(f.len, 3);
					break;
				}
			}
			assert_int_equal(r, 0);
			assert_int_equal(left, 0);
			off += n;
		}
		assert_int_equal(nframes, 11);
		assert_true(relay_parser_idle(&p));
		relay_parser_free(&p);
	}
	buf_free(&s);
}

static void test_oversize(void **state)
{
	struct relay_parser p;
	uint8_t hdr[5];
	const uint8_t *d = hdr;
	size_t n = 5;
	struct relay_frame f;

	relay_frame_header(hdr, RELAY_FRAME_SEND_PACKET, 1000);
	relay_parser_init(&p, 999);
	assert_int_equal(relay_parser_next(&p, &d, &n, &f), -EMSGSIZE);
	assert_true(p.failed);
	assert_null(p.body.data); /* nothing buffered */
	d = hdr;
	n = 5;
	assert_int_equal(relay_parser_next(&p, &d, &n, &f), -EPROTO);
	relay_parser_free(&p);

	/* The header split byte by byte is refused the same way. */
	relay_parser_init(&p, 999);
	d = hdr;
	for (int i = 0; i < 4; i++) {
		n = 1;
		assert_int_equal(relay_parser_next(&p, &d, &n, &f), 0);
	}
	n = 1;
	assert_int_equal(relay_parser_next(&p, &d, &n, &f), -EMSGSIZE);
	relay_parser_free(&p);

	/* 4 GiB announced. */
	relay_parser_init(&p, 0);
	memcpy(hdr, "\x04\xff\xff\xff\xff", 5);
	d = hdr;
	n = 5;
	assert_int_equal(relay_parser_next(&p, &d, &n, &f), -EMSGSIZE);
	relay_parser_free(&p);
}

static void test_malformed_bodies(void **state)
{
	static const struct {
		uint8_t type;
		size_t len;
	} bad[] = {
		{ RELAY_FRAME_SERVER_KEY, 71 },	 { RELAY_FRAME_SERVER_KEY, 73 },
		{ RELAY_FRAME_CLIENT_INFO, 71 }, { RELAY_FRAME_CLIENT_INFO, 32 + 24 + 257 },
		{ RELAY_FRAME_SERVER_INFO, 39 }, { RELAY_FRAME_SEND_PACKET, 31 },
		{ RELAY_FRAME_SEND_PACKET, 32 + RELAY_MAX_PACKET + 1 },
		{ RELAY_FRAME_RECV_PACKET, 0 },	 { RELAY_FRAME_FORWARD_PACKET, 63 },
		{ RELAY_FRAME_KEEPALIVE, 1 },	 { RELAY_FRAME_WATCH_CONNS, 8 },
		{ RELAY_FRAME_PING, 7 },	 { RELAY_FRAME_PONG, 9 },
		{ RELAY_FRAME_PEER_GONE, 32 },	 { RELAY_FRAME_PEER_PRESENT, 33 },
		{ RELAY_FRAME_HEALTH, RELAY_MAX_HEALTH + 1 },
	};
	static uint8_t body[2 * 32 + RELAY_MAX_PACKET + 1];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct relay_frame f = { bad[i].type, body, bad[i].len };
		struct relay_msg m;
		char err[96] = "";

		assert_false(relay_frame_decode(&f, &m, err, sizeof(err)));
		assert_true(err[0]);
	}
	/* SERVER_KEY with the right length but not our magic. */
	{
		struct relay_frame f = { RELAY_FRAME_SERVER_KEY, body, 72 };
		struct relay_msg m;

		assert_false(relay_frame_decode(&f, &m, NULL, 0));
		memcpy(body, "KNITRLY1", 8);
		assert_true(relay_frame_decode(&f, &m, NULL, 0));
		assert_ptr_equal(m.key, body + 8);
		assert_ptr_equal(m.challenge, body + 40);
	}
}

static void test_keys(void **state)
{
	uint8_t k[32];
	char hex[65];

	assert_true(relay_key_parse("0102030000000000000000000000000000000000000000000000000000000000", k));
	assert_memory_equal(k, k1, 32);
	assert_string_equal(relay_key_hex(k, hex),
			    "0102030000000000000000000000000000000000000000000000000000000000");
	assert_true(relay_key_parse("AQIDAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", k));
	assert_memory_equal(k, k1, 32);
	assert_false(relay_key_parse("01020300", k));
	assert_false(relay_key_parse("zz02030000000000000000000000000000000000000000000000000000000000", k));
	assert_false(relay_key_parse("", k));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip_splits),
		cmocka_unit_test(test_oversize),
		cmocka_unit_test(test_malformed_bodies),
		cmocka_unit_test(test_keys),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
