/* The WireGuard cross-platform userspace configuration protocol
 * (wireguard.com/xplatform), which wg(8) speaks over
 * /var/run/wireguard/<ifname>.sock:
 *
 *   get=1\n\n          -> key=value lines of the device, errno=0\n\n
 *   set=1\n<lines>\n   -> errno=N\n\n
 *
 * Pure: text in, structs out, and back. A set body becomes a uapi_config
 * that says what it touches with has/replace flags (as wireguard-tools'
 * containers.h), applied by the engine in order. Errors carry the line and
 * key, and the errno wireguard-go would answer with: EPROTO for a line that
 * is not key=value, EINVAL for an unknown key or a bad value. */
#ifndef KNIT_WG_UAPI_H
#define KNIT_WG_UAPI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "net/endpoint.h"

#define UAPI_KEY_LEN 32

struct uapi_allowed_ip {
	int family; /* AF_INET or AF_INET6 */
	union {
		struct in_addr v4;
		struct in6_addr v6;
	} ip;
	uint8_t cidr; /* as given: host bits are not cleared here */
};

enum {
	UAPI_DEVICE_HAS_PRIVATE_KEY = 1u << 0, /* an all-zero key removes it */
	UAPI_DEVICE_HAS_LISTEN_PORT = 1u << 1,
	UAPI_DEVICE_HAS_FWMARK = 1u << 2,
	UAPI_DEVICE_REPLACE_PEERS = 1u << 3,
};

enum {
	UAPI_PEER_REMOVE = 1u << 0,
	UAPI_PEER_UPDATE_ONLY = 1u << 1, /* do not create it if it is missing */
	UAPI_PEER_HAS_PRESHARED_KEY = 1u << 2, /* all-zero removes it */
	UAPI_PEER_HAS_ENDPOINT = 1u << 3,
	UAPI_PEER_HAS_KEEPALIVE = 1u << 4,
	UAPI_PEER_REPLACE_ALLOWED_IPS = 1u << 5,
};

struct uapi_peer {
	unsigned flags;
	uint8_t public_key[UAPI_KEY_LEN];
	uint8_t preshared_key[UAPI_KEY_LEN];
	struct endpoint endpoint;
	uint16_t persistent_keepalive; /* seconds, 0 = off */
	struct uapi_allowed_ip *allowed_ips; /* added after a replace, in order */
	size_t n_allowed_ips;
};

struct uapi_config {
	unsigned flags;
	uint8_t private_key[UAPI_KEY_LEN];
	uint16_t listen_port;
	uint32_t fwmark;
	struct uapi_peer *peers; /* in request order; a key may repeat */
	size_t n_peers;
};

struct uapi_error {
	int errnum; /* positive: EINVAL, EPROTO, ENOMEM */
	unsigned line; /* 1-based, counting the set=1 line; 0 if none */
	char msg[160];
};

/* Parses the body of a set request: the lines after "set=1\n", up to the
 * blank line that ends it (or the end of text). On success *out is a new
 * config (free with uapi_config_free()). On failure returns false, *out is
 * NULL and err says where and why. */
bool uapi_parse_set(const char *text, size_t len, struct uapi_config **out, struct uapi_error *err);
/* Wipes the keys and frees; NULL is a no-op. */
void uapi_config_free(struct uapi_config *c);

/* What get reports: a snapshot the engine fills in. */
struct uapi_peer_state {
	uint8_t public_key[UAPI_KEY_LEN];
	uint8_t preshared_key[UAPI_KEY_LEN];
	bool has_endpoint;
	struct endpoint endpoint;
	int64_t last_handshake_sec, last_handshake_nsec; /* wall clock; 0 = never */
	uint64_t rx_bytes, tx_bytes;
	uint16_t persistent_keepalive;
	struct uapi_allowed_ip *allowed_ips;
	size_t n_allowed_ips;
};

struct uapi_device {
	bool has_private_key;
	uint8_t private_key[UAPI_KEY_LEN];
	uint16_t listen_port;
	uint32_t fwmark;
	struct uapi_peer_state *peers;
	size_t n_peers;
};

/* Frees what the engine allocated in d (peers and their allowed_ips, with
 * malloc) and wipes the keys; d itself is the caller's. */
void uapi_device_release(struct uapi_device *d);

/* Appends the get response for d, ending with "errno=0\n\n". Returns 0 or
 * a negative errno from the buffer (-ENOSPC, -ENOMEM). */
int uapi_format_get(const struct uapi_device *d, struct buf *out);
/* Appends "errno=N\n\n". err is a negative errno or 0; like wireguard-go we
 * send it negative (wg(8) negates what it reads to set its errno). */
int uapi_format_errno(struct buf *out, int err);

#endif
