/* knit netcheck's report (agent/cli/netreport.c): probe results in, the
 * answers out. The knit CLI is a program, not a library: its module is
 * compiled in here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <cmocka.h>

#include "../../agent/cli/netreport.c"
#include "buf.h"

/* Two regions: "near" (one node) and "far" (two nodes). */
static struct relaymap_node n_near = { .name = "1a", .host = "near.example" };
static struct relaymap_node n_far[2] = { { .name = "2a", .host = "far-a.example" },
					 { .name = "2b", .host = "far-b.example" } };
static struct relaymap_region r_near = { .id = 1, .code = "near", .name = "Near", .nodes = &n_near, .nnodes = 1 };
static struct relaymap_region r_far = { .id = 2, .code = "far", .name = "", .nodes = n_far, .nnodes = 2 };

struct fixture {
	struct netreport_node near[1], far[2];
	struct netreport_region regions[2];
	struct netreport_input in;
};

static void fixture_init(struct fixture *f)
{
	memset(f, 0, sizeof(*f));
	f->near[0].node = &n_near;
	f->far[0].node = &n_far[0];
	f->far[1].node = &n_far[1];
	f->regions[0] = (struct netreport_region){ .region = &r_near, .nodes = f->near };
	f->regions[1] = (struct netreport_region){ .region = &r_far, .nodes = f->far };
	f->in = (struct netreport_input){ .regions = f->regions, .nregions = 2 };
}

static void stun(struct netreport_node *n, int family, const char *server, const char *mapped, double rtt)
{
	struct netreport_stun *s = &n->stun[n->nstun++];

	s->family = family;
	snprintf(s->server, sizeof(s->server), "%s", server);
	if (mapped) {
		s->answered = true;
		s->rtt_ms = rtt;
		snprintf(s->mapped, sizeof(s->mapped), "%s", mapped);
	}
}

static void relay(struct netreport_node *n, double connect, double upgrade)
{
	n->relay.tried = true;
	n->relay.reached = connect >= 0;
	n->relay.connect_ms = connect;
	n->relay.upgrade_ms = upgrade;
	if (connect < 0)
		snprintf(n->relay.error, sizeof(n->relay.error), "Couldn't connect to server");
}

static char *print(const struct netreport *r, const struct netreport_input *in)
{
	static char out[4096];
	FILE *f = fmemopen(out, sizeof(out), "w");

	assert_non_null(f);
	netreport_print(r, in, f);
	fclose(f);
	return out;
}

static char *dump(const struct json *j)
{
	struct buf b = BUF_INIT(1 << 16);
	char *s;

	assert_int_equal(json_dump(j, &b, 0), 0);
	s = strndup((const char *)b.data, b.len);
	buf_free(&b);
	return s;
}

/* Easy NAT: every server sees the same mapping; the nearest by STUN wins
 * even when its relay connection is slower. */
static void test_easy(void **state)
{
	struct fixture f;
	struct netreport r;

	fixture_init(&f);
	stun(&f.near[0], AF_INET, "192.0.2.1:3478", "198.51.100.7:40000", 9.0);
	stun(&f.far[0], AF_INET, "192.0.2.2:3478", "198.51.100.7:40000", 30.0);
	stun(&f.far[1], AF_INET, "192.0.2.3:3478", "198.51.100.7:40000", 25.0);
	stun(&f.far[1], AF_INET6, "[2001:db8::3]:3478", "[2001:db8:1::7]:40000", 24.0);
	relay(&f.near[0], 20, 20);
	relay(&f.far[0], 1, 1);
	relay(&f.far[1], -1, 0);
	assert_int_equal(netreport_build(&f.in, &r), 0);
	assert_true(r.udp);
	assert_string_equal(r.ipv4, "198.51.100.7:40000");
	assert_string_equal(r.ipv6, "[2001:db8:1::7]:40000");
	assert_int_equal(r.mapping_varies, NETREPORT_NO);
	assert_int_equal(r.preferred, 1);
	assert_int_equal(r.nregions, 2);
	assert_true(r.regions[0].has_stun && r.regions[0].has_relay);
	assert_true(r.regions[0].stun_ms == 9.0);
	assert_true(r.regions[0].relay_ms == 40.0);
	assert_true(r.regions[1].stun_ms == 24.0); /* the best of its nodes, either family */
	assert_true(r.regions[1].relay_ms == 2.0);
	assert_true(r.regions[1].latency_ms == 24.0);
	assert_string_equal(print(&r, &f.in), "\nReport:\n"
					      "\t* UDP: true\n"
					      "\t* IPv4: yes, 198.51.100.7:40000\n"
					      "\t* IPv6: yes, [2001:db8:1::7]:40000\n"
					      "\t* MappingVariesByDestIP: false\n"
					      "\t* Nearest relay: Near\n"
					      "\t* Relay latency:\n"
					      "\t\t- near: 9.0ms (relay 40.0ms over TCP)  (Near)\n"
					      "\t\t- far: 24.0ms (relay 2.0ms over TCP)  (far)\n"
					      "\t\t    2b: Couldn't connect to server\n");
	netreport_free(&r);
}

