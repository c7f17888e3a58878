/* knitd's local API: JSON over HTTP on a unix socket (mode 0600, so only
 * root, or whoever runs knitd, may drive it), for the knit CLI and the CNI
 * plugin.
 *
 *   GET  /localapi/v1/status          this node and its peers
 *   GET  /localapi/v1/whois?ip=IP     the peer (or self) owning a tailnet IP
 *   POST /localapi/v1/up              {authKey, loginServer, hostname,
 *                                      advertiseTags, advertiseRoutes, serverKey}
 *   POST /localapi/v1/down            stop (keep the keys and the login)
 *   POST /localapi/v1/logout          delete the device at the server
 *   POST /localapi/v1/ping            {"peer": name or IP, "icmp": bool}
 *   POST   /localapi/v1/identities    attach a pod identity (docs/cni.md)
 *   DELETE /localapi/v1/identities/{containerID}/{ifName}
 *   GET    /localapi/v1/identities    the pod identities
 *
 * Errors are {"error": "...", "code": "..."}. Operations that wait on the
 * network (up, down, logout, ping) may answer late: the daemon completes
 * them through a localapi_reply. One answered at once gets its real HTTP
 * status; one answered late gets 200 and the outcome in the body, so
 * clients look for "error" in the body, whatever the status.
 *
 * The data come from the daemon through struct localapi_ops, so tests run
 * the API against fakes. Everything runs on the loop thread. */
#ifndef KNIT_AGENT_LOCALAPI_H
#define KNIT_AGENT_LOCALAPI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "defaults.h"

struct json;
struct loop;
struct localapi;
struct localapi_reply;
struct localapi_writer;

#define LOCALAPI_SOCKET_DEFAULT KNIT_SOCKET_DEFAULT
#define LOCALAPI_MAX_BODY (64u << 10)

/* A node as status and whois show it. Strings may be NULL when unknown. */
struct localapi_peer {
	const char *name; /* "db" */
	const char *dns_name; /* "db.tailnet.knit" */
	const char *node_key; /* "nodekey:..." */
	const char *const *addresses; /* "100.64.0.7", "fd7a:115c:a1e0::7" */
	size_t naddresses;
	const char *const *tags;
	size_t ntags;
	const char *user; /* the owner's login; NULL: tagged (or not known) */
	const char *endpoint; /* the direct path in use, "192.0.2.7:41641"; NULL if none */
	int relay; /* relay region in use when not direct; 0: none */
	/* The path packets take now, as "path": {"kind":"direct","addr":...,
	 * "latencyMs":...} or {"kind":"relay","region":N,"code":...}; kind
	 * NULL: no "path" member (self, or no path discovery). */
	struct localapi_path {
		const char *kind; /* "direct", "relay", "endpoint" (the netmap's, unprobed) */
		const char *addr; /* direct, endpoint */
		int region;	  /* relay */
		const char *code; /* relay: the region's code */
		double latency_ms; /* < 0: not measured */
	} path;
	int64_t last_handshake; /* unix seconds; 0: never */
	uint64_t rx_bytes, tx_bytes;
	bool online; /* connected to the control server */
};

struct localapi_status {
	/* "NeedsLogin" (no device: run knit up --authkey), "Starting",
	 * "Running", "Stopped" (knit down). */
	const char *backend_state;
	const char *login_server;
	const char *dns_suffix;
	const char *control_key; /* "ctrlkey:..." pinned, NULL if none */
	const char *health; /* one line on what is wrong (control unreachable...), NULL if fine */
	/* The netmap's relayMap as the coordination server sent it (NULL:
	 * none, shown as null); left out while !has_relay_map (no netmap). */
	const struct json *relay_map;
	bool has_relay_map;
	int64_t key_expiry; /* when the node key expires, Unix seconds; 0: never */
};

/* What knit up asked for, validated: tags are "tag:<name>", routes parse
 * as prefixes, the login server is an http(s) URL, the server key parsed.
 * NULL/0 for what was not given. Valid until ops->up returns. */
struct localapi_up {
	const char *auth_key;
	const char *login_server;
	const char *hostname;
	const char *const *tags;
	size_t ntags;
	const char *const *routes;
	size_t nroutes;
	bool has_server_key;
	uint8_t server_key[32];
	bool has_tags, has_routes; /* given, even if empty (clears them) */
};

