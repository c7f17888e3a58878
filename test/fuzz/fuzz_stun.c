/* STUN datagrams as knitd's socket and knit-relay's STUN server get them:
 * the demultiplexer's test, the parser, the integrity check, and a reply
 * built for whatever parsed. */
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

#include "stun/stun.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sockaddr_in6 from = { .sin6_family = AF_INET6, .sin6_port = htons(3478) };
	struct stun_msg m;
	uint8_t out[STUN_MAX_MSG];
	char err[128];
	bool is = stun_is(data, size);

	if (!stun_parse(data, size, &m, err, sizeof(err)))
		return 0;
	if (!is)
		__builtin_trap(); /* parse accepted what the quick test refused */
	stun_check_integrity(data, size, &m, "key", 3);
	if (m.type == STUN_BINDING_REQUEST) {
		if (m.nunknown)
			stun_binding_error(out, sizeof(out), &m, 420);
		else
			stun_binding_response(out, sizeof(out), m.txid, (struct sockaddr *)&from, "knit");
	}
	if (m.has_addr) {
		size_t n = stun_binding_response(out, sizeof(out), m.txid, (struct sockaddr *)&m.addr, NULL);
		struct stun_msg back;

		if (!n || !stun_parse(out, n, &back, err, sizeof(err)) || !back.has_addr)
			__builtin_trap();
	}
	return 0;
}
