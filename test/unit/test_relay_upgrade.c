/* The relay's HTTP upgrade: the request a client sends, the 101 back, and
 * every refusal the server makes (wrong path, no upgrade token, wrong
 * method, malformed lines, heads over the cap), from heads split anywhere. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "relay/upgrade.h"

static void test_roundtrip(void **state)
{
	struct buf req = BUF_INIT(4096), resp = BUF_INIT(4096);
	size_t head = 0;
	char err[128];

	assert_int_equal(relay_upgrade_request(&req, "relay.example:443"), 0);
	/* Every prefix is incomplete, the whole is accepted. */
	for (size_t n = 0; n < req.len; n++)
		assert_int_equal(relay_upgrade_request_parse((char *)req.data, n, &head, err, sizeof(err)), 0);
	buf_add(&req, "\x06\x00\x00\x00\x00", 5); /* a frame after the head */
	assert_int_equal(relay_upgrade_request_parse((char *)req.data, req.len, &head, err, sizeof(err)), 1);
	assert_int_equal(head, req.len - 5);
	assert_int_equal(relay_upgrade_response(&resp), 0);
	for (size_t n = 0; n < resp.len; n++)
		assert_int_equal(relay_upgrade_response_parse((char *)resp.data, n, &head, err, sizeof(err)), 0);
	assert_int_equal(relay_upgrade_response_parse((char *)resp.data, resp.len, &head, err, sizeof(err)), 1);
	assert_int_equal(head, resp.len);
	assert_int_equal(relay_upgrade_request(&req, "bad host"), -EINVAL);
	buf_free(&req);
	buf_free(&resp);
}

static void test_refusals(void **state)
{
	static const struct {
		const char *head;
		int want;
	} cases[] = {
		{ "GET /other HTTP/1.1\r\nUpgrade: knit-relay\r\nConnection: Upgrade\r\n\r\n", -ENOENT },
		{ "GET /knit/relay HTTP/1.1\r\nHost: x\r\n\r\n", -EPROTO },
		{ "GET /knit/relay HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", -EPROTO },
		{ "GET /knit/relay HTTP/1.1\r\nUpgrade: knit-relay\r\n\r\n", -EPROTO },
		{ "POST /knit/relay HTTP/1.1\r\nUpgrade: knit-relay\r\nConnection: Upgrade\r\n\r\n", -EINVAL },
		{ "GET /knit/relay\r\n\r\n", -EINVAL },
		{ "GET /knit/relay HTTP/2.0\r\n\r\n", -EINVAL },
		{ "GET /knit/relay HTTP/1.1\r\nno colon here\r\n\r\n", -EINVAL },
		{ "GET /knit/relay HTTP/1.1\r\nX: a\x01b\r\n\r\n", -EINVAL },
		{ "\x16\x03\x01\x02\x00", -EINVAL }, /* TLS to a plain port */
		{ "get /knit/relay", -EINVAL },
	};
	struct buf out = BUF_INIT(4096);
	size_t head;
	char err[128];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = 0;
		assert_int_equal(relay_upgrade_request_parse(cases[i].head, strlen(cases[i].head), &head, err,
							     sizeof(err)),
				 cases[i].want);
		assert_true(err[0]);
		buf_reset(&out);
		assert_int_equal(relay_upgrade_refusal(&out, cases[i].want), 0);
		assert_non_null(strstr(buf_str(&out), cases[i].want == -ENOENT ? " 404 " :
						      cases[i].want == -EPROTO ? " 426 " : " 400 "));
	}
	/* Tokens are case-insensitive and may be in a list. */
	{
		const char *ok = "GET /knit/relay HTTP/1.1\r\nupgrade: h2c, KNIT-RELAY\r\nconnection: keep-alive, upgrade\r\n\r\n";

		assert_int_equal(relay_upgrade_request_parse(ok, strlen(ok), &head, err, sizeof(err)), 1);
	}
	/* A head that never ends is refused at the cap. */
	{
		static char big[RELAY_UPGRADE_MAX_HEAD + 10];

		memset(big, 'a', sizeof(big));
		memcpy(big, "GET /knit/relay HTTP/1.1\r\nX: ", 29);
		assert_int_equal(relay_upgrade_request_parse(big, sizeof(big), &head, err, sizeof(err)), -EMSGSIZE);
		assert_int_equal(relay_upgrade_response_parse(big, sizeof(big), &head, err, sizeof(err)), -EMSGSIZE);
	}
	/* Responses other than 101, or without the token. */
	{
		const char *r404 = "HTTP/1.1 404 Not Found\r\n\r\n";
		const char *r101 = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";

		assert_int_equal(relay_upgrade_response_parse(r404, strlen(r404), &head, err, sizeof(err)), -EPROTO);
		assert_int_equal(relay_upgrade_response_parse(r101, strlen(r101), &head, err, sizeof(err)), -EPROTO);
	}
	buf_free(&out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_refusals),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
