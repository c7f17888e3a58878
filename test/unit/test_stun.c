/* STUN codec: the RFC 5769 test vectors (FINGERPRINT, MESSAGE-INTEGRITY,
 * XOR-MAPPED-ADDRESS for IPv4 and IPv6), round trips of what knit builds,
 * and malformed messages of every kind the parser refuses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <netinet/in.h>

#include "stun/stun.h"

/* RFC 5769 §2.1: sample request (SOFTWARE, PRIORITY, ICE-CONTROLLED,
 * USERNAME, MESSAGE-INTEGRITY, FINGERPRINT). */
static const uint8_t rfc5769_req[] = {
	0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
	0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73,
	0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff,
	0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36, 0x00, 0x06, 0x00, 0x09,
	0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20, 0x20, 0x00, 0x08, 0x00, 0x14,
	0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e, 0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49,
	0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
};

/* §2.2: sample IPv4 response, 192.0.2.1:32853. */
static const uint8_t rfc5769_resp4[] = {
	0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
	0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63,
	0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43,
	0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3, 0x8c, 0x74, 0x89, 0xf9,
	0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, 0x80, 0x28, 0x00, 0x04, 0xc0, 0x7d, 0x4c, 0x96,
};

/* §2.3: sample IPv6 response, [2001:db8:1234:5678:11:2233:4455:6677]:32853. */
static const uint8_t rfc5769_resp6[] = {
	0x01, 0x01, 0x00, 0x48, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
	0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63,
	0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa,
	0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9, 0x00, 0x08, 0x00, 0x14,
	0xa3, 0x82, 0x95, 0x4e, 0x4b, 0xe6, 0x7b, 0xf1, 0x17, 0x84, 0xc9, 0x7c, 0x82, 0x92, 0xc2, 0x75,
	0xbf, 0xe3, 0xed, 0x41, 0x80, 0x28, 0x00, 0x04, 0xc8, 0xfb, 0x0b, 0x4c,
};

static const uint8_t rfc5769_txid[12] = { 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34,
					  0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae };
static const char rfc5769_pass[] = "VOkJxbRl1RmTxUk/WvJxBt";

static void test_crc32(void **state)
{
	assert_int_equal(stun_crc32((const uint8_t *)"123456789", 9), 0xcbf43926u);
	assert_int_equal(stun_crc32(NULL, 0), 0);
}

static void test_rfc5769_request(void **state)
{
	struct stun_msg m;
	char err[128];

	assert_true(stun_is(rfc5769_req, sizeof(rfc5769_req)));
	assert_true(stun_parse(rfc5769_req, sizeof(rfc5769_req), &m, err, sizeof(err)));
	assert_int_equal(m.type, STUN_BINDING_REQUEST);
	assert_memory_equal(m.txid, rfc5769_txid, 12);
	assert_true(m.has_fingerprint);
	assert_false(m.has_addr);
	assert_int_equal(m.software_len, 16);
	assert_memory_equal(m.software, "STUN test client", 16);
	/* PRIORITY (0x0024) is comprehension-required and unknown to us. */
	assert_int_equal(m.nunknown, 1);
	assert_int_equal(m.unknown[0], 0x0024);
	assert_true(stun_check_integrity(rfc5769_req, sizeof(rfc5769_req), &m, rfc5769_pass,
					 strlen(rfc5769_pass)));
	assert_false(stun_check_integrity(rfc5769_req, sizeof(rfc5769_req), &m, "wrong", 5));
}

static void test_rfc5769_response4(void **state)
{
	struct stun_msg m;
	struct sockaddr_in *s4 = (struct sockaddr_in *)&m.addr;
	char err[128];

	assert_true(stun_parse(rfc5769_resp4, sizeof(rfc5769_resp4), &m, err, sizeof(err)));
	assert_int_equal(m.type, STUN_BINDING_SUCCESS);
	assert_true(m.has_addr);
	assert_true(m.addr_xored);
	assert_true(m.has_fingerprint);
	assert_int_equal(s4->sin_family, AF_INET);
	assert_int_equal(ntohs(s4->sin_port), 32853);
	assert_int_equal(ntohl(s4->sin_addr.s_addr), 0xc0000201u);
	assert_true(stun_check_integrity(rfc5769_resp4, sizeof(rfc5769_resp4), &m, rfc5769_pass,
					 strlen(rfc5769_pass)));
}

