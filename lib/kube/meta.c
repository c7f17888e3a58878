#include "kube/meta.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

void kube_time_format(time_t t, char *out, size_t outlen)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

bool kube_time_parse(const char *s, time_t *out)
{
	struct tm tm = { 0 };
	const char *p;
	long off = 0;

	if (!s)
		return false;
	p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!p)
		return false;
	if (*p == '.') {
		p++;
		if (*p < '0' || *p > '9')
			return false;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		int hh, mm;
		/* Exactly "hh:mm" (RFC 3339 time-offset): sscanf alone also
		 * takes "1:2", and stepping six bytes then ran past the end. */
		for (int i = 1; i <= 5; i++)
			if (i == 3 ? p[i] != ':' : (p[i] < '0' || p[i] > '9'))
				return false;
		hh = (p[1] - '0') * 10 + (p[2] - '0');
		mm = (p[4] - '0') * 10 + (p[5] - '0');
		if (hh > 23 || mm > 59)
			return false;
		off = (hh * 60L + mm) * 60L * (*p == '+' ? 1 : -1);
		p += 6;
	} else {
		return false;
	}
	if (*p)
		return false;
	*out = timegm(&tm) - off;
	return true;
}

bool kube_duration_parse(const char *s, uint64_t *ms)
{
	static const struct {
		const char *unit;
		double ms;
	} units[] = { { "ns", 1e-6 }, { "us", 1e-3 }, { "ms", 1 }, { "s", 1e3 }, { "m", 60e3 }, { "h", 3600e3 } };
	double total = 0;

	if (!s || !*s)
		return false;
	if (strcmp(s, "0") == 0) {
		*ms = 0;
		return true;
	}
	while (*s) {
		char *end;
		double v;
		size_t best = 0;
		int which = -1;

		if ((*s < '0' || *s > '9') && *s != '.')
			return false;
		v = strtod(s, &end);
		if (end == s)
			return false;
		s = end;
		for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
			size_t n = strlen(units[i].unit);
			/* Longest match: "ms" before "m". */
			if (strncmp(s, units[i].unit, n) == 0 && n > best) {
				best = n;
				which = (int)i;
			}
		}
		if (which < 0)
			return false;
		total += v * units[which].ms;
		s += best;
	}
	if (total > 1e15)
		return false;
	*ms = (uint64_t)total;
	return true;
}

static struct json *find_condition(const struct json *conds, const char *type)
{
	for (size_t i = 0; i < json_array_len(conds); i++) {
		struct json *c = json_array_at(conds, i);
		const char *t = json_str(json_get(c, "type"));
		if (t && strcmp(t, type) == 0)
			return c;
	}
	return NULL;
}

const char *kube_condition_status(const struct json *obj, const char *type)
{
	return json_str(json_get(find_condition(json_path(obj, "status", "conditions", NULL), type), "status"));
}

static bool set_str(struct json *obj, const char *key, const char *v)
{
	const char *cur = json_str(json_get(obj, key));

	if (cur && strcmp(cur, v) == 0)
		return false;
	json_object_set(obj, key, json_new_string(v));
	return true;
}

bool kube_condition_set(struct json *status, const char *type, const char *cstatus,
			const char *reason, const char *message, int64_t generation, time_t now)
{
	struct json *conds = json_get(status, "conditions"), *c;
	char ts[32];
	bool changed = false;

	if (!json_is_array(conds)) {
		conds = json_new_array();
		if (!conds || json_object_set(status, "conditions", conds))
			return false;
		changed = true;
	}
	c = find_condition(conds, type);
	if (!c) {
		c = json_new_object();
		if (!c || json_object_set(c, "type", json_new_string(type)) || json_array_append(conds, c))
			return false;
		changed = true;
	}
	kube_time_format(now, ts, sizeof(ts));
	if (set_str(c, "status", cstatus) || !json_get(c, "lastTransitionTime")) {
		json_object_set(c, "lastTransitionTime", json_new_string(ts));
		changed = true;
	}
	changed |= set_str(c, "reason", reason);
	changed |= set_str(c, "message", message);
	if (json_int(json_get(c, "observedGeneration"), -1) != generation) {
		json_object_set(c, "observedGeneration", json_new_int(generation));
		changed = true;
	}
	return changed;
}

struct json *kube_owner_ref(const struct json *owner)
{
	struct json *ref = json_new_object();

	if (!ref)
		return NULL;
	if (json_object_set(ref, "apiVersion", json_clone(json_get(owner, "apiVersion"))) ||
	    json_object_set(ref, "kind", json_clone(json_get(owner, "kind"))) ||
	    json_object_set(ref, "name", json_new_string(kube_name(owner) ?: "")) ||
	    json_object_set(ref, "uid", json_new_string(kube_uid(owner) ?: "")) ||
	    json_object_set(ref, "controller", json_new_bool(true)) ||
	    json_object_set(ref, "blockOwnerDeletion", json_new_bool(true))) {
		json_free(ref);
		return NULL;
	}
	return ref;
}

bool kube_owned_by(const struct json *obj, const char *uid)
{
	struct json *refs = json_path(obj, "metadata", "ownerReferences", NULL);

	for (size_t i = 0; uid && i < json_array_len(refs); i++) {
		const char *u = json_str(json_get(json_array_at(refs, i), "uid"));
		if (u && strcmp(u, uid) == 0)
			return true;
	}
	return false;
}

const char *kube_name(const struct json *obj)
{
	return json_str(json_path(obj, "metadata", "name", NULL));
}

const char *kube_namespace(const struct json *obj)
{
	return json_str(json_path(obj, "metadata", "namespace", NULL));
}

const char *kube_uid(const struct json *obj)
{
	return json_str(json_path(obj, "metadata", "uid", NULL));
}

int64_t kube_generation(const struct json *obj)
{
	return json_int(json_path(obj, "metadata", "generation", NULL), 0);
}

bool kube_deleting(const struct json *obj)
{
	return json_path(obj, "metadata", "deletionTimestamp", NULL) != NULL;
}

int kube_key(const struct json *obj, char *out, size_t outlen)
{
	const char *name = kube_name(obj), *ns = kube_namespace(obj);
	int n;

	if (!name || !*name)
		return -EINVAL;
	n = ns && *ns ? snprintf(out, outlen, "%s/%s", ns, name) : snprintf(out, outlen, "%s", name);
	return n < 0 || (size_t)n >= outlen ? -ENAMETOOLONG : 0;
}

void kube_key_split(char *key, char **ns, char **name)
{
	char *slash = strchr(key, '/');

	if (slash) {
		*slash = '\0';
		*ns = key;
		*name = slash + 1;
	} else {
		*ns = NULL;
		*name = key;
	}
}
