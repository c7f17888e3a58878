/* Input: the body of a UAPI set request, as a client could send it. A
 * config that parses is printed back as a get response, parsed again from
 * its peer lines, and must come out the same. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wg/uapi.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct uapi_config *c;
	struct uapi_error err;

	if (!uapi_parse_set((const char *)data, size, &c, &err)) {
		if (err.errnum == 0 || !memchr(err.msg, '\0', sizeof(err.msg)))
			abort();
		return 0;
	}
	struct uapi_device d = { 0 };
	struct buf b = BUF_INIT(1 << 24);

	d.n_peers = c->n_peers;
	d.peers = calloc(c->n_peers ? c->n_peers : 1, sizeof(*d.peers));
	if (!d.peers)
		abort();
	for (size_t i = 0; i < c->n_peers; i++) {
		memcpy(d.peers[i].public_key, c->peers[i].public_key, UAPI_KEY_LEN);
		d.peers[i].has_endpoint = c->peers[i].flags & UAPI_PEER_HAS_ENDPOINT;
		d.peers[i].endpoint = c->peers[i].endpoint;
		d.peers[i].allowed_ips = c->peers[i].allowed_ips;
		d.peers[i].n_allowed_ips = c->peers[i].n_allowed_ips;
	}
	if (uapi_format_get(&d, &b) == 0) {
		/* keep the peer lines a set accepts: a set body remains */
		static const char *const drop[] = { "last_handshake_time_sec=", "last_handshake_time_nsec=",
						    "tx_bytes=", "rx_bytes=", "errno=" };
		const char *s = strstr(buf_str(&b), "public_key=");
		struct buf body = BUF_INIT(1 << 24);
		struct uapi_config *c2 = NULL;
		while (s && *s) {
			const char *nl = strchr(s, '\n');
			bool keep = true;
			if (!nl)
				abort();
			for (size_t k = 0; k < sizeof(drop) / sizeof(drop[0]); k++)
				keep &= strncmp(s, drop[k], strlen(drop[k])) != 0;
			if (keep && buf_add(&body, s, (size_t)(nl - s) + 1))
				abort();
			s = nl + 1;
		}
		if (body.len && !uapi_parse_set((const char *)body.data, body.len, &c2, &err))
			abort();
		buf_free(&body);
		if (c2) {
			if (c2->n_peers != c->n_peers)
				abort();
			for (size_t i = 0; i < c->n_peers; i++)
				if (c2->peers[i].n_allowed_ips != c->peers[i].n_allowed_ips ||
				    memcmp(c2->peers[i].public_key, c->peers[i].public_key, UAPI_KEY_LEN))
					abort();
		}
		uapi_config_free(c2);
	}
	buf_free(&b);
	free(d.peers);
	uapi_config_free(c);
	return 0;
}
