#include "kube/lease.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "json.h"
#include "kube/client.h"
#include "log.h"
#include "loop.h"

#define DEFAULT_DURATION_MS 15000u
#define DEFAULT_DEADLINE_MS 10000u
#define DEFAULT_RETRY_MS 2000u

/* One try: GET, then POST or PUT. Owned by the request in flight; an
 * attempt whose lease was freed has l == NULL and only frees itself. */
struct attempt {
	struct lease *l;
	uint64_t started; /* loop clock */
};

struct lease {
	struct kube_client *c;
	struct loop *loop;
	char *ns, *name, *identity;
	uint64_t duration_ms, deadline_ms, retry_ms;
	lease_cb on_started, on_stopped;
	lease_leader_cb on_new_leader;
	void *arg;

	/* Loop thread only: */
	struct loop_timer *tick; /* next try; completes a release */
	struct loop_timer *deadline; /* renew deadline while leading */
	struct attempt *inflight;
	struct json *obj; /* last Lease read or written */
	struct json *observed; /* the holder's record (spec) as last seen changing */
	uint64_t observed_at; /* our clock when it last changed */
	char *leader; /* last observed holder, "" for none */
	unsigned fail_streak;
	bool started, releasing, release_writing;
	lease_cb release_done;
	void *release_arg;

	/* Any thread: */
	atomic_bool leading;
	atomic_ullong transitions, acquisitions, step_downs, failures;
};

static void try_acquire_or_renew(struct lease *l);
static void do_release(struct lease *l);

/* metav1.MicroTime: RFC 3339 with microseconds, UTC. */
static void micro_time(char *out, size_t len)
{
	struct timespec ts;
	struct tm tm;
	char base[32];

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(base, sizeof(base), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, len, "%.19s.%06dZ", base, (int)((ts.tv_nsec / 1000) % 1000000));
}

static int set_str(struct json *obj, const char *key, const char *v)
{
	return json_object_set(obj, key, json_new_string(v));
}

static int set_int(struct json *obj, const char *key, int64_t v)
{
	return json_object_set(obj, key, json_new_int(v));
}

static const char *spec_holder(const struct json *spec)
{
	const char *h = json_str(json_get(spec, "holderIdentity"));

	return h ? h : "";
}

static void report_leader(struct lease *l, const char *holder)
{
	char *copy;

	if (strcmp(holder, l->leader) == 0)
		return;
	copy = strdup(holder);
	if (!copy)
		return; /* reported on the next observation */
	free(l->leader);
	l->leader = copy;
	l->transitions++;
	log_info("lease holder changed", "lease=%s/%s holder=%s", l->ns, l->name, *copy ? copy : "-");
	if (*copy && l->on_new_leader)
		l->on_new_leader(l, copy, l->arg);
}

/* Remembers when the holder's record last changed, on our clock: the only
 * clock we may compare with our own. */
static void observe(struct lease *l, const struct json *spec)
{
	struct json *copy;

	if (l->observed && json_equal(l->observed, spec))
		return;
	copy = json_clone(spec);
	if (!copy)
		return; /* treated as unchanged: only delays a takeover */
	json_free(l->observed);
	l->observed = copy;
	l->observed_at = loop_now(l->loop);
}

static void step_down(struct lease *l, const char *why)
{
	if (!atomic_exchange(&l->leading, false))
		return;
	l->step_downs++;
	loop_timer_disarm(l->deadline);
	log_msg(strcmp(why, "release") == 0 ? LOG_INFO : LOG_WARN, "stopped leading",
		"lease=%s/%s identity=%s why=%s", l->ns, l->name, l->identity, why);
	if (l->on_stopped)
		l->on_stopped(l, l->arg);
}

static void schedule(struct lease *l)
{
	uint64_t d = l->retry_ms;

	/* Candidates spread their tries a little (client-go jitters by up to
	 * 1.2 x the period; 0.2 x keeps takeovers prompt). */
	if (!atomic_load(&l->leading))
		d += randombytes_uniform((uint32_t)(l->retry_ms / 5) + 1);
	loop_timer_arm(l->tick, d);
}

