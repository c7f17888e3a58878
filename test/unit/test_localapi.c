/* agent/localapi.c on a real unix socket with fake ops: the routes, their
 * validation, late answers, a client that leaves before its answer, and
 * the socket's mode and lifetime. The server runs on a loop in the test's
 * thread; requests are libcurl easy handles in a thread of their own. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <curl/curl.h>

#include "buf.h"
#include "json.h"
#include "localapi.h"
#include "log.h"
#include "loop.h"

#define TEST_DEADLINE_S 60

struct fx {
	struct loop *loop;
	struct localapi *api;
	char dir[64];
	char sock[100];
	/* what the fake ops saw */
	struct localapi_up up;
	char up_auth[64], up_login[128], up_host[64], up_tags[256], up_routes[256];
	int ups, downs, logouts, pings;
	char ping_peer[64];
	bool ping_icmp;
	int attaches, detaches, lists;
	char at_cid[130], at_if[20], at_netns[128], at_uid[64], at_tags[128], at_host[64];
	char de_cid[130], de_if[20];
	struct localapi_reply *pending; /* an answer to give late */
	int late_kind; /* 1: up, 2: pong, 3: error */
};

/* ---- fake daemon ------------------------------------------------------------------- */

static const char *const self_addrs[] = { "100.64.0.5", "fd7a:115c:a1e0::5" };
static const char *const db_addrs[] = { "100.64.0.7" };
static const char *const web_addrs[] = { "100.64.0.8" };
static const char *const db_tags[] = { "tag:db" };

static int f_status(void *arg, struct localapi_writer *w)
{
	struct localapi_status st = { .backend_state = "Running", .login_server = "http://ctl:8080",
				      .dns_suffix = "tailnet.knit", .control_key = "ctrlkey:00" };
	struct localapi_peer self = { .name = "laptop", .dns_name = "laptop.tailnet.knit",
				      .addresses = self_addrs, .naddresses = 2, .online = true };
	struct localapi_peer db = { .name = "db", .dns_name = "db.tailnet.knit", .addresses = db_addrs,
				    .naddresses = 1, .tags = db_tags, .ntags = 1, .endpoint = "192.0.2.7:41641",
				    .last_handshake = 1700000000, .rx_bytes = 1234, .tx_bytes = 5678, .online = true };
	struct localapi_peer web = { .name = "web", .addresses = web_addrs, .naddresses = 1, .relay = 1 };
	static const char map[] = "{\"regions\":[{\"id\":1,\"code\":\"home\",\"nodes\":[{\"name\":\"1a\",\"hostName\":\"r\"}]}]}";
	struct json_error je;
	struct json *relay_map = json_parse(map, strlen(map), &je);
	int err = 0;

	st.relay_map = relay_map;
	st.has_relay_map = true;
	if (!relay_map || localapi_write_status(w, &st) || localapi_write_self(w, &self) || localapi_write_peer(w, &db) ||
	    localapi_write_peer(w, &web))
		err = -ENOMEM;
	json_free(relay_map);
	return err;
}

static int f_whois(void *arg, const char *ip, struct localapi_writer *w)
{
	struct localapi_peer db = { .name = "db", .addresses = db_addrs, .naddresses = 1, .tags = db_tags, .ntags = 1 };

	if (strcmp(ip, "100.64.0.7"))
		return -ENOENT;
	return localapi_write_peer(w, &db);
}

static void join(char *out, size_t len, const char *const *v, size_t n)
{
	out[0] = '\0';
	for (size_t i = 0; i < n; i++)
		snprintf(out + strlen(out), len - strlen(out), "%s%s", i ? "," : "", v[i]);
}

static void f_up(void *arg, const struct localapi_up *req, struct localapi_reply *reply)
{
	struct fx *fx = arg;
	struct localapi_up_result res = { .backend_state = "Running", .device = "laptop-3f9a2c",
					  .name = "laptop", .addresses = self_addrs, .naddresses = 2,
					  .control_key = "ctrlkey:ab", .control_key_new = true };

	fx->ups++;
	fx->up = *req;
	snprintf(fx->up_auth, sizeof(fx->up_auth), "%s", req->auth_key ? req->auth_key : "(none)");
	snprintf(fx->up_login, sizeof(fx->up_login), "%s", req->login_server ? req->login_server : "(none)");
	snprintf(fx->up_host, sizeof(fx->up_host), "%s", req->hostname ? req->hostname : "(none)");
	join(fx->up_tags, sizeof(fx->up_tags), req->tags, req->ntags);
	join(fx->up_routes, sizeof(fx->up_routes), req->routes, req->nroutes);
	if (req->auth_key && strcmp(req->auth_key, "late") == 0) {
		fx->pending = reply;
		fx->late_kind = 1;
		return;
	}
	if (req->auth_key && strcmp(req->auth_key, "bad") == 0) {
		localapi_reply_error(reply, 403, "AuthKeyInvalid", "the auth key is not valid: make a new one");
		return;
	}
	localapi_reply_up(reply, &res);
}

