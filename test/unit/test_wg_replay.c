/* Anti-replay window: table-driven sequences plus a randomized check
 * against a set-based reference. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "wg/messages.h"
#include "wg/replay.h"

#define W REPLAY_WINDOW_SIZE
#define END UINT64_MAX

struct step {
	uint64_t counter;
	bool accept;
};

/* Each sequence starts from a fresh window; ends at a step with counter END. */
static const struct step seqs[][24] = {
	/* in order, duplicates */
	{ { 0, true }, { 1, true }, { 2, true }, { 2, false }, { 0, false }, { 3, true }, { END, 0 } },
	/* first counter need not be 0; then everything before it is in the window */
	{ { 5, true }, { 0, true }, { 4, true }, { 5, false }, { 4, false }, { END, 0 } },
	/* reordered within the window */
	{ { 10, true }, { 7, true }, { 9, true }, { 8, true }, { 7, false }, { 11, true }, { END, 0 } },
	/* the window's edge: exactly W behind is kept, W + 1 behind is too old */
	{ { W + 1, true }, { 1, true }, { 0, false }, { 1, false }, { END, 0 } },
	{ { W + 100, true }, { 100, true }, { 99, false }, { W + 99, true }, { END, 0 } },
	/* jump ahead by more than the window: old bits must not linger */
	{ { 1, true }, { 2, true }, { 3 * W, true }, { 2, false }, { 3 * W - W, true }, { 3 * W - W, false },
	  { 3 * W + 1, true }, { END, 0 } },
	/* a jump of exactly one ring (8192) lands on the same block index */
	{ { 64, true }, { 64 + 8192, true }, { 64, false }, { 65 + 8192, true }, { 64 + 8192, false }, { END, 0 } },
	/* jump ahead by less than the window keeps what is still inside */
	{ { 0, true }, { 1000, true }, { 0, false }, { 999, true }, { 1000 + W, true }, { 1000, false },
	  { 999, false }, { 1001, true }, { END, 0 } },
	/* the limit */
	{ { REJECT_AFTER_MESSAGES - 1, true }, { REJECT_AFTER_MESSAGES, false }, { REJECT_AFTER_MESSAGES + 1, false },
	  { UINT64_MAX - 1, false }, { REJECT_AFTER_MESSAGES - 2, true }, { REJECT_AFTER_MESSAGES - 1, false },
	  { REJECT_AFTER_MESSAGES - 1 - W, true }, { REJECT_AFTER_MESSAGES - 2 - W, false }, { END, 0 } },
	/* block boundaries */
	{ { 63, true }, { 64, true }, { 127, true }, { 128, true }, { 63, false }, { 64, false }, { 65, true },
	  { END, 0 } },
};

static void test_sequences(void **state)
{
	struct replay r;

	for (size_t s = 0; s < sizeof(seqs) / sizeof(seqs[0]); s++) {
		replay_init(&r);
		for (size_t i = 0; seqs[s][i].counter != END; i++) {
			bool got = replay_check(&r, seqs[s][i].counter);

			if (got != seqs[s][i].accept)
				fail_msg("sequence %zu step %zu counter %llu: got %d", s, i,
					 (unsigned long long)seqs[s][i].counter, got);
		}
	}
}

/* Every counter in [0, 3W) sent in order, each then replayed, and each
 * window position checked around its edge. */
static void test_exhaustive_edges(void **state)
{
	struct replay r;

	replay_init(&r);
	for (uint64_t c = 0; c < 3 * W; c++) {
		assert_true(replay_check(&r, c));
		assert_false(replay_check(&r, c));
		if (c > W) {
			assert_false(replay_check(&r, c - W - 1));
			assert_false(replay_check(&r, c - W));
		}
	}
	/* reversed: a window full of fresh counters arriving backwards */
	replay_init(&r);
	assert_true(replay_check(&r, 2 * W));
	for (uint64_t c = 2 * W - 1; c >= W; c--)
		assert_true(replay_check(&r, c));
	assert_false(replay_check(&r, W - 1));
}

/* Random arrivals vs. a reference: accepted iff never seen and within the
 * window of the greatest accepted so far. */
static void test_random_reference(void **state)
{
	enum { N = 200000, SPAN = 40000 };
	uint8_t *seen = calloc(SPAN + 2 * W, 1);
	struct replay r;
	uint64_t base = 0, greatest = 0;
	bool any = false;

	assert_non_null(seen);
	srand(1234);
	replay_init(&r);
	for (int i = 0; i < N; i++) {
		uint64_t c = base + (uint64_t)(rand() % (W + 300));
		bool want;

		if (c >= SPAN + 2 * W)
			c = SPAN + 2 * W - 1;
		want = !seen[c] && (!any || c + W >= greatest);
		assert_int_equal(replay_check(&r, c), want);
		if (want) {
			seen[c] = 1;
			if (!any || c > greatest)
				greatest = c;
			any = true;
		}
		if (i % 10 == 0 && base < SPAN)
			base++;
	}
	free(seen);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sequences),
		cmocka_unit_test(test_exhaustive_edges),
		cmocka_unit_test(test_random_reference),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
