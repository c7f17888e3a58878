#include "state.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "buf.h"
#include "control/channel.h"
#include "json.h"
#include "wg/noise.h"

#define STATE_VERSION 1
#define PRIV_PREFIX "privkey:"

static int errf(char *err, size_t errlen, int ret, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int errf(char *err, size_t errlen, int ret, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	errbuf_vprintf(err, errlen, fmt, ap);
	va_end(ap);
	return ret;
}

static void strv_free(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

int state_new(struct state **out)
{
	struct state *st = calloc(1, sizeof(*st));

	if (!st)
		return -ENOMEM;
	channel_keygen(st->machine_key);
	channel_keygen(st->node_key);
	channel_keygen(st->disco_key);
	*out = st;
	return 0;
}

void state_free(struct state *st)
{
	if (!st)
		return;
	free(st->login_server);
	free(st->hostname);
	strv_free(st->tags, st->ntags);
	free(st->routes);
	register_response_free(&st->device);
	json_free(st->netmap);
	sodium_memzero(st, sizeof(*st));
	free(st);
}

bool state_logged_in(const struct state *st)
{
	return st->device.device != NULL;
}

void state_set_device(struct state *st, struct register_response *r)
{
	register_response_free(&st->device);
	st->device = *r;
	memset(r, 0, sizeof(*r));
}

void state_logout(struct state *st)
{
	register_response_free(&st->device);
	json_free(st->netmap);
	st->netmap = NULL;
	st->key_issued = 0;
	sodium_memzero(st->node_key, sizeof(st->node_key));
	channel_keygen(st->node_key);
}

int state_set_netmap(struct state *st, const struct netmap *nm)
{
	struct json *j = netmap_to_json(nm);

	if (!j)
		return -ENOMEM;
	json_free(st->netmap);
	st->netmap = j;
	return 0;
}

void state_forget_netmap(struct state *st)
{
	json_free(st->netmap);
	st->netmap = NULL;
}

bool state_get_netmap(const struct state *st, struct netmap *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	if (!st->netmap) {
		errf(err, errlen, 0, "no netmap saved");
		return false;
	}
	return netmap_from_json(st->netmap, out, err, errlen);
}

int state_set_prefs(struct state *st, const char *hostname, char *const *tags, size_t ntags,
		    const struct netmap_prefix *routes, size_t nroutes)
{
	char *h = NULL, **t = NULL;
	struct netmap_prefix *r = NULL;

	if (hostname && !(h = strdup(hostname)))
		goto nomem;
	if (ntags && !(t = calloc(ntags, sizeof(*t))))
		goto nomem;
	for (size_t i = 0; i < ntags; i++)
		if (!(t[i] = strdup(tags[i])))
			goto nomem;
	if (nroutes) {
		if (!(r = calloc(nroutes, sizeof(*r))))
			goto nomem;
		memcpy(r, routes, nroutes * sizeof(*r));
	}
	free(st->hostname);
	strv_free(st->tags, st->ntags);
	free(st->routes);
	st->hostname = h;
	st->tags = t;
	st->ntags = ntags;
	st->routes = r;
	st->nroutes = nroutes;
	return 0;
nomem:
	free(h);
	strv_free(t, ntags);
	free(r);
	return -ENOMEM;
}

/* ---- to JSON ------------------------------------------------------------- */

static struct json *key_json(const uint8_t key[32], const char *prefix)
{
	char text[MESSAGES_KEY_TEXT_LEN];
	struct json *j;

	channel_key_format(key, prefix, text, sizeof(text));
	j = json_new_string(text);
	sodium_memzero(text, sizeof(text));
	return j;
}

static struct json *prefs_json(const struct state *st)
{
	struct json *o = json_new_object(), *tags = json_new_array(), *routes = json_new_array();
	char text[64];
	int err = o && tags && routes ? 0 : -ENOMEM;

	for (size_t i = 0; !err && i < st->ntags; i++)
		err = json_array_append(tags, json_new_string(st->tags[i]));
	for (size_t i = 0; !err && i < st->nroutes; i++) {
		if (netmap_prefix_format(&st->routes[i], false, text, sizeof(text)) < 0)
			err = -EINVAL;
		else
			err = json_array_append(routes, json_new_string(text));
	}
	if (st->hostname)
		json_put(o, "hostname", json_new_string(st->hostname), &err);
	json_put(o, "advertiseTags", tags, &err);
	json_put(o, "advertiseRoutes", routes, &err);
	if (err) {
		json_free(o);
		return NULL;
	}
	return o;
}

static struct json *state_json(const struct state *st)
{
	struct json *o = json_new_object();
	int err = o ? 0 : -ENOMEM;

	json_put(o, "version", json_new_int(STATE_VERSION), &err);
	if (st->has_control_key)
		json_put(o, "controlKey", key_json(st->control_key, "ctrlkey:"), &err);
	if (st->has_control_key && st->has_next_control_key)
		json_put(o, "nextControlKey", key_json(st->next_control_key, "ctrlkey:"), &err);
	if (st->login_server)
		json_put(o, "loginServer", json_new_string(st->login_server), &err);
	json_put(o, "prefs", prefs_json(st), &err);
	if (st->device.device)
		json_put(o, "device", register_response_to_json(&st->device), &err);
	if (st->key_issued)
		json_put(o, "keyIssued", json_new_int(st->key_issued), &err);
	if (st->netmap)
		json_put(o, "netmap", json_clone(st->netmap), &err);
	if (err) {
		json_free(o);
		return NULL;
	}
	return o;
}

/* Appends the private keys as the last members of the object in text.
 * They go in by hand, into room reserved first, so that no realloc()
 * leaves a copy of them behind in freed memory. */
static int add_keys(struct buf *text, const struct state *st)
{
	static const char *const names[] = { "machineKey", "nodeKey", "discoKey" };
	const uint8_t *keys[] = { st->machine_key, st->node_key, st->disco_key };
	char key[MESSAGES_KEY_TEXT_LEN];
	size_t room = 3 * (32 + MESSAGES_KEY_TEXT_LEN) + 8;
	int err = 0;

	while (text->len > 0 && text->data[text->len - 1] != '}')
		text->len--;
	if (text->len == 0)
		return -EINVAL;
	text->len--; /* the closing brace */
	while (text->len > 0 && (text->data[text->len - 1] == '\n' || text->data[text->len - 1] == ' '))
		text->len--;
	if (!buf_reserve(text, room, &err))
		return err;
	for (size_t i = 0; !err && i < 3; i++) {
		channel_key_format(keys[i], PRIV_PREFIX, key, sizeof(key));
		err = buf_addf(text, ",\n  \"%s\": \"%s\"", names[i], key);
	}
	if (!err)
		err = buf_add_str(text, "\n}\n");
	sodium_memzero(key, sizeof(key));
	return err;
}

/* ---- saving ------------------------------------------------------------------ */

/* mkdir -p with 0700 for what it creates. */
static int make_dirs(char *dir)
{
	struct stat sb;
	char *slash;
	int err;

	if (stat(dir, &sb) == 0)
		return S_ISDIR(sb.st_mode) ? 0 : -ENOTDIR;
	if (errno != ENOENT)
		return -errno;
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		err = make_dirs(dir);
		*slash = '/';
		if (err)
			return err;
	}
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static int write_all(int fd, const uint8_t *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* path.prev becomes a second name of the file at path (the last good
 * write) before the new file is renamed over path: at every moment one of
 * them is a whole file that parsed when we wrote it. Nothing at path: the
 * .prev there stays (after a fallback, it is the one that loaded). */
static int keep_previous(const char *path)
{
	char *prev = NULL;
	int ret = 0;

	if (asprintf(&prev, "%s" STATE_PREV_SUFFIX, path) < 0)
		return -ENOMEM;
	if (access(path, F_OK) != 0)
		goto out;
	if (unlink(prev) < 0 && errno != ENOENT) {
		ret = -errno;
		goto out;
	}
	if (link(path, prev) < 0)
		ret = -errno;
out:
	free(prev);
	return ret;
}

int state_save(const struct state *st, const char *path, char *err, size_t errlen)
{
	struct buf text = BUF_INIT(STATE_MAX_BYTES);
	struct json *j = NULL;
	char *dir = NULL, *tmp = NULL, *slash;
	int fd = -1, dfd = -1, ret;

	dir = strdup(path);
	if (!dir || asprintf(&tmp, "%s.tmp-XXXXXX", path) < 0) {
		tmp = NULL;
		ret = errf(err, errlen, -ENOMEM, "out of memory");
		goto out;
	}
	slash = strrchr(dir, '/');
	if (slash == dir)
		dir[1] = '\0';
	else if (slash)
		*slash = '\0';
	else
		strcpy(dir, ".");
	if ((ret = make_dirs(dir))) {
		errf(err, errlen, ret, "cannot create the state directory %s: %s", dir, strerror(-ret));
		goto out;
	}
	j = state_json(st);
	if (!j || (ret = json_dump(j, &text, JSON_DUMP_PRETTY)) || (ret = add_keys(&text, st))) {
		ret = errf(err, errlen, j ? ret : -ENOMEM, "cannot encode the state: %s",
			   strerror(j ? -ret : ENOMEM));
		goto out;
	}
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		ret = errf(err, errlen, -errno, "cannot create %s: %s", tmp, strerror(errno));
		goto out;
	}
	if (fchmod(fd, 0600) < 0 || (ret = write_all(fd, text.data, text.len)) || fsync(fd) < 0) {
		ret = ret ? ret : -errno;
		errf(err, errlen, ret, "cannot write %s: %s", tmp, strerror(-ret));
		goto out;
	}
	if (close(fd) < 0) {
		fd = -1;
		ret = errf(err, errlen, -errno, "cannot write %s: %s", tmp, strerror(errno));
		goto out;
	}
	fd = -1;
	if ((ret = keep_previous(path))) {
		errf(err, errlen, ret, "cannot keep the previous state as %s" STATE_PREV_SUFFIX ": %s", path, strerror(-ret));
		goto out;
	}
	if (rename(tmp, path) < 0) {
		ret = errf(err, errlen, -errno, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
		goto out;
	}
	free(tmp);
	tmp = NULL;
	/* The rename itself must reach the disk. */
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || fsync(dfd) < 0) {
		ret = errf(err, errlen, -errno, "cannot sync the directory %s: %s", dir, strerror(errno));
		goto out;
	}
	ret = 0;
out:
	if (fd >= 0)
		close(fd);
	if (dfd >= 0)
		close(dfd);
	if (tmp) {
		unlink(tmp);
		free(tmp);
	}
	json_free(j);
	buf_free_secure(&text);
	free(dir);
	return ret;
}

/* ---- loading ------------------------------------------------------------------ */

static bool get_priv(const struct json *j, const char *key, uint8_t out[32], char *err, size_t errlen)
{
	const struct json *v = json_get(j, key);
	uint8_t pub[32];

	if (!v) {
		errf(err, errlen, 0, "%s: missing", key);
		return false;
	}
	if (!channel_key_parse(json_str(v), PRIV_PREFIX, out)) {
		errf(err, errlen, 0, "%s: want \"" PRIV_PREFIX "\" and 64 hex digits", key);
		return false;
	}
	if (!noise_public_from_private(pub, out)) {
		errf(err, errlen, 0, "%s: all zero", key);
		return false;
	}
	return true;
}

static bool get_prefs(const struct json *j, struct state *st, char *err, size_t errlen)
{
	const struct json *p = json_get(j, "prefs"), *v;
	size_t n;

	if (!p || json_is_null(p))
		return true;
	if (!json_is_object(p)) {
		errf(err, errlen, 0, "prefs: want an object, got %s", json_type_name(json_type(p)));
		return false;
	}
	v = json_get(p, "hostname");
	if (v && !json_is_null(v)) {
		if (!json_str(v)) {
			errf(err, errlen, 0, "prefs.hostname: want a string");
			return false;
		}
		if (!(st->hostname = strdup(json_str(v))))
			goto nomem;
	}
	v = json_get(p, "advertiseTags");
	if (v && !json_is_array(v)) {
		errf(err, errlen, 0, "prefs.advertiseTags: want an array");
		return false;
	}
	n = json_array_len(v);
	if (n && !(st->tags = calloc(n, sizeof(*st->tags))))
		goto nomem;
	for (size_t i = 0; i < n; i++) {
		const char *s = json_str(json_array_at(v, i));

		if (!s || strncmp(s, "tag:", 4) || !s[4]) {
			errf(err, errlen, 0, "prefs.advertiseTags[%zu]: want \"tag:<name>\"", i);
			return false;
		}
		if (!(st->tags[i] = strdup(s)))
			goto nomem;
		st->ntags = i + 1;
	}
	v = json_get(p, "advertiseRoutes");
	if (v && !json_is_array(v)) {
		errf(err, errlen, 0, "prefs.advertiseRoutes: want an array");
		return false;
	}
	n = json_array_len(v);
	if (n && !(st->routes = calloc(n, sizeof(*st->routes))))
		goto nomem;
	for (size_t i = 0; i < n; i++) {
		const char *s = json_str(json_array_at(v, i));

		if (!s || !netmap_prefix_parse(&st->routes[i], s)) {
			errf(err, errlen, 0, "prefs.advertiseRoutes[%zu]: want an IP prefix", i);
			return false;
		}
		st->nroutes = i + 1;
	}
	return true;
nomem:
	errf(err, errlen, 0, "out of memory");
	return false;
}

static bool parse_state(const struct json *j, struct state *st, char *err, size_t errlen)
{
	const struct json *v;
	char sub[200];

	if (!json_is_object(j)) {
		errf(err, errlen, 0, "want a JSON object, got %s", json_type_name(json_type(j)));
		return false;
	}
	v = json_get(j, "version");
	if (!v) {
		errf(err, errlen, 0, "version: missing");
		return false;
	}
	if (!json_is_int(v) || json_int(v, 0) != STATE_VERSION) {
		errf(err, errlen, 0, "version: want %d (a newer knitd wrote this file?)", STATE_VERSION);
		return false;
	}
	if (!get_priv(j, "machineKey", st->machine_key, err, errlen) ||
	    !get_priv(j, "nodeKey", st->node_key, err, errlen) ||
	    !get_priv(j, "discoKey", st->disco_key, err, errlen))
		return false;
	v = json_get(j, "controlKey");
	if (v && !json_is_null(v)) {
		if (!channel_key_parse(json_str(v), "ctrlkey:", st->control_key)) {
			errf(err, errlen, 0, "controlKey: want \"ctrlkey:\" and 64 hex digits");
			return false;
		}
		st->has_control_key = true;
	}
	v = json_get(j, "nextControlKey");
	if (v && !json_is_null(v)) {
		if (!channel_key_parse(json_str(v), "ctrlkey:", st->next_control_key)) {
			errf(err, errlen, 0, "nextControlKey: want \"ctrlkey:\" and 64 hex digits");
			return false;
		}
		st->has_next_control_key = true;
	}
	v = json_get(j, "loginServer");
	if (v && !json_is_null(v)) {
		if (!json_str(v)) {
			errf(err, errlen, 0, "loginServer: want a string");
			return false;
		}
		if (!(st->login_server = strdup(json_str(v)))) {
			errf(err, errlen, 0, "out of memory");
			return false;
		}
	}
	if (!get_prefs(j, st, err, errlen))
		return false;
	v = json_get(j, "device");
	if (v && !json_is_null(v) && !register_response_from_json(v, &st->device, sub, sizeof(sub))) {
		errf(err, errlen, 0, "device.%s", sub);
		return false;
	}
	v = json_get(j, "keyIssued");
	if (v && !json_is_null(v)) {
		if (!json_is_int(v) || json_int(v, 0) < 0) {
			errf(err, errlen, 0, "keyIssued: want Unix seconds");
			return false;
		}
		st->key_issued = json_int(v, 0);
	}
	v = json_get(j, "netmap");
	if (v && !json_is_null(v)) {
		struct netmap nm;

		if (!netmap_from_json(v, &nm, sub, sizeof(sub))) {
			errf(err, errlen, 0, "netmap.%s", sub);
			return false;
		}
		netmap_free(&nm);
		if (!(st->netmap = json_clone(v))) {
			errf(err, errlen, 0, "out of memory");
			return false;
		}
	}
	return true;
}

int state_load(const char *path, struct state **out, char *err, size_t errlen)
{
	struct buf text = BUF_INIT(STATE_MAX_BYTES);
	struct stat sb;
	char why[300];
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		ret = -errno;
		if (ret == -ENOENT)
			errf(err, errlen, ret, "%s does not exist", path);
		else
			errf(err, errlen, ret, "cannot open the state file %s: %s", path, strerror(errno));
		goto out;
	}
	if (fstat(fd, &sb) < 0) {
		ret = errf(err, errlen, -errno, "cannot stat %s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(sb.st_mode)) {
		ret = errf(err, errlen, -EINVAL, "%s is not a regular file", path);
		goto out;
	}
	if (sb.st_mode & 0077) {
		ret = errf(err, errlen, -EACCES,
			   "%s is mode %04o but holds private keys: make it private with chmod 600 %s",
			   path, (unsigned)(sb.st_mode & 07777), path);
		goto out;
	}
	if ((size_t)sb.st_size > STATE_MAX_BYTES) {
		ret = errf(err, errlen, -EFBIG, "%s is %lld bytes, more than a state file can be", path,
			   (long long)sb.st_size);
		goto out;
	}
	/* Room for the whole file at once: no realloc() copies of the keys. */
	if (!buf_reserve(&text, (size_t)sb.st_size + 4096 + 1, &ret)) {
		errf(err, errlen, ret, "%s: %s", path, strerror(-ret));
		goto out;
	}
	for (;;) {
		uint8_t *p = buf_reserve(&text, 4096, &ret);
		ssize_t n;

		if (!p) {
			errf(err, errlen, ret, "%s: %s", path, strerror(-ret));
			goto out;
		}
		n = read(fd, p, 4096);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = errf(err, errlen, -errno, "cannot read %s: %s", path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		buf_commit(&text, (size_t)n);
	}
	if ((ret = state_parse((const char *)buf_str(&text), text.len, out, why, sizeof(why))))
		errf(err, errlen, ret, "%s: %s (move it away to start over as a new device)", path, why);
out:
	if (fd >= 0)
		close(fd);
	buf_free_secure(&text);
	return ret;
}

int state_parse(const char *text, size_t len, struct state **out, char *err, size_t errlen)
{
	struct state *st = NULL;
	struct json_error je;
	struct json *j = NULL;
	char why[256];
	int ret;

	if (len > STATE_MAX_BYTES) {
		ret = errf(err, errlen, -EFBIG, "%zu bytes, more than a state file can be", len);
		goto out;
	}
	j = json_parse(text, len, &je);
	if (!j) {
		ret = errf(err, errlen, -EINVAL, "%zu:%zu: not JSON: %s", je.line, je.column, je.msg);
		goto out;
	}
	st = calloc(1, sizeof(*st));
	if (!st) {
		ret = errf(err, errlen, -ENOMEM, "out of memory");
		goto out;
	}
	if (!parse_state(j, st, why, sizeof(why))) {
		ret = errf(err, errlen, -EINVAL, "%s", why);
		goto out;
	}
	*out = st;
	st = NULL;
	ret = 0;
out:
	state_free(st);
	json_free_secret(j);
	return ret;
}

int state_load_recover(const char *path, struct state **out, char *err, size_t errlen, char *note, size_t notelen)
{
	char *prev = NULL, *bad = NULL, perr[512];
	int ret, pret;

	if (notelen)
		note[0] = '\0';
	ret = state_load(path, out, err, errlen);
	if (ret != -EINVAL)
		return ret;
	if (asprintf(&prev, "%s" STATE_PREV_SUFFIX, path) < 0 || asprintf(&bad, "%s" STATE_CORRUPT_SUFFIX, path) < 0) {
		ret = errf(err, errlen, -ENOMEM, "out of memory");
		goto out;
	}
	pret = state_load(prev, out, perr, sizeof(perr));
	if (pret) {
		/* No way back: say so about both files. */
		size_t n = strlen(err);
		if (n + 1 < errlen)
			snprintf(err + n, errlen - n, "; the previous state %s: %s", prev,
				 pret == -ENOENT ? "does not exist" : perr);
		goto out;
	}
	/* The bad file is kept aside for a look, not overwritten: the next
	 * save finds nothing at path and leaves .prev (the good one) alone. */
	if (rename(path, bad) < 0) {
		int e = errno;
		state_free(*out);
		*out = NULL;
		ret = errf(err, errlen, -e, "cannot move the unusable %s aside to %s: %s", path, bad, strerror(e));
		goto out;
	}
	(*out)->recovered = true;
	errbuf_printf(note, notelen, "%s was unusable (%s); moved it to %s and loaded the previous state %s", path, err,
		      bad, prev);
	ret = 0;
out:
	free(prev);
	free(bad);
	return ret;
}

void state_remove(const char *path)
{
	char *p = NULL;

	unlink(path);
	if (asprintf(&p, "%s" STATE_PREV_SUFFIX, path) >= 0) {
		unlink(p);
		free(p);
	}
	if (asprintf(&p, "%s" STATE_CORRUPT_SUFFIX, path) >= 0) {
		unlink(p);
		free(p);
	}
}