static void test_rfc5769_response6(void **state)
{
	struct stun_msg m;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&m.addr;
	struct in6_addr want;
	char err[128];

	assert_int_equal(inet_pton(AF_INET6, "2001:db8:1234:5678:11:2233:4455:6677", &want), 1);
	assert_true(stun_parse(rfc5769_resp6, sizeof(rfc5769_resp6), &m, err, sizeof(err)));
	assert_true(m.has_addr);
	assert_int_equal(s6->sin6_family, AF_INET6);
	assert_int_equal(ntohs(s6->sin6_port), 32853);
	assert_memory_equal(&s6->sin6_addr, &want, 16);
	assert_true(stun_check_integrity(rfc5769_resp6, sizeof(rfc5769_resp6), &m, rfc5769_pass,
					 strlen(rfc5769_pass)));
}

/* Our response encodes XOR-MAPPED-ADDRESS exactly as the RFC's vector. */
static void test_response_matches_vector(void **state)
{
	struct sockaddr_in s4 = { .sin_family = AF_INET, .sin_port = htons(32853) };
	struct sockaddr_in6 s6 = { .sin6_family = AF_INET6, .sin6_port = htons(32853) };
	uint8_t out[256];
	size_t n;

	s4.sin_addr.s_addr = htonl(0xc0000201u);
	n = stun_binding_response(out, sizeof(out), rfc5769_txid, (struct sockaddr *)&s4, NULL);
	assert_true(n > 0);
	assert_memory_equal(out + 20, "\x00\x20\x00\x08\x00\x01\xa1\x47\xe1\x12\xa6\x43", 12);
	assert_true(stun_is(out, n));

	inet_pton(AF_INET6, "2001:db8:1234:5678:11:2233:4455:6677", &s6.sin6_addr);
	n = stun_binding_response(out, sizeof(out), rfc5769_txid, (struct sockaddr *)&s6, NULL);
	assert_true(n > 0);
	assert_memory_equal(out + 20, rfc5769_resp6 + 36, 24);
}

