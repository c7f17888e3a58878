/* kube_smoke: exercises knit's own HTTP client and JSON code against a real
 * kube-apiserver, for the foundation's e2e smoke suite.
 *
 *   kube_smoke SERVER TOKEN CA_FILE RESOURCE_PATH NAME MAX_EVENTS
 *
 * Creates object NAME (a Widget) at RESOURCE_PATH with POST, lists the
 * collection and checks NAME is in it, then watches from the list's
 * resourceVersion, printing "WATCHING" once the stream is open and
 * "<TYPE> <name> <spec.size>" for each event. Exits 0 after MAX_EVENTS events,
 * 1 on any error, 2 on a 10-minute safety deadline. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "loop.h"

struct smoke {
	struct loop *loop;
	struct http_client *http;
	const char *server, *token, *ca, *path, *name;
	int max_events, events, status;
	struct json_stream *stream;
	char list_rv[64];
};

static void finish(struct smoke *s, int status)
{
	s->status = status;
	loop_stop(s->loop);
}

static int start(struct smoke *s, const char *method, const char *url, const char *body,
		 http_headers_cb on_headers, http_data_cb on_data, http_done_cb on_done)
{
	static const char *const headers[] = { "Content-Type: application/json",
					       "Accept: application/json", NULL };
	struct http_opts o = {
		.method = method,
		.url = url,
		.headers = headers,
		.body = body,
		.body_len = body ? strlen(body) : 0,
		.bearer_token = s->token,
		.tls = { .ca_file = s->ca },
		.timeout_ms = on_data ? 0 : 30000,
		.on_headers = on_headers,
		.on_data = on_data,
		.on_done = on_done,
		.arg = s,
	};
	int err = http_request_start(s->http, &o, NULL);

	if (err)
		fprintf(stderr, "kube_smoke: %s %s: %s\n", method, url, strerror(-err));
	return err;
}

/* Parses a buffered response; prints the API's Status message on errors. */
static struct json *response_json(const struct http_result *res, long want, const char *what)
{
	struct json_error jerr;
	struct json *j;

	if (res->err) {
		fprintf(stderr, "kube_smoke: %s: transport error: %s\n", what, res->errmsg);
		return NULL;
	}
	j = json_parse(buf_str(res->body), res->body->len, &jerr);
	if (!j) {
		fprintf(stderr, "kube_smoke: %s: bad JSON at %zu:%zu: %s\n", what, (size_t)jerr.line,
			(size_t)jerr.column, jerr.msg);
		return NULL;
	}
	if (res->status != want) {
		fprintf(stderr, "kube_smoke: %s: HTTP %ld: %s (%s)\n", what, res->status,
			json_str(json_get(j, "message")) ?: "?", json_str(json_get(j, "reason")) ?: "?");
		json_free(j);
		return NULL;
	}
	return j;
}

static bool on_event(struct json *ev, void *arg)
{
	struct smoke *s = arg;
	const char *type = json_str(json_get(ev, "type"));
	struct json *obj = json_get(ev, "object");

	if (!type || !obj) {
		fprintf(stderr, "kube_smoke: watch event without type/object\n");
		json_free(ev);
		finish(s, 1);
		return false;
	}
	if (strcmp(type, "ERROR") == 0) {
		fprintf(stderr, "kube_smoke: watch ERROR: %s\n", json_str(json_get(obj, "message")) ?: "?");
		json_free(ev);
		finish(s, 1);
		return false;
	}
	if (strcmp(type, "BOOKMARK") != 0) {
		printf("%s %s %lld\n", type, json_str(json_path(obj, "metadata", "name", NULL)) ?: "?",
		       (long long)json_int(json_path(obj, "spec", "size", NULL), -1));
		fflush(stdout);
		if (++s->events >= s->max_events)
			finish(s, 0);
	}
	json_free(ev);
	return true;
}

static int watch_headers(struct http_request *r, long status, void *arg)
{
	if (status != 200) {
		fprintf(stderr, "kube_smoke: watch: HTTP %ld\n", status);
		return -EPROTO;
	}
	printf("WATCHING\n");
	fflush(stdout);
	return 0;
}

static int watch_data(struct http_request *r, const void *data, size_t len, void *arg)
{
	struct smoke *s = arg;
	struct json_error jerr;

	if (!json_stream_feed(s->stream, data, len, &jerr)) {
		if (s->status == 0)
			return 0; /* we stopped it ourselves after MAX_EVENTS */
		fprintf(stderr, "kube_smoke: watch stream: %s at %zu:%zu\n", jerr.msg,
			(size_t)jerr.line, (size_t)jerr.column);
		return -EBADMSG;
	}
	return 0;
}

