/* knit: drives knitd through its local API (agent/localapi.h) on a unix
 * socket, as the tailscale CLI drives tailscaled. Blocking libcurl: one
 * request at a time is all a CLI needs. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <sodium.h>

#include "buf.h"
#include "defaults.h"
#include "json.h"
#include "netcheck.h"
#include "keyexpiry.h"
#include "policy_check.h"

#define SOCKET_DEFAULT KNIT_SOCKET_DEFAULT
#define MAX_RESPONSE ((size_t)64 << 20)
/* Auth keys are a few dozen characters; a file much bigger is not one. */
#define MAX_AUTHKEY 4096

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

struct cli {
	const char *socket;
	const char *prog;
};

static const char usage_main[] =
	"Usage: knit [--socket PATH] COMMAND [FLAGS] [ARGS]\n"
	"\n"
	"knit controls knitd, the knit agent on this machine, through its local API\n"
	"(a unix socket, by default " SOCKET_DEFAULT ", usually root-only).\n"
	"\n"
	"Commands:\n"
	"  up        connect this device to the tailnet (log in with an auth key the first time)\n"
	"  down      disconnect from the tailnet; keys and login are kept\n"
	"  status    show this device and its peers\n"
	"  ping      ping a peer over the tailnet and show the path taken\n"
	"  ip        show this device's (or a peer's) tailnet addresses\n"
	"  whois     show which device has a tailnet IP\n"
	"  netcheck  check this host's network: UDP, NAT mapping, reflexive addresses, relays\n"
	"  logout    delete this device from the tailnet; its node key stops working\n"
	"  version   show the versions of knit and knitd\n"
	"  policy check FILE [--devices DEVICES.json]\n"
	"            check a tailnet policy file offline (for CI): parse, compile, run its tests\n"
	"\n"
	"Global flags:\n"
	"  --socket PATH   knitd's local API socket (default " SOCKET_DEFAULT ")\n"
	"  --version       print knit's version\n"
	"  -h, --help      this text; \"knit COMMAND --help\" for a command's\n"
	"\n"
	"Exit status: 0 on success, 1 on failure, 2 for a usage error.\n";

static const char usage_up[] =
	"Usage: knit up [FLAGS]\n"
	"\n"
	"Connects this device to the tailnet. The first time (or after knit logout) it\n"
	"needs an auth key; later a plain \"knit up\" reconnects with the saved login.\n"
	"Flags given replace the saved ones; flags left out keep them.\n"
	"\n"
	"Flags:\n"
	"  --authkey-file PATH       read the auth key from PATH (\"-\": standard input), the\n"
	"                            key from the operator (an AuthKey's Secret); it is\n"
	"                            needed the first time only\n"
	"  --authkey KEY             the auth key itself; \"-\" reads it from standard input.\n"
	"                            A key given here is visible to every user in\n"
	"                            /proc/PID/cmdline while knit runs: prefer the file\n"
	"  --login-server URL        the coordination server, e.g. http://knit-control.knit-system:8080\n"
	"  --server-key ctrlkey:HEX  pin the server's control key (its Tailnet's status.controlKey);\n"
	"                            without it the key is fetched and trusted on first use, and shown\n"
	"  --hostname NAME           the device's name in the tailnet (default: this machine's)\n"
	"  --advertise-tags TAGS     comma-separated tags to ask for, e.g. tag:ci,tag:web\n"
	"                            (the policy's tagOwners must allow them); \"\" clears them\n"
	"  --advertise-routes CIDRS  comma-separated subnets to offer, e.g. 10.0.0.0/24;\n"
	"                            they need approval in the tailnet policy; \"\" clears them\n"
	"  --timeout SECONDS         how long to wait for the server (default 60)\n";

static const char usage_down[] =
	"Usage: knit down\n"
	"\n"
	"Disconnects from the tailnet: peers are dropped and the control stream closed.\n"
	"Keys and the login are kept, so \"knit up\" reconnects without an auth key.\n";

static const char usage_status[] =
	"Usage: knit status [--json]\n"
	"\n"
	"Shows this device and its peers, one per line:\n"
	"  IP          the first tailnet address\n"
	"  NAME        the device name\n"
	"  PATH        \"direct IP:PORT\" when packets flow peer to peer, \"relay N CODE\" when\n"
	"              they go through relay region N (CODE: its code), \"-\" when there\n"
	"              is no path yet;\n"
	"              \"offline\" if the peer is not connected to the control server\n"
	"  HANDSHAKE   time since the last WireGuard handshake\n"
	"  RX, TX      bytes received from and sent to the peer\n"
	"\n"
	"Flags:\n"
	"  --json   print knitd's status as JSON, as the local API returns it\n"
	"\n"
	"Exits 1 when knitd is not connected (logged out or down).\n";

static const char usage_ping[] =
	"Usage: knit ping [-c COUNT] [--timeout SECONDS] [--icmp] PEER\n"
	"\n"
	"Pings PEER (a name or a tailnet IP) once a second with a disco ping along the\n"
	"path in use (as tailscale ping; ICMP through the tunnel for a peer without a\n"
	"disco key), each also a round of NAT hole punching, and shows each answer and\n"
	"the path it took (a direct IP:PORT or relay N). Stops at the first answer\n"
	"over a direct path, or after COUNT pings.\n"
	"\n"
	"Flags:\n"
	"  -c COUNT            pings at most (default 10)\n"
	"  --timeout SECONDS   wait for each answer (default 5)\n"
	"  --icmp              an ICMP echo through the WireGuard tunnel instead: proves\n"
	"                      the tunnel carries traffic, not only that disco gets through\n"
	"\n"
	"Exits 1 if no ping was answered over a direct path.\n";

