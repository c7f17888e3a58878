/* Where the Kubernetes API is and how to authenticate to it: from the
 * in-cluster service-account files or from a kubeconfig.
 *
 * Loading order of kube_config_load(path): an explicit path; else
 * $KUBECONFIG (first file of the list); else in-cluster when
 * KUBERNETES_SERVICE_HOST is set; else ~/.kube/config. */
#ifndef KNIT_KUBE_CONFIG_H
#define KNIT_KUBE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

struct kube_config {
	char *server; /* "https://host:port", no trailing slash */
	char *namespace; /* default namespace; "default" when unset */
	/* Bearer token, or a file to (re-)read it from (projected tokens
	 * rotate): token_file wins when both are set. Wiped on free. */
	char *token;
	char *token_file;
	/* Trust: a file or PEM data (both NULL: the system store). */
	char *ca_file;
	char *ca_pem;
	size_t ca_pem_len;
	/* Client certificate: files or PEM data; the key is wiped on free. */
	char *cert_file;
	char *key_file;
	char *cert_pem;
	size_t cert_pem_len;
	char *key_pem;
	size_t key_pem_len;
	bool insecure_skip_verify;
};

/* err gets a precise message (which file, which field) on failure.
 * Returns 0 or a negative errno. */
int kube_config_load(struct kube_config *cfg, const char *path, char *err, size_t errlen);

/* Parses kubeconfig YAML. context NULL selects current-context; base_dir
 * resolves relative file paths (kubeconfig semantics). False with err set
 * on any problem; cfg is then left empty. */
bool kube_config_parse(struct kube_config *cfg, const char *yaml, size_t len, const char *context,
		       const char *base_dir, char *err, size_t errlen);

/* In-cluster: KUBERNETES_SERVICE_HOST/PORT and the service-account files
 * under root (normally /var/run/secrets/kubernetes.io/serviceaccount; a
 * parameter for tests). */
int kube_config_in_cluster(struct kube_config *cfg, const char *root, char *err, size_t errlen);

void kube_config_free(struct kube_config *cfg);

#endif
