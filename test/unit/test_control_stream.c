/* control/stream.c: records split at every byte, byte by byte and in random
 * chunks all come out the same; malformed framing fails with a reason. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "control/stream.h"

#define MAX_RECS 16

struct got {
	size_t n;
	size_t len[MAX_RECS];
	uint8_t *rec[MAX_RECS];
	int refuse_at; /* 1-based record number to refuse, 0: none */
};

static bool on_rec(const uint8_t *rec, size_t len, void *arg, char *msg, size_t msglen)
{
	struct got *g = arg;

	assert_true(g->n < MAX_RECS);
	if (g->refuse_at && (int)g->n + 1 == g->refuse_at) {
		snprintf(msg, msglen, "record %zu refused", g->n + 1);
		return false;
	}
	g->rec[g->n] = malloc(len);
	assert_non_null(g->rec[g->n]);
	memcpy(g->rec[g->n], rec, len);
	g->len[g->n++] = len;
	return true;
}

static void got_free(struct got *g)
{
	for (size_t i = 0; i < g->n; i++)
		free(g->rec[i]);
	memset(g, 0, sizeof(*g));
}

static const size_t sizes[] = { 1, 5, 4, 300, 3000, 2 };
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))

static void build(struct buf *b)
{
	uint8_t *tmp = malloc(3000);

	assert_non_null(tmp);
	for (size_t i = 0; i < NSIZES; i++) {
		for (size_t j = 0; j < sizes[i]; j++)
			tmp[j] = (uint8_t)(i * 31 + j);
		assert_int_equal(stream_record_append(b, tmp, sizes[i]), 0);
	}
	free(tmp);
}

static void check(const struct got *g)
{
	assert_int_equal(g->n, NSIZES);
	for (size_t i = 0; i < NSIZES; i++) {
		assert_int_equal(g->len[i], sizes[i]);
		for (size_t j = 0; j < sizes[i]; j++)
			assert_int_equal(g->rec[i][j], (uint8_t)(i * 31 + j));
	}
}

static void test_split_everywhere(void **state)
{
	struct buf b = BUF_INIT(1 << 20);
	struct stream s;
	struct got g = { 0 };

	build(&b);
	/* Two chunks split at every byte. */
	for (size_t cut = 0; cut <= b.len; cut++) {
		stream_init(&s, 0);
		assert_true(stream_feed(&s, b.data, cut, on_rec, &g));
		assert_true(stream_feed(&s, b.data + cut, b.len - cut, on_rec, &g));
		assert_true(stream_at_boundary(&s));
		check(&g);
		got_free(&g);
		stream_free(&s);
	}
	/* Byte by byte. */
	stream_init(&s, 0);
	for (size_t i = 0; i < b.len; i++) {
		assert_true(stream_feed(&s, b.data + i, 1, on_rec, &g));
		if (i + 1 < b.len)
			assert_false(stream_at_boundary(&s) && g.n == NSIZES);
	}
	assert_true(stream_at_boundary(&s));
	check(&g);
	got_free(&g);
	stream_free(&s);
	/* Random chunks, a few seeds. */
	for (unsigned seed = 1; seed <= 50; seed++) {
		size_t off = 0;

		srand(seed);
		stream_init(&s, 0);
		while (off < b.len) {
			size_t n = (size_t)rand() % 9000;

			if (n > b.len - off)
				n = b.len - off;
			assert_true(stream_feed(&s, b.data + off, n, on_rec, &g));
			off += n;
		}
		check(&g);
		got_free(&g);
		stream_free(&s);
	}
	buf_free(&b);
}

/* One large record (over a 64 KiB chunk) in random chunks. */
static void test_large(void **state)
{
	struct buf b = BUF_INIT(4 << 20);
	size_t n = (1 << 20) + 7, off = 0;
	uint8_t *big = malloc(n);
	struct stream s;
	struct got g = { 0 };

	assert_non_null(big);
	for (size_t i = 0; i < n; i++)
		big[i] = (uint8_t)(i * 7);
	assert_int_equal(stream_record_append(&b, big, n), 0);
	srand(7);
	stream_init(&s, 0);
	while (off < b.len) {
		size_t k = (size_t)rand() % 70000;

		if (k > b.len - off)
			k = b.len - off;
		assert_true(stream_feed(&s, b.data + off, k, on_rec, &g));
		off += k;
	}
	assert_int_equal(g.n, 1);
	assert_int_equal(g.len[0], n);
	assert_memory_equal(g.rec[0], big, n);
	assert_true(stream_at_boundary(&s));
	got_free(&g);
	stream_free(&s);
	buf_free(&b);
	free(big);
}

static void test_truncated(void **state)
{
	struct buf b = BUF_INIT(1 << 20);
	struct stream s;
	struct got g = { 0 };

	build(&b);
	stream_init(&s, 0);
	assert_true(stream_at_boundary(&s));
	assert_true(stream_feed(&s, b.data, 3, on_rec, &g));
	assert_false(stream_at_boundary(&s)); /* inside a header */
	assert_true(stream_feed(&s, b.data + 3, 1, on_rec, &g));
	assert_int_equal(g.n, 0);
	assert_false(stream_at_boundary(&s)); /* header done, body to come */
	assert_true(stream_feed(&s, b.data + 4, b.len - 5, on_rec, &g));
	assert_int_equal(g.n, NSIZES - 1);
	assert_false(stream_at_boundary(&s));
	got_free(&g);
	stream_free(&s);
	buf_free(&b);
}

