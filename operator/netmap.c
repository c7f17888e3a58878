/* Netmaps: what each agent sees of its tailnet (peers, DNS, relay map),
 * sent in full when a map stream opens and as deltas as devices and soft
 * state change. Loop thread only. */
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
#include "strmap.h"
#include "wg/noise.h"

/* ---- peers and netmaps (loop thread) ---- */

struct node *coord_node_get(struct coord *c, const char *device, bool create)
{
	struct node *n = strmap_get(c->nodes, device);

	if (n || !create)
		return n;
	n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->endpoints = json_new_array();
	if (!n->endpoints || strmap_set(c->nodes, device, n, NULL)) {
		json_free(n->endpoints);
		free(n);
		return NULL;
	}
	return n;
}

const char *coord_dev_tailnet(const struct json *dev)
{
	return json_str(json_path(dev, "spec", "tailnet", NULL)) ?: "default";
}

bool coord_dev_usable(const struct json *dev)
{
	return json_array_len(json_path(dev, "status", "addresses", NULL)) == 2 &&
	       !json_bool(json_path(dev, "status", "keyExpired", NULL), false) && !kube_deleting(dev) &&
	       json_str(json_path(dev, "spec", "nodeKey", NULL));
}

struct json *coord_dns_suffix_json(struct coord *c, const char *tailnet)
{
	struct json *tn = informer_get(c->op->tailnets, NULL, tailnet), *s;

	s = json_new_string(json_str(json_path(tn, "spec", "dnsSuffix", NULL)) ?: "tailnet.knit");
	json_free(tn);
	return s;
}

/* The record peers see for dev (and the device sees as "self"). */
static struct json *peer_json(struct coord *c, const struct json *dev, const char *suffix)
{
	struct json *p = json_new_object(), *addrs = json_new_array(), *allowed = json_new_array();
	struct json *st_addrs = json_path(dev, "status", "addresses", NULL);
	struct json *routes = json_path(dev, "spec", "approvedRoutes", NULL);
	const char *host = json_str(json_path(dev, "spec", "hostname", NULL)) ?: kube_name(dev);
	struct node *n = coord_node_get(c, kube_name(dev), false);
	char fqdn[600];

	if (!p || !addrs || !allowed) {
		json_free(p);
		json_free(addrs);
		json_free(allowed);
		return NULL;
	}
	for (size_t i = 0; i < json_array_len(st_addrs); i++) {
		const char *a = json_str(json_array_at(st_addrs, i));
		char cidr[80];
		if (!a)
			continue;
		snprintf(cidr, sizeof(cidr), "%s/%d", a, strchr(a, ':') ? 128 : 32);
		json_array_append(addrs, json_new_string(cidr));
		json_array_append(allowed, json_new_string(cidr));
	}
	for (size_t i = 0; i < json_array_len(routes); i++)
		json_array_append(allowed, json_clone(json_array_at(routes, i)));
	snprintf(fqdn, sizeof(fqdn), "%s.%s", host, suffix ? suffix : "tailnet.knit");
	json_object_set(p, "name", coord_jstr(host));
	json_object_set(p, "fqdn", coord_jstr(fqdn));
	json_object_set(p, "device", coord_jstr(kube_name(dev)));
	json_object_set(p, "nodeKey", coord_jstr(json_str(json_path(dev, "spec", "nodeKey", NULL))));
	json_object_set(p, "discoKey", coord_jstr(json_str(json_path(dev, "spec", "discoKey", NULL))));
	json_object_set(p, "addresses", addrs);
	json_object_set(p, "allowedIPs", allowed);
	json_object_set(p, "endpoints", n ? json_clone(n->endpoints) : json_new_array());
	json_object_set(p, "relay", json_new_int(n ? n->relay : 0));
	json_object_set(p, "online", json_new_bool(n && n->streams > 0));
	json_object_set(p, "tags", json_clone(json_path(dev, "spec", "tags", NULL)) ?: json_new_array());
	json_object_set(p, "ephemeral", json_new_bool(json_bool(json_path(dev, "spec", "ephemeral", NULL), false)));
	return p;
}

struct collect {
	struct coord *c;
	const char *tailnet, *self, *suffix;
	struct json *peers;
};

static void collect_peer(const struct json *dev, void *arg)
{
	struct collect *k = arg;

	if (strcmp(kube_name(dev), k->self) == 0 || strcmp(coord_dev_tailnet(dev), k->tailnet) != 0 || !coord_dev_usable(dev))
		return;
	json_array_append(k->peers, peer_json(k->c, dev, k->suffix));
}

struct json *coord_full_netmap(struct coord *c, const struct json *self)
{
	const char *tailnet = coord_dev_tailnet(self);
	struct json *tn = informer_get(c->op->tailnets, NULL, tailnet);
	struct json *nm = json_new_object(), *dns = json_new_object(), *ns = json_new_array();
	const char *suffix = json_str(json_path(tn, "spec", "dnsSuffix", NULL)) ?: "tailnet.knit";
	struct collect k = { .c = c, .tailnet = tailnet, .self = kube_name(self), .suffix = suffix,
			     .peers = json_new_array() };

	informer_foreach(c->op->devices, collect_peer, &k);
	json_object_set(nm, "type", json_new_string("full"));
	json_object_set(nm, "seq", json_new_int((int64_t)++c->seq));
	json_object_set(nm, "self", peer_json(c, self, suffix));
	json_object_set(nm, "peers", k.peers);
	json_array_append(ns, json_new_string("100.100.100.100"));
	json_object_set(dns, "suffix", json_new_string(suffix));
	json_object_set(dns, "nameservers", ns);
	json_object_set(nm, "dns", dns);
	json_object_set(nm, "relayMap", json_clone(json_path(tn, "spec", "relayMap", NULL)) ?: json_new_null());
	json_object_set(nm, "packetFilter", json_new_null());
	json_free(tn);
	return nm;
}

