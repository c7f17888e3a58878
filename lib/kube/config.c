#include "kube/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "buf.h"
#include "json.h"
#include "yamldoc.h"

#define SA_ROOT "/var/run/secrets/kubernetes.io/serviceaccount"
#define MAX_FILE (4u << 20)

static void free_secret(char *s, size_t n)
{
	if (s) {
		sodium_memzero(s, n);
		free(s);
	}
}

void kube_config_free(struct kube_config *cfg)
{
	free(cfg->server);
	free(cfg->namespace);
	free_secret(cfg->token, cfg->token ? strlen(cfg->token) : 0);
	free(cfg->token_file);
	free(cfg->ca_file);
	free(cfg->ca_pem);
	free(cfg->cert_file);
	free(cfg->key_file);
	free(cfg->cert_pem);
	free_secret(cfg->key_pem, cfg->key_pem_len);
	memset(cfg, 0, sizeof(*cfg));
}

/* Reads a whole (small) file; NULL with errno set on failure. */
static char *read_file(const char *path, size_t *len)
{
	struct buf b = BUF_INIT(MAX_FILE);
	FILE *f = fopen(path, "re");
	char chunk[4096];
	size_t n;
	int err = 0;

	if (!f)
		return NULL;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		if ((err = buf_add(&b, chunk, n)))
			break;
	if (!err && ferror(f))
		err = -EIO;
	fclose(f);
	sodium_memzero(chunk, sizeof(chunk));
	if (err) {
		buf_free_secure(&b);
		errno = -err;
		return NULL;
	}
	return buf_steal(&b, len);
}

/* Base64 (standard alphabet, as kubeconfig's *-data fields use). */
static char *b64_decode(const char *in, size_t *outlen)
{
	size_t n = strlen(in), max = n / 4 * 3 + 3;
	char *out = malloc(max + 1);

	if (!out)
		return NULL;
	if (sodium_base642bin((unsigned char *)out, max, in, n, " \t\r\n", outlen, NULL,
			      sodium_base64_VARIANT_ORIGINAL) != 0) {
		free(out);
		return NULL;
	}
	out[*outlen] = '\0';
	return out;
}

/* Kubeconfig paths are relative to the kubeconfig's own directory. */
static char *resolve(const char *base_dir, const char *p)
{
	char *out;

	if (p[0] == '/' || !base_dir || !*base_dir)
		return strdup(p);
	if (asprintf(&out, "%s/%s", base_dir, p) < 0)
		return NULL;
	return out;
}

/* Finds the entry named name in a kubeconfig list (clusters, users, contexts). */
static struct json *named(const struct json *doc, const char *list, const char *name, const char *field)
{
	struct json *arr = json_get(doc, list);

	for (size_t i = 0; i < json_array_len(arr); i++) {
		struct json *e = json_array_at(arr, i);
		const char *n = json_str(json_get(e, "name"));
		if (n && strcmp(n, name) == 0)
			return json_get(e, field);
	}
	return NULL;
}

/* Sets *file (resolved path) or *pem (decoded data) from a "<x>" / "<x>-data" pair. */
static bool file_or_data(const struct json *obj, const char *key, const char *base_dir, char **file,
			 char **pem, size_t *pem_len, const char *what, char *err, size_t errlen)
{
	char data_key[64];
	const char *path = json_str(json_get(obj, key)), *data;

	snprintf(data_key, sizeof(data_key), "%s-data", key);
	data = json_str(json_get(obj, data_key));
	if (data) {
		*pem = b64_decode(data, pem_len);
		if (!*pem) {
			errbuf_printf(err, errlen, "%s: %s is not valid base64", what, data_key);
			return false;
		}
	} else if (path) {
		*file = resolve(base_dir, path);
		if (!*file) {
			errbuf_printf(err, errlen, "%s: out of memory", what);
			return false;
		}
	}
	return true;
}

