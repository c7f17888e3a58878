#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "json.h"
#include "kube/client.h"
#include "kube/config.h"
#include "kube/informer.h"
#include "loop.h"

static const struct kube_resource res_devices = { "knit.dev", "v1alpha1", "devices", "Device", false };

struct fixture {
	struct loop *loop;
	struct kube_client *client;
	struct informer *inf;
	char log[4096]; /* "add:a@1 update:a@2 delete:a ..." */
	int synced;
};

static void note(struct fixture *f, const char *what, const struct json *obj)
{
	size_t n = strlen(f->log);
	snprintf(f->log + n, sizeof(f->log) - n, "%s%s:%s@%s", n ? " " : "", what,
		 json_str(json_path(obj, "metadata", "name", NULL)),
		 json_str(json_path(obj, "metadata", "resourceVersion", NULL)));
}

static void on_add(struct informer *inf, const struct json *obj, void *arg) { note(arg, "add", obj); }
static void on_update(struct informer *inf, const struct json *old, const struct json *obj, void *arg)
{
	note(arg, "update", obj);
}
static void on_delete(struct informer *inf, const struct json *obj, void *arg) { note(arg, "delete", obj); }
static void on_synced(struct informer *inf, void *arg) { ((struct fixture *)arg)->synced++; }

static int by_node(const struct json *obj, const char **values, int max)
{
	const char *n = json_str(json_path(obj, "spec", "node", NULL));
	if (!n || max < 1)
		return 0;
	values[0] = n;
	return 1;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct kube_config cfg = { .server = "https://127.0.0.1:1", .namespace = "default" };
	static const struct informer_handlers h = { on_add, on_update, on_delete, on_synced };

	f->loop = loop_new();
	f->client = kube_client_new(f->loop, &cfg);
	f->inf = informer_new(f->client, &res_devices, NULL, NULL, &h, f);
	assert_non_null(f->inf);
	assert_int_equal(informer_add_index(f->inf, "node", by_node), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	informer_free(f->inf);
	kube_client_free(f->client);
	loop_free(f->loop);
	free(f);
	return 0;
}

#define EV(type, name, rv, node) \
	"{\"type\":\"" type "\",\"object\":{\"kind\":\"Device\",\"metadata\":{\"name\":\"" name \
	"\",\"resourceVersion\":\"" rv "\"},\"spec\":{\"node\":\"" node "\"}}}\n"

static const char stream[] =
	EV("ADDED", "a", "1", "n1")
	EV("ADDED", "b", "2", "n1")
	"{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Device\",\"metadata\":{\"resourceVersion\":\"7\"}}}\n"
	EV("MODIFIED", "a", "8", "n2")
	EV("MODIFIED", "a", "8", "n2") /* same version again: no update */
	EV("DELETED", "b", "9", "n1");

static void check_final(struct fixture *f)
{
	char rv[64];
	struct json *a;

	assert_string_equal(f->log, "add:a@1 add:b@2 update:a@8 delete:b@9");
	assert_int_equal(informer_len(f->inf), 1);
	a = informer_get(f->inf, NULL, "a");
	assert_non_null(a);
	assert_string_equal(json_str(json_path(a, "spec", "node", NULL)), "n2");
	json_free(a);
	assert_null(informer_get(f->inf, NULL, "b"));
	informer_resource_version(f->inf, rv, sizeof(rv));
	assert_string_equal(rv, "9");
}

static void test_stream_whole(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(informer_feed(f->inf, stream, strlen(stream)), 0);
	check_final(f);
}

/* Every split point of the stream must give the same result. */
static void test_stream_split_everywhere(void **state)
{
	size_t len = strlen(stream);

	for (size_t cut = 1; cut < len; cut++) {
		struct fixture *f;
		setup((void **)&f);
		assert_int_equal(informer_feed(f->inf, stream, cut), 0);
		assert_int_equal(informer_feed(f->inf, stream + cut, len - cut), 0);
		check_final(f);
		void *p = f;
		teardown(&p);
	}
}

static void test_stream_byte_by_byte(void **state)
{
	struct fixture *f = *state;

	for (size_t i = 0; i < strlen(stream); i++)
		assert_int_equal(informer_feed(f->inf, stream + i, 1), 0);
	check_final(f);
}

static void test_bookmark_only_moves_rv(void **state)
{
	struct fixture *f = *state;
	static const char bm[] =
		"{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Device\",\"metadata\":{\"resourceVersion\":\"42\"}}}\n";
	char rv[64];

	assert_int_equal(informer_feed(f->inf, bm, strlen(bm)), 0);
	informer_resource_version(f->inf, rv, sizeof(rv));
	assert_string_equal(rv, "42");
	assert_string_equal(f->log, "");
	assert_int_equal(informer_len(f->inf), 0);
}

/* The cache keeps what reconcilers read, not the API server's field
 * bookkeeping: managedFields is dropped (memory at 10,000s of objects). */
static void test_cache_drops_managed_fields(void **state)
{
	struct fixture *f = *state;
	static const char ev[] =
		"{\"type\":\"ADDED\",\"object\":{\"kind\":\"Device\",\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"7\","
		"\"managedFields\":[{\"manager\":\"kubectl\",\"operation\":\"Apply\",\"fieldsV1\":{\"f:spec\":{}}}]},"
		"\"spec\":{\"node\":\"n1\"}}}\n";
	struct json *o;

	assert_int_equal(informer_feed(f->inf, ev, strlen(ev)), 0);
	o = informer_get(f->inf, NULL, "a");
	assert_non_null(o);
	assert_null(json_path(o, "metadata", "managedFields", NULL));
	assert_string_equal(json_str(json_path(o, "metadata", "resourceVersion", NULL)), "7");
	assert_string_equal(json_str(json_path(o, "spec", "node", NULL)), "n1");
	json_free(o);
}

static void test_error_410_asks_for_relist(void **state)
{
	struct fixture *f = *state;
	static const char s[] = EV("ADDED", "a", "1", "n1")
		"{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":\"Failure\","
		"\"message\":\"too old resource version: 1 (5)\",\"reason\":\"Expired\",\"code\":410}}\n"
		EV("ADDED", "b", "2", "n1");

	assert_int_equal(informer_feed(f->inf, s, strlen(s)), -ESTALE);
	/* The event before the error counts; the one after is not applied. */
	assert_string_equal(f->log, "add:a@1");
}

static void test_error_other_is_bad_message(void **state)
{
	struct fixture *f = *state;
	static const char s[] =
		"{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"code\":500,\"reason\":\"InternalError\"}}\n";

	assert_int_equal(informer_feed(f->inf, s, strlen(s)), -EBADMSG);
}

static void test_garbage(void **state)
{
	struct fixture *f = *state;
	static const char s[] = EV("ADDED", "a", "1", "n1") "{\"type\":\"ADDED\",\"object\":{]}\n";
	static const char no_type[] = "{\"object\":{\"metadata\":{\"name\":\"x\"}}}\n";

	assert_int_equal(informer_feed(f->inf, s, strlen(s)), -EBADMSG);
	assert_string_equal(f->log, "add:a@1");
	/* A fresh stream after reset works again. */
	informer_reset_stream(f->inf);
	assert_int_equal(informer_feed(f->inf, no_type, strlen(no_type)), -EBADMSG);
	informer_reset_stream(f->inf);
	assert_int_equal(informer_feed(f->inf, EV("ADDED", "c", "3", "n1"), strlen(EV("ADDED", "c", "3", "n1"))), 0);
	assert_int_equal(informer_len(f->inf), 2);
}

static struct json *parse(const char *s)
{
	struct json_error err;
	struct json *j = json_parse(s, strlen(s), &err);
	assert_non_null(j);
	return j;
}

#define ITEM(name, rv, node) \
	"{\"metadata\":{\"name\":\"" name "\",\"resourceVersion\":\"" rv "\"},\"spec\":{\"node\":\"" node "\"}}"

static void test_relist_diff(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(informer_replace(f->inf, parse("{\"kind\":\"DeviceList\",\"metadata\":{\"resourceVersion\":\"10\"},"
							"\"items\":[" ITEM("a", "1", "n1") "," ITEM("b", "2", "n1") "," ITEM("c", "3", "n2") "]}")), 0);
	assert_true(informer_synced(f->inf));
	assert_int_equal(f->synced, 1);
	assert_string_equal(f->log, "add:a@1 add:b@2 add:c@3");
	f->log[0] = '\0';
	/* While we were away: b changed, c was deleted, d was created, a unchanged. */
	assert_int_equal(informer_replace(f->inf, parse("{\"kind\":\"DeviceList\",\"metadata\":{\"resourceVersion\":\"20\"},"
							"\"items\":[" ITEM("a", "1", "n1") "," ITEM("b", "15", "n2") "," ITEM("d", "16", "n2") "]}")), 0);
	assert_string_equal(f->log, "update:b@15 add:d@16 delete:c@3");
	assert_int_equal(f->synced, 2);
	char rv[64];
	informer_resource_version(f->inf, rv, sizeof(rv));
	assert_string_equal(rv, "20");
	assert_int_equal(informer_replace(f->inf, parse("{\"items\":7}")), -EBADMSG);
}

static void count(const struct json *obj, void *arg)
{
	(*(int *)arg)++;
}

static void test_index(void **state)
{
	struct fixture *f = *state;
	int n = 0;

	assert_int_equal(informer_feed(f->inf, stream, strlen(stream)), 0);
	/* a moved n1 -> n2; b (n1) was deleted. */
	assert_int_equal(informer_foreach_indexed(f->inf, "node", "n1", count, &n), 0);
	assert_int_equal(n, 0);
	assert_int_equal(informer_foreach_indexed(f->inf, "node", "n2", count, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(informer_foreach_indexed(f->inf, "nope", "n2", count, &n), -ENOENT);
	/* Counted without walking, in step with the moves and deletes. */
	assert_int_equal(informer_index_count(f->inf, "node", "n1"), 0);
	assert_int_equal(informer_index_count(f->inf, "node", "n2"), 1);
	assert_int_equal(informer_index_count(f->inf, "node", "n9"), 0);
	assert_int_equal(informer_index_count(f->inf, "nope", "n2"), -ENOENT);
	n = 0;
	informer_foreach(f->inf, count, &n);
	assert_int_equal(n, 1);
}

/* Freed while its list page is in flight (a leader that lost its lease
 * tears its informers down at once): the answer that comes after must not
 * reach the freed informer (ASan would see it), and nothing leaks. */
static void test_free_with_list_in_flight(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	static const struct informer_handlers h = { on_add, on_update, on_delete, on_synced };
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	char server[64];
	int lfd, cfd = -1;
	(void)state;

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	assert_true(lfd >= 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 4), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sa, &len), 0);
	snprintf(server, sizeof(server), "http://127.0.0.1:%u", ntohs(sa.sin_port));
	struct kube_config cfg = { .server = server, .namespace = "default" };
	f->loop = loop_new();
	f->client = kube_client_new(f->loop, &cfg);
	f->inf = informer_new(f->client, &res_devices, NULL, NULL, &h, f);
	assert_non_null(f->inf);
	assert_int_equal(informer_start(f->inf), 0);
	/* Until the list request has reached us. */
	for (int i = 0; i < 200 && cfd < 0; i++) {
		loop_run_once(f->loop, 10);
		cfd = accept(lfd, NULL, NULL);
	}
	assert_true(cfd >= 0);
	informer_free(f->inf);
	f->inf = NULL;
	/* Answer it now: an error for the request the informer made. */
	static const char resp[] = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n";
	assert_int_equal(write(cfd, resp, sizeof(resp) - 1), (ssize_t)(sizeof(resp) - 1));
	for (int i = 0; i < 20; i++)
		loop_run_once(f->loop, 10);
	assert_int_equal(f->synced, 0);
	assert_string_equal(f->log, "");
	close(cfd);
	close(lfd);
	kube_client_free(f->client);
	loop_free(f->loop);
	free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_stream_whole, setup, teardown),
		cmocka_unit_test(test_stream_split_everywhere),
		cmocka_unit_test_setup_teardown(test_stream_byte_by_byte, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bookmark_only_moves_rv, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache_drops_managed_fields, setup, teardown),
		cmocka_unit_test_setup_teardown(test_error_410_asks_for_relist, setup, teardown),
		cmocka_unit_test_setup_teardown(test_error_other_is_bad_message, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage, setup, teardown),
		cmocka_unit_test_setup_teardown(test_relist_diff, setup, teardown),
		cmocka_unit_test_setup_teardown(test_index, setup, teardown),
		cmocka_unit_test(test_free_with_list_in_flight),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