static void test_roundtrip(void **state)
{
	const char *addrs[] = { "127.0.0.1", "203.0.113.9", "::1", "2001:db8::1", "::ffff:198.51.100.7" };
	uint8_t txid[12], out[256];
	struct stun_msg m;
	char err[128];
	size_t n;

	stun_txid_new(txid);
	n = stun_binding_request(out, sizeof(out), txid, false);
	assert_int_equal(n, 20);
	assert_true(stun_parse(out, n, &m, err, sizeof(err)));
	assert_int_equal(m.type, STUN_BINDING_REQUEST);
	assert_memory_equal(m.txid, txid, 12);
	assert_false(m.has_fingerprint);
	n = stun_binding_request(out, sizeof(out), txid, true);
	assert_int_equal(n, 28);
	assert_true(stun_parse(out, n, &m, err, sizeof(err)));
	assert_true(m.has_fingerprint);
	assert_int_equal(stun_binding_request(out, 19, txid, false), 0);
	assert_int_equal(stun_binding_request(out, 27, txid, true), 0);

	for (size_t i = 0; i < sizeof(addrs) / sizeof(addrs[0]); i++) {
		struct sockaddr_storage ss = { 0 };
		bool v4 = strchr(addrs[i], ':') == NULL;
		bool mapped = strstr(addrs[i], "ffff") != NULL;

		if (v4) {
			struct sockaddr_in *s = (struct sockaddr_in *)&ss;

			s->sin_family = AF_INET;
			s->sin_port = htons((uint16_t)(1000 + i));
			inet_pton(AF_INET, addrs[i], &s->sin_addr);
		} else {
			struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;

			s->sin6_family = AF_INET6;
			s->sin6_port = htons((uint16_t)(1000 + i));
			inet_pton(AF_INET6, addrs[i], &s->sin6_addr);
		}
		n = stun_binding_response(out, sizeof(out), txid, (struct sockaddr *)&ss, "knit");
		assert_true(n > 0);
		assert_true(stun_parse(out, n, &m, err, sizeof(err)));
		assert_int_equal(m.type, STUN_BINDING_SUCCESS);
		assert_true(m.has_addr && m.addr_xored && m.has_fingerprint);
		assert_int_equal(m.software_len, 4);
		if (v4 || mapped) {
			struct sockaddr_in *g = (struct sockaddr_in *)&m.addr;

			assert_int_equal(g->sin_family, AF_INET);
			assert_int_equal(ntohs(g->sin_port), 1000 + i);
			if (mapped)
				assert_memory_equal(&g->sin_addr,
						    ((struct sockaddr_in6 *)&ss)->sin6_addr.s6_addr + 12, 4);
			else
				assert_memory_equal(&g->sin_addr, &((struct sockaddr_in *)&ss)->sin_addr, 4);
		} else {
			struct sockaddr_in6 *g = (struct sockaddr_in6 *)&m.addr;

			assert_int_equal(g->sin6_family, AF_INET6);
			assert_memory_equal(&g->sin6_addr, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
		}
		/* Too small a buffer at every size: 0, never an overrun. */
		for (size_t cap = 0; cap < n; cap++)
			assert_int_equal(stun_binding_response(out, cap, txid, (struct sockaddr *)&ss, "knit"), 0);
	}
}

static void test_error_response(void **state)
{
	struct stun_msg req, m;
	uint8_t out[256];
	char err[128];
	size_t n;

	assert_true(stun_parse(rfc5769_req, sizeof(rfc5769_req), &req, err, sizeof(err)));
	n = stun_binding_error(out, sizeof(out), &req, 420);
	assert_true(n > 0);
	assert_true(stun_parse(out, n, &m, err, sizeof(err)));
	assert_int_equal(m.type, STUN_BINDING_ERROR);
	assert_int_equal(m.error_code, 420);
	assert_memory_equal(m.txid, rfc5769_txid, 12);
}

/* Every malformation, each from a valid message with one change. */
static void test_malformed(void **state)
{
	uint8_t b[sizeof(rfc5769_resp4) + 8];
	struct stun_msg m;
	char err[128];

	/* Truncations at every length are refused. */
	for (size_t n = 0; n < sizeof(rfc5769_resp4); n++)
		assert_false(stun_parse(rfc5769_resp4, n, &m, err, sizeof(err)));

#define MUTATE(off, val)                                                                  \
	do {                                                                              \
		memcpy(b, rfc5769_resp4, sizeof(rfc5769_resp4));                          \
		b[off] = (val);                                                           \
		assert_false(stun_parse(b, sizeof(rfc5769_resp4), &m, err, sizeof(err))); \
		assert_true(err[0] != 0);                                                 \
	} while (0)
	MUTATE(0, 0x41);	/* top bits */
	MUTATE(4, 0x22);	/* cookie */
	MUTATE(3, 0x40);	/* length too long */
	MUTATE(3, 0x38);	/* length too short */
	MUTATE(3, 0x3d);	/* not a multiple of 4 */
	MUTATE(23, 0xff);	/* SOFTWARE overruns */
	MUTATE(39, 0x09);	/* XOR-MAPPED-ADDRESS wrong length for IPv4 */
	MUTATE(41, 0x03);	/* unknown family */
	MUTATE(40, 0x01);	/* reserved byte set */
	MUTATE(51, 0x10);	/* MESSAGE-INTEGRITY wrong length */
	MUTATE(79, 0x97);	/* FINGERPRINT wrong */
	MUTATE(49, 0x07);	/* changes MI into an unknown attr: FINGERPRINT no longer matches */
	MUTATE(30, 0x00);	/* any byte covered by FINGERPRINT */
#undef MUTATE

	/* FINGERPRINT not last. */
	memcpy(b, rfc5769_resp4, sizeof(rfc5769_resp4));
	memcpy(b + sizeof(rfc5769_resp4), "\x80\x22\x00\x04test", 8);
	b[3] += 8;
	assert_false(stun_parse(b, sizeof(b), &m, err, sizeof(err)));
	/* Oversized. */
	{
		static uint8_t big[STUN_MAX_MSG + 4];

		memcpy(big, rfc5769_resp4, 20);
		big[2] = (uint8_t)((sizeof(big) - 20) >> 8);
		big[3] = (uint8_t)(sizeof(big) - 20);
		assert_false(stun_is(big, sizeof(big)));
		assert_false(stun_parse(big, sizeof(big), &m, err, sizeof(err)));
	}
	/* Non-STUN first bytes the socket demultiplexer must not take. */
	assert_false(stun_is((const uint8_t *)"\x01\x00\x00\x00", 4));
	{
		uint8_t wg[148] = { 1 };

		assert_false(stun_is(wg, sizeof(wg)));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc32),
		cmocka_unit_test(test_rfc5769_request),
		cmocka_unit_test(test_rfc5769_response4),
		cmocka_unit_test(test_rfc5769_response6),
		cmocka_unit_test(test_response_matches_vector),
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_error_response),
		cmocka_unit_test(test_malformed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
