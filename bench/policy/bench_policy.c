/* Policy compilation at scale: a generated policy of R rules over D
 * devices, compiled for every device (packet filter, visible peers,
 * approved routes), and one device joining afterwards (what the operator
 * recompiles incrementally).
 *
 *   bench_policy [devices [rules]]   (default 10000 1000)
 *
 * The same run measures the reference points the figure is read
 * against: parsing the policy, and compiling a tenth of the devices with
 * the same policy (scaling: the per-device cost should stay flat when
 * the rules name principals, and grows with the sources each rule names).
 *
 * The tailnet: users own 3 devices each (user devices are 60%), 200 tags
 * on the other 40%, 100 groups of 10 users. Rule mix, repeating: group to
 * tag on a port, tag to tag on a range, a user to a tag, autogroup:member
 * to autogroup:self, a CIDR to a tag with a protocol, and a grant. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "policy/policy.h"
#include "policygen.h"


static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU time of this process: on a shared machine wall time also counts
 * the time others ran. Both are printed. */
static double cpu_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
	fprintf(stderr, "bench_policy: %s\n", what);
	exit(1);
}

struct result {
	double add_s, compile_s, compile_cpu_s;
	size_t rules, src_ips, peers;
};

static void add_device(struct policy_net *net, size_t i, size_t users, struct policy_names *t)
{
	static char tagbuf[32];
	static const char *tags[1];
	char name[32];
	struct policy_prefix route;
	struct policy_device d = { .name = name };

	snprintf(name, sizeof(name), "dev%zu", i);
	d.addrs[0] = (struct policy_prefix){ .family = 4, .bits = 32,
					     .addr = { 100, (uint8_t)(64 + (i >> 16)), (uint8_t)(i >> 8),
						       (uint8_t)i } };
	d.n_addrs = 1;
	if (i % 10 < 6) {
		static char user[48];

		/* the k-th user device belongs to user k/3 */
		snprintf(user, sizeof(user), "user%zu@example.com", ((i / 10) * 6 + i % 10) / 3 % users);
		d.user = user;
	} else {
		snprintf(tagbuf, sizeof(tagbuf), "tag:t%zu", i % TAGS);
		tags[0] = tagbuf;
		d.tags = tags;
		d.n_tags = 1;
		if (i % TAGS == 0) { /* tag:t0 routers serve 10.x/16 */
			route = (struct policy_prefix){ .family = 4, .bits = 16,
							.addr = { 10, (uint8_t)(i / TAGS), 0, 0 } };
			d.routes = &route;
			d.n_routes = 1;
		}
	}
	if (policy_net_add(net, &d, t))
		die("policy_net_add failed");
}

static struct result compile(const struct policy *p, size_t devices, size_t users)
{
	struct policy_net *net = policy_net_new(p);
	struct result r = { 0 };
	double t0;
	char name[32];

	if (!net)
		die("out of memory");
	t0 = now_s();
	for (size_t i = 0; i < devices; i++)
		add_device(net, i, users, NULL);
	r.add_s = now_s() - t0;
	t0 = now_s();
	r.compile_cpu_s = cpu_s();
	for (size_t i = 0; i < devices; i++) {
		struct policy_filter f;
		struct policy_names n;
		struct policy_routes rt;

		snprintf(name, sizeof(name), "dev%zu", i);
		if (policy_net_filter(net, name, &f) || policy_net_peers(net, name, &n) ||
		    policy_net_routes(net, name, &rt))
			die("compile failed");
		r.rules += f.n_rules;
		for (size_t k = 0; k < f.n_rules; k++)
			r.src_ips += f.rules[k].n_src;
		r.peers += n.len;
		policy_filter_free(&f);
		policy_names_free(&n);
		policy_routes_free(&rt);
	}
	r.compile_s = now_s() - t0;
	r.compile_cpu_s = cpu_s() - r.compile_cpu_s;
	policy_net_free(net);
	return r;
}

/* Every device's filter as text (what the operator sends), two ways: each
 * compiled and dumped on its own (the reference) and from the rules'
 * shared sources (policy_net_filter_dump, what the operator does). CPU
 * seconds of each; the texts must agree. */
static void dump_all(const struct policy *p, size_t devices, size_t users, double *ref_s, double *shared_s,
		     size_t *bytes)
{
	struct policy_net *net = policy_net_new(p);
	struct buf a = BUF_INIT(64u << 20), b = BUF_INIT(64u << 20);
	char name[32];
	double c0;

	if (!net)
		die("out of memory");
	for (size_t i = 0; i < devices; i++)
		add_device(net, i, users, NULL);
	*ref_s = *shared_s = 0;
	*bytes = 0;
	for (size_t i = 0; i < devices; i++) {
		struct policy_filter f;

		snprintf(name, sizeof(name), "dev%zu", i);
		buf_reset(&a);
		buf_reset(&b);
		c0 = cpu_s();
		if (policy_net_filter(net, name, &f) || policy_filter_dump(&f, &a))
			die("compile failed");
		policy_filter_free(&f);
		*ref_s += cpu_s() - c0;
		c0 = cpu_s();
		if (policy_net_filter_dump(net, name, &b))
			die("compile failed");
		*shared_s += cpu_s() - c0;
		if (a.len != b.len || memcmp(a.data, b.data, a.len))
			die("the shared-source filter differs from the reference");
		*bytes += b.len;
	}
	buf_free(&a);
	buf_free(&b);
	policy_net_free(net);
}

