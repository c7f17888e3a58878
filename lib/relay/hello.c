/* Relay handshake; see hello.h. */
#include "relay/hello.h"

#include <errno.h>
#include <sodium.h>
#include <string.h>

/* CLIENT_INFO's plaintext: version, flags, challenge, mesh proof. */
#define CI_PLAIN (2 + RELAY_CHALLENGE_LEN + crypto_auth_hmacsha256_BYTES)
/* SERVER_INFO's plaintext: version, flags, keepalive, max packet, queue,
 * the client's nonce. */
#define SI_PLAIN (2 + 12 + RELAY_NONCE_LEN)

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

void relay_hello_mesh_key(uint8_t out[RELAY_MESH_KEY_LEN], const void *secret, size_t len)
{
	static const char ctx[] = "knit relay mesh key v1";

	crypto_generichash(out, RELAY_MESH_KEY_LEN, secret, len, (const uint8_t *)ctx, sizeof(ctx) - 1);
}

/* HMAC-SHA256(mesh_key, challenge || client key || server key): binds the
 * proof to this connection's challenge and both ends. */
static void mesh_proof(uint8_t out[crypto_auth_hmacsha256_BYTES], const uint8_t *mesh_key,
		       const uint8_t *challenge, const uint8_t *client_pub, const uint8_t *server_pub)
{
	crypto_auth_hmacsha256_state st;

	crypto_auth_hmacsha256_init(&st, mesh_key, RELAY_MESH_KEY_LEN);
	crypto_auth_hmacsha256_update(&st, challenge, RELAY_CHALLENGE_LEN);
	crypto_auth_hmacsha256_update(&st, client_pub, RELAY_KEY_LEN);
	crypto_auth_hmacsha256_update(&st, server_pub, RELAY_KEY_LEN);
	crypto_auth_hmacsha256_final(&st, out);
	sodium_memzero(&st, sizeof(st));
}

int relay_hello_server_key(struct buf *out, const uint8_t server_pub[RELAY_KEY_LEN],
			   uint8_t challenge[RELAY_CHALLENGE_LEN])
{
	randombytes_buf(challenge, RELAY_CHALLENGE_LEN);
	return relay_frame_append(out, RELAY_FRAME_SERVER_KEY, "KNITRLY1", 8, server_pub, RELAY_KEY_LEN,
				  challenge, RELAY_CHALLENGE_LEN);
}

int relay_hello_client_info(struct buf *out, const struct relay_msg *server_key,
			    const uint8_t *expect_server, const uint8_t client_pub[RELAY_KEY_LEN],
			    const uint8_t client_priv[RELAY_KEY_LEN], const uint8_t *mesh_key,
			    uint8_t nonce_out[RELAY_NONCE_LEN])
{
	uint8_t plain[CI_PLAIN], boxed[CI_PLAIN + crypto_box_MACBYTES];
	int ret;

	if (server_key->type != RELAY_FRAME_SERVER_KEY || !server_key->key)
		return -EINVAL;
	if (expect_server && sodium_memcmp(expect_server, server_key->key, RELAY_KEY_LEN) != 0)
		return -EPERM;
	memset(plain, 0, sizeof(plain));
	plain[0] = RELAY_PROTOCOL_VERSION;
	plain[1] = mesh_key ? RELAY_HELLO_MESH : 0;
	memcpy(plain + 2, server_key->challenge, RELAY_CHALLENGE_LEN);
	if (mesh_key)
		mesh_proof(plain + 2 + RELAY_CHALLENGE_LEN, mesh_key, server_key->challenge, client_pub,
			   server_key->key);
	randombytes_buf(nonce_out, RELAY_NONCE_LEN);
	if (crypto_box_easy(boxed, plain, sizeof(plain), nonce_out, server_key->key, client_priv) != 0) {
		ret = -EINVAL; /* a low-order server key */
		goto out;
	}
	ret = relay_frame_append(out, RELAY_FRAME_CLIENT_INFO, client_pub, RELAY_KEY_LEN, nonce_out,
				 RELAY_NONCE_LEN, boxed, sizeof(boxed));
out:
	sodium_memzero(plain, sizeof(plain));
	return ret;
}

bool relay_hello_verify_client(const struct relay_msg *ci, const uint8_t server_priv[RELAY_KEY_LEN],
			       const uint8_t server_pub[RELAY_KEY_LEN],
			       const uint8_t challenge[RELAY_CHALLENGE_LEN], const uint8_t *mesh_key,
			       struct relay_client_info *out, char *err, size_t errlen)
{
	uint8_t plain[CI_PLAIN], want[crypto_auth_hmacsha256_BYTES];
	bool ok = false;