bool kube_config_parse(struct kube_config *cfg, const char *yaml, size_t len, const char *context,
		       const char *base_dir, char *err, size_t errlen)
{
	struct json_error jerr;
	struct json *doc = yamldoc_parse(yaml, len, &jerr), *ctx, *cluster, *user;
	const char *cluster_name, *user_name, *server, *ns, *token, *token_file;
	bool ok = false;

	memset(cfg, 0, sizeof(*cfg));
	if (!doc) {
		errbuf_printf(err, errlen, "kubeconfig line %zu column %zu: %s", jerr.line, jerr.column, jerr.msg);
		return false;
	}
	if (!json_is_object(doc)) {
		errbuf_printf(err, errlen, "kubeconfig: not a mapping");
		goto out;
	}
	if (!context)
		context = json_str(json_get(doc, "current-context"));
	if (!context || !*context) {
		errbuf_printf(err, errlen, "kubeconfig: no current-context and none given");
		goto out;
	}
	ctx = named(doc, "contexts", context, "context");
	if (!json_is_object(ctx)) {
		errbuf_printf(err, errlen, "kubeconfig: context \"%s\" not found", context);
		goto out;
	}
	cluster_name = json_str(json_get(ctx, "cluster"));
	user_name = json_str(json_get(ctx, "user"));
	if (!cluster_name) {
		errbuf_printf(err, errlen, "kubeconfig: context \"%s\" names no cluster", context);
		goto out;
	}
	cluster = named(doc, "clusters", cluster_name, "cluster");
	if (!json_is_object(cluster)) {
		errbuf_printf(err, errlen, "kubeconfig: cluster \"%s\" (context \"%s\") not found", cluster_name, context);
		goto out;
	}
	server = json_str(json_get(cluster, "server"));
	if (!server || (strncmp(server, "https://", 8) != 0 && strncmp(server, "http://", 7) != 0)) {
		errbuf_printf(err, errlen, "kubeconfig: cluster \"%s\": server must be an http(s) URL", cluster_name);
		goto out;
	}
	cfg->server = strdup(server);
	if (cfg->server) {
		size_t n = strlen(cfg->server);
		while (n > 0 && cfg->server[n - 1] == '/')
			cfg->server[--n] = '\0';
	}
	cfg->insecure_skip_verify = json_bool(json_get(cluster, "insecure-skip-tls-verify"), false);
	if (!file_or_data(cluster, "certificate-authority", base_dir, &cfg->ca_file, &cfg->ca_pem,
			  &cfg->ca_pem_len, "cluster", err, errlen))
		goto out;

	ns = json_str(json_get(ctx, "namespace"));
	cfg->namespace = strdup(ns && *ns ? ns : "default");

	if (user_name) {
		user = named(doc, "users", user_name, "user");
		if (!json_is_object(user)) {
			errbuf_printf(err, errlen, "kubeconfig: user \"%s\" (context \"%s\") not found", user_name, context);
			goto out;
		}
		if (json_get(user, "exec") || json_get(user, "auth-provider")) {
			errbuf_printf(err, errlen, "kubeconfig: user \"%s\": exec and auth-provider plugins are not supported; use a token or client certificate", user_name);
			goto out;
		}
		token = json_str(json_get(user, "token"));
		token_file = json_str(json_get(user, "tokenFile"));
		if (token && !(cfg->token = strdup(token)))
			goto nomem;
		if (token_file && !(cfg->token_file = resolve(base_dir, token_file)))
			goto nomem;
		if (!file_or_data(user, "client-certificate", base_dir, &cfg->cert_file, &cfg->cert_pem,
				  &cfg->cert_pem_len, "user", err, errlen) ||
		    !file_or_data(user, "client-key", base_dir, &cfg->key_file, &cfg->key_pem,
				  &cfg->key_pem_len, "user", err, errlen))
			goto out;
		if (!!(cfg->cert_file || cfg->cert_pem) != !!(cfg->key_file || cfg->key_pem)) {
			errbuf_printf(err, errlen, "kubeconfig: user \"%s\": client certificate and key must come together", user_name);
			goto out;
		}
	}
	if (!cfg->server || !cfg->namespace)
		goto nomem;
	ok = true;
	goto out;
nomem:
	errbuf_printf(err, errlen, "kubeconfig: out of memory");
out:
	json_free(doc);
	if (!ok)
		kube_config_free(cfg);
	return ok;
}

