/* The access policy as map streams see it (loop thread only): per tailnet
 * with a policy in force, the policy compiled for its Devices (a
 * policy_net, updated incrementally as Devices change); per stream, the
 * peers it may see and its packet filter.
 *
 * Records stay shared: the change log holds one record per device for all
 * streams, and a stream under a policy skips the peers it does not see
 * (changelog_cursor.visible). A stream's view (visible peers, filter) is
 * taken when its full netmap starts; whatever changes a view — a policy
 * change, a device joining, leaving or changing its identity — restarts
 * the full netmap of exactly the streams whose view it touches, and the
 * agent replaces its peer set and filter with the new one. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "coord-internal.h"
#include "json.h"
#include "kube/informer.h"
#include "kube/meta.h"
#include "log.h"
#include "loop.h"
#include "operator.h"
#include "policy.h"
#include "strmap.h"

/* One tailnet under a policy. */
struct mappolicy {
	struct policy_ref *ref;
	struct policy_net *net;
	struct strmap *facts; /* device -> its identity facts as JSON text (char *) */
};

static void facts_free(struct strmap *f)
{
	if (!f)
		return;
	for (struct strmap_entry *e = strmap_first(f); e; e = strmap_next(f, e))
		free(strmap_value(e));
	strmap_free(f);
}

static void mappolicy_free(struct coord *c, struct mappolicy *mp)
{
	if (!mp)
		return;
	policy_net_free(mp->net);
	policy_store_put(c->op->policies, mp->ref);
	facts_free(mp->facts);
	free(mp);
}

/* What the compiler reads of a Device, as text: a change of it is a
 * remove and an add. NULL for a Device the compiler does not take (not
 * usable as a peer). */
static char *device_facts(const struct json *dev)
{
	struct json *f = json_new_object();
	struct buf text = BUF_INIT(1u << 20);
	const struct json *spec = json_get(dev, "spec");
	int err = f ? 0 : -ENOMEM;
	char *out = NULL;

	if (!mapstream_device_usable(dev)) {
		json_free(f);
		return NULL;
	}
	json_put(f, "a", json_clone(json_path(dev, "status", "addresses", NULL)) ?: json_new_null(), &err);
	json_put(f, "u", json_clone(json_get(spec, "user")) ?: json_new_null(), &err);
	json_put(f, "t", json_clone(json_get(spec, "tags")) ?: json_new_null(), &err);
	json_put(f, "r", json_clone(json_get(spec, "advertisedRoutes")) ?: json_new_null(), &err);
	json_put(f, "p", json_clone(json_get(spec, "ownerPod")) ?: json_new_null(), &err);
	if (!err && !json_dump(f, &text, 0) && !buf_add_byte(&text, '\0'))
		out = buf_steal(&text, NULL);
	buf_free(&text);
	json_free(f);
	return out;
}

static void sync_tailnet(struct coord *c, const char *tailnet)
{
	for (struct mapconn *m = c->conns; m; m = m->next)
		if (strcmp(m->tailnet, tailnet) == 0)
			mapstream_sync(m);
}

static void sync_touched(struct coord *c, const char *tailnet, const struct policy_names *t)
{
	for (struct mapconn *m = c->conns; m; m = m->next) {
		if (strcmp(m->tailnet, tailnet) != 0)
			continue;
		for (size_t i = 0; i < t->len; i++)
			if (strcmp(t->v[i], m->device) == 0) {
				mapstream_sync(m);
				break;
			}
	}
}

/* Adds dev (usable) to mp; touched gets what to recompile. */
static int add_device(struct mappolicy *mp, const struct json *dev, char *facts, struct policy_names *touched)
{
	struct policy_prefix *routes = calloc(POLICY_DEVICE_MAX_ROUTES, sizeof(*routes));
	const char *tags[POLICY_DEVICE_MAX_TAGS];
	struct policy_device d;
	int err = routes ? policy_device_from_json(dev, &d, tags, routes) : -ENOMEM;

	if (!err)
		err = policy_net_add(mp->net, &d, touched);
	if (!err)
		err = strmap_set(mp->facts, d.name, facts, NULL);
	if (err)
		free(facts);
	free(routes);
	return err;
}

struct devs {
	struct json *arr;
	int err;
};

static void collect(const struct json *dev, void *arg)
{
	struct devs *d = arg;

	if (!d->err && json_array_append(d->arr, json_clone(dev)))
		d->err = -ENOMEM;
}

struct policy_changed_msg {
	struct coord *c;
	char tailnet[254];
};

/* Builds the tailnet's compiled policy afresh from the store and the
 * Devices, and restarts every stream of the tailnet. */
