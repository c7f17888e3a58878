/* The plugin's side of knitd's local API for pod identities (docs/cni.md
 * has the contract): JSON over HTTP/1.0 on knitd's unix socket, one
 * blocking request per call.
 *
 *   POST   /localapi/v1/identities                      attach (idempotent)
 *   DELETE /localapi/v1/identities/{containerID}/{ifName} detach (404: gone)
 *   GET    /localapi/v1/identities                      list (GC, CHECK)
 *   GET    /localapi/v1/status                          readiness (STATUS)
 *
 * Every call returns 0, or a CNI error code with e filled in: what knitd
 * said, mapped to the spec's codes and knit's (cnierror.h). Calls that may
 * find knitd gone say so through *absent instead of failing, so DEL and GC
 * can succeed without it. */
#ifndef KNIT_CNI_KNITDAPI_H
#define KNIT_CNI_KNITDAPI_H

#include <stdbool.h>
#include <stddef.h>

#include "cnierror.h"

struct json;

#define KNITDAPI_MAX_RESPONSE ((size_t)4 << 20)

struct knitdapi {
	const char *socket;
	long connect_timeout_ms;
};

struct knitdapi_attach_req {
	const char *containerid, *ifname, *netns;
	const char *network; /* the CNI network's name: GC only touches its own */
	const char *pod_namespace, *pod_name, *pod_uid; /* may be NULL */
	const char *const *tags;
	size_t ntags;
	const char *hostname; /* may be NULL */
};

/* An attached identity as knitd describes it. All owned. */
struct knitdapi_identity {
	char *containerid, *ifname, *network;
	char *interface; /* the interface in the pod, = ifName asked */
	char **addresses; /* CIDRs, validated */
	size_t naddresses;
	char **routes; /* CIDRs, validated */
	size_t nroutes;
	char *device_name;
};

void knitdapi_identity_free(struct knitdapi_identity *id);
/* Reads one identity object; false with why on a malformed one. */
bool knitdapi_identity_parse(const struct json *o, struct knitdapi_identity *id, char *why, size_t whylen);

/* *unsure: knitd may have made the identity although the call failed (no
 * answer came, or a 200 that cannot be used): the caller rolls back. */
int knitdapi_attach(const struct knitdapi *api, const struct knitdapi_attach_req *req, long timeout_ms,
		    struct knitdapi_identity *out, bool *unsure, struct cnierror *e);
/* 200 and 404 are success. *absent: knitd's socket is missing or refuses
 * connections (also success). */
int knitdapi_detach(const struct knitdapi *api, const char *containerid, const char *ifname, long timeout_ms,
		    bool *absent, struct cnierror *e);
/* *ids: an array of identities (caller frees each and the array). */
int knitdapi_list(const struct knitdapi *api, long timeout_ms, struct knitdapi_identity **ids, size_t *n,
		  bool *absent, struct cnierror *e);
/* The status object (caller json_free()s). */
int knitdapi_status(const struct knitdapi *api, long timeout_ms, struct json **st, bool *absent,
		    struct cnierror *e);

/* Maps knitd's error answer (HTTP status and body, which may be NULL) to a
 * CNI error; what the operation was, for the message ("attaching ..."). */
int knitdapi_error(long http_status, const struct json *body, const char *what, struct cnierror *e);

#endif
