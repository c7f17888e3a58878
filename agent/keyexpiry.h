/* When a node key is renewed and when it is warned about: pure
 * arithmetic on Unix seconds, no clock of its own.
 *
 * A key is renewed once a third of its lifetime is left (60 of 180 days;
 * 20 s of a 60 s test lifetime), so a knitd that is down or cut off for a
 * while still comes back in time; a key within KEYEXPIRY_WARN_SECONDS of
 * expiry has not been renewed for a long time, and knit status and
 * knitd_node_key_expiry_seconds say so. */
#ifndef KNIT_AGENT_KEYEXPIRY_H
#define KNIT_AGENT_KEYEXPIRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KEYEXPIRY_WARN_SECONDS (7 * 24 * 3600)

/* When to renew a key issued at issued (0: unknown, taken as now) that
 * expires at expiry (0: never, and the answer is 0). */
int64_t keyexpiry_renew_at(int64_t issued, int64_t expiry, int64_t now);
/* How long to wait before the next renewal attempt: until renew_at, at
 * least 1 s, at most an hour (clocks jump; the lifetime may change). After
 * a failed attempt (failures > 0) it backs off: 5 s doubling to 5 min, but
 * never past a tenth of what is left. */
uint64_t keyexpiry_delay_ms(int64_t renew_at, int64_t expiry, int64_t now, unsigned failures);
/* True when a key expiring at expiry (0: never) is within the warning. */
bool keyexpiry_warn(int64_t expiry, int64_t now);
/* "6d 23h", "4h 5m", "59s": secs (>= 0) in at most two units. */
void keyexpiry_format_left(int64_t secs, char *out, size_t outlen);

#endif
