/* What the packet filter costs per packet, with 1,000 rules in force and
 * with allow-all (null packetFilter), in the same run:
 *
 *   bench_filter [seconds-per-case]   (default 0.5)
 *
 * Packets go through filter_check_in/out in batches of 64, as the data
 * path calls them; each case runs five times alternating between the two
 * filters, and the fastest of each is printed (the fill-in of new packets
 * subtracted). Cases:
 *   in, established, one flow    a batch of one tracked TCP flow (the
 *                                common case: a batch is mostly one flow)
 *   in, established, 64 flows    every packet another tracked flow
 *   in, new flow, allowed        TCP SYNs from allowed sources to their
 *                                ports, each a new flow (rule match and
 *                                an insert into the table, which evicts)
 *   in, new flow, denied         SYNs from a source no rule names
 *   out, established             replies leaving on tracked flows
 *   rules only                   filter_rules_allow, no table
 * The 1,000 rules are a per-device filter as the operator compiles it:
 * each names one peer (a /32 and a /128) and one port on both of the
 * device's addresses; both filters also check that destinations are the
 * device's own (filter_set_local). */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "json.h"
#include "net/offload.h"
#include "policy/filter.h"

#define BATCH 64
#define REPS 5
#define NRULES 1000
#define LOCAL4 "100.64.0.7"
#define LOCAL6 "fd7a:115c:a1e0::7"

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t tcp4(uint8_t *p, uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport, uint8_t flags)
{
	memset(p, 0, 60);
	p[0] = 0x45;
	p[3] = 60;
	p[8] = 64;
	p[9] = 6;
	src = htonl(src);
	dst = htonl(dst);
	memcpy(p + 12, &src, 4);
	memcpy(p + 16, &dst, 4);
	p[20] = (uint8_t)(sport >> 8), p[21] = (uint8_t)sport;
	p[22] = (uint8_t)(dport >> 8), p[23] = (uint8_t)dport;
	p[32] = 0x50;
	p[33] = flags;
	return 60; /* 20 bytes of payload */
}

static uint32_t peer(int i)
{
	return 0x64410000u | (uint32_t)(i / 250) << 8 | (uint32_t)(i % 250 + 1); /* 100.65.x.y */
}

static struct filter_rules *rules_1000(void)
{
	struct buf b = BUF_INIT(1 << 20);
	struct filter_rules *r;
	struct json *j;
	char err[256];
	int ret = buf_addf(&b, "[");

	for (int i = 0; i < NRULES && !ret; i++) {
		uint32_t a = peer(i);

		ret = buf_addf(&b,
			       "%s{\"srcIPs\":[\"%u.%u.%u.%u/32\",\"fd7a:115c:a1e0::%x:%x/128\"],"
			       "\"dstPorts\":[{\"ip\":\"" LOCAL4 "/32\",\"ports\":{\"first\":%d,\"last\":%d}},"
			       "{\"ip\":\"" LOCAL6 "/128\",\"ports\":{\"first\":%d,\"last\":%d}}]}",
			       i ? "," : "", a >> 24, a >> 16 & 255, a >> 8 & 255, a & 255, i / 250, i % 250 + 1,
			       10000 + i, 10000 + i, 10000 + i, 10000 + i);
	}
	if (!ret)
		ret = buf_addf(&b, "]");
	j = ret ? NULL : json_parse((const char *)b.data, b.len, NULL);
	r = j ? filter_rules_compile(j, err, sizeof(err)) : NULL;
	if (!r) {
		fprintf(stderr, "bench_filter: %s\n", j ? err : "cannot build the rules");
		exit(1);
	}
	json_free(j);
	buf_free(&b);
	return r;
}

struct bench {
	struct filter *f;
	uint8_t pkts[BATCH][64];
	struct pktbuf pb[BATCH];
	uint8_t v[BATCH];
	uint64_t now;
};

enum kase { EST_ONE, EST_MANY, NEW_ALLOWED, NEW_DENIED, OUT_EST, RULES_ONLY, NCASES };

static const char *const names[NCASES] = {
	"in, established, one flow", "in, established, 64 flows", "in, new flow, allowed",
	"in, new flow, denied", "out, established", "rules only (no table)",
};

static const uint32_t local4 = 0x64400007u;

/* Fills b's batch for case k, round `round` (new flows need new ports). */
static void fill(struct bench *b, enum kase k, unsigned round)
{
	for (int i = 0; i < BATCH; i++) {
		int rule = (int)((round * BATCH + (unsigned)i) % NRULES);
		size_t n;

		switch (k) {
		case EST_ONE:
			n = tcp4(b->pkts[i], peer(0), local4, 443, 40000, 0x10);
			break;
		case EST_MANY:
			n = tcp4(b->pkts[i], peer(0), local4, 443, (uint16_t)(40000 + i), 0x10);
			break;
		case NEW_ALLOWED:
			n = tcp4(b->pkts[i], peer(rule), local4, (uint16_t)(1024 + round % 60000), (uint16_t)(10000 + rule),
				 0x02);
			break;
		case NEW_DENIED:
			n = tcp4(b->pkts[i], 0x0a000001u + (uint32_t)i, local4, (uint16_t)(1024 + round % 60000),
				 (uint16_t)(10000 + rule), 0x02);
			break;
		default:
			n = tcp4(b->pkts[i], local4, peer(0), (uint16_t)(40000 + i), 443, 0x10);
			break;
		}
		b->pb[i] = (struct pktbuf){ .data = b->pkts[i], .len = n, .cap = 64 };
	}
}

