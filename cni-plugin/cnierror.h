/* CNI error results (SPEC.md, section 5 "Error"): a code, a short msg and
 * details that say what to do. Codes 0-99 are the spec's; knit's own start
 * at 100 and are documented in cni-plugin/README.md. */
#ifndef KNIT_CNI_CNIERROR_H
#define KNIT_CNI_CNIERROR_H

struct buf;

enum {
	CNI_ERR_INCOMPATIBLE_VERSION = 1,
	CNI_ERR_UNSUPPORTED_FIELD = 2,
	CNI_ERR_UNKNOWN_CONTAINER = 3,
	CNI_ERR_INVALID_ENV = 4,
	CNI_ERR_IO = 5,
	CNI_ERR_DECODE = 6,
	CNI_ERR_INVALID_CONFIG = 7,
	CNI_ERR_TRY_AGAIN = 11,
	/* STATUS only (spec 1.1.0). */
	CNI_ERR_NOT_AVAILABLE = 50,
	CNI_ERR_NOT_AVAILABLE_LIMITED = 51,

	KNIT_ERR_KNITD = 100, /* knitd failed or refused the request */
	KNIT_ERR_ANNOTATION = 101, /* a knit.dev/ annotation is malformed */
	KNIT_ERR_TAG_REFUSED = 102, /* the policy's tagOwners refuse a tag */
	KNIT_ERR_POD_REFUSED = 103, /* the operator will not bind an identity to this pod */
	KNIT_ERR_CONFLICT = 104, /* the attachment exists for another pod, or the interface name is taken */
	KNIT_ERR_PROTOCOL = 105, /* knitd's answer made no sense */
	KNIT_ERR_CHECK = 106, /* CHECK: interface, address or route missing */
	KNIT_ERR_NETNS = 107, /* the pod's netns cannot be entered */
	KNIT_ERR_GC = 108, /* GC could not remove every stale identity */
};

struct cnierror {
	int code;
	char msg[128];
	char details[1024];
};

void cnierror_set(struct cnierror *e, int code, const char *msg, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* The error object in cni_version (NULL: the newest), newline-terminated. */
int cnierror_dump(const struct cnierror *e, const char *cni_version, struct buf *out);

#endif
