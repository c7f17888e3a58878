#include "join.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "control/messages.h"
#include "identity.h"
#include "log.h"
#include "loop.h"

#define JOIN_RETRY_MS 5000

struct join {
	struct identity *id;
	struct loop_timer *retry;
	char *key; /* wiped and freed once logged in */
};

static void forget_key(struct join *j)
{
	if (!j->key)
		return;
	sodium_memzero(j->key, strlen(j->key));
	free(j->key);
	j->key = NULL;
}

static void join_done(void *arg, int err, const struct json *resp, const char *why);

static void on_retry(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct join *j = arg;

	if (identity_logged_in(j->id) || !j->key)
		return;
	if (identity_register(j->id, j->key, join_done, j))
		loop_timer_arm(t, JOIN_RETRY_MS);
}

/* Retries on transport errors and while the server is not serving;
 * gives up loudly on refusals. */
static void join_done(void *arg, int err, const struct json *resp, const char *why)
{
	struct join *j = arg;
	const char *code, *msg;

	if (err || (messages_error(resp, &code, &msg) && !strcmp(code, "Unavailable"))) {
		log_warn("cannot join yet, retrying in 5 s", "why=\"%s\"", err ? (why ? why : "?") : msg);
		loop_timer_arm(j->retry, JOIN_RETRY_MS);
		return;
	}
	if (identity_logged_in(j->id))
		forget_key(j);
	else if (messages_error(resp, &code, &msg))
		log_error("the coordination server refused to join this node", "code=%s why=\"%s\"", code, msg);
}

static int read_key(struct join *j, const char *path)
{
	const char *env = getenv("KNIT_AUTHKEY");
	char buf[512] = "";
	size_t n;

	if (path) {
		FILE *f = fopen(path, "re");
		if (!f) {
			int err = -errno;
			log_error("cannot read the auth key file", "path=%s err=%d", path, -err);
			return err;
		}
		n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[n] = '\0';
		while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
			buf[--n] = '\0';
		j->key = strdup(buf);
		sodium_memzero(buf, sizeof(buf));
	} else if (env && *env) {
		j->key = strdup(env);
	} else {
		log_error("--login-server needs an auth key to join: --authkey-file FILE or KNIT_AUTHKEY");
		return -EINVAL;
	}
	return j->key ? 0 : -ENOMEM;
}

int join_start(struct join **out, struct loop *loop, struct identity *id, const struct join_config *cfg)
{
	struct join *j = calloc(1, sizeof(*j));
	int err = -ENOMEM;

	*out = NULL;
	if (!j)
		return -ENOMEM;
	j->id = id;
	if ((err = read_key(j, cfg->authkey_file)))
		goto out;
	err = -ENOMEM;
	j->retry = loop_timer_new(loop, on_retry, j);
	if (!j->retry || identity_set_login(id, cfg->login_server, cfg->hostname))
		goto out;
	log_info("joining the tailnet", "server=%s", cfg->login_server);
	if ((err = identity_register(id, j->key, join_done, j)))
		goto out;
	*out = j;
out:
	if (err)
		join_free(j);
	return err;
}

void join_free(struct join *j)
{
	if (!j)
		return;
	loop_timer_free(j->retry);
	forget_key(j);
	free(j);
}
