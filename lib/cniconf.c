#include "cniconf.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "json.h"

bool cniconf_is_conf_name(const char *name)
{
	const char *dot = strrchr(name, '.');

	return dot && (strcmp(dot, ".conf") == 0 || strcmp(dot, ".conflist") == 0 || strcmp(dot, ".json") == 0);
}

int cniconf_primary(const char *dir, char **name)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char *best = NULL;
	int ret = 0;

	*name = NULL;
	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.' || !cniconf_is_conf_name(de->d_name) || (best && strcmp(de->d_name, best) >= 0))
			continue;
		free(best);
		if (!(best = strdup(de->d_name))) {
			ret = -ENOMEM;
			break;
		}
	}
	closedir(d);
	if (!ret && !best)
		ret = -ENOENT;
	if (ret)
		free(best);
	else
		*name = best;
	return ret;
}

struct json *cniconf_load(const char *dir, char **name, char *why, size_t whylen)
{
	struct buf raw = BUF_INIT(CNICONF_MAX_BYTES);
	struct json_error je;
	struct json *j = NULL;
	char *file = NULL, path[4096];
	int err;

	if (name)
		*name = NULL;
	if ((err = cniconf_primary(dir, &file))) {
		snprintf(why, whylen, err == -ENOENT ? "no CNI configuration in %s" : "cannot read %s: %s", dir,
			 strerror(-err));
		goto out;
	}
	if (snprintf(path, sizeof(path), "%s/%s", dir, file) >= (int)sizeof(path)) {
		snprintf(why, whylen, "path too long: %s/%s", dir, file);
		goto out;
	}
	if ((err = buf_read_file(&raw, path))) {
		snprintf(why, whylen, "cannot read %s: %s", path, strerror(-err));
		goto out;
	}
	if (!(j = json_parse_max(buf_str(&raw), raw.len, CNICONF_MAX_BYTES, &je)))
		snprintf(why, whylen, "%s is not JSON (line %zu, column %zu: %s)", path, je.line, je.column, je.msg);
out:
	if (j && name) {
		*name = file;
		file = NULL;
	}
	free(file);
	buf_free(&raw);
	return j;
}

static bool is_knit(const struct json *plugin)
{
	const char *t = json_str(json_get(plugin, "type"));

	return t && strcmp(t, CNICONF_PLUGIN_TYPE) == 0;
}

/* Appends subnet s unless it is there; -EINVAL/-ENOSPC with why. */
static int add_range(const struct json *s, struct netmap_prefix *out, size_t max, size_t *n, char *why, size_t whylen)
{
	struct netmap_prefix p;
	const char *str = json_str(s);

	if (!str || !netmap_prefix_parse(&p, str)) {
		snprintf(why, whylen, "host-local subnet %s%s%s is not a CIDR", str ? "\"" : "", str ? str : "(not a string)",
			 str ? "\"" : "");
		return -EINVAL;
	}
	for (size_t i = 0; i < *n; i++)
		if (out[i].family == p.family && out[i].bits == p.bits && !memcmp(out[i].addr, p.addr, 16))
			return 0;
	if (*n >= max) {
		snprintf(why, whylen, "more than %zu host-local ranges", max);
		return -EINVAL;
	}
	out[(*n)++] = p;
	return 0;
}

/* The subnets of one plugin's host-local IPAM, if it has one. */
static int ipam_ranges(const struct json *plugin, struct netmap_prefix *out, size_t max, size_t *n, char *why,
		       size_t whylen)
{
	const struct json *ipam = json_get(plugin, "ipam"), *ranges = json_get(ipam, "ranges");
	const char *type = json_str(json_get(ipam, "type"));
	int err;

	if (!type || strcmp(type, "host-local") != 0)
		return 0;
	if (json_get(ipam, "subnet") && (err = add_range(json_get(ipam, "subnet"), out, max, n, why, whylen)))
		return err;
	for (size_t i = 0; i < json_array_len(ranges); i++) {
		const struct json *set = json_array_at(ranges, i);
		for (size_t k = 0; k < json_array_len(set); k++)
			if ((err = add_range(json_get(json_array_at(set, k), "subnet"), out, max, n, why, whylen)))
				return err;
	}
	return 0;
}

int cniconf_gateway_ranges(const struct json *conf, struct netmap_prefix *out, size_t max, size_t *n, char *why,
			   size_t whylen)
{
	const struct json *plugins = json_get(conf, "plugins"), *entry = NULL;
	const char *mode;
	int err;

	*n = 0;
	for (size_t i = 0; i < json_array_len(plugins); i++)
		if (is_knit(json_array_at(plugins, i)))
			entry = json_array_at(plugins, i);
	if (!entry)
		return -ENOENT;
	mode = json_get(entry, "mode") ? json_str(json_get(entry, "mode")) : "identity";
	if (!mode || (strcmp(mode, "identity") && strcmp(mode, "gateway") && strcmp(mode, "identity+gateway"))) {
		snprintf(why, whylen, "knit-cni's \"mode\" must be \"identity\", \"gateway\" or \"identity+gateway\"");
		return -EINVAL;
	}
	if (!strcmp(mode, "identity"))
		return 0;
	for (size_t i = 0; i < json_array_len(plugins); i++) {
		const struct json *p = json_array_at(plugins, i);
		if (!is_knit(p) && (err = ipam_ranges(p, out, max, n, why, whylen))) {
			*n = 0;
			return err;
		}
	}
	if (*n == 0) {
		snprintf(why, whylen, "gateway mode, but no plugin of the chain has a host-local IPAM range: "
				      "advertise the pod ranges with knit up --advertise-routes");
		return -EINVAL;
	}
	return 1;
}
