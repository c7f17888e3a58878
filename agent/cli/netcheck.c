/* knit netcheck: probes the relay map's STUN servers from this host's own
 * UDP sockets (one per address family) and dials each relay over TCP, then
 * prints what netreport.c makes of it. Blocking and sequential where that
 * is simplest: a map holds a few dozen nodes at most. */
#include "netcheck.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "buf.h"
#include "control/relaymap.h"
#include "json.h"
#include "netreport.h"
#include "relay/frame.h"
#include "relay/upgrade.h"
#include "stun/stun.h"

#define MAX_MAP_FILE (1u << 20)
#define STUN_TRIES 3
#define STUN_RETRY_MS 500

const char netcheck_usage[] =
	"Usage: knit netcheck [--json] [--relay-map FILE] [--timeout SECONDS] [--ca FILE]\n"
	"\n"
	"Checks this host's network for the tailnet, as tailscale netcheck does: from\n"
	"its own UDP sockets it asks every STUN server of the relay map for its\n"
	"reflexive address, and it dials every relay over TCP. It reports:\n"
	"  UDP                     whether any STUN server answered (no: UDP is blocked,\n"
	"                          and peers will talk through a relay over TCP)\n"
	"  IPv4, IPv6              this host's address and port as the internet sees them\n"
	"  MappingVariesByDestIP   whether the NAT maps one local socket to different\n"
	"                          ports for different destinations (\"hard\" NAT: direct\n"
	"                          paths rarely form, expect the relay); unknown with\n"
	"                          fewer than two STUN servers answering\n"
	"  Nearest relay           the region with the lowest latency\n"
	"  Relay latency           per region: the best STUN round trip, and the time to\n"
	"                          reach its relay (TCP connect, TLS, HTTP upgrade, the\n"
	"                          relay's first frame); a relay whose key differs from\n"
	"                          the one the map pins (publicKey) counts as not reached\n"
	"\n"
	"The relay map comes from knitd (the tailnet's, in its netmap) unless\n"
	"--relay-map gives one, so it also runs without knitd.\n"
	"\n"
	"Flags:\n"
	"  --json              print the report as JSON\n"
	"  --relay-map FILE    read the relay map from FILE (JSON: the map itself, as a\n"
	"                      Tailnet's spec.relayMap, or any object with a \"relayMap\"\n"
	"                      member, such as knit status --json's output)\n"
	"  --timeout SECONDS   how long to wait for STUN answers, and for each relay\n"
	"                      (default 3)\n"
	"  --ca FILE           CA bundle (PEM) to verify TLS relays with (default: the\n"
	"                      system's)\n"
	"\n"
	"Exits 0 with a report (even when nothing answered), 1 when there is no relay\n"
	"map to check, 2 for a usage error.\n";

struct probe {
	struct netreport_stun *st;
	struct sockaddr_storage to;
	socklen_t tolen;
	int fd;
	unsigned tries;
	uint8_t txid[STUN_TRIES][STUN_TXID_LEN];
	double sent_ms[STUN_TRIES];
};

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void format_sa(const struct sockaddr_storage *ss, char *out, size_t len)
{
	char a[INET6_ADDRSTRLEN] = "?";

	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const void *)ss;
		inet_ntop(AF_INET6, &s6->sin6_addr, a, sizeof(a));
		snprintf(out, len, "[%s]:%u", a, ntohs(s6->sin6_port));
	} else {
		const struct sockaddr_in *s4 = (const void *)ss;
		inet_ntop(AF_INET, &s4->sin_addr, a, sizeof(a));
		snprintf(out, len, "%s:%u", a, ntohs(s4->sin_port));
	}
}

/* The node's address in family: its ipv4/ipv6 when the map gives one, else
 * the first its hostName resolves to. A map that gives either address
 * pins the node: its hostName is then not looked up at all (it may not
 * resolve here). */
