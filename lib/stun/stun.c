/* STUN codec (RFC 5389); see stun.h. */
#include "stun/stun.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sodium.h>
#include <string.h>

#include "buf.h"

#define FINGERPRINT_XOR 0x5354554eu
#define ATTR_HDR 4

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

uint32_t stun_crc32(const uint8_t *p, size_t len)
{
	uint32_t crc = 0xffffffffu;

	for (size_t i = 0; i < len; i++) {
		crc ^= p[i];
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1)));
	}
	return ~crc;
}

bool stun_is(const uint8_t *p, size_t len)
{
	if (len < STUN_HEADER_LEN || len > STUN_MAX_MSG)
		return false;
	if (p[0] & 0xc0)
		return false;
	if (get32(p + 4) != STUN_MAGIC_COOKIE)
		return false;
	return (size_t)get16(p + 2) + STUN_HEADER_LEN == len && (len & 3) == 0;
}

void stun_txid_new(uint8_t txid[STUN_TXID_LEN])
{
	randombytes_buf(txid, STUN_TXID_LEN);
}

static void header(uint8_t *out, uint16_t type, const uint8_t txid[STUN_TXID_LEN])
{
	put16(out, type);
	put16(out + 2, 0);
	put32(out + 4, STUN_MAGIC_COOKIE);
	memcpy(out + 8, txid, STUN_TXID_LEN);
}

/* Appends an attribute at *off (padding to 4 bytes with zeros) and sets the
 * header's length to cover it. False if it does not fit. */
static bool attr_add(uint8_t *out, size_t cap, size_t *off, uint16_t type, const void *val,
		     size_t len)
{
	size_t padded = (len + 3) & ~(size_t)3;

	if (len > 0xffff || *off + ATTR_HDR + padded > cap)
		return false;
	put16(out + *off, type);
	put16(out + *off + 2, (uint16_t)len);
	if (len)
		memcpy(out + *off + ATTR_HDR, val, len);
	memset(out + *off + ATTR_HDR + len, 0, padded - len);
	*off += ATTR_HDR + padded;
	put16(out + 2, (uint16_t)(*off - STUN_HEADER_LEN));
	return true;
}

/* FINGERPRINT covers the message up to it, with the length field already
 * counting it (RFC 5389 §15.5). */
static bool fingerprint_add(uint8_t *out, size_t cap, size_t *off)
{
	uint8_t v[4];

	if (*off + ATTR_HDR + 4 > cap)
		return false;
	put16(out + 2, (uint16_t)(*off + ATTR_HDR + 4 - STUN_HEADER_LEN));
	put32(v, stun_crc32(out, *off) ^ FINGERPRINT_XOR);
	return attr_add(out, cap, off, STUN_ATTR_FINGERPRINT, v, sizeof(v));
}

size_t stun_binding_request(uint8_t *out, size_t cap, const uint8_t txid[STUN_TXID_LEN],
			    bool fingerprint)
{
	size_t off = STUN_HEADER_LEN;

	if (cap < STUN_HEADER_LEN)
		return 0;
	header(out, STUN_BINDING_REQUEST, txid);
	if (fingerprint && !fingerprint_add(out, cap, &off))
		return 0;
	return off;
}

/* The value of (XOR-)MAPPED-ADDRESS: 0, family, port, address. XOR'd with
 * the cookie (port, IPv4) or cookie + transaction id (IPv6), §15.2. */
static size_t addr_value(uint8_t *v, const uint8_t *hdr, const struct sockaddr *sa, bool xored)
{
	const uint8_t *ip;
	uint16_t port;
	size_t iplen;
	uint8_t v4[4];

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;

		ip = (const uint8_t *)&s4->sin_addr;
		iplen = 4;
		port = ntohs(s4->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;

		port = ntohs(s6->sin6_port);
		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
			memcpy(v4, s6->sin6_addr.s6_addr + 12, 4);
			ip = v4;
			iplen = 4;
		} else {
			ip = s6->sin6_addr.s6_addr;
			iplen = 16;
		}
	} else {
		return 0;
	}
	v[0] = 0;
	v[1] = iplen == 4 ? 0x01 : 0x02;
	put16(v + 2, xored ? (uint16_t)(port ^ (STUN_MAGIC_COOKIE >> 16)) : port);
	for (size_t i = 0; i < iplen; i++)
		v[4 + i] = xored ? (uint8_t)(ip[i] ^ hdr[4 + i]) : ip[i];
	return 4 + iplen;
}

