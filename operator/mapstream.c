/* Map streams: what each agent sees of its tailnet (peers, DNS, relay map),
 * sent in full when a stream opens and as deltas as devices and soft
 * state change. Loop thread only.
 *
 * Devices are published into the change log (changelog.c, pure: the
 * records, cursors, coalescing and the delta cache live there) as their
 * records (record.c) change; each stream pulls its next record from the
 * log whenever its socket can take more. This file is the wiring: the
 * nodes' soft state, the flush timer, sealing and sending. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "control/channel.h"
#include "coord-internal.h"
#include "httpd.h"
#include "json.h"
#include "kube/informer.h"
#include "kube/meta.h"
#include "log.h"
#include "loop.h"
#include "operator.h"
#include "record.h"
#include "strmap.h"

/* ---- nodes ---- */

static void node_free(struct node *n)
{
	free(n->pub.name);
	free(n->pub.tailnet);
	free(n->pub.peer);
	free(n->endpoints);
	free(n);
}

/* Frees a deleted node nothing points at any more. */
static void node_release(struct node *n)
{
	if (n->dead && n->streams == 0 && n->pub.refs == 0)
		node_free(n);
}

static void on_unref(struct changelog_node *cn, void *arg)
{
	node_release((struct node *)cn);
}

/* The lowest seq a stream still needs: a syncing stream skips removals
 * before its netmap began. */
static uint64_t oldest_cursor(void *arg)
{
	struct coord *c = arg;
	uint64_t oldest = c->log.seq;

	for (struct mapconn *m = c->conns; m; m = m->next) {
		uint64_t need = m->cur.syncing && m->cur.sync_from > m->cur.cursor ? m->cur.sync_from : m->cur.cursor;
		if (need < oldest)
			oldest = need;
	}
	return oldest;
}

void mapstream_init(struct coord *c)
{
	struct changelog_ops ops = { .unref = on_unref, .oldest = oldest_cursor, .arg = c };

	changelog_init(&c->log, &ops);
}

struct node *mapstream_node_get(struct coord *c, const char *device, const char *tailnet)
{
	struct node *n = strmap_get(c->nodes, device);

	if (n || !tailnet)
		return n;
	n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->pub.name = strdup(device);
	n->pub.tailnet = strdup(tailnet);
	if (!n->pub.name || !n->pub.tailnet || strmap_set(c->nodes, device, n, NULL)) {
		free(n->pub.name);
		free(n->pub.tailnet);
		free(n);
		return NULL;
	}
	return n;
}

bool mapstream_device_usable(const struct json *dev)
{
	uint8_t key[32];

	return json_array_len(json_path(dev, "status", "addresses", NULL)) == 2 &&
	       !json_bool(json_path(dev, "status", "keyExpired", NULL), false) && !kube_deleting(dev) &&
	       channel_key_parse(json_str(json_path(dev, "spec", "nodeKey", NULL)), "nodekey:", key);
}

/* The tailnet's MagicDNS suffix: the CRD defaults it, but a Tailnet the
 * informer has not seen yet (or an older object) has none. */
static const char *dns_suffix(const struct json *tn)
{
	return json_str(json_path(tn, "spec", "dnsSuffix", NULL)) ?: RECORD_DEFAULT_SUFFIX;
}

struct json *mapstream_dns_suffix_json(struct coord *c, const char *tailnet)
{
	struct json *tn = informer_get(c->op->tailnets, NULL, tailnet), *s;

	s = json_new_string(dns_suffix(tn));
	json_free(tn);
	return s;
}

/* ---- waking streams ---- */

/* Streams are woken at most every FLUSH_MIN_MS for a change peers must
 * see soon (a new or changed peer, a removal: the first after a quiet
 * spell goes out at once), and after SOFT_FLUSH_MS for soft state alone
 * (online, endpoints): when thousands of agents connect together, each
 * stream then gets one delta a second listing them all, not one per agent.
 * A stream that is reading anyway pulls everything at once. */
static void flush_soon(struct coord *c, bool urgent)
{
	uint64_t now = coord_now_ms(c), due;

	if (c->stopping)
		return; /* coord_shutdown() disarmed the timer for good */
	if (urgent)
		due = now - c->last_flush >= FLUSH_MIN_MS ? now : c->last_flush + FLUSH_MIN_MS;
	else
		due = now + SOFT_FLUSH_MS;
	if (c->flush_armed && c->flush_due <= due)
		return;
	c->flush_armed = true;
	c->flush_due = due;
	loop_timer_arm(c->flush, due - now);
}

