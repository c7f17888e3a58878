/* The change log and delta cache: see changelog.h. */
#include "changelog.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void changelog_init(struct changelog *l, const struct changelog_ops *ops)
{
	memset(l, 0, sizeof(*l));
	l->ops = *ops;
	buf_init(&l->delta.text, 16u << 20);
}

static bool entry_live(const struct changelog_entry *e)
{
	return e->n ? e->n->seq == e->seq : true;
}

/* Lets go of what an entry holds (its node's reference, or its removal). */
static void entry_drop(struct changelog *l, struct changelog_entry *e)
{
	if (e->n) {
		e->n->refs--;
		if (l->ops.unref)
			l->ops.unref(e->n, l->ops.arg);
	} else if (e->f) {
		free(e->f->tailnet);
		free(e->f->text);
		free(e->f);
	} else if (e->rm) {
		free(e->rm->tailnet);
		free(e->rm->device);
		free(e->rm);
	}
}

void changelog_free(struct changelog *l)
{
	for (size_t i = 0; i < l->len; i++)
		entry_drop(l, &l->log[i]);
	free(l->log);
	l->log = NULL;
	l->len = l->cap = l->live = 0;
	l->delta.valid = false;
	buf_free(&l->delta.text);
}

void changelog_compact(struct changelog *l)
{
	/* removals at or before every cursor are done with */
	uint64_t oldest = l->ops.oldest ? l->ops.oldest(l->ops.arg) : l->seq;
	size_t k = 0;

	for (size_t i = 0; i < l->len; i++) {
		struct changelog_entry *e = &l->log[i];
		bool keep = e->n ? entry_live(e) : e->seq > oldest; /* removals and marks */

		if (keep)
			l->log[k++] = *e;
		else
			entry_drop(l, e);
	}
	l->len = k;
	l->live = k;
	/* Entries moved: the cached delta's list of them is no longer true. */
	l->delta.valid = false;
	if (l->cap > 1024 && k < l->cap / 4) {
		struct changelog_entry *smaller = realloc(l->log, (l->cap / 2) * sizeof(*l->log));
		if (smaller) {
			l->log = smaller;
			l->cap /= 2;
		}
	}
}

static int append(struct changelog *l, struct changelog_node *n, struct changelog_removal *rm,
		  struct changelog_fields *f)
{
	if (l->len > 1024 && l->len > 2 * l->live)
		changelog_compact(l);
	if (l->len == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 1024;
		struct changelog_entry *bigger = realloc(l->log, cap * sizeof(*l->log));
		if (!bigger)
			return -ENOMEM;
		l->log = bigger;
		l->cap = cap;
	}
	if (n && n->seq)
		l->live--; /* its previous entry is stale now */
	l->log[l->len++] = (struct changelog_entry){ .seq = ++l->seq, .n = n, .rm = rm, .f = f };
	l->live++;
	if (n) {
		n->seq = l->seq;
		n->refs++;
	}
	return 0;
}

int changelog_upsert(struct changelog *l, struct changelog_node *n)
{
	return append(l, n, NULL, NULL);
}

int changelog_unpublish(struct changelog *l, struct changelog_node *n)
{
	struct changelog_removal *rm;

	if (!n->peer)
		return 0;
	free(n->peer);
	n->peer = NULL;
	n->peer_len = 0;
	if (n->seq) {
		n->seq = 0;
		l->live--;
	}
	rm = calloc(1, sizeof(*rm));
	if (rm) {
		rm->tailnet = strdup(n->tailnet);
		rm->device = strdup(n->name);
		snprintf(rm->node_key, sizeof(rm->node_key), "%s", n->node_key);
	}
	if (!rm || !rm->tailnet || !rm->device || append(l, NULL, rm, NULL)) {
		if (rm) {
			free(rm->tailnet);
			free(rm->device);
		}
		free(rm);
		return -ENOMEM;
	}
	return 0;
}

