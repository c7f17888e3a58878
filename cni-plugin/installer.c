#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "cniconf.h"
#include "installer.h"
#include "json.h"
#include "netconf.h"

#define CONF_MAX_BYTES ((size_t)1 << 20)
#define CAP_POD_ANNOTATIONS "io.kubernetes.cri.pod-annotations"

struct json *installer_entry_new(const char *mode, const char *socket)
{
	struct json *e = json_new_object(), *caps = json_new_object();

	if (!e || !caps || json_object_set(e, "type", json_new_string(INSTALLER_PLUGIN_TYPE)) ||
	    json_object_set(caps, CAP_POD_ANNOTATIONS, json_new_bool(true)) || json_object_set(e, "capabilities", caps))
		goto fail;
	caps = NULL;
	if ((mode && json_object_set(e, "mode", json_new_string(mode))) ||
	    (socket && json_object_set(e, "socket", json_new_string(socket))))
		goto fail;
	return e;
fail:
	json_free(caps);
	json_free(e);
	return NULL;
}

static bool is_knit(const struct json *plugin)
{
	const char *t = json_str(json_get(plugin, "type"));

	return t && strcmp(t, INSTALLER_PLUGIN_TYPE) == 0;
}

/* A copy of plugins without knit-cni's entries. */
static struct json *plugins_without_knit(const struct json *plugins, bool *changed)
{
	struct json *out = json_new_array();

	*changed = false;
	for (size_t i = 0; out && i < json_array_len(plugins); i++) {
		if (is_knit(json_array_at(plugins, i))) {
			*changed = true;
			continue;
		}
		if (json_array_append(out, json_clone(json_array_at(plugins, i))))
			return NULL;
	}
	return out;
}

struct json *installer_conflist_insert(const struct json *conf, const struct json *entry, char *why, size_t whylen)
{
	const char *ver = json_str(json_get(conf, "cniVersion"));
	const struct json *plugins = json_get(conf, "plugins");
	struct json *out = NULL, *list = NULL, *single = NULL;
	bool changed;

	if (!json_is_object(conf)) {
		errbuf_printf(why, whylen, "the configuration is not a JSON object");
		return NULL;
	}
	if (!netconf_version_supported(ver)) {
		errbuf_printf(why, whylen,
			      "its cniVersion %.40s cannot chain knit-cni (it speaks 0.3.0 to 1.1.0): "
			      "upgrade the primary CNI's configuration",
			      ver ? ver : "(missing)");
		return NULL;
	}
	if (plugins) {
		if (!json_is_array(plugins) || json_array_len(plugins) == 0) {
			errbuf_printf(why, whylen, "\"plugins\" is not a non-empty array");
			return NULL;
		}
		if (!(out = json_clone(conf)) || !(list = plugins_without_knit(plugins, &changed)) ||
		    json_object_set(out, "plugins", list))
			goto nomem;
	} else {
		/* A single plugin configuration: the list takes its name and
		 * version, the plugin keeps the rest. */
		if (!json_str(json_get(conf, "name")) || !json_str(json_get(conf, "type"))) {
			errbuf_printf(why, whylen, "a single plugin configuration needs \"name\" and \"type\"");
			return NULL;
		}
		if (is_knit(conf)) {
			errbuf_printf(why, whylen, "the primary configuration is knit-cni itself");
			return NULL;
		}
		if (!(out = json_new_object()) || json_object_set(out, "cniVersion", json_new_string(ver)) ||
		    json_object_set(out, "name", json_clone(json_get(conf, "name"))) || !(list = json_new_array()) ||
		    json_object_set(out, "plugins", list) || !(single = json_clone(conf)))
			goto nomem;
		json_object_del(single, "cniVersion");
		json_object_del(single, "name");
		if (json_array_append(list, single))
			goto nomem;
	}
	if (json_array_append(json_get(out, "plugins"), json_clone(entry)))
		goto nomem;
	return out;
nomem:
	errbuf_printf(why, whylen, "out of memory");
	json_free(out);
	return NULL;
}

struct json *installer_conflist_remove(const struct json *conf, bool *changed)
{
	struct json *out = json_clone(conf), *list;

	*changed = false;
	if (!out || !json_is_array(json_get(conf, "plugins")))
		return out;
	if (!(list = plugins_without_knit(json_get(conf, "plugins"), changed)) ||
	    json_object_set(out, "plugins", list)) {
		json_free(out);
		return NULL;
	}
	return out;
}

int installer_primary(const char *dir, char **name)
{
	return cniconf_primary(dir, name);
}

/* Writes data to path through a hidden temporary in the same directory and
 * rename(2), so readers see the old file or the new one. */
