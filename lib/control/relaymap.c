/* The relay map's reader (relaymap.h). */
#include "control/relaymap.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/fields.h"
#include "relay/frame.h"

/* A DNS name (dot-separated labels of letters, digits and '-', neither
 * first nor last a '-', a trailing dot allowed) or an IP literal. */
static bool host_valid(const char *s)
{
	struct in6_addr a6;
	size_t label = 0;
	char prev = '.';

	if (!*s || strlen(s) > 253)
		return false;
	if (inet_pton(AF_INET6, s, &a6) == 1)
		return true;
	for (const char *p = s; *p; p++) {
		char c = *p;
		if (c == '.') {
			if (label == 0 || prev == '-')
				return false;
			label = 0;
		} else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			   (c == '-' && label > 0)) {
			if (++label > 63)
				return false;
		} else {
			return false;
		}
		prev = c;
	}
	return prev != '-';
}

static bool code_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 32)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-'))
			return false;
	return true;
}

/* Copies the optional string member key (at most cap - 1 bytes) into out. */
static bool get_text(const struct json *j, const char *where, const char *key, bool required, char *out,
		     size_t cap, char *err, size_t errlen)
{
	char *s = NULL;

	out[0] = '\0';
	if (!fields_get_str(j, where, key, required, cap - 1, &s, err, errlen))
		return false;
	if (s)
		memcpy(out, s, strlen(s) + 1);
	free(s);
	return true;
}

static bool get_addr(const struct json *j, const char *where, const char *key, int af, char *out, size_t cap,
		     char *err, size_t errlen)
{
	uint8_t buf[16];

	if (!get_text(j, where, key, false, out, cap, err, errlen))
		return false;
	if (out[0] && inet_pton(af, out, buf) != 1)
		return fields_fail(err, errlen, "%s%s: \"%s\" is not an IPv%c address", where, key, out,
				   af == AF_INET ? '4' : '6');
	return true;
}

static bool parse_node(const struct json *j, const char *where, struct relaymap_node *n, char *err, size_t errlen)
{
	int64_t v;
	bool has;

	if (!json_is_object(j))
		return fields_fail(err, errlen, "%s: want an object, got %s", where, json_type_name(json_type(j)));
	char w[128];
	snprintf(w, sizeof(w), "%s.", where);
	if (!get_text(j, w, "name", true, n->name, sizeof(n->name), err, errlen) ||
	    !get_text(j, w, "hostName", true, n->host, sizeof(n->host), err, errlen) ||
	    !get_addr(j, w, "ipv4", AF_INET, n->ipv4, sizeof(n->ipv4), err, errlen) ||
	    !get_addr(j, w, "ipv6", AF_INET6, n->ipv6, sizeof(n->ipv6), err, errlen))
		return false;
	if (!n->name[0])
		return fields_fail(err, errlen, "%sname: empty", w);
	if (!host_valid(n->host))
		return fields_fail(err, errlen, "%shostName: \"%.64s\" is not a DNS name or an address", w, n->host);
	if (!fields_get_int(j, w, "relayPort", 1, 65535, &v, &has, err, errlen))
		return false;
	n->relay_port = has ? (uint16_t)v : RELAYMAP_DEFAULT_RELAY_PORT;
	if (!fields_get_int(j, w, "stunPort", 0, 65535, &v, &has, err, errlen))
		return false;
	n->stun_port = has ? (uint16_t)v : RELAYMAP_DEFAULT_STUN_PORT;
	n->tls = true;
	if (json_get(j, "tls") && !json_is_null(json_get(j, "tls")) &&
	    !fields_get_bool(j, w, "tls", &n->tls, err, errlen))
		return false;
	return fields_get_key(j, w, "publicKey", RELAY_KEY_TEXT_PREFIX, false, n->key, &n->has_key, err, errlen);
}