/* One device joining a full net: add it, then recompile what it touched. */
static void join(const struct policy *p, size_t devices, size_t users, double *secs,
		 size_t *touched)
{
	struct policy_net *net = policy_net_new(p);
	struct policy_names t;
	double t0;

	if (!net)
		die("out of memory");
	for (size_t i = 0; i < devices; i++)
		add_device(net, i, users, NULL);
	t0 = now_s();
	add_device(net, devices, users, &t);
	for (size_t i = 0; i < t.len; i++) {
		struct policy_filter f;
		struct policy_names n;

		if (policy_net_filter(net, t.v[i], &f) || policy_net_peers(net, t.v[i], &n))
			die("compile failed");
		policy_filter_free(&f);
		policy_names_free(&n);
	}
	*secs = now_s() - t0;
	*touched = t.len;
	policy_names_free(&t);
	policy_net_free(net);
}

int main(int argc, char **argv)
{
	size_t devices = argc > 1 ? strtoul(argv[1], NULL, 10) : 10000;
	size_t rules = argc > 2 ? strtoul(argv[2], NULL, 10) : 1000;
	size_t users = devices * 6 / 10 / 3 + 1, touched;
	struct buf text = BUF_INIT(POLICY_MAX_BYTES);
	struct json_error err;
	struct policy *p;
	struct result big, small;
	double t0, c0, parse_s, parse_cpu_s, join_s, dump_ref_s, dump_shared_s;
	size_t dump_bytes;

	if (devices < 10 || rules < 6)
		die("usage: bench_policy [devices>=10 [rules>=6]]");
	policy_text(&text, users, rules, "");
	if (!text.len)
		die("policy text too large");
	t0 = now_s();
	c0 = cpu_s();
	p = policy_parse((const char *)text.data, text.len, &err);
	parse_s = now_s() - t0;
	parse_cpu_s = cpu_s() - c0;
	if (!p) {
		fprintf(stderr, "bench_policy: %zu:%zu: %s\n", err.line, err.column, err.msg);
		return 1;
	}
	small = compile(p, devices / 10, users);
	big = compile(p, devices, users);
	join(p, devices, users, &join_s, &touched);
	dump_all(p, devices, users, &dump_ref_s, &dump_shared_s, &dump_bytes);

	printf("policy: %zu rules (+1 grant), %zu groups, %zu tags, %zu users; %zu bytes\n", rules,
	       (size_t)GROUPS, (size_t)TAGS, users, text.len);
	printf("%-30s %8s %9s %11s %11s %11s %12s\n", "case", "devices", "index ms",
	       "wall ms", "cpu ms", "cpu us/dev", "filter rules");
	printf("%-30s %8s %9s %11.1f %11.1f %11s %12s\n", "parse the policy (reference)", "-",
	       "-", parse_s * 1e3, parse_cpu_s * 1e3, "-", "-");
	printf("%-30s %8zu %9.1f %11.1f %11.1f %11.1f %12zu\n", "compile a tenth (reference)",
	       devices / 10, small.add_s * 1e3, small.compile_s * 1e3, small.compile_cpu_s * 1e3,
	       small.compile_cpu_s * 1e6 / (double)(devices / 10), small.rules);
	printf("%-30s %8zu %9.1f %11.1f %11.1f %11.1f %12zu\n", "compile all", devices,
	       big.add_s * 1e3, big.compile_s * 1e3, big.compile_cpu_s * 1e3,
	       big.compile_cpu_s * 1e6 / (double)devices, big.rules);
	printf("\nall devices: %zu source prefixes in filters, %zu visible-peer pairs\n", big.src_ips,
	       big.peers);
	printf("every filter as text (%.1f MB): compiled and dumped per device %.1f ms CPU; from shared rule sources "
	       "(policy_net_filter_dump) %.1f ms CPU (%.1fx)\n",
	       dump_bytes / 1e6, dump_ref_s * 1e3, dump_shared_s * 1e3, dump_shared_s > 0 ? dump_ref_s / dump_shared_s : 0);
	printf("ratio compile all / compile a tenth (cpu): %.1fx for 10x the devices\n",
	       big.compile_cpu_s / small.compile_cpu_s);
	printf("one device joining %zu: add + recompile the %zu it touches: %.2f ms (%.4f of a full compile)\n",
	       devices, touched, join_s * 1e3, join_s / big.compile_s);
	policy_free(p);
	buf_free(&text);
	return 0;
}
