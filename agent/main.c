/* knitd: the knit node agent. `knitd run` joins a knit tailnet (mesh
 * mode); `knitd wg` (or knit-wg) runs the same userspace WireGuard engine
 * on its own, configured with wg(8) like wireguard-go. */
#include <libgen.h>
#include <stdio.h>
#include <string.h>

#include "mesh.h"
#include "standalone.h"

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: knitd COMMAND [ARGS...]\n"
		"\n"
		"knit's node agent. Commands:\n"
		"\n"
		"  run [OPTIONS]              join a knit tailnet: the node agent (mesh mode),\n"
		"                             driven by the knit CLI (`knitd run --help`)\n"
		"  wg [-f] [OPTIONS] IFNAME   run a standalone userspace WireGuard interface,\n"
		"                             configured with wg(8) like wireguard-go\n"
		"                             (`knitd wg --help` for details)\n"
		"  help, -h, --help           show this help\n"
		"  --version                  print knitd's version\n"
		"\n"
		"Run under the name knit-wg (a symlink to knitd), it behaves as `knitd wg`, so\n"
		"WG_QUICK_USERSPACE_IMPLEMENTATION=knit-wg makes wg-quick(8) use it.\n"
		"\n"
		"Pod identities (for the CNI plugin), NAT traversal, MagicDNS and the packet\n"
		"filter are not implemented yet.\n");
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
	if (!strcmp(argv[1], "--version")) {
		printf("knitd %s\n", KNIT_VERSION);
		return 0;
	}
	if (!strcmp(argv[1], "wg"))
		return standalone_main(argc - 1, argv + 1);
	if (!strcmp(argv[1], "run"))
		return mesh_main(argc - 1, argv + 1);
	fprintf(stderr, "knitd: unknown command \"%s\"\n\n", argv[1]);
	usage(stderr);
	return 2;
}
