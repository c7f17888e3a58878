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
#include "json.h"
#include "kube/client.h"
#include "kube/config.h"
#include "log.h"
#include "loop.h"
#include "wg/aead.h"
#include "wg/noise.h"

#define MAX_REPS 21

static const struct kube_resource res_devices = { "knit.dev", "v1alpha1", "devices", "Device", false };

struct agent {
	struct control_client *ctl;
	uint8_t machine[32];
	bool has_full;
	uint64_t seen_at; /* when the new key arrived, µs; 0: not yet */
};

static struct {
	const char *server, *authkey, *prefix;
	uint8_t control_key[32];
	int n, batch, operator_pid, reps;
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
		char mk[80], nk[80], dk[80], doc[1024];
		struct json_error je;
		struct kube_result r;
		struct json *dev;

		channel_public_key(pub, B.agents[i].machine);
		channel_key_format(pub, "mkey:", mk, sizeof(mk));
		randombytes_buf(node, sizeof(node));
		randombytes_buf(disco, sizeof(disco));
		channel_key_format(node, "nodekey:", nk, sizeof(nk));
		channel_key_format(disco, "discokey:", dk, sizeof(dk));
		snprintf(doc, sizeof(doc),
			 "{\"apiVersion\":\"knit.dev/v1alpha1\",\"kind\":\"Device\",\"metadata\":{\"name\":\"%s-%d\","
			 "\"labels\":{\"knit.dev/bench\":\"%s\"}},\"spec\":{\"tailnet\":\"default\",\"hostname\":\"%s-%d\","
			 "\"machineKey\":\"%s\",\"nodeKey\":\"%s\",\"discoKey\":\"%s\"}}",
			 B.prefix, i, B.prefix, B.prefix, i, mk, nk, dk);
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
	struct kube_list_opts o = { .label_selector = NULL, .limit = 500 };
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
		struct timespec ts = { .tv_sec = 1 };
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

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "server", required_argument, NULL, 's' }, { "control-key", required_argument, NULL, 'k' },
		{ "authkey", required_argument, NULL, 'a' }, { "operator-pid", required_argument, NULL, 'p' },
		{ "n", required_argument, NULL, 'n' }, { "batch", required_argument, NULL, 'b' },
		{ "prefix", required_argument, NULL, 'x' }, { "repeat", required_argument, NULL, 'r' },
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
				"--operator-pid PID --n N [--batch B] [--prefix P] [--repeat K]\n");
		return 2;
	}
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
