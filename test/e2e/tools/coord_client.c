/* coord_client: a scriptable agent of the control protocol for the
 * hardening e2e suites. It keeps one machine's keys (machine, node, disco)
 * in a state file, so several invocations are one machine, and says what
 * the server answered, one line per fact:
 *
 *   coord_client URL CONTROL_KEY STATE nodekey
 *       prints this machine's node key (nodekey:...)
 *   coord_client URL CONTROL_KEY STATE register FIELDS
 *       one register call: {"type":"register","nodeKey":..,"discoKey":..,FIELDS}
 *       (FIELDS is JSON members, e.g. "authKey":"...","hostname":"a"; a
 *       "nodeKey" in FIELDS replaces ours). Prints "HTTP <status>" and, for
 *       a sealed answer, "CODE <code or ok>" and "ANSWER <json>".
 *   coord_client URL CONTROL_KEY STATE flip N HOST_A HOST_B
 *       N re-registrations on one session, the hostname alternating, as
 *       fast as the answers come. Prints "HTTP <status> <count>" per status,
 *       "CODE <code> <count>" per error code, "RETRY_AFTER <s>" (the first).
 *   coord_client URL CONTROL_KEY STATE pod NAMESPACE NAME UID
 *       one register_pod call on this machine's session, for a pod
 *       identity with fresh keys; prints as register does.
 *   coord_client URL CONTROL_KEY STATE map SECONDS
 *       a map stream for at most SECONDS: "RECORD <type> <seq> <code> <peers>"
 *       per record as it arrives, then "END closed" (the server ended it)
 *       or "END timeout".
 */
#include <curl/curl.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "buf.h"
#include "control/channel.h"
#include "json.h"
#include "wg/aead.h"
#include "wg/noise.h"

struct keys {
	uint8_t machine[32], node[32], disco[32];
};

static const char *url;
static uint8_t server_pub[32];

static int load_keys(const char *path, struct keys *k)
{
	FILE *f = fopen(path, "rb");

	if (f) {
		size_t n = fread(k, 1, sizeof(*k), f);
		fclose(f);
		return n == sizeof(*k) ? 0 : -EINVAL;
	}
	channel_keygen(k->machine);
	channel_keygen(k->node);
	channel_keygen(k->disco);
	f = fopen(path, "wb");
	if (!f || fwrite(k, 1, sizeof(*k), f) != sizeof(*k)) {
		if (f)
			fclose(f);
		return -EIO;
	}
	return fclose(f) ? -EIO : 0;
}

struct answer {
	struct buf body;
	char retry_after[32];
};

static size_t collect(char *p, size_t size, size_t n, void *arg)
{
	return buf_add(arg, p, size * n) ? 0 : size * n;
}

static size_t header(char *p, size_t size, size_t n, void *arg)
{
	struct answer *a = arg;
	size_t len = size * n;

	if (len > 12 && strncasecmp(p, "Retry-After:", 12) == 0) {
		size_t skip = 12, v;

		while (skip < len && p[skip] == ' ')
			skip++;
		v = len - skip < sizeof(a->retry_after) - 1 ? len - skip : sizeof(a->retry_after) - 1;
		memcpy(a->retry_after, p + skip, v);
		a->retry_after[v] = '\0';
		for (char *e = a->retry_after; *e; e++)
			if (*e == '\r' || *e == '\n')
				*e = '\0';
	}
	return len;
}

static long post(const char *path, const void *body, size_t len, struct answer *a)
{
	CURL *h = curl_easy_init();
	char full[512];
	long status = 0;

	snprintf(full, sizeof(full), "%s%s", url, path);
	buf_reset(&a->body);
	a->retry_after[0] = '\0';
	curl_easy_setopt(h, CURLOPT_URL, full);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)len);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &a->body);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, a);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 30L);
	if (curl_easy_perform(h) == CURLE_OK)
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(h);
	return status;
}

static int handshake(const struct keys *k, struct channel_session *s)
{
	struct answer a = { .body = BUF_INIT(1 << 16) };
	struct channel_initiator st;
	uint8_t m1[CHANNEL_MSG1_LEN], ts[CHANNEL_TAI64N_LEN];
	struct timespec now;
	long status;
	int err;

	clock_gettime(CLOCK_REALTIME, &now);
	noise_tai64n(ts, &now);
	channel_initiate(&st, k->machine, server_pub, ts, m1);
	status = post("/knit/v1/handshake", m1, sizeof(m1), &a);
	err = status == 200 ? channel_finish(&st, a.body.data, a.body.len, s) : -EPROTO;
	if (err)
		fprintf(stderr, "coord_client: handshake: HTTP %ld\n", status);
	buf_free(&a.body);
	return err;
}

/* One sealed call: the HTTP status, and the opened answer in plain. */
static long call(struct channel_session *s, const char *req, struct buf *plain, struct answer *a)
{
	struct buf frame = BUF_INIT(1 << 20);
	long status;

	buf_reset(plain);
	channel_seal(s, req, strlen(req), &frame);
	status = post("/knit/v1/call", frame.data, frame.len, a);
	if (status == 200 && channel_open(s, a->body.data, a->body.len, plain) != 0)
		status = -1;
	buf_free(&frame);
	return status;
}

