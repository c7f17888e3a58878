#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "metrics.h"

#define TEST_DEADLINE_S 60

static char *render(struct metrics *m)
{
	struct buf b = BUF_INIT(1u << 20);

	assert_int_equal(metrics_render(m, &b), 0);
	return buf_steal(&b, NULL);
}

static unsigned queue_depth = 7;

static double depth(void *arg)
{
	return *(unsigned *)arg;
}

static double bytes(void *arg)
{
	return 1e18;
}

/* A collector mirrors counters kept elsewhere: it runs before every
 * render, unlocked, so it may update series (and a render sees it). */
struct source {
	struct metric *seen;
	unsigned long long kept, mirrored;
	int calls;
};

static void collect(void *arg)
{
	struct source *s = arg;

	s->calls++;
	metrics_add(s->seen, (double)(s->kept - s->mirrored));
	s->mirrored = s->kept;
}

static void test_collector(void **state)
{
	struct metrics *m = metrics_new();
	struct source src = { 0 };
	char *out;

	assert_non_null(m);
	src.seen = metrics_with(metrics_counter_new(m, "seen_total", "Mirrored.", NULL), NULL);
	assert_non_null(src.seen);
	metrics_set_collector(m, collect, &src);
	src.kept = 41;
	out = render(m);
	assert_non_null(strstr(out, "\nseen_total 41\n"));
	free(out);
	src.kept = 1000;
	out = render(m);
	assert_non_null(strstr(out, "\nseen_total 1000\n"));
	free(out);
	assert_int_equal(src.calls, 2);
	metrics_set_collector(m, NULL, NULL);
	src.kept = 2000;
	out = render(m);
	assert_non_null(strstr(out, "\nseen_total 1000\n"));
	free(out);
	assert_int_equal(src.calls, 2);
	metrics_free(m);
}

