/* coord_bench: N simulated agents (in-process control clients, no TUN)
 * against one knit-operator, as issue 5 asks:
 *
 *   1. N Devices are created through the API (the tailnet's existing
 *      nodes) and get their addresses from the operator;
 *   2. N clients handshake and open their map streams, in batches, each
 *      waiting for its full netmap (which holds the other N - 1 peers);
 *   3. once no record has arrived for 3 s (the connect burst is
 *      through), the operator's RSS is read (its peak while the streams
 *      connected is reported too);
 *   4. new agents register with an auth key through the coordination API,
 *      one at a time with the tailnet at rest in between (--repeat, 5), and
 *      the time until each one's node key reaches every one of the N map
 *      streams is measured (first, median, 99th percentile, last); the
 *      result is the median repetition by "last".
 *
 * With --policy-rules R (issue 16's benchmark a), the Devices get users
 * and tags, a Policy of R rules (bench_policy's mix, lib/policy) is put in
 * force before the streams open, and step 4 is a policy change instead of
 * a registration: the Policy is updated through the API with one more rule
 * whose destination is every device ("*:PORT", a new PORT each time), and
 * the time until every stream has a packetFilter naming PORT is measured
 * (--repeat times). For reference, the same run compiles that policy for
 * the same devices in this process (lib/policy: every device's filter and
 * peers) and prints its CPU time, and measures one change that touches a
 * few devices only (destination one tag), until those streams have it.
 *
 * The clients keep no netmaps: each record's text is scanned (not parsed)
 * for the end of the full netmap and for the new key, and dropped, so one
 * process can hold 10,000 of them. Their processing is
 * serial on one loop, so "last" includes the clients' own time to open and
 * parse one delta each; "first" is the server's time to first delivery.
 *
 *   coord_bench --server URL --control-key ctrlkey:HEX --authkey KEY
 *               --operator-pid PID --n N [--batch B] [--prefix P] [--repeat K]
 * (KUBECONFIG selects the API server.)
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "buf.h"
#include "control/channel.h"
#include "control/client.h"
#include "control/messages.h"
#include "http.h"
#include "policy/policy.h"
#include "../policy/policygen.h"
#include "json.h"
#include "kube/client.h"
#include "kube/config.h"
#include "log.h"
#include "loop.h"
#include "wg/aead.h"
#include "wg/noise.h"

#define MAX_REPS 21

static const struct kube_resource res_devices = { "knit.dev", "v1alpha1", "devices", "Device", false };
static const struct kube_resource res_policies = { "knit.dev", "v1alpha1", "policies", "Policy", false };

/* The policy mode's tailnet, as bench/policy/bench_policy.c builds it:
 * users own 3 devices each (60 % of them), 200 tags on the rest, 100
 * groups of 10 users. */
#define P_TAGS 200
#define P_GROUPS 100
#define P_GROUP_SIZE 10

struct agent {
	struct control_client *ctl;
	uint8_t machine[32];
	bool has_full;
	bool wants; /* policy mode: its filter must change this time */
	uint64_t seen_at; /* when the new key arrived, µs; 0: not yet */
};