static void rebuild(struct loop *loop, void *arg)
{
	struct policy_changed_msg *msg = arg;
	struct coord *c = msg->c;
	struct mappolicy *mp = NULL, *old = NULL;
	struct devs d = { .arr = json_new_array() };
	struct policy_ref *ref = policy_store_get(c->op->policies, msg->tailnet);
	int err = 0;

	if (c->stopping)
		goto out;
	if (ref) {
		mp = calloc(1, sizeof(*mp));
		if (!mp || !d.arr || !(mp->facts = strmap_new()) || !(mp->net = policy_net_new(ref->p))) {
			err = -ENOMEM;
			goto out;
		}
		mp->ref = ref;
		ref = NULL;
		informer_foreach_indexed(c->op->devices, OPERATOR_INDEX_TAILNET, msg->tailnet, collect, &d);
		err = d.err;
		for (size_t i = 0; !err && i < json_array_len(d.arr); i++) {
			const struct json *dev = json_array_at(d.arr, i);
			char *facts = device_facts(dev);

			if (facts && add_device(mp, dev, facts, NULL) == -ENOMEM)
				err = -ENOMEM;
		}
		if (err)
			goto out;
	}
	if (!mp)
		old = strmap_del(c->policies, msg->tailnet);
	else if ((err = strmap_set(c->policies, msg->tailnet, mp, (void **)&old)))
		goto out;
	mp = NULL;
	mappolicy_free(c, old);
	c->stats.policy_changes++;
	log_info("coordination: access policy changed; streams restart", "tailnet=%s devices=%zu", msg->tailnet,
		 json_array_len(d.arr));
	sync_tailnet(c, msg->tailnet);
out:
	if (err)
		log_error("coordination: out of memory compiling the policy; the previous one stays",
			  "tailnet=%s", msg->tailnet);
	mappolicy_free(c, mp);
	policy_store_put(c->op->policies, ref);
	json_free(d.arr);
	free(msg);
}

void coord_policy_changed(struct coord *c, const char *tailnet)
{
	struct policy_changed_msg *msg;

	if (!c)
		return;
	msg = calloc(1, sizeof(*msg));
	if (!msg) {
		log_error("coordination: out of memory; a policy change waits for the next one", "tailnet=%s",
			  tailnet);
		return;
	}
	msg->c = c;
	snprintf(msg->tailnet, sizeof(msg->tailnet), "%s", tailnet);
	if (loop_post(c->op->loop, rebuild, msg))
		free(msg);
}

void mappolicy_device_changed(struct coord *c, const struct json *dev, bool deleted)
{
	const char *name = kube_name(dev), *tailnet = operator_tailnet_of(dev);
	struct policy_names t1 = { 0 }, t2 = { 0 };
	struct mappolicy *mp;
	char *facts, *had;
	int err = 0;

	if (!c->policies || !name)
		return;
	/* A Device that moved tailnets leaves the one it was in. */
	for (struct strmap_entry *e = strmap_first(c->policies); e; e = strmap_next(c->policies, e)) {
		struct mappolicy *o = strmap_value(e);

		if (strcmp(strmap_key(e), tailnet) != 0 && (had = strmap_del(o->facts, name))) {
			free(had);
			if (!policy_net_remove(o->net, name, &t1))
				sync_touched(c, strmap_key(e), &t1);
			policy_names_free(&t1);
		}
	}
	if (!(mp = strmap_get(c->policies, tailnet)))
		return;
	facts = deleted ? NULL : device_facts(dev);
	had = strmap_get(mp->facts, name);
	if ((!facts && !had) || (facts && had && !strcmp(facts, had))) {
		free(facts);
		return; /* nothing the policy reads changed */
	}
	if (had) {
		free(strmap_del(mp->facts, name));
		policy_net_remove(mp->net, name, &t1);
	}
	/* t1's names belong to the net until its next change: sync first. */
	sync_touched(c, tailnet, &t1);
	policy_names_free(&t1);
	if (facts)
		err = add_device(mp, dev, facts, &t2);
	if (err)
		log_warn("coordination: device left out of the policy", "device=%s error=%d", name, err);
	sync_touched(c, tailnet, &t2);
	policy_names_free(&t2);
}

static bool visible(void *arg, const char *device)
{
	struct mapconn *m = arg;

	return m->peers && strmap_has(m->peers, device);
}

int mappolicy_view(struct coord *c, struct mapconn *m, struct buf *packet_filter)
{
	struct mappolicy *mp = c->policies ? strmap_get(c->policies, m->tailnet) : NULL;
	struct policy_names names = { 0 };
	struct policy_filter f = { 0 };
	int err = 0;

	strmap_free(m->peers);
	m->peers = NULL;
	m->cur.visible = NULL;
	m->cur.visible_arg = NULL;
	if (!mp)
		return buf_add_str(packet_filter, "null");
	m->cur.visible = visible;
	m->cur.visible_arg = m;
	if (!(m->peers = strmap_new()))
		return -ENOMEM;
	if (!strmap_has(mp->facts, m->device))
		return buf_add_str(packet_filter, "[]"); /* not compiled (yet): sees and admits nobody */
	err = policy_net_peers(mp->net, m->device, &names);
	for (size_t i = 0; !err && i < names.len; i++)
		err = strmap_set(m->peers, names.v[i], (void *)1, NULL);
	if (!err)
		err = policy_net_filter(mp->net, m->device, &f);
	if (!err)
		err = policy_filter_dump(&f, packet_filter);
	policy_filter_free(&f);
	policy_names_free(&names);
	return err;
}

void mappolicy_stream_closed(struct mapconn *m)
{
	strmap_free(m->peers);
	m->peers = NULL;
}

void mappolicy_free_all(struct coord *c)
{
	if (!c->policies)
		return;
	for (struct strmap_entry *e = strmap_first(c->policies); e; e = strmap_next(c->policies, e))
		mappolicy_free(c, strmap_value(e));
	strmap_free(c->policies);
	c->policies = NULL;
}