static void f_down(void *arg, struct localapi_reply *reply)
{
	struct fx *fx = arg;

	fx->downs++;
	localapi_reply_ok(reply, NULL);
}

static void f_logout(void *arg, struct localapi_reply *reply)
{
	struct fx *fx = arg;

	fx->logouts++;
	fx->pending = reply;
	fx->late_kind = 3;
}

static void f_ping(void *arg, const char *peer, bool icmp, struct localapi_reply *reply)
{
	struct fx *fx = arg;

	fx->pings++;
	fx->ping_icmp = icmp;
	snprintf(fx->ping_peer, sizeof(fx->ping_peer), "%s", peer);
	if (strcmp(peer, "nobody") == 0) {
		localapi_reply_error(reply, 404, "PeerNotFound", "no peer called \"%s\"", peer);
		return;
	}
	fx->pending = reply;
	fx->late_kind = 2;
}

static const struct localapi_ops fake_ops = {
	.status = f_status, .whois = f_whois, .up = f_up, .down = f_down,
	.logout = f_logout, .ping = f_ping,
};

static void f_attach(void *arg, const struct localapi_attach *a, struct localapi_reply *reply)
{
	struct fx *fx = arg;
	struct json *o = json_new_object();

	fx->attaches++;
	snprintf(fx->at_cid, sizeof(fx->at_cid), "%s", a->container_id);
	snprintf(fx->at_if, sizeof(fx->at_if), "%s", a->ifname);
	snprintf(fx->at_netns, sizeof(fx->at_netns), "%s", a->netns);
	snprintf(fx->at_uid, sizeof(fx->at_uid), "%s", a->pod_uid ? a->pod_uid : "(none)");
	snprintf(fx->at_host, sizeof(fx->at_host), "%s", a->hostname ? a->hostname : "(none)");
	join(fx->at_tags, sizeof(fx->at_tags), a->tags, a->ntags);
	if (!strcmp(a->container_id, "taken")) {
		json_free(o);
		localapi_reply_error(reply, 409, "IdentityConflict", "the attachment belongs to another pod");
		return;
	}
	json_object_set(o, "interface", json_new_string(a->ifname));
	localapi_reply_ok(reply, o);
}

static void f_detach(void *arg, const char *cid, const char *ifname, struct localapi_reply *reply)
{
	struct fx *fx = arg;

	fx->detaches++;
	snprintf(fx->de_cid, sizeof(fx->de_cid), "%s", cid);
	snprintf(fx->de_if, sizeof(fx->de_if), "%s", ifname);
	if (!strcmp(cid, "unknown"))
		localapi_reply_error(reply, 404, "NotFound", "no pod identity for %s/%s", cid, ifname);
	else
		localapi_reply_ok(reply, NULL);
}

static void f_list(void *arg, struct localapi_reply *reply)
{
	struct fx *fx = arg;
	struct json *o = json_new_object();

	fx->lists++;
	json_object_set(o, "identities", json_new_array());
	localapi_reply_ok(reply, o);
}

/* Completes the pending answer, as the daemon would when the network answers. */
static void complete_pending(struct fx *fx)
{
	struct localapi_up_result res = { .backend_state = "Running", .device = "late-1", .name = "late",
					  .addresses = self_addrs, .naddresses = 1 };
	struct localapi_pong pong = { .peer = "db", .ip = "100.64.0.7", .latency_ms = 12.5,
				      .endpoint = "192.0.2.7:41641" };
	struct localapi_reply *r = fx->pending;

	fx->pending = NULL;
	if (fx->late_kind == 1)
		localapi_reply_up(r, &res);
	else if (fx->late_kind == 2)
		localapi_reply_pong(r, &pong);
	else
		localapi_reply_error(r, 502, "ControlUnreachable", "the control server did not answer");
}

/* ---- client thread ------------------------------------------------------------------- */