static void test_zero_length(void **state)
{
	static const uint8_t in[] = { 0, 0, 0, 1, 'x', 0, 0, 0, 0, 0, 0, 0, 1, 'y' };
	struct stream s;
	struct got g = { 0 };

	stream_init(&s, 0);
	assert_false(stream_feed(&s, in, sizeof(in), on_rec, &g));
	assert_int_equal(g.n, 1);
	assert_string_equal(stream_error(&s), "record at byte 5 has length 0");
	/* Sticky: nothing more is accepted. */
	assert_false(stream_feed(&s, in, 5, on_rec, &g));
	assert_int_equal(g.n, 1);
	assert_false(stream_at_boundary(&s));
	got_free(&g);
	stream_free(&s);
}

static void test_oversized(void **state)
{
	/* The cap applies from the header: no body byte is buffered. */
	static const uint8_t big[] = { 0x01, 0x00, 0x00, 0x01, 'a', 'b' };
	static const uint8_t huge[] = { 0xff, 0xff, 0xff, 0xff };
	static const uint8_t ok[] = { 0, 0, 0, 16 };
	struct stream s;
	struct got g = { 0 };

	stream_init(&s, 0);
	assert_false(stream_feed(&s, big, 2, on_rec, &g) && stream_feed(&s, big + 2, 4, on_rec, &g));
	assert_string_equal(stream_error(&s),
			    "record at byte 0 is 16777217 bytes, over the 16777216-byte cap");
	assert_int_equal(s.pending.len, 0);
	stream_free(&s);

	stream_init(&s, 16);
	assert_true(stream_feed(&s, ok, sizeof(ok), on_rec, &g));
	stream_free(&s);
	stream_init(&s, 15);
	assert_false(stream_feed(&s, ok, sizeof(ok), on_rec, &g));
	stream_free(&s);
	stream_init(&s, 0);
	assert_false(stream_feed(&s, huge, sizeof(huge), on_rec, &g));
	assert_non_null(strstr(stream_error(&s), "4294967295 bytes"));
	stream_free(&s);
	assert_int_equal(g.n, 0);
}

static void test_refused(void **state)
{
	struct buf b = BUF_INIT(1 << 20);
	struct stream s;
	struct got g = { .refuse_at = 3 };

	build(&b);
	stream_init(&s, 0);
	assert_false(stream_feed(&s, b.data, b.len, on_rec, &g));
	assert_int_equal(g.n, 2);
	assert_string_equal(stream_error(&s), "record 3 refused");
	stream_free(&s);
	got_free(&g);
	buf_free(&b);
}

static void test_append_errors(void **state)
{
	struct buf b = BUF_INIT(8);
	uint8_t x[8] = { 0 };

	assert_int_equal(stream_record_append(&b, x, 0), -EMSGSIZE);
	assert_int_equal(stream_record_append(&b, x, 4), 0);
	assert_int_equal(b.len, 8);
	assert_memory_equal(b.data, "\0\0\0\4", 4);
	/* Over the cap: refused whole, never half a header. */
	assert_int_equal(stream_record_append(&b, x, 1), -ENOSPC);
	assert_int_equal(b.len, 0);
	buf_free(&b);
}

/* A big record that came in pieces does not keep its room: the small
 * records after it go through a small buffer again (a full netmap of
 * hundreds of peers, then deltas; knitd has a stream per pod identity). */
static void test_big_record_room_let_go(void **state)
{
	struct buf b = BUF_INIT(1 << 20);
	uint8_t *big = calloc(1, 200000), small[100] = { 7 };
	struct stream s;
	struct got g = { 0 };

	(void)state;
	assert_non_null(big);
	assert_int_equal(stream_record_append(&b, big, 200000), 0);
	assert_int_equal(stream_record_append(&b, small, sizeof(small)), 0);
	stream_init(&s, 0);
	for (size_t off = 0; off < b.len; off += 16384)
		assert_true(stream_feed(&s, b.data + off, b.len - off < 16384 ? b.len - off : 16384, on_rec, &g));
	assert_int_equal(g.n, 2);
	assert_int_equal(g.len[0], 200000);
	assert_int_equal(g.len[1], sizeof(small));
	assert_true(stream_at_boundary(&s));
	assert_true(s.pending.alloc <= 16384);
	got_free(&g);
	stream_free(&s);
	buf_free(&b);
	free(big);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_split_everywhere),
		cmocka_unit_test(test_large),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_zero_length),
		cmocka_unit_test(test_oversized),
		cmocka_unit_test(test_refused),
		cmocka_unit_test(test_append_errors),
		cmocka_unit_test(test_big_record_room_let_go),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
