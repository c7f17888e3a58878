#include "pods.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "buf.h"
#include "control/client.h"
#include "control/messages.h"
#include "defaults.h"
#include "identity.h"
#include "json.h"
#include "log.h"
#include "loop.h"
#include "state.h"
#include "wg/engine.h"

#define ATTACH_TIMEOUT_MS 25000
#define LEAVE_TIMEOUT_MS 5000
#define POLL_MS 20
#define META_MAX_BYTES (64u << 10)
/* A vanished pod's Device: logout tried this often, this far apart. */
#define REAP_TRIES 12
#define REAP_RETRY_MS 5000

/* The tailnet's prefixes, routed through the pod's device in its main
 * table (the pod has no other way into the tailnet). */
static const char *const tailnet_prefixes[] = { KNIT_POOL4_DEFAULT, KNIT_POOL6_DEFAULT };

enum pod_phase {
	POD_ATTACHING, /* registering, then waiting for the first netmap */
	POD_READY,
	POD_REMOVING, /* the Device being deleted at the server */
};

struct pod {
	struct pods *pods;
	struct pod *next;
	enum pod_phase phase;
	char cid[129], ifname[16], tmpname[16];
	char *netns, *network, *pod_ns, *pod_name, *pod_uid, *hostname;
	char **tags;
	size_t ntags;
	char state_path[PATH_MAX], meta_path[PATH_MAX];
	struct identity *id;
	struct loop_timer *timer;
	uint64_t deadline;
	struct localapi_reply *reply; /* the attach or detach waiting */
	/* registration's outcome, taken by the timer */
	bool reg_done, reg_ok, left, gone;
	unsigned fail_status;
	char fail_code[48], fail_msg[400];
	bool routes_ok[2];
};

/* A pod whose namespace vanished while knitd was down: its Device deleted
 * at the server with a logout on the pod identity's own session (its keys
 * from the state file, which is gone already). */
struct reap {
	struct pods *pods;
	struct reap *next;
	char cid[129];
	struct control_client *ctl;
	struct loop_timer *timer;
	unsigned tries;
	bool done; /* freed by the timer: never from the client's callback */
};

struct pods {
	struct pods_config cfg;
	char *dir;
	struct pod *list;
	struct reap *reaps;
};

/* ---- the attachment's record ---- */

static void pod_free(struct pod *pd)
{
	if (!pd)
		return;
	identity_free(pd->id);
	loop_timer_free(pd->timer);
	free(pd->netns);
	free(pd->network);
	free(pd->pod_ns);
	free(pd->pod_name);
	free(pd->pod_uid);
	free(pd->hostname);
	for (size_t i = 0; i < pd->ntags; i++)
		free(pd->tags[i]);
	free(pd->tags);
	free(pd);
}

static bool dup_opt(char **out, const char *s)
{
	*out = NULL;
	return !s || (*out = strdup(s));
}

static void on_timer(struct loop *loop, struct loop_timer *t, void *arg);

/* A record for (cid, ifname) with its paths; not in the list yet. */
static struct pod *pod_alloc(struct pods *p, const struct localapi_attach *a)
{
	struct pod *pd = calloc(1, sizeof(*pd));
	uint32_t r = randombytes_random();

	if (!pd)
		return NULL;
	pd->pods = p;
	snprintf(pd->cid, sizeof(pd->cid), "%s", a->container_id);
	snprintf(pd->ifname, sizeof(pd->ifname), "%s", a->ifname);
	/* Unique in our namespace until it moves: knp + 32 random bits. */
	snprintf(pd->tmpname, sizeof(pd->tmpname), "knp%08x", r);
	if (snprintf(pd->state_path, sizeof(pd->state_path), "%s/%s-%s.state", p->dir, pd->cid, pd->ifname) >=
		    (int)sizeof(pd->state_path) ||
	    snprintf(pd->meta_path, sizeof(pd->meta_path), "%s/%s-%s.pod", p->dir, pd->cid, pd->ifname) >=
		    (int)sizeof(pd->meta_path))
		goto fail;
	pd->timer = loop_timer_new(p->cfg.loop, on_timer, pd);
	if (!pd->timer || !dup_opt(&pd->netns, a->netns) || !dup_opt(&pd->network, a->network) ||
	    !dup_opt(&pd->pod_ns, a->pod_namespace) || !dup_opt(&pd->pod_name, a->pod_name) ||
	    !dup_opt(&pd->pod_uid, a->pod_uid) || !dup_opt(&pd->hostname, a->hostname))
		goto fail;
	if (a->ntags) {
		pd->tags = calloc(a->ntags, sizeof(*pd->tags));
		if (!pd->tags)
			goto fail;
		for (; pd->ntags < a->ntags; pd->ntags++)
			if (!(pd->tags[pd->ntags] = strdup(a->tags[pd->ntags])))
				goto fail;
	}
	return pd;
fail:
	pod_free(pd);
	return NULL;
}