struct req {
	struct fx *fx;
	const char *method;
	const char *path;
	const char *body;
	long timeout_ms;
	long status;
	CURLcode rc;
	struct buf resp;
	atomic_bool done;
};

static size_t on_write(char *p, size_t size, size_t n, void *arg)
{
	struct req *r = arg;

	if (buf_add(&r->resp, p, size * n))
		return 0;
	return size * n;
}

static void *client_main(void *arg)
{
	struct req *r = arg;
	CURL *e = curl_easy_init();
	char url[256];

	snprintf(url, sizeof(url), "http://knitd%s", r->path);
	curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, r->fx->sock);
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, r->timeout_ms ? r->timeout_ms : 10000L);
	if (r->method && strcmp(r->method, "POST") && strcmp(r->method, "GET"))
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
	if (r->body) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
	} else if (r->method && strcmp(r->method, "POST") == 0) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
	}
	r->rc = curl_easy_perform(e);
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r->status);
	curl_easy_cleanup(e);
	r->done = true;
	return NULL;
}

/* Runs one request to the end while the loop serves it. If late is set,
 * completes the pending answer once the op has been called. */
static struct json *request(struct fx *fx, const char *method, const char *path, const char *body, bool late,
			    long *status)
{
	struct req r = { .fx = fx, .method = method, .path = path, .body = body };
	pthread_t t;
	struct json *j;

	buf_init(&r.resp, 1 << 20);
	assert_int_equal(pthread_create(&t, NULL, client_main, &r), 0);
	while (!r.done) {
		assert_true(loop_run_once(fx->loop, 10) >= 0);
		if (late && fx->pending) {
			/* Let the handler return first: the answer is late. */
			for (int i = 0; i < 5; i++)
				loop_run_once(fx->loop, 10);
			complete_pending(fx);
		}
	}
	pthread_join(t, NULL);
	assert_int_equal(r.rc, CURLE_OK);
	*status = r.status;
	j = json_parse((const char *)buf_str(&r.resp), r.resp.len, NULL);
	if (!j)
		fail_msg("%s %s: not JSON: %s", method, path, buf_str(&r.resp));
	buf_free(&r.resp);
	return j;
}

static void expect_error(struct fx *fx, const char *method, const char *path, const char *body, long want_status,
			 const char *code, const char *msg_part)
{
	long status;
	struct json *j = request(fx, method, path, body, false, &status);

	if (status != want_status || strcmp(json_str(json_get(j, "code")) ?: "", code) ||
	    !strstr(json_str(json_get(j, "error")) ?: "", msg_part))
		fail_msg("%s %s %s: got %ld %s: %s", method, path, body ? body : "", status,
			 json_str(json_get(j, "code")) ?: "-", json_str(json_get(j, "error")) ?: "-");
	json_free(j);
}

/* ---- fixture --------------------------------------------------------------------------- */

static int setup(void **state)
{
	struct fx *fx = calloc(1, sizeof(*fx));
	struct localapi_opts o = { .version = "0.1.0-test", .ops = &fake_ops };
	struct localapi_ops ops = fake_ops;
	struct localapi_pod_ops pods = { .attach = f_attach, .detach = f_detach, .list = f_list };
	int err;

	alarm(TEST_DEADLINE_S);
	assert_non_null(fx);
	fx->loop = loop_new();
	assert_non_null(fx->loop);
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/knit-test-localapi-XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	snprintf(fx->sock, sizeof(fx->sock), "%s/run/knitd.sock", fx->dir);
	ops.arg = fx;
	pods.arg = fx;
	o.ops = &ops;
	o.pods = &pods;
	o.socket_path = fx->sock;
	err = localapi_new(fx->loop, &o, &fx->api);
	*state = fx;
	/* lib/httpd serves AF_UNIX sockets: anything else is a failure, not a skip. */
	assert_int_equal(err, 0);
	return 0;
}

static int teardown(void **state)
{
	struct fx *fx = *state;
	char cmd[128];

	localapi_free(fx->api);
	if (fx->pending)
		complete_pending(fx); /* only frees it now */
	loop_free(fx->loop);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->dir);
	assert_int_equal(system(cmd), 0);
	free(fx);
	alarm(0);
	return 0;
}

#define NEED_API(fx) assert_non_null((fx)->api)

/* ---- tests -------------------------------------------------------------------------------- */