static const char *answer_code(const struct buf *plain, char *out, size_t outlen)
{
	struct json_error je;
	struct json *j = json_parse((const char *)plain->data, plain->len, &je);
	const char *code = json_str(json_get(j, "code"));

	snprintf(out, outlen, "%s", code ? code : json_get(j, "error") ? "Unknown" : "ok");
	json_free(j);
	return out;
}

static void register_req(const struct keys *k, const char *fields, char *out, size_t outlen)
{
	char nk[80], dk[80];

	{
		uint8_t pub[32];
		channel_public_key(pub, k->node);
		channel_key_format(pub, "nodekey:", nk, sizeof(nk));
		channel_public_key(pub, k->disco);
		channel_key_format(pub, "discokey:", dk, sizeof(dk));
	}
	if (strstr(fields, "\"nodeKey\""))
		snprintf(out, outlen, "{\"type\":\"register\",\"discoKey\":\"%s\"%s%s}", dk, *fields ? "," : "", fields);
	else
		snprintf(out, outlen, "{\"type\":\"register\",\"nodeKey\":\"%s\",\"discoKey\":\"%s\"%s%s}", nk, dk,
			 *fields ? "," : "", fields);
}

static int cmd_register(const struct keys *k, const char *fields)
{
	struct answer a = { .body = BUF_INIT(1 << 20) };
	struct buf plain = BUF_INIT(1 << 20);
	struct channel_session s;
	char req[16384], code[80];
	long status;

	if (handshake(k, &s))
		return 1;
	register_req(k, fields, req, sizeof(req));
	status = call(&s, req, &plain, &a);
	printf("HTTP %ld\n", status);
	if (status == 200) {
		printf("CODE %s\n", answer_code(&plain, code, sizeof(code)));
		printf("ANSWER %s\n", buf_str(&plain));
	} else if (a.retry_after[0]) {
		printf("RETRY_AFTER %s\n", a.retry_after);
	}
	channel_session_wipe(&s);
	buf_free(&a.body);
	buf_free(&plain);
	return 0;
}

/* register_pod: this machine vouches for a pod identity (fresh keys). */
static int cmd_pod(const struct keys *k, const char *ns, const char *name, const char *uid)
{
	struct answer a = { .body = BUF_INIT(1 << 20) };
	struct buf plain = BUF_INIT(1 << 20);
	struct channel_session s;
	uint8_t priv[32], pub[32];
	char req[4096], code[80], mk[80], nk[80], dk[80];
	long status;

	if (handshake(k, &s))
		return 1;
	channel_keygen(priv);
	channel_public_key(pub, priv);
	channel_key_format(pub, "mkey:", mk, sizeof(mk));
	channel_keygen(priv);
	channel_public_key(pub, priv);
	channel_key_format(pub, "nodekey:", nk, sizeof(nk));
	channel_keygen(priv);
	channel_public_key(pub, priv);
	channel_key_format(pub, "discokey:", dk, sizeof(dk));
	snprintf(req, sizeof(req),
		 "{\"type\":\"register_pod\",\"machineKey\":\"%s\",\"nodeKey\":\"%s\",\"discoKey\":\"%s\","
		 "\"podNamespace\":\"%s\",\"podName\":\"%s\",\"podUID\":\"%s\",\"tags\":[]}",
		 mk, nk, dk, ns, name, uid);
	status = call(&s, req, &plain, &a);
	printf("HTTP %ld\n", status);
	if (status == 200) {
		printf("CODE %s\n", answer_code(&plain, code, sizeof(code)));
		printf("ANSWER %s\n", buf_str(&plain));
	}
	channel_session_wipe(&s);
	buf_free(&a.body);
	buf_free(&plain);
	return 0;
}

struct tally {
	char key[80];
	int n;
};

static void tally_add(struct tally *t, size_t max, const char *key)
{
	for (size_t i = 0; i < max; i++) {
		if (!t[i].key[0])
			snprintf(t[i].key, sizeof(t[i].key), "%s", key);
		if (strcmp(t[i].key, key) == 0) {
			t[i].n++;
			return;
		}
	}
}

static int cmd_flip(const struct keys *k, int n, const char *a_host, const char *b_host)
{
	struct answer a = { .body = BUF_INIT(1 << 20) };
	struct buf plain = BUF_INIT(1 << 20);
	struct tally statuses[8] = { 0 }, codes[16] = { 0 };
	struct channel_session s;
	char req[4096], fields[256], code[80], st[32], retry[32] = "";

	if (handshake(k, &s))
		return 1;
	for (int i = 0; i < n; i++) {
		long status;

		snprintf(fields, sizeof(fields), "\"hostname\":\"%s\"", i % 2 ? b_host : a_host);
		register_req(k, fields, req, sizeof(req));
		status = call(&s, req, &plain, &a);
		snprintf(st, sizeof(st), "%ld", status);
		tally_add(statuses, 8, st);
		if (status == 200)
			tally_add(codes, 16, answer_code(&plain, code, sizeof(code)));
		if (a.retry_after[0] && !retry[0])
			snprintf(retry, sizeof(retry), "%s", a.retry_after);
	}
	for (int i = 0; i < 8 && statuses[i].key[0]; i++)
		printf("HTTP %s %d\n", statuses[i].key, statuses[i].n);
	for (int i = 0; i < 16 && codes[i].key[0]; i++)
		printf("CODE %s %d\n", codes[i].key, codes[i].n);
	if (retry[0])
		printf("RETRY_AFTER %s\n", retry);
	channel_session_wipe(&s);
	buf_free(&a.body);
	buf_free(&plain);
	return 0;
}

