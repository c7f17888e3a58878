/* Relay client core; see client.h. */
#include "relay/client.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "relay/upgrade.h"

void relay_client_init(struct relay_client *c, const uint8_t pub[RELAY_KEY_LEN],
		       const uint8_t priv[RELAY_KEY_LEN], const uint8_t *server_pub,
		       const struct relay_client_cb *cb, void *arg)
{
	memset(c, 0, sizeof(*c));
	memcpy(c->pub, pub, RELAY_KEY_LEN);
	memcpy(c->priv, priv, RELAY_KEY_LEN);
	if (server_pub) {
		memcpy(c->server, server_pub, RELAY_KEY_LEN);
		c->pin_server = c->have_server = true;
	}
	buf_init(&c->head, RELAY_UPGRADE_MAX_HEAD);
	relay_parser_init(&c->parser, 0);
	c->cb = cb;
	c->arg = arg;
}

void relay_client_free(struct relay_client *c)
{
	sodium_memzero(c->priv, sizeof(c->priv));
	buf_free(&c->head);
	relay_parser_free(&c->parser);
}

static int fail(struct relay_client *c, const char *what, const char *detail)
{
	c->state = RELAY_CLIENT_FAILED;
	snprintf(c->error, sizeof(c->error), "%s%s", what, detail);
	return -EPROTO;
}

int relay_client_start(struct relay_client *c, const char *host, struct buf *out)
{
	int r;

	if (c->state != RELAY_CLIENT_IDLE)
		return -EALREADY;
	if ((r = relay_upgrade_request(out, host)))
		return r;
	c->state = RELAY_CLIENT_UPGRADING;
	return 0;
}

static int frame(struct relay_client *c, const struct relay_frame *f, struct buf *out)
{
	struct relay_msg m;
	char err[128];
	int r;

	if (!relay_frame_decode(f, &m, err, sizeof(err)))
		return fail(c, "", err);
	if (c->state == RELAY_CLIENT_HELLO) {
		if (m.type == RELAY_FRAME_SERVER_KEY && !c->info.version) {
			r = relay_hello_client_info(out, &m, c->pin_server ? c->server : NULL, c->pub, c->priv,
						    NULL, c->nonce);
			if (r == -EPERM) {
				c->wrong_key = true;
				return fail(c, "", "the relay's key is not the one pinned");
			}
			if (r)
				return fail(c, "", "cannot build CLIENT_INFO");
			memcpy(c->server, m.key, RELAY_KEY_LEN);
			c->have_server = true;
			return 0;
		}
		if (m.type == RELAY_FRAME_SERVER_INFO && c->have_server) {
			if (!relay_hello_open_server_info(&m, c->server, c->priv, c->nonce, &c->info, err,
							  sizeof(err)))
				return fail(c, "", err);
			c->state = RELAY_CLIENT_READY;
			if (c->cb && c->cb->ready)
				c->cb->ready(&c->info, c->arg);
			return 0;
		}
		return fail(c, "", "unexpected frame during the handshake");
	}
	switch (m.type) {
	case RELAY_FRAME_RECV_PACKET:
		if (c->cb && c->cb->packet)
			c->cb->packet(m.key, m.data, m.data_len, c->arg);
		break;
	case RELAY_FRAME_PEER_GONE:
		if (c->cb && c->cb->peer_gone)
			c->cb->peer_gone(m.key, m.reason, c->arg);
		break;
	case RELAY_FRAME_HEALTH:
		if (c->cb && c->cb->health)
			c->cb->health((const char *)m.data, m.data_len, c->arg);
		break;
	case RELAY_FRAME_PING:
		return relay_frame_ping(out, RELAY_FRAME_PONG, m.data);
	case RELAY_FRAME_PONG:
		if (c->cb && c->cb->pong)
			c->cb->pong(m.data, c->arg);
		break;
	default:
		break; /* KEEPALIVE, unknown */
	}
	return 0;
}

int relay_client_feed(struct relay_client *c, const uint8_t *p, size_t n, struct buf *out)
{
	struct relay_frame f;
	int r;

	if (c->state == RELAY_CLIENT_FAILED)
		return -EPROTO;
	if (c->state == RELAY_CLIENT_IDLE)
		return -ENOTCONN;
	if (c->state == RELAY_CLIENT_UPGRADING) {
		size_t head_len = 0, old = c->head.len;
		char err[128];

		if (buf_add(&c->head, p, n > RELAY_UPGRADE_MAX_HEAD ? RELAY_UPGRADE_MAX_HEAD : n) < 0)
			return fail(c, "", "upgrade response too long");
		r = relay_upgrade_response_parse((const char *)c->head.data, c->head.len, &head_len, err,
						 sizeof(err));
		if (r == 0)
			return 0;
		if (r < 0)
			return fail(c, "upgrade refused: ", err);
		buf_free(&c->head);
		c->state = RELAY_CLIENT_HELLO;
		p += head_len - old;
		n -= head_len - old;
	}
	while ((r = relay_parser_next(&c->parser, &p, &n, &f)) == 1) {
		if ((r = frame(c, &f, out)) < 0)
			return r;
	}
	if (r < 0)
		return fail(c, "", c->parser.error);
	return 0;
}

bool relay_client_ready(const struct relay_client *c)
{
	return c->state == RELAY_CLIENT_READY;
}

int relay_client_send(struct relay_client *c, const uint8_t dst[RELAY_KEY_LEN], const void *pkt,
		      size_t len, struct buf *out)
{
	if (c->state != RELAY_CLIENT_READY)
		return -ENOTCONN;
	return relay_frame_send_packet(out, dst, pkt, len);
}

int relay_client_keepalive(struct relay_client *c, struct buf *out)
{
	if (c->state != RELAY_CLIENT_READY)
		return -ENOTCONN;
	return relay_frame_empty(out, RELAY_FRAME_KEEPALIVE);
}

int relay_client_ping(struct relay_client *c, const uint8_t data[RELAY_PING_LEN], struct buf *out)
{
	if (c->state != RELAY_CLIENT_READY)
		return -ENOTCONN;
	return relay_frame_ping(out, RELAY_FRAME_PING, data);
}