static void test_exposition(void **state)
{
	struct metrics *m = metrics_new();
	struct metrics_family *up, *rec, *temp, *lat;
	char *got;

	assert_non_null(m);
	up = metrics_counter_new(m, "knit_up_total", "Starts.", NULL);
	rec = metrics_counter_new(m, "knit_reconciles_total", "Reconciles by kind\\result.\nTwo lines.",
				  (const char *[]){ "kind", "result", NULL });
	temp = metrics_gauge_new(m, "knit:temp", NULL, (const char *[]){ "zone", NULL });
	lat = metrics_histogram_new(m, "knit_latency_seconds", "Latency.",
				    (const char *[]){ "op", NULL }, (const double[]){ 0.1, 1, 2.5 }, 3);
	assert_non_null(up);
	assert_non_null(rec);
	assert_non_null(temp);
	assert_non_null(lat);
	assert_non_null(metrics_gauge_func_new(m, "knit_queue_depth", "Queue.", depth, &queue_depth));
	assert_non_null(metrics_counter_func_new(m, "knit_rx_bytes_total", "Bytes.", bytes, NULL));

	metrics_inc(metrics_with(up, NULL));
	metrics_add(metrics_with(up, NULL), 2);
	metrics_add(metrics_with(up, NULL), -5); /* ignored: counters only go up */
	metrics_set(metrics_with(up, NULL), 100); /* ignored: not a gauge */
	metrics_inc(METRICS_WITH(rec, "AuthKey", "error"));
	metrics_inc(METRICS_WITH(rec, "AuthKey", "ok"));
	metrics_inc(METRICS_WITH(rec, "AuthKey", "error"));
	metrics_inc(METRICS_WITH(rec, "we\"ird\\kind\nx", "ok"));
	metrics_set(METRICS_WITH(temp, "a"), 21.5);
	metrics_set(METRICS_WITH(temp, "b"), -0.1);
	metrics_add(METRICS_WITH(temp, "b"), 0.1);
	metrics_set(METRICS_WITH(temp, "c"), NAN);
	metrics_set(METRICS_WITH(temp, "d"), -INFINITY);
	struct metric *get = METRICS_WITH(lat, "get");
	metrics_observe(get, 0.05);
	metrics_observe(get, 0.1); /* le is inclusive */
	metrics_observe(get, 0.5);
	metrics_observe(get, 100);
	metrics_observe(get, NAN); /* ignored */
	metrics_inc(get); /* ignored: not a counter */
	METRICS_WITH(lat, "put");
	assert_true(metrics_value(get) == 4);
	assert_true(metrics_value(metrics_with(up, NULL)) == 3);

	got = render(m);
	assert_string_equal(got,
		"# HELP knit_up_total Starts.\n"
		"# TYPE knit_up_total counter\n"
		"knit_up_total 3\n"
		"# HELP knit_reconciles_total Reconciles by kind\\\\result.\\nTwo lines.\n"
		"# TYPE knit_reconciles_total counter\n"
		"knit_reconciles_total{kind=\"AuthKey\",result=\"error\"} 2\n"
		"knit_reconciles_total{kind=\"AuthKey\",result=\"ok\"} 1\n"
		"knit_reconciles_total{kind=\"we\\\"ird\\\\kind\\nx\",result=\"ok\"} 1\n"
		"# TYPE knit:temp gauge\n"
		"knit:temp{zone=\"a\"} 21.5\n"
		"knit:temp{zone=\"b\"} 0\n"
		"knit:temp{zone=\"c\"} NaN\n"
		"knit:temp{zone=\"d\"} -Inf\n"
		"# HELP knit_latency_seconds Latency.\n"
		"# TYPE knit_latency_seconds histogram\n"
		"knit_latency_seconds_bucket{op=\"get\",le=\"0.1\"} 2\n"
		"knit_latency_seconds_bucket{op=\"get\",le=\"1\"} 3\n"
		"knit_latency_seconds_bucket{op=\"get\",le=\"2.5\"} 3\n"
		"knit_latency_seconds_bucket{op=\"get\",le=\"+Inf\"} 4\n"
		"knit_latency_seconds_sum{op=\"get\"} 100.65\n"
		"knit_latency_seconds_count{op=\"get\"} 4\n"
		"knit_latency_seconds_bucket{op=\"put\",le=\"0.1\"} 0\n"
		"knit_latency_seconds_bucket{op=\"put\",le=\"1\"} 0\n"
		"knit_latency_seconds_bucket{op=\"put\",le=\"2.5\"} 0\n"
		"knit_latency_seconds_bucket{op=\"put\",le=\"+Inf\"} 0\n"
		"knit_latency_seconds_sum{op=\"put\"} 0\n"
		"knit_latency_seconds_count{op=\"put\"} 0\n"
		"# HELP knit_queue_depth Queue.\n"
		"# TYPE knit_queue_depth gauge\n"
		"knit_queue_depth 7\n"
		"# HELP knit_rx_bytes_total Bytes.\n"
		"# TYPE knit_rx_bytes_total counter\n"
		"knit_rx_bytes_total 1e+18\n");
	free(got);
	metrics_free(m);
}

static void test_unlabelled_histogram_defaults(void **state)
{
	struct metrics *m = metrics_new();
	struct metrics_family *h;
	char *got;

	/* Default buckets; a trailing +Inf bound is accepted and not doubled. */
	h = metrics_histogram_new(m, "d", NULL, NULL, NULL, 0);
	assert_non_null(h);
	assert_non_null(metrics_histogram_new(m, "e", NULL, NULL, (const double[]){ 1, INFINITY }, 2));
	metrics_observe(metrics_with(h, NULL), 0.3);
	got = render(m);
	assert_string_equal(got,
		"# TYPE d histogram\n"
		"d_bucket{le=\"0.005\"} 0\n"
		"d_bucket{le=\"0.01\"} 0\n"
		"d_bucket{le=\"0.025\"} 0\n"
		"d_bucket{le=\"0.05\"} 0\n"
		"d_bucket{le=\"0.1\"} 0\n"
		"d_bucket{le=\"0.25\"} 0\n"
		"d_bucket{le=\"0.5\"} 1\n"
		"d_bucket{le=\"1\"} 1\n"
		"d_bucket{le=\"2.5\"} 1\n"
		"d_bucket{le=\"5\"} 1\n"
		"d_bucket{le=\"10\"} 1\n"
		"d_bucket{le=\"+Inf\"} 1\n"
		"d_sum 0.3\n"
		"d_count 1\n"
		"# TYPE e histogram\n"
		"e_bucket{le=\"1\"} 0\n"
		"e_bucket{le=\"+Inf\"} 0\n"
		"e_sum 0\n"
		"e_count 0\n");
	free(got);
	metrics_free(m);
}