/* Hard NAT: one socket, two servers, two mappings. The IPv6 answers do
 * not count (no NAT there to test), nor do two answers from one server. */
static void test_hard(void **state)
{
	struct fixture f;
	struct netreport r;

	fixture_init(&f);
	stun(&f.near[0], AF_INET, "192.0.2.1:3478", "198.51.100.7:1111", 5);
	stun(&f.far[0], AF_INET, "192.0.2.2:3478", "198.51.100.7:2222", 6);
	assert_int_equal(netreport_build(&f.in, &r), 0);
	assert_int_equal(r.mapping_varies, NETREPORT_YES);
	assert_string_equal(r.ipv4, "198.51.100.7:1111");
	netreport_free(&r);

	/* Only the port's server differs: still another destination. */
	fixture_init(&f);
	stun(&f.near[0], AF_INET, "192.0.2.1:3478", "198.51.100.7:1111", 5);
	stun(&f.far[0], AF_INET, "192.0.2.1:3479", "198.51.100.7:2222", 6);
	assert_int_equal(netreport_build(&f.in, &r), 0);
	assert_int_equal(r.mapping_varies, NETREPORT_YES);
	netreport_free(&r);

	/* One server listed twice: cannot tell. */
	fixture_init(&f);
	stun(&f.far[0], AF_INET, "192.0.2.2:3478", "198.51.100.7:1111", 5);
	stun(&f.far[1], AF_INET, "192.0.2.2:3478", "198.51.100.7:1111", 6);
	stun(&f.far[1], AF_INET6, "[2001:db8::3]:3478", "[2001:db8:1::7]:1", 4);
	stun(&f.near[0], AF_INET6, "[2001:db8::4]:3478", "[2001:db8:1::7]:2", 4);
	assert_int_equal(netreport_build(&f.in, &r), 0);
	assert_int_equal(r.mapping_varies, NETREPORT_UNKNOWN);
	assert_non_null(strstr(print(&r, &f.in), "MappingVariesByDestIP: unknown\n"));
	netreport_free(&r);
}

/* UDP blocked: no STUN answer, so no address and no mapping answer; the
 * nearest relay is chosen by its TCP connection. */