static struct pod *find(struct pods *p, const char *cid, const char *ifname)
{
	for (struct pod *pd = p->list; pd; pd = pd->next)
		if (!strcmp(pd->cid, cid) && !strcmp(pd->ifname, ifname))
			return pd;
	return NULL;
}

static void unlink_pod(struct pods *p, struct pod *pd)
{
	for (struct pod **pp = &p->list; *pp; pp = &(*pp)->next)
		if (*pp == pd) {
			*pp = pd->next;
			return;
		}
}

static bool same_str(const char *a, const char *b)
{
	return (!a && !b) || (a && b && !strcmp(a, b));
}

/* ---- the .pod file: what a restarted knitd needs besides the keys ---- */

static struct json *meta_json(const struct pod *pd)
{
	struct json *o = json_new_object(), *tags = json_new_array();
	int err = o && tags ? 0 : -ENOMEM;

	for (size_t i = 0; !err && i < pd->ntags; i++)
		err = json_array_append(tags, json_new_string(pd->tags[i]));
	json_put_int(o, "version", 1, &err);
	json_put_str(o, "containerID", pd->cid, &err);
	json_put_str(o, "ifName", pd->ifname, &err);
	json_put_str(o, "netns", pd->netns, &err);
	json_put_str(o, "network", pd->network, &err);
	json_put_str(o, "podNamespace", pd->pod_ns, &err);
	json_put_str(o, "podName", pd->pod_name, &err);
	json_put_str(o, "podUID", pd->pod_uid, &err);
	json_put_str(o, "hostname", pd->hostname, &err);
	json_put(o, "tags", tags, &err);
	if (err) {
		json_free(o);
		return NULL;
	}
	return o;
}

/* Atomically, mode 0600: temporary file, fsync, rename. */
static int meta_save(const struct pod *pd)
{
	char tmp[PATH_MAX + 8];
	struct json *j = meta_json(pd);
	struct buf b = BUF_INIT(META_MAX_BYTES);
	int fd = -1, err = -ENOMEM;

	if (!j || json_dump(j, &b, 0))
		goto out;
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", pd->meta_path) >= (int)sizeof(tmp)) {
		err = -ENAMETOOLONG;
		goto out;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, b.data, b.len) != (ssize_t)b.len || fsync(fd) || rename(tmp, pd->meta_path)) {
		err = -errno;
		unlink(tmp);
		goto out;
	}
	err = 0;
out:
	if (fd >= 0)
		close(fd);
	buf_free(&b);
	json_free(j);
	return err;
}

static void forget_files(const struct pod *pd)
{
	unlink(pd->meta_path);
	state_remove(pd->state_path);
}

/* ---- the attach answer and the list ---- */

static struct json *view(const struct pod *pd)
{
	const struct state *st = identity_state(pd->id);
	struct json *o = json_new_object(), *addrs = json_new_array(), *routes = json_new_array();
	int err = o && addrs && routes ? 0 : -ENOMEM;
	char text[64];

	for (size_t i = 0; !err && i < st->device.naddresses; i++)
		if (netmap_prefix_format(&st->device.addresses[i], false, text, sizeof(text)) > 0)
			err = json_array_append(addrs, json_new_string(text));
	for (size_t i = 0; !err && i < 2; i++)
		if (pd->routes_ok[i])
			err = json_array_append(routes, json_new_string(tailnet_prefixes[i]));
	json_put_str(o, "containerID", pd->cid, &err);
	json_put_str(o, "ifName", pd->ifname, &err);
	json_put_str(o, "network", pd->network ? pd->network : "", &err);
	json_put_str(o, "interface", pd->ifname, &err);
	json_put(o, "addresses", addrs, &err);
	json_put(o, "routes", routes, &err);
	json_put_str(o, "deviceName", st->device.name, &err);
	json_put_str(o, "device", st->device.device, &err);
	json_put_str(o, "netns", pd->netns, &err);
	json_put_str(o, "podNamespace", pd->pod_ns, &err);
	json_put_str(o, "podName", pd->pod_name, &err);
	json_put_str(o, "podUID", pd->pod_uid, &err);
	json_put_str(o, "state", pd->phase == POD_READY ? "Ready" : pd->phase == POD_ATTACHING ? "Attaching" : "Removing",
		     &err);
	if (err) {
		json_free(o);
		return NULL;
	}
	return o;
}