static void test_socket(void **state)
{
	struct fx *fx = *state;
	struct localapi_opts o = { .socket_path = fx->sock, .ops = &fake_ops };
	struct localapi *other = NULL;
	struct localapi_ops bad = { 0 };
	struct stat sb;

	NEED_API(fx);
	assert_int_equal(stat(fx->sock, &sb), 0);
	assert_true(S_ISSOCK(sb.st_mode));
	assert_int_equal(sb.st_mode & 0777, 0600);
	/* A live knitd is not displaced. */
	assert_int_equal(localapi_new(fx->loop, &o, &other), -EADDRINUSE);
	o.ops = &bad;
	assert_int_equal(localapi_new(fx->loop, &o, &other), -EINVAL);
	/* Gone with the API; a stale file is replaced. */
	localapi_free(fx->api);
	fx->api = NULL;
	assert_int_equal(stat(fx->sock, &sb), -1);
	{
		struct sockaddr_un sun = { .sun_family = AF_UNIX };
		int s = socket(AF_UNIX, SOCK_STREAM, 0);

		snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", fx->sock);
		assert_int_equal(bind(s, (struct sockaddr *)&sun, sizeof(sun)), 0);
		close(s); /* bound, never listened, closed: stale */
	}
	o.ops = &fake_ops;
	assert_int_equal(localapi_new(fx->loop, &o, &fx->api), 0);
	/* --socket pointed at a file that is not a socket: refused, and the
	 * file is left exactly as it was. */
	localapi_free(fx->api);
	fx->api = NULL;
	{
		char buf[32] = "";
		FILE *f = fopen(fx->sock, "w");

		assert_non_null(f);
		fputs("not a socket\n", f);
		fclose(f);
		assert_int_equal(localapi_new(fx->loop, &o, &other), -EEXIST);
		f = fopen(fx->sock, "r");
		assert_non_null(f);
		assert_non_null(fgets(buf, sizeof(buf), f));
		fclose(f);
		assert_string_equal(buf, "not a socket\n");
		assert_int_equal(unlink(fx->sock), 0);
	}
	assert_int_equal(localapi_new(fx->loop, &o, &fx->api), 0);
}

static void test_status(void **state)
{
	struct fx *fx = *state;
	struct json *j, *db, *web;
	long status;

	NEED_API(fx);
	j = request(fx, "GET", "/localapi/v1/status", NULL, false, &status);
	assert_int_equal(status, 200);
	assert_string_equal(json_str(json_get(j, "version")), "0.1.0-test");
	assert_string_equal(json_str(json_get(j, "backendState")), "Running");
	assert_string_equal(json_str(json_get(j, "dnsSuffix")), "tailnet.knit");
	/* The netmap's relay map, verbatim (knit netcheck reads it). */
	assert_string_equal(json_str(json_get(json_array_at(json_path(j, "relayMap", "regions", NULL), 0), "code")), "home");
	assert_string_equal(json_str(json_get(json_array_at(json_path(json_array_at(json_path(j, "relayMap", "regions", NULL), 0),
									   "nodes", NULL), 0), "hostName")), "r");
	assert_string_equal(json_str(json_path(j, "self", "name", NULL)), "laptop");
	assert_int_equal(json_array_len(json_path(j, "self", "addresses", NULL)), 2);
	assert_int_equal(json_array_len(json_get(j, "peers")), 2);
	db = json_array_at(json_get(j, "peers"), 0);
	assert_string_equal(json_str(json_get(db, "endpoint")), "192.0.2.7:41641");
	assert_int_equal(json_int(json_get(db, "rxBytes"), 0), 1234);
	assert_int_equal(json_int(json_get(db, "txBytes"), 0), 5678);
	assert_int_equal(json_int(json_get(db, "lastHandshake"), 0), 1700000000);
	assert_string_equal(json_str(json_array_at(json_get(db, "tags"), 0)), "tag:db");
	assert_true(json_bool(json_get(db, "online"), false));
	web = json_array_at(json_get(j, "peers"), 1);
	assert_null(json_get(web, "endpoint"));
	assert_int_equal(json_int(json_get(web, "relay"), 0), 1);
	json_free(j);
}