size_t stun_binding_response(uint8_t *out, size_t cap, const uint8_t txid[STUN_TXID_LEN],
			     const struct sockaddr *addr, const char *software)
{
	size_t off = STUN_HEADER_LEN, n;
	uint8_t v[20];

	if (cap < STUN_HEADER_LEN)
		return 0;
	header(out, STUN_BINDING_SUCCESS, txid);
	n = addr_value(v, out, addr, true);
	if (!n || !attr_add(out, cap, &off, STUN_ATTR_XOR_MAPPED_ADDRESS, v, n))
		return 0;
	n = addr_value(v, out, addr, false);
	if (!attr_add(out, cap, &off, STUN_ATTR_MAPPED_ADDRESS, v, n))
		return 0;
	if (software && !attr_add(out, cap, &off, STUN_ATTR_SOFTWARE, software, strlen(software)))
		return 0;
	if (!fingerprint_add(out, cap, &off))
		return 0;
	return off;
}

size_t stun_binding_error(uint8_t *out, size_t cap, const struct stun_msg *req, uint16_t code)
{
	size_t off = STUN_HEADER_LEN;
	const char *reason = code == 420 ? "Unknown Attribute" : "Bad Request";
	uint8_t v[4 + 32];
	size_t rlen = strlen(reason);

	if (cap < STUN_HEADER_LEN || code < 300 || code > 699)
		return 0;
	header(out, STUN_BINDING_ERROR, req->txid);
	v[0] = v[1] = 0;
	v[2] = (uint8_t)(code / 100);
	v[3] = (uint8_t)(code % 100);
	memcpy(v + 4, reason, rlen);
	if (!attr_add(out, cap, &off, STUN_ATTR_ERROR_CODE, v, 4 + rlen))
		return 0;
	if (code == 420 && req->nunknown) {
		uint8_t u[2 * STUN_MAX_UNKNOWN];

		for (size_t i = 0; i < req->nunknown; i++)
			put16(u + 2 * i, req->unknown[i]);
		if (!attr_add(out, cap, &off, STUN_ATTR_UNKNOWN_ATTRIBUTES, u, 2 * req->nunknown))
			return 0;
	}
	if (!fingerprint_add(out, cap, &off))
		return 0;
	return off;
}

static bool addr_parse(const uint8_t *hdr, const uint8_t *v, size_t len, bool xored,
		       struct sockaddr_storage *ss, char *err, size_t errlen)
{
	uint16_t port;

	memset(ss, 0, sizeof(*ss));
	if (len < 4 || v[0] != 0) {
		errbuf_printf(err, errlen, "address attribute: bad header");
		return false;
	}
	port = get16(v + 2);
	if (xored)
		port ^= (uint16_t)(STUN_MAGIC_COOKIE >> 16);
	if (v[1] == 0x01) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

		if (len != 8) {
			errbuf_printf(err, errlen, "IPv4 address attribute: length %zu, want 8", len);
			return false;
		}
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		for (int i = 0; i < 4; i++)
			((uint8_t *)&s4->sin_addr)[i] = xored ? (uint8_t)(v[4 + i] ^ hdr[4 + i]) : v[4 + i];
	} else if (v[1] == 0x02) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

		if (len != 20) {
			errbuf_printf(err, errlen, "IPv6 address attribute: length %zu, want 20", len);
			return false;
		}
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		for (int i = 0; i < 16; i++)
			s6->sin6_addr.s6_addr[i] = xored ? (uint8_t)(v[4 + i] ^ hdr[4 + i]) : v[4 + i];
	} else {
		errbuf_printf(err, errlen, "address attribute: unknown family %u", v[1]);
		return false;
	}
	return true;
}

