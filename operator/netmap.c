/* Netmaps: what each agent sees of its tailnet (peers, DNS, relay map),
 * sent in full when a map stream opens and as deltas as devices and soft
 * state change. Loop thread only.
 *
 * Every change to what peers see is one entry in a change log (an upsert
 * of a device's cached record text, or the removal of a node key). A map
 * stream is a cursor into that log: when its socket can take more, it
 * pulls the entries past its cursor, skipping the ones a later change made
 * stale, as one sealed record of at most about RECORD_CHUNK bytes of peers.
 * A full netmap is the same walk from the start, in pieces marked "more".
 * So the work per change is one record text, serialised once; a client
 * that reads slowly gets fewer, larger deltas instead of a growing queue;
 * and the server's memory per stream stays bounded by the low-water mark
 * whatever the tailnet's size. */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

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
#include "wg/noise.h"

/* ---- nodes ---- */

struct node *coord_node_get(struct coord *c, const char *device, const char *tailnet)
{
	struct node *n = strmap_get(c->nodes, device);

	if (n || !tailnet)
		return n;
	n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->name = strdup(device);
	n->tailnet = strdup(tailnet);
	if (!n->name || !n->tailnet || strmap_set(c->nodes, device, n, NULL)) {
		free(n->name);
		free(n->tailnet);
		free(n);
		return NULL;
	}
	return n;
}

static void node_free(struct node *n)
{
	free(n->name);
	free(n->tailnet);
	free(n->endpoints);
	free(n->peer);
	free(n);
}

/* Frees a deleted node nothing points at any more. */
static void node_release(struct node *n)
{
	if (n->dead && n->streams == 0 && n->refs == 0)
		node_free(n);
}

bool coord_dev_usable(const struct json *dev)
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

struct json *coord_dns_suffix_json(struct coord *c, const char *tailnet)
{
	struct json *tn = informer_get(c->op->tailnets, NULL, tailnet), *s;

	s = json_new_string(dns_suffix(tn));
	json_free(tn);
	return s;
}

/* ---- the change log ---- */

/* Streams are woken at most every FLUSH_MIN_MS for a change peers must
 * see soon (a new or changed peer, a removal: the first after a quiet
 * spell goes out at once), and after SOFT_FLUSH_MS for soft state alone
 * (online, endpoints): when thousands of agents connect together, each
 * stream then gets one delta a second listing them all, not one per agent.
 * A stream that is reading anyway pulls everything at once. */
