#include "wg/uapi.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

/* Bounds on what one request may create; the server caps its size too. */
#define MAX_PEERS (1u << 20)
#define MAX_ALLOWED_IPS (1u << 22)

static bool fail(struct uapi_error *err, int errnum, unsigned line, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static bool fail(struct uapi_error *err, int errnum, unsigned line, const char *fmt, ...)
{
	va_list ap;

	err->errnum = errnum;
	err->line = line;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	return false;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static bool parse_key(uint8_t key[UAPI_KEY_LEN], const char *v, size_t n)
{
	if (n != 2 * UAPI_KEY_LEN)
		return false;
	for (size_t i = 0; i < UAPI_KEY_LEN; i++) {
		int hi = hexval(v[2 * i]), lo = hexval(v[2 * i + 1]);
		if (hi < 0 || lo < 0) {
			sodium_memzero(key, UAPI_KEY_LEN);
			return false;
		}
		key[i] = (uint8_t)(hi << 4 | lo);
	}
	return true;
}

static bool parse_uint(const char *v, size_t n, uint64_t max, uint64_t *out)
{
	uint64_t x = 0;

	if (n == 0 || n > 20)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return false;
		if (x > (UINT64_MAX - (uint64_t)(v[i] - '0')) / 10)
			return false;
		x = x * 10 + (uint64_t)(v[i] - '0');
	}
	if (x > max)
		return false;
	*out = x;
	return true;
}

static bool is_true(const char *v, size_t n)
{
	return n == 4 && !memcmp(v, "true", 4);
}

static bool parse_allowed_ip(struct uapi_allowed_ip *a, const char *v, size_t n)
{
	char ip[INET6_ADDRSTRLEN];
	const char *slash = memchr(v, '/', n);
	uint64_t cidr;
	size_t iplen;

	if (!slash)
		return false;
	iplen = (size_t)(slash - v);
	if (iplen == 0 || iplen >= sizeof(ip))
		return false;
	memcpy(ip, v, iplen);
	ip[iplen] = '\0';
	memset(a, 0, sizeof(*a));
	if (inet_pton(AF_INET, ip, &a->ip.v4) == 1)
		a->family = AF_INET;
	else if (inet_pton(AF_INET6, ip, &a->ip.v6) == 1)
		a->family = AF_INET6;
	else
		return false;
	if (!parse_uint(slash + 1, n - iplen - 1, a->family == AF_INET ? 32 : 128, &cidr))
		return false;
	a->cidr = (uint8_t)cidr;
	return true;
}

static bool parse_endpoint(struct endpoint *ep, const char *v, size_t n, const char **why)
{
	char s[INET6_ADDRSTRLEN + 32];

	if (n >= sizeof(s)) {
		*why = "too long";
		return false;
	}
	memcpy(s, v, n);
	s[n] = '\0';
	return endpoint_parse(ep, s, why);
}

static bool key_is(const char *k, size_t kn, const char *name)
{
	return strlen(name) == kn && !memcmp(k, name, kn);
}

static struct uapi_peer *add_peer(struct uapi_config *c)
{
	struct uapi_peer *p;

	if (c->n_peers >= MAX_PEERS)
		return NULL;
	/* grow by doubling: n_peers is a power of two when full */
	if ((c->n_peers & (c->n_peers - 1)) == 0) {
		size_t cap = c->n_peers ? 2 * c->n_peers : 1;
		p = realloc(c->peers, cap * sizeof(*p));
		if (!p)
			return NULL;
		c->peers = p;
	}
	p = &c->peers[c->n_peers++];
	memset(p, 0, sizeof(*p));
	return p;
}

static bool add_allowed_ip(struct uapi_peer *p, const struct uapi_allowed_ip *a, size_t *total)
{
	if (*total >= MAX_ALLOWED_IPS)
		return false;
	if ((p->n_allowed_ips & (p->n_allowed_ips - 1)) == 0) {
		size_t cap = p->n_allowed_ips ? 2 * p->n_allowed_ips : 1;
		struct uapi_allowed_ip *n = realloc(p->allowed_ips, cap * sizeof(*n));
		if (!n)
			return false;
		p->allowed_ips = n;
	}
	p->allowed_ips[p->n_allowed_ips++] = *a;
	(*total)++;
	return true;
}

static bool device_line(struct uapi_config *c, const char *k, size_t kn, const char *v, size_t vn,
			unsigned line, struct uapi_error *err)
{
	uint64_t x;

	if (key_is(k, kn, "private_key")) {
		if (!parse_key(c->private_key, v, vn))
			return fail(err, EINVAL, line, "private_key: want 64 hex digits");
		c->flags |= UAPI_DEVICE_HAS_PRIVATE_KEY;
	} else if (key_is(k, kn, "listen_port")) {
		if (!parse_uint(v, vn, UINT16_MAX, &x))
			return fail(err, EINVAL, line, "listen_port: want 0..65535");
		c->listen_port = (uint16_t)x;
		c->flags |= UAPI_DEVICE_HAS_LISTEN_PORT;
	} else if (key_is(k, kn, "fwmark")) {
		if (!parse_uint(v, vn, UINT32_MAX, &x))
			return fail(err, EINVAL, line, "fwmark: want 0..4294967295");
		c->fwmark = (uint32_t)x;
		c->flags |= UAPI_DEVICE_HAS_FWMARK;
	} else if (key_is(k, kn, "replace_peers")) {
		if (!is_true(v, vn))
			return fail(err, EINVAL, line, "replace_peers: only \"true\" is valid");
		c->flags |= UAPI_DEVICE_REPLACE_PEERS;
	} else {
		return fail(err, EINVAL, line, "unknown device key \"%.*s\"", (int)(kn > 40 ? 40 : kn), k);
	}
	return true;
}

static bool peer_line(struct uapi_peer *p, const char *k, size_t kn, const char *v, size_t vn,
		      unsigned line, size_t *total_ips, struct uapi_error *err)
{
	uint64_t x;

	if (key_is(k, kn, "update_only")) {
		if (!is_true(v, vn))
			return fail(err, EINVAL, line, "update_only: only \"true\" is valid");
		p->flags |= UAPI_PEER_UPDATE_ONLY;
	} else if (key_is(k, kn, "remove")) {
		if (!is_true(v, vn))
			return fail(err, EINVAL, line, "remove: only \"true\" is valid");
		p->flags |= UAPI_PEER_REMOVE;
	} else if (key_is(k, kn, "preshared_key")) {
		if (!parse_key(p->preshared_key, v, vn))
			return fail(err, EINVAL, line, "preshared_key: want 64 hex digits");
		p->flags |= UAPI_PEER_HAS_PRESHARED_KEY;
	} else if (key_is(k, kn, "endpoint")) {
		const char *why = "";
		if (!parse_endpoint(&p->endpoint, v, vn, &why))
			return fail(err, EINVAL, line, "endpoint: %s", why);
		p->flags |= UAPI_PEER_HAS_ENDPOINT;
	} else if (key_is(k, kn, "persistent_keepalive_interval")) {
		if (!parse_uint(v, vn, UINT16_MAX, &x))
			return fail(err, EINVAL, line, "persistent_keepalive_interval: want 0..65535");
		p->persistent_keepalive = (uint16_t)x;
		p->flags |= UAPI_PEER_HAS_KEEPALIVE;
	} else if (key_is(k, kn, "replace_allowed_ips")) {
		if (!is_true(v, vn))
			return fail(err, EINVAL, line, "replace_allowed_ips: only \"true\" is valid");
		p->flags |= UAPI_PEER_REPLACE_ALLOWED_IPS;
	} else if (key_is(k, kn, "allowed_ip")) {
		struct uapi_allowed_ip a;
		if (!parse_allowed_ip(&a, v, vn))
			return fail(err, EINVAL, line, "allowed_ip: want address/prefix");
		if (!add_allowed_ip(p, &a, total_ips))
			return fail(err, ENOMEM, line, "allowed_ip: too many");
	} else if (key_is(k, kn, "protocol_version")) {
		if (vn != 1 || v[0] != '1')
			return fail(err, EINVAL, line, "protocol_version: only 1 is known");
	} else {
		return fail(err, EINVAL, line, "unknown peer key \"%.*s\"", (int)(kn > 40 ? 40 : kn), k);
	}
	return true;
}

bool uapi_parse_set(const char *text, size_t len, struct uapi_config **out, struct uapi_error *err)
{
	struct uapi_config *c = calloc(1, sizeof(*c));
	struct uapi_peer *peer = NULL;
	size_t pos = 0, total_ips = 0;
	unsigned line = 1; /* set=1 */
	bool ok = false;

	*out = NULL;
	memset(err, 0, sizeof(*err));
	if (!c)
		return fail(err, ENOMEM, 0, "out of memory");
	while (pos < len) {
		const char *l = text + pos, *nl = memchr(l, '\n', len - pos), *eq;
		size_t ll = nl ? (size_t)(nl - l) : len - pos;

		pos += ll + (nl ? 1 : 0);
		line++;
		if (ll == 0)
			break; /* the blank line ends the request */
		if (memchr(l, '\0', ll)) {
			fail(err, EPROTO, line, "NUL byte in line");
			goto out;
		}
		eq = memchr(l, '=', ll);
		if (!eq) {
			fail(err, EPROTO, line, "expected key=value");
			goto out;
		}
		const char *k = l, *v = eq + 1;
		size_t kn = (size_t)(eq - l), vn = ll - kn - 1;

		if (key_is(k, kn, "public_key")) {
			peer = add_peer(c);
			if (!peer) {
				fail(err, ENOMEM, line, "public_key: too many peers");
				goto out;
			}
			if (!parse_key(peer->public_key, v, vn)) {
				fail(err, EINVAL, line, "public_key: want 64 hex digits");
				goto out;
			}
			continue;
		}
		if (!(peer ? peer_line(peer, k, kn, v, vn, line, &total_ips, err)
			   : device_line(c, k, kn, v, vn, line, err)))
			goto out;
	}
	*out = c;
	ok = true;
out:
	if (!ok)
		uapi_config_free(c);
	return ok;
}

void uapi_config_free(struct uapi_config *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n_peers; i++) {
		sodium_memzero(c->peers[i].preshared_key, UAPI_KEY_LEN);
		free(c->peers[i].allowed_ips);
	}
	free(c->peers);
	sodium_memzero(c->private_key, UAPI_KEY_LEN);
	free(c);
}