static void finish(struct attempt *a, bool ok, const char *why)
{
	struct lease *l = a->l;
	uint64_t now = loop_now(l->loop);

	l->inflight = NULL;
	if (ok && !l->releasing && a->started + l->deadline_ms > now) {
		l->fail_streak = 0;
		loop_timer_arm(l->deadline, a->started + l->deadline_ms - now);
		if (!atomic_exchange(&l->leading, true)) {
			l->acquisitions++;
			log_info("started leading", "lease=%s/%s identity=%s", l->ns, l->name, l->identity);
			if (l->on_started)
				l->on_started(l, l->arg);
		}
	} else if (!ok && why) {
		l->failures++;
		/* A streak (API server down) is one warning, then debug lines. */
		if (l->fail_streak++ == 0)
			log_warn("lease attempt failed", "lease=%s/%s identity=%s leading=%d err=%s",
				 l->ns, l->name, l->identity, (int)atomic_load(&l->leading), why);
		else
			log_debug("lease attempt failed", "lease=%s/%s identity=%s leading=%d err=%s",
				  l->ns, l->name, l->identity, (int)atomic_load(&l->leading), why);
	}
	free(a);
	/* A callback above may have called lease_release(), which then
	 * started the release itself. */
	if (l->releasing)
		do_release(l);
	else
		schedule(l);
}

static void result_why(const struct kube_result *res, char *out, size_t len)
{
	if (res->err)
		snprintf(out, len, "\"%s\"", res->message);
	else
		snprintf(out, len, "\"HTTP %ld %s: %s\"", res->status, res->reason, res->message);
}

static void on_written(struct kube_result *res, void *arg)
{
	struct attempt *a = arg;
	struct lease *l = a->l;
	char why[700];

	if (!l) {
		free(a);
		return;
	}
	if (!kube_ok(res) || !json_is_object(res->obj)) {
		/* 409: another candidate wrote first; the next try re-reads. */
		result_why(res, why, sizeof(why));
		finish(a, false, why);
		return;
	}
	json_free(l->obj);
	l->obj = kube_result_take(res);
	observe(l, json_get(l->obj, "spec"));
	report_leader(l, spec_holder(json_get(l->obj, "spec")));
	finish(a, true, NULL);
}

/* Our record: acquireTime and leaseTransitions carry over while we hold
 * the Lease; taking it over counts a transition. */
static struct json *our_record(struct lease *l, const struct json *old)
{
	struct json *spec = old ? json_clone(old) : json_new_object();
	char now[48];
	bool ours = old && strcmp(spec_holder(old), l->identity) == 0;
	int64_t transitions = json_int(json_get(old, "leaseTransitions"), 0);
	int err;

	if (!spec)
		return NULL;
	micro_time(now, sizeof(now));
	err = set_str(spec, "holderIdentity", l->identity);
	err = err ?: set_int(spec, "leaseDurationSeconds", (int64_t)((l->duration_ms + 999) / 1000));
	if (!ours || !json_get(spec, "acquireTime"))
		err = err ?: set_str(spec, "acquireTime", now);
	err = err ?: set_str(spec, "renewTime", now);
	err = err ?: set_int(spec, "leaseTransitions", old && !ours ? transitions + 1 : transitions);
	if (err) {
		json_free(spec);
		return NULL;
	}
	return spec;
}

static void create_lease(struct attempt *a)
{
	struct lease *l = a->l;
	struct json *obj = json_new_object(), *meta = json_new_object(), *spec = our_record(l, NULL);
	char path[512];
	int err;

	err = obj && meta && spec ? 0 : -ENOMEM;
	err = err ?: set_str(meta, "name", l->name);
	err = err ?: set_str(meta, "namespace", l->ns);
	err = err ?: set_str(obj, "apiVersion", "coordination.k8s.io/v1");
	err = err ?: set_str(obj, "kind", "Lease");
	if (!err) {
		err = json_object_set(obj, "metadata", meta);
		meta = NULL;
	}
	if (!err) {
		err = json_object_set(obj, "spec", spec);
		spec = NULL;
	}
	err = err ?: kube_path(path, sizeof(path), &kube_res_leases, l->ns, NULL, NULL);
	err = err ?: kube_request_async(l->c, "POST", path, NULL, NULL, obj, on_written, a);
	json_free(spec);
	json_free(meta);
	json_free(obj);
	if (err)
		finish(a, false, strerror(-err));
}