static int write_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
	char tmp[4096];
	const char *slash = strrchr(path, '/');
	int fd = -1, ret = 0;
	size_t off = 0;

	if (!slash || snprintf(tmp, sizeof(tmp), "%.*s/.%s.knit-tmp", (int)(slash - path), path, slash + 1) >=
			      (int)sizeof(tmp))
		return -ENAMETOOLONG;
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)) < 0)
		return -errno;
	while (off < len) {
		ssize_t n = write(fd, (const char *)data + off, len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			goto out;
		}
		off += (size_t)n;
	}
	if (fchmod(fd, mode) < 0 || fsync(fd) < 0) {
		ret = -errno;
		goto out;
	}
	if (close(fd) < 0) {
		fd = -1;
		ret = -errno;
		goto out;
	}
	fd = -1;
	if (rename(tmp, path) < 0)
		ret = -errno;
out:
	if (fd >= 0)
		close(fd);
	if (ret)
		unlink(tmp);
	return ret;
}

static struct json *parse_file(const char *path, struct buf *raw, char *why, size_t whylen)
{
	struct json_error je;
	struct json *j;
	int err;

	if ((err = buf_read_file(raw, path))) {
		errbuf_printf(why, whylen, "cannot read %s: %s", path, strerror(-err));
		return NULL;
	}
	if (!(j = json_parse_max(buf_str(raw), raw->len, CONF_MAX_BYTES, &je)))
		errbuf_printf(why, whylen, "%s is not JSON (line %zu, column %zu: %s)", path, je.line, je.column,
			      je.msg);
	return j;
}

static int write_json(const char *path, const struct json *j, char *why, size_t whylen)
{
	struct buf b = BUF_INIT(CONF_MAX_BYTES);
	int err;

	if ((err = json_dump(j, &b, JSON_DUMP_PRETTY)) || (err = buf_add_byte(&b, '\n')) ||
	    (err = write_atomic(path, b.data, b.len, 0644)))
		errbuf_printf(why, whylen, "cannot write %s: %s", path, strerror(-err));
	buf_free(&b);
	return err;
}

static bool has_knit(const struct json *conf)
{
	const struct json *p = json_get(conf, "plugins");

	for (size_t i = 0; i < json_array_len(p); i++)
		if (is_knit(json_array_at(p, i)))
			return true;
	return false;
}

static int copy_binary(const struct installer_opts *o, char *why, size_t whylen)
{
	struct buf b = BUF_INIT((size_t)256 << 20);
	const char *src = o->source ? o->source : "/proc/self/exe";
	char dst[4096];
	int err;

	if (snprintf(dst, sizeof(dst), "%s/%s", o->bin_dir, INSTALLER_PLUGIN_TYPE) >= (int)sizeof(dst)) {
		errbuf_printf(why, whylen, "--bin-dir is too long");
		return -ENAMETOOLONG;
	}
	if ((err = buf_read_file(&b, src)))
		errbuf_printf(why, whylen, "cannot read %s: %s", src, strerror(-err));
	else if ((err = write_atomic(dst, b.data, b.len, 0755)))
		errbuf_printf(why, whylen, "cannot install %s: %s", dst, strerror(-err));
	buf_free(&b);
	return err;
}

int installer_install(const struct installer_opts *o, char *why, size_t whylen)
{
	struct buf raw = BUF_INIT(CONF_MAX_BYTES), cur = BUF_INIT(CONF_MAX_BYTES);
	char path[4096], backup[4200], target[4200];
	struct json *conf = NULL, *entry = NULL, *edited = NULL, *existing = NULL;
	char *name = NULL;
	int err;

	if ((err = copy_binary(o, why, whylen)))
		goto out;
	if ((err = installer_primary(o->conf_dir, &name))) {
		errbuf_printf(why, whylen,
			      err == -ENOENT ? "no CNI configuration in %s: install the cluster's network plugin first"
					     : "cannot read %s: %s",
			      o->conf_dir, strerror(-err));
		goto out;
	}
	snprintf(path, sizeof(path), "%s/%s", o->conf_dir, name);
	snprintf(backup, sizeof(backup), "%s%s", path, INSTALLER_BACKUP_SUFFIX);
	if (!(conf = parse_file(path, &raw, why, whylen))) {
		err = -EINVAL;
		goto out;
	}
	if (!(entry = installer_entry_new(o->mode, o->socket))) {
		err = -ENOMEM;
		errbuf_printf(why, whylen, "out of memory");
		goto out;
	}
	if (!(edited = installer_conflist_insert(conf, entry, why, whylen))) {
		char msg[512];

		snprintf(msg, sizeof(msg), "%s", why);
		errbuf_printf(why, whylen, "%s: %s", path, msg);
		err = -EINVAL;
		goto out;
	}
	/* A single configuration becomes <base>.conflist next to its backup. */
	if (json_get(conf, "plugins")) {
		snprintf(target, sizeof(target), "%s", path);
	} else {
		const char *dot = strrchr(path, '.');

		snprintf(target, sizeof(target), "%.*s.conflist", (int)(dot - path), path);
	}
	/* The first install keeps the original; later ones find our entry
	 * in place and leave the backup alone. */
	if (!has_knit(conf) && access(backup, F_OK) < 0 &&
	    (err = write_atomic(backup, raw.data, raw.len, 0644))) {
		errbuf_printf(why, whylen, "cannot keep the original as %s: %s", backup, strerror(-err));
		goto out;
	}
	existing = access(target, F_OK) == 0 ? parse_file(target, &cur, why, whylen) : NULL;
	if (!existing || !json_equal(existing, edited)) {
		if ((err = write_json(target, edited, why, whylen)))
			goto out;
		fprintf(stderr, "knit-cni: chained knit-cni into %s (original kept as %s)\n", target, backup);
	}
	if (strcmp(target, path) != 0 && unlink(path) < 0) {
		err = -errno;
		errbuf_printf(why, whylen, "cannot remove %s (now %s): %s", path, target, strerror(errno));
		goto out;
	}
	err = 0;
out:
	json_free(existing);
	json_free(edited);
	json_free(entry);
	json_free(conf);
	buf_free(&cur);
	buf_free(&raw);
	free(name);
	return err;
}

