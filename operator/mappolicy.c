/* The access policy as map streams see it (loop thread only): per tailnet
 * with a policy in force, the policy compiled for its Devices (a
 * policy_net, updated incrementally as Devices change); per stream, the
 * peers it may see and its packet filter.
 *
 * Records stay shared: the change log holds one record per device for all
 * streams, and a stream under a policy skips the peers it does not see
 * (changelog_cursor.visible). A stream's view (visible peers, filter) is
 * taken when its full netmap starts. Whatever changes a view — a policy
 * change, a device joining, leaving or changing its identity — is sent to
 * exactly the streams whose view it touches as a delta: the new
 * packetFilter if it changed, upserts of the peers the stream now sees
 * and removals of those it no longer sees (struct mapview, merged into
 * the stream's next record through changelog_cursor.extra). A policy
 * change touches only the devices that a rule in one policy but not the
 * other names (policy_net_affected). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "buf.h"
#include "coord-internal.h"
#include "httpd.h"
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
 * usable as a peer). Written straight from the Device (no tree built):
 * a policy change reads every Device of the tailnet. */
static char *device_facts(const struct json *dev)
{
	static const char *const keys[] = { "{\"a\":", ",\"u\":", ",\"t\":", ",\"r\":", ",\"p\":" };
	const struct json *spec = json_get(dev, "spec");
	const struct json *v[] = { json_path(dev, "status", "addresses", NULL), json_get(spec, "user"),
				   json_get(spec, "tags"), json_get(spec, "advertisedRoutes"), json_get(spec, "ownerPod") };
	struct buf text = BUF_INIT(1u << 20);
	int err = 0;

	if (!mapstream_device_usable(dev))
		return NULL;
	for (size_t i = 0; !err && i < sizeof(keys) / sizeof(keys[0]); i++) {
		err = buf_add_str(&text, keys[i]);
		if (!err)
			err = v[i] ? json_dump(v[i], &text, 0) : buf_add_str(&text, "null");
	}
	if (!err)
		err = buf_add_byte(&text, '}');
	if (err) {
		buf_free(&text);
		return NULL;
	}
	return buf_steal(&text, NULL);
}

/* A view change larger than this (the upserted peers' text) restarts the
 * stream's full netmap instead: that one comes in pieces. */
#define MAPVIEW_DELTA_MAX_BYTES (1u << 20)
#define FILTER_MEMBER ",\"packetFilter\":"

/* What a stream under a policy holds besides its peer set (m->peers). */
struct mapview {
	uint8_t filter_hash[16]; /* of the packetFilter it has, or is about to get */
	struct computed *filter; /* pending: its ,"packetFilter":[...] to send; NULL: unchanged */
	struct strmap *up, *rm; /* pending: peers it now sees / no longer sees */
	struct buf peers, removes; /* the record under way */
	struct changelog_extra x;
};

static void computed_put(struct computed *k);

static void view_clear(struct mapview *v)
{
	computed_put(v->filter);
	v->filter = NULL;
	strmap_free(v->up);
	strmap_free(v->rm);
	v->up = v->rm = NULL;
	buf_free(&v->peers);
	buf_free(&v->removes);
}

static void view_free(struct mapview *v)
{
	if (!v)
		return;
	view_clear(v);
	free(v);
}

static struct mapview *view_get(struct mapconn *m)
{
	if (!m->view && (m->view = calloc(1, sizeof(*m->view)))) {
		buf_init(&m->view->peers, MAPVIEW_DELTA_MAX_BYTES);
		buf_init(&m->view->removes, MAPVIEW_DELTA_MAX_BYTES);
	}
	return m->view;
}

static bool view_pending(const struct mapview *v)
{
	return v && (v->filter || (v->up && strmap_len(v->up)) || (v->rm && strmap_len(v->rm)));
}

/* A device's view under a net, computed once per change and shared by
 * its streams (refs: the cache's and each stream's that has its filter
 * pending; peers, whose names belong to the net, only during the change). */
struct computed {
	unsigned refs;
	bool same_peers; /* peers not computed: the change leaves them as they were */
	struct policy_names peers;
	struct buf filter; /* ,"packetFilter":[...] */
	uint8_t hash[16];
};