static void on_read(struct kube_result *res, void *arg)
{
	struct attempt *a = arg;
	struct lease *l = a->l;
	struct json *obj, *spec, *next = NULL, *rec;
	const char *holder;
	uint64_t valid_ms, now;
	char path[512], why[700];
	int err;

	if (!l) {
		free(a);
		return;
	}
	if (res->status == 404 && !l->releasing) {
		create_lease(a);
		return;
	}
	if (!kube_ok(res) || !json_is_object(res->obj)) {
		result_why(res, why, sizeof(why));
		finish(a, false, why);
		return;
	}
	obj = kube_result_take(res);
	json_free(l->obj);
	l->obj = obj;
	spec = json_get(obj, "spec");
	observe(l, spec);
	holder = spec_holder(spec);
	report_leader(l, holder);
	if (l->releasing) {
		finish(a, false, NULL);
		return;
	}

	/* Someone else holds it and we have not seen the record stand still
	 * for its duration yet. */
	now = loop_now(l->loop);
	valid_ms = (uint64_t)json_int(json_get(spec, "leaseDurationSeconds"), 0) * 1000;
	if (!valid_ms)
		valid_ms = l->duration_ms;
	if (*holder && strcmp(holder, l->identity) != 0 && l->observed_at + valid_ms > now) {
		/* The record names another holder: whatever our deadline says,
		 * we are not the leader any more. */
		step_down(l, "lease-taken");
		finish(a, false, NULL);
		return;
	}

	/* Ours to renew or take: PUT with the resourceVersion we read. */
	rec = our_record(l, spec);
	next = rec ? json_clone(obj) : NULL;
	err = next ? json_object_set(next, "spec", rec) : -ENOMEM;
	if (!next)
		json_free(rec);
	err = err ?: kube_path(path, sizeof(path), &kube_res_leases, l->ns, l->name, NULL);
	err = err ?: kube_request_async(l->c, "PUT", path, NULL, NULL, next, on_written, a);
	json_free(next);
	if (err)
		finish(a, false, strerror(-err));
}

static void try_acquire_or_renew(struct lease *l)
{
	struct attempt *a;
	char path[512];
	int err;

	if (l->inflight)
		return; /* finish() schedules the next try */
	a = calloc(1, sizeof(*a));
	if (!a) {
		l->failures++;
		schedule(l);
		return;
	}
	*a = (struct attempt){ .l = l, .started = loop_now(l->loop) };
	l->inflight = a;
	err = kube_path(path, sizeof(path), &kube_res_leases, l->ns, l->name, NULL);
	err = err ?: kube_request_async(l->c, "GET", path, NULL, NULL, NULL, on_read, a);
	if (err)
		finish(a, false, strerror(-err));
}

static void on_tick(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct lease *l = arg;

	if (l->releasing) {
		/* The release is over: complete it from a callback of its own. */
		lease_cb done = l->release_done;
		l->release_done = NULL;
		if (done)
			done(l, l->release_arg);
		return;
	}
	try_acquire_or_renew(l);
}

static void on_deadline(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct lease *l = arg;

	l->failures++;
	step_down(l, "renew-deadline");
}

/* ---- release ---- */

static void on_released(struct kube_result *res, void *arg)
{
	struct attempt *a = arg;
	struct lease *l = a->l;
	char why[700];

	free(a);
	if (!l)
		return;
	l->inflight = NULL;
	if (kube_ok(res)) {
		json_free(l->obj);
		l->obj = kube_result_take(res);
		report_leader(l, "");
		log_info("released lease", "lease=%s/%s identity=%s", l->ns, l->name, l->identity);
	} else {
		/* 409: someone else wrote since; it is not ours to release. */
		result_why(res, why, sizeof(why));
		log_warn("lease release failed", "lease=%s/%s err=%s", l->ns, l->name, why);
	}
	loop_timer_arm(l->tick, 0);
}

/* client-go's release: empty holder, duration 1 s, transitions kept, and
 * the resourceVersion of our last write as precondition. */
static void do_release(struct lease *l)
{
	struct json *spec = json_get(l->obj, "spec"), *next = NULL, *rec;
	struct attempt *a = NULL;
	char path[512], now[48];
	int err;

	if (l->release_writing)
		return;
	if (!l->obj || strcmp(spec_holder(spec), l->identity) != 0) {
		loop_timer_arm(l->tick, 0);
		return;
	}
	l->release_writing = true;
	micro_time(now, sizeof(now));
	rec = json_clone(spec);
	err = rec ? 0 : -ENOMEM;
	err = err ?: set_str(rec, "holderIdentity", "");
	err = err ?: set_int(rec, "leaseDurationSeconds", 1);
	err = err ?: set_str(rec, "acquireTime", now);
	err = err ?: set_str(rec, "renewTime", now);
	if (!err) {
		next = json_clone(l->obj);
		err = next ? json_object_set(next, "spec", rec) : -ENOMEM;
		if (next)
			rec = NULL; /* taken by json_object_set(), even when it fails */
	}
	if (!err && !(a = calloc(1, sizeof(*a))))
		err = -ENOMEM;
	if (!err) {
		*a = (struct attempt){ .l = l, .started = loop_now(l->loop) };
		err = kube_path(path, sizeof(path), &kube_res_leases, l->ns, l->name, NULL);
	}
	err = err ?: kube_request_async(l->c, "PUT", path, NULL, NULL, next, on_released, a);
	if (err) {
		log_warn("lease release failed", "lease=%s/%s err=%d", l->ns, l->name, err);
		free(a);
		loop_timer_arm(l->tick, 0);
	} else {
		l->inflight = a;
	}
	json_free(rec);
	json_free(next);
}

