/* The relay's byte stream as a server reads it from an untrusted client
 * (and, with the first byte's top bit set, the HTTP upgrade head before it):
 * frames split at a size the first byte picks, each decoded, CLIENT_INFO
 * checked against a fixed server key and challenge (the box must not
 * open for the fuzzer, and nothing may crash trying), and packets framed
 * back as the server would forward them. */
#include <sodium.h>
#include <stdint.h>
#include <string.h>

#include "buf.h"
#include "relay/frame.h"
#include "relay/hello.h"
#include "relay/upgrade.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t spub[32], spriv[32], challenge[32], mk[32];
	static int init;
	struct relay_parser p;
	struct buf out = BUF_INIT(RELAY_MAX_FRAME + 64);
	size_t chunk, off = 1;

	if (!init) {
		if (sodium_init() < 0)
			return 0;
		memset(spriv, 0x42, sizeof(spriv));
		crypto_scalarmult_base(spub, spriv);
		relay_hello_mesh_key(mk, "fuzz", 4);
		init = 1;
	}
	if (size < 1)
		return 0;
	/* A first byte with the top bit set: the rest is an upgrade head. */
	if (data[0] & 0x80) {
		size_t head;

		relay_upgrade_request_parse((const char *)data + 1, size - 1, &head, NULL, 0);
		relay_upgrade_response_parse((const char *)data + 1, size - 1, &head, NULL, 0);
		return 0;
	}
	chunk = (size_t)data[0] * 17 + 1;
	relay_parser_init(&p, 0);
	while (off < size) {
		const uint8_t *d = data + off;
		size_t n = size - off < chunk ? size - off : chunk, left = n;
		struct relay_frame f;
		int r;

		while ((r = relay_parser_next(&p, &d, &left, &f)) == 1) {
			struct relay_msg m;
			struct relay_client_info ci;
			struct relay_server_info si;
			uint8_t nonce[24] = { 0 };

			if (!relay_frame_decode(&f, &m, NULL, 0))
				continue;
			buf_reset(&out);
			switch (m.type) {
			case RELAY_FRAME_CLIENT_INFO:
				relay_hello_verify_client(&m, spriv, spub, challenge, mk, &ci, NULL, 0);
				break;
			case RELAY_FRAME_SERVER_INFO:
				relay_hello_open_server_info(&m, spub, spriv, nonce, &si, NULL, 0);
				break;
			case RELAY_FRAME_SEND_PACKET:
				if (relay_frame_recv_packet(&out, m.key, m.data, m.data_len) != 0)
					__builtin_trap();
				break;
			case RELAY_FRAME_FORWARD_PACKET:
				if (relay_frame_recv_packet(&out, m.key, m.data, m.data_len) != 0)
					__builtin_trap();
				break;
			default:
				break;
			}
		}
		if (r < 0)
			break;
		off += n;
	}
	relay_parser_free(&p);
	buf_free(&out);
	return 0;
}