static void test_invalid(void **state)
{
	struct metrics *m = metrics_new();
	struct metrics_family *f, *h;
	static const char *const bad_names[] = { "", "1abc", "a-b", "a b", "é", "a{", NULL };

	for (size_t i = 0; bad_names[i]; i++) {
		errno = 0;
		assert_null(metrics_counter_new(m, bad_names[i], NULL, NULL));
		assert_int_equal(errno, EINVAL);
	}
	assert_null(metrics_counter_new(m, NULL, NULL, NULL));
	assert_null(metrics_gauge_new(m, "g", NULL, (const char *[]){ "__reserved", NULL }));
	assert_null(metrics_gauge_new(m, "g", NULL, (const char *[]){ "a:b", NULL }));
	assert_null(metrics_gauge_new(m, "g", NULL, (const char *[]){ "9a", NULL }));
	assert_null(metrics_gauge_new(m, "g", NULL, (const char *[]){ "a", "b", "a", NULL }));
	assert_null(metrics_histogram_new(m, "h", NULL, (const char *[]){ "le", NULL }, NULL, 0));
	assert_null(metrics_histogram_new(m, "h", NULL, NULL, (const double[]){ 1, 1 }, 2));
	assert_null(metrics_histogram_new(m, "h", NULL, NULL, (const double[]){ 2, 1 }, 2));
	assert_null(metrics_histogram_new(m, "h", NULL, NULL, (const double[]){ NAN }, 1));
	assert_null(metrics_histogram_new(m, "h", NULL, NULL, (const double[]){ -INFINITY, 1 }, 2));
	assert_null(metrics_gauge_func_new(m, "gf", NULL, NULL, NULL));
	/* "le" is fine outside histograms, a colon inside metric names. */
	f = metrics_gauge_new(m, "ns:g", NULL, (const char *[]){ "le", "_x", NULL });
	assert_non_null(f);

	errno = 0;
	assert_null(metrics_counter_new(m, "ns:g", NULL, NULL));
	assert_int_equal(errno, EEXIST);
	h = metrics_histogram_new(m, "rt", NULL, NULL, NULL, 0);
	assert_non_null(h);
	assert_null(metrics_counter_new(m, "rt_count", NULL, NULL));
	assert_int_equal(errno, EEXIST);
	assert_non_null(metrics_counter_new(m, "x_sum", NULL, NULL));
	assert_null(metrics_histogram_new(m, "x", NULL, NULL, NULL, 0));
	assert_int_equal(errno, EEXIST);

	/* Label values: count must match; valid UTF-8 within the cap. */
	errno = 0;
	assert_null(metrics_with(f, NULL));
	assert_int_equal(errno, EINVAL);
	assert_null(METRICS_WITH(f, "only one"));
	assert_null(METRICS_WITH(f, "a", "b", "c"));
	assert_null(METRICS_WITH(f, "\xff", "b"));
	assert_null(METRICS_WITH(f, "\xc0\x80", "b")); /* overlong NUL */
	assert_null(METRICS_WITH(f, "\xed\xa0\x80", "b")); /* surrogate */
	assert_non_null(METRICS_WITH(f, "h\xc3\xa9", "\xf0\x9f\x98\x80"));
	char *big = malloc(METRICS_MAX_LABEL_VALUE + 2);
	assert_non_null(big);
	memset(big, 'a', METRICS_MAX_LABEL_VALUE + 1);
	big[METRICS_MAX_LABEL_VALUE + 1] = '\0';
	assert_null(METRICS_WITH(f, big, "b"));
	big[METRICS_MAX_LABEL_VALUE] = '\0';
	assert_non_null(METRICS_WITH(f, big, "b"));
	free(big);
	assert_null(metrics_with(NULL, NULL));

	/* Updating NULL does nothing. */
	metrics_inc(NULL);
	metrics_add(NULL, 1);
	metrics_set(NULL, 1);
	metrics_observe(NULL, 1);
	assert_true(metrics_value(NULL) == 0);
	metrics_free(m);
}

static void test_cardinality_cap(void **state)
{
	struct metrics *m = metrics_new();
	struct metrics_family *f = metrics_counter_new(m, "c", NULL, (const char *[]){ "id", NULL });
	char v[32];

	for (unsigned i = 0; i < METRICS_MAX_SERIES; i++) {
		snprintf(v, sizeof(v), "%u", i);
		assert_non_null(METRICS_WITH(f, v));
	}
	errno = 0;
	assert_null(METRICS_WITH(f, "one too many"));
	assert_int_equal(errno, ENOSPC);
	assert_non_null(METRICS_WITH(f, "0")); /* existing ones still found */
	metrics_free(m);
}