static void computed_put(struct computed *k)
{
	if (!k || --k->refs)
		return;
	policy_names_free(&k->peers);
	buf_free(&k->filter);
	free(k);
}

static int compute(struct mappolicy *mp, const char *device, bool peers, struct computed **out)
{
	struct computed *k = calloc(1, sizeof(*k));
	int err = k ? 0 : -ENOMEM;

	if (err)
		return err;
	k->refs = 1;
	buf_init(&k->filter, POLICY_FILTER_MAX_BYTES);
	err = buf_add_str(&k->filter, FILTER_MEMBER);
	if (!err && !strmap_has(mp->facts, device)) {
		err = buf_add_str(&k->filter, "[]"); /* not compiled: sees and admits nobody */
	} else if (!err) {
		k->same_peers = !peers;
		if (peers)
			err = policy_net_peers(mp->net, device, &k->peers);
		if (!err) /* each rule's sources written once for all devices */
			err = policy_net_filter_dump(mp->net, device, &k->filter);
	}
	if (!err)
		crypto_generichash(k->hash, sizeof(k->hash), k->filter.data, k->filter.len, NULL, 0);
	if (err)
		computed_put(k);
	else
		*out = k;
	return err;
}

static int set_add(struct strmap **s, const char *name)
{
	if (!*s && !(*s = strmap_new()))
		return -ENOMEM;
	return strmap_set(*s, name, (void *)1, NULL);
}

static bool set_del(struct strmap *s, const char *name)
{
	return s && strmap_del(s, name);
}

/* Moves m's view to k: merges the difference into what is pending, and
 * wakes the stream to send it. */
static int view_apply(struct mapconn *m, struct computed *k)
{
	struct mapview *v = view_get(m);
	struct policy_names added = { 0 }, removed = { 0 };
	int err = v ? 0 : -ENOMEM;

	if (!err && memcmp(v->filter_hash, k->hash, sizeof(k->hash)) != 0) {
		computed_put(v->filter);
		v->filter = k;
		v->filter->refs++;
		memcpy(v->filter_hash, k->hash, sizeof(k->hash));
	}
	if (!err && !k->same_peers)
		err = policy_view_diff(m->peers, &k->peers, &added, &removed);
	/* A peer back in view before its removal went out was never removed
	 * (its record still comes from the log); one gone again before its
	 * upsert went out was never sent. */
	for (size_t i = 0; !err && i < added.len; i++)
		if (!set_del(v->rm, added.v[i]))
			err = set_add(&v->up, added.v[i]);
	for (size_t i = 0; !err && i < removed.len; i++)
		if (!set_del(v->up, removed.v[i]))
			err = set_add(&v->rm, removed.v[i]);
	for (size_t i = 0; !err && i < added.len; i++)
		err = strmap_set(m->peers, added.v[i], (void *)1, NULL);
	/* removed's names are m->peers' keys: delete last. */
	for (size_t i = 0; !err && i < removed.len; i++) {
		char name[254];

		snprintf(name, sizeof(name), "%s", removed.v[i]);
		strmap_del(m->peers, name);
	}
	policy_names_free(&added);
	policy_names_free(&removed);
	if (!err && view_pending(v))
		httpd_stream_wake(m->st);
	return err;
}

/* Brings m's view up to date with mp: a full netmap under way that has
 * sent its first piece starts over (one not started takes its view when
 * it does); otherwise a view delta waits for the stream's next record.
 * cache: device -> struct computed, for the streams of one device.
 * peers: whether its visible peers may have changed too. */
static void view_refresh(struct coord *c, struct mappolicy *mp, struct mapconn *m, struct strmap *cache, bool peers)
{
	struct computed *k = cache ? strmap_get(cache, m->device) : NULL;
	int err = 0;

	if (m->cur.syncing) {
		if (m->cur.header_sent)
			mapstream_sync(m);
		return;
	}
	if (!m->peers) {
		mapstream_sync(m); /* no view yet (allow-all before) */
		return;
	}
	if (!k) {
		err = compute(mp, m->device, peers, &k);
		if (!err && cache && strmap_set(cache, m->device, k, NULL)) {
			computed_put(k);
			k = NULL;
			err = -ENOMEM;
		}
	}
	if (!err)
		err = view_apply(m, k);
	if (!cache)
		computed_put(k);
	if (err) {
		/* The full netmap replaces whatever the agent has. */
		log_warn("coordination: cannot build a view delta; the stream starts over", "device=%s error=%d",
			 m->device, err);
		mapstream_sync(m);
	}
}