static void test_whois(void **state)
{
	struct fx *fx = *state;
	struct json *j;
	long status;

	NEED_API(fx);
	j = request(fx, "GET", "/localapi/v1/whois?ip=100.64.0.7", NULL, false, &status);
	assert_int_equal(status, 200);
	assert_string_equal(json_str(json_path(j, "node", "name", NULL)), "db");
	json_free(j);
	expect_error(fx, "GET", "/localapi/v1/whois?ip=100.64.0.99", NULL, 404, "NotFound",
		     "no node in this tailnet has the address 100.64.0.99");
	expect_error(fx, "GET", "/localapi/v1/whois?ip=db", NULL, 400, "BadRequest", "\"db\" is not an IP address");
	expect_error(fx, "GET", "/localapi/v1/whois", NULL, 400, "BadRequest", "want ?ip=");
}

static void test_up(void **state)
{
	struct fx *fx = *state;
	struct json *j;
	long status;

	NEED_API(fx);
	j = request(fx, "POST", "/localapi/v1/up",
		    "{\"authKey\":\"knit-auth-x\",\"loginServer\":\"http://ctl:8080\",\"hostname\":\"laptop\","
		    "\"advertiseTags\":[\"tag:a\",\"tag:b\"],\"advertiseRoutes\":[\"10.0.0.0/24\",\"fd00::/64\"],"
		    "\"serverKey\":\"ctrlkey:" "0101010101010101010101010101010101010101010101010101010101010101" "\"}",
		    false, &status);
	assert_int_equal(status, 200);
	assert_string_equal(json_str(json_get(j, "device")), "laptop-3f9a2c");
	assert_true(json_bool(json_get(j, "controlKeyNew"), false));
	json_free(j);
	assert_string_equal(fx->up_auth, "knit-auth-x");
	assert_string_equal(fx->up_login, "http://ctl:8080");
	assert_string_equal(fx->up_host, "laptop");
	assert_string_equal(fx->up_tags, "tag:a,tag:b");
	assert_string_equal(fx->up_routes, "10.0.0.0/24,fd00::/64");
	assert_true(fx->up.has_server_key);
	assert_true(fx->up.has_tags);

	/* Nothing given: all absent. */
	j = request(fx, "POST", "/localapi/v1/up", NULL, false, &status);
	assert_int_equal(status, 200);
	json_free(j);
	assert_string_equal(fx->up_auth, "(none)");
	assert_false(fx->up.has_server_key);
	assert_false(fx->up.has_tags);

	/* Refused by the daemon, at once: its status. */
	expect_error(fx, "POST", "/localapi/v1/up", "{\"authKey\":\"bad\"}", 403, "AuthKeyInvalid",
		     "make a new one");
	/* Answered late: 200 and the answer. */
	j = request(fx, "POST", "/localapi/v1/up", "{\"authKey\":\"late\"}", true, &status);
	assert_int_equal(status, 200);
	assert_string_equal(json_str(json_get(j, "device")), "late-1");
	json_free(j);
	assert_int_equal(fx->ups, 4);

	/* Validation: the daemon never sees these. */
	expect_error(fx, "POST", "/localapi/v1/up", "{\"advertiseTags\":[\"ci\"]}", 400, "BadRequest",
		     "advertiseTags[0]: \"ci\" is not a tag");
	expect_error(fx, "POST", "/localapi/v1/up", "{\"advertiseTags\":\"tag:ci\"}", 400, "BadRequest",
		     "advertiseTags: want an array");
	expect_error(fx, "POST", "/localapi/v1/up", "{\"advertiseRoutes\":[\"10.0.0.1\"]}", 400, "BadRequest",
		     "advertiseRoutes[0]: \"10.0.0.1\" is not an IP prefix");
	expect_error(fx, "POST", "/localapi/v1/up", "{\"loginServer\":\"ctl:8080\"}", 400, "BadRequest",
		     "is not an http:// or https:// URL");
	expect_error(fx, "POST", "/localapi/v1/up", "{\"hostname\":\"my laptop\"}", 400, "BadRequest",
		     "is not a DNS label");
	expect_error(fx, "POST", "/localapi/v1/up", "{\"serverKey\":\"mkey:00\"}", 400, "BadRequest",
		     "serverKey: want \"ctrlkey:\"");
	expect_error(fx, "POST", "/localapi/v1/up", "{\"authKey\":7}", 400, "BadRequest", "authKey: want a string");
	expect_error(fx, "POST", "/localapi/v1/up", "[1]", 400, "BadRequest", "must be a JSON object");
	expect_error(fx, "POST", "/localapi/v1/up", "{", 400, "BadRequest", "the body is not JSON");
	assert_int_equal(fx->ups, 4);
}