static const char usage_ip[] =
	"Usage: knit ip [-4 | -6] [PEER]\n"
	"\n"
	"Prints this device's tailnet addresses, one per line, or those of PEER (a\n"
	"name, a DNS name, or one of its addresses).\n"
	"\n"
	"Flags:\n"
	"  -4   only the IPv4 address\n"
	"  -6   only the IPv6 address\n";

static const char usage_whois[] =
	"Usage: knit whois IP\n"
	"\n"
	"Shows the device that has the tailnet address IP: its name, node key,\n"
	"addresses and tags.\n";

static const char usage_logout[] =
	"Usage: knit logout\n"
	"\n"
	"Deletes this device from the tailnet at the coordination server. Its node\n"
	"key stops working at once; joining again needs \"knit up --authkey-file PATH\".\n";

static const char usage_version[] =
	"Usage: knit version\n"
	"\n"
	"Prints knit's version, and knitd's if it is running.\n";

static void errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Set while asking knitd something whose failure is no error (version). */
static bool quiet;

static void errorf(const char *fmt, ...)
{
	va_list ap;

	if (quiet)
		return;
	fputs("knit: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int usage_error(const char *usage, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* fmt names the command ("knit up: ...") or is "knit: ...". */
static int usage_error(const char *usage, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\n\n", stderr);
	fputs(usage, stderr);
	return EXIT_USAGE;
}

/* Long flags' values are OPT_FIRST and up, never a character, so that
 * bad_flag() can tell a long flag from a short one. */
enum { OPT_FIRST = 0x100, OPT_HELP = OPT_FIRST };

/* Every command takes -h/--help; these take nothing else. */
static const struct option help_only[] = {
	{ "help", no_argument, NULL, OPT_HELP },
	{ NULL, 0, NULL, 0 },
};

/* Starts getopt_long afresh over a command's arguments (argv[0] is the
 * command's name). Errors are ours to print: see bad_flag(). */
static void opts_begin(void)
{
	optind = 0;
	opterr = 0;
}

/* getopt_long returned '?' or ':' for the flag it just read: say what
 * was wrong with it, as typed. optopt is the short flag's character, a long
 * flag's value (OPT_FIRST and up), or 0 for a long flag nobody knows. */
static int bad_flag(const char *usage, char **argv, int c)
{
	const char *cmd = argv[0], *arg = argv[optind - 1];

	if (c == ':' && optopt < OPT_FIRST)
		return usage_error(usage, "knit %s: -%c needs a value", cmd, optopt);
	if (c == ':')
		return usage_error(usage, "knit %s: %s needs a value", cmd, arg);
	if (optopt >= OPT_FIRST)
		return usage_error(usage, "knit %s: %s takes no value", cmd, arg);
	if (optopt)
		return usage_error(usage, "knit %s: unknown flag \"-%c\"", cmd, optopt);
	return usage_error(usage, "knit %s: unknown or ambiguous flag \"%s\"", cmd, arg);
}

/* A whole positive decimal number. */
static bool parse_positive(const char *s, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v <= 0)
		return false;
	*out = v;
	return true;
}

/* Reads an auth key from path ("-": standard input), so that it is never in
 * /proc/PID/cmdline. The key is the file's one word; surrounding blanks and
 * newlines are dropped. From a terminal: one line, with echo off. Returns
 * the key (caller wipes and frees) or NULL after printing why. */
static char *authkey_read(const char *path)
{
	char buf[MAX_AUTHKEY + 1];
	bool from_stdin = strcmp(path, "-") == 0, tty = false;
	const char *what = from_stdin ? "standard input" : path;
	struct termios saved, noecho;
	char *key = NULL, *p;
	size_t n = 0;
	ssize_t r;
	int fd = from_stdin ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		errorf("cannot read the auth key from %s: %s", path, strerror(errno));
		return NULL;
	}
	if (from_stdin && isatty(fd) && tcgetattr(fd, &saved) == 0) {
		noecho = saved;
		noecho.c_lflag &= ~(tcflag_t)ECHO;
		tty = tcsetattr(fd, TCSAFLUSH, &noecho) == 0;
		fputs("Auth key: ", stderr);
	}
	/* A terminal gives a line per read; a file or a pipe is read to its end. */
	while (n < sizeof(buf)) {
		r = read(fd, buf + n, sizeof(buf) - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			errorf("cannot read the auth key from %s: %s", what, strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		n += (size_t)r;
		if (tty && memchr(buf, '\n', n))
			break;
	}
	if (n == sizeof(buf)) {
		errorf("%s holds more than an auth key (over %d bytes)", what, MAX_AUTHKEY);
		goto out;
	}
	if (memchr(buf, '\0', n)) {
		errorf("%s is not text: it holds a NUL byte", what);
		goto out;
	}
	buf[n] = '\0';
	while (n > 0 && strchr(" \t\r\n", buf[n - 1]))
		buf[--n] = '\0';
	for (p = buf; *p && strchr(" \t\r\n", *p); p++)
		;
	if (!*p) {
		errorf("no auth key in %s", what);
		goto out;
	}
	if (strpbrk(p, " \t\r\n")) {
		errorf("%s holds more than one word: want the auth key alone", what);
		goto out;
	}
	if (!(key = strdup(p)))
		errorf("out of memory");
out:
	if (tty) {
		tcsetattr(fd, TCSAFLUSH, &saved);
		fputc('\n', stderr);
	}
	if (!from_stdin)
		close(fd);
	sodium_memzero(buf, sizeof(buf));
	return key;
}

/* ---- talking to knitd --------------------------------------------------------------- */

static size_t on_write(char *p, size_t size, size_t n, void *arg)
{
	struct buf *b = arg;

	return buf_add(b, p, size * n) ? 0 : size * n;
}

/* Explains why the socket could not be reached. */
static void explain_unreachable(const struct cli *cli, const char *curl_msg)
{
	struct stat sb;

	if (stat(cli->socket, &sb) < 0 && errno == ENOENT) {
		errorf("knitd is not running (no socket at %s): start it (knitd, or systemctl start knitd),\n"
		       "      or point knit at its socket with --socket PATH", cli->socket);
		return;
	}
	if (access(cli->socket, R_OK | W_OK) < 0 && errno == EACCES) {
		errorf("permission denied on %s: knitd's socket is root-only; run sudo knit ...", cli->socket);
		return;
	}
	errorf("knitd is not answering on %s (%s): is it running? start it (knitd, or systemctl start knitd)",
	       cli->socket, curl_msg);
}

/* One request. Returns 0 and *out (the parsed body), or prints why not and
 * returns EXIT_FAIL. */
static int api(const struct cli *cli, const char *method, const char *path, const struct json *body,
	       long timeout_s, struct json **out, long *status)
{
	struct buf resp = BUF_INIT(MAX_RESPONSE), req = BUF_INIT(1 << 20);
	char url[512], errbuf[CURL_ERROR_SIZE] = "";
	struct curl_slist *hdrs = NULL;
	struct json_error je;
	CURL *e = curl_easy_init();
	CURLcode rc;
	int ret = EXIT_FAIL;

	*out = NULL;
	if (!e) {
		errorf("cannot initialise libcurl");
		goto out;
	}
	snprintf(url, sizeof(url), "http://local-knitd%s", path);
	curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, cli->socket);
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, &resp);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(e, CURLOPT_TIMEOUT, timeout_s);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, 5L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	if (strcmp(method, "POST") == 0) {
		if (body && json_dump(body, &req, 0)) {
			errorf("out of memory");
			goto out;
		}
		hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
		curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, buf_str(&req));
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)req.len);
	}
	rc = curl_easy_perform(e);
	if (rc == CURLE_COULDNT_CONNECT) {
		explain_unreachable(cli, errbuf[0] ? errbuf : curl_easy_strerror(rc));
		goto out;
	}
	if (rc == CURLE_OPERATION_TIMEDOUT) {
		errorf("knitd did not answer within %ld s", timeout_s);
		goto out;
	}
	if (rc != CURLE_OK) {
		errorf("talking to knitd on %s: %s", cli->socket, errbuf[0] ? errbuf : curl_easy_strerror(rc));
		goto out;
	}
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, status);
	*out = json_parse((const char *)buf_str(&resp), resp.len, &je);
	if (!*out) {
		/* Not our API's JSON (405 and friends answer in text). */
		errorf("knitd answered %s %s with HTTP %ld: %.200s", method, path, *status, buf_str(&resp));
		goto out;
	}
	ret = 0;