static double run(struct bench *b, struct filter_rules *r, enum kase k, double secs)
{
	uint64_t n = 0;
	double start, elapsed;
	unsigned round = 0;

	if (k == RULES_ONLY) {
		uint8_t dst[4] = { 100, 64, 0, 7 };
		unsigned long hits = 0;

		/* Half the queries match (rule i's peer to port i), half not. */
		start = now_s();
		do {
			for (int i = 0; i < 4096; i++, n++) {
				uint32_t s = htonl(peer(i % NRULES));

				hits += filter_rules_allow(r, AF_INET, 6, (const uint8_t *)&s, dst,
							   (uint16_t)(10000 + (i + (int)(n & 1)) % NRULES));
			}
			elapsed = now_s() - start;
		} while (elapsed < secs);
		if (!filter_rules_allow_all(r) && (hits < n / 2 - 4096 || hits > n / 2 + 4096))
			abort();
		return elapsed * 1e9 / (double)n;
	}
	fill(b, k, 0);
	start = now_s();
	do {
		for (int it = 0; it < 64; it++) {
			if (k == NEW_ALLOWED || k == NEW_DENIED)
				fill(b, k, ++round);
			if (k == OUT_EST)
				filter_check_out(b->f, b->pb, BATCH, b->now, b->v);
			else
				filter_check_in(b->f, b->pb, BATCH, b->now, b->v);
			n += BATCH;
		}
		elapsed = now_s() - start;
	} while (elapsed < secs);
	/* Sanity: the case measured what it says. */
	if ((k == EST_ONE || k == EST_MANY || k == OUT_EST || k == NEW_ALLOWED) && b->v[BATCH - 1] != FILTER_ACCEPT)
		abort();
	if (k == NEW_DENIED && b->v[0] != FILTER_DROP_NO_RULE && !filter_rules_allow_all(r))
		abort();
	return elapsed * 1e9 / (double)n;
}

/* The fill() cost of new-flow cases, to subtract. */
static double fill_cost(enum kase k, double secs)
{
	static struct bench b;
	uint64_t n = 0;
	double start = now_s(), elapsed;
	unsigned round = 0;

	do {
		for (int it = 0; it < 64; it++, n += BATCH)
			fill(&b, k, ++round);
		elapsed = now_s() - start;
	} while (elapsed < secs);
	return elapsed * 1e9 / (double)n;
}

static void setup(struct bench *b, struct filter_rules *r)
{
	if (filter_new(&b->f, 0))
		exit(1);
	b->now = 1000;
	/* Open the tracked flows from the local side. */
	for (int i = 0; i < BATCH; i++) {
		uint8_t pkt[64], v;
		struct pktbuf pb = { .data = pkt, .cap = 64 };

		pb.len = tcp4(pkt, local4, peer(0), (uint16_t)(40000 + i), 443, 0x02);
		filter_check_out(b->f, &pb, 1, b->now, &v);
		pb.len = tcp4(pkt, peer(0), local4, 443, (uint16_t)(40000 + i), 0x12);
		filter_check_in(b->f, &pb, 1, b->now, &v);
	}
	filter_swap(b->f, r);
	/* Both filters check destinations, as knitd's would. */
	{
		struct filter_prefix self[2] = { { .family = AF_INET, .bits = 32 }, { .family = AF_INET6, .bits = 128 } };

		inet_pton(AF_INET, LOCAL4, self[0].addr);
		inet_pton(AF_INET6, LOCAL6, self[1].addr);
		if (filter_set_local(b->f, self, 2))
			exit(1);
	}
}

int main(int argc, char **argv)
{
	double secs = argc > 1 ? atof(argv[1]) : 0.5;
	static struct bench all, many;
	struct filter_rules *r = rules_1000(), *allow = filter_rules_compile(NULL, NULL, 0);
	double res[NCASES][2];

	if (secs <= 0 || !allow) {
		fprintf(stderr, "usage: bench_filter [seconds-per-case]\n");
		return 2;
	}
	printf("1,000 rules: %zu KiB of compiled tables; batches of %d packets; %.1f s per case, best of %d\n",
	       filter_rules_bytes(r) / 1024, BATCH, secs, REPS);
	setup(&all, allow);
	setup(&many, r);
	/* Alternating short runs, keeping each side's fastest: on a shared
	 * host the minimum is the figure least disturbed by other work. */
	for (int k = 0; k < NCASES; k++) {
		double fc = k == NEW_ALLOWED || k == NEW_DENIED ? fill_cost((enum kase)k, secs / REPS) : 0;

		res[k][0] = res[k][1] = 1e30;
		for (int rep = 0; rep < REPS; rep++) {
			double a = run(&all, allow, (enum kase)k, secs / REPS) - fc;
			double m = run(&many, r, (enum kase)k, secs / REPS) - fc;

			res[k][0] = a < res[k][0] ? a : res[k][0];
			res[k][1] = m < res[k][1] ? m : res[k][1];
		}
	}
	printf("%-30s %12s %12s %8s\n", "ns per packet", "allow-all", "1000 rules", "ratio");
	for (int k = 0; k < NCASES; k++)
		printf("%-30s %12.1f %12.1f %8.2f\n", names[k], res[k][0], res[k][1], res[k][1] / res[k][0]);
	filter_free(all.f);
	filter_free(many.f);
	return 0;
}