static bool parse_region(const struct json *j, const char *where, struct relaymap_region *r, char *err,
			 size_t errlen)
{
	const struct json *nodes;
	int64_t id;
	bool has;
	char w[64];

	if (!json_is_object(j))
		return fields_fail(err, errlen, "%s: want an object, got %s", where, json_type_name(json_type(j)));
	snprintf(w, sizeof(w), "%s.", where);
	if (!fields_get_int(j, w, "id", 1, 65535, &id, &has, err, errlen))
		return false;
	if (!has)
		return fields_fail(err, errlen, "%sid: missing", w);
	r->id = (int)id;
	if (!get_text(j, w, "code", true, r->code, sizeof(r->code), err, errlen) ||
	    !get_text(j, w, "name", false, r->name, sizeof(r->name), err, errlen))
		return false;
	if (!code_valid(r->code))
		return fields_fail(err, errlen, "%scode: \"%s\" is not 1-32 of a-z, 0-9 and '-'", w, r->code);
	nodes = json_get(j, "nodes");
	if (!json_is_array(nodes))
		return fields_fail(err, errlen, "%snodes: want an array, got %s", w,
				   nodes ? json_type_name(json_type(nodes)) : "nothing");
	if (json_array_len(nodes) == 0 || json_array_len(nodes) > RELAYMAP_MAX_NODES)
		return fields_fail(err, errlen, "%snodes: want 1 to %d nodes, got %zu", w, RELAYMAP_MAX_NODES,
				   json_array_len(nodes));
	r->nodes = calloc(json_array_len(nodes), sizeof(*r->nodes));
	if (!r->nodes)
		return fields_fail(err, errlen, "%snodes: out of memory", w);
	for (size_t i = 0; i < json_array_len(nodes); i++) {
		char nw[96];
		snprintf(nw, sizeof(nw), "%snodes[%zu]", w, i);
		if (!parse_node(json_array_at(nodes, i), nw, &r->nodes[i], err, errlen))
			return false;
		r->nnodes = i + 1;
		for (size_t k = 0; k < i; k++)
			if (strcmp(r->nodes[k].name, r->nodes[i].name) == 0)
				return fields_fail(err, errlen, "%s.name: \"%s\" is also nodes[%zu]'s", nw,
						   r->nodes[i].name, k);
	}
	return true;
}

bool relaymap_parse(const struct json *j, struct relaymap *out, char *err, size_t errlen)
{
	const struct json *regions;
	bool ok = false;

	memset(out, 0, sizeof(*out));
	if (!j || json_is_null(j))
		return true;
	if (!json_is_object(j))
		return fields_fail(err, errlen, "relayMap: want an object, got %s", json_type_name(json_type(j)));
	regions = json_get(j, "regions");
	if (!regions || json_is_null(regions))
		return true;
	if (!json_is_array(regions))
		return fields_fail(err, errlen, "relayMap.regions: want an array, got %s",
				   json_type_name(json_type(regions)));
	if (json_array_len(regions) > RELAYMAP_MAX_REGIONS)
		return fields_fail(err, errlen, "relayMap.regions: more than %d", RELAYMAP_MAX_REGIONS);
	if (json_array_len(regions) == 0)
		return true;
	out->regions = calloc(json_array_len(regions), sizeof(*out->regions));
	if (!out->regions)
		return fields_fail(err, errlen, "relayMap.regions: out of memory");
	for (size_t i = 0; i < json_array_len(regions); i++) {
		char w[48];
		snprintf(w, sizeof(w), "relayMap.regions[%zu]", i);
		out->nregions = i + 1;
		if (!parse_region(json_array_at(regions, i), w, &out->regions[i], err, errlen))
			goto out;
		for (size_t k = 0; k < i; k++)
			if (out->regions[k].id == out->regions[i].id) {
				fields_fail(err, errlen, "%s.id: %d is also regions[%zu]'s", w, out->regions[i].id, k);
				goto out;
			}
	}
	ok = true;
out:
	if (!ok)
		relaymap_free(out);
	return ok;
}

void relaymap_free(struct relaymap *m)
{
	for (size_t i = 0; i < m->nregions; i++)
		free(m->regions[i].nodes);
	free(m->regions);
	memset(m, 0, sizeof(*m));
}

const struct relaymap_region *relaymap_region(const struct relaymap *m, int id)
{
	for (size_t i = 0; i < m->nregions; i++)
		if (m->regions[i].id == id)
			return &m->regions[i];
	return NULL;
}
