#include "localapi.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "buf.h"
#include "control/channel.h"
#include "control/messages.h"
#include "httpd.h"
#include "json.h"
#include "log.h"
#include "loop.h"
#include "net/unixsock.h"

#define MAX_LIST 256 /* tags or routes in one up request */

struct localapi {
	struct loop *loop;
	struct httpd *http;
	struct localapi_ops ops;
	struct localapi_pod_ops pods;
	struct unixsock sock; /* its fd belongs to http once that exists */
	char *path;
	char *version;
};

struct localapi_writer {
	struct json *root;
	struct json *peers;
	int err;
};

struct localapi_reply {
	struct httpd_req *req; /* while the handler runs */
	struct httpd_stream *st; /* after it, until the client goes */
	bool in_handler;
	bool done; /* completed */
	bool gone; /* no client to answer any more */
	unsigned status;
	struct buf body;
};

/* ---- JSON helpers ----------------------------------------------------------- */

static struct json *strv(const char *const *v, size_t n)
{
	struct json *a = json_new_array();

	for (size_t i = 0; a && i < n; i++) {
		if (json_array_append(a, json_new_string(v[i]))) {
			json_free(a);
			return NULL;
		}
	}
	return a;
}

static void respond_json(struct httpd_req *req, unsigned status, const struct json *j)
{
	struct buf b = BUF_INIT(64u << 20);

	if (!j || json_dump(j, &b, 0) || buf_add_byte(&b, '\n')) {
		buf_free(&b);
		httpd_respond_text(req, 500, "{\"error\":\"out of memory\",\"code\":\"Internal\"}\n");
		return;
	}
	httpd_respond_buf(req, status, "application/json", &b);
	buf_free(&b);
}