void lease_release(struct lease *l, lease_cb done, void *arg)
{
	if (l->releasing)
		return;
	l->releasing = true;
	l->release_done = done;
	l->release_arg = arg;
	loop_timer_disarm(l->tick);
	/* Our workers stop before a successor can start. */
	step_down(l, "release");
	if (!l->inflight)
		do_release(l);
	/* else finish() continues with do_release() */
}

/* ---- lifecycle ---- */

static char *default_identity(void)
{
	char host[256], id[300];

	if (gethostname(host, sizeof(host)) != 0)
		snprintf(host, sizeof(host), "unknown");
	host[sizeof(host) - 1] = '\0';
	snprintf(id, sizeof(id), "%s_%ld", host, (long)getpid());
	return strdup(id);
}

int lease_new(struct kube_client *c, const struct lease_config *cfg, struct lease **out)
{
	struct lease *l;
	int err = 0;

	*out = NULL;
	if (!cfg->namespace || !*cfg->namespace || !cfg->name || !*cfg->name ||
	    (cfg->identity && !*cfg->identity))
		return -EINVAL;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->c = c;
	l->loop = kube_client_loop(c);
	l->duration_ms = cfg->lease_duration_ms ? cfg->lease_duration_ms : DEFAULT_DURATION_MS;
	l->deadline_ms = cfg->renew_deadline_ms ? cfg->renew_deadline_ms : DEFAULT_DEADLINE_MS;
	l->retry_ms = cfg->retry_period_ms ? cfg->retry_period_ms : DEFAULT_RETRY_MS;
	if (l->duration_ms <= l->deadline_ms || l->deadline_ms * 10 <= l->retry_ms * 12) {
		err = -EINVAL;
		goto out;
	}
	l->on_started = cfg->on_started_leading;
	l->on_stopped = cfg->on_stopped_leading;
	l->on_new_leader = cfg->on_new_leader;
	l->arg = cfg->arg;
	l->ns = strdup(cfg->namespace);
	l->name = strdup(cfg->name);
	l->identity = cfg->identity ? strdup(cfg->identity) : default_identity();
	l->leader = strdup("");
	l->tick = loop_timer_new(l->loop, on_tick, l);
	l->deadline = loop_timer_new(l->loop, on_deadline, l);
	if (!l->ns || !l->name || !l->identity || !l->leader || !l->tick || !l->deadline)
		err = -ENOMEM;
out:
	if (err)
		lease_free(l);
	else
		*out = l;
	return err;
}

void lease_free(struct lease *l)
{
	if (!l)
		return;
	if (l->inflight)
		l->inflight->l = NULL; /* its reply is dropped */
	loop_timer_free(l->tick);
	loop_timer_free(l->deadline);
	json_free(l->obj);
	json_free(l->observed);
	free(l->leader);
	free(l->identity);
	free(l->name);
	free(l->ns);
	free(l);
}

int lease_start(struct lease *l)
{
	if (l->started)
		return -EALREADY;
	l->started = true;
	log_info("competing for lease", "lease=%s/%s identity=%s duration_ms=%llu deadline_ms=%llu retry_ms=%llu",
		 l->ns, l->name, l->identity, (unsigned long long)l->duration_ms,
		 (unsigned long long)l->deadline_ms, (unsigned long long)l->retry_ms);
	loop_timer_arm(l->tick, 0);
	return 0;
}

bool lease_is_leader(const struct lease *l)
{
	return atomic_load(&l->leading);
}

const char *lease_identity(const struct lease *l)
{
	return l->identity;
}

const char *lease_leader(const struct lease *l)
{
	return l->leader;
}

const struct json *lease_object(const struct lease *l)
{
	return l->obj;
}

void lease_stats(const struct lease *l, struct lease_stats *out)
{
	*out = (struct lease_stats){
		.transitions = atomic_load(&l->transitions),
		.acquisitions = atomic_load(&l->acquisitions),
		.step_downs = atomic_load(&l->step_downs),
		.failures = atomic_load(&l->failures),
	};
}