out:
	if (e)
		curl_easy_cleanup(e);
	curl_slist_free_all(hdrs);
	/* up carries the auth key. */
	buf_free_secure(&req);
	buf_free(&resp);
	return ret;
}

/* An {"error","code"} answer: print it with what to do next. */
static int api_error(const struct json *j)
{
	const char *msg = json_str(json_get(j, "error"));
	const char *code = json_str(json_get(j, "code")) ?: "";

	if (!json_get(j, "error"))
		return 0;
	errorf("%s", msg ? msg : "(no message)");
	if (strcmp(code, "NeedsLogin") == 0 || strcmp(code, "NotRegistered") == 0)
		fprintf(stderr, "      this device is logged out: run knit up --authkey-file PATH\n");
	else if (strcmp(code, "AuthKeyInvalid") == 0 || strcmp(code, "AuthKeyExpired") == 0 ||
		 strcmp(code, "AuthKeyUsedUp") == 0)
		fprintf(stderr, "      get a new auth key from the operator and run knit up --authkey-file PATH\n");
	else if (strcmp(code, "TagNotPermitted") == 0)
		fprintf(stderr, "      the tailnet policy's tagOwners do not allow these tags for this key\n");
	else if (strcmp(code, "ControlUnreachable") == 0)
		fprintf(stderr, "      check --login-server and that the coordination server is up\n");
	else if (strcmp(code, "Stopped") == 0)
		fprintf(stderr, "      knit is down: run knit up\n");
	return EXIT_FAIL;
}

static struct json *strv_from_csv(const char *csv)
{
	struct json *a = json_new_array();
	const char *p = csv;

	while (a && *p) {
		const char *comma = strchr(p, ',');
		size_t n = comma ? (size_t)(comma - p) : strlen(p);

		while (n > 0 && *p == ' ') {
			p++;
			n--;
		}
		while (n > 0 && p[n - 1] == ' ')
			n--;
		if (n > 0 && json_array_append(a, json_new_stringn(p, n))) {
			json_free(a);
			return NULL;
		}
		p = comma ? comma + 1 : p + strlen(p);
	}
	return a;
}

