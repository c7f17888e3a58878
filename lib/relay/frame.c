/* Relay framing; see frame.h and docs/relay-protocol.md. */
#include "relay/frame.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#define MAGIC_LEN 8
#define NONCE_LEN 24
#define BOX_MIN 16
#define BOX_MAX 256

void relay_parser_init(struct relay_parser *p, size_t max_frame)
{
	memset(p, 0, sizeof(*p));
	p->max_frame = max_frame ? max_frame : RELAY_MAX_FRAME;
	buf_init(&p->body, p->max_frame);
}

void relay_parser_free(struct relay_parser *p)
{
	buf_free(&p->body);
	p->hdr_have = 0;
	p->need = 0;
}

bool relay_parser_idle(const struct relay_parser *p)
{
	return !p->failed && p->hdr_have == 0;
}

static int fail(struct relay_parser *p, int err, const char *why)
{
	p->failed = true;
	snprintf(p->error, sizeof(p->error), "%s", why);
	buf_free(&p->body);
	return err;
}

static uint32_t get32(const uint8_t *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

int relay_parser_next(struct relay_parser *p, const uint8_t **data, size_t *len,
		      struct relay_frame *f)
{
	if (p->failed)
		return -EPROTO;
	/* The last frame's body is no longer needed: a large assembly buffer
	 * is released so that an idle connection holds nothing. */
	if (p->hdr_have == 0 && p->body.alloc > 4096)
		buf_free(&p->body);
	/* The common case: a whole frame at the front of the input. */
	if (p->hdr_have == 0 && *len >= RELAY_FRAME_HDR) {
		uint32_t n = get32(*data + 1);

		if (n > p->max_frame)
			return fail(p, -EMSGSIZE, "frame body over the cap");
		if (*len - RELAY_FRAME_HDR >= n) {
			f->type = (*data)[0];
			f->body = *data + RELAY_FRAME_HDR;
			f->len = n;
			*data += RELAY_FRAME_HDR + n;
			*len -= RELAY_FRAME_HDR + n;
			return 1;
		}
	}
	while (*len && p->hdr_have < RELAY_FRAME_HDR) {
		p->hdr[p->hdr_have++] = **data;
		(*data)++;
		(*len)--;
		if (p->hdr_have == RELAY_FRAME_HDR) {
			uint32_t n = get32(p->hdr + 1);

			if (n > p->max_frame)
				return fail(p, -EMSGSIZE, "frame body over the cap");
			p->type = p->hdr[0];
			p->need = n;
			buf_reset(&p->body);
		}
	}
	if (p->hdr_have < RELAY_FRAME_HDR)
		return 0;
	if (p->body.len < p->need) {
		size_t take = p->need - p->body.len;

		if (take > *len)
			take = *len;
		if (take && buf_add(&p->body, *data, take) < 0)
			return fail(p, -ENOMEM, "out of memory");
		*data += take;
		*len -= take;
	}
	if (p->body.len < p->need)
		return 0;
	f->type = p->type;
	f->body = p->body.data;
	f->len = p->need;
	p->hdr_have = 0;
	return 1;
}

bool relay_frame_decode(const struct relay_frame *f, struct relay_msg *m, char *err, size_t errlen)
{
	const uint8_t *b = f->body;
	size_t n = f->len;

	memset(m, 0, sizeof(*m));
	m->type = f->type;
	switch (f->type) {
	case RELAY_FRAME_SERVER_KEY:
		if (n != MAGIC_LEN + RELAY_KEY_LEN + RELAY_KEY_LEN)
			goto bad_len;
		if (memcmp(b, "KNITRLY1", MAGIC_LEN) != 0) {
			errbuf_printf(err, errlen, "SERVER_KEY: bad magic (not a knit relay?)");
			return false;
		}
		m->key = b + MAGIC_LEN;
		m->challenge = b + MAGIC_LEN + RELAY_KEY_LEN;
		return true;
	case RELAY_FRAME_CLIENT_INFO:
		if (n < RELAY_KEY_LEN + NONCE_LEN + BOX_MIN || n > RELAY_KEY_LEN + NONCE_LEN + BOX_MAX)
			goto bad_len;
		m->key = b;
		m->nonce = b + RELAY_KEY_LEN;
		m->box = b + RELAY_KEY_LEN + NONCE_LEN;
		m->box_len = n - RELAY_KEY_LEN - NONCE_LEN;
		return true;
	case RELAY_FRAME_SERVER_INFO:
		if (n < NONCE_LEN + BOX_MIN || n > NONCE_LEN + BOX_MAX)
			goto bad_len;
		m->nonce = b;
		m->box = b + NONCE_LEN;
		m->box_len = n - NONCE_LEN;
		return true;
	case RELAY_FRAME_SEND_PACKET:
	case RELAY_FRAME_RECV_PACKET:
		if (n < RELAY_KEY_LEN || n - RELAY_KEY_LEN > RELAY_MAX_PACKET)
			goto bad_len;
		m->key = b;
		m->data = b + RELAY_KEY_LEN;
		m->data_len = n - RELAY_KEY_LEN;
		return true;
	case RELAY_FRAME_FORWARD_PACKET:
		if (n < 2 * RELAY_KEY_LEN || n - 2 * RELAY_KEY_LEN > RELAY_MAX_PACKET)
			goto bad_len;
		m->key = b;
		m->dst = b + RELAY_KEY_LEN;
		m->data = b + 2 * RELAY_KEY_LEN;
		m->data_len = n - 2 * RELAY_KEY_LEN;
		return true;
	case RELAY_FRAME_KEEPALIVE:
	case RELAY_FRAME_WATCH_CONNS:
		if (n != 0)
			goto bad_len;
		return true;
	case RELAY_FRAME_PING:
	case RELAY_FRAME_PONG:
		if (n != RELAY_PING_LEN)
			goto bad_len;
		m->data = b;
		m->data_len = n;
		return true;
	case RELAY_FRAME_PEER_GONE:
		if (n != RELAY_KEY_LEN + 1)
			goto bad_len;
		m->key = b;
		m->reason = b[RELAY_KEY_LEN];
		return true;
	case RELAY_FRAME_PEER_PRESENT:
		if (n != RELAY_KEY_LEN)
			goto bad_len;
		m->key = b;
		return true;
	case RELAY_FRAME_HEALTH:
		if (n > RELAY_MAX_HEALTH)
			goto bad_len;
		m->data = b;
		m->data_len = n;
		return true;
	default:
		return true;
	}
bad_len:
	errbuf_printf(err, errlen, "frame type 0x%02x: body of %zu bytes is malformed", f->type, n);
	return false;
}

void relay_frame_header(uint8_t out[RELAY_FRAME_HDR], uint8_t type, size_t len)
{
	out[0] = type;
	out[1] = (uint8_t)(len >> 24);
	out[2] = (uint8_t)(len >> 16);
	out[3] = (uint8_t)(len >> 8);
	out[4] = (uint8_t)len;
}

int relay_frame_append(struct buf *out, uint8_t type, const void *a, size_t alen, const void *b,
		       size_t blen, const void *c, size_t clen)
{
	uint8_t hdr[RELAY_FRAME_HDR];
	size_t total = alen + blen + clen;
	int err;

	if (alen > RELAY_MAX_FRAME || blen > RELAY_MAX_FRAME || clen > RELAY_MAX_FRAME ||
	    total > RELAY_MAX_FRAME)
		return -EMSGSIZE;
	relay_frame_header(hdr, type, total);
	/* Reserve once so a failure leaves no partial frame behind. */
	if (!buf_reserve(out, sizeof(hdr) + total, &err))
		return err;
	buf_add(out, hdr, sizeof(hdr));
	if (alen)
		buf_add(out, a, alen);
	if (blen)
		buf_add(out, b, blen);
	if (clen)
		buf_add(out, c, clen);
	return 0;
}

int relay_frame_send_packet(struct buf *out, const uint8_t dst[RELAY_KEY_LEN], const void *pkt,
			    size_t len)
{
	if (len > RELAY_MAX_PACKET)
		return -EMSGSIZE;
	return relay_frame_append(out, RELAY_FRAME_SEND_PACKET, dst, RELAY_KEY_LEN, pkt, len, NULL, 0);
}

int relay_frame_recv_packet(struct buf *out, const uint8_t src[RELAY_KEY_LEN], const void *pkt,
			    size_t len)
{
	if (len > RELAY_MAX_PACKET)
		return -EMSGSIZE;
	return relay_frame_append(out, RELAY_FRAME_RECV_PACKET, src, RELAY_KEY_LEN, pkt, len, NULL, 0);
}

int relay_frame_forward_packet(struct buf *out, const uint8_t src[RELAY_KEY_LEN],
			       const uint8_t dst[RELAY_KEY_LEN], const void *pkt, size_t len)
{
	if (len > RELAY_MAX_PACKET)
		return -EMSGSIZE;
	return relay_frame_append(out, RELAY_FRAME_FORWARD_PACKET, src, RELAY_KEY_LEN, dst,
				  RELAY_KEY_LEN, pkt, len);
}

int relay_frame_peer_gone(struct buf *out, const uint8_t key[RELAY_KEY_LEN], uint8_t reason)
{
	return relay_frame_append(out, RELAY_FRAME_PEER_GONE, key, RELAY_KEY_LEN, &reason, 1, NULL, 0);
}

int relay_frame_peer_present(struct buf *out, const uint8_t key[RELAY_KEY_LEN])
{
	return relay_frame_append(out, RELAY_FRAME_PEER_PRESENT, key, RELAY_KEY_LEN, NULL, 0, NULL, 0);
}

int relay_frame_ping(struct buf *out, uint8_t type, const uint8_t data[RELAY_PING_LEN])
{
	if (type != RELAY_FRAME_PING && type != RELAY_FRAME_PONG)
		return -EINVAL;
	return relay_frame_append(out, type, data, RELAY_PING_LEN, NULL, 0, NULL, 0);
}

int relay_frame_health(struct buf *out, const char *problem)
{
	size_t n = problem ? strlen(problem) : 0;

	if (n > RELAY_MAX_HEALTH)
		n = RELAY_MAX_HEALTH;
	return relay_frame_append(out, RELAY_FRAME_HEALTH, problem, n, NULL, 0, NULL, 0);
}

int relay_frame_empty(struct buf *out, uint8_t type)
{
	if (type != RELAY_FRAME_KEEPALIVE && type != RELAY_FRAME_WATCH_CONNS)
		return -EINVAL;
	return relay_frame_append(out, type, NULL, 0, NULL, 0, NULL, 0);
}

char *relay_key_hex(const uint8_t key[RELAY_KEY_LEN], char out[2 * RELAY_KEY_LEN + 1])
{
	sodium_bin2hex(out, 2 * RELAY_KEY_LEN + 1, key, RELAY_KEY_LEN);
	return out;
}

char *relay_key_text(const uint8_t key[RELAY_KEY_LEN], char out[RELAY_KEY_TEXT_LEN])
{
	memcpy(out, RELAY_KEY_TEXT_PREFIX, sizeof(RELAY_KEY_TEXT_PREFIX) - 1);
	relay_key_hex(key, out + sizeof(RELAY_KEY_TEXT_PREFIX) - 1);
	return out;
}

bool relay_key_parse(const char *s, uint8_t key[RELAY_KEY_LEN])
{
	size_t n = strlen(s), got = 0;

	if (n == 2 * RELAY_KEY_LEN)
		return sodium_hex2bin(key, RELAY_KEY_LEN, s, n, NULL, &got, NULL) == 0 &&
		       got == RELAY_KEY_LEN;
	if (n == 44)
		return sodium_base642bin(key, RELAY_KEY_LEN, s, n, NULL, &got, NULL,
					 sodium_base64_VARIANT_ORIGINAL) == 0 &&
		       got == RELAY_KEY_LEN;
	return false;
}
