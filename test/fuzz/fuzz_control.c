/* Untrusted control-channel input as the coordination server sees it: a
 * handshake message 1, then frames for an established session. */
#include <stdint.h>
#include <string.h>

#include "buf.h"
#include "control/channel.h"
#include "wg/aead.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t server_priv[32] = { 1, 2, 3 };
	static int init;
	struct channel_session s = { 0 };
	struct buf out = BUF_INIT(1 << 20);
	uint8_t m2[CHANNEL_MSG2_LEN], ts[12];

	if (!init) {
		aead_init(AEAD_IMPL_AUTO);
		init = 1;
	}
	/* First byte picks the target. */
	if (size > 0 && data[0] & 1) {
		channel_respond(server_priv, data + 1, size - 1, 7, m2, &s, ts);
	} else {
		memset(&s, 0, sizeof(s));
		s.id = 0;
		size_t off = size ? 1 : 0;
		while (off < size) {
			size_t n = data[off];
			off++;
			if (n > size - off)
				n = size - off;
			channel_open(&s, data + off, n, &out);
			buf_reset(&out);
			off += n;
		}
	}
	buf_free(&out);
	return 0;
}