void uapi_device_release(struct uapi_device *d)
{
	for (size_t i = 0; i < d->n_peers; i++) {
		sodium_memzero(d->peers[i].preshared_key, UAPI_KEY_LEN);
		free(d->peers[i].allowed_ips);
	}
	free(d->peers);
	sodium_memzero(d->private_key, UAPI_KEY_LEN);
	memset(d, 0, sizeof(*d));
}

static int add_key(struct buf *out, const char *name, const uint8_t key[UAPI_KEY_LEN])
{
	static const char hex[] = "0123456789abcdef";
	char line[2 * UAPI_KEY_LEN + 1];
	int ret;

	for (size_t i = 0; i < UAPI_KEY_LEN; i++) {
		line[2 * i] = hex[key[i] >> 4];
		line[2 * i + 1] = hex[key[i] & 15];
	}
	line[2 * UAPI_KEY_LEN] = '\0';
	ret = buf_addf(out, "%s=%s\n", name, line);
	sodium_memzero(line, sizeof(line));
	return ret;
}

int uapi_format_get(const struct uapi_device *d, struct buf *out)
{
	char addr[INET6_ADDRSTRLEN + 40];
	int ret = 0;

	if (d->has_private_key)
		ret = add_key(out, "private_key", d->private_key);
	if (!ret && d->listen_port)
		ret = buf_addf(out, "listen_port=%u\n", d->listen_port);
	if (!ret && d->fwmark)
		ret = buf_addf(out, "fwmark=%u\n", d->fwmark);
	for (size_t i = 0; i < d->n_peers && !ret; i++) {
		const struct uapi_peer_state *p = &d->peers[i];

		ret = add_key(out, "public_key", p->public_key);
		if (!ret)
			ret = add_key(out, "preshared_key", p->preshared_key);
		if (!ret)
			ret = buf_add_str(out, "protocol_version=1\n");
		if (!ret && p->has_endpoint) {
			if (endpoint_format(&p->endpoint, addr, sizeof(addr)) < 0)
				ret = -EINVAL;
			else
				ret = buf_addf(out, "endpoint=%s\n", addr);
		}
		if (!ret)
			ret = buf_addf(out,
				       "last_handshake_time_sec=%lld\nlast_handshake_time_nsec=%lld\n"
				       "tx_bytes=%llu\nrx_bytes=%llu\npersistent_keepalive_interval=%u\n",
				       (long long)p->last_handshake_sec, (long long)p->last_handshake_nsec,
				       (unsigned long long)p->tx_bytes, (unsigned long long)p->rx_bytes,
				       p->persistent_keepalive);
		for (size_t j = 0; j < p->n_allowed_ips && !ret; j++) {
			const struct uapi_allowed_ip *a = &p->allowed_ips[j];
			if (!inet_ntop(a->family, &a->ip, addr, sizeof(addr)))
				return -EINVAL;
			ret = buf_addf(out, "allowed_ip=%s/%u\n", addr, a->cidr);
		}
	}
	if (!ret)
		ret = uapi_format_errno(out, 0);
	return ret;
}

int uapi_format_errno(struct buf *out, int err)
{
	return buf_addf(out, "errno=%d\n\n", err > 0 ? -err : err);
}