static void add_routes(struct pod *pd)
{
	for (size_t i = 0; i < 2; i++) {
		int err = identity_route_add(pd->id, tailnet_prefixes[i]);
		pd->routes_ok[i] = err == 0;
		if (err)
			log_warn("cannot route the tailnet into the pod", "pod=%s/%s dev=%s cidr=%s err=%d",
				 pd->pod_ns ? pd->pod_ns : "", pd->pod_name ? pd->pod_name : "", pd->ifname,
				 tailnet_prefixes[i], err);
	}
}

/* ---- removal: the Device at the server, then the identity and files ---- */

static void finish_remove(struct pod *pd)
{
	struct pods *p = pd->pods;
	struct localapi_reply *reply = pd->reply;

	unlink_pod(p, pd);
	forget_files(pd);
	log_info("pod identity removed", "container=%s ifname=%s pod=%s/%s", pd->cid, pd->ifname,
		 pd->pod_ns ? pd->pod_ns : "", pd->pod_name ? pd->pod_name : "");
	if (reply) {
		if (pd->fail_code[0])
			localapi_reply_error(reply, pd->fail_status, pd->fail_code, "%s", pd->fail_msg);
		else
			localapi_reply_ok(reply, NULL);
	}
	pod_free(pd); /* the TUN goes, and with it the pod's interface */
}

static void left(void *arg, int err, const struct json *resp, const char *why)
{
	struct pod *pd = arg;

	if (err)
		log_warn("pod Device not deleted at the server (the operator removes it with the pod)",
			 "container=%s why=\"%s\"", pd->cid, why ? why : "?");
	pd->left = true;
	loop_timer_arm(pd->timer, 0); /* not from inside the client's callback */
}

/* Starts removing pd; its reply (if any) gets fail_* or success. */
static void start_remove(struct pod *pd)
{
	pd->phase = POD_REMOVING;
	pd->deadline = loop_mono_ms() + LEAVE_TIMEOUT_MS;
	if (!pd->id || !identity_logged_in(pd->id) || identity_leave(pd->id, left, pd))
		pd->left = true;
	loop_timer_arm(pd->timer, pd->left ? 0 : POLL_MS * 10);
}

