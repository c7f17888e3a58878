/* The operator's admission webhooks over HTTPS, with TLS it provisions
 * itself: a CA and serving certificate (lib/tlscert) kept in the Secret
 * knit-webhook-tls of the operator's namespace, shared by every replica
 * (the API server's name uniqueness settles a creation race), renewed 30
 * days before expiry, and the CA written into the caBundle of the
 * MutatingWebhookConfiguration and ValidatingWebhookConfiguration named
 * webhook_opts.config. Routes (decisions in admission.c):
 *   POST /mutate/authkeys     AuthKey user from the creator
 *   POST /validate/policies   a Policy must parse and pass its tests
 * If the webhook is unreachable the API server's failurePolicy applies;
 * the operator's reconcilers check everything again regardless. */
#ifndef KNIT_OPERATOR_WEBHOOK_H
#define KNIT_OPERATOR_WEBHOOK_H

#include <stddef.h>

#include "admission.h"

struct operator;
struct webhook;

#define WEBHOOK_SECRET "knit-webhook-tls"

struct webhook_opts {
	const char *listen; /* "0.0.0.0:9444" */
	const char *service; /* the Service in front: names <service>.<ns>.svc[.cluster.local] */
	const char *const *extra_names; /* more DNS names for the certificate (e.g. localhost) */
	size_t nextra;
	const char *config; /* both webhook configurations' name */
	admission_policy_check_fn policy_check; /* NULL: every policy admitted here */
	void *policy_arg;
};

/* Starts provisioning (in a thread of its own) and serves once a
 * certificate is in hand. Loop thread. 0 or a negative errno. */
int webhook_new(struct operator *op, const struct webhook_opts *o, struct webhook **out);
/* Loop thread; NULL is a no-op. */
void webhook_free(struct webhook *w);
/* Serving with a certificate (for /readyz). */
bool webhook_ready(const struct webhook *w);

#endif