/* The node stops being a peer: peers drop its key. */
static void node_unpublish(struct coord *c, struct node *n)
{
	if (!n->pub.peer)
		return;
	if (changelog_unpublish(&c->log, &n->pub))
		log_error("coordination: out of memory; peers keep a removed node", "device=%s", n->pub.name);
	flush_soon(c, true);
}

/* ---- stream records ---- */

/* One record: 4-byte big-endian length, then the sealed frame. */
int mapstream_send(struct mapconn *m, const char *text, size_t len)
{
	struct buf out = BUF_INIT(16u << 20);
	int err = coord_seal_record(&m->ch, text, len, &out);

	if (!err)
		err = httpd_stream_write(m->st, out.data, out.len);
	if (!err)
		m->c->sent_since_trim += out.len;
	buf_free(&out);
	return err;
}

int mapstream_send_json(struct mapconn *m, const struct json *j)
{
	struct buf text = BUF_INIT(16u << 20);
	int err = json_dump(j, &text, 0);

	if (!err)
		err = mapstream_send(m, (const char *)text.data, text.len);
	buf_free(&text);
	return err;
}

void mapstream_sync(struct mapconn *m)
{
	changelog_sync(&m->c->log, &m->cur);
	httpd_stream_wake(m->st);
}

/* The fields of a full netmap besides its peers, as JSON text to follow
 * "self": ,"dns":{...},"relayMap":...,"packetFilter":... (pf: its text) */
static int full_fields(struct coord *c, const char *tailnet, const struct buf *pf, struct buf *out)
{
	struct json *tn = informer_get(c->op->tailnets, NULL, tailnet);
	struct json *f = json_new_object(), *dns = json_new_object(), *ns = json_new_array();
	struct buf text = BUF_INIT(1u << 20);
	int err = f && dns && ns ? 0 : -ENOMEM;

	if (!err)
		err = json_array_append(ns, json_new_string("100.100.100.100"));
	json_put_str(dns, "suffix", dns_suffix(tn), &err);
	json_put(dns, "nameservers", ns, &err);
	json_put(f, "dns", dns, &err);
	json_put(f, "relayMap", json_clone(json_path(tn, "spec", "relayMap", NULL)) ?: json_new_null(), &err);
	if (!err)
		err = json_dump(f, &text, 0);
	/* {"dns":...} -> ,"dns":... (without the braces) */
	if (!err && text.len >= 2) {
		text.data[0] = ',';
		err = buf_add(out, text.data, text.len - 1);
	}
	if (!err)
		err = ctrlkey_fields(c, out);
	if (!err)
		err = buf_add_str(out, ",\"packetFilter\":");
	if (!err)
		err = buf_add(out, pf->data, pf->len);
	if (!err)
		err = buf_add_byte(out, '\0');
	buf_free(&text);
	json_free(f);
	json_free(tn);
	return err;
}

/* Builds and queues m's next record from the log; false if there was
 * nothing to send (or the stream failed). */
static bool emit_record(struct mapconn *m)
{
	struct coord *c = m->c;
	struct buf rec = BUF_INIT(16u << 20), fields = BUF_INIT(1u << 20), pf = BUF_INIT(POLICY_FILTER_MAX_BYTES);
	struct changelog_step step;
	struct node *me = strmap_get(c->nodes, m->device);
	int r = 0;
	bool sent = false;

	if (!m->cur.syncing)
		mappolicy_extra(c, m);
	if (m->cur.syncing && !m->cur.header_sent) {
		r = mappolicy_view(c, m, &pf);
		if (!r)
			r = full_fields(c, m->tailnet, &pf, &fields);
	}
	if (!r)
		r = changelog_next(&c->log, &m->cur, me ? &me->pub : NULL, (const char *)fields.data,
				   c->o.record_bytes, &rec, &step);
	if (r < 0)
		log_error("coordination: cannot build a netmap record", "device=%s error=%d", m->device, r);
	if (r == 1 && mapstream_send(m, (const char *)rec.data, rec.len) == 0) {
		changelog_commit(&c->log, &m->cur, &step, &rec);
		sent = true;
	} else {
		r = 0;
	}
	mappolicy_extra_done(m, sent);
	buf_free(&rec);
	buf_free(&fields);
	buf_free(&pf);
	return r == 1;
}