static void fail_attach(struct pod *pd, unsigned status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void fail_attach(struct pod *pd, unsigned status, const char *code, const char *fmt, ...)
{
	va_list ap;

	pd->fail_status = status;
	snprintf(pd->fail_code, sizeof(pd->fail_code), "%s", code);
	va_start(ap, fmt);
	vsnprintf(pd->fail_msg, sizeof(pd->fail_msg), fmt, ap);
	va_end(ap);
	log_warn("pod identity not attached", "container=%s pod=%s/%s why=\"%s\"", pd->cid, pd->pod_ns ? pd->pod_ns : "",
		 pd->pod_name ? pd->pod_name : "", pd->fail_msg);
	start_remove(pd);
}

/* ---- attaching ---- */

static bool has_addresses(const struct pod *pd)
{
	const struct netmap *nm = identity_netmap(pd->id);

	return nm && nm->self.naddresses > 0;
}

static void finish_attach(struct pod *pd)
{
	struct localapi_reply *reply = pd->reply;
	int err;

	add_routes(pd);
	identity_save(pd->id);
	if ((err = meta_save(pd))) {
		fail_attach(pd, 500, "Internal", "cannot save the pod identity's record %s: %s", pd->meta_path,
			    strerror(-err));
		return;
	}
	pd->phase = POD_READY;
	pd->reply = NULL;
	log_info("pod identity attached", "container=%s pod=%s/%s ifname=%s device=%s", pd->cid,
		 pd->pod_ns ? pd->pod_ns : "", pd->pod_name ? pd->pod_name : "", pd->ifname,
		 identity_state(pd->id)->device.device);
	if (reply) {
		struct json *v = view(pd);
		if (v)
			localapi_reply_ok(reply, v);
		else
			localapi_reply_error(reply, 500, "Internal", "out of memory");
	}
}

static void registered(void *arg, int err, const struct json *resp, const char *why)
{
	struct pod *pd = arg;
	const char *code, *msg;

	pd->reg_done = true;
	if (err) {
		pd->fail_status = 503;
		snprintf(pd->fail_code, sizeof(pd->fail_code), "ControlUnreachable");
		snprintf(pd->fail_msg, sizeof(pd->fail_msg), "cannot reach the coordination server: %s", why ? why : "?");
	} else if (messages_error(resp, &code, &msg)) {
		bool pod = !strcmp(code, "PodNotAuthorized") || !strcmp(code, "PodNotFound");
		pd->fail_status = pod ? 403 : !strcmp(code, "TagNotPermitted") ? 409 : 502;
		snprintf(pd->fail_code, sizeof(pd->fail_code), "%s", code);
		snprintf(pd->fail_msg, sizeof(pd->fail_msg), "the coordination server refused the pod: %s", msg);
	} else {
		pd->reg_ok = true;
	}
	loop_timer_arm(pd->timer, 0);
}

static void on_timer(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct pod *pd = arg;
	uint64_t now = loop_mono_ms();

	switch (pd->phase) {
	case POD_ATTACHING:
		if (pd->reg_done && !pd->reg_ok) {
			log_warn("pod identity not attached", "container=%s why=\"%s\"", pd->cid, pd->fail_msg);
			start_remove(pd);
		} else if (pd->reg_ok && has_addresses(pd)) {
			finish_attach(pd);
		} else if (now >= pd->deadline) {
			fail_attach(pd, 504, "ControlUnreachable",
				    "the coordination server did not %s in time", pd->reg_done ? "send the netmap" : "answer");
		} else {
			loop_timer_arm(t, POLL_MS);
		}
		break;
	case POD_READY:
		if (pd->gone) {
			log_warn("a pod's device went away: removing its identity", "container=%s", pd->cid);
			start_remove(pd);
		}
		break;
	case POD_REMOVING:
		if (pd->left || now >= pd->deadline)
			finish_remove(pd);
		else
			loop_timer_arm(t, POLL_MS * 10);
		break;
	}
}

static struct pod *pod_of(const struct pods *p, const struct identity *id)
{
	for (struct pod *pd = p->list; pd; pd = pd->next)
		if (pd->id == id)
			return pd;
	return NULL;
}

/* The device was deleted (the namespace went without a DEL). */
static void on_down(void *arg, struct identity *id)
{
	struct pod *pd = pod_of(arg, id);

	if (pd) {
		pd->gone = true;
		loop_timer_arm(pd->timer, 0);
	}
}

/* Endpoints skip the devices of every identity of the process. */
static bool is_identity_device(void *arg, const char *ifname)
{
	struct pods *p = arg;

	return pods_has_device(p, ifname) ||
	       (p->cfg.is_identity_device && p->cfg.is_identity_device(p->cfg.arg, ifname));
}

/* The identity of pd, its TUN moved into the pod's namespace. st taken. */
static int make_identity(struct pods *p, struct pod *pd, struct state *st)
{
	struct identity_config ic = {
		.ifname = pd->tmpname,
		.state_path = pd->state_path,
		.on_down = on_down,
		.is_identity_device = is_identity_device,
		.arg = p,
		.netns = pd->netns,
		.netns_ifname = pd->ifname,
		.datagrams = p->cfg.datagrams,
		.netstun = p->cfg.netstun,
		.relay_ca = p->cfg.relay_ca,
	};

	return identity_new(&pd->id, p->cfg.loop, p->cfg.hub, st, &ic);
}

static void attach(void *arg, const struct localapi_attach *a, struct localapi_reply *reply)
{
	struct pods *p = arg;
	struct pod *pd = find(p, a->container_id, a->ifname);
	const struct state *ns = identity_state(p->cfg.node);
	struct identity_pod ip = { 0 };
	struct state *st = NULL;
	int err;

	if (pd) {
		if (!same_str(pd->pod_uid, a->pod_uid) || strcmp(pd->netns, a->netns)) {
			localapi_reply_error(reply, 409, "IdentityConflict",
					     "the attachment %s/%s belongs to another pod (uid %s, netns %s)", pd->cid,
					     pd->ifname, pd->pod_uid ? pd->pod_uid : "?", pd->netns);
		} else if (pd->phase == POD_READY) {
			struct json *v = view(pd);
			if (v)
				localapi_reply_ok(reply, v);
			else
				localapi_reply_error(reply, 500, "Internal", "out of memory");
		} else {
			localapi_reply_error(reply, 503, "NotReady", "the attachment %s/%s is being %s; try again", pd->cid,
					     pd->ifname, pd->phase == POD_ATTACHING ? "attached" : "removed");
		}
		return;
	}
	if (strcmp(identity_backend_state(p->cfg.node), "Running") || !ns->login_server) {
		localapi_reply_error(reply, 503, "NotReady", "this node is not in the tailnet yet (%s)",
				     identity_backend_state(p->cfg.node));
		return;
	}
	if (!(pd = pod_alloc(p, a)) || state_new(&st) || !(st->login_server = strdup(ns->login_server)) ||
	    state_set_prefs(st, a->hostname, (char *const *)a->tags, a->ntags, NULL, 0)) {
		state_free(st);
		pod_free(pd);
		localapi_reply_error(reply, 500, "Internal", "out of memory");
		return;
	}
	memcpy(st->control_key, ns->control_key, sizeof(st->control_key));
	st->has_control_key = ns->has_control_key;
	err = make_identity(p, pd, st);
	if (err) {
		pod_free(pd);
		if (err == -EEXIST)
			localapi_reply_error(reply, 409, "IdentityConflict", "%s is already taken in the pod's namespace",
					     a->ifname);
		else
			localapi_reply_error(reply, err == -ENOENT ? 400 : 500, err == -ENOENT ? "BadRequest" : "Internal",
					     "cannot make the pod's device %s in %s: %s", a->ifname, a->netns, strerror(-err));
		return;
	}
	pd->next = p->list;
	p->list = pd;
	pd->phase = POD_ATTACHING;
	pd->reply = reply;
	pd->deadline = loop_mono_ms() + (p->cfg.attach_timeout_ms ? p->cfg.attach_timeout_ms : ATTACH_TIMEOUT_MS);
	ip.pod_namespace = pd->pod_ns;
	ip.pod_name = pd->pod_name;
	ip.pod_uid = pd->pod_uid;
	ip.hostname = pd->hostname;
	ip.tags = (const char *const *)pd->tags;
	ip.ntags = pd->ntags;
	if ((err = identity_register_pod(pd->id, p->cfg.node, &ip, registered, pd))) {
		fail_attach(pd, 503, "NotReady", "cannot send the registration: %s", strerror(-err));
		return;
	}
	loop_timer_arm(pd->timer, pd->deadline - loop_mono_ms());
}

static void detach(void *arg, const char *cid, const char *ifname, struct localapi_reply *reply)
{
	struct pods *p = arg;
	struct pod *pd = find(p, cid, ifname);

	if (!pd) {
		localapi_reply_error(reply, 404, "NotFound", "no pod identity for %s/%s", cid, ifname);
		return;
	}
	if (pd->phase == POD_REMOVING) {
		localapi_reply_error(reply, 503, "NotReady", "%s/%s is being removed; try again", cid, ifname);
		return;
	}
	if (pd->reply) /* an attach still waiting: it fails */
		localapi_reply_error(pd->reply, 409, "IdentityConflict", "the attachment was deleted while attaching");
	pd->reply = reply;
	pd->fail_code[0] = '\0';
	start_remove(pd);
}

static void list(void *arg, struct localapi_reply *reply)
{
	struct pods *p = arg;
	struct json *o = json_new_object(), *arr = json_new_array();
	int err = o && arr ? 0 : -ENOMEM;

	for (struct pod *pd = p->list; !err && pd; pd = pd->next)
		if (pd->phase == POD_READY)
			err = json_array_append(arr, view(pd));
	json_put(o, "identities", arr, &err);
	if (err) {
		json_free(o);
		localapi_reply_error(reply, 500, "Internal", "out of memory");
		return;
	}
	localapi_reply_ok(reply, o);
}

struct localapi_pod_ops pods_ops(struct pods *p)
{
	return (struct localapi_pod_ops){ .attach = attach, .detach = detach, .list = list, .arg = p };
}

bool pods_has_device(const struct pods *p, const char *ifname)
{
	for (const struct pod *pd = p ? p->list : NULL; pd; pd = pd->next)
		if (pd->id && !strcmp(engine_ifname(identity_engine(pd->id)), ifname))
			return true;
	return false;
}

/* ---- lifecycle ---- */

int pods_new(struct pods **out, const struct pods_config *cfg)
{
	struct pods *p = calloc(1, sizeof(*p));

	*out = NULL;
	if (!p || !(p->dir = strdup(cfg->dir))) {
		free(p);
		return -ENOMEM;
	}
	p->cfg = *cfg;
	p->cfg.dir = p->dir;
	char *slash = strrchr(p->dir, '/');
	if (slash && slash != p->dir) {
		*slash = '\0';
		if (mkdir(p->dir, 0700) && errno != EEXIST)
			log_warn("cannot make the state directory", "dir=%s err=%d", p->dir, errno);
		*slash = '/';
	}
	if (mkdir(p->dir, 0700) && errno != EEXIST) {
		int err = -errno;
		log_error("cannot make the pod state directory", "dir=%s err=%d", p->dir, err);
		free(p->dir);
		free(p);
		return err;
	}
	*out = p;
	return 0;
}

static char *read_small(const char *path, size_t *len)
{
	FILE *f = fopen(path, "re");
	char *data = f ? malloc(META_MAX_BYTES) : NULL;

	*len = 0;
	if (data)
		*len = fread(data, 1, META_MAX_BYTES, f);
	if (f)
		fclose(f);
	if (data && (*len == 0 || *len == META_MAX_BYTES)) {
		free(data);
		data = NULL;
	}
	return data;
}

/* ---- vanished pods' Devices ---- */

static void reap_free(struct reap *r)
{
	control_client_free(r->ctl);
	loop_timer_free(r->timer);
	free(r);
}

static void reap_unlink(struct reap *r)
{
	for (struct reap **pp = &r->pods->reaps; *pp; pp = &(*pp)->next)
		if (*pp == r) {
			*pp = r->next;
			break;
		}
}

static void reap_done(struct control_client *c, int err, const struct json *resp, const char *why, void *arg)
{
	struct reap *r = arg;
	const char *code = "", *msg = "";

	(void)c;
	if (!err && messages_error(resp, &code, &msg) && strcmp(code, "NotRegistered") && strcmp(code, "DeviceDeleted")) {
		err = -EPROTO;
		why = msg;
	}
	if (!err) {
		log_info("vanished pod's Device deleted", "container=%s", r->cid);
		r->done = true;
	} else if (++r->tries >= REAP_TRIES) {
		log_warn("cannot delete the vanished pod's Device: left to the operator", "container=%s why=\"%s\"", r->cid,
			 why ? why : strerror(-err));
		r->done = true;
	}
	loop_timer_arm(r->timer, r->done ? 0 : REAP_RETRY_MS);
}

static void reap_tick(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct reap *r = arg;
	struct json *req = NULL;

	(void)loop;
	(void)t;
	if (!r->done && (req = json_new_object()) && !json_object_set(req, "type", json_new_string("logout")) &&
	    !control_client_call(r->ctl, req, reap_done, r, NULL)) {
		json_free(req);
		return;
	}
	json_free(req);
	if (!r->done && ++r->tries < REAP_TRIES) {
		loop_timer_arm(r->timer, REAP_RETRY_MS);
		return;
	}
	reap_unlink(r);
	reap_free(r);
}

/* Starts deleting st's Device; st stays the caller's. */
static void reap_start(struct pods *p, const char *cid, const struct state *st)
{
	struct control_client_opts co = {
		.server_url = st->login_server,
		.machine_priv = st->machine_key,
		.control_key = st->control_key,
	};
	struct reap *r = calloc(1, sizeof(*r));

	if (!r || !st->has_control_key || !st->login_server || control_client_new(p->cfg.loop, &co, &r->ctl) ||
	    !(r->timer = loop_timer_new(p->cfg.loop, reap_tick, r))) {
		log_warn("cannot delete the vanished pod's Device: left to the operator", "container=%s", cid);
		if (r)
			reap_free(r);
		return;
	}
	r->pods = p;
	snprintf(r->cid, sizeof(r->cid), "%s", cid);
	r->next = p->reaps;
	p->reaps = r;
	loop_timer_arm(r->timer, 0);
}

/* One .pod file: the identity back in its namespace, or its files gone. */
static bool restore_one(struct pods *p, const char *file)
{
	char path[PATH_MAX], err[256];
	struct localapi_attach a = { 0 };
	const char *tags[64];
	struct json *j = NULL;
	struct pod *pd = NULL;
	struct state *st = NULL;
	size_t len;
	char *data;
	bool ok = false;
	int r;

	if (snprintf(path, sizeof(path), "%s/%s", p->dir, file) >= (int)sizeof(path))
		return false;
	data = read_small(path, &len);
	j = data ? json_parse(data, len, NULL) : NULL;
	free(data);
	a.container_id = json_str(json_get(j, "containerID"));
	a.ifname = json_str(json_get(j, "ifName"));
	a.netns = json_str(json_get(j, "netns"));
	a.network = json_str(json_get(j, "network"));
	a.pod_namespace = json_str(json_get(j, "podNamespace"));
	a.pod_name = json_str(json_get(j, "podName"));
	a.pod_uid = json_str(json_get(j, "podUID"));
	a.hostname = json_str(json_get(j, "hostname"));
	for (size_t i = 0; i < json_array_len(json_get(j, "tags")) && a.ntags < 64; i++)
		if (json_str(json_array_at(json_get(j, "tags"), i)))
			tags[a.ntags++] = json_str(json_array_at(json_get(j, "tags"), i));
	a.tags = tags;
	if (!a.container_id || !a.ifname || !a.netns || strlen(a.ifname) >= 16 ||
	    strchr(a.container_id, '/') || strchr(a.ifname, '/')) {
		log_warn("unusable pod record: removed", "file=%s", path);
		unlink(path);
		goto out;
	}
	if (!(pd = pod_alloc(p, &a)))
		goto out;
	if (access(pd->netns, F_OK) != 0) {
		log_info("the pod's namespace is gone: dropping its identity and deleting its Device", "container=%s netns=%s",
			 pd->cid, pd->netns);
		if (!state_load(pd->state_path, &st, err, sizeof(err)) && state_logged_in(st))
			reap_start(p, pd->cid, st);
		state_free(st);
		st = NULL;
		forget_files(pd);
		goto out;
	}
	if ((r = state_load(pd->state_path, &st, err, sizeof(err))) || !state_logged_in(st)) {
		log_warn("the pod identity's state is unusable: dropping it", "container=%s error=\"%s\"", pd->cid,
			 r ? err : "not logged in");
		state_free(st);
		forget_files(pd);
		goto out;
	}
	r = make_identity(p, pd, st);
	if (r) {
		log_warn("cannot bring the pod identity back: dropping it", "container=%s err=%d", pd->cid, r);
		forget_files(pd);
		goto out;
	}
	add_routes(pd);
	pd->phase = POD_READY;
	pd->next = p->list;
	p->list = pd;
	identity_start(pd->id);
	log_info("pod identity back", "container=%s pod=%s/%s ifname=%s", pd->cid, pd->pod_ns ? pd->pod_ns : "",
		 pd->pod_name ? pd->pod_name : "", pd->ifname);
	pd = NULL;
	ok = true;
out:
	pod_free(pd);
	json_free(j);
	return ok;
}

size_t pods_restore(struct pods *p)
{
	DIR *d = opendir(p->dir);
	struct dirent *e;
	size_t n = 0;

	if (!d)
		return 0;
	while ((e = readdir(d))) {
		size_t l = strlen(e->d_name);
		if (l > 4 && !strcmp(e->d_name + l - 4, ".pod"))
			n += restore_one(p, e->d_name);
	}
	closedir(d);
	return n;
}

void pods_free(struct pods *p)
{
	if (!p)
		return;
	while (p->list) {
		struct pod *pd = p->list;
		p->list = pd->next;
		if (pd->reply)
			localapi_reply_error(pd->reply, 503, "NotReady", "knitd is stopping");
		if (pd->phase == POD_READY)
			identity_save(pd->id);
		else
			forget_files(pd); /* half made: the operator's backstop takes the Device */
		pod_free(pd);
	}
	while (p->reaps) {
		struct reap *r = p->reaps;
		p->reaps = r->next;
		reap_free(r);
	}
	free(p->dir);
	free(p);
}
