/* Disco datagrams as knitd's socket gets them: the demultiplexer's test,
 * the box (which the fuzzer cannot forge, so the plaintext parser is also
 * fed the bytes directly), and what parsed driven into a peer's path
 * state. */
#include <sodium.h>
#include <stdint.h>
#include <string.h>

#include "disco/message.h"
#include "disco/path.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t priv[32];
	static int init;
	struct disco_msg m;
	struct disco_peer p;
	struct disco_ping_req req[DISCO_MAX_CANDIDATES];
	uint8_t out[DISCO_MAX_SEALED];

	if (!init) {
		if (sodium_init() < 0)
			return 0;
		memset(priv, 0x11, sizeof(priv));
		init = 1;
	}
	disco_is(data, size);
	disco_open(data, size, priv, &m, NULL, 0);
	if (!disco_msg_parse(data, size, &m, NULL, 0))
		return 0;
	/* What parses re-encodes and parses the same. */
	{
		size_t n = disco_msg_encode(&m, out, sizeof(out));
		struct disco_msg back;

		if (n && (!disco_msg_parse(out, n, &back, NULL, 0) || back.type != m.type || back.neps != m.neps))
			__builtin_trap();
	}
	disco_peer_init(&p);
	switch (m.type) {
	case DISCO_CALL_ME_MAYBE:
		disco_peer_on_call_me_maybe(&p, m.eps, m.neps, 0);
		disco_peer_pings_due(&p, 0, req, DISCO_MAX_CANDIDATES);
		disco_peer_set_endpoints(&p, m.eps, m.neps, 1);
		break;
	case DISCO_PONG:
		disco_peer_on_ping(&p, (struct sockaddr *)&m.src, 0);
		if (disco_peer_pings_due(&p, 0, req, 1) == 1)
			disco_peer_on_pong(&p, m.txid, (struct sockaddr *)&m.src, 1);
		break;
	default:
		break;
	}
	disco_peer_path(&p, 2, NULL, NULL);
	return 0;
}