static void respond_error(struct httpd_req *req, unsigned status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void respond_error(struct httpd_req *req, unsigned status, const char *code, const char *fmt, ...)
{
	char msg[512];
	struct json *j;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	j = messages_error_new(code, msg);
	respond_json(req, status, j);
	json_free(j);
}

/* ---- writer -------------------------------------------------------------------- */

static struct json *peer_json(const struct localapi_peer *p)
{
	struct json *o = json_new_object();
	int err = o ? 0 : -ENOMEM;

	json_put_str(o, "name", p->name, &err);
	json_put_str(o, "dnsName", p->dns_name, &err);
	json_put_str(o, "nodeKey", p->node_key, &err);
	json_put(o, "addresses", strv(p->addresses, p->naddresses), &err);
	json_put(o, "tags", strv(p->tags, p->ntags), &err);
	if (p->user)
		json_put_str(o, "user", p->user, &err);
	json_put_str(o, "endpoint", p->endpoint, &err);
	json_put(o, "relay", json_new_int(p->relay), &err);
	if (p->path.kind) {
		struct json *path = json_new_object();

		json_put_str(path, "kind", p->path.kind, &err);
		if (p->path.addr)
			json_put_str(path, "addr", p->path.addr, &err);
		if (p->path.region) {
			json_put_int(path, "region", p->path.region, &err);
			json_put_str(path, "code", p->path.code ? p->path.code : "", &err);
		}
		if (p->path.latency_ms >= 0)
			json_put(path, "latencyMs", json_new_double(p->path.latency_ms), &err);
		json_put(o, "path", path, &err);
	}
	json_put(o, "lastHandshake", json_new_int(p->last_handshake), &err);
	json_put(o, "rxBytes", json_new_int((int64_t)(p->rx_bytes > INT64_MAX ? INT64_MAX : p->rx_bytes)), &err);
	json_put(o, "txBytes", json_new_int((int64_t)(p->tx_bytes > INT64_MAX ? INT64_MAX : p->tx_bytes)), &err);
	json_put(o, "online", json_new_bool(p->online), &err);
	if (err) {
		json_free(o);
		return NULL;
	}
	return o;
}

int localapi_write_status(struct localapi_writer *w, const struct localapi_status *st)
{
	json_put_str(w->root, "backendState", st->backend_state, &w->err);
	json_put_str(w->root, "loginServer", st->login_server, &w->err);
	json_put_str(w->root, "dnsSuffix", st->dns_suffix, &w->err);
	json_put_str(w->root, "controlKey", st->control_key, &w->err);
	json_put_str(w->root, "health", st->health, &w->err);
	if (st->has_relay_map)
		json_put(w->root, "relayMap", st->relay_map ? json_clone(st->relay_map) : json_new_null(), &w->err);
	if (st->key_expiry)
		json_put(w->root, "keyExpiry", json_new_int(st->key_expiry), &w->err);
	return w->err;
}

int localapi_write_self(struct localapi_writer *w, const struct localapi_peer *p)
{
	json_put(w->root, "self", peer_json(p), &w->err);
	return w->err;
}

int localapi_write_peer(struct localapi_writer *w, const struct localapi_peer *p)
{
	if (!w->peers) {
		/* whois: the one node is the answer. */
		if (!w->err && json_object_len(w->root) > 0)
			w->err = -EEXIST;
		json_put(w->root, "node", peer_json(p), &w->err);
		return w->err;
	}
	if (!w->err)
		w->err = json_array_append(w->peers, peer_json(p));
	return w->err;
}

/* ---- replies --------------------------------------------------------------------- */

static void reply_free(struct localapi_reply *r)
{
	buf_free(&r->body);
	free(r);
}

static void reply_stream_closed(struct httpd_stream *st, void *arg)
{
	struct localapi_reply *r = arg;

	r->st = NULL;
	r->gone = true;
	if (r->done)
		reply_free(r);
}

/* Records the answer; sends it if the handler already returned. */
static void reply_finish(struct localapi_reply *r, unsigned status, struct json *j)
{
	if (r->done) {
		json_free(j);
		return;
	}
	r->done = true;
	r->status = status;
	if (!j || json_dump(j, &r->body, 0) || buf_add_byte(&r->body, '\n')) {
		buf_reset(&r->body);
		buf_add_str(&r->body, "{\"error\":\"out of memory\",\"code\":\"Internal\"}\n");
		r->status = 500;
	}
	json_free(j);
	if (r->in_handler)
		return;
	if (r->st) {
		httpd_stream_write(r->st, r->body.data, r->body.len);
		httpd_stream_close(r->st);
		/* freed in reply_stream_closed() */
		return;
	}
	reply_free(r);
}

void localapi_reply_ok(struct localapi_reply *r, struct json *result)
{
	reply_finish(r, 200, result ? result : json_new_object());
}

void localapi_reply_error(struct localapi_reply *r, unsigned status, const char *code, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	reply_finish(r, status, messages_error_new(code, msg));
}

void localapi_reply_pong(struct localapi_reply *r, const struct localapi_pong *p)
{
	struct json *o = json_new_object();
	int err = o ? 0 : -ENOMEM;

	json_put_str(o, "peer", p->peer, &err);
	json_put_str(o, "ip", p->ip, &err);
	json_put(o, "latencyMs", json_new_double(p->latency_ms), &err);
	json_put_str(o, "endpoint", p->endpoint, &err);
	json_put(o, "relay", json_new_int(p->relay), &err);
	if (err) {
		json_free(o);
		o = NULL;
	}
	reply_finish(r, 200, o);
}

void localapi_reply_up(struct localapi_reply *r, const struct localapi_up_result *u)
{
	struct json *o = json_new_object();
	int err = o ? 0 : -ENOMEM;

	json_put_str(o, "backendState", u->backend_state, &err);
	json_put_str(o, "device", u->device, &err);
	json_put_str(o, "name", u->name, &err);
	json_put(o, "addresses", strv(u->addresses, u->naddresses), &err);
	json_put_str(o, "controlKey", u->control_key, &err);
	json_put(o, "controlKeyNew", json_new_bool(u->control_key_new), &err);
	if (err) {
		json_free(o);
		o = NULL;
	}
	reply_finish(r, 200, o);
}

typedef void (*op_fn)(struct localapi *api, struct localapi_reply *r, void *ctx);

/* Runs an operation that may answer late. */
static void run_op(struct localapi *api, struct httpd_req *req, op_fn fn, void *ctx)
{
	struct localapi_reply *r = calloc(1, sizeof(*r));

	if (!r) {
		httpd_respond_text(req, 500, "{\"error\":\"out of memory\",\"code\":\"Internal\"}\n");
		return;
	}
	buf_init(&r->body, 16u << 20);
	r->req = req;
	r->in_handler = true;
	fn(api, r, ctx);
	r->in_handler = false;
	r->req = NULL;
	if (r->done) {
		httpd_respond_buf(req, r->status, "application/json", &r->body);
		reply_free(r);
		return;
	}
	r->st = httpd_stream_start(req, 200, "application/json", 0, reply_stream_closed, r);
	if (!r->st) {
		/* The daemon still completes it; that only frees it. */
		r->gone = true;
		httpd_respond_text(req, 500, "{\"error\":\"out of memory\",\"code\":\"Internal\"}\n");
	}
}

/* ---- handlers ---------------------------------------------------------------------- */

static void h_status(struct httpd_req *req, void *arg)
{
	struct localapi *api = arg;
	struct localapi_writer w = { .root = json_new_object(), .peers = json_new_array() };
	int err;

	if (!w.root || !w.peers) {
		json_free(w.root);
		json_free(w.peers);
		respond_error(req, 500, "Internal", "out of memory");
		return;
	}
	if (api->version)
		json_put(w.root, "version", json_new_string(api->version), &w.err);
	err = api->ops.status(api->ops.arg, &w);
	if (err || w.err) {
		json_free(w.root);
		json_free(w.peers);
		respond_error(req, 500, "Internal", "cannot get the status: %s", strerror(-(err ? err : w.err)));
		return;
	}
	json_put(w.root, "peers", w.peers, &w.err);
	if (w.err) {
		json_free(w.root);
		respond_error(req, 500, "Internal", "out of memory");
		return;
	}
	respond_json(req, 200, w.root);
	json_free(w.root);
}

static bool valid_ip(const char *s)
{
	uint8_t a[16];

	return s && (inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1);
}

static void h_whois(struct httpd_req *req, void *arg)
{
	struct localapi *api = arg;
	const char *ip = httpd_req_query(req, "ip");
	struct localapi_writer w = { .root = json_new_object() };
	int err;

	if (!ip || !*ip) {
		json_free(w.root);
		respond_error(req, 400, "BadRequest", "want ?ip=<tailnet IP>");
		return;
	}
	if (!valid_ip(ip)) {
		json_free(w.root);
		respond_error(req, 400, "BadRequest", "\"%.64s\" is not an IP address", ip);
		return;
	}
	if (!w.root) {
		respond_error(req, 500, "Internal", "out of memory");
		return;
	}
	err = api->ops.whois(api->ops.arg, ip, &w);
	if (err == -ENOENT || (!err && !w.err && !json_get(w.root, "node")))
		respond_error(req, 404, "NotFound", "no node in this tailnet has the address %s", ip);
	else if (err || w.err)
		respond_error(req, 500, "Internal", "whois: %s", strerror(-(err ? err : w.err)));
	else
		respond_json(req, 200, w.root);
	json_free(w.root);
}

/* The request body as a JSON object, or answers 400. */
static struct json *body_json(struct httpd_req *req, bool empty_ok)
{
	struct json_error je;
	size_t len;
	const char *body = httpd_req_body(req, &len);
	struct json *j;

	if (len == 0 && empty_ok)
		return json_new_object();
	j = json_parse(body, len, &je);
	if (!j) {
		respond_error(req, 400, "BadRequest", "the body is not JSON: %s (line %zu, column %zu)", je.msg,
			      je.line, je.column);
		return NULL;
	}
	if (!json_is_object(j)) {
		respond_error(req, 400, "BadRequest", "the body must be a JSON object, not %s",
			      json_type_name(json_type(j)));
		json_free(j);
		return NULL;
	}
	return j;
}

static bool valid_hostname(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-'))
			return false;
	}
	return true;
}

