/* knit netcheck's report (netreport.h). */
#include "netreport.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "json.h"

int netreport_build(const struct netreport_input *in, struct netreport *out)
{
	const char *first_server = NULL, *first_mapped = NULL;
	double best = 0;

	memset(out, 0, sizeof(*out));
	out->mapping_varies = NETREPORT_UNKNOWN;
	if (in->nregions && !(out->regions = calloc(in->nregions, sizeof(*out->regions))))
		return -ENOMEM;
	out->nregions = in->nregions;
	for (size_t i = 0; i < in->nregions; i++) {
		const struct netreport_region *rg = &in->regions[i];
		struct netreport_region_result *rr = &out->regions[i];

		rr->id = rg->region->id;
		rr->code = rg->region->code;
		rr->name = rg->region->name;
		for (size_t k = 0; k < rg->region->nnodes; k++) {
			const struct netreport_node *n = &rg->nodes[k];

			for (size_t s = 0; s < n->nstun; s++) {
				const struct netreport_stun *st = &n->stun[s];

				if (!st->answered)
					continue;
				out->udp = true;
				if (!rr->has_stun || st->rtt_ms < rr->stun_ms)
					rr->stun_ms = st->rtt_ms;
				rr->has_stun = true;
				if (st->family == AF_INET6) {
					if (!out->ipv6[0])
						snprintf(out->ipv6, sizeof(out->ipv6), "%s", st->mapped);
					continue;
				}
				if (!out->ipv4[0])
					snprintf(out->ipv4, sizeof(out->ipv4), "%s", st->mapped);
				/* The hard-NAT test: another server (by address:
				 * a NAT mapping is per destination address and
				 * port) that saw us elsewhere. */
				if (!first_server) {
					first_server = st->server;
					first_mapped = st->mapped;
				} else if (strcmp(st->server, first_server) != 0) {
					if (strcmp(st->mapped, first_mapped) != 0)
						out->mapping_varies = NETREPORT_YES;
					else if (out->mapping_varies == NETREPORT_UNKNOWN)
						out->mapping_varies = NETREPORT_NO;
				}
			}
			if (n->relay.reached) {
				double ms = n->relay.connect_ms + n->relay.upgrade_ms;

				if (!rr->has_relay || ms < rr->relay_ms)
					rr->relay_ms = ms;
				rr->has_relay = true;
			}
		}
		rr->has_latency = rr->has_stun || rr->has_relay;
		rr->latency_ms = rr->has_stun ? rr->stun_ms : rr->relay_ms;
	}
	/* Nearest by STUN when UDP works (what packets will see), else by
	 * the relay connections (the only path there is). Ties: the map's
	 * order. */
	for (size_t i = 0; i < out->nregions; i++) {
		const struct netreport_region_result *rr = &out->regions[i];
		double ms;

		if (out->udp ? !rr->has_stun : !rr->has_relay)
			continue;
		ms = out->udp ? rr->stun_ms : rr->relay_ms;
		if (!out->preferred || ms < best) {
			out->preferred = rr->id;
			best = ms;
		}
	}
	return 0;
}

void netreport_free(struct netreport *r)
{
	free(r->regions);
	memset(r, 0, sizeof(*r));
}

static const char *yes_no(int v)
{
	return v == NETREPORT_YES ? "true" : v == NETREPORT_NO ? "false" : "unknown";
}

void netreport_print(const struct netreport *r, const struct netreport_input *in, FILE *f)
{
	fprintf(f, "\nReport:\n");
	fprintf(f, "\t* UDP: %s\n", r->udp ? "true" : "false");
	if (r->ipv4[0])
		fprintf(f, "\t* IPv4: yes, %s\n", r->ipv4);
	else
		fprintf(f, "\t* IPv4: (no addr found)\n");
	if (r->ipv6[0])
		fprintf(f, "\t* IPv6: yes, %s\n", r->ipv6);
	else
		fprintf(f, "\t* IPv6: no\n");
	fprintf(f, "\t* MappingVariesByDestIP: %s\n", yes_no(r->mapping_varies));
	fprintf(f, "\t* Nearest relay: ");
	for (size_t i = 0; i < r->nregions; i++)
		if (r->regions[i].id == r->preferred)
			fprintf(f, "%s", r->regions[i].name[0] ? r->regions[i].name : r->regions[i].code);
	fprintf(f, "%s\n", r->preferred ? "" : "none reachable");
	fprintf(f, "\t* Relay latency:\n");
	for (size_t i = 0; i < r->nregions; i++) {
		const struct netreport_region_result *rr = &r->regions[i];

		fprintf(f, "\t\t- %s:", rr->code);
		if (rr->has_stun)
			fprintf(f, " %.1fms", rr->stun_ms);
		else
			fprintf(f, " -");
		if (rr->has_relay)
			fprintf(f, " (relay %.1fms over TCP)", rr->relay_ms);
		else
			fprintf(f, " (relay unreachable)");
		fprintf(f, "  (%s)\n", rr->name[0] ? rr->name : rr->code);
		for (size_t k = 0; k < in->regions[i].region->nnodes; k++) {
			const struct netreport_node *n = &in->regions[i].nodes[k];

			if (n->relay.tried && !n->relay.reached)
				fprintf(f, "\t\t    %s: %s\n", n->node->name, n->relay.error);
		}
	}
}

