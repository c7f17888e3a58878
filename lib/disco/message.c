/* Disco messages; see message.h. */
#include "disco/message.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sodium.h>
#include <string.h>

#include "buf.h"

#define PING_BODY (DISCO_TXID_LEN + DISCO_KEY_LEN)
#define PONG_BODY (DISCO_TXID_LEN + 18)
#define EP_LEN 18

bool disco_is(const uint8_t *p, size_t len)
{
	return len >= DISCO_HEADER_LEN + DISCO_BOX_OVERHEAD + 2 &&
	       memcmp(p, DISCO_MAGIC, DISCO_MAGIC_LEN) == 0;
}

/* An address as 16 bytes (IPv4 v4-mapped) and a port. */
static bool addr_put(uint8_t *out, const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;

		memset(out, 0, 10);
		out[10] = out[11] = 0xff;
		memcpy(out + 12, &s4->sin_addr, 4);
		memcpy(out + 16, &s4->sin_port, 2);
		return true;
	}
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;

		memcpy(out, &s6->sin6_addr, 16);
		memcpy(out + 16, &s6->sin6_port, 2);
		return true;
	}
	return false;
}

static bool addr_get(const uint8_t *in, struct sockaddr_storage *ss)
{
	static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	memset(ss, 0, sizeof(*ss));
	if (in[16] == 0 && in[17] == 0)
		return false; /* port 0 is nobody's endpoint */
	if (memcmp(in, v4mapped, 12) == 0) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

		s4->sin_family = AF_INET;
		memcpy(&s4->sin_addr, in + 12, 4);
		memcpy(&s4->sin_port, in + 16, 2);
	} else {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

		s6->sin6_family = AF_INET6;
		memcpy(&s6->sin6_addr, in, 16);
		memcpy(&s6->sin6_port, in + 16, 2);
	}
	return true;
}

size_t disco_msg_encode(const struct disco_msg *m, uint8_t *out, size_t cap)
{
	size_t n = 2;

	if (cap < 2)
		return 0;
	out[0] = m->type;
	out[1] = DISCO_VERSION;
	switch (m->type) {
	case DISCO_PING:
		if (cap < 2 + PING_BODY)
			return 0;
		memcpy(out + 2, m->txid, DISCO_TXID_LEN);
		memcpy(out + 2 + DISCO_TXID_LEN, m->node_key, DISCO_KEY_LEN);
		return 2 + PING_BODY;
	case DISCO_PONG:
		if (cap < 2 + PONG_BODY)
			return 0;
		memcpy(out + 2, m->txid, DISCO_TXID_LEN);
		return addr_put(out + 2 + DISCO_TXID_LEN, &m->src) ? 2 + PONG_BODY : 0;
	case DISCO_CALL_ME_MAYBE:
		if (m->neps > DISCO_MAX_ENDPOINTS || cap < 2 + m->neps * EP_LEN)
			return 0;
		for (size_t i = 0; i < m->neps; i++, n += EP_LEN)
			if (!addr_put(out + n, &m->eps[i]))
				return 0;
		return n;
	default:
		return 0;
	}
}

bool disco_msg_parse(const uint8_t *p, size_t len, struct disco_msg *m, char *err, size_t errlen)
{
	memset(m, 0, sizeof(*m));
	if (len < 2) {
		errbuf_printf(err, errlen, "disco message of %zu bytes", len);
		return false;
	}
	if (p[1] < DISCO_VERSION) {
		errbuf_printf(err, errlen, "disco version %u", p[1]);
		return false;
	}
	m->type = p[0];
	p += 2;
	len -= 2;
	switch (m->type) {
	case DISCO_PING:
		if (len < PING_BODY)
			break;
		memcpy(m->txid, p, DISCO_TXID_LEN);
		memcpy(m->node_key, p + DISCO_TXID_LEN, DISCO_KEY_LEN);
		return true;
	case DISCO_PONG:
		if (len < PONG_BODY)
			break;
		memcpy(m->txid, p, DISCO_TXID_LEN);
		if (!addr_get(p + DISCO_TXID_LEN, &m->src)) {
			errbuf_printf(err, errlen, "pong with port 0");
			return false;
		}
		return true;
	case DISCO_CALL_ME_MAYBE:
		/* Version 1 is a list of endpoints and nothing else. */
		if (len % EP_LEN || len / EP_LEN > DISCO_MAX_ENDPOINTS)
			break;
		for (size_t i = 0; i < len / EP_LEN; i++)
			if (addr_get(p + i * EP_LEN, &m->eps[m->neps]))
				m->neps++;
		return true;
	default:
		errbuf_printf(err, errlen, "unknown disco type 0x%02x", m->type);
		return false;
	}
	errbuf_printf(err, errlen, "disco type 0x%02x: body of %zu bytes is malformed", m->type, len);
	return false;
}

