/* operator/changelog.c: the change log as map streams read it, with no
 * API server: append, cursors, a peer changed several times coalesced
 * into its latest form, full netmaps in pieces of the configured size,
 * removals, compaction and the delta cache. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "changelog.h"
#include "json.h"

#define MAXN 64

struct fx {
	struct changelog l;
	struct changelog_node nodes[MAXN];
	int unrefs;
	uint64_t oldest; /* 0: the log's seq */
};

static void on_unref(struct changelog_node *n, void *arg)
{
	struct fx *f = arg;

	f->unrefs++;
}

static uint64_t on_oldest(void *arg)
{
	struct fx *f = arg;

	return f->oldest ? f->oldest : f->l.seq;
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct changelog_ops ops = { .unref = on_unref, .oldest = on_oldest, .arg = f };

	assert_non_null(f);
	changelog_init(&f->l, &ops);
	for (int i = 0; i < MAXN; i++) {
		char name[16];

		snprintf(name, sizeof(name), "d%d", i);
		f->nodes[i].name = strdup(name);
		f->nodes[i].tailnet = strdup(i % 2 == 0 || i < 8 ? "t" : "other");
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	changelog_free(&f->l);
	for (int i = 0; i < MAXN; i++) {
		free(f->nodes[i].name);
		free(f->nodes[i].tailnet);
		free(f->nodes[i].peer);
	}
	free(f);
	return 0;
}

/* Node i's record is {"name":"d<i>","v":<v>}, its key "nodekey:<i>". */
static void publish(struct fx *f, int i, int v)
{
	struct changelog_node *n = &f->nodes[i];
	char text[64];

	free(n->peer);
	n->peer_len = (size_t)snprintf(text, sizeof(text), "{\"name\":\"d%d\",\"v\":%d}", i, v);
	n->peer = strdup(text);
	snprintf(n->node_key, sizeof(n->node_key), "nodekey:%d", i);
	assert_int_equal(changelog_upsert(&f->l, n), 0);
}

/* Pulls and commits cur's next record; NULL if none. */
static struct json *next(struct fx *f, struct changelog_cursor *cur, size_t bytes)
{
	struct buf rec = BUF_INIT(1 << 20);
	struct changelog_step step;
	struct changelog_node *me = NULL;
	struct json *j = NULL;
	int r;

	for (int i = 0; i < MAXN; i++)
		if (strcmp(f->nodes[i].name, cur->device) == 0)
			me = &f->nodes[i];
	r = changelog_next(&f->l, cur, me, ",\"dns\":{\"suffix\":\"x\"}", bytes, &rec, &step);
	assert_true(r == 0 || r == 1);
	if (r == 1) {
		struct json_error e;

		j = json_parse((const char *)rec.data, rec.len, &e);
		if (!j)
			fail_msg("record is no JSON (%s): %.*s", e.msg, (int)rec.len, rec.data);
		changelog_commit(&f->l, cur, &step, &rec);
	}
	buf_free(&rec);
	return j;
}

/* The "v" of each listed peer named d<i>, -1 if absent; returns how many. */
static size_t peers_of(const struct json *rec, const char *member, int v[MAXN])
{
	const struct json *a = json_get(rec, member);

	for (int i = 0; i < MAXN; i++)
		v[i] = -1;
	for (size_t k = 0; k < json_array_len(a); k++) {
		const struct json *p = json_array_at(a, k);
		int i = atoi(json_str(json_get(p, "name")) + 1);

		if (v[i] != -1)
			fail_msg("d%d listed twice", i);
		v[i] = (int)json_int(json_get(p, "v"), -2);
	}
	return json_array_len(a);
}

static void test_full_then_deltas(void **state)
{
	struct fx *f = *state;
	struct changelog_cursor cur = { .device = "d0", .tailnet = "t" };
	struct json *j;
	int v[MAXN];

	publish(f, 0, 1);
	publish(f, 1, 1);
	publish(f, 2, 1);
	publish(f, 9, 1); /* another tailnet */
	assert_int_equal(f->l.seq, 4);
	changelog_sync(&f->l, &cur);
	assert_true(changelog_pending(&f->l, &cur));
	j = next(f, &cur, 1 << 20);
	assert_string_equal(json_str(json_get(j, "type")), "full");
	assert_int_equal(json_int(json_get(j, "seq"), 0), 4);
	assert_false(json_bool(json_get(j, "more"), true));
	/* Self is our own record, not a peer; the other tailnet is absent. */
	assert_int_equal(json_int(json_path(j, "self", "v", NULL), 0), 1);
	assert_int_equal(peers_of(j, "peers", v), 2);
	assert_int_equal(v[1], 1);
	assert_int_equal(v[2], 1);
	assert_string_equal(json_str(json_path(j, "dns", "suffix", NULL)), "x");
	json_free(j);
	assert_false(changelog_pending(&f->l, &cur));
	assert_null(next(f, &cur, 1 << 20));

	/* Changed three times while the stream did not read: once, latest. */
	publish(f, 1, 2);
	publish(f, 1, 3);
	publish(f, 2, 2);
	publish(f, 1, 4);
	j = next(f, &cur, 1 << 20);
	assert_string_equal(json_str(json_get(j, "type")), "delta");
	assert_int_equal(json_int(json_get(j, "seq"), 0), 8);
	assert_null(json_get(j, "more"));
	assert_int_equal(peers_of(j, "upsert", v), 2);
	assert_int_equal(v[1], 4);
	assert_int_equal(v[2], 2);
	assert_null(json_get(j, "self"));
	json_free(j);
	assert_int_equal(cur.cursor, 8);

	/* A change of our own record comes as "self". */
	publish(f, 0, 5);
	j = next(f, &cur, 1 << 20);
	assert_int_equal(json_int(json_path(j, "self", "v", NULL), 0), 5);
	assert_null(json_get(j, "upsert"));
	json_free(j);

	/* Other tailnets' changes move the cursor without a record. */
	publish(f, 9, 2);
	publish(f, 11, 1);
	assert_true(changelog_pending(&f->l, &cur));
	assert_null(next(f, &cur, 1 << 20));
	assert_int_equal(cur.cursor, f->l.seq);
	assert_false(changelog_pending(&f->l, &cur));
}

static void test_removal(void **state)
{
	struct fx *f = *state;
	struct changelog_cursor a = { .device = "d0", .tailnet = "t" }, b = { .device = "d2", .tailnet = "t" };
	struct json *j;
	int v[MAXN];

	publish(f, 0, 1);
	publish(f, 1, 1);
	publish(f, 2, 1);
	changelog_sync(&f->l, &a);
	json_free(next(f, &a, 1 << 20));
	/* d1 changes and then goes: peers get only its removal. */
	publish(f, 1, 2);
	assert_int_equal(changelog_unpublish(&f->l, &f->nodes[1]), 0);
	assert_null(f->nodes[1].peer);
	assert_int_equal(changelog_unpublish(&f->l, &f->nodes[1]), 0); /* twice: nothing more */
	j = next(f, &a, 1 << 20);
	assert_int_equal(peers_of(j, "upsert", v), 0);
	assert_int_equal(json_array_len(json_get(j, "remove")), 1);
	assert_string_equal(json_str(json_array_at(json_get(j, "remove"), 0)), "nodekey:1");
	json_free(j);
	/* A full netmap begun after the removal does not carry it, nor d1. */
	changelog_sync(&f->l, &b);
	j = next(f, &b, 1 << 20);
	assert_int_equal(peers_of(j, "peers", v), 1);
	assert_int_equal(v[0], 1);
	assert_null(json_get(j, "remove"));
	json_free(j);
	/* A device does not get the removal of its own key. */
	publish(f, 2, 2);
	assert_int_equal(changelog_unpublish(&f->l, &f->nodes[2]), 0);
	j = next(f, &b, 1 << 20);
	assert_null(j);
	j = next(f, &a, 1 << 20);
	assert_string_equal(json_str(json_array_at(json_get(j, "remove"), 0)), "nodekey:2");
	json_free(j);
}

/* A full netmap of 40 peers in pieces of about 100 bytes: "full" with
 * more, then deltas with more, the last with more:false; every peer once. */
static void test_pieces(void **state)
{
	struct fx *f = *state;
	struct changelog_cursor cur = { .device = "d0", .tailnet = "t" };
	int seen[MAXN] = { 0 }, v[MAXN], pieces = 0;
	bool more = true;

	for (int i = 0; i < 40; i++)
		publish(f, i, 1);
	/* d0..d7 and even ones are in "t": 8 + 16 - 4 = 20, less self */
	changelog_sync(&f->l, &cur);
	while (more) {
		struct json *j = next(f, &cur, 100);
		size_t len;

		assert_non_null(j);
		assert_string_equal(json_str(json_get(j, pieces ? "type" : "type")), pieces ? "delta" : "full");
		len = peers_of(j, pieces ? "upsert" : "peers", v);
		assert_true(len <= 6); /* ~100 bytes of ~20-byte records */
		for (int i = 0; i < MAXN; i++)
			if (v[i] >= 0)
				seen[i]++;
		more = json_bool(json_get(j, "more"), false);
		assert_non_null(json_get(j, "more"));
		pieces++;
		json_free(j);
	}
	assert_true(pieces >= 4);
	for (int i = 0; i < 40; i++)
		assert_int_equal(seen[i], i != 0 && (i < 8 || i % 2 == 0) ? 1 : 0);
	assert_false(cur.syncing);
	assert_null(next(f, &cur, 100));
}

static void test_compact(void **state)
{
	struct fx *f = *state;
	struct changelog_cursor cur = { .device = "d0", .tailnet = "t" };
	struct json *j;
	int v[MAXN];

	for (int round = 0; round < 3000; round++)
		publish(f, round % 4, round);
	/* Appends compact a log that is mostly stale. */
	assert_true(f->l.len < 2100);
	assert_int_equal(f->l.live, 4);
	assert_true(f->unrefs > 0);
	changelog_compact(&f->l);
	assert_int_equal(f->l.len, 4);
	changelog_sync(&f->l, &cur);
	j = next(f, &cur, 1 << 20);
	assert_int_equal(peers_of(j, "peers", v), 3);
	assert_int_equal(v[1], 2997);
	assert_int_equal(v[3], 2999);
	json_free(j);
	/* A removal stays until every reader passed it. */
	assert_int_equal(changelog_unpublish(&f->l, &f->nodes[3]), 0);
	f->oldest = f->l.seq - 1;
	changelog_compact(&f->l);
	assert_int_equal(f->l.len, 4);
	f->oldest = 0;
	changelog_compact(&f->l);
	assert_int_equal(f->l.len, 3);
}

/* Streams of one tailnet at one cursor share the delta built first; the
 * stream whose own device it names builds its own. */
static void test_delta_cache(void **state)
{
	struct fx *f = *state;
	struct changelog_cursor s[4] = {
		{ .device = "d0", .tailnet = "t" }, { .device = "d2", .tailnet = "t" },
		{ .device = "d4", .tailnet = "t" }, { .device = "d1", .tailnet = "t" },
	};
	struct json *j;
	int v[MAXN];

	for (int i = 0; i < 5; i++)
		publish(f, i, 1);
	for (int k = 0; k < 4; k++) {
		changelog_sync(&f->l, &s[k]);
		json_free(next(f, &s[k], 1 << 20));
	}
	publish(f, 1, 2);
	j = next(f, &s[0], 1 << 20);
	assert_true(f->l.delta.valid);
	json_free(j);
	for (int k = 1; k < 3; k++) {
		j = next(f, &s[k], 1 << 20);
		assert_int_equal(peers_of(j, "upsert", v), 1);
		assert_int_equal(v[1], 2);
		assert_int_equal(s[k].cursor, f->l.seq);
		json_free(j);
	}
	/* d1's own stream: its record is "self", not from the cache. */
	j = next(f, &s[3], 1 << 20);
	assert_int_equal(json_int(json_path(j, "self", "v", NULL), 0), 2);
	assert_null(json_get(j, "upsert"));
	json_free(j);
}

/* Only odd-numbered peers are visible to this stream. */
static bool odd_only(void *arg, const char *device)
{
	(*(int *)arg)++;
	return atoi(device + 1) % 2 == 1;
}

/* A stream under a policy: hidden peers are in neither its full netmap
 * nor its deltas, and it neither uses nor fills the shared delta cache
 * (another stream at the same cursor sees everything). */
static void test_visible(void **state)
{
	struct fx *f = *state;
	int calls = 0;
	struct changelog_cursor pol = { .device = "d0", .tailnet = "t", .visible = odd_only, .visible_arg = &calls };
	struct changelog_cursor all = { .device = "d6", .tailnet = "t" };
	struct json *j;
	int v[MAXN];

	for (int i = 0; i < 6; i++)
		publish(f, i, 1);
	changelog_sync(&f->l, &pol);
	changelog_sync(&f->l, &all);
	j = next(f, &pol, 1 << 20);
	assert_int_equal(peers_of(j, "peers", v), 3);
	assert_int_equal(v[1], 1);
	assert_int_equal(v[3], 1);
	assert_int_equal(v[5], 1);
	assert_int_equal(v[2], -1);
	assert_int_equal(json_int(json_path(j, "self", "v", NULL), 0), 1); /* self is never filtered */
	assert_true(calls > 0);
	json_free(j);
	json_free(next(f, &all, 1 << 20));
	/* A hidden peer's change: nothing for the policed stream. */
	publish(f, 2, 2);
	assert_null(next(f, &pol, 1 << 20));
	assert_false(f->l.delta.valid);
	j = next(f, &all, 1 << 20);
	assert_int_equal(peers_of(j, "upsert", v), 1);
	json_free(j);
	/* The unpoliced stream filled the cache; the policed one ignores it. */
	publish(f, 3, 2);
	publish(f, 4, 2);
	j = next(f, &all, 1 << 20);
	assert_int_equal(peers_of(j, "upsert", v), 2);
	assert_true(f->l.delta.valid);
	json_free(j);
	j = next(f, &pol, 1 << 20);
	assert_int_equal(peers_of(j, "upsert", v), 1);
	assert_int_equal(v[3], 2);
	assert_int_equal(v[4], -1);
	json_free(j);
}

/* Tailnet-wide members (the relay map) reach every stream of the tailnet
 * as a delta of their own, the latest of several, and no other tailnet. */
static void test_tailnet_fields(void **state)
{
	struct fx *f = *state;
	struct changelog_cursor a = { .device = "d0", .tailnet = "t" }, b = { .device = "d1", .tailnet = "t" },
				o = { .device = "d9", .tailnet = "other" }, s = { .device = "d2", .tailnet = "t" };
	struct json *j;
	int v[MAXN];

	publish(f, 0, 1);
	publish(f, 1, 1);
	publish(f, 9, 1);
	changelog_sync(&f->l, &a);
	changelog_sync(&f->l, &b);
	changelog_sync(&f->l, &o);
	json_free(next(f, &a, 1 << 20));
	json_free(next(f, &b, 1 << 20));
	json_free(next(f, &o, 1 << 20));

	assert_int_equal(changelog_tailnet_fields(&f->l, "t", "\"relayMap\":{\"v\":1}"), 0);
	assert_true(changelog_pending(&f->l, &a));
	j = next(f, &a, 1 << 20);
	assert_string_equal(json_str(json_get(j, "type")), "delta");
	assert_int_equal(json_int(json_get(j, "seq"), 0), 4);
	assert_int_equal(json_int(json_path(j, "relayMap", "v", NULL), 0), 1);
	assert_null(json_get(j, "upsert"));
	json_free(j);
	/* The same delta for the tailnet's next stream (from the cache). */
	j = next(f, &b, 1 << 20);
	assert_int_equal(json_int(json_path(j, "relayMap", "v", NULL), 0), 1);
	json_free(j);
	/* Another tailnet: the cursor moves, nothing is sent. */
	assert_null(next(f, &o, 1 << 20));
	assert_int_equal(o.cursor, 4);

	/* Two edits and a peer change unread: one delta, the latest map. */
	assert_int_equal(changelog_tailnet_fields(&f->l, "t", "\"relayMap\":{\"v\":2}"), 0);
	publish(f, 1, 2);
	assert_int_equal(changelog_tailnet_fields(&f->l, "t", "\"relayMap\":null"), 0);
	j = next(f, &a, 1 << 20);
	assert_true(json_is_null(json_get(j, "relayMap")));
	assert_int_equal(peers_of(j, "upsert", v), 1);
	assert_int_equal(v[1], 2);
	json_free(j);
	assert_null(next(f, &a, 1 << 20));

	/* A full netmap that begins after an edit has it in its header (the
	 * caller's full_fields), not again in a delta. */
	changelog_sync(&f->l, &s);
	j = next(f, &s, 1 << 20);
	assert_string_equal(json_str(json_get(j, "type")), "full");
	assert_null(json_get(j, "relayMap"));
	json_free(j);
	assert_null(next(f, &s, 1 << 20));

	/* Kept until every reader passed it, then compacted away. */
	f->oldest = 0;
	changelog_compact(&f->l);
	for (size_t i = 0; i < f->l.len; i++)
		assert_null(f->l.log[i].f);
}

/* A view change rides on the next delta (changelog_extra): merged with
 * the log's own upserts and removals, with its packetFilter; a mark gives
 * a caught-up stream a fresh seq for it; marks are skipped by everyone
 * else and by the delta cache, and compacted away once passed. */
static void test_extra(void **state)
{
	struct fx *f = *state;
	struct changelog_cursor pol = { .device = "d0", .tailnet = "t" };
	struct changelog_cursor all = { .device = "d6", .tailnet = "t" };
	struct changelog_extra x = { .peers = "{\"name\":\"d9\",\"v\":7}", .removes = "\"nodekey:2\"",
				     .fields = ",\"packetFilter\":[]" };
	uint64_t seq;
	struct json *j;
	int v[MAXN];

	x.peers_len = strlen(x.peers);
	x.removes_len = strlen(x.removes);
	x.fields_len = strlen(x.fields);
	for (int i = 0; i < 4; i++)
		publish(f, i, 1);
	changelog_sync(&f->l, &pol);
	changelog_sync(&f->l, &all);
	json_free(next(f, &pol, 1 << 20));
	json_free(next(f, &all, 1 << 20));
	seq = pol.cursor;

	/* Caught up: without a fresh entry there is no seq to send it at. */
	pol.extra = &x;
	assert_null(next(f, &pol, 1 << 20));
	assert_int_equal(changelog_mark(&f->l), 0);
	j = next(f, &pol, 1 << 20);
	assert_non_null(j);
	assert_true(json_int(json_get(j, "seq"), 0) > (int64_t)seq);
	assert_string_equal(json_str(json_get(j, "type")), "delta");
	assert_int_equal(peers_of(j, "upsert", v), 1);
	assert_int_equal(v[9], 7);
	assert_int_equal(json_array_len(json_get(j, "remove")), 1);
	assert_int_equal(json_array_len(json_get(j, "packetFilter")), 0);
	assert_true(json_is_array(json_get(j, "packetFilter")));
	json_free(j);
	pol.extra = NULL;
	/* The mark alone is nothing to the other stream. */
	assert_null(next(f, &all, 1 << 20));
	assert_int_equal(all.cursor, f->l.seq);

	/* With log entries pending: one record, both lists merged. */
	publish(f, 1, 2);
	assert_int_equal(changelog_unpublish(&f->l, &f->nodes[3]), 0);
	pol.extra = &x;
	j = next(f, &pol, 1 << 20);
	assert_int_equal(peers_of(j, "upsert", v), 2);
	assert_int_equal(v[1], 2);
	assert_int_equal(v[9], 7);
	assert_int_equal(json_array_len(json_get(j, "remove")), 2);
	assert_non_null(json_get(j, "packetFilter"));
	json_free(j);
	pol.extra = NULL;
	/* ...and the plain stream's delta, cacheable, carries none of it. */
	j = next(f, &all, 1 << 20);
	assert_int_equal(peers_of(j, "upsert", v), 1);
	assert_null(json_get(j, "packetFilter"));
	assert_true(f->l.delta.valid);
	json_free(j);
	/* A stream with an extra never takes the cached delta. */
	{
		struct changelog_cursor late = { .device = "d4", .tailnet = "t", .cursor = seq, .extra = &x };

		assert_int_equal(changelog_mark(&f->l), 0);
		j = next(f, &late, 1 << 20);
		assert_non_null(json_get(j, "packetFilter"));
		json_free(j);
	}
	/* Every cursor past the marks: compaction drops them. */
	assert_int_equal(changelog_mark(&f->l), 0);
	json_free(next(f, &pol, 1 << 20));
	json_free(next(f, &all, 1 << 20));
	changelog_compact(&f->l);
	for (size_t i = 0; i < f->l.len; i++)
		assert_true(f->l.log[i].n != NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_full_then_deltas, setup, teardown),
		cmocka_unit_test_setup_teardown(test_removal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pieces, setup, teardown),
		cmocka_unit_test_setup_teardown(test_compact, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delta_cache, setup, teardown),
		cmocka_unit_test_setup_teardown(test_visible, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tailnet_fields, setup, teardown),
		cmocka_unit_test_setup_teardown(test_extra, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