void mapstream_fill(struct httpd_stream *st, void *arg)
{
	struct mapconn *m = arg;

	while (httpd_stream_queued(st) < STREAM_LOW_WATER && emit_record(m))
		;
}

/* Wakes the streams that have something to pull. */
void mapstream_flush(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct coord *c = arg;

	c->flush_armed = false;
	c->last_flush = coord_now_ms(c);
	for (struct mapconn *m = c->conns; m; m = m->next)
		if (changelog_pending(&c->log, &m->cur))
			httpd_stream_wake(m->st);
}

/* ---- publishing ---- */

struct key_owner {
	const struct json *dev;
	bool earlier; /* another Device with the key came first */
};

/* Is a before b? Older first, then by name: every replica and every
 * event order picks the same holder. */
static bool first(const struct json *a, const struct json *b)
{
	const char *ta = json_str(json_path(a, "metadata", "creationTimestamp", NULL)) ?: "";
	const char *tb = json_str(json_path(b, "metadata", "creationTimestamp", NULL)) ?: "";
	int c = strcmp(ta, tb); /* RFC 3339 UTC: text order is time order */

	return c < 0 || (c == 0 && strcmp(kube_name(a) ?: "", kube_name(b) ?: "") < 0);
}

static void earlier_holder(const struct json *other, void *arg)
{
	struct key_owner *o = arg;

	if (strcmp(kube_name(other) ?: "", kube_name(o->dev) ?: "") != 0 && mapstream_device_usable(other) &&
	    first(other, o->dev))
		o->earlier = true;
}

/* Two Devices with one node key (one made by hand: registration refuses
 * it) would show every agent the key twice: only the first is a peer. */
static bool key_held_before(struct coord *c, const struct json *dev, const char *key)
{
	struct key_owner o = { .dev = dev };

	if (key)
		informer_foreach_indexed(c->op->devices, "nodeKey", key, earlier_holder, &o);
	return o.earlier;
}

/* Devices collected under the informer's lock, published after it: a
 * publish reads the informer again. */
struct devlist {
	const char *tailnet; /* NULL: any */
	struct json **v;
	size_t n, cap;
};

static void collect(const struct json *dev, void *arg)
{
	struct devlist *l = arg;
	struct json *c;

	if (l->tailnet && strcmp(operator_tailnet_of(dev), l->tailnet) != 0)
		return;
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 16;
		struct json **v = realloc(l->v, cap * sizeof(*v));
		if (!v)
			return;
		l->v = v;
		l->cap = cap;
	}
	c = json_clone(dev);
	if (c)
		l->v[l->n++] = c;
}

static void publish_all(struct coord *c, struct devlist *l)
{
	for (size_t i = 0; i < l->n; i++) {
		mapstream_publish_device(c, l->v[i]);
		json_free(l->v[i]);
	}
	free(l->v);
}

/* Why dev's own map streams must end, or NULL: an expired key, a Device
 * being deleted, or a stream that follows another tailnet than the
 * Device's now. Such a stream would go on delivering deltas the device
 * may no longer see (docs/control-protocol.md, "Stream errors"). */
static const char *stream_end_reason(const struct json *dev, const struct mapconn *m, const char **msg)
{
	if (strcmp(m->tailnet, operator_tailnet_of(dev)) != 0) {
		*msg = "this device moved to another tailnet; reconnect for its netmap";
		return "TailnetChanged";
	}
	if (json_bool(json_path(dev, "status", "keyExpired", NULL), false)) {
		*msg = "this device's node key has expired; re-authenticate it";
		return "KeyExpired";
	}
	if (kube_deleting(dev)) {
		*msg = "this device is being deleted; run knit up --authkey to join again";
		return "DeviceDeleted";
	}
	return NULL;
}

/* Ends dev's streams that it may not keep (stream_end_reason) with an
 * error record: nothing follows it on the stream. */
