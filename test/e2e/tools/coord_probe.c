/* coord_probe: hostile and careless clients of the coordination API, for
 * the coordination e2e suite. Prints one line per probe, "PROBE name status",
 * and exits non-zero if any probe got an answer other than the one a
 * correct server gives.
 *
 *   coord_probe URL CONTROL_KEY
 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "control/channel.h"
#include "wg/aead.h"
#include "wg/noise.h"

static size_t collect(char *p, size_t size, size_t n, void *arg)
{
	return buf_add(arg, p, size * n) ? 0 : size * n;
}

static long post(const char *base, const char *path, const void *body, size_t len, struct buf *out)
{
	CURL *h = curl_easy_init();
	char url[512];
	long status = 0;

	snprintf(url, sizeof(url), "%s%s", base, path);
	buf_reset(out);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)len);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
	if (curl_easy_perform(h) == CURLE_OK)
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(h);
	return status;
}

static int failures;

/* Seals req as a call and expects a sealed error naming want_code and
 * the field in want_text (the server validates with the agents' codec). */
static void expect_refusal(const char *name, const char *base, struct channel_session *s, const char *req,
			   const char *want_code, const char *want_text)
{
	struct buf frame = BUF_INIT(1 << 20), out = BUF_INIT(1 << 20), plain = BUF_INIT(1 << 20);
	char code[80];
	long status;
	bool ok = false;

	channel_seal(s, req, strlen(req), &frame);
	status = post(base, "/knit/v1/call", frame.data, frame.len, &out);
	snprintf(code, sizeof(code), "\"code\":\"%s\"", want_code);
	if (status == 200 && channel_open(s, out.data, out.len, &plain) == 0)
		ok = strstr(buf_str(&plain), code) && strstr(buf_str(&plain), want_text);
	printf("PROBE %s %ld %s%s\n", name, status, plain.len ? buf_str(&plain) : "", ok ? "" : " (WRONG)");
	if (!ok)
		failures++;
	buf_free(&frame);
	buf_free(&out);
	buf_free(&plain);
}

static void expect(const char *name, long got, long want)
{
	printf("PROBE %s %ld%s\n", name, got, got == want ? "" : " (WRONG)");
	if (got != want)
		failures++;
}

int main(int argc, char **argv)
{
	uint8_t server[32], machine[32], m1[CHANNEL_MSG1_LEN], ts[12];
	struct channel_initiator st;
	struct channel_session s;
	struct buf out = BUF_INIT(1 << 20), frame = BUF_INIT(1 << 20), plain = BUF_INIT(1 << 20);
	struct timespec now;
	char *big;

	if (argc != 3 || !channel_key_parse(argv[2], "ctrlkey:", server)) {
		fprintf(stderr, "usage: coord_probe URL ctrlkey:HEX\n");
		return 2;
	}
	aead_init(AEAD_IMPL_AUTO);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	channel_keygen(machine);

	expect("garbage-handshake", post(argv[1], "/knit/v1/handshake", "hello, world", 12, &out), 400);
	big = calloc(1, 1 << 20);
	expect("oversized-handshake", post(argv[1], "/knit/v1/handshake", big, 4096, &out), 413);
	expect("oversized-call", post(argv[1], "/knit/v1/call", big, 1 << 20, &out), 413);
	expect("garbage-call", post(argv[1], "/knit/v1/call", "0123456789abcdef0123456789abcdefxyz", 35, &out), 401);
	free(big);

	clock_gettime(CLOCK_REALTIME, &now);
	noise_tai64n(ts, &now);
	channel_initiate(&st, machine, server, ts, m1);
	expect("handshake", post(argv[1], "/knit/v1/handshake", m1, sizeof(m1), &out), 200);
	if (channel_finish(&st, out.data, out.len, &s) != 0) {
		printf("PROBE handshake-finish failed (WRONG)\n");
		return 1;
	}
	/* The same message 1 again: a replay, refused without a session. */
	expect("replayed-handshake", post(argv[1], "/knit/v1/handshake", m1, sizeof(m1), &out), 400);

	/* A registration with a made-up key: sealed, answered with an error, no effect. */
	const char *req = "{\"type\":\"register\",\"authKey\":\"knit-auth-000000000000-000000000000000000000000000000000000000000000000\","
			  "\"nodeKey\":\"nodekey:0101010101010101010101010101010101010101010101010101010101010101\","
			  "\"discoKey\":\"discokey:0202020202020202020202020202020202020202020202020202020202020202\",\"hostname\":\"intruder\"}";
	channel_seal(&s, req, strlen(req), &frame);
	expect("forged-key-register", post(argv[1], "/knit/v1/call", frame.data, frame.len, &out), 200);
	if (channel_open(&s, out.data, out.len, &plain) == 0)
		printf("PROBE forged-key-register-answer %s\n", buf_str(&plain));
	else
		failures++;
	/* The very same frame again: a replay. */
	expect("replayed-call", post(argv[1], "/knit/v1/call", frame.data, frame.len, &out), 401);
	/* A tampered frame. */
	frame.data[frame.len - 1] ^= 1;
	expect("tampered-call", post(argv[1], "/knit/v1/call", frame.data, frame.len, &out), 401);
	/* Not JSON inside a good frame: a sealed BadRequest. */
	buf_reset(&frame);
	channel_seal(&s, "not json", 8, &frame);
	expect("not-json-call", post(argv[1], "/knit/v1/call", frame.data, frame.len, &out), 200);
	buf_reset(&plain);
	if (channel_open(&s, out.data, out.len, &plain) == 0)
		printf("PROBE not-json-call-answer %s\n", buf_str(&plain));
	else
		failures++;

	/* Fields an agent would refuse are refused before anything is stored
	 * (docs/control-protocol.md, "Field rules"). */
#define NK "\"nodeKey\":\"nodekey:0101010101010101010101010101010101010101010101010101010101010101\""
#define DK "\"discoKey\":\"discokey:0202020202020202020202020202020202020202020202020202020202020202\""
	expect_refusal("register-route-junk", argv[1], &s,
		       "{\"type\":\"register\"," NK "," DK ",\"advertiseRoutes\":[\"10.0.0.0/24x\"]}", "BadRequest",
		       "advertiseRoutes[0]");
	expect_refusal("register-route-abc", argv[1], &s,
		       "{\"type\":\"register\"," NK "," DK ",\"advertiseRoutes\":[\"10.0.0.0/abc\"]}", "BadRequest",
		       "advertiseRoutes[0]");
	expect_refusal("register-empty-disco", argv[1], &s, "{\"type\":\"register\"," NK ",\"discoKey\":\"\"}",
		       "BadRequest", "discoKey");
	expect_refusal("register-bad-tag", argv[1], &s, "{\"type\":\"register\"," NK "," DK ",\"tags\":[\"tag:a b\"]}",
		       "BadRequest", "tags[0]");
	expect_refusal("update-endpoints-object", argv[1], &s, "{\"type\":\"update\",\"endpoints\":{\"a\":1}}",
		       "BadRequest", "endpoints");
	expect_refusal("update-endpoint-junk", argv[1], &s, "{\"type\":\"update\",\"endpoints\":[\"192.0.2.1\"]}",
		       "BadRequest", "endpoints[0]");
	expect_refusal("update-relay-huge", argv[1], &s, "{\"type\":\"update\",\"relay\":4294967296}", "BadRequest",
		       "relay");

	buf_free(&out);
	buf_free(&frame);
	buf_free(&plain);
	channel_session_wipe(&s);
	curl_global_cleanup();
	printf("PROBES %s\n", failures ? "FAILED" : "OK");
	return failures ? 1 : 0;
}