static void flush_soon(struct coord *c, bool urgent)
{
	uint64_t now = coord_now_ms(c), due;

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

static bool entry_live(const struct logent *e)
{
	return e->n ? !e->n->dead && e->n->seq == e->seq : true;
}

/* Lets go of what an entry holds (its node's reference, or its removal). */
static void entry_drop(struct logent *e)
{
	if (e->n) {
		e->n->refs--;
		node_release(e->n);
	} else {
		free(e->rm->tailnet);
		free(e->rm->device);
		free(e->rm);
	}
}

static void log_compact(struct coord *c)
{
	uint64_t oldest = c->seq; /* removals at or before every cursor are done with */
	size_t k = 0;

	for (struct mapconn *m = c->conns; m; m = m->next) {
		/* a syncing stream skips removals before its netmap began */
		uint64_t need = m->syncing && m->sync_from > m->cursor ? m->sync_from : m->cursor;
		if (need < oldest)
			oldest = need;
	}
	for (size_t i = 0; i < c->log_len; i++) {
		struct logent *e = &c->log[i];
		bool keep = e->n ? entry_live(e) : e->seq > oldest;

		if (keep)
			c->log[k++] = *e;
		else
			entry_drop(e);
	}
	c->log_len = k;
	c->log_live = k;
	if (c->log_cap > 1024 && k < c->log_cap / 4) {
		struct logent *smaller = realloc(c->log, (c->log_cap / 2) * sizeof(*c->log));
		if (smaller) {
			c->log = smaller;
			c->log_cap /= 2;
		}
	}
}

/* Appends one entry (n, or rm); false if out of memory. urgent: see
 * flush_soon(). */
static bool log_append(struct coord *c, struct node *n, struct removal *rm, bool urgent)
{
	if (c->log_len > 1024 && c->log_len > 2 * c->log_live)
		log_compact(c);
	if (c->log_len == c->log_cap) {
		size_t cap = c->log_cap ? 2 * c->log_cap : 1024;
		struct logent *bigger = realloc(c->log, cap * sizeof(*c->log));
		if (!bigger)
			return false;
		c->log = bigger;
		c->log_cap = cap;
	}
	if (n && n->seq)
		c->log_live--; /* its previous entry is stale now */
	c->log[c->log_len++] = (struct logent){ .seq = ++c->seq, .n = n, .rm = rm };
	c->log_live++;
	if (n) {
		n->seq = c->seq;
		n->refs++;
	}
	flush_soon(c, urgent);
	return true;
}

static void log_removal(struct coord *c, const char *tailnet, const char *device, const char *node_key)
{
	struct removal *rm = calloc(1, sizeof(*rm));

	if (rm) {
		rm->tailnet = strdup(tailnet);
		rm->device = strdup(device);
		snprintf(rm->node_key, sizeof(rm->node_key), "%s", node_key);
	}
	if (!rm || !rm->tailnet || !rm->device || !log_append(c, NULL, rm, true)) {
		log_error("coordination: out of memory; peers keep a removed node", "device=%s", device);
		if (rm) {
			free(rm->tailnet);
			free(rm->device);
		}
		free(rm);
	}
}

/* The node stops being a peer: its entry goes stale, peers drop its key. */
static void node_unpublish(struct coord *c, struct node *n)
{
	if (!n->peer)
		return;
	free(n->peer);
	n->peer = NULL;
	if (n->seq) {
		n->seq = 0;
		c->log_live--;
	}
	log_removal(c, n->tailnet, n->name, n->node_key);
}

/* First index whose seq is greater than seq. */
static size_t log_after(const struct coord *c, uint64_t seq)
{
	size_t lo = 0, hi = c->log_len;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (c->log[mid].seq <= seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* ---- stream records ---- */

/* One record: 4-byte big-endian length, then the sealed frame. */
int coord_stream_send(struct mapconn *m, const char *text, size_t len)
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

int coord_stream_send_json(struct mapconn *m, const struct json *j)
{
	struct buf text = BUF_INIT(16u << 20);
	int err = json_dump(j, &text, 0);

	if (!err)
		err = coord_stream_send(m, (const char *)text.data, text.len);
	buf_free(&text);
	return err;
}

void coord_stream_sync(struct mapconn *m)
{
	m->cursor = 0;
	m->sync_from = m->c->seq;
	m->syncing = true;
	m->header_sent = false;
	httpd_stream_wake(m->st);
}

/* The fields of a full netmap besides its peers, as JSON text to follow
 * "self": ,"dns":{...},"relayMap":...,"packetFilter":null */
static int full_fields(struct coord *c, const char *tailnet, struct buf *out)
{
	struct json *tn = informer_get(c->op->tailnets, NULL, tailnet);
	struct json *f = json_new_object(), *dns = json_new_object(), *ns = json_new_array();
	const char *suffix = dns_suffix(tn);
	struct buf text = BUF_INIT(1u << 20);
	int err;

	json_array_append(ns, json_new_string("100.100.100.100"));
	json_object_set(dns, "suffix", json_new_string(suffix));
	json_object_set(dns, "nameservers", ns);
	json_object_set(f, "dns", dns);
	json_object_set(f, "relayMap", json_clone(json_path(tn, "spec", "relayMap", NULL)) ?: json_new_null());
	json_object_set(f, "packetFilter", json_new_null());
	err = json_dump(f, &text, 0);
	/* {"dns":...} -> ,"dns":... (without the braces) */
	if (!err && text.len >= 2) {
		text.data[0] = ',';
		err = buf_add(out, text.data, text.len - 1);
	}
	buf_free(&text);
	json_free(f);
	json_free(tn);
	return err;
}

static int add_member(struct buf *rec, const char *open, const struct buf *text, const char *close)
{
	int err = buf_add_str(rec, open);

	if (!err)
		err = buf_add(rec, text->data, text->len);
	if (!err)
		err = buf_add_str(rec, close);
	return err;
}

/* Is the cached delta m's next record? It is while the log has not grown
 * (checked first: entries it names are alive until then), for a stream of
 * the same tailnet at the same cursor whose own device it does not name. */
static bool delta_cached(struct coord *c, const struct mapconn *m)
{
	if (!c->delta.valid || c->delta.seq != c->seq || c->delta.from != m->cursor ||
	    strcmp(c->delta.tailnet, m->tailnet) != 0)
		return false;
	for (size_t k = 0; k < c->delta.nwho; k++) {
		const struct delta_who *w = &c->delta.who[k];
		if (w->n ? w->n == m->node : strcmp(w->rm->device, m->device) == 0)
			return false;
	}
	return true;
}

/* Builds and queues m's next record from the log; false if there was
 * nothing to send (or the stream failed). */
static bool emit_record(struct mapconn *m)
{
	struct coord *c = m->c;
	struct buf rec = BUF_INIT(16u << 20), peers = BUF_INIT(16u << 20), removes = BUF_INIT(16u << 20);
	const struct node *self = NULL;
	size_t i = log_after(c, m->cursor);
	uint64_t upto = m->cursor;
	bool more, ok = false;
	int err = 0;

	struct delta_who who[DELTA_CACHE_WHO];
	size_t nwho = 0, from = i;

	if (!m->syncing && i == c->log_len)
		return false;
	if (!m->syncing && delta_cached(c, m)) {
		if (coord_stream_send(m, (const char *)c->delta.text.data, c->delta.text.len))
			return false;
		m->cursor = c->delta.upto;
		return true;
	}
	for (; i < c->log_len && peers.len + removes.len < c->o.record_bytes && !err; i++) {
		const struct logent *e = &c->log[i];
		upto = e->seq;
		if (nwho < DELTA_CACHE_WHO)
			who[nwho] = (struct delta_who){ .n = e->n, .rm = e->rm };
		nwho++;
		if (e->n) {
			const struct node *n = e->n;
			if (!entry_live(e) || !n->peer || strcmp(n->tailnet, m->tailnet) != 0)
				continue;
			if (strcmp(n->name, m->device) == 0) {
				self = n;
				continue;
			}
			if (peers.len)
				err = buf_add_byte(&peers, ',');
			if (!err)
				err = buf_add(&peers, n->peer, n->peer_len);
		} else {
			const struct removal *rm = e->rm;
			if (e->seq <= m->sync_from && m->syncing)
				continue; /* before this netmap began: never sent */
			if (strcmp(rm->tailnet, m->tailnet) != 0 || strcmp(rm->device, m->device) == 0)
				continue;
			err = buf_addf(&removes, "%s\"%s\"", removes.len ? "," : "", rm->node_key);
		}
	}
	if (err)
		goto out;
	more = m->syncing && i < c->log_len;
	if (!m->syncing && !peers.len && !removes.len && !self) {
		m->cursor = upto; /* only other tailnets' or stale entries */
		goto out;
	}
	if (m->syncing && !m->header_sent) {
		const struct node *me = strmap_get(c->nodes, m->device);
		if (!self)
			self = me;
		err = buf_addf(&rec, "{\"type\":\"full\",\"seq\":%llu,\"self\":", (unsigned long long)upto);
		if (!err)
			err = self && self->peer ? buf_add(&rec, self->peer, self->peer_len) : buf_add_str(&rec, "null");
		if (!err)
			err = full_fields(c, m->tailnet, &rec);
		if (!err)
			err = buf_add_str(&rec, ",\"peers\":[");
		if (!err && peers.len)
			err = buf_add(&rec, peers.data, peers.len);
		if (!err)
			err = buf_add_byte(&rec, ']');
		/* Removals in the first piece are of peers it never sent. */
	} else {
		/* Text is copied with buf_add: printf's %.*s is slow on 64 KiB. */
		err = buf_addf(&rec, "{\"type\":\"delta\",\"seq\":%llu", (unsigned long long)upto);
		if (!err && peers.len)
			err = add_member(&rec, ",\"upsert\":[", &peers, "]");
		if (!err && removes.len)
			err = add_member(&rec, ",\"remove\":[", &removes, "]");
		if (!err && self && self->peer) {
			err = buf_add_str(&rec, ",\"self\":");
			if (!err)
				err = buf_add(&rec, self->peer, self->peer_len);
		}
	}
	if (!err && m->syncing)
		err = buf_add_str(&rec, more ? ",\"more\":true" : ",\"more\":false");
	if (!err)
		err = buf_add_byte(&rec, '}');
	if (err || coord_stream_send(m, (const char *)rec.data, rec.len))
		goto out;
	/* A delta that covers the log to its end and is not about this
	 * stream's own device is what every stream of the tailnet at the same
	 * cursor gets next: keep its text. */
	if (!m->syncing && !self && i == c->log_len && nwho <= DELTA_CACHE_WHO && i > from) {
		buf_reset(&c->delta.text);
		if (buf_add(&c->delta.text, rec.data, rec.len) == 0) {
			c->delta.valid = true;
			c->delta.from = m->cursor;
			c->delta.upto = upto;
			c->delta.seq = c->seq;
			snprintf(c->delta.tailnet, sizeof(c->delta.tailnet), "%s", m->tailnet);
			memcpy(c->delta.who, who, nwho * sizeof(*who));
			c->delta.nwho = nwho;
		} else {
			c->delta.valid = false;
		}
	}
	m->cursor = upto;
	m->header_sent = true;
	if (!more)
		m->syncing = false;
	ok = true;
out:
	if (err)
		log_error("coordination: cannot build a netmap record", "device=%s error=%d", m->device, err);
	buf_free(&rec);
	buf_free(&peers);
	buf_free(&removes);
	return ok;
}

void coord_stream_fill(struct httpd_stream *st, void *arg)
{
	struct mapconn *m = arg;

	while (httpd_stream_queued(st) < STREAM_LOW_WATER && emit_record(m))
		;
}

/* Wakes the streams that have something to pull. */
void coord_flush(struct loop *loop, struct loop_timer *t, void *arg)
{
	struct coord *c = arg;

	c->flush_armed = false;
	c->last_flush = coord_now_ms(c);
	for (struct mapconn *m = c->conns; m; m = m->next)
		if (m->syncing || m->cursor < c->seq)
			httpd_stream_wake(m->st);
}

/* ---- publishing ---- */

/* Logs dev's record if it changed (or its removal if it is no longer a peer). */
void coord_publish_device(struct coord *c, const struct json *dev)
{
	const char *name = kube_name(dev), *tailnet = operator_tailnet_of(dev);
	const char *key = json_str(json_path(dev, "spec", "nodeKey", NULL));
	struct node *n = coord_node_get(c, name, tailnet);
	struct buf text = BUF_INIT(1u << 20);
	struct record_soft soft;
	struct netmap_node rec;
	struct json *suffix;
	unsigned dropped = 0;
	uint64_t hard = 0;
	char why[160];
	bool urgent;
	int err;

	bool usable = coord_dev_usable(dev), moved;

	if (!n)
		return;
	moved = strcmp(n->tailnet, tailnet) != 0;
	if (!usable || moved) {
		/* Not (or no longer) a usable peer here: peers that knew it drop it. */
		node_unpublish(c, n);
		if (moved) {
			char *t = strdup(tailnet);
			if (t) {
				free(n->tailnet);
				n->tailnet = t;
			}
		}
		if (!usable)
			return;
	}
	if (n->peer && key && strcmp(n->node_key, key) != 0)
		node_unpublish(c, n); /* a rotated key: the old one is gone */
	suffix = coord_dns_suffix_json(c, tailnet);
	soft = (struct record_soft){ .endpoints = n->endpoints, .nendpoints = n->nendpoints, .relay = n->relay,
				     .online = n->streams > 0 };
	err = suffix ? record_from_device(dev, json_str(suffix), &soft, &rec, &dropped, why, sizeof(why)) : -ENOMEM;
	json_free(suffix);
	if (err) {
		log_warn("coordination: device is no peer", "device=%s reason=\"%s\"", name, why);
		node_unpublish(c, n);
		return;
	}
	if (dropped && !n->peer)
		log_warn("coordination: fields of the device left out of its record (not valid)", "device=%s count=%u",
			 name, dropped);
	err = record_text(&rec, &text, &hard);
	netmap_node_free(&rec);
	if (err || (n->peer && n->peer_len == text.len && memcmp(n->peer, text.data, text.len) == 0)) {
		buf_free(&text);
		return;
	}
	urgent = !n->peer || hard != n->hard_hash;
	free(n->peer);
	n->peer_len = text.len;
	n->peer = buf_steal(&text, NULL);
	n->hard_hash = hard;
	snprintf(n->node_key, sizeof(n->node_key), "%s", key ? key : "");
	if (!log_append(c, n, NULL, urgent))
		log_error("coordination: out of memory; peers miss a change", "device=%s", name);
}

void coord_node_stream(struct coord *c, struct node *n, bool opened, const struct json *dev)
{
	bool transition = opened ? n->streams++ == 0 : --n->streams == 0;
	struct json *found = NULL;

	if (n->dead) {
		node_release(n);
		return;
	}
	if (c->stopping || (!transition && !dev))
		return;
	/* Online or offline: the API server hears of the transition, peers of
	 * the new record. */
	if (transition)
		coord_online_changed(c, n->name, opened);
	if (!dev)
		dev = found = informer_get(c->op->devices, NULL, n->name);
	if (dev)
		coord_publish_device(c, dev);
	json_free(found);
}

void coord_device_changed(struct coord *c, const struct json *old, const struct json *dev)
{
	if (!c)
		return;
	coord_publish_device(c, dev);
	pthread_mutex_lock(&c->lock);
	if (c->addr_waiters) {
		c->dev_gen++;
		pthread_cond_broadcast(&c->dev_cond);
	}
	pthread_mutex_unlock(&c->lock);
}

void coord_device_deleted(struct coord *c, const struct json *dev)
{
	const char *name = kube_name(dev);
	struct node *n;
	struct json *d;

	if (!c)
		return;
	n = strmap_del(c->nodes, name);
	if (n) {
		node_unpublish(c, n);
		n->dead = true;
	}
	/* Its own streams end: the identity no longer exists. */
	d = coord_error_reply("DeviceDeleted", "this device was deleted; run knit up --authkey to join again");
	for (struct mapconn *m = c->conns; m; m = m->next) {
		if (strcmp(m->device, name) == 0) {
			coord_stream_send_json(m, d);
			httpd_stream_close(m->st);
		}
	}
	json_free(d);
	if (n)
		node_release(n);
}

static void republish_of_tailnet(const struct json *dev, void *arg)
{
	void **a = arg;

	if (strcmp(operator_tailnet_of(dev), a[1]) == 0)
		coord_publish_device(a[0], dev);
}

void coord_tailnet_changed(struct coord *c, const struct json *tn)
{
	void *a[2] = { c, (void *)kube_name(tn) };

	if (!c)
		return;
	/* DNS suffix, relay map: rare. The records carry the suffix (fqdn);
	 * every stream of the tailnet starts over with a full netmap. */
	informer_foreach(c->op->devices, republish_of_tailnet, a);
	for (struct mapconn *m = c->conns; m; m = m->next)
		if (strcmp(m->tailnet, kube_name(tn)) == 0)
			coord_stream_sync(m);
}

void coord_netmap_free(struct coord *c)
{
	for (size_t i = 0; i < c->log_len; i++)
		entry_drop(&c->log[i]);
	free(c->log);
	c->log = NULL;
	c->log_len = c->log_cap = c->log_live = 0;
	if (c->nodes) {
		for (struct strmap_entry *e = strmap_first(c->nodes); e; e = strmap_next(c->nodes, e))
			node_free(strmap_value(e));
		strmap_free(c->nodes);
		c->nodes = NULL;
	}
}
