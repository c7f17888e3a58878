/* knit policy check: the CI gate for policy changes. Everything happens
 * here, offline, with lib/policy: parse (errors as FILE:line:column),
 * compile for the devices `kubectl get devices -o json` printed, run the
 * policy's tests. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "json.h"
#include "policy/policy.h"
#include "policy_check.h"

#define DEVICES_MAX_BYTES ((size_t)256 << 20)

const char policy_check_usage[] =
	"usage: knit policy check FILE [--devices DEVICES.json]\n"
	"\n"
	"Checks a tailnet policy file (the Tailscale policy format, huJSON) without\n"
	"talking to knitd or the cluster:\n"
	"  - parses it; an error is printed as FILE:LINE:COLUMN: message;\n"
	"  - with --devices, compiles each device's packet filter, visible peers and\n"
	"    approved routes; DEVICES.json is what `kubectl get devices -o json`\n"
	"    prints (a List of Device objects, or one Device);\n"
	"  - runs the policy's \"tests\"; with --devices an IP address in a test\n"
	"    stands for the device that has it.\n"
	"\n"
	"Exit status: 0 when the file is valid and every test holds, 1 otherwise\n"
	"(each problem on stderr), 2 for a usage error.\n";

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("knit policy check: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\n\n", stderr);
	fputs(policy_check_usage, stderr);
	return 2;
}

/* The whole file into out (capped); -errno. */
static int file_read(const char *path, struct buf *out)
{
	FILE *f = fopen(path, "rb");
	char chunk[65536];
	size_t n;
	int ret = 0;

	if (!f)
		return -errno;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		ret = buf_add(out, chunk, n);
		if (ret)
			break;
	}
	if (!ret && ferror(f))
		ret = -EIO;
	fclose(f);
	return ret;
}

/* One Device object into the net. Strings stay in the JSON tree. */
static int device_add(struct policy_net *net, const struct json *item, size_t i,
		      const char *path)
{
	const struct json *spec = json_get(item, "spec"), *status = json_get(item, "status");
	const struct json *addrs = json_get(status, "addresses"), *tags = json_get(spec, "tags");
	const struct json *routes = json_get(spec, "advertisedRoutes");
	const struct json *pod = json_get(spec, "ownerPod");
	const char *name = json_str(json_path(item, "metadata", "name", NULL));
	const char *tagv[32];
	struct policy_prefix rv[256];
	struct policy_device d = { .name = name, .user = json_str(json_get(spec, "user")) };
	int ret;

	if (!name) {
		fprintf(stderr, "%s: items[%zu]: metadata.name is missing\n", path, i);
		return -EINVAL;
	}
	if (json_array_len(addrs) > POLICY_MAX_ADDRS || json_array_len(tags) > 32 ||
	    json_array_len(routes) > 256) {
		fprintf(stderr, "%s: device %s: too many addresses, tags or routes\n", path, name);
		return -EINVAL;
	}
	for (size_t k = 0; k < json_array_len(addrs); k++) {
		const char *a = json_str(json_array_at(addrs, k));

		if (!policy_prefix_parse(a, &d.addrs[k]) ||
		    d.addrs[k].bits != (d.addrs[k].family == 4 ? 32 : 128)) {
			fprintf(stderr, "%s: device %s: status.addresses[%zu] is not an address\n",
				path, name, k);
			return -EINVAL;
		}
		d.n_addrs++;
	}
	for (size_t k = 0; k < json_array_len(tags); k++) {
		tagv[k] = json_str(json_array_at(tags, k));
		if (!tagv[k]) {
			fprintf(stderr, "%s: device %s: spec.tags[%zu] is not a string\n", path, name,
				k);
			return -EINVAL;
		}
	}
	d.tags = tagv;
	d.n_tags = json_array_len(tags);
	for (size_t k = 0; k < json_array_len(routes); k++) {
		if (!policy_prefix_parse(json_str(json_array_at(routes, k)), &rv[k])) {
			fprintf(stderr, "%s: device %s: spec.advertisedRoutes[%zu] is not a CIDR\n",
				path, name, k);
			return -EINVAL;
		}
	}
	d.routes = rv;
	d.n_routes = json_array_len(routes);
	if (pod) {
		d.pod = true;
		d.pod_namespace = json_str(json_get(pod, "namespace"));
		d.pod_serviceaccount = json_str(json_get(pod, "serviceAccount"));
	}
	ret = policy_net_add(net, &d, NULL);
	if (ret == -EEXIST)
		fprintf(stderr, "%s: device %s appears twice\n", path, name);
	else if (ret)
		fprintf(stderr, "%s: device %s: %s\n", path, name, strerror(-ret));
	return ret;
}