static bool has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n > m && strcmp(s + n - m, suffix) == 0;
}

/* Puts <orig>.knit-orig back as <orig>, removing the conflist made from a
 * single configuration. */
static int restore(const char *dir, const char *backup_name, char *why, size_t whylen)
{
	struct buf raw = BUF_INIT(CONF_MAX_BYTES);
	char backup[4200], orig[4200], made[4200];
	size_t n = strlen(backup_name) - strlen(INSTALLER_BACKUP_SUFFIX);
	const char *dot;
	struct json *j = NULL;
	int err = 0;

	snprintf(backup, sizeof(backup), "%s/%s", dir, backup_name);
	snprintf(orig, sizeof(orig), "%s/%.*s", dir, (int)n, backup_name);
	dot = strrchr(orig, '.');
	if (dot && strcmp(dot, ".conflist") != 0) {
		snprintf(made, sizeof(made), "%.*s.conflist", (int)(dot - orig), orig);
		if ((j = parse_file(made, &raw, why, whylen)) && has_knit(j) && unlink(made) < 0) {
			err = -errno;
			errbuf_printf(why, whylen, "cannot remove %s: %s", made, strerror(errno));
			goto out;
		}
	}
	if (rename(backup, orig) < 0) {
		err = -errno;
		errbuf_printf(why, whylen, "cannot restore %s: %s", orig, strerror(errno));
		goto out;
	}
	fprintf(stderr, "knit-cni: restored %s\n", orig);
out:
	json_free(j);
	buf_free(&raw);
	return err;
}

int installer_uninstall(const struct installer_opts *o, char *why, size_t whylen)
{
	DIR *d = opendir(o->conf_dir);
	struct dirent *de;
	int err = 0;

	if (!d) {
		err = -errno;
		errbuf_printf(why, whylen, "cannot read %s: %s", o->conf_dir, strerror(errno));
		return err;
	}
	/* Backups first: renaming while reading a directory may show a
	 * name twice or not at all, so collect, then act. */
	char **names = NULL;
	size_t n = 0;

	while ((de = readdir(d))) {
		char **grown;

		if (de->d_name[0] == '.' || (!has_suffix(de->d_name, INSTALLER_BACKUP_SUFFIX) && !cniconf_is_conf_name(de->d_name)))
			continue;
		if (!(grown = realloc(names, (n + 1) * sizeof(*names))) || !(grown[n] = strdup(de->d_name))) {
			names = grown ? grown : names;
			err = -ENOMEM;
			errbuf_printf(why, whylen, "out of memory");
			goto out;
		}
		names = grown;
		n++;
	}
	for (size_t i = 0; i < n && !err; i++)
		if (has_suffix(names[i], INSTALLER_BACKUP_SUFFIX))
			err = restore(o->conf_dir, names[i], why, whylen);
	/* Then any knit-cni entry left in a configuration without a backup. */
	for (size_t i = 0; i < n && !err; i++) {
		struct buf raw = BUF_INIT(CONF_MAX_BYTES);
		char path[4200];
		struct json *j, *k = NULL;
		bool changed = false;

		if (!cniconf_is_conf_name(names[i]))
			continue;
		snprintf(path, sizeof(path), "%s/%s", o->conf_dir, names[i]);
		if ((j = parse_file(path, &raw, why, whylen)) && (k = installer_conflist_remove(j, &changed)) &&
		    changed && !(err = write_json(path, k, why, whylen)))
			fprintf(stderr, "knit-cni: removed knit-cni from %s\n", path);
		json_free(k);
		json_free(j);
		buf_free(&raw);
	}
	if (!err)
		why[0] = '\0';
out:
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	closedir(d);
	return err;
}