static void test_no_udp(void **state)
{
	struct fixture f;
	struct netreport r;
	struct json *j;
	char *s;

	fixture_init(&f);
	stun(&f.near[0], AF_INET, "192.0.2.1:3478", NULL, 0);
	stun(&f.far[0], AF_INET, "192.0.2.2:3478", NULL, 0);
	stun(&f.far[1], AF_INET, "192.0.2.3:3478", NULL, 0);
	relay(&f.near[0], 3, 4.5);
	relay(&f.far[0], 1, 2);
	relay(&f.far[1], 0.5, 0.25);
	assert_int_equal(netreport_build(&f.in, &r), 0);
	assert_false(r.udp);
	assert_string_equal(r.ipv4, "");
	assert_int_equal(r.mapping_varies, NETREPORT_UNKNOWN);
	assert_int_equal(r.preferred, 2);
	assert_true(r.regions[1].latency_ms == 0.75);
	assert_non_null(strstr(print(&r, &f.in), "\t* UDP: false\n\t* IPv4: (no addr found)\n"));
	assert_non_null(strstr(print(&r, &f.in), "\t\t- near: - (relay 7.5ms over TCP)  (Near)\n"));

	j = netreport_json(&r, &f.in);
	assert_non_null(j);
	s = dump(j);
	assert_string_equal(
		s, "{\"udp\":false,\"ipv4\":null,\"ipv6\":null,\"mappingVariesByDestIP\":null,\"preferredRegion\":2,"
		   "\"regions\":[{\"id\":1,\"code\":\"near\",\"name\":\"Near\",\"latencyMs\":7.5,\"stunMs\":null,"
		   "\"relayMs\":7.5,\"nodes\":[{\"name\":\"1a\",\"hostName\":\"near.example\",\"stun\":[{\"family\":"
		   "\"ipv4\",\"server\":\"192.0.2.1:3478\",\"answered\":false,\"rttMs\":null,\"mapped\":null}],"
		   "\"relay\":{\"reached\":true,\"connectMs\":3,\"upgradeMs\":4.5,\"error\":null}}]},"
		   "{\"id\":2,\"code\":\"far\",\"name\":\"\",\"latencyMs\":0.75,\"stunMs\":null,\"relayMs\":0.75,"
		   "\"nodes\":[{\"name\":\"2a\",\"hostName\":\"far-a.example\",\"stun\":[{\"family\":\"ipv4\","
		   "\"server\":\"192.0.2.2:3478\",\"answered\":false,\"rttMs\":null,\"mapped\":null}],\"relay\":"
		   "{\"reached\":true,\"connectMs\":1,\"upgradeMs\":2,\"error\":null}},{\"name\":\"2b\",\"hostName\":"
		   "\"far-b.example\",\"stun\":[{\"family\":\"ipv4\",\"server\":\"192.0.2.3:3478\",\"answered\":false,"
		   "\"rttMs\":null,\"mapped\":null}],\"relay\":{\"reached\":true,\"connectMs\":0.5,\"upgradeMs\":0.25,"
		   "\"error\":null}}]}]}");
	free(s);
	json_free(j);
	netreport_free(&r);
}

/* Nothing answers: no preferred region, and the report says so. */
static void test_nothing(void **state)
{
	struct fixture f;
	struct netreport r;
	struct json *j;

	fixture_init(&f);
	stun(&f.near[0], AF_INET, "192.0.2.1:3478", NULL, 0);
	relay(&f.near[0], -1, 0);
	relay(&f.far[0], -1, 0);
	relay(&f.far[1], -1, 0);
	assert_int_equal(netreport_build(&f.in, &r), 0);
	assert_false(r.udp);
	assert_int_equal(r.preferred, 0);
	assert_false(r.regions[0].has_latency);
	assert_non_null(strstr(print(&r, &f.in), "Nearest relay: none reachable\n"));
	assert_non_null(strstr(print(&r, &f.in), "\t\t- near: - (relay unreachable)  (Near)\n"
						  "\t\t    1a: Couldn't connect to server\n"));
	j = netreport_json(&r, &f.in);
	assert_true(json_is_null(json_get(j, "preferredRegion")));
	assert_string_equal(json_str(json_path(json_array_at(json_get(json_array_at(json_get(j, "regions"), 0), "nodes"), 0),
					       "relay", "error", NULL)),
			    "Couldn't connect to server");
	json_free(j);
	netreport_free(&r);

	/* An empty map: an empty report. */
	f.in.nregions = 0;
	assert_int_equal(netreport_build(&f.in, &r), 0);
	assert_int_equal(r.preferred, 0);
	netreport_free(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_easy),
		cmocka_unit_test(test_hard),
		cmocka_unit_test(test_no_udp),
		cmocka_unit_test(test_nothing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