int kube_config_in_cluster(struct kube_config *cfg, const char *root, char *err, size_t errlen)
{
	const char *host = getenv("KUBERNETES_SERVICE_HOST");
	const char *port = getenv("KUBERNETES_SERVICE_PORT");
	char path[4096];
	size_t len;
	char *ns;

	memset(cfg, 0, sizeof(*cfg));
	if (!root)
		root = SA_ROOT;
	if (!host || !*host || !port || !*port) {
		errbuf_printf(err, errlen, "in-cluster: KUBERNETES_SERVICE_HOST/PORT are not set");
		return -ENOENT;
	}
	/* An IPv6 service address needs brackets in the URL. */
	if (asprintf(&cfg->server, strchr(host, ':') ? "https://[%s]:%s" : "https://%s:%s", host, port) < 0) {
		cfg->server = NULL;
		goto nomem;
	}
	snprintf(path, sizeof(path), "%s/token", root);
	if (access(path, R_OK) != 0) {
		errbuf_printf(err, errlen, "in-cluster: cannot read %s: %s", path, strerror(errno));
		kube_config_free(cfg);
		return -ENOENT;
	}
	if (!(cfg->token_file = strdup(path)))
		goto nomem;
	snprintf(path, sizeof(path), "%s/ca.crt", root);
	if (!(cfg->ca_file = strdup(path)))
		goto nomem;
	snprintf(path, sizeof(path), "%s/namespace", root);
	ns = read_file(path, &len);
	if (ns) {
		while (len > 0 && (ns[len - 1] == '\n' || ns[len - 1] == ' '))
			ns[--len] = '\0';
		cfg->namespace = ns;
	} else if (!(cfg->namespace = strdup("default"))) {
		goto nomem;
	}
	return 0;
nomem:
	errbuf_printf(err, errlen, "in-cluster: out of memory");
	kube_config_free(cfg);
	return -ENOMEM;
}

int kube_config_load(struct kube_config *cfg, const char *path, char *err, size_t errlen)
{
	char *env_copy = NULL, *home_path = NULL, *data, *dir, *slash;
	size_t len;
	bool ok;

	memset(cfg, 0, sizeof(*cfg));
	if (!path) {
		const char *env = getenv("KUBECONFIG");
		if (env && *env) {
			env_copy = strdup(env);
			if (!env_copy)
				return -ENOMEM;
			char *colon = strchr(env_copy, ':');
			if (colon)
				*colon = '\0';
			path = env_copy;
		} else if (getenv("KUBERNETES_SERVICE_HOST")) {
			return kube_config_in_cluster(cfg, NULL, err, errlen);
		} else {
			const char *home = getenv("HOME");
			if (!home || asprintf(&home_path, "%s/.kube/config", home) < 0) {
				errbuf_printf(err, errlen, "no kubeconfig: set --kubeconfig or KUBECONFIG");
				return -ENOENT;
			}
			path = home_path;
		}
	}
	data = read_file(path, &len);
	if (!data) {
		int e = errno;
		errbuf_printf(err, errlen, "cannot read kubeconfig %s: %s", path, strerror(e));
		free(env_copy);
		free(home_path);
		return -e;
	}
	dir = strdup(path);
	if (dir) {
		slash = strrchr(dir, '/');
		if (slash)
			*slash = '\0';
		else
			strcpy(dir, ".");
	}
	ok = dir && kube_config_parse(cfg, data, len, NULL, dir, err, errlen);
	if (!dir)
		errbuf_printf(err, errlen, "out of memory");
	free_secret(data, len);
	free(dir);
	free(env_copy);
	free(home_path);
	return ok ? 0 : -EINVAL;
}
