/* One knit-cni invocation as a runtime makes it (SPEC.md section 2): the
 * CNI_* environment and the configuration on stdin in, the result or the
 * error object for stdout and the exit status out. */
#ifndef KNIT_CNI_PLUGIN_H
#define KNIT_CNI_PLUGIN_H

#include <stddef.h>

#include "netconf.h"

struct buf;

/* Delivers a successful ADD's result (writes it to stdout) before the
 * identity is kept: a negative errno rolls the identity back. */
typedef int (*plugin_deliver_fn)(const struct buf *result);

/* Fills out with what goes to stdout (possibly nothing) and returns the
 * exit status: 0 on success, 1 with a CNI error object in out. A
 * successful ADD's result goes through deliver when it is not NULL (and
 * out is then left empty). Messages for people go to stderr. */
int plugin_run(const struct netconf_env *env, const char *in, size_t len, struct buf *out,
	       plugin_deliver_fn deliver);

#endif