static void cache_free(struct strmap *cache)
{
	if (!cache)
		return;
	for (struct strmap_entry *e = strmap_first(cache); e; e = strmap_next(cache, e))
		computed_put(strmap_value(e));
	strmap_free(cache);
}

/* Refreshes the views of the tailnet's streams whose device is in names
 * (NULL: every stream of the tailnet); of those, the peers of all of them
 * (all_peers) or of the ones in peers (may be NULL: none), and the filter
 * alone of the others. */
static void refresh_streams(struct coord *c, const char *tailnet, struct mappolicy *mp, const struct strmap *names,
			    bool all_peers, const struct strmap *peers)
{
	struct strmap *cache = strmap_new();

	for (struct mapconn *m = c->conns; m; m = m->next) {
		if (strcmp(m->tailnet, tailnet) != 0 || (names && !strmap_has(names, m->device)))
			continue;
		if (mp)
			view_refresh(c, mp, m, cache, all_peers || (peers && strmap_has(peers, m->device)));
		else
			mapstream_sync(m);
	}
	cache_free(cache);
}

/* m sees peer now (sees) or not: the one name a device joining, leaving
 * or changing moves in the views of the others it touches (whether two
 * devices see each other depends on those two alone). */
static int view_peer(struct mapconn *m, const char *peer, bool sees)
{
	struct mapview *v = view_get(m);
	int err = v ? 0 : -ENOMEM;

	if (err || sees == strmap_has(m->peers, peer))
		return err;
	if (sees) {
		if (!set_del(v->rm, peer))
			err = set_add(&v->up, peer);
		if (!err)
			err = strmap_set(m->peers, peer, (void *)1, NULL);
	} else {
		if (!set_del(v->up, peer))
			err = set_add(&v->rm, peer);
		if (!err)
			strmap_del(m->peers, peer);
	}
	if (!err)
		httpd_stream_wake(m->st);
	return err;
}

/* Device `name` joined, left or changed; touched: it and the devices that
 * saw it before or see it now (after: those that see it now). The device
 * gets its whole view again; the others their filter (name may be a
 * source in it) and name in or out of their peers, never their whole
 * peer set recomputed. */
static void refresh_touched(struct coord *c, const char *tailnet, struct mappolicy *mp, const struct strmap *touched,
			    const char *name, const struct strmap *after)
{
	struct strmap *cache = strmap_new();

	for (struct mapconn *m = c->conns; m; m = m->next) {
		bool self = !strcmp(m->device, name);
		int err;

		if (strcmp(m->tailnet, tailnet) != 0 || !strmap_has(touched, m->device))
			continue;
		view_refresh(c, mp, m, cache, self || !m->peers);
		if (self || m->cur.syncing || !m->peers)
			continue; /* a whole view, or a full netmap on its way */
		if ((err = view_peer(m, name, after && strmap_has(after, m->device)))) {
			log_warn("coordination: cannot build a view delta; the stream starts over", "device=%s error=%d",
				 m->device, err);
			mapstream_sync(m);
		}
	}
	cache_free(cache);
}

