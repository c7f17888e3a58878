/* core/v1 Events: what `kubectl describe` and `kubectl get events` show
 * users about knit's objects. Blocking (it uses the blocking kube client),
 * so call it from worker threads, never from the loop thread.
 *
 * - The Event lives in the involved object's namespace, or in "default"
 *   for cluster-scoped objects (the API server accepts nothing else for a
 *   core/v1 Event without eventTime).
 * - Its name is "<object name>.<16 hex digits of the time>", as client-go's
 *   recorder names them.
 * - Repeats (same client, object, type, reason and message) within the
 *   aggregation window bump count and lastTimestamp on the existing Event
 *   with a merge patch instead of creating another, like client-go's
 *   correlator; if that Event is gone (Events expire after an hour) a new
 *   one is created.
 *
 * Thread-safe. Emitting is best-effort: callers usually log and go on. */
#ifndef KNIT_KUBE_EVENT_H
#define KNIT_KUBE_EVENT_H

#include <stdint.h>

struct json;
struct kube_client;

#define KUBE_EVENT_NORMAL "Normal"
#define KUBE_EVENT_WARNING "Warning"
#define KUBE_EVENT_MAX_MESSAGE 1024 /* longer messages are cut at a UTF-8 boundary */

/* source.component and reportingComponent; default "knit-operator". Copied
 * (at most 63 bytes). */
void kube_event_set_component(const char *component);
/* 0 turns aggregation off; default 10 minutes. */
void kube_event_set_aggregation(uint32_t window_ms);

/* obj is the involved object (apiVersion, kind, metadata.name, namespace,
 * uid and resourceVersion are taken from it); type is KUBE_EVENT_NORMAL or
 * KUBE_EVENT_WARNING; reason is CamelCase, as in status conditions.
 * Returns 0; -EINVAL if obj has no kind or name; a negative errno for a
 * transport failure; or for an API refusal -EACCES (401/403), -ENOENT
 * (404: e.g. the namespace is gone), -EINVAL (400/422) or -EIO. */
int kube_event_emit(struct kube_client *c, const struct json *obj, const char *type,
		    const char *reason, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#endif