static bool node_addr(const struct relaymap_node *n, int family, uint16_t port, struct sockaddr_storage *out,
		      socklen_t *outlen)
{
	const char *lit = family == AF_INET ? n->ipv4 : n->ipv6;
	struct addrinfo hints = { .ai_family = family, .ai_socktype = SOCK_DGRAM }, *res = NULL;
	bool ok = false;

	memset(out, 0, sizeof(*out));
	if (!lit[0] && (n->ipv4[0] || n->ipv6[0]))
		return false;
	if (!lit[0] && getaddrinfo(n->host, NULL, &hints, &res) == 0 && res) {
		memcpy(out, res->ai_addr, res->ai_addrlen);
		ok = true;
	} else if (lit[0]) {
		out->ss_family = (sa_family_t)family;
		ok = inet_pton(family, lit,
			       family == AF_INET ? (void *)&((struct sockaddr_in *)out)->sin_addr
						 : (void *)&((struct sockaddr_in6 *)out)->sin6_addr) == 1;
	}
	if (res)
		freeaddrinfo(res);
	if (!ok)
		return false;
	if (family == AF_INET) {
		((struct sockaddr_in *)out)->sin_port = htons(port);
		*outlen = sizeof(struct sockaddr_in);
	} else {
		((struct sockaddr_in6 *)out)->sin6_port = htons(port);
		*outlen = sizeof(struct sockaddr_in6);
	}
	return true;
}

static int udp_socket(int family)
{
	int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;

	if (fd >= 0 && family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	return fd;
}

static void stun_send(struct probe *p)
{
	uint8_t msg[64];
	size_t len;

	stun_txid_new(p->txid[p->tries]);
	len = stun_binding_request(msg, sizeof(msg), p->txid[p->tries], true);
	p->sent_ms[p->tries++] = now_ms();
	/* A family with no route says so here (ENETUNREACH): no answer then. */
	sendto(p->fd, msg, len, 0, (struct sockaddr *)&p->to, p->tolen);
}

static void stun_receive(int fd, struct probe *probes, size_t n)
{
	uint8_t buf[STUN_MAX_MSG];
	struct sockaddr_storage from;
	socklen_t fromlen = sizeof(from);
	struct stun_msg m;
	ssize_t r;

	while ((r = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fromlen)) >= 0) {
		double t = now_ms();

		fromlen = sizeof(from);
		if (!stun_parse(buf, (size_t)r, &m, NULL, 0) || m.type != STUN_BINDING_SUCCESS || !m.has_addr)
			continue;
		for (size_t i = 0; i < n; i++) {
			struct probe *p = &probes[i];

			if (p->fd != fd || p->st->answered)
				continue;
			for (unsigned k = 0; k < p->tries; k++) {
				if (memcmp(m.txid, p->txid[k], STUN_TXID_LEN) != 0)
					continue;
				p->st->answered = true;
				p->st->rtt_ms = t - p->sent_ms[k];
				format_sa(&m.addr, p->st->mapped, sizeof(p->st->mapped));
			}
		}
	}
}

/* Every node's STUN server, in both families, from one socket per family;
 * asked up to STUN_TRIES times until it answers or timeout_ms passes. */
static int stun_phase(struct netreport_input *in, int timeout_ms)
{
	int fds[2] = { udp_socket(AF_INET), udp_socket(AF_INET6) };
	struct probe *probes = NULL;
	size_t n = 0, cap = 0;
	double start;
	int ret = 0;

	for (size_t i = 0; i < in->nregions; i++) {
		for (size_t k = 0; k < in->regions[i].region->nnodes; k++) {
			struct netreport_node *nd = &in->regions[i].nodes[k];

			for (int f = 0; f < 2 && nd->node->stun_port; f++) {
				int family = f ? AF_INET6 : AF_INET;
				struct probe p = { .fd = fds[f] };

				if (p.fd < 0 || !node_addr(nd->node, family, nd->node->stun_port, &p.to, &p.tolen))
					continue;
				if (n == cap) {
					struct probe *np = realloc(probes, (cap ? cap * 2 : 16) * sizeof(*np));
					if (!np) {
						ret = -ENOMEM;
						goto out;
					}
					probes = np;
					cap = cap ? cap * 2 : 16;
				}
				p.st = &nd->stun[nd->nstun++];
				p.st->family = family;
				format_sa(&p.to, p.st->server, sizeof(p.st->server));
				probes[n++] = p;
			}
		}
	}
	/* After the name lookups, which may take their time. */
	start = now_ms();
	for (;;) {
		struct pollfd pfd[2] = { { .fd = fds[0], .events = POLLIN }, { .fd = fds[1], .events = POLLIN } };
		double t = now_ms(), next = start + timeout_ms;
		size_t waiting = 0;

		for (size_t i = 0; i < n; i++) {
			struct probe *p = &probes[i];

			if (p->st->answered)
				continue;
			waiting++;
			if (p->tries < STUN_TRIES && t >= start + p->tries * STUN_RETRY_MS)
				stun_send(p);
			if (p->tries < STUN_TRIES && start + p->tries * STUN_RETRY_MS < next)
				next = start + p->tries * STUN_RETRY_MS;
		}
		if (!waiting || t >= start + timeout_ms)
			break;
		if (poll(pfd, 2, (int)(next - t) + 1) < 0 && errno != EINTR)
			break;
		for (int f = 0; f < 2; f++)
			if (fds[f] >= 0 && (pfd[f].revents & POLLIN))
				stun_receive(fds[f], probes, n);
	}
out:
	free(probes);
	for (int f = 0; f < 2; f++)
		if (fds[f] >= 0)
			close(fds[f]);
	return ret;
}