/* Milliseconds to the microsecond: what a clock and a network can tell. */
static struct json *ms_or_null(bool has, double ms)
{
	return has ? json_new_double(round(ms * 1000) / 1000) : json_new_null();
}

static struct json *str_or_null(const char *s)
{
	return s[0] ? json_new_string(s) : json_new_null();
}

static struct json *node_json(const struct netreport_node *n)
{
	struct json *o = json_new_object(), *stun = json_new_array(), *relay = json_new_object();
	int err = o && stun && relay ? 0 : -ENOMEM;

	json_put_str(o, "name", n->node->name, &err);
	json_put_str(o, "hostName", n->node->host, &err);
	for (size_t s = 0; !err && s < n->nstun; s++) {
		const struct netreport_stun *st = &n->stun[s];
		struct json *j = json_new_object();
		int e = j ? 0 : -ENOMEM;

		json_put_str(j, "family", st->family == AF_INET6 ? "ipv6" : "ipv4", &e);
		json_put_str(j, "server", st->server, &e);
		json_put_bool(j, "answered", st->answered, &e);
		json_put(j, "rttMs", ms_or_null(st->answered, st->rtt_ms), &e);
		json_put(j, "mapped", str_or_null(st->answered ? st->mapped : ""), &e);
		if (e) {
			json_free(j);
			err = e;
		} else {
			err = json_array_append(stun, j);
		}
	}
	json_put(o, "stun", stun, &err);
	json_put_bool(relay, "reached", n->relay.reached, &err);
	json_put(relay, "connectMs", ms_or_null(n->relay.reached, n->relay.connect_ms), &err);
	json_put(relay, "upgradeMs", ms_or_null(n->relay.reached, n->relay.upgrade_ms), &err);
	json_put(relay, "error", str_or_null(n->relay.reached ? "" : n->relay.error), &err);
	json_put(o, "relay", relay, &err);
	if (err) {
		json_free(o);
		return NULL;
	}
	return o;
}

struct json *netreport_json(const struct netreport *r, const struct netreport_input *in)
{
	struct json *o = json_new_object(), *regions = json_new_array();
	int err = o && regions ? 0 : -ENOMEM;

	json_put_bool(o, "udp", r->udp, &err);
	json_put(o, "ipv4", str_or_null(r->ipv4), &err);
	json_put(o, "ipv6", str_or_null(r->ipv6), &err);
	json_put(o, "mappingVariesByDestIP",
		 r->mapping_varies == NETREPORT_UNKNOWN ? json_new_null() : json_new_bool(r->mapping_varies), &err);
	json_put(o, "preferredRegion", r->preferred ? json_new_int(r->preferred) : json_new_null(), &err);
	for (size_t i = 0; !err && i < r->nregions; i++) {
		const struct netreport_region_result *rr = &r->regions[i];
		struct json *j = json_new_object(), *nodes = json_new_array();
		int e = j && nodes ? 0 : -ENOMEM;

		json_put(j, "id", json_new_int(rr->id), &e);
		json_put_str(j, "code", rr->code, &e);
		json_put_str(j, "name", rr->name, &e);
		json_put(j, "latencyMs", ms_or_null(rr->has_latency, rr->latency_ms), &e);
		json_put(j, "stunMs", ms_or_null(rr->has_stun, rr->stun_ms), &e);
		json_put(j, "relayMs", ms_or_null(rr->has_relay, rr->relay_ms), &e);
		for (size_t k = 0; !e && k < in->regions[i].region->nnodes; k++)
			e = json_array_append(nodes, node_json(&in->regions[i].nodes[k]));
		json_put(j, "nodes", nodes, &e);
		if (e) {
			json_free(j);
			err = e;
		} else {
			err = json_array_append(regions, j);
		}
	}
	json_put(o, "regions", regions, &err);
	if (err) {
		json_free(o);
		return NULL;
	}
	return o;
}
