#include "keyrenew.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "control/channel.h"
#include "control/client.h"
#include "control/messages.h"
#include "json.h"
#include "keyexpiry.h"
#include "log.h"
#include "loop.h"
#include "podtoken.h"
#include "state.h"

struct keyrenew {
	struct loop_timer *timer;
	struct state *st; /* the owner's */
	const struct keyrenew_ops *ops;
	void *arg;
	bool renewing; /* a register call is out */
	unsigned failures;
	unsigned long renewals;
	uint8_t priv[32]; /* the new private key while its register call is out */
};

void keyrenew_schedule(struct keyrenew *kr)
{
	int64_t now = time(NULL), exp = kr->st->device.key_expiry;

	if (!state_logged_in(kr->st) || !exp || !kr->ops->running(kr->arg)) {
		loop_timer_disarm(kr->timer);
		return;
	}
	loop_timer_arm(kr->timer,
		       keyexpiry_delay_ms(keyexpiry_renew_at(kr->st->key_issued, exp, now), exp, now, kr->failures));
}

static void renew_failed(struct keyrenew *kr, const char *why)
{
	char left[32];

	sodium_memzero(kr->priv, sizeof(kr->priv));
	kr->failures++;
	keyexpiry_format_left(kr->st->device.key_expiry - (int64_t)time(NULL), left, sizeof(left));
	log_warn("cannot renew the node key; will retry", "why=\"%s\" expires_in=%s failures=%u", why, left,
		 kr->failures);
	keyrenew_schedule(kr);
}

static void renew_done(struct control_client *c, int err, const struct json *resp, const char *why, void *arg)
{
	struct keyrenew *kr = arg;
	struct register_response r;
	const char *code, *msg;
	char perr[256], left[32];

	(void)c;
	kr->renewing = false;
	if (err) {
		renew_failed(kr, why ? why : strerror(-err));
		return;
	}
	if (messages_error(resp, &code, &msg)) {
		if (!strcmp(code, "KeyExpired") || !strcmp(code, "NotRegistered")) {
			sodium_memzero(kr->priv, sizeof(kr->priv));
			kr->ops->logged_out(kr->arg, msg);
			return;
		}
		renew_failed(kr, msg);
		return;
	}
	if (!register_response_from_json(resp, &r, perr, sizeof(perr))) {
		renew_failed(kr, perr);
		return;
	}
	memcpy(kr->st->node_key, kr->priv, sizeof(kr->st->node_key));
	sodium_memzero(kr->priv, sizeof(kr->priv));
	state_set_device(kr->st, &r);
	register_response_free(&r);
	kr->st->key_issued = time(NULL);
	kr->failures = 0;
	kr->renewals++;
	kr->ops->renewed(kr->arg);
	keyexpiry_format_left(kr->st->device.key_expiry - kr->st->key_issued, left, sizeof(left));
	log_info("node key renewed", "device=%s expires_in=%s", kr->st->device.device,
		 kr->st->device.key_expiry ? left : "never");
	keyrenew_schedule(kr);
}

static int renew_start(struct keyrenew *kr, struct control_client *ctl)
{
	struct state *st = kr->st;
	struct register_request rq = { 0 };
	uint8_t mpub[32];
	char host[256] = "";
	struct json *req;
	int err;

	if (!st->has_control_key)
		return -ENOKEY;
	channel_keygen(kr->priv);
	crypto_scalarmult_base(rq.node_key, kr->priv);
	crypto_scalarmult_base(rq.disco_key, st->disco_key);
	crypto_scalarmult_base(rq.old_node_key, st->node_key);
	crypto_scalarmult_base(mpub, st->machine_key);
	rq.has_old_node_key = true;
	if (!messages_renew_proof(st->node_key, st->control_key, mpub, rq.node_key, rq.renew_proof)) {
		err = -EINVAL;
		goto out;
	}
	if (!st->hostname)
		gethostname(host, sizeof(host) - 1);
	rq.hostname = st->hostname ? st->hostname : host;
	rq.tags = st->tags;
	rq.ntags = st->ntags;
	rq.routes = st->routes;
	rq.nroutes = st->nroutes;
	rq.pod_token = kr->ops->pod_token ? kr->ops->pod_token(kr->arg) : NULL;
	req = register_request_to_json(&rq);
	podtoken_free(rq.pod_token);
	err = req ? control_client_call(ctl, req, renew_done, kr, NULL) : -ENOMEM;
	messages_json_free_secret(req);
out:
	sodium_memzero(rq.renew_proof, sizeof(rq.renew_proof));
	if (err)
		sodium_memzero(kr->priv, sizeof(kr->priv));
	return err;
}

static void on_renew(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct keyrenew *kr = arg;
	int64_t now = time(NULL), exp = kr->st->device.key_expiry;
	struct control_client *ctl;
	int err;

	(void)loop;
	(void)t;
	if (kr->renewing || !kr->ops->running(kr->arg) || !state_logged_in(kr->st) || !exp ||
	    !(ctl = kr->ops->client(kr->arg)))
		return;
	if (now < keyexpiry_renew_at(kr->st->key_issued, exp, now) && !kr->failures) {
		keyrenew_schedule(kr); /* woke early (the wait is capped) */
		return;
	}
	log_info("renewing the node key", "device=%s", kr->st->device.device);
	if ((err = renew_start(kr, ctl))) {
		renew_failed(kr, strerror(-err));
		return;
	}
	kr->renewing = true;
}

void keyrenew_learn(struct keyrenew *kr, const struct netmap *nm)
{
	uint8_t pub[32];

	if (kr->renewing)
		return;
	crypto_scalarmult_base(pub, kr->st->node_key);
	if (memcmp(pub, nm->self.node_key, 32) || nm->self.key_expiry == kr->st->device.key_expiry)
		return;
	kr->st->device.key_expiry = nm->self.key_expiry;
	if (!kr->st->key_issued)
		kr->st->key_issued = time(NULL);
	kr->ops->changed(kr->arg);
	keyrenew_schedule(kr);
}

void keyrenew_registered(struct keyrenew *kr)
{
	kr->failures = 0;
}

void keyrenew_stop(struct keyrenew *kr)
{
	loop_timer_disarm(kr->timer);
}

unsigned long keyrenew_count(const struct keyrenew *kr)
{
	return kr->renewals;
}

int keyrenew_new(struct keyrenew **out, struct loop *loop, struct state *st, const struct keyrenew_ops *ops,
		 void *arg)
{
	struct keyrenew *kr = calloc(1, sizeof(*kr));

	*out = NULL;
	if (!kr)
		return -ENOMEM;
	kr->st = st;
	kr->ops = ops;
	kr->arg = arg;
	if (!(kr->timer = loop_timer_new(loop, on_renew, kr))) {
		free(kr);
		return -ENOMEM;
	}
	*out = kr;
	return 0;
}

void keyrenew_free(struct keyrenew *kr)
{
	if (!kr)
		return;
	loop_timer_free(kr->timer);
	sodium_memzero(kr->priv, sizeof(kr->priv));
	free(kr);
}