/* Waits for the connection's socket to be ready for ev until deadline. */
static bool wait_sock(CURL *e, short ev, double deadline)
{
	curl_socket_t fd;
	struct pollfd pfd;
	double left = deadline - now_ms();

	if (left <= 0 || curl_easy_getinfo(e, CURLINFO_ACTIVESOCKET, &fd) != CURLE_OK || fd == CURL_SOCKET_BAD)
		return false;
	pfd = (struct pollfd){ .fd = fd, .events = ev };
	return poll(&pfd, 1, (int)left + 1) > 0;
}

/* Connects as a relay client would, to the first frame (SERVER_KEY). */
static void relay_probe(const struct relaymap_node *n, int timeout_ms, const char *ca, struct netreport_relay *out)
{
	bool v6 = strchr(n->host, ':') != NULL;
	char url[320], connect_to[400];
	const char *addr = n->ipv4[0] ? n->ipv4 : n->ipv6[0] ? n->ipv6 : NULL;
	struct curl_slist *ct = NULL;
	struct buf req = BUF_INIT(1024);
	uint8_t in[RELAY_UPGRADE_MAX_HEAD + 256];
	size_t have = 0, head = 0;
	curl_off_t connect_us = 0;
	double start = now_ms(), deadline = start + timeout_ms;
	CURL *e = curl_easy_init();
	CURLcode rc;
	char host_hdr[300];

	out->tried = true;
	if (!e) {
		snprintf(out->error, sizeof(out->error), "cannot initialise libcurl");
		goto out;
	}
	snprintf(url, sizeof(url), "%s://%s%s%s:%u/", n->tls ? "https" : "http", v6 ? "[" : "", n->host, v6 ? "]" : "",
		 n->relay_port);
	curl_easy_setopt(e, CURLOPT_URL, url);
	if (addr) {
		bool av6 = strchr(addr, ':') != NULL;

		snprintf(connect_to, sizeof(connect_to), "::%s%s%s:%u", av6 ? "[" : "", addr, av6 ? "]" : "",
			 n->relay_port);
		ct = curl_slist_append(NULL, connect_to);
		curl_easy_setopt(e, CURLOPT_CONNECT_TO, ct);
	}
	curl_easy_setopt(e, CURLOPT_CONNECT_ONLY, 1L);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	if (ca)
		curl_easy_setopt(e, CURLOPT_CAINFO, ca);
	rc = curl_easy_perform(e);
	if (rc != CURLE_OK) {
		snprintf(out->error, sizeof(out->error), "%s", curl_easy_strerror(rc));
		goto out;
	}
	curl_easy_getinfo(e, CURLINFO_CONNECT_TIME_T, &connect_us);
	out->connect_ms = (double)connect_us / 1e3;
	snprintf(host_hdr, sizeof(host_hdr), "%s%s%s", v6 ? "[" : "", n->host, v6 ? "]" : "");
	if (relay_upgrade_request(&req, host_hdr)) {
		snprintf(out->error, sizeof(out->error), "out of memory");
		goto out;
	}
	for (size_t sent = 0; sent < req.len;) {
		size_t k = 0;

		rc = curl_easy_send(e, req.data + sent, req.len - sent, &k);
		if (rc == CURLE_AGAIN && wait_sock(e, POLLOUT, deadline))
			continue;
		if (rc != CURLE_OK) {
			snprintf(out->error, sizeof(out->error), "sending the upgrade: %s", curl_easy_strerror(rc));
			goto out;
		}
		sent += k;
	}
	for (;;) {
		struct relay_parser ps;
		struct relay_frame f;
		struct relay_msg m;
		const uint8_t *p;
		size_t len, k = 0;
		char why[96];
		int r;

		if (!head) {
			r = relay_upgrade_response_parse((const char *)in, have, &head, why, sizeof(why));
			if (r < 0) {
				snprintf(out->error, sizeof(out->error), "not a knit relay: %s", why);
				goto out;
			}
		}
		if (head) {
			p = in + head;
			len = have - head;
			relay_parser_init(&ps, 0);
			r = relay_parser_next(&ps, &p, &len, &f);
			if (r == 1 && relay_frame_decode(&f, &m, why, sizeof(why)) && m.type == RELAY_FRAME_SERVER_KEY) {
				relay_parser_free(&ps);
				/* knitd would refuse it (the key claimed; knitd also
				 * has it proven, which takes a node key). */
				if (n->has_key && memcmp(m.key, n->key, RELAY_KEY_LEN) != 0) {
					char text[RELAY_KEY_TEXT_LEN];

					snprintf(out->error, sizeof(out->error),
						 "the relay's key is not the one pinned: it says %s",
						 relay_key_text(m.key, text));
					goto out;
				}
				out->reached = true;
				out->upgrade_ms = now_ms() - start - out->connect_ms;
				goto out;
			}
			relay_parser_free(&ps);
			if (r != 0) {
				snprintf(out->error, sizeof(out->error), "not a knit relay: no SERVER_KEY frame");
				goto out;
			}
		}
		if (have == sizeof(in)) {
			snprintf(out->error, sizeof(out->error), "not a knit relay: answer too long");
			goto out;
		}
		rc = curl_easy_recv(e, in + have, sizeof(in) - have, &k);
		if (rc == CURLE_AGAIN) {
			if (!wait_sock(e, POLLIN, deadline)) {
				snprintf(out->error, sizeof(out->error), "no answer to the upgrade within %d ms", timeout_ms);
				goto out;
			}
			continue;
		}
		if (rc != CURLE_OK || k == 0) {
			snprintf(out->error, sizeof(out->error), "connection closed during the upgrade%s%s",
				 rc != CURLE_OK ? ": " : "", rc != CURLE_OK ? curl_easy_strerror(rc) : "");
			goto out;
		}
		have += k;
	}
out:
	buf_free(&req);
	curl_slist_free_all(ct);
	if (e)
		curl_easy_cleanup(e);
}