static void watch_done(struct http_request *r, const struct http_result *res, void *arg)
{
	struct smoke *s = arg;

	fprintf(stderr, "kube_smoke: watch ended: status %ld, %s\n", res->status,
		res->err ? res->errmsg : "closed by server");
	finish(s, 1);
}

static void list_done(struct http_request *r, const struct http_result *res, void *arg)
{
	struct smoke *s = arg;
	struct json *j = response_json(res, 200, "list");
	struct json *items;
	const char *rv;
	bool found = false;
	char url[1024];

	if (!j) {
		finish(s, 1);
		return;
	}
	items = json_get(j, "items");
	for (size_t i = 0; i < json_array_len(items); i++) {
		const char *n = json_str(json_path(json_array_at(items, i), "metadata", "name", NULL));
		if (n && strcmp(n, s->name) == 0)
			found = true;
	}
	rv = json_str(json_path(j, "metadata", "resourceVersion", NULL));
	printf("LISTED %zu found=%s\n", json_array_len(items), found ? "yes" : "no");
	if (!found || !rv || snprintf(s->list_rv, sizeof(s->list_rv), "%s", rv) >= (int)sizeof(s->list_rv)) {
		json_free(j);
		finish(s, 1);
		return;
	}
	json_free(j);
	snprintf(url, sizeof(url), "%s%s?watch=1&allowWatchBookmarks=true&resourceVersion=%s", s->server,
		 s->path, s->list_rv);
	if (start(s, "GET", url, NULL, watch_headers, watch_data, watch_done))
		finish(s, 1);
}

static void create_done(struct http_request *r, const struct http_result *res, void *arg)
{
	struct smoke *s = arg;
	struct json *j = response_json(res, 201, "create");
	char url[1024];

	if (!j) {
		finish(s, 1);
		return;
	}
	printf("CREATED %s uid=%s\n", json_str(json_path(j, "metadata", "name", NULL)) ?: "?",
	       json_str(json_path(j, "metadata", "uid", NULL)) ?: "?");
	json_free(j);
	snprintf(url, sizeof(url), "%s%s", s->server, s->path);
	if (start(s, "GET", url, NULL, NULL, NULL, list_done))
		finish(s, 1);
}

static void deadline(struct loop *loop, struct loop_timer *t, void *arg)
{
	fprintf(stderr, "kube_smoke: safety deadline reached\n");
	finish(arg, 2);
}

int main(int argc, char **argv)
{
	struct smoke s = { .status = 1 };
	struct json *obj = NULL, *meta, *spec;
	struct buf body = BUF_INIT(4096);
	struct loop_timer *t = NULL;
	char url[1024];
	int ret = 1;

	if (argc != 7) {
		fprintf(stderr, "usage: %s SERVER TOKEN CA_FILE RESOURCE_PATH NAME MAX_EVENTS\n", argv[0]);
		return 1;
	}
	s.server = argv[1];
	s.token = argv[2];
	s.ca = argv[3];
	s.path = argv[4];
	s.name = argv[5];
	s.max_events = atoi(argv[6]);
	log_init("kube_smoke", LOG_INFO);

	s.loop = loop_new();
	s.http = s.loop ? http_client_new(s.loop) : NULL;
	s.stream = json_stream_new(1 << 20, on_event, &s);
	t = s.loop ? loop_timer_new(s.loop, deadline, &s) : NULL;
	if (!s.http || !s.stream || !t)
		goto out;
	loop_timer_arm(t, 600000);

	/* Built with the tree API and dumped, not printf'd. */
	obj = json_new_object();
	meta = json_new_object();
	spec = json_new_object();
	if (!obj || !meta || !spec || json_object_set(obj, "apiVersion", json_new_string("smoke.knit.dev/v1")) ||
	    json_object_set(obj, "kind", json_new_string("Widget")) ||
	    json_object_set(meta, "name", json_new_string(s.name)) || json_object_set(obj, "metadata", meta) ||
	    json_object_set(spec, "size", json_new_int(1)) || json_object_set(obj, "spec", spec) ||
	    json_dump(obj, &body, 0)) {
		fprintf(stderr, "kube_smoke: cannot build the object\n");
		goto out;
	}
	snprintf(url, sizeof(url), "%s%s", s.server, s.path);
	if (start(&s, "POST", url, buf_str(&body), NULL, NULL, create_done))
		goto out;
	if (loop_run(s.loop) < 0)
		goto out;
	ret = s.status;
out:
	json_free(obj);
	buf_free(&body);
	loop_timer_free(t);
	http_client_free(s.http);
	json_stream_free(s.stream);
	loop_free(s.loop);
	return ret;
}