	memset(out, 0, sizeof(*out));
	if (ci->type != RELAY_FRAME_CLIENT_INFO || !ci->box) {
		errbuf_printf(err, errlen, "not a CLIENT_INFO frame");
		return false;
	}
	if (ci->box_len != sizeof(plain) + crypto_box_MACBYTES) {
		errbuf_printf(err, errlen, "CLIENT_INFO box of %zu bytes, want %zu", ci->box_len,
			      sizeof(plain) + crypto_box_MACBYTES);
		return false;
	}
	if (crypto_box_open_easy(plain, ci->box, ci->box_len, ci->nonce, ci->key, server_priv) != 0) {
		errbuf_printf(err, errlen, "CLIENT_INFO box does not open: no proof of the node key");
		goto out;
	}
	if (plain[0] < 1) {
		errbuf_printf(err, errlen, "protocol version %u", plain[0]);
		goto out;
	}
	if (sodium_memcmp(plain + 2, challenge, RELAY_CHALLENGE_LEN) != 0) {
		errbuf_printf(err, errlen, "CLIENT_INFO answers another challenge (a replay?)");
		goto out;
	}
	if (plain[1] & RELAY_HELLO_MESH) {
		if (!mesh_key) {
			errbuf_printf(err, errlen, "mesh peer, but this relay has no mesh key");
			goto out;
		}
		mesh_proof(want, mesh_key, challenge, ci->key, server_pub);
		if (sodium_memcmp(want, plain + 2 + RELAY_CHALLENGE_LEN, sizeof(want)) != 0) {
			errbuf_printf(err, errlen, "mesh peer with the wrong mesh key");
			goto out;
		}
		out->mesh = true;
	}
	memcpy(out->key, ci->key, RELAY_KEY_LEN);
	memcpy(out->nonce, ci->nonce, RELAY_NONCE_LEN);
	out->version = plain[0];
	ok = true;
out:
	sodium_memzero(plain, sizeof(plain));
	sodium_memzero(want, sizeof(want));
	return ok;
}

int relay_hello_server_info(struct buf *out, const uint8_t server_priv[RELAY_KEY_LEN],
			    const struct relay_client_info *ci, const struct relay_server_info *info)
{
	uint8_t plain[SI_PLAIN], boxed[SI_PLAIN + crypto_box_MACBYTES], nonce[RELAY_NONCE_LEN];

	plain[0] = info->version ? info->version : RELAY_PROTOCOL_VERSION;
	plain[1] = 0;
	put32(plain + 2, info->keepalive_ms);
	put32(plain + 6, info->max_packet);
	put32(plain + 10, info->queue_bytes);
	memcpy(plain + 14, ci->nonce, RELAY_NONCE_LEN);
	randombytes_buf(nonce, sizeof(nonce));
	if (crypto_box_easy(boxed, plain, sizeof(plain), nonce, ci->key, server_priv) != 0)
		return -EINVAL;
	return relay_frame_append(out, RELAY_FRAME_SERVER_INFO, nonce, sizeof(nonce), boxed,
				  sizeof(boxed), NULL, 0);
}

bool relay_hello_open_server_info(const struct relay_msg *si, const uint8_t server_pub[RELAY_KEY_LEN],
				  const uint8_t client_priv[RELAY_KEY_LEN],
				  const uint8_t nonce[RELAY_NONCE_LEN], struct relay_server_info *out,
				  char *err, size_t errlen)
{
	uint8_t plain[SI_PLAIN];

	memset(out, 0, sizeof(*out));
	if (si->type != RELAY_FRAME_SERVER_INFO || si->box_len != sizeof(plain) + crypto_box_MACBYTES) {
		errbuf_printf(err, errlen, "malformed SERVER_INFO");
		return false;
	}
	if (crypto_box_open_easy(plain, si->box, si->box_len, si->nonce, server_pub, client_priv) != 0) {
		errbuf_printf(err, errlen, "SERVER_INFO box does not open: not the expected server");
		return false;
	}
	if (sodium_memcmp(plain + 14, nonce, RELAY_NONCE_LEN) != 0) {
		errbuf_printf(err, errlen, "SERVER_INFO answers another hello (a replay?)");
		return false;
	}
	out->version = plain[0];
	out->keepalive_ms = get32(plain + 2);
	out->max_packet = get32(plain + 6);
	out->queue_bytes = get32(plain + 10);
	return true;
}