/* ---- commands ------------------------------------------------------------------------ */

static int cmd_up(const struct cli *cli, int argc, char **argv)
{
	enum { AUTHKEY = OPT_HELP + 1, AUTHKEY_FILE, LOGIN, SERVER_KEY, HOSTNAME, TAGS, ROUTES, TIMEOUT };
	static const struct option longopts[] = {
		{ "authkey", required_argument, NULL, AUTHKEY },
		{ "auth-key", required_argument, NULL, AUTHKEY },
		{ "authkey-file", required_argument, NULL, AUTHKEY_FILE },
		{ "login-server", required_argument, NULL, LOGIN },
		{ "server-key", required_argument, NULL, SERVER_KEY },
		{ "hostname", required_argument, NULL, HOSTNAME },
		{ "advertise-tags", required_argument, NULL, TAGS },
		{ "advertise-routes", required_argument, NULL, ROUTES },
		{ "timeout", required_argument, NULL, TIMEOUT },
		{ "help", no_argument, NULL, OPT_HELP },
		{ NULL, 0, NULL, 0 },
	};
	struct json *req = json_new_object(), *resp = NULL;
	const char *authkey = NULL, *authkey_file = NULL;
	char *key = NULL;
	long status, timeout = 60;
	int c, ret = EXIT_FAIL, err = req ? 0 : -ENOMEM;

	opts_begin();
	while (!err && (c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
		case OPT_HELP:
			fputs(usage_up, stdout);
			ret = EXIT_OK;
			goto out;
		case AUTHKEY:
			authkey = optarg;
			break;
		case AUTHKEY_FILE:
			authkey_file = optarg;
			break;
		case LOGIN:
			err = json_object_set(req, "loginServer", json_new_string(optarg));
			break;
		case SERVER_KEY:
			err = json_object_set(req, "serverKey", json_new_string(optarg));
			break;
		case HOSTNAME:
			err = json_object_set(req, "hostname", json_new_string(optarg));
			break;
		case TAGS:
			err = json_object_set(req, "advertiseTags", strv_from_csv(optarg));
			break;
		case ROUTES:
			err = json_object_set(req, "advertiseRoutes", strv_from_csv(optarg));
			break;
		case TIMEOUT:
			if (!parse_positive(optarg, &timeout)) {
				ret = usage_error(usage_up, "knit up: --timeout wants a number of seconds, not \"%s\"",
						  optarg);
				goto out;
			}
			break;
		default:
			ret = bad_flag(usage_up, argv, c);
			goto out;
		}
	}
	if (err) {
		errorf("out of memory");
		goto out;
	}
	if (optind < argc) {
		ret = usage_error(usage_up, "knit up: unexpected argument \"%s\"", argv[optind]);
		goto out;
	}
	if (authkey && authkey_file) {
		ret = usage_error(usage_up, "knit up: give the auth key once, with --authkey or --authkey-file");
		goto out;
	}
	if (authkey && strcmp(authkey, "-") == 0)
		authkey_file = "-";
	if (authkey_file) {
		if (!(key = authkey_read(authkey_file)))
			goto out;
		authkey = key;
	}
	if (authkey && json_object_set(req, "authKey", json_new_string(authkey))) {
		errorf("out of memory");
		goto out;
	}
	if (api(cli, "POST", "/localapi/v1/up", req, timeout, &resp, &status))
		goto out;
	if ((ret = api_error(resp)))
		goto out;
	if (json_bool(json_get(resp, "controlKeyNew"), false)) {
		printf("Trusted the coordination server's key on first use:\n  %s\n"
		       "Check it against the operator's: kubectl get tailnets -o jsonpath='{.items[*].status.controlKey}'\n"
		       "(or pin it from the start with knit up --server-key ...)\n",
		       json_str(json_get(resp, "controlKey")) ?: "?");
	}
	printf("Connected as %s", json_str(json_get(resp, "name")) ?: "?");
	if (json_str(json_get(resp, "device")))
		printf(" (device %s)", json_str(json_get(resp, "device")));
	for (size_t i = 0; i < json_array_len(json_get(resp, "addresses")); i++)
		printf("%s%s", i ? " " : ": ", json_str(json_array_at(json_get(resp, "addresses"), i)) ?: "");
	printf("\n");
	ret = EXIT_OK;
out:
	/* The auth key is in the tree (and in key); api() wiped the text. */
	if (req) {
		struct json *k = json_get(req, "authKey");
		size_t n;
		char *s = (char *)json_strn(k, &n);

		if (s)
			sodium_memzero(s, n);
	}
	if (key) {
		sodium_memzero(key, strlen(key));
		free(key);
	}
	json_free(req);
	json_free(resp);
	return ret;
}

static int simple_post(const struct cli *cli, int argc, char **argv, const char *usage, const char *path,
		       const char *done)
{
	struct json *resp = NULL;
	long status;
	int c, ret;

	opts_begin();
	while ((c = getopt_long(argc, argv, ":h", help_only, NULL)) != -1) {
		if (c != 'h' && c != OPT_HELP)
			return bad_flag(usage, argv, c);
		fputs(usage, stdout);
		return EXIT_OK;
	}
	if (optind < argc)
		return usage_error(usage, "knit %s: unexpected argument \"%s\"", argv[0], argv[optind]);
	if (api(cli, "POST", path, NULL, 60, &resp, &status))
		return EXIT_FAIL;
	ret = api_error(resp);
	if (!ret)
		printf("%s\n", done);
	json_free(resp);
	return ret;
}

