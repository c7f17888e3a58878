/* The relay's key table against a brute-force reference: inserts,
 * replacements, deletions and lookups of random and near-identical keys
 * through several growths. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "relay/keymap.h"

#define N 3000

static uint8_t keys[N][32];
static void *vals[N]; /* reference: NULL = absent */

static void count(const uint8_t key[32], void *value, void *arg)
{
	(*(size_t *)arg)++;
}

static void test_against_reference(void **state)
{
	struct keymap *m = keymap_new();
	size_t live = 0, seen = 0;

	assert_non_null(m);
	for (size_t i = 0; i < N; i++) {
		randombytes_buf(keys[i], 32);
		if (i % 3 == 0 && i > 0) { /* keys differing in the last byte only */
			memcpy(keys[i], keys[i - 1], 31);
			keys[i][31] = keys[i - 1][31] ^ 1;
		}
	}
	for (uint32_t step = 0; step < 20 * N; step++) {
		size_t i = randombytes_uniform(N);
		void *old = (void *)1;

		switch (randombytes_uniform(3)) {
		case 0:
			assert_int_equal(keymap_set(m, keys[i], (void *)(uintptr_t)(step + 1), &old), 0);
			assert_ptr_equal(old, vals[i]);
			live += vals[i] == NULL;
			vals[i] = (void *)(uintptr_t)(step + 1);
			break;
		case 1:
			assert_ptr_equal(keymap_del(m, keys[i]), vals[i]);
			live -= vals[i] != NULL;
			vals[i] = NULL;
			break;
		default:
			assert_ptr_equal(keymap_get(m, keys[i]), vals[i]);
		}
		assert_int_equal(keymap_len(m), live);
	}
	keymap_each(m, count, &seen);
	assert_int_equal(seen, live);
	keymap_free(m);
	keymap_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_against_reference),
	};
	if (sodium_init() < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