static void end_unusable_streams(struct coord *c, const struct json *dev)
{
	const char *name = kube_name(dev) ?: "";

	for (struct mapconn *m = c->conns; m; m = m->next) {
		const char *code, *msg;
		struct json *e;

		if (m->ended || strcmp(m->device, name) != 0 || !(code = stream_end_reason(dev, m, &msg)))
			continue;
		e = coord_error_reply(code, "%s", msg);
		if (e)
			mapstream_send_json(m, e);
		json_free(e);
		m->ended = true;
		httpd_stream_close(m->st);
		coord_refused(c, "stream", code);
		log_info("coordination: map stream ended", "device=%s code=%s tailnet=%s", name, code, m->tailnet);
	}
}

/* Logs dev's record if it changed (or its removal if it is no longer a peer). */
void mapstream_publish_device(struct coord *c, const struct json *dev)
{
	const char *name = kube_name(dev), *tailnet = operator_tailnet_of(dev);
	const char *key = json_str(json_path(dev, "spec", "nodeKey", NULL));
	struct node *n = mapstream_node_get(c, name, tailnet);
	struct buf text = BUF_INIT(1u << 20);
	struct record_soft soft;
	struct netmap_node rec;
	struct json *suffix;
	unsigned dropped = 0;
	uint64_t hard = 0;
	char why[160];
	bool urgent, usable = mapstream_device_usable(dev), moved;
	int err;

	if (!n)
		return;
	end_unusable_streams(c, dev);
	if (usable && key_held_before(c, dev, key)) {
		if (n->pub.peer)
			log_warn("coordination: another device holds this node key; not a peer", "device=%s", name);
		usable = false;
	}
	moved = strcmp(n->pub.tailnet, tailnet) != 0;
	if (!usable || moved) {
		/* Not (or no longer) a usable peer here: peers that knew it drop it. */
		node_unpublish(c, n);
		if (moved) {
			char *t = strdup(tailnet);
			if (t) {
				free(n->pub.tailnet);
				n->pub.tailnet = t;
			}
		}
		if (!usable)
			return;
	}
	if (n->pub.peer && key && strcmp(n->pub.node_key, key) != 0)
		node_unpublish(c, n); /* a rotated key: the old one is gone */
	suffix = mapstream_dns_suffix_json(c, tailnet);
	soft = (struct record_soft){ .endpoints = n->endpoints, .nendpoints = n->nendpoints, .relay = n->relay,
				     .online = n->streams > 0 };
	err = suffix ? record_from_device(dev, json_str(suffix), &soft, &rec, &dropped, why, sizeof(why)) : -ENOMEM;
	json_free(suffix);
	if (err) {
		log_warn("coordination: device is no peer", "device=%s reason=\"%s\"", name, why);
		node_unpublish(c, n);
		return;
	}
	if (dropped && !n->pub.peer)
		log_warn("coordination: fields of the device left out of its record (not valid)", "device=%s count=%u",
			 name, dropped);
	err = record_text(&rec, &text, &hard);
	netmap_node_free(&rec);
	if (err || (n->pub.peer && n->pub.peer_len == text.len && memcmp(n->pub.peer, text.data, text.len) == 0)) {
		buf_free(&text);
		return;
	}
	urgent = !n->pub.peer || hard != n->hard_hash;
	free(n->pub.peer);
	n->pub.peer_len = text.len;
	n->pub.peer = buf_steal(&text, NULL);
	n->hard_hash = hard;
	snprintf(n->pub.node_key, sizeof(n->pub.node_key), "%s", key ? key : "");
	if (changelog_upsert(&c->log, &n->pub))
		log_error("coordination: out of memory; peers miss a change", "device=%s", name);
	flush_soon(c, urgent);
}

void mapstream_node_stream(struct coord *c, struct node *n, bool opened, const struct json *dev)
{
	bool transition = opened ? n->streams++ == 0 : --n->streams == 0;
	struct json *found = NULL;

	log_debug("map stream", "device=%s opened=%s streams=%d dead=%s", n->pub.name, opened ? "yes" : "no",
		  n->streams, n->dead ? "yes" : "no");
	if (n->dead) {
		node_release(n);
		return;
	}
	if (c->stopping || (!transition && !dev))
		return;
	/* Online or offline: the API server hears of the transition, peers of
	 * the new record. */
	if (transition)
		register_online_changed(c, n->pub.name, opened);
	if (!dev)
		dev = found = informer_get(c->op->devices, NULL, n->pub.name);
	if (dev)
		mapstream_publish_device(c, dev);
	json_free(found);
}