/* An optional string member; false (400 sent) if present but not a string. */
static bool opt_str(struct httpd_req *req, const struct json *j, const char *key, const char **out)
{
	const struct json *v = json_get(j, key);

	*out = NULL;
	if (!v || json_is_null(v) || (json_is_string(v) && json_str_len(v) == 0))
		return true;
	if (!json_str(v)) {
		respond_error(req, 400, "BadRequest", "%s: want a string", key);
		return false;
	}
	*out = json_str(v);
	return true;
}

/* An optional array of strings, each checked by ok(). */
static bool opt_strv(struct httpd_req *req, const struct json *j, const char *key, bool (*ok)(const char *),
		     const char *what, const char ***out, size_t *n, bool *has)
{
	const struct json *v = json_get(j, key);
	size_t len;

	*out = NULL;
	*n = 0;
	*has = false;
	if (!v || json_is_null(v))
		return true;
	if (!json_is_array(v)) {
		respond_error(req, 400, "BadRequest", "%s: want an array of strings", key);
		return false;
	}
	*has = true;
	len = json_array_len(v);
	if (len > MAX_LIST) {
		respond_error(req, 400, "BadRequest", "%s: more than %d", key, MAX_LIST);
		return false;
	}
	if (len == 0)
		return true;
	*out = calloc(len, sizeof(**out));
	if (!*out) {
		respond_error(req, 500, "Internal", "out of memory");
		return false;
	}
	for (size_t i = 0; i < len; i++) {
		const char *s = json_str(json_array_at(v, i));

		if (!s || !ok(s)) {
			respond_error(req, 400, "BadRequest", "%s[%zu]: \"%.64s\" is not %s", key, i, s ? s : "",
				      what);
			free(*out);
			*out = NULL;
			return false;
		}
		(*out)[i] = s;
	}
	*n = len;
	return true;
}