static void test_identities(void **state)
{
	struct fx *fx = *state;
	struct json *j;
	long status;

	NEED_API(fx);
	j = request(fx, "POST", "/localapi/v1/identities",
		    "{\"containerID\":\"9f3c.a_b-1\",\"ifName\":\"knit0\",\"netns\":\"/var/run/netns/cni-1\","
		    "\"network\":\"k8s\",\"podNamespace\":\"ci\",\"podName\":\"runner-7\",\"podUID\":\"0b9a\","
		    "\"tags\":[\"tag:ci\"],\"hostname\":\"runner-7\"}",
		    false, &status);
	assert_int_equal(status, 200);
	assert_string_equal(json_str(json_get(j, "interface")), "knit0");
	json_free(j);
	assert_string_equal(fx->at_cid, "9f3c.a_b-1");
	assert_string_equal(fx->at_if, "knit0");
	assert_string_equal(fx->at_netns, "/var/run/netns/cni-1");
	assert_string_equal(fx->at_uid, "0b9a");
	assert_string_equal(fx->at_tags, "tag:ci");
	assert_string_equal(fx->at_host, "runner-7");
	/* Optional fields absent; the daemon's refusal keeps its status. */
	expect_error(fx, "POST", "/localapi/v1/identities",
		     "{\"containerID\":\"taken\",\"ifName\":\"knit0\",\"netns\":\"/proc/1/ns/net\",\"tags\":[]}", 409,
		     "IdentityConflict", "another pod");
	assert_string_equal(fx->at_uid, "(none)");
	assert_int_equal(fx->attaches, 2);

	/* Validation: the daemon never sees these. */
	expect_error(fx, "POST", "/localapi/v1/identities", "{\"ifName\":\"knit0\",\"netns\":\"/n\"}", 400,
		     "BadRequest", "containerID");
	expect_error(fx, "POST", "/localapi/v1/identities",
		     "{\"containerID\":\"a/b\",\"ifName\":\"knit0\",\"netns\":\"/n\"}", 400, "BadRequest",
		     "containerID");
	expect_error(fx, "POST", "/localapi/v1/identities",
		     "{\"containerID\":\"c\",\"ifName\":\"a-name-far-too-long\",\"netns\":\"/n\"}", 400,
		     "BadRequest", "ifName");
	expect_error(fx, "POST", "/localapi/v1/identities",
		     "{\"containerID\":\"c\",\"ifName\":\"knit0\",\"netns\":\"cni-1\"}", 400, "BadRequest",
		     "netns");
	expect_error(fx, "POST", "/localapi/v1/identities",
		     "{\"containerID\":\"c\",\"ifName\":\"knit0\",\"netns\":\"/a/../b\"}", 400, "BadRequest",
		     "netns");
	expect_error(fx, "POST", "/localapi/v1/identities",
		     "{\"containerID\":\"c\",\"ifName\":\"knit0\",\"netns\":\"/n\",\"tags\":[\"ci\"]}", 400,
		     "BadRequest", "tags[0]");
	expect_error(fx, "POST", "/localapi/v1/identities",
		     "{\"containerID\":\"c\",\"ifName\":\"knit0\",\"netns\":\"/n\",\"hostname\":\"a b\"}", 400,
		     "BadRequest", "hostname");
	expect_error(fx, "POST", "/localapi/v1/identities",
		     "{\"containerID\":\"c\",\"ifName\":\"knit0\",\"netns\":\"/n\",\"podName\":\"a\\nb\"}",
		     400, "BadRequest", "podName");
	assert_int_equal(fx->attaches, 2);

	/* DELETE: both segments percent-decoded; 404 passed through. */
	j = request(fx, "DELETE", "/localapi/v1/identities/9f3c%2Ea_b-1/knit%30", NULL, false, &status);
	assert_int_equal(status, 200);
	json_free(j);
	assert_string_equal(fx->de_cid, "9f3c.a_b-1");
	assert_string_equal(fx->de_if, "knit0");
	expect_error(fx, "DELETE", "/localapi/v1/identities/unknown/knit0", NULL, 404, "NotFound", "unknown/knit0");
	expect_error(fx, "DELETE", "/localapi/v1/identities/only-one", NULL, 400, "BadRequest", "{containerID}");
	expect_error(fx, "DELETE", "/localapi/v1/identities/a%2Fb/knit0", NULL, 400, "BadRequest", "{containerID}/{ifName}");
	expect_error(fx, "DELETE", "/localapi/v1/identities/a%00/knit0", NULL, 400, "BadRequest", "{containerID}/{ifName}");
	expect_error(fx, "DELETE", "/localapi/v1/identities/a%zz/knit0", NULL, 400, "BadRequest", "{containerID}/{ifName}");
	assert_int_equal(fx->detaches, 2);

	j = request(fx, "GET", "/localapi/v1/identities", NULL, false, &status);
	assert_int_equal(status, 200);
	assert_true(json_is_array(json_get(j, "identities")));
	json_free(j);
	assert_int_equal(fx->lists, 1);
}