void mapstream_device_deleted(struct coord *c, const struct json *dev)
{
	const char *name = kube_name(dev);
	struct node *n = strmap_del(c->nodes, name);
	struct json *d;

	if (n) {
		node_unpublish(c, n);
		n->dead = true;
	}
	/* Its own streams end: the identity no longer exists. */
	d = coord_error_reply("DeviceDeleted", "this device was deleted; run knit up --authkey to join again");
	for (struct mapconn *m = c->conns; m; m = m->next) {
		if (strcmp(m->device, name) == 0 && !m->ended) {
			mapstream_send_json(m, d);
			m->ended = true;
			httpd_stream_close(m->st);
			coord_refused(c, "stream", "DeviceDeleted");
		}
	}
	json_free(d);
	if (n)
		node_release(n);
	/* A device that shares the deleted one's node key may be a peer now. */
	if (json_str(json_path(dev, "spec", "nodeKey", NULL))) {
		struct devlist l = { 0 };

		informer_foreach_indexed(c->op->devices, "nodeKey", json_str(json_path(dev, "spec", "nodeKey", NULL)),
					 collect, &l);
		publish_all(c, &l);
	}
}

/* Only the relay map differs between the two specs? */
static bool only_relay_map_changed(const struct json *old, const struct json *tn)
{
	struct json *a = json_clone(json_get(old, "spec")), *b = json_clone(json_get(tn, "spec"));
	bool only;

	if (!a || !b) {
		json_free(a);
		json_free(b);
		return false;
	}
	json_object_del(a, "relayMap");
	json_object_del(b, "relayMap");
	only = json_equal(a, b);
	json_free(a);
	json_free(b);
	return only;
}

/* A relay map edit goes out as a delta: "relayMap" in every stream's next
 * record, through the log. */
static int relay_map_delta(struct coord *c, const struct json *tn)
{
	struct json *f = json_new_object();
	struct buf text = BUF_INIT(1u << 20);
	int err = f ? 0 : -ENOMEM;

	json_put(f, "relayMap", json_clone(json_path(tn, "spec", "relayMap", NULL)) ?: json_new_null(), &err);
	if (!err)
		err = json_dump(f, &text, 0);
	/* {"relayMap":...} -> "relayMap":... */
	if (!err && text.len >= 2) {
		text.data[text.len - 1] = '\0';
		err = changelog_tailnet_fields(&c->log, kube_name(tn), (const char *)text.data + 1);
	}
	if (!err)
		flush_soon(c, true);
	buf_free(&text);
	json_free(f);
	return err;
}

void mapstream_tailnet_changed(struct coord *c, const struct json *old, const struct json *tn)
{
	struct devlist l = { .tailnet = kube_name(tn) };

	if (old && only_relay_map_changed(old, tn) && relay_map_delta(c, tn) == 0)
		return;
	/* The DNS suffix: rare. The records carry the suffix (fqdn); every
	 * stream of the tailnet starts over with a full netmap. */
	informer_foreach(c->op->devices, collect, &l);
	publish_all(c, &l);
	for (struct mapconn *m = c->conns; m; m = m->next)
		if (strcmp(m->tailnet, kube_name(tn)) == 0)
			mapstream_sync(m);
}

void mapstream_free(struct coord *c)
{
	/* Deleted nodes only the log held go with their last entry; the live
	 * ones below. */
	changelog_free(&c->log);
	if (c->nodes) {
		for (struct strmap_entry *e = strmap_first(c->nodes); e; e = strmap_next(c->nodes, e))
			node_free(strmap_value(e));
		strmap_free(c->nodes);
		c->nodes = NULL;
	}
}

static void add_tailnet_fields(const struct json *tn, void *arg)
{
	struct { struct coord *c; const char *text; int err; } *a = arg;

	if (!a->err)
		a->err = changelog_tailnet_fields(&a->c->log, kube_name(tn), a->text);
}

int mapstream_all_tailnets_fields(struct coord *c, const char *text)
{
	struct { struct coord *c; const char *text; int err; } a = { c, text, 0 };

	if (!c->op->tailnets)
		return 0; /* not leading: no streams */
	informer_foreach(c->op->tailnets, add_tailnet_fields, &a);
	if (!a.err)
		flush_soon(c, true);
	return a.err;
}