static int cmd_down(const struct cli *cli, int argc, char **argv)
{
	return simple_post(cli, argc, argv, usage_down, "/localapi/v1/down",
			   "Disconnected from the tailnet. Run knit up to reconnect.");
}

static int cmd_logout(const struct cli *cli, int argc, char **argv)
{
	return simple_post(cli, argc, argv, usage_logout, "/localapi/v1/logout",
			   "Logged out: this device is gone from the tailnet and its node key no longer works.\n"
			   "Run knit up --authkey-file PATH to join again.");
}

static void human_bytes(uint64_t n, char *out, size_t len)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)n;
	int u = 0;

	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(out, len, "%llu B", (unsigned long long)n);
	else
		snprintf(out, len, "%.1f %s", v, units[u]);
}

static void human_ago(int64_t when, char *out, size_t len)
{
	int64_t d = (int64_t)time(NULL) - when;

	if (when <= 0)
		snprintf(out, len, "-");
	else if (d < 0)
		snprintf(out, len, "just now");
	else if (d < 120)
		snprintf(out, len, "%llds ago", (long long)d);
	else if (d < 7200)
		snprintf(out, len, "%lldm ago", (long long)(d / 60));
	else if (d < 172800)
		snprintf(out, len, "%lldh ago", (long long)(d / 3600));
	else
		snprintf(out, len, "%lldd ago", (long long)(d / 86400));
}

static void path_text(const struct json *p, char *out, size_t len)
{
	const char *ep = json_str(json_get(p, "endpoint"));
	int64_t relay = json_int(json_get(p, "relay"), 0);
	const struct json *path = json_get(p, "path");
	const char *kind = json_str(json_get(path, "kind"));

	if (kind && !strcmp(kind, "relay")) {
		const char *code = json_str(json_get(path, "code"));
		snprintf(out, len, "relay %lld%s%s", (long long)json_int(json_get(path, "region"), 0), code && *code ? " " : "",
			 code && *code ? code : "");
	} else if (kind && !strcmp(kind, "direct"))
		snprintf(out, len, "direct %s", json_str(json_get(path, "addr")) ?: "?");
	else if (ep)
		snprintf(out, len, "direct %s", ep);
	else if (relay > 0)
		snprintf(out, len, "relay %lld", (long long)relay);
	else
		snprintf(out, len, "-");
	if (!json_bool(json_get(p, "online"), false))
		snprintf(out + strlen(out), len - strlen(out), "; offline");
}

/* Who a device belongs to: its user, or its tags (a tagged device has no
 * user). */
static void owner_text(const struct json *p, char *out, size_t len)
{
	const struct json *tags = json_get(p, "tags");
	size_t used = 0;

	snprintf(out, len, "%s", json_str(json_get(p, "user")) ?: "-");
	for (size_t i = 0; i < json_array_len(tags) && used < len; i++)
		used += (size_t)snprintf(out + used, len - used, "%s%s", i ? "," : "",
					 json_str(json_array_at(tags, i)) ?: "");
}

/* The OWNER column: at least 24 wide, as wide as the longest owner
 * (system:serviceaccount:<namespace>:<name> is often longer). */
static int owner_width(const struct json *st)
{
	const struct json *peers = json_get(st, "peers");
	char owner[128];
	size_t w = 24;

	if (json_get(st, "self")) {
		owner_text(json_get(st, "self"), owner, sizeof(owner));
		w = strlen(owner) > w ? strlen(owner) : w;
	}
	for (size_t i = 0; i < json_array_len(peers); i++) {
		owner_text(json_array_at(peers, i), owner, sizeof(owner));
		w = strlen(owner) > w ? strlen(owner) : w;
	}
	return (int)w;
}

static void print_row(const struct json *p, bool self, int ow)
{
	char path[128], ago[32], rx[32], tx[32], owner[128];
	const char *ip = json_str(json_array_at(json_get(p, "addresses"), 0)) ?: "-";

	owner_text(p, owner, sizeof(owner));
	if (self) {
		printf("%-18s %-24s %-*s %-32s %-12s %-10s %s\n", ip, json_str(json_get(p, "name")) ?: "-", ow, owner,
		       "(this device)", "-", "-", "-");
		return;
	}
	path_text(p, path, sizeof(path));
	human_ago(json_int(json_get(p, "lastHandshake"), 0), ago, sizeof(ago));
	human_bytes((uint64_t)json_int(json_get(p, "rxBytes"), 0), rx, sizeof(rx));
	human_bytes((uint64_t)json_int(json_get(p, "txBytes"), 0), tx, sizeof(tx));
	printf("%-18s %-24s %-*s %-32s %-12s %-10s %s\n", ip, json_str(json_get(p, "name")) ?: "-", ow, owner, path,
	       ago, rx, tx);
}

static int get_status(const struct cli *cli, struct json **out)
{
	long status;

	if (api(cli, "GET", "/localapi/v1/status", NULL, 10, out, &status))
		return EXIT_FAIL;
	if (api_error(*out)) {
		json_free(*out);
		*out = NULL;
		return EXIT_FAIL;
	}
	return 0;
}

/* knitd renews the node key with a third of its lifetime left: a key a
 * week from expiry has not been renewed for long, and that is worth a
 * line of its own. */
