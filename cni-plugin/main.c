/* knit-cni: the CNI plugin (run by the container runtime, CNI_COMMAND set)
 * and its installer (knit-cni install). */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "installer.h"
#include "netconf.h"
#include "plugin.h"

#ifndef KNIT_VERSION
#define KNIT_VERSION "unknown"
#endif

static const char usage[] =
	"Usage: knit-cni                     (as a CNI plugin: CNI_COMMAND etc. set, configuration on stdin)\n"
	"       knit-cni install --conf-dir DIR --bin-dir DIR [--mode MODE] [--socket PATH] [--uninstall]\n"
	"       knit-cni --version | --help\n"
	"\n"
	"knit-cni is a chained CNI plugin (spec 0.3.0-1.1.0: ADD, DEL, CHECK, VERSION, STATUS, GC).\n"
	"A pod annotated knit.dev/identity: \"true\" gets its own tailnet identity from the node's\n"
	"knitd: an interface knit0 with its tailnet addresses and routes. Other pods pass through\n"
	"untouched. Errors are CNI error objects on stdout; cni-plugin/README.md lists the codes.\n"
	"\n"
	"install copies this binary to BIN-DIR/knit-cni and appends knit-cni (with the capability\n"
	"io.kubernetes.cri.pod-annotations) to the plugins of the node's primary configuration, the\n"
	"first *.conf/*.conflist/*.json in CONF-DIR; a single .conf becomes a .conflist. The original\n"
	"is kept as <file>.knit-orig. Running it again changes nothing. --uninstall restores the\n"
	"originals and removes knit-cni from the configuration; the binary stays, so that DEL of\n"
	"pods attached earlier still works.\n"
	"\n"
	"install flags (--flag VALUE or --flag=VALUE):\n"
	"  --conf-dir DIR   CNI configuration directory (default /etc/cni/net.d)\n"
	"  --bin-dir DIR    CNI plugin directory (default /opt/cni/bin)\n"
	"  --mode MODE      identity (default), gateway or identity+gateway, written\n"
	"                   into the entry (gateway: knitd advertises the pod ranges)\n"
	"  --socket PATH    knitd's local API socket, written into the entry\n"
	"                   (default " NETCONF_SOCKET_DEFAULT ")\n"
	"  --source PATH    the binary to copy (default: this one)\n"
	"  --uninstall      undo an install\n"
	"\n"
	"Exit status: 0 on success, 1 on failure (as a plugin: with the CNI error on stdout),\n"
	"2 for a usage error.\n";

/* "--name" alone or as the part of "--name=value" before the '='. */
static bool flag_is(const char *arg, size_t n, const char *name)
{
	return strlen(name) == n && strncmp(arg, name, n) == 0;
}

static int install_main(int argc, char **argv)
{
	struct installer_opts o = { .conf_dir = "/etc/cni/net.d", .bin_dir = "/opt/cni/bin" };
	bool uninstall = false;
	char why[1024] = "";
	int err;

	for (int i = 2; i < argc; i++) {
		const char **dst = NULL, *eq = strchr(argv[i], '=');
		size_t n = eq ? (size_t)(eq - argv[i]) : strlen(argv[i]);

		if (strcmp(argv[i], "--uninstall") == 0) {
			uninstall = true;
			continue;
		}
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			fputs(usage, stdout);
			return 0;
		}
		if (flag_is(argv[i], n, "--conf-dir"))
			dst = &o.conf_dir;
		else if (flag_is(argv[i], n, "--bin-dir"))
			dst = &o.bin_dir;
		else if (flag_is(argv[i], n, "--mode"))
			dst = &o.mode;
		else if (flag_is(argv[i], n, "--socket"))
			dst = &o.socket;
		else if (flag_is(argv[i], n, "--source"))
			dst = &o.source;
		if (dst && eq) {
			*dst = eq + 1;
			continue;
		}
		if (!dst || i + 1 >= argc) {
			fprintf(stderr, "knit-cni: %s %s\n\n%s", dst ? "missing value for" : "unknown flag", argv[i], usage);
			return 2;
		}
		*dst = argv[++i];
	}
	if (o.mode && strcmp(o.mode, "identity") != 0 && strcmp(o.mode, "gateway") != 0 &&
	    strcmp(o.mode, "identity+gateway") != 0) {
		fprintf(stderr, "knit-cni: --mode must be identity, gateway or identity+gateway\n");
		return 2;
	}
	if (o.socket && o.socket[0] != '/') {
		fprintf(stderr, "knit-cni: --socket must be an absolute path\n");
		return 2;
	}
	err = uninstall ? installer_uninstall(&o, why, sizeof(why)) : installer_install(&o, why, sizeof(why));
	if (err) {
		fprintf(stderr, "knit-cni: %s\n", why);
		return 1;
	}
	return 0;
}

static int write_stdout(const struct buf *b)
{
	size_t off = 0;

	while (off < b->len) {
		ssize_t n = write(STDOUT_FILENO, b->data + off, b->len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		off += (size_t)n;
	}
	return 0;
}

static int read_stdin(struct buf *in)
{
	int err = 0;

	for (;;) {
		uint8_t *p = buf_reserve(in, 65536, &err);
		ssize_t n;

		if (!p)
			return err;
		n = read(STDIN_FILENO, p, 65536);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return 0;
		buf_commit(in, (size_t)n);
	}
}

int main(int argc, char **argv)
{
	struct netconf_env env = {
		.command = getenv("CNI_COMMAND"),
		.containerid = getenv("CNI_CONTAINERID"),
		.netns = getenv("CNI_NETNS"),
		.ifname = getenv("CNI_IFNAME"),
		.args = getenv("CNI_ARGS"),
		.path = getenv("CNI_PATH"),
	};
	/* Room past the cap, so that netconf reports an oversized configuration. */
	struct buf in = BUF_INIT(NETCONF_MAX_BYTES + 65536), out = BUF_INIT((size_t)8 << 20);
	int ret, err = 0;

	/* A runtime gone mid-ADD must cost a rollback, not a SIGPIPE death
	 * that leaves the identity behind. */
	signal(SIGPIPE, SIG_IGN);
	if (argc > 1 && strcmp(argv[1], "install") == 0)
		return install_main(argc, argv);
	if (argc > 1 && (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0)) {
		printf("knit-cni %s\n", KNIT_VERSION);
		return 0;
	}
	if (argc > 1) {
		fputs(usage, strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ? stdout : stderr);
		return strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ? 0 : 2;
	}
	/* Without CNI_COMMAND nobody is feeding stdin: do not wait on it. */
	if (env.command && (err = read_stdin(&in)) && err != -ENOSPC) {
		printf("{\"cniVersion\":\"1.1.0\",\"code\":5,\"msg\":\"I/O failure\","
		       "\"details\":\"cannot read the configuration from stdin\"}\n");
		ret = 1;
		goto out;
	}
	if (err == -ENOSPC) {
		/* buf reset itself; report the size the way netconf does. */
		ret = plugin_run(&env, NULL, NETCONF_MAX_BYTES + 1, &out, write_stdout);
	} else {
		ret = plugin_run(&env, buf_str(&in), in.len, &out, write_stdout);
	}
	if (out.len && write_stdout(&out))
		ret = 1;
out:
	buf_free(&out);
	buf_free(&in);
	return ret;
}
