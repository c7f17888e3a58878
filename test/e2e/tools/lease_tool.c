/* lease_tool: one leader-election candidate, for the kube_lease e2e suite.
 *
 *   lease_tool [options]
 *     --server URL          API server (default $KUBE_SERVER)
 *     --token TOKEN         bearer token (default $KUBE_TOKEN)
 *     --ca FILE             CA bundle (default $KUBE_CA)
 *     --namespace NS        the Lease's namespace (required)
 *     --name NAME           the Lease's name (required)
 *     --identity ID         this candidate (default <hostname>_<pid>)
 *     --lease-duration MS   default 15000
 *     --renew-deadline MS   default 10000
 *     --retry-period MS     default 2000
 *     --event-reason R      on each start of leading, emit a Normal Event
 *                           with reason R on the Lease (from a worker thread)
 *
 * Prints one line per happening, with wall-clock milliseconds:
 *   LEADER <holder> at=MS     the observed holder changed
 *   LEADING <id> at=MS        we started leading
 *   STOPPED <id> at=MS        we stopped leading
 *   EVENT <reason> err=N      the Event was (N=0) or was not recorded
 *   RELEASED <id> at=MS       release finished, about to exit
 * SIGTERM or SIGINT releases the Lease and exits 0. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "json.h"
#include "kube/client.h"
#include "kube/config.h"
#include "kube/event.h"
#include "kube/lease.h"
#include "log.h"
#include "loop.h"

struct tool {
	struct loop *loop;
	struct kube_client *client;
	struct lease *lease;
	const char *event_reason;
	int emitting; /* event threads not yet joined; loop thread only */
	bool released;
};

struct emit {
	struct tool *t;
	pthread_t thread;
	struct json *obj;
	char identity[256];
	int err;
};

static long long wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void say(const char *what, const char *who)
{
	printf("%s %s at=%lld\n", what, who, wall_ms());
	fflush(stdout);
}

static void maybe_exit(struct tool *t)
{
	if (t->released && t->emitting == 0)
		loop_stop(t->loop);
}

static void on_emitted(struct loop *loop, void *arg)
{
	struct emit *e = arg;
	struct tool *t = e->t;

	pthread_join(e->thread, NULL);
	printf("EVENT %s err=%d\n", t->event_reason, e->err);
	fflush(stdout);
	json_free(e->obj);
	free(e);
	t->emitting--;
	maybe_exit(t);
}

/* Worker thread: the blocking client posts to the loop and waits. */
static void *emit_thread(void *arg)
{
	struct emit *e = arg;

	e->err = kube_event_emit(e->t->client, e->obj, KUBE_EVENT_NORMAL, e->t->event_reason,
				 "%s became leader", e->identity);
	while (loop_post(e->t->loop, on_emitted, e) != 0)
		; /* -ENOMEM only: the loop must learn we are done */
	return NULL;
}

static void start_emit(struct tool *t)
{
	struct emit *e = calloc(1, sizeof(*e));

	if (!e || !(e->obj = json_clone(lease_object(t->lease)))) {
		free(e);
		printf("EVENT %s err=%d\n", t->event_reason, -ENOMEM);
		return;
	}
	e->t = t;
	snprintf(e->identity, sizeof(e->identity), "%s", lease_identity(t->lease));
	if (pthread_create(&e->thread, NULL, emit_thread, e) != 0) {
		json_free(e->obj);
		free(e);
		printf("EVENT %s err=%d\n", t->event_reason, -EAGAIN);
		return;
	}
	t->emitting++;
}

static void on_started(struct lease *l, void *arg)
{
	struct tool *t = arg;

	say("LEADING", lease_identity(l));
	if (t->event_reason)
		start_emit(t);
}

static void on_stopped(struct lease *l, void *arg)
{
	say("STOPPED", lease_identity(l));
}

static void on_new_leader(struct lease *l, const char *who, void *arg)
{
	say("LEADER", who);
}

static void on_released(struct lease *l, void *arg)
{
	struct tool *t = arg;

	say("RELEASED", lease_identity(l));
	t->released = true;
	maybe_exit(t);
}

static void on_signal(struct loop *loop, int signo, void *arg)
{
	struct tool *t = arg;

	lease_release(t->lease, on_released, t);
}

static void usage(FILE *f)
{
	fputs("usage: lease_tool --namespace NS --name NAME [--identity ID] [--server URL]\n"
	      "         [--token T] [--ca FILE] [--lease-duration MS] [--renew-deadline MS]\n"
	      "         [--retry-period MS] [--event-reason REASON]\n",
	      f);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "server", required_argument, NULL, 's' },
		{ "token", required_argument, NULL, 't' },
		{ "ca", required_argument, NULL, 'c' },
		{ "namespace", required_argument, NULL, 'n' },
		{ "name", required_argument, NULL, 'N' },
		{ "identity", required_argument, NULL, 'i' },
		{ "lease-duration", required_argument, NULL, 'd' },
		{ "renew-deadline", required_argument, NULL, 'r' },
		{ "retry-period", required_argument, NULL, 'p' },
		{ "event-reason", required_argument, NULL, 'e' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct kube_config cfg = { 0 };
	struct lease_config lc = { 0 };
	struct tool t = { 0 };
	int opt, err, rc = 1;

	cfg.server = getenv("KUBE_SERVER");
	cfg.token = getenv("KUBE_TOKEN");
	cfg.ca_file = getenv("KUBE_CA");
	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (opt) {
		case 's': cfg.server = optarg; break;
		case 't': cfg.token = optarg; break;
		case 'c': cfg.ca_file = optarg; break;
		case 'n': lc.namespace = optarg; break;
		case 'N': lc.name = optarg; break;
		case 'i': lc.identity = optarg; break;
		case 'd': lc.lease_duration_ms = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'r': lc.renew_deadline_ms = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'p': lc.retry_period_ms = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'e': t.event_reason = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!cfg.server || !lc.namespace || !lc.name) {
		usage(stderr);
		return 2;
	}
	log_init("lease_tool", LOG_INFO);
	kube_event_set_component("lease-tool");
	cfg.namespace = (char *)lc.namespace;
	lc.on_started_leading = on_started;
	lc.on_stopped_leading = on_stopped;
	lc.on_new_leader = on_new_leader;
	lc.arg = &t;

	t.loop = loop_new();
	if (!t.loop)
		goto out;
	/* Signals first, so the event threads inherit the blocked mask. */
	if (loop_signal_add(t.loop, SIGTERM, on_signal, &t) || loop_signal_add(t.loop, SIGINT, on_signal, &t))
		goto out;
	t.client = kube_client_new(t.loop, &cfg);
	if (!t.client)
		goto out;
	err = lease_new(t.client, &lc, &t.lease);
	if (err) {
		fprintf(stderr, "lease_tool: %s\n", strerror(-err));
		goto out;
	}
	lease_start(t.lease);
	if (loop_run(t.loop) == 0)
		rc = 0;
out:
	lease_free(t.lease);
	kube_client_free(t.client);
	if (t.loop)
		loop_free(t.loop);
	return rc;
}
