/* The HTTP/1.1 upgrade that opens a relay connection (docs/relay-protocol.md):
 *
 *   GET /knit/relay HTTP/1.1        HTTP/1.1 101 Switching Protocols
 *   Host: relay.example             Upgrade: knit-relay
 *   Upgrade: knit-relay             Connection: Upgrade
 *   Connection: Upgrade
 *
 * after which both sides speak frames (relay/frame.h). Going through HTTP
 * lets the connection pass ordinary load balancers and proxies. Pure. */
#ifndef KNIT_RELAY_UPGRADE_H
#define KNIT_RELAY_UPGRADE_H

#include <stddef.h>

#include "buf.h"

#define RELAY_UPGRADE_PATH "/knit/relay"
#define RELAY_UPGRADE_TOKEN "knit-relay"
/* Largest request or response head accepted. */
#define RELAY_UPGRADE_MAX_HEAD 8192u

/* Server: parses the request head in p[0..len). Returns 1 when it is a
 * complete, valid upgrade (*head_len: its length, frames may follow), 0
 * if the head is incomplete (and under the cap), or a negative errno with
 * a message in err: -ENOENT another path (answer 404), -EPROTO no
 * "Upgrade: knit-relay" (426), -EMSGSIZE head over the cap (431), -EINVAL
 * anything else malformed (400). */
int relay_upgrade_request_parse(const char *p, size_t len, size_t *head_len, char *err,
				size_t errlen);
/* Server: the 101 response; and an error response for a refusal above. */
int relay_upgrade_response(struct buf *out);
int relay_upgrade_refusal(struct buf *out, int err);

/* Client: the request for host (the Host header's value). */
int relay_upgrade_request(struct buf *out, const char *host);
/* Client: parses the response head. 1 (101 with the upgrade token;
 * *head_len set), 0 incomplete, -EPROTO another status or no upgrade,
 * -EMSGSIZE, -EINVAL. */
int relay_upgrade_response_parse(const char *p, size_t len, size_t *head_len, char *err,
				 size_t errlen);

#endif