static struct {
	const char *server, *authkey, *prefix;
	uint8_t control_key[32];
	int n, batch, operator_pid, reps;
	int policy_rules; /* 0: the registration benchmark */
	size_t users;
	char marker[48]; /* policy mode: what the new filter holds */
	int want; /* streams that must see it */
	int others; /* records to streams whose filter does not change */
	struct loop *loop;
	struct agent *agents;
	int connected, full;
	char new_key[80]; /* "nodekey:..." of the new agent */
	uint64_t t0, t_reply, t_progress;
	uint64_t last_record; /* when any stream last got a record, µs */
	long peak_rss_kb; /* the operator's, sampled while streams connect */
	int seen;
	bool done;
	struct kube_client *kube;
	/* One HTTP client for all agents: one connection cache, so each agent
	 * holds one socket (its stream), not also an idle one per agent. */
	struct http_client *http;
} B;

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static long rss_kb(int pid)
{
	char path[64], line[256];
	long kb = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

/* ---- phase 1: the Devices, through the API from worker threads ---- */

struct creator {
	int from, to;
	int failed;
};

static int threads_done; /* atomic: creator threads finished */

static void *create_devices(void *arg)
{
	struct creator *cr = arg;

	for (int i = cr->from; i < cr->to; i++) {
		uint8_t node[32], disco[32], pub[32];
		char mk[80], nk[80], dk[80], doc[1024], ident[64] = "";
		struct json_error je;
		struct kube_result r;
		struct json *dev;

		channel_public_key(pub, B.agents[i].machine);
		channel_key_format(pub, "mkey:", mk, sizeof(mk));
		randombytes_buf(node, sizeof(node));
		randombytes_buf(disco, sizeof(disco));
		channel_key_format(node, "nodekey:", nk, sizeof(nk));
		channel_key_format(disco, "discokey:", dk, sizeof(dk));
		if (B.policy_rules && i % 10 < 6) /* as bench_policy: user k/3 owns the k-th user device */
			snprintf(ident, sizeof(ident), ",\"user\":\"user%zu@example.com\"",
				 ((size_t)(i / 10) * 6 + (size_t)(i % 10)) / 3 % B.users);
		else if (B.policy_rules)
			snprintf(ident, sizeof(ident), ",\"tags\":[\"tag:t%d\"]", i % TAGS);
		snprintf(doc, sizeof(doc),
			 "{\"apiVersion\":\"knit.dev/v1alpha1\",\"kind\":\"Device\",\"metadata\":{\"name\":\"%s-%d\","
			 "\"labels\":{\"knit.dev/bench\":\"%s\"}},\"spec\":{\"tailnet\":\"default\",\"hostname\":\"%s-%d\","
			 "\"machineKey\":\"%s\",\"nodeKey\":\"%s\",\"discoKey\":\"%s\"%s}}",
			 B.prefix, i, B.prefix, B.prefix, i, mk, nk, dk, ident);
		dev = json_parse(doc, strlen(doc), &je);
		if (!dev || kube_create(B.kube, &res_devices, NULL, dev, &r) || !kube_ok(&r))
			cr->failed++;
		kube_result_clear(&r);
		json_free(dev);
	}
	__atomic_add_fetch(&threads_done, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static int count_ready(void)
{
	/* From the API server's watch cache (resourceVersion 0), in one page:
	 * a paged list is a read of etcd, and at 10,000 Devices a poll each
	 * second kept the API server busy with it. */
	struct kube_list_opts o = { .label_selector = NULL, .resource_version = "0" };
	char sel[128];
	struct kube_result r;
	struct json *items;
	int ready = 0;

	snprintf(sel, sizeof(sel), "knit.dev/bench=%s", B.prefix);
	o.label_selector = sel;
	if (kube_list_all(B.kube, &res_devices, NULL, &o, &r) || !kube_ok(&r)) {
		kube_result_clear(&r);
		return -1;
	}
	items = json_get(r.obj, "items");
	for (size_t i = 0; i < json_array_len(items); i++)
		if (json_array_len(json_path(json_array_at(items, i), "status", "addresses", NULL)) == 2)
			ready++;
	kube_result_clear(&r);
	return ready;
}

struct ready_poll {
	int want, ready;
	bool done;
};

/* Polls the Devices until want have addresses (15 minutes at most). */
static void *poll_ready(void *arg)
{
	struct ready_poll *p = arg;
	uint64_t deadline = now_us() + 900ull * 1000000u;

	while (now_us() < deadline) {
		p->ready = count_ready();
		if (p->ready >= p->want)
			break;
		/* Each poll lists them all: every 1 s up to 2,000, less often past. */
		struct timespec ts = { .tv_sec = 1 + p->want / 2000 };
		nanosleep(&ts, NULL);
	}
	__atomic_store_n(&p->done, true, __ATOMIC_SEQ_CST);
	return NULL;
}

/* ---- phases 2-4: the clients, on the loop ---- */

/* The clients only look for two things, so they scan the record text
 * instead of parsing it: the end of their full netmap (a record with
 * "more":false; it comes in pieces) and the new agent's node key. */
static bool on_record_text(struct control_client *c, const char *text, size_t len, void *arg)
{
	struct agent *a = arg;

	B.last_record = now_us();
	if (!a->has_full) {
		if (memmem(text, len, "\"more\":false", sizeof("\"more\":false") - 1)) {
			a->has_full = true;
			B.full++;
		}
		return false;
	}
	if (B.marker[0]) {
		if (!a->wants)
			B.others++;
		else if (!a->seen_at && memmem(text, len, B.marker, strlen(B.marker))) {
			a->seen_at = now_us();
			if (++B.seen == B.want)
				loop_stop(B.loop);
		}
		return false;
	}
	if (B.new_key[0] && !a->seen_at && memmem(text, len, B.new_key, strlen(B.new_key))) {
		a->seen_at = now_us();
		if (++B.seen == B.n && B.t_reply)
			loop_stop(B.loop);
	}
	return false;
}

static bool on_record(struct control_client *c, const struct json *rec, void *arg)
{
	return true; /* never reached: on_record_text skips every record */
}

static int start_agent(int i)
{
	struct agent *a = &B.agents[i];
	struct control_client_opts o = {
		.server_url = B.server,
		.machine_priv = a->machine,
		.control_key = B.control_key,
		.on_record = on_record,
		.on_record_text = on_record_text,
		.arg = a,
		.http = B.http,
		.stall_timeout_ms = 600000,
	};
	struct json *req = json_new_object();
	int err;

	json_object_set(req, "type", json_new_string("map"));
	json_object_set(req, "endpoints", json_new_array());
	err = control_client_new(B.loop, &o, &a->ctl);
	if (!err)
		err = control_client_map_start(a->ctl, req);
	json_free(req);
	return err;
}

static void on_tick(struct loop *loop, struct loop_timer *t, void *arg)
{
	/* Batches: the next one starts when the previous got its netmaps. */
	while (B.connected < B.n && B.connected - B.full < B.batch) {
		if (start_agent(B.connected)) {
			fprintf(stderr, "coord_bench: cannot start agent %d\n", B.connected);
			exit(1);
		}
		B.connected++;
	}
	if (B.full == B.n) {
		loop_stop(loop);
		return;
	}
	long kb = rss_kb(B.operator_pid);
	if (kb > B.peak_rss_kb)
		B.peak_rss_kb = kb;
	if (now_us() - B.t_progress > 10000000) {
		B.t_progress = now_us();
		fprintf(stderr, "coord_bench: %d streams started, %d with their full netmap, operator RSS %.0f MB\n",
			B.connected, B.full, rss_kb(B.operator_pid) / 1024.0);
	}
	loop_timer_arm(t, 20);
}

static void registered(struct control_client *c, int err, const struct json *resp, const char *why, void *arg)
{
	const char *code, *msg;

	if (err || messages_error(resp, &code, &msg)) {
		fprintf(stderr, "coord_bench: the new agent could not register: %s\n",
			err ? (why ? why : "?") : msg);
		exit(1);
	}
	B.t_reply = now_us();
	if (B.seen == B.n)
		loop_stop(B.loop);
}

/* CPU time used so far by pid (0: this process), ms. */
static double cpu_ms(int pid)
{
	char path[64];
	unsigned long ut = 0, st = 0;
	FILE *f;

	snprintf(path, sizeof(path), pid ? "/proc/%d/stat" : "/proc/self/stat", pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	/* Fields 14 and 15 (utime, stime), after the ")" that ends comm. */
	if (fscanf(f, "%*d (%*[^)]) %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		ut = st = 0;
	fclose(f);
	return (double)(ut + st) * 1000.0 / (double)sysconf(_SC_CLK_TCK);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void on_deadline(struct loop *loop, struct loop_timer *t, void *arg)
{
	fprintf(stderr, "coord_bench: deadline: %d of %d streams saw the new device\n", B.seen, B.n);
	loop_stop(loop);
}

/* ---- policy mode ---- */

struct apply {
	char extra[160]; /* the rule added to the base policy ("": none) */
	uint64_t t0, t_done; /* the API call's start and end, µs */
	int64_t generation;
	int err;
	bool done;
};

static int64_t policy_generation(bool applied)
{
	struct kube_result r;
	int64_t g = -1;

	if (!kube_get(B.kube, &res_policies, NULL, "bench", &r) && kube_ok(&r))
		g = json_int(applied ? json_path(r.obj, "status", "appliedGeneration", NULL)
				     : json_path(r.obj, "metadata", "generation", NULL), -1);
	kube_result_clear(&r);
	return g;
}

/* Helper thread (the kube client needs the loop running): the Policy
 * "bench" with the base rules and ap->extra, by server-side apply. */
static void *apply_policy(void *arg)
{
	struct apply *ap = arg;
	struct buf text = BUF_INIT(POLICY_MAX_BYTES);
	struct json *doc = json_new_object(), *meta = json_new_object(), *spec = json_new_object();
	struct kube_result r = { 0 };
	int err = 0;

	policy_text(&text, B.users, (size_t)B.policy_rules, ap->extra);
	json_put_str(doc, "apiVersion", "knit.dev/v1alpha1", &err);
	json_put_str(doc, "kind", "Policy", &err);
	json_put_str(meta, "name", "bench", &err);
	json_put(doc, "metadata", meta, &err);
	json_put_str(spec, "tailnet", "default", &err);
	json_put(spec, "policy", json_new_stringn((const char *)text.data, text.len), &err);
	json_put(doc, "spec", spec, &err);
	ap->t0 = now_us();
	if (!err && !text.len)
		err = -ENOSPC;
	if (!err)
		err = kube_patch(B.kube, &res_policies, NULL, "bench", KUBE_PATCH_APPLY, doc, false, &r);
	if (!err && !kube_ok(&r)) {
		fprintf(stderr, "coord_bench: applying the policy: HTTP %ld %s\n", r.status, r.message);
		err = -EIO;
	}
	ap->t_done = now_us();
	ap->generation = err ? -1 : json_int(json_path(r.obj, "metadata", "generation", NULL), -1);
	ap->err = err;
	kube_result_clear(&r);
	json_free(doc);
	buf_free(&text);
	__atomic_store_n(&ap->done, true, __ATOMIC_SEQ_CST);
	return NULL;
}

struct wait_applied {
	int64_t generation;
	bool ok, done;
};

static void *wait_applied(void *arg)
{
	struct wait_applied *w = arg;
	uint64_t deadline = now_us() + 300ull * 1000000u;

	while (now_us() < deadline && !(w->ok = policy_generation(true) >= w->generation)) {
		struct timespec ts = { .tv_nsec = 200000000 };
		nanosleep(&ts, NULL);
	}
	__atomic_store_n(&w->done, true, __ATOMIC_SEQ_CST);
	return NULL;
}

/* Puts the base policy in force (before the streams open). */
static int policy_initial(void)
{
	struct apply ap = { .extra = "" };
	struct wait_applied w = { 0 };
	pthread_t th;
	uint64_t t = now_us();

	pthread_create(&th, NULL, apply_policy, &ap);
	while (!__atomic_load_n(&ap.done, __ATOMIC_SEQ_CST))
		loop_run_once(B.loop, 50);
	pthread_join(th, NULL);
	if (ap.err)
		return ap.err;
	w.generation = ap.generation;
	pthread_create(&th, NULL, wait_applied, &w);
	while (!__atomic_load_n(&w.done, __ATOMIC_SEQ_CST))
		loop_run_once(B.loop, 50);
	pthread_join(th, NULL);
	printf("policy of %d rules in force after %.1f s\n", B.policy_rules, (double)(now_us() - t) / 1e6);
	fflush(stdout);
	return w.ok ? 0 : -ETIMEDOUT;
}

/* The reference: the same policy compiled here for as many devices, every
 * device's filter (as JSON) and peers: what a change that touches every
 * device costs the compiler alone. CPU ms. */
static double compile_reference(size_t *filter_bytes)
{
	struct buf text = BUF_INIT(POLICY_MAX_BYTES), f = BUF_INIT(64u << 20);
	struct policy_net *net;
	struct json_error je;
	struct policy *p;
	struct timespec a, b;
	char name[32], user[48], tag[32];
	const char *tags[1] = { tag };

	policy_text(&text, B.users, (size_t)B.policy_rules, "");
	p = policy_parse((const char *)text.data, text.len, &je);
	net = p ? policy_net_new(p) : NULL;
	*filter_bytes = 0;
	for (int i = 0; net && i < B.n; i++) {
		struct policy_device d = { .name = name, .n_addrs = 1 };

		snprintf(name, sizeof(name), "%s-%d", B.prefix, i);
		d.addrs[0] = (struct policy_prefix){ .family = 4, .bits = 32,
						     .addr = { 100, (uint8_t)(64 + (i >> 16)), (uint8_t)(i >> 8), (uint8_t)i } };
		if (i % 10 < 6) {
			snprintf(user, sizeof(user), "user%zu@example.com", ((size_t)(i / 10) * 6 + (size_t)(i % 10)) / 3 % B.users);
			d.user = user;
		} else {
			snprintf(tag, sizeof(tag), "tag:t%d", i % TAGS);
			d.tags = tags;
			d.n_tags = 1;
		}
		policy_net_add(net, &d, NULL);
	}
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
	for (int i = 0; net && i < B.n; i++) {
		struct policy_filter pf;
		struct policy_names pn;

		snprintf(name, sizeof(name), "%s-%d", B.prefix, i);
		if (!policy_net_filter(net, name, &pf) && !policy_filter_dump(&pf, &f))
			*filter_bytes += f.len;
		buf_reset(&f);
		policy_filter_free(&pf);
		if (!policy_net_peers(net, name, &pn))
			policy_names_free(&pn);
	}
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &b);
	policy_net_free(net);
	policy_free(p);
	buf_free(&text);
	buf_free(&f);
	return (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
}

/* One policy change: extra added to the base rules; streams whose agent
 * wants() is true must get a filter holding marker. Prints and returns
 * the time from the API call until the last of them had it, ms. */
static double policy_change(const char *label, const char *extra, const char *marker, bool (*wants)(int))
{
	struct apply ap = { 0 };
	struct loop_timer *dl = loop_timer_new(B.loop, on_deadline, NULL);
	pthread_t th;
	double cpu_op = cpu_ms(B.operator_pid), cpu_me = cpu_ms(0), last = -1, first = -1;
	uint64_t t;

	snprintf(ap.extra, sizeof(ap.extra), "%s", extra);
	snprintf(B.marker, sizeof(B.marker), "%s", marker);
	B.want = B.seen = B.others = 0;
	for (int i = 0; i < B.n; i++) {
		B.agents[i].seen_at = 0;
		B.agents[i].wants = wants(i);
		B.want += B.agents[i].wants;
	}
	loop_timer_arm(dl, 120000);
	pthread_create(&th, NULL, apply_policy, &ap);
	loop_run(B.loop);
	while (!__atomic_load_n(&ap.done, __ATOMIC_SEQ_CST))
		loop_run_once(B.loop, 50);
	pthread_join(th, NULL);
	loop_timer_free(dl);
	for (int i = 0; i < B.n; i++) {
		if (!B.agents[i].seen_at)
			continue;
		t = B.agents[i].seen_at - ap.t0;
		last = t / 1e3 > last ? t / 1e3 : last;
		first = first < 0 || t / 1e3 < first ? t / 1e3 : first;
	}
	printf("%-34s streams=%d reached=%d api_ms=%.1f first_ms=%.1f last_ms=%.1f records_to_untouched=%d "
	       "operator_cpu_ms=%.0f clients_cpu_ms=%.0f\n",
	       label, B.want, B.seen, (ap.t_done - ap.t0) / 1e3, first, last, B.others, cpu_ms(B.operator_pid) - cpu_op,
	       cpu_ms(0) - cpu_me);
	fflush(stdout);
	B.marker[0] = '\0';
	return B.seen == B.want && !ap.err ? last : -1;
}

static bool every_device(int i)
{
	return true;
}

static bool tag_t7(int i)
{
	return i % 10 >= 6 && i % TAGS == 7;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int policy_phase(long rss)
{
	double all[MAX_REPS], ref, few;
	size_t fbytes;
	char extra[160], marker[48];
	int ok = 1;

	for (int r = 0; r < B.reps; r++) {
		uint64_t t = now_us();

		while (now_us() - B.last_record < 2000000 && now_us() - t < 60000000)
			loop_run_once(B.loop, 100);
		snprintf(extra, sizeof(extra), "{\"action\": \"accept\", \"src\": [\"192.0.2.0/24\"], \"dst\": [\"*:%d\"]}",
			 60000 + r);
		snprintf(marker, sizeof(marker), "\"first\":%d,", 60000 + r);
		all[r] = policy_change("change touching every device:", extra, marker, every_device);
		ok &= all[r] >= 0;
	}
	/* The few-devices reference is a change from a policy that differs
	 * in that rule alone: first the rule goes to tag:t7 (a change that
	 * touches everyone, as the rule to "*" goes), then its port changes. */
	for (int k = 0; k < 2; k++) {
		uint64_t t = now_us();

		while (now_us() - B.last_record < 2000000 && now_us() - t < 60000000)
			loop_run_once(B.loop, 100);
		snprintf(extra, sizeof(extra),
			 "{\"action\": \"accept\", \"src\": [\"192.0.2.0/24\"], \"dst\": [\"tag:t7:%d\"]}", 61000 + k);
		snprintf(marker, sizeof(marker), "\"first\":%d,", 61000 + k);
		few = policy_change(k ? "reference: change touching tag:t7:" : "(to tag:t7, touching every device)", extra,
				    marker, tag_t7);
	}
	ref = compile_reference(&fbytes);
	qsort(all, (size_t)B.reps, sizeof(*all), cmp_double);
	printf("reference: compiling the policy for all %d devices here (filters as JSON, %.1f MB, and peers): %.0f ms CPU\n",
	       B.n, fbytes / 1e6, ref);
	printf("RESULT n=%d rules=%d policy_change_ms=%.1f few_ms=%.1f compile_ref_ms=%.0f operator_rss_mb=%.1f reps=%d\n",
	       B.n, B.policy_rules, all[B.reps / 2], few, ref, rss / 1024.0, B.reps);
	fflush(stdout);
	return ok && few >= 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "server", required_argument, NULL, 's' }, { "control-key", required_argument, NULL, 'k' },
		{ "authkey", required_argument, NULL, 'a' }, { "operator-pid", required_argument, NULL, 'p' },
		{ "n", required_argument, NULL, 'n' }, { "batch", required_argument, NULL, 'b' },
		{ "prefix", required_argument, NULL, 'x' }, { "repeat", required_argument, NULL, 'r' },
		{ "policy-rules", required_argument, NULL, 'P' },
		{ NULL, 0, NULL, 0 },
	};
	struct kube_config cfg;
	char err[256];
	int c, nthreads = 8;
	uint64_t t;

	B.batch = 200;
	B.reps = 5;
	B.prefix = "bench";
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 's': B.server = optarg; break;
		case 'k':
			if (!channel_key_parse(optarg, "ctrlkey:", B.control_key)) {
				fprintf(stderr, "coord_bench: bad --control-key\n");
				return 2;
			}
			break;
		case 'a': B.authkey = optarg; break;
		case 'p': B.operator_pid = atoi(optarg); break;
		case 'n': B.n = atoi(optarg); break;
		case 'b': B.batch = atoi(optarg); break;
		case 'x': B.prefix = optarg; break;
		case 'P': B.policy_rules = atoi(optarg); break;
		case 'r':
			B.reps = atoi(optarg);
			if (B.reps < 1 || B.reps > MAX_REPS) {
				fprintf(stderr, "coord_bench: --repeat must be 1..%d\n", MAX_REPS);
				return 2;
			}
			break;
		default: return 2;
		}
	}
	if (!B.server || !B.authkey || !B.operator_pid || B.n < 1) {
		fprintf(stderr, "usage: coord_bench --server URL --control-key ctrlkey:HEX --authkey KEY "
				"--operator-pid PID --n N [--batch B] [--prefix P] [--repeat K] [--policy-rules R]\n");
		return 2;
	}
	if (B.policy_rules && B.policy_rules < 6) {
		fprintf(stderr, "coord_bench: --policy-rules must be at least 6\n");
		return 2;
	}
	B.users = (size_t)B.n * 6 / 10 / 3 + 1;
	log_init("coord_bench", LOG_WARN);
	aead_init(AEAD_IMPL_AUTO);
	B.loop = loop_new();
	B.http = http_client_new(B.loop);
	if (kube_config_load(&cfg, NULL, err, sizeof(err))) {
		fprintf(stderr, "coord_bench: %s\n", err);
		return 1;
	}
	B.kube = kube_client_new(B.loop, &cfg);
	kube_config_free(&cfg);
	B.agents = calloc((size_t)B.n + MAX_REPS, sizeof(*B.agents));
	for (int i = 0; i < B.n + MAX_REPS; i++)
		channel_keygen(B.agents[i].machine);

	/* 1. Devices, from worker threads; the loop carries their requests. */
	t = now_us();
	pthread_t th[8];
	struct creator cr[8];
	for (int i = 0; i < nthreads; i++) {
		cr[i] = (struct creator){ .from = B.n * i / nthreads, .to = B.n * (i + 1) / nthreads };
		pthread_create(&th[i], NULL, create_devices, &cr[i]);
	}
	/* The blocking client needs the loop running while they work. */
	struct loop_timer *poll = NULL;
	while (__atomic_load_n(&threads_done, __ATOMIC_SEQ_CST) < nthreads)
		loop_run_once(B.loop, 50);
	for (int i = 0; i < nthreads; i++)
		pthread_join(th[i], NULL);
	int failed = 0;
	for (int i = 0; i < nthreads; i++)
		failed += cr[i].failed;
	printf("devices created: %d (%d failed) in %.1f s\n", B.n - failed, failed, (double)(now_us() - t) / 1e6);
	fflush(stdout);

	/* Wait for addresses: a helper thread polls, the loop serves it. */
	struct ready_poll rp = { .want = B.n - failed };
	pthread_t pt;
	pthread_create(&pt, NULL, poll_ready, &rp);
	while (!__atomic_load_n(&rp.done, __ATOMIC_SEQ_CST))
		loop_run_once(B.loop, 50);
	pthread_join(pt, NULL);
	printf("devices with addresses: %d after %.1f s\n", rp.ready, (double)(now_us() - t) / 1e6);
	fflush(stdout);

	if (B.policy_rules && policy_initial()) {
		fprintf(stderr, "coord_bench: the policy did not take effect\n");
		return 1;
	}

	/* 2. The map streams, in batches. */
	t = now_us();
	poll = loop_timer_new(B.loop, on_tick, NULL);
	loop_timer_arm(poll, 0);
	loop_run(B.loop);
	B.n = B.full; /* streams that got their netmap */
	printf("map streams with their full netmap: %d in %.1f s\n", B.full, (double)(now_us() - t) / 1e6);
	fflush(stdout);

	/* 3. Settle: the measurement is of a tailnet at rest, so wait until
	 * the connect burst's last deltas (online flags, once a second) and
	 * the operator's status writes are through: no record for 3 s (at
	 * most 2 minutes). Then the RSS with N streams open. */
	t = now_us();
	while (now_us() - B.last_record < 3000000 && now_us() - t < 120000000)
		loop_run_once(B.loop, 100);
	printf("settled after %.1f s\n", (double)(now_us() - t) / 1e6);
	fflush(stdout);
	long rss = rss_kb(B.operator_pid);

	if (B.policy_rules)
		return policy_phase(rss);

	/* 4. New agents register, one at a time (each after the tailnet is at
	 * rest again); each one's key must reach every stream. The result is
	 * the median repetition by last_ms; every one is printed. */
	struct rep { double reg, first, p50, p99, last; int reached; } reps[MAX_REPS];
	uint64_t *lat = calloc((size_t)B.n + 1, sizeof(*lat));
	int ok = 1;
	for (int r = 0; r < B.reps; r++) {
		struct agent *na = &B.agents[B.n + r];
		uint8_t node[32], disco[32], pub[32];
		struct register_request rq = { 0 };
		struct control_client_opts o = { .server_url = B.server, .machine_priv = na->machine,
						 .control_key = B.control_key, .on_record = on_record,
						 .on_record_text = on_record_text, .arg = na, .http = B.http };
		char host[32];

		if (r > 0) {
			t = now_us();
			while (now_us() - B.last_record < 2000000 && now_us() - t < 60000000)
				loop_run_once(B.loop, 100);
		}
		for (int i = 0; i < B.n; i++)
			B.agents[i].seen_at = 0;
		B.seen = 0;
		B.t_reply = 0;
		randombytes_buf(node, sizeof(node));
		randombytes_buf(disco, sizeof(disco));
		crypto_scalarmult_base(pub, node);
		memcpy(rq.node_key, pub, 32);
		crypto_scalarmult_base(rq.disco_key, disco);
		channel_key_format(pub, "nodekey:", B.new_key, sizeof(B.new_key));
		snprintf(host, sizeof(host), "bench-new-%d", r);
		rq.auth_key = (char *)B.authkey;
		rq.hostname = host;
		struct json *req = register_request_to_json(&rq);
		control_client_new(B.loop, &o, &na->ctl);
		struct loop_timer *dl = loop_timer_new(B.loop, on_deadline, NULL);
		loop_timer_arm(dl, 120000);
		double cpu_op = cpu_ms(B.operator_pid), cpu_me = cpu_ms(0);
		B.t0 = now_us();
		control_client_call(na->ctl, req, registered, NULL, NULL);
		messages_json_free_secret(req);
		loop_run(B.loop);
		loop_timer_free(dl);

		int k = 0;
		for (int i = 0; i < B.n; i++)
			if (B.agents[i].seen_at)
				lat[k++] = B.agents[i].seen_at - B.t0;
		qsort(lat, (size_t)k, sizeof(*lat), cmp_u64);
		reps[r] = (struct rep){
			.reg = B.t_reply ? (B.t_reply - B.t0) / 1e3 : -1, .reached = k,
			.first = k ? lat[0] / 1e3 : -1, .p50 = k ? lat[k / 2] / 1e3 : -1,
			.p99 = k ? lat[k * 99 / 100 < k ? k * 99 / 100 : k - 1] / 1e3 : -1, .last = k ? lat[k - 1] / 1e3 : -1,
		};
		/* CPU each side spent on this registration's way: which one is the bottleneck. */
		printf("rep %d: reached=%d register_ms=%.1f first_ms=%.1f p50_ms=%.1f p99_ms=%.1f last_ms=%.1f "
		       "operator_cpu_ms=%.0f clients_cpu_ms=%.0f\n", r, k,
		       reps[r].reg, reps[r].first, reps[r].p50, reps[r].p99, reps[r].last,
		       cpu_ms(B.operator_pid) - cpu_op, cpu_ms(0) - cpu_me);
		fflush(stdout);
		if (k != B.n)
			ok = 0;
	}
	/* The median repetition by last_ms (all reached, or the run failed). */
	int order[MAX_REPS];
	for (int r = 0; r < B.reps; r++)
		order[r] = r;
	for (int a = 1; a < B.reps; a++)
		for (int b = a; b > 0 && reps[order[b]].last < reps[order[b - 1]].last; b--) {
			int x = order[b];
			order[b] = order[b - 1];
			order[b - 1] = x;
		}
	struct rep *m = &reps[order[B.reps / 2]];
	/* register_ms: until the new agent's register call returned (it waits
	 * for its addresses); first/p50/p99/last: until its key reached that
	 * many streams; spread_ms = last - first, the fan-out itself. */
	printf("RESULT n=%d reached=%d register_ms=%.1f first_ms=%.1f p50_ms=%.1f p99_ms=%.1f last_ms=%.1f spread_ms=%.1f "
	       "operator_rss_mb=%.1f peak_rss_mb=%.1f reps=%d\n",
	       B.n, m->reached, m->reg, m->first, m->p50, m->p99, m->last, m->last - m->first, rss / 1024.0,
	       (B.peak_rss_kb > rss ? B.peak_rss_kb : rss) / 1024.0, B.reps);
	fflush(stdout);
	/* Tear down quickly: the process exits; the OS closes the streams. */
	return ok ? 0 : 1;
}