/* The map in j: the relayMap object itself, or an object holding one. */
static const struct json *find_map(const struct json *j)
{
	const struct json *inner = json_get(j, "relayMap");

	if (inner)
		return inner;
	inner = json_path(j, "spec", "relayMap", NULL);
	return inner ? inner : j;
}

static struct json *read_map_file(const char *path)
{
	struct buf b = BUF_INIT(MAX_MAP_FILE);
	struct json_error je;
	struct json *j = NULL;
	char chunk[4096];
	ssize_t r;
	int fd = strcmp(path, "-") == 0 ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		fprintf(stderr, "knit netcheck: cannot read %s: %s\n", path, strerror(errno));
		return NULL;
	}
	while ((r = read(fd, chunk, sizeof(chunk))) > 0) {
		if (buf_add(&b, chunk, (size_t)r)) {
			fprintf(stderr, "knit netcheck: %s is larger than %u bytes\n", path, MAX_MAP_FILE);
			goto out;
		}
	}
	if (r < 0) {
		fprintf(stderr, "knit netcheck: cannot read %s: %s\n", path, strerror(errno));
		goto out;
	}
	j = json_parse((const char *)buf_str(&b), b.len, &je);
	if (!j)
		fprintf(stderr, "knit netcheck: %s: line %zu: %s\n", path, je.line, je.msg);
out:
	if (fd != STDIN_FILENO)
		close(fd);
	buf_free(&b);
	return j;
}

