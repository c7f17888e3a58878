/* knitd: the knit node agent. Today it runs the userspace WireGuard data
 * plane on its own (`knitd wg`, or as knit-wg); mesh mode, which drives the
 * same engine from the coordination server's netmap, is still to come. */
#include <libgen.h>
#include <stdio.h>
#include <string.h>

#include "standalone.h"

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: knitd COMMAND [ARGS...]\n"
		"\n"
		"knit's node agent. Commands:\n"
		"\n"
		"  wg [-f] [OPTIONS] IFNAME   run a standalone userspace WireGuard interface,\n"
		"                             configured with wg(8) like wireguard-go\n"
		"                             (`knitd wg --help` for details)\n"
		"  help                       show this help\n"
		"\n"
		"Run under the name knit-wg (a symlink to knitd), it behaves as `knitd wg`, so\n"
		"WG_QUICK_USERSPACE_IMPLEMENTATION=knit-wg makes wg-quick(8) use it.\n"
		"\n"
		"Mesh mode (joining a knit tailnet through the operator's coordination\n"
		"server, pod identities, MagicDNS) is not implemented yet.\n");
}

int main(int argc, char **argv)
{
	char prog[256];

	snprintf(prog, sizeof(prog), "%s", argv[0]);
	if (!strcmp(basename(prog), "knit-wg"))
		return standalone_main(argc, argv);
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "wg"))
		return standalone_main(argc - 1, argv + 1);
	fprintf(stderr, "knitd: unknown command \"%s\"\n\n", argv[1]);
	usage(stderr);
	return 2;
}