static bool is_tag(const char *s)
{
	if (strncmp(s, "tag:", 4) || !s[4])
		return false;
	for (s += 4; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
		      *s == '-' || *s == '_' || *s == '.'))
			return false;
	return true;
}

static bool is_route(const char *s)
{
	struct netmap_prefix p;

	return strchr(s, '/') && netmap_prefix_parse(&p, s);
}

static void op_up(struct localapi *api, struct localapi_reply *r, void *ctx)
{
	api->ops.up(api->ops.arg, ctx, r);
}

static void h_up(struct httpd_req *req, void *arg)
{
	struct localapi *api = arg;
	struct localapi_up up = { 0 };
	const char *key = NULL;
	struct json *j = body_json(req, true);

	if (!j)
		return;
	if (!opt_str(req, j, "authKey", &up.auth_key) || !opt_str(req, j, "loginServer", &up.login_server) ||
	    !opt_str(req, j, "hostname", &up.hostname) || !opt_str(req, j, "serverKey", &key) ||
	    !opt_strv(req, j, "advertiseTags", is_tag, "a tag (tag:<name>)", (const char ***)&up.tags, &up.ntags,
		      &up.has_tags) ||
	    !opt_strv(req, j, "advertiseRoutes", is_route, "an IP prefix (10.0.0.0/24)",
		      (const char ***)&up.routes, &up.nroutes, &up.has_routes))
		goto out;
	if (up.login_server && strncmp(up.login_server, "http://", 7) && strncmp(up.login_server, "https://", 8)) {
		respond_error(req, 400, "BadRequest", "loginServer: \"%.100s\" is not an http:// or https:// URL",
			      up.login_server);
		goto out;
	}
	if (up.hostname && !valid_hostname(up.hostname)) {
		respond_error(req, 400, "BadRequest",
			      "hostname: \"%.64s\" is not a DNS label (letters, digits, '-', at most 63)", up.hostname);
		goto out;
	}
	if (key) {
		if (!channel_key_parse(key, "ctrlkey:", up.server_key)) {
			respond_error(req, 400, "BadRequest", "serverKey: want \"ctrlkey:\" and 64 hex digits");
			goto out;
		}
		up.has_server_key = true;
	}
	run_op(api, req, op_up, &up);
out:
	free((void *)up.tags);
	free((void *)up.routes);
	/* The auth key sat in the request body and the tree. */
	messages_json_free_secret(j);
}

static void op_down(struct localapi *api, struct localapi_reply *r, void *ctx)
{
	api->ops.down(api->ops.arg, r);
}

static void op_logout(struct localapi *api, struct localapi_reply *r, void *ctx)
{
	api->ops.logout(api->ops.arg, r);
}

struct ping_args {
	const char *peer;
	bool icmp;
};

static void op_ping(struct localapi *api, struct localapi_reply *r, void *ctx)
{
	const struct ping_args *a = ctx;

	api->ops.ping(api->ops.arg, a->peer, a->icmp, r);
}

static void h_down(struct httpd_req *req, void *arg)
{
	run_op(arg, req, op_down, NULL);
}

static void h_logout(struct httpd_req *req, void *arg)
{
	run_op(arg, req, op_logout, NULL);
}