static void test_render_cap(void **state)
{
	struct metrics *m = metrics_new();
	struct buf b = BUF_INIT(40);

	assert_non_null(metrics_counter_new(m, "a_fairly_long_metric_name_total", "Help text.", NULL));
	assert_int_equal(metrics_render(m, &b), -ENOSPC);
	assert_int_equal(b.len, 0);
	buf_free(&b);
	metrics_free(m);
}

#define NTHREADS 8
#define NITER 50000

struct worker {
	struct metrics_family *c, *g, *h;
	int id;
};

static void *work(void *arg)
{
	struct worker *w = arg;
	struct metric *c = metrics_with(w->c, (const char *[]){ w->id % 2 ? "odd" : "even", NULL });
	struct metric *g = metrics_with(w->g, NULL);
	char v[8];

	for (int i = 0; i < NITER; i++) {
		metrics_inc(c);
		metrics_add(g, 0.5);
		metrics_observe(metrics_with(w->h, NULL), i % 3);
		if (i % 1000 == 0) {
			/* concurrent series creation */
			snprintf(v, sizeof(v), "%d", i / 1000);
			metrics_inc(METRICS_WITH(w->c, v));
		}
	}
	return NULL;
}

static void *renderer(void *arg)
{
	struct metrics *m = arg;

	for (int i = 0; i < 50; i++)
		free(render(m));
	return NULL;
}

static void test_concurrent(void **state)
{
	struct metrics *m = metrics_new();
	struct worker w[NTHREADS];
	pthread_t t[NTHREADS], r;
	struct metrics_family *c, *g, *h;

	c = metrics_counter_new(m, "c_total", NULL, (const char *[]){ "parity", NULL });
	g = metrics_gauge_new(m, "g", NULL, NULL);
	h = metrics_histogram_new(m, "h", NULL, NULL, (const double[]){ 0, 1 }, 2);
	assert_non_null(c);
	assert_non_null(g);
	assert_non_null(h);
	assert_int_equal(pthread_create(&r, NULL, renderer, m), 0);
	for (int i = 0; i < NTHREADS; i++) {
		w[i] = (struct worker){ .c = c, .g = g, .h = h, .id = i };
		assert_int_equal(pthread_create(&t[i], NULL, work, &w[i]), 0);
	}
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(t[i], NULL);
	pthread_join(r, NULL);

	assert_true(metrics_value(METRICS_WITH(c, "odd")) == NTHREADS / 2 * NITER);
	assert_true(metrics_value(METRICS_WITH(c, "even")) == NTHREADS / 2 * NITER);
	assert_true(metrics_value(METRICS_WITH(c, "0")) == NTHREADS);
	assert_true(metrics_value(metrics_with(g, NULL)) == NTHREADS * NITER * 0.5);
	assert_true(metrics_value(metrics_with(h, NULL)) == NTHREADS * NITER);

	char *got = render(m), *line;
	char want[128];
	/* i % 3 is 0, 1, 2: le=0 gets a third, le=1 two thirds (rounded as
	 * the loop runs: 50000 = 16667 + 16667 + 16666). */
	snprintf(want, sizeof(want), "h_bucket{le=\"0\"} %d\n", NTHREADS * 16667);
	assert_non_null(strstr(got, want));
	snprintf(want, sizeof(want), "h_bucket{le=\"1\"} %d\n", NTHREADS * (16667 + 16667));
	assert_non_null(strstr(got, want));
	snprintf(want, sizeof(want), "h_sum %d\n", NTHREADS * (16667 + 2 * 16666));
	assert_non_null(strstr(got, want));
	line = strstr(got, "h_count ");
	assert_non_null(line);
	free(got);
	metrics_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_exposition),
		cmocka_unit_test(test_collector),
		cmocka_unit_test(test_unlabelled_histogram_defaults),
		cmocka_unit_test(test_invalid),
		cmocka_unit_test(test_cardinality_cap),
		cmocka_unit_test(test_render_cap),
		cmocka_unit_test(test_concurrent),
	};

	alarm(TEST_DEADLINE_S);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