static void print_key_expiry(int64_t expiry, time_t now)
{
	char left[32], at[32];
	time_t t = (time_t)expiry;
	struct tm tm;

	if (!expiry)
		return;
	keyexpiry_format_left(expiry - (int64_t)now, left, sizeof(left));
	strftime(at, sizeof(at), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
	if (expiry <= (int64_t)now)
		printf("# Warning: the node key expired at %s: re-authenticate with knit up --authkey-file PATH\n", at);
	else if (keyexpiry_warn(expiry, (int64_t)now))
		printf("# Warning: the node key expires in %s (%s) and has not been renewed: check that knitd "
		       "reaches the coordination server\n", left, at);
	else
		printf("# Key expiry: %s (in %s; knitd renews it before then)\n", at, left);
}

static int cmd_status(const struct cli *cli, int argc, char **argv)
{
	enum { JSON = OPT_HELP + 1 };
	static const struct option longopts[] = {
		{ "json", optional_argument, NULL, JSON },
		{ "help", no_argument, NULL, OPT_HELP },
		{ NULL, 0, NULL, 0 },
	};
	struct json *st;
	struct buf b = BUF_INIT(MAX_RESPONSE);
	bool as_json = false;
	const char *state, *health;
	int c, ret = EXIT_OK;

	opts_begin();
	while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
		case OPT_HELP:
			fputs(usage_status, stdout);
			return EXIT_OK;
		case JSON:
			/* --json, --json=true or --json=false, as Go's flags read. */
			if (optarg && strcmp(optarg, "true") && strcmp(optarg, "false"))
				return usage_error(usage_status, "knit status: --json=%s: want true or false", optarg);
			as_json = !optarg || strcmp(optarg, "true") == 0;
			break;
		default:
			return bad_flag(usage_status, argv, c);
		}
	}
	if (optind < argc)
		return usage_error(usage_status, "knit status: unexpected argument \"%s\"", argv[optind]);
	if (get_status(cli, &st))
		return EXIT_FAIL;
	if (as_json) {
		if (json_dump(st, &b, JSON_DUMP_PRETTY) == 0)
			printf("%s\n", buf_str(&b));
		buf_free(&b);
		json_free(st);
		return EXIT_OK;
	}
	state = json_str(json_get(st, "backendState")) ?: "";
	health = json_str(json_get(st, "health"));
	if (strcmp(state, "NeedsLogin") == 0) {
		printf("Logged out.\nLog in with: knit up --authkey-file PATH [--login-server URL]\n");
		ret = EXIT_FAIL;
	} else if (strcmp(state, "Stopped") == 0) {
		printf("knit is down. Run knit up to connect.\n");
		ret = EXIT_FAIL;
	} else {
		const struct json *peers = json_get(st, "peers");
		int ow = owner_width(st);

		if (strcmp(state, "Running") != 0)
			printf("# %s\n", state);
		printf("%-18s %-24s %-*s %-32s %-12s %-10s %s\n", "IP", "NAME", ow, "OWNER", "PATH", "HANDSHAKE", "RX",
		       "TX");
		if (json_get(st, "self"))
			print_row(json_get(st, "self"), true, ow);
		for (size_t i = 0; i < json_array_len(peers); i++)
			print_row(json_array_at(peers, i), false, ow);
	}
	if (health)
		printf("# Health: %s\n", health);
	print_key_expiry(json_int(json_get(st, "keyExpiry"), 0), time(NULL));
	json_free(st);
	return ret;
}

static bool family_ok(const char *ip, int want)
{
	uint8_t a[16];

	if (want == 4)
		return inet_pton(AF_INET, ip, a) == 1;
	if (want == 6)
		return inet_pton(AF_INET6, ip, a) == 1;
	return true;
}

/* self, or the peer named by name, DNS name or address. */
static const struct json *find_node(const struct json *st, const char *who)
{
	const struct json *peers = json_get(st, "peers");

	for (size_t i = 0; i <= json_array_len(peers); i++) {
		const struct json *p = i == 0 ? json_get(st, "self") : json_array_at(peers, i - 1);
		const char *dns = json_str(json_get(p, "dnsName"));
		const struct json *addrs = json_get(p, "addresses");

		if (!p)
			continue;
		if (strcmp(json_str(json_get(p, "name")) ?: "", who) == 0 ||
		    (dns && (strcmp(dns, who) == 0 ||
			     (strncmp(dns, who, strlen(who)) == 0 && strcmp(dns + strlen(who), ".") == 0))))
			return p;
		for (size_t k = 0; k < json_array_len(addrs); k++)
			if (strcmp(json_str(json_array_at(addrs, k)) ?: "", who) == 0)
				return p;
	}
	return NULL;
}

static int cmd_ip(const struct cli *cli, int argc, char **argv)
{
	const char *who = NULL;
	const struct json *node, *addrs;
	struct json *st;
	int c, want = 0, printed = 0;

	opts_begin();
	while ((c = getopt_long(argc, argv, ":46h", help_only, NULL)) != -1) {
		switch (c) {
		case 'h':
		case OPT_HELP:
			fputs(usage_ip, stdout);
			return EXIT_OK;
		case '4':
		case '6':
			if (want && want != c - '0')
				return usage_error(usage_ip, "knit ip: -4 or -6, not both");
			want = c - '0';
			break;
		default:
			return bad_flag(usage_ip, argv, c);
		}
	}
	if (argc - optind > 1)
		return usage_error(usage_ip, "knit ip: one PEER at most");
	if (optind < argc)
		who = argv[optind];
	if (get_status(cli, &st))
		return EXIT_FAIL;
	node = who ? find_node(st, who) : json_get(st, "self");
	if (!node) {
		if (who)
			errorf("no peer \"%s\" in this tailnet (knit status lists them)", who);
		else
			errorf("this device has no tailnet address yet: run knit up");
		json_free(st);
		return EXIT_FAIL;
	}
	addrs = json_get(node, "addresses");
	for (size_t i = 0; i < json_array_len(addrs); i++) {
		const char *a = json_str(json_array_at(addrs, i));

		if (a && family_ok(a, want)) {
			printf("%s\n", a);
			printed++;
			if (want)
				break;
		}
	}
	json_free(st);
	if (!printed) {
		errorf("no IPv%d address", want);
		return EXIT_FAIL;
	}
	return EXIT_OK;
}