/* The map stream, record by record as it arrives. */
struct stream {
	struct channel_session *s;
	struct buf in;
	long status;
};

static void print_record(const uint8_t *frame, size_t len, struct channel_session *s)
{
	struct buf plain = BUF_INIT(64u << 20);
	struct json_error je;
	struct json *j;

	if (channel_open(s, frame, len, &plain)) {
		printf("RECORD unopened 0 - 0\n");
		buf_free(&plain);
		return;
	}
	j = json_parse((const char *)plain.data, plain.len, &je);
	printf("RECORD %s %lld %s %zu\n",
	       json_str(json_get(j, "type")) ?: (json_get(j, "error") ? "error" : "?"),
	       (long long)json_int(json_get(j, "seq"), 0), json_str(json_get(j, "code")) ?: "-",
	       json_array_len(json_get(j, "peers")) + json_array_len(json_get(j, "upsert")));
	json_free(j);
	buf_free(&plain);
}

static size_t on_stream(char *p, size_t size, size_t n, void *arg)
{
	struct stream *st = arg;
	size_t len = size * n, used = 0;

	if (buf_add(&st->in, p, len))
		return 0;
	while (st->in.len - used >= 4) {
		const uint8_t *d = st->in.data + used;
		uint32_t rl = (uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 | (uint32_t)d[2] << 8 | d[3];

		if (st->in.len - used - 4 < rl)
			break;
		print_record(d + 4, rl, st->s);
		used += 4 + rl;
	}
	if (used) {
		memmove(st->in.data, st->in.data + used, st->in.len - used);
		st->in.len -= used;
	}
	return len;
}

static int cmd_map(const struct keys *k, long seconds)
{
	struct channel_session s;
	struct buf frame = BUF_INIT(1 << 16);
	struct stream st = { .s = &s, .in = BUF_INIT(64u << 20) };
	static const char req[] = "{\"type\":\"map\",\"endpoints\":[\"192.0.2.9:41641\"]}";
	char full[512];
	CURL *h;
	CURLcode rc;

	if (handshake(k, &s))
		return 1;
	channel_seal(&s, req, sizeof(req) - 1, &frame);
	snprintf(full, sizeof(full), "%s/knit/v1/map", url);
	h = curl_easy_init();
	curl_easy_setopt(h, CURLOPT_URL, full);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, frame.data);
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)frame.len);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_stream);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &st);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, seconds);
	rc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &st.status);
	printf("END %s %ld\n", rc == CURLE_OK ? "closed" : rc == CURLE_OPERATION_TIMEDOUT ? "timeout" : "failed",
	       st.status);
	curl_easy_cleanup(h);
	buf_free(&frame);
	buf_free(&st.in);
	channel_session_wipe(&s);
	return 0;
}

int main(int argc, char **argv)
{
	struct keys k;
	int r = 2;

	if (argc < 5 || !channel_key_parse(argv[2], "ctrlkey:", server_pub)) {
		fprintf(stderr, "usage: coord_client URL ctrlkey:HEX STATE nodekey|register|pod|flip|map ...\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	url = argv[1];
	aead_init(AEAD_IMPL_AUTO);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (load_keys(argv[3], &k)) {
		fprintf(stderr, "coord_client: cannot use the state file %s\n", argv[3]);
		return 1;
	}
	if (strcmp(argv[4], "nodekey") == 0) {
		uint8_t pub[32];
		char text[80];
		channel_public_key(pub, k.node);
		channel_key_format(pub, "nodekey:", text, sizeof(text));
		printf("%s\n", text);
		r = 0;
	} else if (strcmp(argv[4], "register") == 0 && argc == 6) {
		r = cmd_register(&k, argv[5]);
	} else if (strcmp(argv[4], "flip") == 0 && argc == 8) {
		r = cmd_flip(&k, atoi(argv[5]), argv[6], argv[7]);
	} else if (strcmp(argv[4], "pod") == 0 && argc == 8) {
		r = cmd_pod(&k, argv[5], argv[6], argv[7]);
	} else if (strcmp(argv[4], "map") == 0 && argc == 6) {
		r = cmd_map(&k, atol(argv[5]));
	} else {
		fprintf(stderr, "coord_client: unknown command or wrong arguments\n");
	}
	curl_global_cleanup();
	return r;
}
