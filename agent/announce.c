#include "announce.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/messages.h"
#include "endpoints.h"
#include "json.h"
#include "log.h"
#include "loop.h"
#include "netstun.h"
#include "paths.h"
#include "relays.h"
#include "wg/hub.h"

struct announce {
	struct announce_config cfg;
	struct loop_timer *timer;
	struct update_request local; /* the interfaces, as last collected */
	uint64_t local_at;
	char told[2048]; /* what the server was last told, as text */
};

/* What to announce now (the caller frees u); sig: it as text. */
static int current(struct announce *a, struct update_request *u, char *sig, size_t siglen)
{
	struct endpoint refl[NETSTUN_MAX_REFLEXIVE];
	size_t nrefl = 0;
	int home = 0;
	uint64_t now = loop_mono_ms();
	char lsig[2048];

	if (!a->local_at || now - a->local_at >= ANNOUNCE_LOCAL_MS) {
		update_request_free(&a->local);
		a->local = endpoints_collect(hub_port(a->cfg.hub), a->cfg.skip, a->cfg.arg, lsig, sizeof(lsig));
		a->local_at = now;
	}
	if (a->cfg.netstun) {
		nrefl = netstun_reflexive(a->cfg.netstun, refl, NETSTUN_MAX_REFLEXIVE);
		home = netstun_home(a->cfg.netstun);
	}
	return endpoints_announce(u, &a->local, refl, nrefl, home, sig, siglen);
}

static void on_timer(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct announce *a = arg;
	struct update_request u;
	char sig[2048];

	if (current(a, &u, sig, sizeof(sig)) == 0) {
		if (a->cfg.relays)
			relays_set_home(a->cfg.relays, u.relay);
		if (a->cfg.paths)
			paths_set_endpoints(a->cfg.paths, u.endpoints, u.nendpoints);
		if (strcmp(sig, a->told) != 0) {
			struct json *req = update_request_to_json(&u);

			if (req && a->cfg.send(a->cfg.arg, req)) {
				log_info("endpoints changed", "endpoints=\"%s\"", sig);
				snprintf(a->told, sizeof(a->told), "%s", sig);
			}
			json_free(req);
		}
		update_request_free(&u);
	}
	loop_timer_arm(t, a->cfg.netstun ? ANNOUNCE_CHECK_MS : ANNOUNCE_LOCAL_MS);
}

struct json *announce_map_request(struct announce *a)
{
	struct update_request u;
	struct json *req;
	char sig[2048];

	if (current(a, &u, sig, sizeof(sig)))
		return NULL;
	req = map_request_to_json(&u);
	if (req)
		snprintf(a->told, sizeof(a->told), "%s", sig);
	update_request_free(&u);
	return req;
}

void announce_start(struct announce *a)
{
	loop_timer_arm(a->timer, a->cfg.netstun ? 0 : ANNOUNCE_LOCAL_MS);
}

int announce_new(struct announce **out, const struct announce_config *c)
{
	struct announce *a = calloc(1, sizeof(*a));

	*out = NULL;
	if (!a)
		return -ENOMEM;
	a->cfg = *c;
	if (!(a->timer = loop_timer_new(c->loop, on_timer, a))) {
		free(a);
		return -ENOMEM;
	}
	*out = a;
	return 0;
}

void announce_free(struct announce *a)
{
	if (!a)
		return;
	loop_timer_free(a->timer);
	update_request_free(&a->local);
	free(a);
}