static void h_ping(struct httpd_req *req, void *arg)
{
	struct json *j = body_json(req, false);
	const struct json *icmp;
	struct ping_args a = { 0 };

	if (!j)
		return;
	if (!opt_str(req, j, "peer", &a.peer)) {
		json_free(j);
		return;
	}
	icmp = json_get(j, "icmp");
	if (icmp && !json_is_null(icmp) && !json_is_bool(icmp))
		respond_error(req, 400, "BadRequest", "icmp: want true or false");
	else if (!a.peer)
		respond_error(req, 400, "BadRequest", "peer: missing (a name or a tailnet IP)");
	else {
		a.icmp = json_bool(icmp, false);
		run_op(arg, req, op_ping, &a);
	}
	json_free(j);
}

/* ---- pod identities (docs/cni.md) ---------------------------------------------------- */

static bool valid_container_id(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 128)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_' ||
		      *s == '.' || *s == '-'))
			return false;
	return true;
}

static bool valid_ifname(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n >= 16 || !strcmp(s, ".") || !strcmp(s, ".."))
		return false;
	for (; *s; s++)
		if (*s == '/' || *s == ':' || *s <= ' ' || *s == 0x7f)
			return false;
	return true;
}

static bool valid_text(const char *s)
{
	if (strlen(s) > 253)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

static void op_attach(struct localapi *api, struct localapi_reply *r, void *ctx)
{
	api->pods.attach(api->pods.arg, ctx, r);
}

static void h_attach(struct httpd_req *req, void *arg)
{
	struct localapi *api = arg;
	struct localapi_attach a = { 0 };
	bool has_tags;
	struct json *j = body_json(req, false);

	if (!j)
		return;
	if (!opt_str(req, j, "containerID", &a.container_id) || !opt_str(req, j, "ifName", &a.ifname) ||
	    !opt_str(req, j, "netns", &a.netns) || !opt_str(req, j, "network", &a.network) ||
	    !opt_str(req, j, "podNamespace", &a.pod_namespace) || !opt_str(req, j, "podName", &a.pod_name) ||
	    !opt_str(req, j, "podUID", &a.pod_uid) || !opt_str(req, j, "hostname", &a.hostname) ||
	    !opt_strv(req, j, "tags", is_tag, "a tag (tag:<name>)", (const char ***)&a.tags, &a.ntags, &has_tags))
		goto out;
	if (!a.container_id || !valid_container_id(a.container_id)) {
		respond_error(req, 400, "BadRequest", "containerID: want letters, digits, '_', '.', '-' (at most 128)");
		goto out;
	}
	if (!a.ifname || !valid_ifname(a.ifname)) {
		respond_error(req, 400, "BadRequest", "ifName: want an interface name (at most 15 characters)");
		goto out;
	}
	if (!a.netns || a.netns[0] != '/' || strlen(a.netns) > 1024 || strstr(a.netns, "/../")) {
		respond_error(req, 400, "BadRequest", "netns: want the absolute path of the pod's network namespace");
		goto out;
	}
	if ((a.network && !valid_text(a.network)) || (a.pod_namespace && !valid_text(a.pod_namespace)) ||
	    (a.pod_name && !valid_text(a.pod_name)) || (a.pod_uid && !valid_text(a.pod_uid))) {
		respond_error(req, 400, "BadRequest", "network, podNamespace, podName, podUID: at most 253 printable characters");
		goto out;
	}
	if (a.hostname && !valid_hostname(a.hostname)) {
		respond_error(req, 400, "BadRequest",
			      "hostname: \"%.64s\" is not a DNS label (letters, digits, '-', at most 63)", a.hostname);
		goto out;
	}
	run_op(api, req, op_attach, &a);
out:
	free((void *)a.tags);
	json_free(j);
}

/* "%41" and the like decoded in place; false on a bad escape or a NUL. */
static bool percent_decode(char *s)
{
	char *w = s;

	for (; *s; s++) {
		if (*s != '%') {
			*w++ = *s;
			continue;
		}
		unsigned v = 0;
		for (int i = 1; i <= 2; i++) {
			char c = s[i];
			v <<= 4;
			if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
			else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
			else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
			else return false;
		}
		if (!v)
			return false;
		*w++ = (char)v;
		s += 2;
	}
	*w = '\0';
	return true;
}

struct detach_ctx {
	const char *cid, *ifname;
};

static void op_detach(struct localapi *api, struct localapi_reply *r, void *ctx)
{
	struct detach_ctx *d = ctx;

	api->pods.detach(api->pods.arg, d->cid, d->ifname, r);
}

static void h_detach(struct httpd_req *req, void *arg)
{
	char rest[512], *slash;
	struct detach_ctx d;

	if (snprintf(rest, sizeof(rest), "%s", httpd_req_path_rest(req)) >= (int)sizeof(rest) ||
	    !(slash = strchr(rest, '/'))) {
		respond_error(req, 400, "BadRequest", "want /localapi/v1/identities/{containerID}/{ifName}");
		return;
	}
	*slash = '\0';
	d.cid = rest;
	d.ifname = slash + 1;
	if (!percent_decode(rest) || !percent_decode(slash + 1) || !valid_container_id(d.cid) ||
	    !valid_ifname(d.ifname)) {
		respond_error(req, 400, "BadRequest", "want /localapi/v1/identities/{containerID}/{ifName}, both valid");
		return;
	}
	run_op(arg, req, op_detach, &d);
}

static void op_list(struct localapi *api, struct localapi_reply *r, void *ctx)
{
	api->pods.list(api->pods.arg, r);
}

static void h_list(struct httpd_req *req, void *arg)
{
	run_op(arg, req, op_list, NULL);
}

/* ---- lifecycle ------------------------------------------------------------------------ */

int localapi_new(struct loop *loop, const struct localapi_opts *o, struct localapi **out)
{
	struct localapi *api;
	struct httpd_opts ho = { .listen_fd = -1, .conn_limit = 64, .conn_timeout_s = 30 };
	const struct localapi_ops *ops = o->ops;
	int err;

	if (!ops || !ops->status || !ops->whois || !ops->up || !ops->down || !ops->logout || !ops->ping)
		return -EINVAL;
	api = calloc(1, sizeof(*api));
	if (!api)
		return -ENOMEM;
	api->loop = loop;
	api->ops = *ops;
	if (o->pods)
		api->pods = *o->pods;
	api->sock.fd = -1;
	api->path = strdup(o->socket_path ? o->socket_path : LOCALAPI_SOCKET_DEFAULT);
	api->version = o->version ? strdup(o->version) : NULL;
	if (!api->path || (o->version && !api->version)) {
		err = -ENOMEM;
		goto fail;
	}
	err = unixsock_listen(&api->sock, api->path, 64);
	if (err)
		goto fail;
	ho.listen_fd = api->sock.fd;
	err = httpd_new(loop, &ho, &api->http);
	if (err) {
		if (err == -EAFNOSUPPORT)
			log_error("lib/httpd does not serve unix sockets", "path=%s", api->path);
		goto fail;
	}
	if ((err = httpd_route(api->http, "GET", "/localapi/v1/status", 0, h_status, api)) ||
	    (err = httpd_route(api->http, "GET", "/localapi/v1/whois", 0, h_whois, api)) ||
	    (err = httpd_route(api->http, "POST", "/localapi/v1/up", LOCALAPI_MAX_BODY, h_up, api)) ||
	    (err = httpd_route(api->http, "POST", "/localapi/v1/down", LOCALAPI_MAX_BODY, h_down, api)) ||
	    (err = httpd_route(api->http, "POST", "/localapi/v1/logout", LOCALAPI_MAX_BODY, h_logout, api)) ||
	    (err = httpd_route(api->http, "POST", "/localapi/v1/ping", LOCALAPI_MAX_BODY, h_ping, api)))
		goto fail;
	if (o->pods &&
	    ((err = httpd_route(api->http, "POST", "/localapi/v1/identities", LOCALAPI_MAX_BODY, h_attach, api)) ||
	     (err = httpd_route(api->http, "GET", "/localapi/v1/identities", 0, h_list, api)) ||
	     (err = httpd_route(api->http, "DELETE", "/localapi/v1/identities/*", 0, h_detach, api))))
		goto fail;
	*out = api;
	return 0;
fail:
	localapi_free(api);
	return err;
}

void localapi_free(struct localapi *api)
{
	if (!api)
		return;
	if (api->http) {
		httpd_free(api->http); /* closes the listening fd */
		api->sock.fd = -1;
	}
	unixsock_close(&api->sock);
	free(api->path);
	free(api->version);
	free(api);
}
