/* One knit-cni invocation as a runtime makes it (SPEC.md section 2): the
 * CNI_* environment and the configuration on stdin in, the result or the
 * error object for stdout and the exit status out. */
#ifndef KNIT_CNI_PLUGIN_H
#define KNIT_CNI_PLUGIN_H

#include <stddef.h>

#include "netconf.h"

struct buf;

/* Fills out with what goes to stdout (possibly nothing) and returns the
 * exit status: 0 on success, 1 with a CNI error object in out. Messages
 * for people go to stderr. */
int plugin_run(const struct netconf_env *env, const char *in, size_t len, struct buf *out);

#endif
