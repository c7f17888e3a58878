/* knit netcheck's report: what the probes found (one STUN exchange per
 * relay node and address family, one relay connection per node) turned
 * into answers: does UDP work, what are this host's reflexive addresses,
 * does the NAT's mapping vary by destination (the "hard NAT" test: one
 * local socket, two STUN servers, two different mapped addresses), how far
 * is each relay region, and which is nearest. Pure: results in, report
 * out (text as `tailscale netcheck` prints it, or JSON); netcheck.c does
 * the I/O. */
#ifndef KNIT_CLI_NETREPORT_H
#define KNIT_CLI_NETREPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "control/relaymap.h"

struct json;

/* One STUN Binding exchange from the local socket of one family. */
struct netreport_stun {
	int family;	 /* AF_INET or AF_INET6 */
	char server[64]; /* "192.0.2.1:3478": the address asked */
	bool answered;
	double rtt_ms;
	char mapped[64]; /* the reflexive address it saw, "198.51.100.7:41641" */
};

/* One relay connection: TCP (and TLS), the HTTP upgrade, SERVER_KEY. */
struct netreport_relay {
	bool tried;
	bool reached;	   /* a knit relay answered: 101 and its SERVER_KEY */
	double connect_ms; /* TCP connect */
	double upgrade_ms; /* from connecting until SERVER_KEY (TLS included) */
	char error[192];   /* why not, when !reached */
};

#define NETREPORT_STUN_PER_NODE 2 /* one per family */

/* What was found about one node of the map (same order as the map). */
struct netreport_node {
	const struct relaymap_node *node;
	struct netreport_stun stun[NETREPORT_STUN_PER_NODE];
	size_t nstun;
	struct netreport_relay relay;
};

struct netreport_region {
	const struct relaymap_region *region;
	struct netreport_node *nodes; /* region->nnodes of them */
};

/* All the probes' results; regions in the map's order. */
struct netreport_input {
	struct netreport_region *regions;
	size_t nregions;
};

struct netreport_region_result {
	int id;
	const char *code, *name;
	bool has_stun;	    /* some node answered STUN */
	double stun_ms;	    /* the best STUN round trip */
	bool has_relay;	    /* some node's relay answered */
	double relay_ms;    /* the best connect + upgrade */
	bool has_latency;
	double latency_ms; /* stun_ms if any, else relay_ms */
};

/* Tri-state answers: NETREPORT_UNKNOWN when the probes cannot tell. */
enum { NETREPORT_NO = 0, NETREPORT_YES = 1, NETREPORT_UNKNOWN = -1 };

struct netreport {
	bool udp; /* any STUN answer, either family */
	char ipv4[64], ipv6[64]; /* "" when none answered in that family */
	/* IPv4: two different STUN servers saw the one local socket at two
	 * different mapped addresses. Unknown with fewer than two servers
	 * answering. */
	int mapping_varies;
	int preferred; /* region id, 0: none reachable */
	struct netreport_region_result *regions; /* nregions of them */
	size_t nregions;
};

/* Builds the report from the probes. -ENOMEM, else 0. */
int netreport_build(const struct netreport_input *in, struct netreport *out);
void netreport_free(struct netreport *r);

/* The report for people, as `tailscale netcheck` prints its own. */
void netreport_print(const struct netreport *r, const struct netreport_input *in, FILE *f);
/* The report as JSON (docs in agent/cli/README.md); NULL on ENOMEM. */
struct json *netreport_json(const struct netreport *r, const struct netreport_input *in);

#endif