/* Every device's filter, peers and routes compile. */
static int compile_all(struct policy_net *net, const struct json *items, const char *path)
{
	size_t rules = 0, peers = 0;

	for (size_t i = 0; i < json_array_len(items); i++) {
		const char *name = json_str(json_path(json_array_at(items, i), "metadata", "name", NULL));
		struct policy_filter f;
		struct policy_names n;
		struct policy_routes r;

		if (policy_net_filter(net, name, &f) || policy_net_peers(net, name, &n) ||
		    policy_net_routes(net, name, &r)) {
			fprintf(stderr, "%s: device %s: out of memory\n", path, name);
			return -ENOMEM;
		}
		rules += f.n_rules;
		peers += n.len;
		policy_filter_free(&f);
		policy_names_free(&n);
		policy_routes_free(&r);
	}
	printf("compiled for %zu devices: %zu filter rules, %zu visible-peer pairs\n",
	       policy_net_len(net), rules, peers);
	return 0;
}

static struct policy_net *devices_load(const struct policy *p, const char *path)
{
	struct buf b = BUF_INIT(DEVICES_MAX_BYTES);
	struct json_error jerr;
	struct json *doc = NULL;
	const struct json *items;
	struct policy_net *net = NULL;
	int ret = file_read(path, &b);

	if (ret) {
		fprintf(stderr, "%s: %s\n", path, strerror(-ret));
		goto out;
	}
	doc = json_parse((const char *)b.data, b.len, &jerr);
	if (!doc) {
		fprintf(stderr, "%s:%zu:%zu: %s\n", path, jerr.line, jerr.column, jerr.msg);
		goto out;
	}
	items = json_get(doc, "items");
	if (!json_is_array(items) && json_str(json_get(doc, "kind")) &&
	    !strcmp(json_str(json_get(doc, "kind")), "Device"))
		items = NULL;
	else if (!json_is_array(items)) {
		fprintf(stderr, "%s: not a List of Devices (no \"items\")\n", path);
		goto out;
	}
	net = policy_net_new(p);
	if (!net) {
		fprintf(stderr, "%s: out of memory\n", path);
		goto out;
	}
	if (!items) {
		ret = device_add(net, doc, 0, path);
	} else {
		for (size_t i = 0; i < json_array_len(items) && !ret; i++)
			ret = device_add(net, json_array_at(items, i), i, path);
	}
	if (!ret && items)
		ret = compile_all(net, items, path);
	if (ret) {
		policy_net_free(net);
		net = NULL;
	}
out:
	json_free(doc);
	buf_free(&b);
	return net;
}

int policy_check_main(int argc, char **argv)
{
	const char *file = NULL, *devices = NULL;
	struct buf text = BUF_INIT(POLICY_MAX_BYTES);
	struct policy *p = NULL;
	struct policy_net *net = NULL;
	struct json_error err;
	int ret = 1, r;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			fputs(policy_check_usage, stdout);
			return 0;
		} else if (!strncmp(a, "--devices=", 10)) {
			devices = a + 10;
		} else if (!strcmp(a, "--devices")) {
			if (i + 1 >= argc)
				return usage_error("%s needs a file", a);
			devices = argv[++i];
		} else if (a[0] == '-' && a[1]) {
			return usage_error("unknown flag \"%s\"", a);
		} else if (file) {
			return usage_error("one FILE only (\"%s\" is a second)", a);
		} else {
			file = a;
		}
	}
	if (!file)
		return usage_error("which FILE?");
	r = file_read(file, &text);
	if (r) {
		fprintf(stderr, "%s: %s\n", file,
			r == -ENOSPC ? "larger than a policy may be" : strerror(-r));
		goto out;
	}
	p = policy_parse((const char *)text.data, text.len, &err);
	if (!p) {
		fprintf(stderr, "%s:%zu:%zu: %s\n", file, err.line, err.column, err.msg);
		goto out;
	}
	if (devices) {
		net = devices_load(p, devices);
		if (!net)
			goto out;
	}
	if (!policy_tests_run(p, net, &err)) {
		fprintf(stderr, "%s:%zu:%zu: %s\n", file, err.line, err.column, err.msg);
		goto out;
	}
	printf("%s: valid%s\n", file,
	       policy_has_rules(p) ? "" : " (no acls nor grants: every device may reach every other)");
	ret = 0;
out:
	policy_net_free(net);
	policy_free(p);
	buf_free(&text);
	return ret;
}
