/* Admission decisions for knit's kinds, as pure functions of an
 * AdmissionReview (admission.k8s.io/v1): what the webhooks served by
 * webhook.c answer.
 *
 * AuthKey (mutating): a device registered with an untagged key belongs to
 * the key's user, and the user is whoever created the key: on CREATE an
 * empty spec.user is filled with request.userInfo.username, so Kubernetes
 * authentication (certificates, tokens, OIDC) is knit's identity. Naming
 * another user is allowed only to cluster administrators (group
 * system:masters), so nobody mints keys that act as someone else; and
 * spec.user never changes after creation (an UPDATE that clears it gets
 * the old value back, one that changes it is refused).
 *
 * Policy (validating): the policy document must parse and its own tests
 * must pass; the check itself is the caller's (lib/policy), given as a
 * callback, and its message (the first failing assertion) is what
 * `kubectl apply` prints. */
#ifndef KNIT_OPERATOR_ADMISSION_H
#define KNIT_OPERATOR_ADMISSION_H

#include <stdbool.h>
#include <stddef.h>

struct json;

struct admission_request {
	const char *uid;
	const char *kind; /* request.kind.kind */
	const char *operation; /* CREATE, UPDATE, DELETE, CONNECT */
	const char *username;
	bool admin; /* in group system:masters */
	const struct json *object, *old_object; /* NULL when absent */
};

/* Points into review (which must outlive out). false with a message for a
 * review that is not an admission.k8s.io/v1 AdmissionReview request. */
bool admission_request_parse(const struct json *review, struct admission_request *out, char *err,
			     size_t errlen);
/* The AdmissionReview answering uid. patch, if not NULL, is a JSON Patch
 * (RFC 6902) document as text. NULL on allocation failure. */
struct json *admission_response(const char *uid, bool allowed, unsigned code, const char *message,
				const char *patch);

/* 0: allowed, *patch set to a JSON Patch to apply (or NULL for none;
 * caller frees). -EPERM: refused, msg says why. -ENOMEM. */
int admission_authkey(const struct admission_request *r, char **patch, char *msg, size_t msglen);

/* Checks a policy document: true if valid and its tests pass, else false
 * with the first problem in err. */
typedef bool (*admission_policy_check_fn)(void *arg, const char *policy, size_t len, char *err,
					  size_t errlen);
/* 0 allowed, -EPERM refused (msg says why). */
int admission_policy(const struct admission_request *r, admission_policy_check_fn check, void *arg,
		     char *msg, size_t msglen);

#endif
