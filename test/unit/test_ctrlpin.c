/* control/ctrlpin.c: the control key pin rule of a rotation. A key is
 * learned only from a record that came over a session with the pinned key
 * (or the next key it announced); a record from any other session changes
 * nothing, whatever it says. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "control/ctrlpin.h"
#include "json.h"

static void key(uint8_t k[32], uint8_t v)
{
	memset(k, v, 32);
}

static struct ctrlpin_keys keys_of(const char *text)
{
	struct json *j = json_parse(text, strlen(text), NULL);
	struct ctrlpin_keys k;
	char err[160];

	assert_non_null(j);
	assert_true(ctrlpin_keys_from_json(j, &k, err, sizeof(err)));
	json_free(j);
	return k;
}

#define H8(c) c c c c c c c c
#define H64(c) H8(c) H8(c) H8(c) H8(c) H8(c) H8(c) H8(c) H8(c)
#define CK(c) "\"ctrlkey:" H64(c) "\""

static void test_parse(void **state)
{
	const char *bad[] = {
		"{\"type\":\"delta\",\"controlKey\":\"ctrlkey:11\"}",
		"{\"type\":\"delta\",\"controlKey\":" CK("1") ",\"nextControlKey\":\"mkey:" H64("2") "\"}",
		"{\"type\":\"delta\",\"nextControlKey\":" CK("2") "}",
		"{\"type\":\"delta\",\"controlKey\":7}",
	};
	struct ctrlpin_keys k;
	char err[160];

	(void)state;
	k = keys_of("{\"type\":\"full\",\"controlKey\":" CK("1") ",\"nextControlKey\":" CK("2") "}");
	assert_true(k.has && k.has_next);
	assert_int_equal(k.current[0], 0x11);
	assert_int_equal(k.next[31], 0x22);
	k = keys_of("{\"type\":\"delta\",\"controlKey\":" CK("1") ",\"nextControlKey\":null}");
	assert_true(k.has && !k.has_next);
	k = keys_of("{\"type\":\"delta\",\"seq\":4}");
	assert_false(k.has);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct json *j = json_parse(bad[i], strlen(bad[i]), NULL);
		assert_non_null(j);
		assert_false(ctrlpin_keys_from_json(j, &k, err, sizeof(err)));
		json_free(j);
	}
}

static void test_round_trip(void **state)
{
	struct json *o = json_new_object();
	uint8_t a[32], b[32];
	struct ctrlpin_keys k;
	char err[160];

	(void)state;
	key(a, 0xa1);
	key(b, 0xb2);
	assert_int_equal(ctrlpin_keys_to_json(o, a, b), 0);
	assert_true(ctrlpin_keys_from_json(o, &k, err, sizeof(err)));
	assert_true(k.has && k.has_next);
	assert_memory_equal(k.current, a, 32);
	assert_memory_equal(k.next, b, 32);
	json_free(o);
	o = json_new_object();
	assert_int_equal(ctrlpin_keys_to_json(o, a, NULL), 0);
	assert_true(ctrlpin_keys_from_json(o, &k, err, sizeof(err)));
	assert_true(k.has && !k.has_next);
	json_free(o);
}

/* The whole rotation as an online agent sees it: P pinned, N announced
 * and saved, then served as current: the pin switches. */
static void test_rotation_online(void **state)
{
	struct ctrlpin pin = { 0 };
	struct ctrlpin_keys k = { .has = true };
	uint8_t p[32], n[32];

	(void)state;
	key(p, 1);
	key(n, 2);
	memcpy(pin.key, p, 32);
	memcpy(k.current, p, 32);
	assert_int_equal(ctrlpin_learn(&pin, p, &k), 0); /* nothing new */
	k.has_next = true;
	memcpy(k.next, n, 32);
	assert_int_equal(ctrlpin_learn(&pin, p, &k), CTRLPIN_NEXT_SAVED);
	assert_true(pin.has_next);
	assert_memory_equal(pin.key, p, 32);
	assert_memory_equal(pin.next, n, 32);
	assert_int_equal(ctrlpin_learn(&pin, p, &k), 0); /* again: nothing new */
	/* Promoted: controlKey N, no next; still over the P session. */
	memcpy(k.current, n, 32);
	k.has_next = false;
	assert_int_equal(ctrlpin_learn(&pin, p, &k), CTRLPIN_SWITCHED | CTRLPIN_NEXT_SAVED);
	assert_memory_equal(pin.key, n, 32);
	assert_false(pin.has_next);
}

/* Offline through the announcement: its old pin's session tells it the
 * new key; and one that saved N but slept past the previous key's grace
 * gets in with N (the client's fallback) and switches. */
static void test_rotation_offline(void **state)
{
	struct ctrlpin pin = { 0 };
	struct ctrlpin_keys k = { .has = true };
	uint8_t p[32], n[32];

	(void)state;
	key(p, 1);
	key(n, 2);
	memcpy(pin.key, p, 32);
	memcpy(k.current, n, 32);
	assert_int_equal(ctrlpin_learn(&pin, p, &k), CTRLPIN_SWITCHED);
	assert_memory_equal(pin.key, n, 32);

	memset(&pin, 0, sizeof(pin));
	memcpy(pin.key, p, 32);
	memcpy(pin.next, n, 32);
	pin.has_next = true;
	assert_int_equal(ctrlpin_learn(&pin, n, &k), CTRLPIN_SWITCHED | CTRLPIN_NEXT_SAVED);
	assert_memory_equal(pin.key, n, 32);
	assert_false(pin.has_next);
}

/* A record over a session with a key the pin never announced cannot
 * change the pin or the next key, whatever it carries. */
static void test_forged(void **state)
{
	struct ctrlpin pin = { 0 }, before;
	struct ctrlpin_keys k = { .has = true, .has_next = true };
	uint8_t p[32], n[32], x[32];

	(void)state;
	key(p, 1);
	key(n, 2);
	key(x, 0xee);
	memcpy(pin.key, p, 32);
	memcpy(pin.next, n, 32);
	pin.has_next = true;
	before = pin;
	memcpy(k.current, x, 32);
	memcpy(k.next, x, 32);
	assert_int_equal(ctrlpin_learn(&pin, x, &k), CTRLPIN_UNTRUSTED);
	assert_memory_equal(&pin, &before, sizeof(pin));
	/* Without a next key saved, the same. */
	pin.has_next = false;
	before = pin;
	assert_int_equal(ctrlpin_learn(&pin, n, &k), CTRLPIN_UNTRUSTED);
	assert_memory_equal(&pin, &before, sizeof(pin));
	/* A record without keys changes nothing either. */
	k.has = false;
	assert_int_equal(ctrlpin_learn(&pin, p, &k), 0);
	assert_memory_equal(&pin, &before, sizeof(pin));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_rotation_online),
		cmocka_unit_test(test_rotation_offline),
		cmocka_unit_test(test_forged),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
