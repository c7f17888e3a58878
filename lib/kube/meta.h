/* Helpers for Kubernetes object metadata and status conventions: RFC 3339
 * times, Go durations (as CRDs spell them), status.conditions, owner
 * references. Pure functions over lib/json trees. */
#ifndef KNIT_KUBE_META_H
#define KNIT_KUBE_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct json;

/* "2026-11-22T23:50:01Z" (seconds precision, as metav1.Time). */
void kube_time_format(time_t t, char *out, size_t outlen);
/* Parses RFC 3339 with optional fraction and Z or ±hh:mm. */
bool kube_time_parse(const char *s, time_t *out);
/* Go duration: "4320h", "1h30m", "250ms", "0s". Milliseconds; false on
 * anything else (negative durations included). */
bool kube_duration_parse(const char *s, uint64_t *ms);

/* Sets condition `type` in status.conditions (creating the array), with
 * Kubernetes semantics: lastTransitionTime changes only when status does.
 * Returns true if anything changed. -ENOMEM is reported as false with the
 * object unchanged. */
bool kube_condition_set(struct json *status, const char *type, const char *cstatus,
			const char *reason, const char *message, int64_t generation, time_t now);
/* The condition's status ("True", ...) or NULL. */
const char *kube_condition_status(const struct json *obj, const char *type);

/* An ownerReferences entry making obj the controller owner; NULL on ENOMEM. */
struct json *kube_owner_ref(const struct json *owner);
/* True if obj has an ownerReference with this uid. */
bool kube_owned_by(const struct json *obj, const char *uid);

/* metadata.name / namespace / uid / resourceVersion / generation shortcuts. */
const char *kube_name(const struct json *obj);
const char *kube_namespace(const struct json *obj);
const char *kube_uid(const struct json *obj);
int64_t kube_generation(const struct json *obj);
bool kube_deleting(const struct json *obj);
/* "ns/name" or "name" into out; -EINVAL without a (non-empty) name,
 * -ENAMETOOLONG. */
int kube_key(const struct json *obj, char *out, size_t outlen);
/* Splits a key in place: *ns is NULL for cluster-scoped keys. */
void kube_key_split(char *key, char **ns, char **name);

#endif
