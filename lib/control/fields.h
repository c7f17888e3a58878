/* The control protocol's field syntax, in one place for both ends: what
 * a tag, a hostname, a prefix, a key and an endpoint list are, and the
 * readers and writers of JSON members that apply exactly those rules.
 * netmap.c and calls.c build on it; the coordination server validates
 * what it stores with the same functions, so it can never store (and
 * send) what an agent would refuse.
 *
 * Readers return false and leave "<where><key>: why" in err; an absent
 * or null member is "not sent" (an error only when required). */
#ifndef KNIT_CONTROL_FIELDS_H
#define KNIT_CONTROL_FIELDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "control/messages.h"
#include "json.h"

/* A tag: "tag:" then 1-63 letters, digits and '-', neither first nor last
 * a '-' (the CRDs' pattern ^tag:[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$). */
#define FIELDS_TAG_MAX 67
bool fields_tag_valid(const char *s);
/* A hostname is one DNS label: 1-63 of [a-z0-9-], not starting or ending
 * with '-' (the Device CRD's spec.hostname). */
#define FIELDS_HOSTNAME_MAX 63
bool fields_hostname_valid(const char *s);
/* What a machine calls itself ("My Laptop.local") as a hostname the rule
 * above accepts ("my-laptop-local"): lower case, runs of anything else
 * one '-', at most 40 characters, "device" if nothing is left. */
void fields_hostname_sanitize(const char *in, char *out, size_t outlen);
/* A route or allowed IP: "addr/bits" with the slash (netmap_prefix_parse
 * also takes a bare address as a host prefix). */
bool fields_cidr_parse(struct netmap_prefix *p, const char *s);

/* Caps on what one node may carry. */
#define FIELDS_MAX_ENDPOINTS 64
#define FIELDS_MAX_NAME 253 /* fqdn, device, dns suffix */

bool fields_fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Member readers. where is a prefix such as "peers[2]." ("" at the top). */
bool fields_get_str(const struct json *j, const char *where, const char *key, bool required, size_t max,
		    char **out, char *err, size_t errlen);
bool fields_get_hostname(const struct json *j, const char *where, const char *key, char **out, char *err,
			 size_t errlen);
bool fields_get_tags(const struct json *j, const char *where, const char *key, char ***out, size_t *n,
		     char *err, size_t errlen);
/* cidr: every element needs its "/bits" (fields_cidr_parse). */
bool fields_get_prefixes(const struct json *j, const char *where, const char *key, bool required, bool cidr,
			 struct netmap_prefix **out, size_t *n, char *err, size_t errlen);
bool fields_get_endpoints(const struct json *j, const char *where, struct endpoint **out, size_t *n, char *err,
			  size_t errlen);
/* prefix: "nodekey:", "discokey:" (channel_key_parse). */
bool fields_get_key(const struct json *j, const char *where, const char *key, const char *prefix, bool required,
		    uint8_t out[MESSAGES_KEY_LEN], bool *has, char *err, size_t errlen);
bool fields_get_int(const struct json *j, const char *where, const char *key, int64_t min, int64_t max,
		    int64_t *out, bool *has, char *err, size_t errlen);
/* A relay region id: 0 (none) to INT32_MAX. */
bool fields_get_relay(const struct json *j, const char *where, int *out, bool *has, char *err, size_t errlen);
bool fields_get_bool(const struct json *j, const char *where, const char *key, bool *out, char *err,
		     size_t errlen);
/* An optional member kept as JSON; want is JSON_OBJECT or JSON_ARRAY.
 * *has: the member was sent (null included). */
bool fields_get_opaque(const struct json *j, const char *where, const char *key, enum json_type want,
		       struct json **out, bool *has, char *err, size_t errlen);
/* "type" is want, in an object. */
bool fields_want_type(const struct json *j, const char *want, char *err, size_t errlen);

/* Writers: a new array or string, NULL on ENOMEM. */
struct json *fields_strv_json(char *const *v, size_t n);
struct json *fields_prefixes_json(const struct netmap_prefix *p, size_t n, bool bare);
struct json *fields_endpoints_json(const struct endpoint *e, size_t n);
struct json *fields_key_json(const uint8_t key[MESSAGES_KEY_LEN], const char *prefix);

void fields_strv_free(char **v, size_t n);

#endif
