/* A Device as the netmap shows it: see record.h. */
#include "record.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "control/channel.h"
#include "control/fields.h"
#include "json.h"
#include "kube/meta.h"

static struct json *path(const struct json *dev, const char *a, const char *b)
{
	return json_path(dev, a, b, NULL);
}

int record_addresses(const struct json *dev, struct netmap_prefix **out, size_t *n)
{
	const struct json *a = path(dev, "status", "addresses");
	struct netmap_prefix *p;
	bool v4 = false, v6 = false;

	*out = NULL;
	*n = 0;
	if (json_array_len(a) != 2)
		return -EINVAL;
	p = calloc(2, sizeof(*p));
	if (!p)
		return -ENOMEM;
	for (size_t i = 0; i < 2; i++) {
		const char *s = json_str(json_array_at(a, i));

		/* A bare address: "/32" in status would be a prefix. */
		if (!s || strchr(s, '/') || !netmap_prefix_parse(&p[i], s)) {
			free(p);
			return -EINVAL;
		}
		v4 |= p[i].family == AF_INET;
		v6 |= p[i].family == AF_INET6;
	}
	if (!v4 || !v6) {
		free(p);
		return -EINVAL;
	}
	*out = p;
	*n = 2;
	return 0;
}

/* The addresses, then each approved route that is a prefix. */
static int allowed_ips(const struct json *dev, struct netmap_node *out, unsigned *dropped)
{
	const struct json *routes = path(dev, "spec", "approvedRoutes");
	size_t n = json_array_len(routes);

	out->allowed_ips = calloc(out->naddresses + n, sizeof(*out->allowed_ips));
	if (!out->allowed_ips)
		return -ENOMEM;
	memcpy(out->allowed_ips, out->addresses, out->naddresses * sizeof(*out->addresses));
	out->nallowed_ips = out->naddresses;
	for (size_t i = 0; i < n; i++) {
		if (fields_cidr_parse(&out->allowed_ips[out->nallowed_ips], json_str(json_array_at(routes, i))))
			out->nallowed_ips++;
		else
			(*dropped)++;
	}
	return 0;
}

static int tags(const struct json *dev, struct netmap_node *out, unsigned *dropped)
{
	const struct json *t = path(dev, "spec", "tags");
	size_t n = json_array_len(t);

	if (!n)
		return 0;
	out->tags = calloc(n, sizeof(*out->tags));
	if (!out->tags)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const char *s = json_str(json_array_at(t, i));

		if (!fields_tag_valid(s)) {
			(*dropped)++;
			continue;
		}
		out->tags[out->ntags] = strdup(s);
		if (!out->tags[out->ntags])
			return -ENOMEM;
		out->ntags++;
	}
	return 0;
}

int record_from_device(const struct json *dev, const char *suffix, const struct record_soft *soft,
		       struct netmap_node *out, unsigned *dropped, char *why, size_t whylen)
{
	const char *host = json_str(path(dev, "spec", "hostname")), *disco = json_str(path(dev, "spec", "discoKey"));
	char name[FIELDS_HOSTNAME_MAX + 1], fqdn[FIELDS_MAX_NAME + 2];
	unsigned dummy = 0;
	int err = -ENOMEM;

	memset(out, 0, sizeof(*out));
	if (!dropped)
		dropped = &dummy;
	if (!channel_key_parse(json_str(path(dev, "spec", "nodeKey")), "nodekey:", out->node_key)) {
		fields_fail(why, whylen, "spec.nodeKey: want \"nodekey:\" and 64 hex digits");
		err = -EINVAL;
		goto out;
	}
	err = record_addresses(dev, &out->addresses, &out->naddresses);
	if (err) {
		if (err == -EINVAL)
			fields_fail(why, whylen, "status.addresses: want one IPv4 and one IPv6 address");
		goto out;
	}
	err = -ENOMEM;
	if (disco) {
		out->has_disco_key = channel_key_parse(disco, "discokey:", out->disco_key);
		*dropped += !out->has_disco_key;
	}
	/* The CRD holds spec.hostname to a DNS label; an older or hand-made
	 * Device may not, nor is its name one. */
	if (fields_hostname_valid(host))
		snprintf(name, sizeof(name), "%s", host);
	else
		fields_hostname_sanitize(host ? host : kube_name(dev), name, sizeof(name));
	out->name = strdup(name);
	if (!out->name)
		goto out;
	if (kube_name(dev) && strlen(kube_name(dev)) <= FIELDS_MAX_NAME && !(out->device = strdup(kube_name(dev))))
		goto out;
	if (!suffix || !*suffix)
		suffix = RECORD_DEFAULT_SUFFIX;
	if ((size_t)snprintf(fqdn, sizeof(fqdn), "%s.%s", name, suffix) <= FIELDS_MAX_NAME) {
		out->fqdn = strdup(fqdn);
		if (!out->fqdn)
			goto out;
	} else {
		(*dropped)++;
	}
	if (allowed_ips(dev, out, dropped) || tags(dev, out, dropped))
		goto out;
	if (!out->ntags && json_str(path(dev, "spec", "user"))) {
		/* The owner, for whois and status; tagged devices have none. */
		const char *u = json_str(path(dev, "spec", "user"));
		bool ok = *u && strlen(u) <= FIELDS_MAX_NAME;

		for (const char *q = u; ok && *q; q++)
			ok = (unsigned char)*q >= 0x20 && *q != 0x7f;
		if (!ok)
			(*dropped)++;
		else if (!(out->user = strdup(u)))
			goto out;
	}
	out->ephemeral = json_bool(path(dev, "spec", "ephemeral"), false);
	time_t key_expiry;
	if (kube_time_parse(json_str(path(dev, "spec", "keyExpiry")), &key_expiry))
		out->key_expiry = (int64_t)key_expiry;
	if (soft) {
		size_t n = soft->nendpoints < FIELDS_MAX_ENDPOINTS ? soft->nendpoints : FIELDS_MAX_ENDPOINTS;

		if (n) {
			out->endpoints = calloc(n, sizeof(*out->endpoints));
			if (!out->endpoints)
				goto out;
			memcpy(out->endpoints, soft->endpoints, n * sizeof(*out->endpoints));
			out->nendpoints = n;
		}
		out->relay = soft->relay >= 0 ? soft->relay : 0;
		out->online = soft->online;
	}
	err = 0;
out:
	if (err == -ENOMEM)
		fields_fail(why, whylen, "out of memory");
	if (err)
		netmap_node_free(out);
	return err;
}

/* FNV-1a. */
static uint64_t fnv1a(const void *p, size_t len)
{
	const uint8_t *b = p;
	uint64_t h = 14695981039346656037ull;

	for (size_t i = 0; i < len; i++)
		h = (h ^ b[i]) * 1099511628211ull;
	return h;
}

int record_text(const struct netmap_node *n, struct buf *out, uint64_t *hard_hash)
{
	struct netmap_node hard = *n; /* shallow: nothing of it is freed */
	struct buf text = BUF_INIT(1u << 20);
	struct json *j;
	int err;

	hard.endpoints = NULL;
	hard.nendpoints = 0;
	hard.relay = 0;
	hard.online = false;
	j = netmap_node_to_json(&hard);
	err = j ? json_dump(j, &text, 0) : -ENOMEM;
	json_free(j);
	if (!err)
		*hard_hash = fnv1a(text.data, text.len);
	buf_free(&text);
	if (err)
		return err;
	j = netmap_node_to_json(n);
	err = j ? json_dump(j, out, 0) : -ENOMEM;
	json_free(j);
	return err;
}