static int cmd_whois(const struct cli *cli, int argc, char **argv)
{
	struct json *resp;
	const struct json *n;
	char path[128];
	long status;
	uint8_t a[16];
	const char *ip;
	int c, ret;

	opts_begin();
	while ((c = getopt_long(argc, argv, ":h", help_only, NULL)) != -1) {
		if (c != 'h' && c != OPT_HELP)
			return bad_flag(usage_whois, argv, c);
		fputs(usage_whois, stdout);
		return EXIT_OK;
	}
	if (argc - optind != 1)
		return usage_error(usage_whois, "knit whois: want exactly one IP");
	ip = argv[optind];
	if (inet_pton(AF_INET, ip, a) != 1 && inet_pton(AF_INET6, ip, a) != 1)
		return usage_error(usage_whois, "knit whois: \"%s\" is not an IP address", ip);
	snprintf(path, sizeof(path), "/localapi/v1/whois?ip=%s", ip);
	if (api(cli, "GET", path, NULL, 10, &resp, &status))
		return EXIT_FAIL;
	if ((ret = api_error(resp))) {
		json_free(resp);
		return ret;
	}
	n = json_get(resp, "node");
	printf("Device:\n");
	printf("  Name:      %s\n", json_str(json_get(n, "name")) ?: "-");
	if (json_str(json_get(n, "dnsName")))
		printf("  DNS name:  %s\n", json_str(json_get(n, "dnsName")));
	if (json_str(json_get(n, "nodeKey")))
		printf("  Node key:  %s\n", json_str(json_get(n, "nodeKey")));
	printf("  User:      %s\n", json_str(json_get(n, "user")) ?: "-");
	printf("  Addresses:");
	for (size_t i = 0; i < json_array_len(json_get(n, "addresses")); i++)
		printf(" %s", json_str(json_array_at(json_get(n, "addresses"), i)) ?: "");
	printf("\n  Tags:     ");
	if (!json_array_len(json_get(n, "tags")))
		printf(" -");
	for (size_t i = 0; i < json_array_len(json_get(n, "tags")); i++)
		printf(" %s", json_str(json_array_at(json_get(n, "tags"), i)) ?: "");
	printf("\n");
	json_free(resp);
	return EXIT_OK;
}