struct localapi_ops {
	/* Fills w: localapi_write_status() once, localapi_write_self() once,
	 * localapi_write_peer() per peer. Returns 0 or a negative errno. */
	int (*status)(void *arg, struct localapi_writer *w);
	/* The node owning ip (a parsed address, as text): one
	 * localapi_write_peer() (self counts). -ENOENT if nobody. */
	int (*whois)(void *arg, const char *ip, struct localapi_writer *w);
	/* Each completes reply exactly once, now or later. */
	void (*up)(void *arg, const struct localapi_up *req, struct localapi_reply *reply);
	void (*down)(void *arg, struct localapi_reply *reply);
	void (*logout)(void *arg, struct localapi_reply *reply);
	/* peer is a name or a tailnet IP, not yet resolved; valid until
	 * ping returns (copy it to answer later). */
	/* icmp: an ICMP echo through the tunnel (WireGuard carries it) rather
	 * than a disco ping along the path. */
	void (*ping)(void *arg, const char *peer, bool icmp, struct localapi_reply *reply);
	void *arg;
};

/* A pod identity asked for by the CNI plugin (docs/cni.md), validated:
 * containerID of letters, digits, _ . -; ifName a device name; netns an
 * absolute path; tags tag:<name>; hostname a DNS label. NULL/0 for what
 * was not given. Valid until ops->attach returns. */
struct localapi_attach {
	const char *container_id, *ifname, *netns, *network;
	const char *pod_namespace, *pod_name, *pod_uid, *hostname;
	const char *const *tags;
	size_t ntags;
};

/* The pod identities' operations; each completes reply exactly once. */
struct localapi_pod_ops {
	void (*attach)(void *arg, const struct localapi_attach *req, struct localapi_reply *reply);
	/* 404 when unknown. Both strings decoded and checked as in attach. */
	void (*detach)(void *arg, const char *container_id, const char *ifname, struct localapi_reply *reply);
	/* {"identities": [...]} */
	void (*list)(void *arg, struct localapi_reply *reply);
	void *arg;
};

struct localapi_opts {
	const char *socket_path; /* NULL: LOCALAPI_SOCKET_DEFAULT */
	const char *version; /* the daemon's, shown in status */
	const struct localapi_ops *ops; /* copied */
	const struct localapi_pod_ops *pods; /* copied; NULL: no /identities */
};

/* Binds the socket (net/unixsock.h: mode 0600; its directory made 0755 if
 * missing) and serves. A stale socket nobody answers on is replaced; one
 * that answers is another knitd: -EADDRINUSE; a path that is not a socket
 * is left intact: -EEXIST. Other negative errnos from the system;
 * -EAFNOSUPPORT if lib/httpd will not serve a unix socket. */
int localapi_new(struct loop *loop, const struct localapi_opts *o, struct localapi **out);
/* Stops serving and removes the socket file. Replies still outstanding
 * stay valid: completing them only frees them. NULL is a no-op. */
void localapi_free(struct localapi *api);

/* ---- writing status and whois ----------------------------------------- */

int localapi_write_status(struct localapi_writer *w, const struct localapi_status *st);
int localapi_write_self(struct localapi_writer *w, const struct localapi_peer *p);
int localapi_write_peer(struct localapi_writer *w, const struct localapi_peer *p);

/* ---- completing operations -------------------------------------------- */

struct localapi_pong {
	const char *peer; /* its name */
	const char *ip; /* the address pinged */
	double latency_ms;
	const char *endpoint; /* answered over this direct path, or NULL */
	int relay; /* or through this relay region */
};

struct localapi_up_result {
	const char *backend_state;
	const char *device;
	const char *name;
	const char *const *addresses;
	size_t naddresses;
	const char *control_key; /* "ctrlkey:..." */
	bool control_key_new; /* trusted on first use just now: show it */
};

/* Success with a JSON object (consumed; NULL: {}). */
void localapi_reply_ok(struct localapi_reply *r, struct json *result);
void localapi_reply_pong(struct localapi_reply *r, const struct localapi_pong *p);
void localapi_reply_up(struct localapi_reply *r, const struct localapi_up_result *u);
/* Failure: status is the HTTP status when the answer is still immediate
 * (400, 404, 409, 502, 504...), code a CamelCase reason ("NeedsLogin",
 * "PeerNotFound", "ControlUnreachable", "AuthKeyInvalid"...). */
void localapi_reply_error(struct localapi_reply *r, unsigned status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#endif