/* One record: 4-byte big-endian length, then the sealed frame. */
int coord_stream_send(struct mapconn *m, const char *text, size_t len)
{
	struct buf out = BUF_INIT(16u << 20);
	int err = coord_seal_record(&m->ch, text, len, &out);

	if (!err)
		err = httpd_stream_write(m->st, out.data, out.len);
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

/* Sends a delta to every stream of the tailnet except the device's own. */
static void broadcast(struct coord *c, const char *tailnet, const char *except, const struct json *delta)
{
	struct buf text = BUF_INIT(16u << 20);

	if (json_dump(delta, &text, 0))
		goto out;
	for (struct mapconn *m = c->conns, *next; m; m = next) {
		next = m->next;
		if (strcmp(m->tailnet, tailnet) != 0 || (except && strcmp(m->device, except) == 0))
			continue;
		coord_stream_send(m, (const char *)text.data, text.len);
	}
out:
	buf_free(&text);
}

static struct json *delta_new(struct coord *c)
{
	struct json *d = json_new_object();

	json_object_set(d, "type", json_new_string("delta"));
	json_object_set(d, "seq", json_new_int((int64_t)++c->seq));
	return d;
}

static void send_remove(struct coord *c, const char *tailnet, const char *device, const char *node_key)
{
	struct json *d = delta_new(c), *rm = json_new_array();

	json_array_append(rm, coord_jstr(node_key));
	json_object_set(d, "remove", rm);
	broadcast(c, tailnet, device, d);
	json_free(d);
}

/* Tells peers about dev if its record changed, and dev's own streams about itself. */
void coord_publish_device(struct coord *c, const struct json *dev)
{
	const char *name = kube_name(dev), *tailnet = coord_dev_tailnet(dev);
	struct json *suffix = coord_dns_suffix_json(c, tailnet), *p, *d;
	struct node *n = coord_node_get(c, name, true);
	struct buf text = BUF_INIT(1u << 20);

	if (!n || !coord_dev_usable(dev)) {
		/* Not (or no longer) a usable peer: peers that knew it drop it. */
		if (n && n->last_peer) {
			send_remove(c, tailnet, name, json_str(json_path(dev, "spec", "nodeKey", NULL)));
			free(n->last_peer);
			n->last_peer = NULL;
		}
		json_free(suffix);
		return;
	}
	p = peer_json(c, dev, json_str(suffix));
	json_free(suffix);
	if (!p || json_dump(p, &text, 0) || (n->last_peer && strcmp(n->last_peer, buf_str(&text)) == 0)) {
		json_free(p);
		buf_free(&text);
		return;
	}
	free(n->last_peer);
	n->last_peer = buf_steal(&text, NULL);
	d = delta_new(c);
	struct json *up = json_new_array();
	json_array_append(up, json_clone(p));
	json_object_set(d, "upsert", up);
	broadcast(c, tailnet, name, d);
	json_free(d);
	/* Its own streams: the new self. */
	d = delta_new(c);
	json_object_set(d, "self", p);
	for (struct mapconn *m = c->conns; m; m = m->next)
		if (strcmp(m->device, name) == 0)
			coord_stream_send_json(m, d);
	json_free(d);
}

void coord_device_changed(struct coord *c, const struct json *old, const struct json *dev)
{
	const char *old_key = json_str(json_path(old, "spec", "nodeKey", NULL));
	const char *new_key = json_str(json_path(dev, "spec", "nodeKey", NULL));
	struct node *n;

	if (!c)
		return;
	/* A rotated node key: the old one is gone for peers. */
	if (old_key && new_key && strcmp(old_key, new_key) != 0) {
		send_remove(c, coord_dev_tailnet(old), kube_name(old), old_key);
		n = coord_node_get(c, kube_name(dev), false);
		if (n) {
			free(n->last_peer);
			n->last_peer = NULL;
		}
	}
	coord_publish_device(c, dev);
}

void coord_device_deleted(struct coord *c, const struct json *dev)
{
	const char *name = kube_name(dev);
	struct node *n;
	struct json *d;

	if (!c)
		return;
	send_remove(c, coord_dev_tailnet(dev), name, json_str(json_path(dev, "spec", "nodeKey", NULL)));
	/* Its own streams end: the identity no longer exists. */
	d = coord_error_reply("DeviceDeleted", "this device was deleted; run knit up --authkey to join again");
	for (struct mapconn *m = c->conns; m; m = m->next) {
		if (strcmp(m->device, name) == 0) {
			coord_stream_send_json(m, d);
			httpd_stream_close(m->st);
		}
	}
	json_free(d);
	n = strmap_del(c->nodes, name);
	if (n) {
		/* Streams still point at the name; they find no node and that is fine. */
		json_free(n->endpoints);
		free(n->last_peer);
		free(n);
	}
}

void coord_tailnet_changed(struct coord *c, const struct json *tn)
{
	/* DNS suffix, relay map: rare; every stream of it gets a full netmap. */
	for (struct mapconn *m = c ? c->conns : NULL; m; m = m->next) {
		struct json *dev, *nm;
		if (strcmp(m->tailnet, kube_name(tn)) != 0)
			continue;
		dev = informer_get(c->op->devices, NULL, m->device);
		if (!dev)
			continue;
		nm = coord_full_netmap(c, dev);
		coord_stream_send_json(m, nm);
		json_free(nm);
		json_free(dev);
	}
}