int netcheck_main(int argc, char **argv, struct json *(*knitd_status)(void *arg), void *arg)
{
	enum { O_JSON = 0x100, O_MAP, O_TIMEOUT, O_CA, O_HELP };
	static const struct option opts[] = {
		{ "json", no_argument, NULL, O_JSON },	  { "relay-map", required_argument, NULL, O_MAP },
		{ "timeout", required_argument, NULL, O_TIMEOUT }, { "ca", required_argument, NULL, O_CA },
		{ "help", no_argument, NULL, O_HELP },	  { NULL, 0, NULL, 0 },
	};
	const char *map_file = NULL, *ca = NULL;
	bool as_json = false;
	long timeout_s = 3;
	struct json *src = NULL, *rep_json = NULL;
	struct relaymap map = { 0 };
	struct netreport_input in = { 0 };
	struct netreport rep = { 0 };
	char err[256];
	int c, ret = NETCHECK_FAIL;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		char *end;

		switch (c) {
		case O_JSON: as_json = true; break;
		case O_MAP: map_file = optarg; break;
		case O_CA: ca = optarg; break;
		case O_TIMEOUT:
			errno = 0;
			timeout_s = strtol(optarg, &end, 10);
			if (errno || end == optarg || *end || timeout_s < 1 || timeout_s > 60) {
				fprintf(stderr, "knit netcheck: --timeout wants 1 to 60 seconds, not \"%s\"\n\n%s", optarg,
					netcheck_usage);
				return NETCHECK_USAGE;
			}
			break;
		case 'h':
		case O_HELP: fputs(netcheck_usage, stdout); return 0;
		case ':':
			fprintf(stderr, "knit netcheck: %s needs a value\n\n%s", argv[optind - 1], netcheck_usage);
			return NETCHECK_USAGE;
		default:
			fprintf(stderr, "knit netcheck: unknown flag \"%s\"\n\n%s", argv[optind - 1], netcheck_usage);
			return NETCHECK_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "knit netcheck: unexpected argument \"%s\"\n\n%s", argv[optind], netcheck_usage);
		return NETCHECK_USAGE;
	}
	src = map_file ? read_map_file(map_file) : knitd_status(arg);
	if (!src)
		goto out;
	if (!map_file && !json_get(src, "relayMap")) {
		fprintf(stderr, "knit netcheck: knitd has no netmap yet (not logged in, or not connected): "
				"pass --relay-map FILE\n");
		goto out;
	}
	if (!relaymap_parse(find_map(src), &map, err, sizeof(err))) {
		fprintf(stderr, "knit netcheck: the relay map is not valid: %s\n", err);
		goto out;
	}
	if (map.nregions == 0) {
		fprintf(stderr, "knit netcheck: the relay map has no regions (the Tailnet's spec.relayMap is empty)\n");
		goto out;
	}
	if (!(in.regions = calloc(map.nregions, sizeof(*in.regions))))
		goto oom;
	in.nregions = map.nregions;
	for (size_t i = 0; i < map.nregions; i++) {
		in.regions[i].region = &map.regions[i];
		if (!(in.regions[i].nodes = calloc(map.regions[i].nnodes, sizeof(*in.regions[i].nodes))))
			goto oom;
		for (size_t k = 0; k < map.regions[i].nnodes; k++)
			in.regions[i].nodes[k].node = &map.regions[i].nodes[k];
	}
	if (stun_phase(&in, (int)timeout_s * 1000))
		goto oom;
	for (size_t i = 0; i < in.nregions; i++)
		for (size_t k = 0; k < map.regions[i].nnodes; k++)
			relay_probe(&map.regions[i].nodes[k], (int)timeout_s * 1000, ca, &in.regions[i].nodes[k].relay);
	if (netreport_build(&in, &rep))
		goto oom;
	if (as_json) {
		struct buf b = BUF_INIT(4u << 20);

		if (!(rep_json = netreport_json(&rep, &in)) || json_dump(rep_json, &b, JSON_DUMP_PRETTY)) {
			buf_free(&b);
			goto oom;
		}
		printf("%s\n", buf_str(&b));
		buf_free(&b);
	} else {
		netreport_print(&rep, &in, stdout);
	}
	ret = 0;
	goto out;
oom:
	fprintf(stderr, "knit netcheck: out of memory\n");
out:
	json_free(rep_json);
	netreport_free(&rep);
	for (size_t i = 0; i < in.nregions; i++)
		free(in.regions[i].nodes);
	free(in.regions);
	relaymap_free(&map);
	json_free(src);
	return ret;
}
