/* The control protocol's field syntax: see fields.h. */
#include "control/fields.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/channel.h"

bool fields_fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return false;
}

/* ---- syntax ------------------------------------------------------------- */

static bool is_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_alnum(char c)
{
	return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

/* 1-63 characters accepted by ok(), ok or '-' inside, ok at both ends. */
static bool label_valid(const char *s, bool (*ok)(char))
{
	size_t n = s ? strlen(s) : 0;

	if (n == 0 || n > 63 || !ok(s[0]) || !ok(s[n - 1]))
		return false;
	for (size_t i = 1; i + 1 < n; i++)
		if (!ok(s[i]) && s[i] != '-')
			return false;
	return true;
}

bool fields_tag_valid(const char *s)
{
	return s && strncmp(s, "tag:", 4) == 0 && label_valid(s + 4, is_alnum);
}

bool fields_hostname_valid(const char *s)
{
	return label_valid(s, is_lower_alnum);
}

void fields_hostname_sanitize(const char *in, char *out, size_t outlen)
{
	size_t n = 0;

	for (; in && *in && n + 1 < outlen && n < 40; in++) {
		char ch = *in;
		if (ch >= 'A' && ch <= 'Z')
			ch = (char)(ch - 'A' + 'a');
		if (is_lower_alnum(ch))
			out[n++] = ch;
		else if (n > 0 && out[n - 1] != '-')
			out[n++] = '-';
	}
	while (n > 0 && out[n - 1] == '-')
		n--;
	out[n] = '\0';
	if (!n)
		snprintf(out, outlen, "device");
}

bool fields_cidr_parse(struct netmap_prefix *p, const char *s)
{
	if (!s || !strchr(s, '/')) {
		memset(p, 0, sizeof(*p));
		return false;
	}
	return netmap_prefix_parse(p, s);
}

/* ---- readers ------------------------------------------------------------- */

bool fields_get_str(const struct json *j, const char *where, const char *key, bool required, size_t max,
		    char **out, char *err, size_t errlen)
{
	const struct json *v = json_get(j, key);
	const char *s;

	*out = NULL;
	if (!v || json_is_null(v)) {
		if (required)
			return fields_fail(err, errlen, "%s%s: missing", where, key);
		return true;
	}
	s = json_str(v);
	if (!s)
		return fields_fail(err, errlen, "%s%s: want a string without NUL, got %s", where, key,
				   json_type_name(json_type(v)));
	if (max && strlen(s) > max)
		return fields_fail(err, errlen, "%s%s: longer than %zu", where, key, max);
	*out = strdup(s);
	if (!*out)
		return fields_fail(err, errlen, "%s%s: out of memory", where, key);
	return true;
}

bool fields_get_hostname(const struct json *j, const char *where, const char *key, char **out, char *err,
			 size_t errlen)
{
	if (!fields_get_str(j, where, key, false, 0, out, err, errlen))
		return false;
	if (*out && !fields_hostname_valid(*out)) {
		fields_fail(err, errlen, "%s%s: \"%.64s\" is not a DNS label (a-z, 0-9, '-', at most 63)", where,
			    key, *out);
		free(*out);
		*out = NULL;
		return false;
	}
	return true;
}

void fields_strv_free(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* An array member: false on error; true with *len 0 when absent, null or
 * empty, else with *a a zeroed array of *len elements of size. max caps
 * the length (0: none). */
static bool get_array(const struct json *j, const char *where, const char *key, bool required, size_t max,
		      size_t size, const struct json **v, void **a, size_t *len, char *err, size_t errlen)
{
	*v = json_get(j, key);
	*a = NULL;
	*len = 0;
	if (!*v || json_is_null(*v)) {
		if (required)
			return fields_fail(err, errlen, "%s%s: missing", where, key);
		return true;
	}
	if (!json_is_array(*v))
		return fields_fail(err, errlen, "%s%s: want an array, got %s", where, key,
				   json_type_name(json_type(*v)));
	if (max && json_array_len(*v) > max)
		return fields_fail(err, errlen, "%s%s: more than %zu", where, key, max);
	if (json_array_len(*v) == 0)
		return true;
	*a = calloc(json_array_len(*v), size);
	if (!*a)
		return fields_fail(err, errlen, "%s%s: out of memory", where, key);
	*len = json_array_len(*v);
	return true;
}

bool fields_get_tags(const struct json *j, const char *where, const char *key, char ***out, size_t *n,
		     char *err, size_t errlen)
{
	const struct json *v;
	size_t len;
	char **a;

	*out = NULL;
	*n = 0;
	if (!get_array(j, where, key, false, 0, sizeof(*a), &v, (void **)&a, &len, err, errlen))
		return false;
	for (size_t i = 0; i < len; i++) {
		const char *s = json_str(json_array_at(v, i));

		if (!s) {
			fields_strv_free(a, i);
			return fields_fail(err, errlen, "%s%s[%zu]: want a string", where, key, i);
		}
		if (!fields_tag_valid(s)) {
			fields_strv_free(a, i);
			return fields_fail(err, errlen,
					   "%s%s[%zu]: \"%.40s\" is not a tag (tag:<name>, letters, digits, '-')",
					   where, key, i, s);
		}
		a[i] = strdup(s);
		if (!a[i]) {
			fields_strv_free(a, i);
			return fields_fail(err, errlen, "%s%s: out of memory", where, key);
		}
	}
	*out = a;
	*n = len;
	return true;
}

bool fields_get_prefixes(const struct json *j, const char *where, const char *key, bool required, bool cidr,
			 struct netmap_prefix **out, size_t *n, char *err, size_t errlen)
{
	const struct json *v;
	struct netmap_prefix *a;
	size_t len;

	*out = NULL;
	*n = 0;
	if (!get_array(j, where, key, required, 0, sizeof(*a), &v, (void **)&a, &len, err, errlen))
		return false;
	for (size_t i = 0; i < len; i++) {
		const char *s = json_str(json_array_at(v, i));
		bool ok = cidr ? fields_cidr_parse(&a[i], s) : netmap_prefix_parse(&a[i], s);

		if (!ok) {
			free(a);
			if (!s)
				return fields_fail(err, errlen, "%s%s[%zu]: want a string", where, key, i);
			return fields_fail(err, errlen, "%s%s[%zu]: \"%.50s\" is not an IP %s", where, key, i, s,
					   cidr ? "prefix (address/bits)" : "address or prefix");
		}
	}
	*out = a;
	*n = len;
	return true;
}

bool fields_get_endpoints(const struct json *j, const char *where, struct endpoint **out, size_t *n, char *err,
			  size_t errlen)
{
	const struct json *v;
	struct endpoint *a;
	const char *why;
	size_t len;

	*out = NULL;
	*n = 0;
	if (!get_array(j, where, "endpoints", false, FIELDS_MAX_ENDPOINTS, sizeof(*a), &v, (void **)&a, &len, err,
		       errlen))
		return false;
	for (size_t i = 0; i < len; i++) {
		const char *s = json_str(json_array_at(v, i));

		if (!s) {
			free(a);
			return fields_fail(err, errlen, "%sendpoints[%zu]: want a string", where, i);
		}
		if (!endpoint_parse(&a[i], s, &why)) {
			free(a);
			return fields_fail(err, errlen, "%sendpoints[%zu]: \"%.50s\": %s", where, i, s, why);
		}
	}
	*out = a;
	*n = len;
	return true;
}

bool fields_get_key(const struct json *j, const char *where, const char *key, const char *prefix, bool required,
		    uint8_t out[MESSAGES_KEY_LEN], bool *has, char *err, size_t errlen)
{
	const struct json *v = json_get(j, key);

	if (has)
		*has = false;
	if (!v || json_is_null(v)) {
		if (required)
			return fields_fail(err, errlen, "%s%s: missing", where, key);
		return true;
	}
	if (!channel_key_parse(json_str(v), prefix, out))
		return fields_fail(err, errlen, "%s%s: want \"%s\" and 64 hex digits", where, key, prefix);
	if (has)
		*has = true;
	return true;
}

bool fields_get_int(const struct json *j, const char *where, const char *key, int64_t min, int64_t max,
		    int64_t *out, bool *has, char *err, size_t errlen)
{
	const struct json *v = json_get(j, key);

	if (has)
		*has = false;
	if (!v || json_is_null(v))
		return true;
	if (!json_is_int(v) || json_int(v, 0) < min || json_int(v, 0) > max)
		return fields_fail(err, errlen, "%s%s: want an integer from %lld to %lld", where, key,
				   (long long)min, (long long)max);
	*out = json_int(v, 0);
	if (has)
		*has = true;
	return true;
}

bool fields_get_relay(const struct json *j, const char *where, int *out, bool *has, char *err, size_t errlen)
{
	int64_t v = 0;

	if (!fields_get_int(j, where, "relay", 0, INT32_MAX, &v, has, err, errlen))
		return false;
	*out = (int)v;
	return true;
}

bool fields_get_bool(const struct json *j, const char *where, const char *key, bool *out, char *err,
		     size_t errlen)
{
	const struct json *v = json_get(j, key);

	if (!v || json_is_null(v))
		return true;
	if (!json_is_bool(v))
		return fields_fail(err, errlen, "%s%s: want true or false, got %s", where, key,
				   json_type_name(json_type(v)));
	*out = json_bool(v, false);
	return true;
}

bool fields_get_opaque(const struct json *j, const char *where, const char *key, enum json_type want,
		       struct json **out, bool *has, char *err, size_t errlen)
{
	const struct json *v = json_get(j, key);

	*out = NULL;
	*has = false;
	if (!v)
		return true;
	*has = true;
	if (json_is_null(v))
		return true;
	if (json_type(v) != want)
		return fields_fail(err, errlen, "%s%s: want an %s, got %s", where, key, json_type_name(want),
				   json_type_name(json_type(v)));
	*out = json_clone(v);
	if (!*out)
		return fields_fail(err, errlen, "%s%s: out of memory", where, key);
	return true;
}

bool fields_want_type(const struct json *j, const char *want, char *err, size_t errlen)
{
	const char *t;

	if (!json_is_object(j))
		return fields_fail(err, errlen, "want a JSON object, got %s", json_type_name(json_type(j)));
	t = messages_type(j);
	if (!t)
		return fields_fail(err, errlen, "type: missing");
	if (strcmp(t, want) != 0)
		return fields_fail(err, errlen, "type: want \"%s\", got \"%.32s\"", want, t);
	return true;
}

/* ---- writers --------------------------------------------------------------- */

struct json *fields_strv_json(char *const *v, size_t n)
{
	struct json *a = json_new_array();

	for (size_t i = 0; a && i < n; i++) {
		if (json_array_append(a, json_new_string(v[i]))) {
			json_free(a);
			return NULL;
		}
	}
	return a;
}

struct json *fields_prefixes_json(const struct netmap_prefix *p, size_t n, bool bare)
{
	struct json *a = json_new_array();
	char text[INET6_ADDRSTRLEN + 8];

	for (size_t i = 0; a && i < n; i++) {
		if (netmap_prefix_format(&p[i], bare, text, sizeof(text)) < 0 ||
		    json_array_append(a, json_new_string(text))) {
			json_free(a);
			return NULL;
		}
	}
	return a;
}

struct json *fields_endpoints_json(const struct endpoint *e, size_t n)
{
	struct json *a = json_new_array();
	char text[INET6_ADDRSTRLEN + 32];

	for (size_t i = 0; a && i < n; i++) {
		if (endpoint_format(&e[i], text, sizeof(text)) < 0 ||
		    json_array_append(a, json_new_string(text))) {
			json_free(a);
			return NULL;
		}
	}
	return a;
}

struct json *fields_key_json(const uint8_t key[MESSAGES_KEY_LEN], const char *prefix)
{
	char text[MESSAGES_KEY_TEXT_LEN];

	channel_key_format(key, prefix, text, sizeof(text));
	return json_new_string(text);
}