static int cmd_ping(const struct cli *cli, int argc, char **argv)
{
	enum { TIMEOUT = OPT_HELP + 1, ICMP };
	static const struct option longopts[] = {
		{ "timeout", required_argument, NULL, TIMEOUT },
		{ "icmp", no_argument, NULL, ICMP },
		{ "help", no_argument, NULL, OPT_HELP },
		{ NULL, 0, NULL, 0 },
	};
	const char *peer;
	long count = 10, timeout = 5;
	bool direct = false, icmp = false;
	int c, answered = 0;

	opts_begin();
	while ((c = getopt_long(argc, argv, ":c:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
		case OPT_HELP:
			fputs(usage_ping, stdout);
			return EXIT_OK;
		case 'c':
			if (!parse_positive(optarg, &count))
				return usage_error(usage_ping, "knit ping: -c wants a positive count, not \"%s\"", optarg);
			break;
		case TIMEOUT:
			if (!parse_positive(optarg, &timeout))
				return usage_error(usage_ping, "knit ping: --timeout wants seconds, not \"%s\"", optarg);
			break;
		case ICMP:
			icmp = true;
			break;
		default:
			return bad_flag(usage_ping, argv, c);
		}
	}
	if (optind >= argc)
		return usage_error(usage_ping, "knit ping: which peer? (a name or a tailnet IP)");
	if (argc - optind > 1)
		return usage_error(usage_ping, "knit ping: one PEER only");
	peer = argv[optind];
	for (long n = 0; n < count && !direct; n++) {
		struct json *req = json_new_object(), *resp = NULL;
		const char *code, *ep;
		long status;

		if (n > 0)
			sleep(1);
		if (!req || json_object_set(req, "peer", json_new_string(peer)) ||
		    (icmp && json_object_set(req, "icmp", json_new_bool(true)))) {
			json_free(req);
			errorf("out of memory");
			return EXIT_FAIL;
		}
		if (api(cli, "POST", "/localapi/v1/ping", req, timeout + 5, &resp, &status)) {
			json_free(req);
			return EXIT_FAIL;
		}
		json_free(req);
		code = json_str(json_get(resp, "code")) ?: "";
		if (json_get(resp, "error")) {
			if (strcmp(code, "Timeout") == 0 || strcmp(code, "PingTimeout") == 0) {
				printf("ping to %s timed out\n", peer);
				json_free(resp);
				continue;
			}
			api_error(resp);
			json_free(resp);
			return EXIT_FAIL;
		}
		answered++;
		ep = json_str(json_get(resp, "endpoint"));
		printf("pong from %s (%s) via ", json_str(json_get(resp, "peer")) ?: peer,
		       json_str(json_get(resp, "ip")) ?: "?");
		if (ep)
			printf("%s", ep);
		else
			printf("relay %lld", (long long)json_int(json_get(resp, "relay"), 0));
		printf(" in %.0fms\n", json_double(json_get(resp, "latencyMs"), 0));
		direct = ep != NULL;
		json_free(resp);
	}
	if (!direct) {
		if (answered)
			errorf("no direct path to %s after %ld pings: traffic goes through the relay", peer, count);
		else
			errorf("%s did not answer %ld pings", peer, count);
		return EXIT_FAIL;
	}
	return EXIT_OK;
}

static int cmd_version(const struct cli *cli, int argc, char **argv)
{
	struct json *st = NULL;
	long status;
	int c;

	opts_begin();
	while ((c = getopt_long(argc, argv, ":h", help_only, NULL)) != -1) {
		if (c != 'h' && c != OPT_HELP)
			return bad_flag(usage_version, argv, c);
		fputs(usage_version, stdout);
		return EXIT_OK;
	}
	if (optind < argc)
		return usage_error(usage_version, "knit version: unexpected argument \"%s\"", argv[optind]);
	printf("knit %s\n", KNIT_VERSION);
	/* knitd's, quietly: a stopped daemon is not an error here. */
	quiet = true;
	api(cli, "GET", "/localapi/v1/status", NULL, 5, &st, &status);
	quiet = false;
	if (st && json_str(json_get(st, "version")))
		printf("knitd %s\n", json_str(json_get(st, "version")));
	else
		printf("knitd: not running\n");
	json_free(st);
	return EXIT_OK;
}

/* knit netcheck's relay map: knitd's status, which carries it. */
static struct json *netcheck_status(void *arg)
{
	struct json *st = NULL;
	long status = 0;

	if (api(arg, "GET", "/localapi/v1/status", NULL, 10, &st, &status) || api_error(st)) {
		json_free(st);
		return NULL;
	}
	return st;
}

static int cmd_netcheck(const struct cli *cli, int argc, char **argv)
{
	return netcheck_main(argc, argv, netcheck_status, (void *)cli);
}

static const struct {
	const char *name;
	int (*fn)(const struct cli *cli, int argc, char **argv);
} commands[] = {
	{ "up", cmd_up },	{ "down", cmd_down }, { "status", cmd_status },	  { "ping", cmd_ping },
	{ "ip", cmd_ip },	{ "whois", cmd_whois }, { "logout", cmd_logout }, { "version", cmd_version },
	{ "netcheck", cmd_netcheck },
};

int main(int argc, char **argv)
{
	enum { SOCKET = OPT_HELP + 1, VERSION };
	/* "+": the global flags end at the command's name. */
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, SOCKET },
		{ "version", no_argument, NULL, VERSION },
		{ "help", no_argument, NULL, OPT_HELP },
		{ NULL, 0, NULL, 0 },
	};
	struct cli cli = { .socket = SOCKET_DEFAULT, .prog = argv[0] };
	const char *cmd;
	int c, ret;

	opts_begin();
	while ((c = getopt_long(argc, argv, "+:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
		case OPT_HELP:
			fputs(usage_main, stdout);
			return EXIT_OK;
		case VERSION:
			printf("knit %s\n", KNIT_VERSION);
			return EXIT_OK;
		case SOCKET:
			if (!*optarg)
				return usage_error(usage_main, "knit: --socket needs a path");
			cli.socket = optarg;
			break;
		case ':':
			return usage_error(usage_main, "knit: %s needs a value", argv[optind - 1]);
		default:
			if (optopt >= OPT_FIRST)
				return usage_error(usage_main, "knit: %s takes no value", argv[optind - 1]);
			if (optopt)
				return usage_error(usage_main, "knit: unknown flag \"-%c\"", optopt);
			return usage_error(usage_main, "knit: unknown or ambiguous flag \"%s\"", argv[optind - 1]);
		}
	}
	if (optind >= argc)
		return usage_error(usage_main, "knit: which command?");
	cmd = argv[optind];
	if (strcmp(cmd, "help") == 0) {
		fputs(usage_main, stdout);
		return EXIT_OK;
	}
	/* Offline: no knitd, no socket. */
	if (strcmp(cmd, "policy") == 0) {
		if (optind + 1 < argc && strcmp(argv[optind + 1], "check") == 0)
			return policy_check_main(argc - optind - 1, argv + optind + 1);
		if (optind + 1 < argc && (!strcmp(argv[optind + 1], "--help") || !strcmp(argv[optind + 1], "-h"))) {
			fputs(policy_check_usage, stdout);
			return EXIT_OK;
		}
		return usage_error(policy_check_usage, "knit policy: which subcommand? (check)");
	}
	for (size_t k = 0; k < sizeof(commands) / sizeof(commands[0]); k++) {
		if (strcmp(cmd, commands[k].name) == 0) {
			if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
				errorf("cannot initialise libcurl");
				return EXIT_FAIL;
			}
			ret = commands[k].fn(&cli, argc - optind, argv + optind);
			curl_global_cleanup();
			return ret;
		}
	}
	return usage_error(usage_main, "knit: unknown command \"%s\"", cmd);
}