static int names_set(struct strmap **set, const struct policy_names *t)
{
	int err = 0;

	for (size_t i = 0; !err && i < t->len; i++)
		err = set_add(set, t->v[i]);
	return err;
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

/* Fills a new mappolicy from the tailnet's Devices, read in place (the
 * informer's lock is held meanwhile: no copies of 10,000 Devices). */
struct fill {
	struct mappolicy *mp;
	size_t n;
	int err;
};

static void fill_one(const struct json *dev, void *arg)
{
	struct fill *f = arg;
	char *facts;

	f->n++;
	if (f->err || !(facts = device_facts(dev)))
		return;
	if (add_device(f->mp, dev, facts, NULL) == -ENOMEM)
		f->err = -ENOMEM;
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
	struct mappolicy *mp = NULL, *old = NULL, *now;
	struct policy_names affected = { 0 }, peers_affected = { 0 };
	struct strmap *touched = NULL, *peers_touched = NULL;
	struct fill f = { 0 };
	struct policy_ref *ref = policy_store_get(c->op->policies, msg->tailnet);
	int err = 0;

	if (c->stopping)
		goto out;
	if (ref) {
		mp = calloc(1, sizeof(*mp));
		if (!mp || !(mp->facts = strmap_new()) || !(mp->net = policy_net_new(ref->p))) {
			err = -ENOMEM;
			goto out;
		}
		mp->ref = ref;
		ref = NULL;
		f.mp = mp;
		informer_foreach_indexed(c->op->devices, OPERATOR_INDEX_TAILNET, msg->tailnet, fill_one, &f);
		if ((err = f.err))
			goto out;
	}
	if (!mp)
		old = strmap_del(c->policies, msg->tailnet);
	else if ((err = strmap_set(c->policies, msg->tailnet, mp, (void **)&old)))
		goto out;
	now = mp;
	mp = NULL;
	c->stats.policy_changes++;
	log_info("coordination: access policy changed", "tailnet=%s devices=%zu", msg->tailnet, f.n);
	/* Between two policies, only the streams of the devices the change
	 * touches get a view delta; to or from allow-all, every stream of the
	 * tailnet starts over (peers and filter change for all). */
	if (!old || !now || policy_net_affected_views(old->net, now->net, &affected, &peers_affected) ||
	    names_set(&touched, &affected) || names_set(&peers_touched, &peers_affected))
		refresh_streams(c, msg->tailnet, NULL, NULL, true, NULL); /* (or out of memory) */
	else if (touched) /* NULL: the change touches nobody */
		refresh_streams(c, msg->tailnet, now, touched, false, peers_touched);
	policy_names_free(&affected);
	policy_names_free(&peers_affected);
	strmap_free(touched);
	strmap_free(peers_touched);
	mappolicy_free(c, old);
out:
	if (err)
		log_error("coordination: out of memory compiling the policy; the previous one stays",
			  "tailnet=%s", msg->tailnet);
	mappolicy_free(c, mp);
	policy_store_put(c->op->policies, ref);
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
	struct strmap *touched = NULL, *after = NULL;
	struct mappolicy *mp;
	char *facts, *had;
	int err = 0;

	if (!c->policies || !name)
		return;
	/* A Device that moved tailnets leaves the one it was in. */
	for (struct strmap_entry *e = strmap_first(c->policies); e; e = strmap_next(c->policies, e)) {
		struct mappolicy *o = strmap_value(e);
		struct strmap *left = NULL;

		if (strcmp(strmap_key(e), tailnet) != 0 && (had = strmap_del(o->facts, name))) {
			free(had);
			if (!policy_net_remove(o->net, name, &t1) && !names_set(&left, &t1) && left)
				refresh_streams(c, strmap_key(e), o, left, true, NULL);
			policy_names_free(&t1);
			strmap_free(left);
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
	/* A change is a removal and an add: the views of both touched sets
	 * move once, to the net after both. */
	if (had) {
		free(strmap_del(mp->facts, name));
		if (!policy_net_remove(mp->net, name, &t1))
			err = names_set(&touched, &t1); /* t1's names live until the next change */
		policy_names_free(&t1);
	}
	if (facts) {
		int aerr = add_device(mp, dev, facts, &t2);

		if (aerr)
			log_warn("coordination: device left out of the policy", "device=%s error=%d", name, aerr);
		else if (!err)
			err = names_set(&touched, &t2);
		if (!aerr && !err)
			err = names_set(&after, &t2);
	}
	if (err)
		refresh_streams(c, tailnet, NULL, NULL, true, NULL); /* out of memory: everyone starts over */
	else if (touched)
		refresh_touched(c, tailnet, mp, touched, name, after);
	policy_names_free(&t2);
	strmap_free(touched);
	strmap_free(after);
}

static bool visible(void *arg, const char *device)
{
	struct mapconn *m = arg;

	return m->peers && strmap_has(m->peers, device);
}

int mappolicy_view(struct coord *c, struct mapconn *m, struct buf *packet_filter)
{
	struct mappolicy *mp = c->policies ? strmap_get(c->policies, m->tailnet) : NULL;
	struct computed *k = NULL;
	int err = 0;

	strmap_free(m->peers);
	m->peers = NULL;
	m->cur.visible = NULL;
	m->cur.visible_arg = NULL;
	/* The full netmap replaces whatever view change was waiting. */
	view_free(m->view);
	m->view = NULL;
	if (!mp)
		return buf_add_str(packet_filter, "null");
	m->cur.visible = visible;
	m->cur.visible_arg = m;
	if (!(m->peers = strmap_new()) || !view_get(m))
		return -ENOMEM;
	err = compute(mp, m->device, true, &k);
	for (size_t i = 0; !err && i < k->peers.len; i++)
		err = strmap_set(m->peers, k->peers.v[i], (void *)1, NULL);
	if (!err)
		err = buf_add(packet_filter, k->filter.data + strlen(FILTER_MEMBER), k->filter.len - strlen(FILTER_MEMBER));
	if (!err)
		memcpy(m->view->filter_hash, k->hash, sizeof(k->hash));
	computed_put(k);
	return err;
}

void mappolicy_extra(struct coord *c, struct mapconn *m)
{
	struct mapview *v = m->view;
	struct changelog_extra *x;
	int err = 0;

	if (!view_pending(v))
		return;
	x = &v->x;
	buf_reset(&v->peers);
	buf_reset(&v->removes);
	/* Peers now in view: their current record, unless the log still has
	 * it past the cursor (then the walk sends it: not twice in one delta). */
	for (struct strmap_entry *e = v->up ? strmap_first(v->up) : NULL; e && !err; e = strmap_next(v->up, e)) {
		struct node *n = strmap_get(c->nodes, strmap_key(e));

		if (!n || !n->pub.peer || strcmp(n->pub.tailnet, m->tailnet) != 0 || n->pub.seq > m->cur.cursor)
			continue;
		if (v->peers.len)
			err = buf_add_byte(&v->peers, ',');
		if (!err)
			err = buf_add(&v->peers, n->pub.peer, n->pub.peer_len);
	}
	if (err) {
		/* Past MAPVIEW_DELTA_MAX_BYTES (or out of memory): the full
		 * netmap is the better record. */
		view_clear(v);
		changelog_sync(&c->log, &m->cur);
		return;
	}
	/* Peers out of view: their key as the agent has it (a key that
	 * changed since has its removal in the log, sent to every stream). */
	for (struct strmap_entry *e = v->rm ? strmap_first(v->rm) : NULL; e && !err; e = strmap_next(v->rm, e)) {
		struct node *n = strmap_get(c->nodes, strmap_key(e));

		if (n && n->pub.peer && n->pub.node_key[0])
			err = buf_addf(&v->removes, "%s\"%s\"", v->removes.len ? "," : "", n->pub.node_key);
	}
	if (err) {
		view_clear(v);
		changelog_sync(&c->log, &m->cur);
		return;
	}
	*x = (struct changelog_extra){ .peers = (const char *)v->peers.data, .peers_len = v->peers.len,
				       .removes = (const char *)v->removes.data, .removes_len = v->removes.len,
				       .fields = v->filter ? (const char *)v->filter->filter.data : NULL,
				       .fields_len = v->filter ? v->filter->filter.len : 0 };
	if (!x->peers_len && !x->removes_len && !x->fields_len) {
		view_clear(v); /* nothing the agent needs after all */
		return;
	}
	/* The delta needs a seq past the cursor: a log entry to pass. */
	if (m->cur.cursor >= c->log.seq && changelog_mark(&c->log)) {
		view_clear(v);
		changelog_sync(&c->log, &m->cur);
		return;
	}
	m->cur.extra = x;
}

void mappolicy_extra_done(struct mapconn *m, bool sent)
{
	if (m->cur.extra && sent)
		view_clear(m->view);
	m->cur.extra = NULL;
}

void mappolicy_stream_closed(struct mapconn *m)
{
	strmap_free(m->peers);
	m->peers = NULL;
	view_free(m->view);
	m->view = NULL;
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
