/* `knitd wg`: the engine on its own, used like wireguard-go. */
#ifndef KNIT_AGENT_STANDALONE_H
#define KNIT_AGENT_STANDALONE_H

#include <stdio.h>

/* argv[0] is "wg" (or the program name when run as knit-wg). Returns the
 * process exit status. */
int standalone_main(int argc, char **argv);
void standalone_usage(FILE *f, const char *prog);

#endif
