/* A self-probe of one of our own HTTP listeners: every period, on the
 * loop, a fresh loopback connection sends a GET and waits for any HTTP
 * response line. A listener that is wedged or starved (every connection
 * slot held, accepts failing) stops answering, and /readyz and /healthz
 * can say so, so the pod is taken out of the Service and restarted. */
#ifndef KNIT_OPERATOR_PROBE_H
#define KNIT_OPERATOR_PROBE_H

#include <stdint.h>

struct loop;
struct probe;

/* Loop thread. NULL on allocation failure. */
struct probe *probe_new(struct loop *loop, uint16_t port, const char *path, uint32_t every_ms,
			uint32_t timeout_ms);
void probe_free(struct probe *p);
/* How long since the listener last answered (since the probe started if
 * it never has), in ms. */
uint64_t probe_silent_ms(const struct probe *p);
unsigned long probe_failures(const struct probe *p);

#endif