/* Seals with shared (precomputed) or, shared NULL, the key pair. */
static size_t seal(const struct disco_msg *m, const uint8_t *sender_pub, const uint8_t *sender_priv,
		   const uint8_t *recipient_pub, const uint8_t *shared, uint8_t *out, size_t cap)
{
	uint8_t plain[DISCO_MAX_PLAIN];
	size_t n = disco_msg_encode(m, plain, sizeof(plain)), total;
	const uint8_t *nonce = out + DISCO_MAGIC_LEN + DISCO_KEY_LEN;
	int r;

	if (!n)
		return 0;
	total = DISCO_HEADER_LEN + DISCO_BOX_OVERHEAD + n;
	if (cap < total)
		return 0;
	memcpy(out, DISCO_MAGIC, DISCO_MAGIC_LEN);
	memcpy(out + DISCO_MAGIC_LEN, sender_pub, DISCO_KEY_LEN);
	randombytes_buf(out + DISCO_MAGIC_LEN + DISCO_KEY_LEN, DISCO_NONCE_LEN);
	r = shared ? crypto_box_easy_afternm(out + DISCO_HEADER_LEN, plain, n, nonce, shared)
		   : crypto_box_easy(out + DISCO_HEADER_LEN, plain, n, nonce, recipient_pub, sender_priv);
	return r == 0 ? total : 0;
}

size_t disco_seal(const struct disco_msg *m, const uint8_t sender_pub[DISCO_KEY_LEN],
		  const uint8_t sender_priv[DISCO_KEY_LEN], const uint8_t recipient_pub[DISCO_KEY_LEN],
		  uint8_t *out, size_t cap)
{
	return seal(m, sender_pub, sender_priv, recipient_pub, NULL, out, cap);
}

size_t disco_seal_shared(const struct disco_msg *m, const uint8_t sender_pub[DISCO_KEY_LEN],
			 const uint8_t shared[DISCO_SHARED_LEN], uint8_t *out, size_t cap)
{
	return seal(m, sender_pub, NULL, NULL, shared, out, cap);
}

bool disco_shared(uint8_t out[DISCO_SHARED_LEN], const uint8_t peer_pub[DISCO_KEY_LEN],
		  const uint8_t my_priv[DISCO_KEY_LEN])
{
	return crypto_box_beforenm(out, peer_pub, my_priv) == 0;
}

const uint8_t *disco_sender(const uint8_t *p, size_t len)
{
	return disco_is(p, len) ? p + DISCO_MAGIC_LEN : NULL;
}

/* Opens with shared (precomputed) or, shared NULL, my_priv. */
static bool open_msg(const uint8_t *p, size_t len, const uint8_t *my_priv, const uint8_t *shared,
		     struct disco_msg *m, char *err, size_t errlen)
{
	uint8_t plain[DISCO_MAX_PLAIN + 64];
	const uint8_t *nonce = p + DISCO_MAGIC_LEN + DISCO_KEY_LEN;
	size_t n;
	int r;

	memset(m, 0, sizeof(*m));
	if (!disco_is(p, len)) {
		errbuf_printf(err, errlen, "not a disco message");
		return false;
	}
	n = len - DISCO_HEADER_LEN - DISCO_BOX_OVERHEAD;
	if (n > sizeof(plain)) {
		errbuf_printf(err, errlen, "disco message of %zu bytes is too long", len);
		return false;
	}
	r = shared ? crypto_box_open_easy_afternm(plain, p + DISCO_HEADER_LEN, len - DISCO_HEADER_LEN, nonce, shared)
		   : crypto_box_open_easy(plain, p + DISCO_HEADER_LEN, len - DISCO_HEADER_LEN, nonce,
					  p + DISCO_MAGIC_LEN, my_priv);
	if (r != 0) {
		errbuf_printf(err, errlen, "disco box does not open");
		return false;
	}
	return disco_msg_parse(plain, n, m, err, errlen);
}

bool disco_open(const uint8_t *p, size_t len, const uint8_t my_priv[DISCO_KEY_LEN],
		struct disco_msg *m, char *err, size_t errlen)
{
	return open_msg(p, len, my_priv, NULL, m, err, errlen);
}

bool disco_open_shared(const uint8_t *p, size_t len, const uint8_t shared[DISCO_SHARED_LEN],
		       struct disco_msg *m, char *err, size_t errlen)
{
	return open_msg(p, len, NULL, shared, m, err, errlen);
}
