/* agent/datagrams.c: the bounded handoff of disco and STUN datagrams from
 * the hub's receive thread to the loop, and their dispatch; and
 * endpoints_announce() (agent/endpoints.c), the soft state knitd tells the
 * coordination server. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <string.h>

#include "control/messages.h"
#include "datagrams.h"
#include "disco/message.h"
#include "endpoints.h"
#include "loop.h"
#include "stun/stun.h"

struct seen {
	int calls;
	bool take;
	size_t last_len;
};

static bool handler(void *arg, const uint8_t *pkt, size_t len, const struct endpoint *from)
{
	struct seen *s = arg;

	s->calls++;
	s->last_len = len;
	return s->take;
}

static struct endpoint ep4(const char *ip, uint16_t port)
{
	struct endpoint ep = { 0 };

	ep.addr.in4.sin_family = AF_INET;
	ep.addr.in4.sin_port = htons(port);
	inet_pton(AF_INET, ip, &ep.addr.in4.sin_addr);
	return ep;
}

static size_t disco_like(uint8_t *out)
{
	memset(out, 0xab, DISCO_HEADER_LEN + DISCO_BOX_OVERHEAD + 10);
	memcpy(out, DISCO_MAGIC, DISCO_MAGIC_LEN);
	return DISCO_HEADER_LEN + DISCO_BOX_OVERHEAD + 10;
}

static void drain(struct loop *l)
{
	for (int i = 0; i < 20 && loop_run_once(l, 10) > 0; i++)
		;
}

static void test_dispatch(void **state)
{
	struct loop *l = loop_new();
	struct datagrams *d;
	struct seen first = { .take = false }, second = { .take = true }, stun = { .take = true };
	struct datagrams_stats st;
	struct endpoint from = ep4("192.0.2.1", 41641);
	uint8_t pkt[600], txid[STUN_TXID_LEN] = { 1 };
	size_t n;

	assert_non_null(l);
	assert_int_equal(datagrams_new(&d, l), 0);
	assert_int_equal(datagrams_add_disco(d, handler, &second), 0);
	assert_int_equal(datagrams_add_disco(d, handler, &first), 0); /* asked first */
	datagrams_set_stun(d, handler, &stun);

	n = disco_like(pkt);
	datagrams_on_other(d, pkt, n, &from);
	n = stun_binding_request(pkt, sizeof(pkt), txid, true);
	datagrams_on_other(d, pkt, n, &from);
	datagrams_on_other(d, (const uint8_t *)"junk that is neither", 20, &from);
	drain(l);
	/* The first handler declines, the second takes it. */
	assert_int_equal(first.calls, 1);
	assert_int_equal(second.calls, 1);
	assert_int_equal(stun.calls, 1);
	datagrams_stats(d, &st);
	assert_int_equal(st.disco, 1);
	assert_int_equal(st.stun, 1);
	assert_int_equal(st.garbage, 1);
	assert_int_equal(st.disco_unknown, 0);

	/* Nobody takes it: counted. Removed handlers are not asked. */
	second.take = false;
	datagrams_remove_disco(d, &first);
	n = disco_like(pkt);
	datagrams_on_other(d, pkt, n, &from);
	drain(l);
	assert_int_equal(first.calls, 1);
	assert_int_equal(second.calls, 2);
	datagrams_stats(d, &st);
	assert_int_equal(st.disco_unknown, 1);
	datagrams_free(d);
	loop_free(l);
}

static void test_bounded(void **state)
{
	struct loop *l = loop_new();
	struct datagrams *d;
	struct seen h = { .take = true };
	struct datagrams_stats st;
	struct endpoint from = ep4("192.0.2.1", 41641);
	uint8_t pkt[DATAGRAMS_SLOT + 8];
	size_t n = disco_like(pkt);

	assert_int_equal(datagrams_new(&d, l), 0);
	assert_int_equal(datagrams_add_disco(d, handler, &h), 0);
	/* A burst beyond the ring before the loop runs: the rest dropped. */
	for (int i = 0; i < DATAGRAMS_RING + 100; i++)
		datagrams_on_other(d, pkt, n, &from);
	/* Too long for a slot: garbage. */
	memset(pkt + n, 0, sizeof(pkt) - n);
	datagrams_on_other(d, pkt, sizeof(pkt), &from);
	drain(l);
	datagrams_stats(d, &st);
	assert_int_equal(h.calls, DATAGRAMS_RING);
	assert_int_equal(st.dropped, 100);
	assert_int_equal(st.garbage, 1);
	/* And it flows again. */
	datagrams_on_other(d, pkt, n, &from);
	drain(l);
	assert_int_equal(h.calls, DATAGRAMS_RING + 1);
	datagrams_free(d);
	loop_free(l);
}

static void test_announce(void **state)
{
	struct endpoint local[2] = { ep4("192.168.1.5", 41641), ep4("10.0.0.5", 41641) };
	struct endpoint refl[2] = { ep4("198.51.100.7", 41641), ep4("10.0.0.5", 41641) };
	struct update_request l = { .endpoints = local, .nendpoints = 2 }, u;
	char sig[256], sig2[256];

	assert_int_equal(endpoints_announce(&u, &l, refl, 2, 3, sig, sizeof(sig)), 0);
	/* Local first, the reflexive one not already there, the home region. */
	assert_int_equal(u.nendpoints, 3);
	assert_true(endpoint_equal(&u.endpoints[2], &refl[0]));
	assert_true(u.has_relay);
	assert_int_equal(u.relay, 3);
	assert_string_equal(sig, "192.168.1.5:41641,10.0.0.5:41641,198.51.100.7:41641,relay=3");
	update_request_free(&u);
	/* No home region: no relay member; the text differs. */
	assert_int_equal(endpoints_announce(&u, &l, refl, 1, 0, sig2, sizeof(sig2)), 0);
	assert_false(u.has_relay);
	assert_string_not_equal(sig, sig2);
	update_request_free(&u);
	/* Nothing at all. */
	l.nendpoints = 0;
	assert_int_equal(endpoints_announce(&u, &l, NULL, 0, 0, sig, sizeof(sig)), 0);
	assert_int_equal(u.nendpoints, 0);
	assert_string_equal(sig, "relay=0");
	update_request_free(&u);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dispatch),
		cmocka_unit_test(test_bounded),
		cmocka_unit_test(test_announce),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