bool stun_parse(const uint8_t *p, size_t len, struct stun_msg *m, char *err, size_t errlen)
{
	size_t off = STUN_HEADER_LEN;
	bool have_xor = false;

	memset(m, 0, sizeof(*m));
	if (len < STUN_HEADER_LEN) {
		errbuf_printf(err, errlen, "%zu bytes, shorter than a STUN header", len);
		return false;
	}
	if (len > STUN_MAX_MSG) {
		errbuf_printf(err, errlen, "%zu bytes, over the %u accepted", len, STUN_MAX_MSG);
		return false;
	}
	if (p[0] & 0xc0) {
		errbuf_printf(err, errlen, "top bits of the message type set");
		return false;
	}
	if (get32(p + 4) != STUN_MAGIC_COOKIE) {
		errbuf_printf(err, errlen, "no magic cookie (an RFC 3489 message?)");
		return false;
	}
	if ((size_t)get16(p + 2) + STUN_HEADER_LEN != len || (len & 3)) {
		errbuf_printf(err, errlen, "length field %u does not match the %zu-byte datagram",
			      get16(p + 2), len);
		return false;
	}
	m->type = get16(p);
	memcpy(m->txid, p + 8, STUN_TXID_LEN);

	while (off < len) {
		uint16_t type, alen;
		const uint8_t *v;
		size_t padded;

		if (m->has_fingerprint) {
			errbuf_printf(err, errlen, "attribute after FINGERPRINT");
			return false;
		}
		if (len - off < ATTR_HDR) {
			errbuf_printf(err, errlen, "truncated attribute header at %zu", off);
			return false;
		}
		type = get16(p + off);
		alen = get16(p + off + 2);
		padded = ((size_t)alen + 3) & ~(size_t)3;
		if (padded > len - off - ATTR_HDR) {
			errbuf_printf(err, errlen, "attribute 0x%04x at %zu: length %u overruns the message",
				      type, off, alen);
			return false;
		}
		v = p + off + ATTR_HDR;
		if (m->integrity_off && type != STUN_ATTR_FINGERPRINT) {
			/* §15.4: only FINGERPRINT may follow MESSAGE-INTEGRITY;
			 * anything else is ignored. */
			off += ATTR_HDR + padded;
			continue;
		}
		switch (type) {
		case STUN_ATTR_XOR_MAPPED_ADDRESS:
			if (!addr_parse(p, v, alen, true, &m->addr, err, errlen))
				return false;
			m->has_addr = m->addr_xored = have_xor = true;
			break;
		case STUN_ATTR_MAPPED_ADDRESS: {
			struct sockaddr_storage ss;

			if (!addr_parse(p, v, alen, false, &ss, err, errlen))
				return false;
			if (!have_xor) {
				m->addr = ss;
				m->has_addr = true;
			}
			break;
		}
		case STUN_ATTR_MESSAGE_INTEGRITY:
			if (alen != 20) {
				errbuf_printf(err, errlen, "MESSAGE-INTEGRITY length %u, want 20", alen);
				return false;
			}
			m->integrity_off = off;
			break;
		case STUN_ATTR_FINGERPRINT: {
			uint32_t crc;

			if (alen != 4) {
				errbuf_printf(err, errlen, "FINGERPRINT length %u, want 4", alen);
				return false;
			}
			if (off + ATTR_HDR + 4 != len) {
				errbuf_printf(err, errlen, "FINGERPRINT is not the last attribute");
				return false;
			}
			/* The length field already counts FINGERPRINT. */
			crc = stun_crc32(p, off);
			if ((crc ^ FINGERPRINT_XOR) != get32(v)) {
				errbuf_printf(err, errlen, "FINGERPRINT mismatch");
				return false;
			}
			m->has_fingerprint = true;
			break;
		}
		case STUN_ATTR_SOFTWARE:
			if (alen > 763) { /* §15.10: fewer than 128 characters */
				errbuf_printf(err, errlen, "SOFTWARE length %u over 763", alen);
				return false;
			}
			m->software = (const char *)v;
			m->software_len = alen;
			break;
		case STUN_ATTR_ERROR_CODE:
			if (alen < 4 || v[2] < 3 || v[2] > 6 || v[3] > 99) {
				errbuf_printf(err, errlen, "malformed ERROR-CODE");
				return false;
			}
			m->error_code = (uint16_t)(v[2] * 100 + v[3]);
			break;
		default:
			if (type < 0x8000 && type != STUN_ATTR_USERNAME &&
			    type != STUN_ATTR_UNKNOWN_ATTRIBUTES && m->nunknown < STUN_MAX_UNKNOWN)
				m->unknown[m->nunknown++] = type;
			break;
		}
		off += ATTR_HDR + padded;
	}
	return true;
}

bool stun_check_integrity(const uint8_t *p, size_t len, const struct stun_msg *m,
			  const void *key, size_t keylen)
{
	uint8_t copy[STUN_MAX_MSG], mac[EVP_MAX_MD_SIZE];
	unsigned maclen = 0;
	size_t off = m->integrity_off;
	bool ok;

	if (!off || off + ATTR_HDR + 20 > len || len > sizeof(copy) || keylen > 0x7fffffff)
		return false;
	/* §15.4: the HMAC covers the message up to MESSAGE-INTEGRITY, with
	 * the length field set as if it were the last attribute. */
	memcpy(copy, p, off);
	put16(copy + 2, (uint16_t)(off + ATTR_HDR + 20 - STUN_HEADER_LEN));
	if (!HMAC(EVP_sha1(), key, (int)keylen, copy, off, mac, &maclen) || maclen != 20)
		return false;
	ok = CRYPTO_memcmp(mac, p + off + ATTR_HDR, 20) == 0;
	return ok;
}