int changelog_tailnet_fields(struct changelog *l, const char *tailnet, const char *text)
{
	struct changelog_fields *f = calloc(1, sizeof(*f));

	if (f) {
		f->tailnet = strdup(tailnet);
		f->text = strdup(text);
		f->len = strlen(text);
	}
	if (!f || !f->tailnet || !f->text || append(l, NULL, NULL, f)) {
		if (f) {
			free(f->tailnet);
			free(f->text);
		}
		free(f);
		return -ENOMEM;
	}
	return 0;
}

int changelog_mark(struct changelog *l)
{
	return append(l, NULL, NULL, NULL);
}

void changelog_sync(struct changelog *l, struct changelog_cursor *cur)
{
	cur->cursor = 0;
	cur->sync_from = l->seq;
	cur->syncing = true;
	cur->header_sent = false;
}

bool changelog_pending(const struct changelog *l, const struct changelog_cursor *cur)
{
	return cur->syncing || cur->cursor < l->seq;
}

/* First index whose seq is greater than seq. */
static size_t after(const struct changelog *l, uint64_t seq)
{
	size_t lo = 0, hi = l->len;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (l->log[mid].seq <= seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Is the cached delta cur's next record? It is while the log has not grown
 * (checked first: entries it names are alive until then), for a stream of
 * the same tailnet at the same cursor whose own device it does not name. */
static bool delta_cached(const struct changelog *l, const struct changelog_cursor *cur)
{
	if (cur->visible || cur->extra || !l->delta.valid || l->delta.seq != l->seq || l->delta.from != cur->cursor ||
	    strcmp(l->delta.tailnet, cur->tailnet) != 0)
		return false;
	for (size_t k = 0; k < l->delta.nwho; k++) {
		const struct changelog_entry *w = &l->delta.who[k];
		if ((w->n || w->rm) && strcmp(w->n ? w->n->name : w->rm->device, cur->device) == 0)
			return false;
	}
	return true;
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

/* Appends a comma-separated list to another. */
static int add_list(struct buf *to, const char *list, size_t len)
{
	int err = 0;

	if (!len)
		return 0;
	if (to->len)
		err = buf_add_byte(to, ',');
	return err ? err : buf_add(to, list, len);
}

int changelog_next(struct changelog *l, struct changelog_cursor *cur, const struct changelog_node *me,
		   const char *full_fields, size_t record_bytes, struct buf *rec, struct changelog_step *step)
{
	struct buf peers = BUF_INIT(16u << 20), removes = BUF_INIT(16u << 20);
	const struct changelog_node *self = NULL;
	const struct changelog_fields *fields = NULL;
	const struct changelog_extra *x = cur->syncing ? NULL : cur->extra;
	size_t i = after(l, cur->cursor);
	int err = 0, ret = 0;

	memset(step, 0, sizeof(*step));
	step->from = cur->cursor;
	step->upto = cur->cursor;
	if (!cur->syncing && i == l->len)
		return 0;
	if (!cur->syncing && delta_cached(l, cur)) {
		if ((err = buf_add(rec, l->delta.text.data, l->delta.text.len)))
			return err;
		step->upto = l->delta.upto;
		step->cached = true;
		return 1;
	}
	size_t first = i;
	for (; i < l->len && peers.len + removes.len < record_bytes && !err; i++) {
		const struct changelog_entry *e = &l->log[i];
		step->upto = e->seq;
		if (step->nwho < CHANGELOG_CACHE_WHO)
			step->who[step->nwho] = *e;
		step->nwho++;
		if (e->n) {
			const struct changelog_node *n = e->n;
			if (!entry_live(e) || !n->peer || strcmp(n->tailnet, cur->tailnet) != 0)
				continue;
			if (strcmp(n->name, cur->device) == 0) {
				self = n;
				continue;
			}
			if (cur->visible && !cur->visible(cur->visible_arg, n->name))
				continue;
			if (peers.len)
				err = buf_add_byte(&peers, ',');
			if (!err)
				err = buf_add(&peers, n->peer, n->peer_len);
		} else if (e->f) {
			/* A full netmap's own header already has what was
			 * there when it began; the latest wins. */
			if (strcmp(e->f->tailnet, cur->tailnet) == 0 && !(cur->syncing && e->seq <= cur->sync_from))
				fields = e->f;
		} else if (e->rm) {
			const struct changelog_removal *rm = e->rm;
			if (cur->syncing && e->seq <= cur->sync_from)
				continue; /* before this netmap began: never sent */
			if (strcmp(rm->tailnet, cur->tailnet) != 0 || strcmp(rm->device, cur->device) == 0)
				continue;
			err = buf_addf(&removes, "%s\"%s\"", removes.len ? "," : "", rm->node_key);
		}
	}
	if (err)
		goto out;
	step->more = cur->syncing && i < l->len;
	if (!err && x)
		err = add_list(&peers, x->peers, x->peers_len);
	if (!err && x)
		err = add_list(&removes, x->removes, x->removes_len);
	if (err)
		goto out;
	if (!cur->syncing && !peers.len && !removes.len && !self && !fields && !(x && x->fields_len)) {
		cur->cursor = step->upto; /* only other tailnets' or stale entries */
		goto out;
	}
	if (cur->syncing && !cur->header_sent) {
		if (!self)
			self = me;
		err = buf_addf(rec, "{\"type\":\"full\",\"seq\":%llu,\"self\":", (unsigned long long)step->upto);
		if (!err)
			err = self && self->peer ? buf_add(rec, self->peer, self->peer_len) : buf_add_str(rec, "null");
		if (!err)
			err = buf_add_str(rec, full_fields ? full_fields : "");
		if (!err)
			err = buf_add_str(rec, ",\"peers\":[");
		if (!err && peers.len)
			err = buf_add(rec, peers.data, peers.len);
		if (!err)
			err = buf_add_byte(rec, ']');
		/* Removals in the first piece are of peers it never sent. */
	} else {
		/* Text is copied with buf_add: printf's %.*s is slow on 64 KiB. */
		err = buf_addf(rec, "{\"type\":\"delta\",\"seq\":%llu", (unsigned long long)step->upto);
		if (!err && peers.len)
			err = add_member(rec, ",\"upsert\":[", &peers, "]");
		if (!err && removes.len)
			err = add_member(rec, ",\"remove\":[", &removes, "]");
		if (!err && self && self->peer) {
			err = buf_add_str(rec, ",\"self\":");
			if (!err)
				err = buf_add(rec, self->peer, self->peer_len);
		}
		if (!err && fields && !(err = buf_add_byte(rec, ',')))
			err = buf_add(rec, fields->text, fields->len);
		if (!err && x && x->fields_len)
			err = buf_add(rec, x->fields, x->fields_len);
	}
	if (!err && cur->syncing)
		err = buf_add_str(rec, step->more ? ",\"more\":true" : ",\"more\":false");
	if (!err)
		err = buf_add_byte(rec, '}');
	/* A delta that covers the log to its end and is not about this
	 * stream's own device is what every stream of the tailnet at the same
	 * cursor gets next. */
	step->cacheable = !cur->visible && !x && !cur->syncing && !self && i == l->len && step->nwho <= CHANGELOG_CACHE_WHO && i > first;
	ret = err ? err : 1;
out:
	buf_free(&peers);
	buf_free(&removes);
	return err ? err : ret;
}

void changelog_commit(struct changelog *l, struct changelog_cursor *cur, const struct changelog_step *step,
		      const struct buf *rec)
{
	if (step->cacheable) {
		buf_reset(&l->delta.text);
		if (buf_add(&l->delta.text, rec->data, rec->len) == 0) {
			l->delta.valid = true;
			l->delta.from = cur->cursor;
			l->delta.upto = step->upto;
			l->delta.seq = l->seq;
			snprintf(l->delta.tailnet, sizeof(l->delta.tailnet), "%s", cur->tailnet);
			memcpy(l->delta.who, step->who, step->nwho * sizeof(*step->who));
			l->delta.nwho = step->nwho;
		} else {
			l->delta.valid = false;
		}
	}
	cur->cursor = step->upto;
	if (step->cached)
		return;
	cur->header_sent = true;
	if (!step->more)
		cur->syncing = false;
}