static void test_down_logout_ping(void **state)
{
	struct fx *fx = *state;
	struct json *j;
	long status;

	NEED_API(fx);
	j = request(fx, "POST", "/localapi/v1/down", NULL, false, &status);
	assert_int_equal(status, 200);
	assert_int_equal(json_object_len(j), 0);
	json_free(j);
	assert_int_equal(fx->downs, 1);

	/* Late error: 200, the error in the body. */
	j = request(fx, "POST", "/localapi/v1/logout", NULL, true, &status);
	assert_int_equal(status, 200);
	assert_string_equal(json_str(json_get(j, "code")), "ControlUnreachable");
	json_free(j);

	j = request(fx, "POST", "/localapi/v1/ping", "{\"peer\":\"db\"}", true, &status);
	assert_int_equal(status, 200);
	assert_string_equal(fx->ping_peer, "db");
	assert_false(fx->ping_icmp);
	assert_string_equal(json_str(json_get(j, "ip")), "100.64.0.7");
	assert_true(json_double(json_get(j, "latencyMs"), 0) == 12.5);
	assert_string_equal(json_str(json_get(j, "endpoint")), "192.0.2.7:41641");
	json_free(j);
	expect_error(fx, "POST", "/localapi/v1/ping", "{\"peer\":\"nobody\"}", 404, "PeerNotFound", "no peer");
	expect_error(fx, "POST", "/localapi/v1/ping", "{}", 400, "BadRequest", "peer: missing");
	expect_error(fx, "POST", "/localapi/v1/ping", "{\"peer\":\"db\",\"icmp\":1}", 400, "BadRequest", "icmp: want true or false");
	j = request(fx, "POST", "/localapi/v1/ping", "{\"peer\":\"db\",\"icmp\":true}", true, &status);
	assert_int_equal(status, 200);
	assert_true(fx->ping_icmp);
	json_free(j);
	expect_error(fx, "POST", "/localapi/v1/ping", NULL, 400, "BadRequest", "not JSON");
}

/* The client gives up before the answer: completing it later only frees it. */
static void test_client_leaves(void **state)
{
	struct fx *fx = *state;
	struct req r = { .fx = fx, .method = "POST", .path = "/localapi/v1/logout", .timeout_ms = 200 };
	pthread_t t;

	NEED_API(fx);
	buf_init(&r.resp, 1 << 20);
	assert_int_equal(pthread_create(&t, NULL, client_main, &r), 0);
	while (!r.done)
		assert_true(loop_run_once(fx->loop, 10) >= 0);
	pthread_join(t, NULL);
	assert_int_equal(r.rc, CURLE_OPERATION_TIMEDOUT);
	buf_free(&r.resp);
	for (int i = 0; i < 20; i++)
		loop_run_once(fx->loop, 10);
	assert_non_null(fx->pending);
	complete_pending(fx);
	/* And one left pending is freed in teardown after localapi_free(). */
	r.done = false;
	r.timeout_ms = 100;
	assert_int_equal(pthread_create(&t, NULL, client_main, &r), 0);
	while (!fx->pending)
		assert_true(loop_run_once(fx->loop, 10) >= 0);
	while (!r.done)
		assert_true(loop_run_once(fx->loop, 10) >= 0);
	pthread_join(t, NULL);
	buf_free(&r.resp);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_socket, setup, teardown),
		cmocka_unit_test_setup_teardown(test_status, setup, teardown),
		cmocka_unit_test_setup_teardown(test_whois, setup, teardown),
		cmocka_unit_test_setup_teardown(test_up, setup, teardown),
		cmocka_unit_test_setup_teardown(test_down_logout_ping, setup, teardown),
		cmocka_unit_test_setup_teardown(test_identities, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_leaves, setup, teardown),
	};

	log_init("test", LOG_ERROR);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
