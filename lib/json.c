#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_parse.h>

#include "buf.h"

/* Objects with at least this many members get an open-addressing index. */
#define INDEX_MIN 16
#define NOT_FOUND SIZE_MAX

struct member {
	char *key;
	size_t key_len;
	struct json *val; /* NULL only transiently inside json_merge_patch() */
	size_t key_offset; /* of the key's opening quote, see json_key_offset() */
};

struct json {
	enum json_type type;
	size_t offset; /* of the first byte, see json_offset() */
	union {
		bool b;
		struct {
			double d;
			int64_t i;
			bool is_int;
		} num;
		struct {
			char *s;
			size_t len;
		} str;
		struct {
			struct json **v;
			size_t len, cap;
		} arr;
		struct {
			struct member *m;
			size_t len, cap;
			size_t *index; /* slots hold member index + 1; 0 is empty */
			size_t index_cap; /* power of two, or 0 */
		} obj;
	} u;
};

/* ---- errors ---------------------------------------------------------- */

static void advance_pos(size_t *line, size_t *col, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\n') {
			(*line)++;
			*col = 1;
		} else {
			(*col)++;
		}
	}
}

static void __attribute__((format(printf, 5, 0)))
error_vset(struct json_error *err, size_t line, size_t col, size_t offset, const char *fmt,
	   va_list ap)
{
	if (!err)
		return;
	err->line = line;
	err->column = col;
	err->offset = offset;
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
}

static void __attribute__((format(printf, 5, 6)))
error_set_at(struct json_error *err, size_t line, size_t col, size_t offset, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	error_vset(err, line, col, offset, fmt, ap);
	va_end(ap);
}

void json_error_set(struct json_error *err, const char *text, size_t offset,
		    const char *fmt, ...)
{
	size_t line = 1, col = 1;
	va_list ap;

	if (!err)
		return;
	if (text)
		advance_pos(&line, &col, text, offset);
	va_start(ap, fmt);
	error_vset(err, line, col, offset, fmt, ap);
	va_end(ap);
}

/* ---- nodes ----------------------------------------------------------- */

static struct json *node_new(enum json_type t)
{
	struct json *j = calloc(1, sizeof(*j));

	if (j)
		j->type = t;
	return j;
}

void json_free(struct json *j)
{
	if (!j)
		return;
	switch (j->type) {
	case JSON_STRING:
		free(j->u.str.s);
		break;
	case JSON_ARRAY:
		for (size_t i = 0; i < j->u.arr.len; i++)
			json_free(j->u.arr.v[i]);
		free(j->u.arr.v);
		break;
	case JSON_OBJECT:
		for (size_t i = 0; i < j->u.obj.len; i++) {
			free(j->u.obj.m[i].key);
			json_free(j->u.obj.m[i].val);
		}
		free(j->u.obj.m);
		free(j->u.obj.index);
		break;
	default:
		break;
	}
	free(j);
}

/* json_free, but every string and member name is wiped first. */
void json_free_secret(struct json *j)
{
	if (!j)
		return;
	switch (j->type) {
	case JSON_STRING:
		if (j->u.str.s)
			sodium_memzero(j->u.str.s, j->u.str.len);
		break;
	case JSON_ARRAY:
		for (size_t i = 0; i < j->u.arr.len; i++) {
			json_free_secret(j->u.arr.v[i]);
			j->u.arr.v[i] = NULL;
		}
		break;
	case JSON_OBJECT:
		for (size_t i = 0; i < j->u.obj.len; i++) {
			sodium_memzero(j->u.obj.m[i].key, strlen(j->u.obj.m[i].key));
			json_free_secret(j->u.obj.m[i].val);
			j->u.obj.m[i].val = NULL;
		}
		break;
	default:
		break;
	}
	json_free(j);
}

struct json *json_new_null(void)
{
	return node_new(JSON_NULL);
}

struct json *json_new_bool(bool v)
{
	struct json *j = node_new(JSON_BOOL);

	if (j)
		j->u.b = v;
	return j;
}

struct json *json_new_int(int64_t v)
{
	struct json *j = node_new(JSON_NUMBER);

	if (j) {
		j->u.num.i = v;
		j->u.num.d = (double)v;
		j->u.num.is_int = true;
	}
	return j;
}

struct json *json_new_double(double v)
{
	struct json *j = node_new(JSON_NUMBER);

	if (!j)
		return NULL;
	j->u.num.d = v;
	/* 2^63 itself does not fit, hence < rather than <=. No libm: libknit
	 * does not link it. */
	if (v >= -9223372036854775808.0 && v < 9223372036854775808.0 &&
	    (double)(int64_t)v == v && !(v == 0 && signbit(v))) {
		j->u.num.i = (int64_t)v;
		j->u.num.is_int = true;
	}
	return j;
}

struct json *json_new_stringn(const char *s, size_t len)
{
	struct json *j;
	char *p;

	if (len == SIZE_MAX)
		return NULL;
	p = malloc(len + 1);
	if (!p)
		return NULL;
	j = node_new(JSON_STRING);
	if (!j) {
		free(p);
		return NULL;
	}
	if (len)
		memcpy(p, s, len);
	p[len] = '\0';
	j->u.str.s = p;
	j->u.str.len = len;
	return j;
}

struct json *json_new_string(const char *s)
{
	return json_new_stringn(s, strlen(s));
}

struct json *json_new_array(void)
{
	return node_new(JSON_ARRAY);
}

struct json *json_new_object(void)
{
	return node_new(JSON_OBJECT);
}

/* ---- type checks and accessors --------------------------------------- */

enum json_type json_type(const struct json *j)
{
	return j ? j->type : JSON_NULL;
}

const char *json_type_name(enum json_type t)
{
	switch (t) {
	case JSON_NULL:
		return "null";
	case JSON_BOOL:
		return "boolean";
	case JSON_NUMBER:
		return "number";
	case JSON_STRING:
		return "string";
	case JSON_ARRAY:
		return "array";
	case JSON_OBJECT:
		return "object";
	}
	return "unknown";
}

bool json_is_null(const struct json *j)
{
	return j && j->type == JSON_NULL;
}

bool json_is_bool(const struct json *j)
{
	return j && j->type == JSON_BOOL;
}

bool json_is_number(const struct json *j)
{
	return j && j->type == JSON_NUMBER;
}

bool json_is_int(const struct json *j)
{
	return j && j->type == JSON_NUMBER && j->u.num.is_int;
}

bool json_is_string(const struct json *j)
{
	return j && j->type == JSON_STRING;
}

bool json_is_array(const struct json *j)
{
	return j && j->type == JSON_ARRAY;
}

bool json_is_object(const struct json *j)
{
	return j && j->type == JSON_OBJECT;
}

const char *json_str(const struct json *j)
{
	if (!json_is_string(j) || memchr(j->u.str.s, '\0', j->u.str.len))
		return NULL;
	return j->u.str.s;
}

const char *json_strn(const struct json *j, size_t *len)
{
	if (!json_is_string(j)) {
		if (len)
			*len = 0;
		return NULL;
	}
	if (len)
		*len = j->u.str.len;
	return j->u.str.s;
}

size_t json_str_len(const struct json *j)
{
	return json_is_string(j) ? j->u.str.len : 0;
}

int64_t json_int(const struct json *j, int64_t def)
{
	return json_is_int(j) ? j->u.num.i : def;
}

double json_double(const struct json *j, double def)
{
	return json_is_number(j) ? j->u.num.d : def;
}

bool json_bool(const struct json *j, bool def)
{
	return json_is_bool(j) ? j->u.b : def;
}

size_t json_array_len(const struct json *j)
{
	return json_is_array(j) ? j->u.arr.len : 0;
}

struct json *json_array_at(const struct json *j, size_t i)
{
	if (!json_is_array(j) || i >= j->u.arr.len)
		return NULL;
	return j->u.arr.v[i];
}

int json_array_append(struct json *arr, struct json *val)
{
	if (!val)
		return -EINVAL;
	if (!json_is_array(arr)) {
		json_free(val);
		return -EINVAL;
	}
	if (arr->u.arr.len == arr->u.arr.cap) {
		size_t cap = arr->u.arr.cap ? arr->u.arr.cap * 2 : 4;
		struct json **v = reallocarray(arr->u.arr.v, cap, sizeof(*v));

		if (!v) {
			json_free(val);
			return -ENOMEM;
		}
		arr->u.arr.v = v;
		arr->u.arr.cap = cap;
	}
	arr->u.arr.v[arr->u.arr.len++] = val;
	return 0;
}

/* ---- objects --------------------------------------------------------- */

static size_t key_hash(const char *k, size_t len)
{
	uint64_t h = 14695981039346656037ull; /* FNV-1a */

	for (size_t i = 0; i < len; i++) {
		h ^= (uint8_t)k[i];
		h *= 1099511628211ull;
	}
	return (size_t)h;
}

static bool key_eq(const struct member *m, const char *k, size_t len)
{
	return m->key_len == len && memcmp(m->key, k, len) == 0;
}

static void index_put(struct json *o, size_t idx)
{
	size_t mask = o->u.obj.index_cap - 1;
	size_t s = key_hash(o->u.obj.m[idx].key, o->u.obj.m[idx].key_len) & mask;

	while (o->u.obj.index[s])
		s = (s + 1) & mask;
	o->u.obj.index[s] = idx + 1;
}

static int index_rebuild(struct json *o, size_t cap)
{
	size_t *index = calloc(cap, sizeof(*index));

	if (!index)
		return -ENOMEM;
	free(o->u.obj.index);
	o->u.obj.index = index;
	o->u.obj.index_cap = cap;
	for (size_t i = 0; i < o->u.obj.len; i++)
		index_put(o, i);
	return 0;
}

static size_t obj_find(const struct json *o, const char *k, size_t len)
{
	if (o->u.obj.index) {
		size_t mask = o->u.obj.index_cap - 1;
		size_t s = key_hash(k, len) & mask;

		for (; o->u.obj.index[s]; s = (s + 1) & mask) {
			size_t i = o->u.obj.index[s] - 1;

			if (key_eq(&o->u.obj.m[i], k, len))
				return i;
		}
		return NOT_FOUND;
	}
	for (size_t i = 0; i < o->u.obj.len; i++)
		if (key_eq(&o->u.obj.m[i], k, len))
			return i;
	return NOT_FOUND;
}

/* Appends a member whose key is not present yet. Takes ownership of key
 * (malloc'd, NUL-terminated) and val, also on failure. */
static int obj_append(struct json *o, char *key, size_t key_len, struct json *val)
{
	size_t n = o->u.obj.len + 1;

	if (o->u.obj.len == o->u.obj.cap) {
		size_t cap = o->u.obj.cap ? o->u.obj.cap * 2 : 4;
		struct member *m = reallocarray(o->u.obj.m, cap, sizeof(*m));

		if (!m)
			goto nomem;
		o->u.obj.m = m;
		o->u.obj.cap = cap;
	}
	/* Keep the index at most half full. */
	if (n >= INDEX_MIN && n * 2 > o->u.obj.index_cap) {
		size_t cap = o->u.obj.index_cap ? o->u.obj.index_cap * 2 : INDEX_MIN * 4;

		if (index_rebuild(o, cap))
			goto nomem;
	}
	o->u.obj.m[o->u.obj.len] = (struct member){ key, key_len, val, 0 };
	o->u.obj.len++;
	if (o->u.obj.index)
		index_put(o, o->u.obj.len - 1);
	return 0;
nomem:
	free(key);
	json_free(val);
	return -ENOMEM;
}

static char *memdup0(const char *s, size_t len)
{
	char *p;

	if (len == SIZE_MAX)
		return NULL;
	p = malloc(len + 1);
	if (!p)
		return NULL;
	if (len)
		memcpy(p, s, len);
	p[len] = '\0';
	return p;
}

int json_object_setn(struct json *obj, const char *key, size_t key_len, struct json *val)
{
	size_t i;
	char *k;

	if (!val)
		return -EINVAL;
	if (!json_is_object(obj) || !key) {
		json_free(val);
		return -EINVAL;
	}
	i = obj_find(obj, key, key_len);
	if (i != NOT_FOUND) {
		json_free(obj->u.obj.m[i].val);
		obj->u.obj.m[i].val = val;
		return 0;
	}
	k = memdup0(key, key_len);
	if (!k) {
		json_free(val);
		return -ENOMEM;
	}
	return obj_append(obj, k, key_len, val);
}

int json_object_set(struct json *obj, const char *key, struct json *val)
{
	return json_object_setn(obj, key, key ? strlen(key) : 0, val);
}

int json_put(struct json *obj, const char *key, struct json *val, int *err)
{
	if (*err) {
		json_free(val);
		return *err;
	}
	if (!obj || !val) {
		json_free(val);
		*err = -ENOMEM;
		return *err;
	}
	*err = json_object_set(obj, key, val);
	return *err;
}

int json_put_str(struct json *obj, const char *key, const char *s, int *err)
{
	return s ? json_put(obj, key, json_new_string(s), err) : *err;
}

int json_put_int(struct json *obj, const char *key, int64_t v, int *err)
{
	return json_put(obj, key, json_new_int(v), err);
}

int json_put_bool(struct json *obj, const char *key, bool v, int *err)
{
	return json_put(obj, key, json_new_bool(v), err);
}

static void obj_remove(struct json *o, size_t i)
{
	free(o->u.obj.m[i].key);
	json_free(o->u.obj.m[i].val);
	memmove(&o->u.obj.m[i], &o->u.obj.m[i + 1], (o->u.obj.len - i - 1) * sizeof(struct member));
	o->u.obj.len--;
	if (o->u.obj.index) {
		/* Every later member moved down one place: rebuild at the same
		 * size, which cannot fail for want of memory if we reuse it. */
		memset(o->u.obj.index, 0, o->u.obj.index_cap * sizeof(size_t));
		for (size_t k = 0; k < o->u.obj.len; k++)
			index_put(o, k);
	}
}

bool json_object_del(struct json *obj, const char *key)
{
	size_t i;

	if (!json_is_object(obj) || !key)
		return false;
	i = obj_find(obj, key, strlen(key));
	if (i == NOT_FOUND)
		return false;
	obj_remove(obj, i);
	return true;
}

size_t json_object_len(const struct json *j)
{
	return json_is_object(j) ? j->u.obj.len : 0;
}

struct json *json_object_at(const struct json *j, size_t i, const char **key, size_t *key_len)
{
	if (!json_is_object(j) || i >= j->u.obj.len)
		return NULL;
	if (key)
		*key = j->u.obj.m[i].key;
	if (key_len)
		*key_len = j->u.obj.m[i].key_len;
	return j->u.obj.m[i].val;
}

struct json *json_getn(const struct json *obj, const char *key, size_t key_len)
{
	size_t i;

	if (!json_is_object(obj) || !key)
		return NULL;
	i = obj_find(obj, key, key_len);
	return i == NOT_FOUND ? NULL : obj->u.obj.m[i].val;
}

size_t json_offset(const struct json *j)
{
	return j ? j->offset : 0;
}

size_t json_key_offset(const struct json *obj, size_t i)
{
	if (!json_is_object(obj) || i >= obj->u.obj.len)
		return 0;
	return obj->u.obj.m[i].key_offset;
}

struct json *json_get(const struct json *obj, const char *key)
{
	return key ? json_getn(obj, key, strlen(key)) : NULL;
}

struct json *json_path(const struct json *j, ...)
{
	const char *key;
	va_list ap;

	va_start(ap, j);
	while (j && (key = va_arg(ap, const char *)))
		j = json_get(j, key);
	va_end(ap);
	return (struct json *)j;
}

/* ---- clone, equal ---------------------------------------------------- */

struct json *json_clone(const struct json *j)
{
	struct json *c = NULL;

	if (!j)
		return NULL;
	switch (j->type) {
	case JSON_NULL:
		return json_new_null();
	case JSON_BOOL:
		return json_new_bool(j->u.b);
	case JSON_NUMBER:
		c = node_new(JSON_NUMBER);
		if (c)
			c->u.num = j->u.num;
		return c;
	case JSON_STRING:
		return json_new_stringn(j->u.str.s, j->u.str.len);
	case JSON_ARRAY:
		c = json_new_array();
		if (!c)
			return NULL;
		for (size_t i = 0; i < j->u.arr.len; i++) {
			struct json *v = json_clone(j->u.arr.v[i]);

			if (!v || json_array_append(c, v))
				goto fail;
		}
		return c;
	case JSON_OBJECT:
		c = json_new_object();
		if (!c)
			return NULL;
		for (size_t i = 0; i < j->u.obj.len; i++) {
			const struct member *m = &j->u.obj.m[i];
			struct json *v = json_clone(m->val);
			char *k;

			if (!v)
				goto fail;
			k = memdup0(m->key, m->key_len);
			if (!k) {
				json_free(v);
				goto fail;
			}
			if (obj_append(c, k, m->key_len, v))
				goto fail;
		}
		return c;
	}
fail:
	json_free(c);
	return NULL;
}

bool json_equal(const struct json *a, const struct json *b)
{
	if (!a || !b)
		return a == b;
	if (a->type != b->type)
		return false;
	switch (a->type) {
	case JSON_NULL:
		return true;
	case JSON_BOOL:
		return a->u.b == b->u.b;
	case JSON_NUMBER:
		if (a->u.num.is_int && b->u.num.is_int)
			return a->u.num.i == b->u.num.i;
		return a->u.num.d == b->u.num.d || (isnan(a->u.num.d) && isnan(b->u.num.d));
	case JSON_STRING:
		return a->u.str.len == b->u.str.len &&
		       memcmp(a->u.str.s, b->u.str.s, a->u.str.len) == 0;
	case JSON_ARRAY:
		if (a->u.arr.len != b->u.arr.len)
			return false;
		for (size_t i = 0; i < a->u.arr.len; i++)
			if (!json_equal(a->u.arr.v[i], b->u.arr.v[i]))
				return false;
		return true;
	case JSON_OBJECT:
		if (a->u.obj.len != b->u.obj.len)
			return false;
		for (size_t i = 0; i < a->u.obj.len; i++) {
			const struct member *m = &a->u.obj.m[i];

			if (!json_equal(m->val, json_getn(b, m->key, m->key_len)))
				return false;
		}
		return true;
	}
	return false;
}

/* ---- merge patch ----------------------------------------------------- */

struct json *json_merge_patch(struct json *target, struct json *patch)
{
	if (!patch) {
		json_free(target);
		return NULL;
	}
	if (patch->type != JSON_OBJECT) {
		json_free(target);
		return patch;
	}
	if (!json_is_object(target)) {
		json_free(target);
		target = json_new_object();
		if (!target)
			goto fail;
	}
	for (size_t i = 0; i < patch->u.obj.len; i++) {
		struct member *pm = &patch->u.obj.m[i];
		size_t t = obj_find(target, pm->key, pm->key_len);
		struct json *cur = NULL, *v;

		if (pm->val->type == JSON_NULL) {
			if (t != NOT_FOUND)
				obj_remove(target, t);
			continue;
		}
		if (t != NOT_FOUND) {
			cur = target->u.obj.m[t].val;
			target->u.obj.m[t].val = NULL;
		}
		v = pm->val;
		pm->val = NULL;
		v = json_merge_patch(cur, v);
		if (!v) {
			if (t != NOT_FOUND)
				obj_remove(target, t);
			goto fail;
		}
		if (t != NOT_FOUND) {
			target->u.obj.m[t].val = v;
		} else {
			char *k = memdup0(pm->key, pm->key_len);

			if (!k) {
				json_free(v);
				goto fail;
			}
			if (obj_append(target, k, pm->key_len, v))
				goto fail;
		}
	}
	json_free(patch);
	return target;
fail:
	json_free(target);
	json_free(patch);
	return NULL;
}

/* ---- parsing --------------------------------------------------------- */

struct frame {
	struct json *node;
	char *key; /* pending key inside an object */
	size_t key_len;
	size_t key_offset;
};

struct builder {
	yajl_handle h;
	struct frame stack[JSON_MAX_DEPTH];
	size_t depth;
	struct json *root; /* value under construction, owns every frame's node */
	char msg[160]; /* why a callback cancelled the parse */
	bool (*deliver)(struct builder *b, struct json *doc);
	/* The whole text, when it is parsed in one piece: then every node gets
	 * its offset (yajl's byte count inside a callback is the offset just
	 * past the token being reported). NULL for streams. */
	const char *text;
	size_t cancel_at; /* where a cancelling callback's error is, or SIZE_MAX */
	/* \u escape scanner state, see scan_escapes() */
	int esc; /* 0 outside an escape, 1 after '\\', 2..5 in the hex digits */
	unsigned cp;
	bool want_low;
};

/* yajl turns a lone high surrogate into '?', encodes a lone low one as
 * invalid UTF-8 and pairs a high one with any following escape. Two
 * different names must not decode to the same string, so we refuse broken
 * pairs ourselves, on the raw bytes before yajl sees them. A backslash
 * outside a string is a lexical error for yajl anyway, so no string
 * tracking is needed. Returns the offset of the offending byte or SIZE_MAX. */
static size_t scan_escapes(struct builder *b, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = p[i];

		switch (b->esc) {
		case 0:
			if (c == '\\')
				b->esc = 1;
			else if (b->want_low)
				return i;
			break;
		case 1:
			if (c == 'u') {
				b->esc = 2;
				b->cp = 0;
				break;
			}
			b->esc = 0;
			if (b->want_low)
				return i;
			break;
		default:
			if (c >= '0' && c <= '9')
				b->cp = b->cp * 16 + (unsigned)(c - '0');
			else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
				b->cp = b->cp * 16 + (unsigned)((c | 0x20) - 'a' + 10);
			else {
				b->esc = 0; /* malformed: yajl reports it */
				break;
			}
			if (++b->esc < 6)
				break;
			b->esc = 0;
			if (b->want_low) {
				if (b->cp < 0xdc00 || b->cp > 0xdfff)
					return i;
				b->want_low = false;
			} else if (b->cp >= 0xd800 && b->cp <= 0xdbff) {
				b->want_low = true;
			} else if (b->cp >= 0xdc00 && b->cp <= 0xdfff) {
				return i;
			}
			break;
		}
	}
	return SIZE_MAX;
}

static int __attribute__((format(printf, 2, 3))) cancel(struct builder *b, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(b->msg, sizeof(b->msg), fmt, ap);
	va_end(ap);
	return 0;
}

static void builder_reset(struct builder *b)
{
	for (size_t i = 0; i < b->depth; i++)
		free(b->stack[i].key);
	b->depth = 0;
	json_free(b->root);
	b->root = NULL;
}

/* Offset just past the token yajl is reporting. */
static size_t tok_end(struct builder *b)
{
	return b->text ? yajl_get_bytes_consumed(b->h) : 0;
}

/* Offset of the opening quote of the string token ending at end: inside a
 * JSON string a quote only appears escaped, so it is the last quote before
 * the closing one that an even run of backslashes precedes. */
static size_t str_start(struct builder *b, size_t end)
{
	if (!b->text || end < 2)
		return 0;
	for (size_t i = end - 1; i-- > 0;) {
		size_t bs = 0;

		if (b->text[i] != '"')
			continue;
		while (bs < i && b->text[i - 1 - bs] == '\\')
			bs++;
		if (bs % 2 == 0)
			return i;
	}
	return 0;
}

/* Attaches v (owned), which starts at offset start, where the parser is; a
 * complete top-level value is delivered. */
static int attach(struct builder *b, struct json *v, bool container, size_t start)
{
	struct frame *f;

	if (!v)
		return cancel(b, "out of memory");
	v->offset = start;
	if (b->depth == 0) {
		if (container) {
			b->root = v;
			return 1;
		}
		return b->deliver(b, v);
	}
	f = &b->stack[b->depth - 1];
	if (f->node->type == JSON_ARRAY)
		return json_array_append(f->node, v) ? cancel(b, "out of memory") : 1;
	if (obj_append(f->node, f->key, f->key_len, v)) {
		f->key = NULL;
		return cancel(b, "out of memory");
	}
	f->node->u.obj.m[f->node->u.obj.len - 1].key_offset = f->key_offset;
	f->key = NULL;
	return 1;
}

static int cb_null(void *ctx)
{
	size_t end = tok_end(ctx);

	return attach(ctx, json_new_null(), false, end >= 4 ? end - 4 : 0);
}

static int cb_boolean(void *ctx, int v)
{
	size_t end = tok_end(ctx), n = v ? 4 : 5;

	return attach(ctx, json_new_bool(v), false, end >= n ? end - n : 0);
}

static int cb_number(void *ctx, const char *s, size_t len)
{
	struct builder *b = ctx;
	char small[64], *tok = small;
	struct json *j = NULL;
	bool integral = !memchr(s, '.', len) && !memchr(s, 'e', len) && !memchr(s, 'E', len);
	int ret;

	if (len >= sizeof(small)) {
		tok = malloc(len + 1);
		if (!tok)
			return cancel(b, "out of memory");
	}
	memcpy(tok, s, len);
	tok[len] = '\0';
	errno = 0;
	if (integral) {
		long long v = strtoll(tok, NULL, 10);

		if (errno == 0 && !(v == 0 && tok[0] == '-')) {
			j = json_new_int(v);
			goto done;
		}
		errno = 0;
	}
	{
		double d = strtod(tok, NULL);

		if (errno == ERANGE && isinf(d)) {
			ret = cancel(b, "number %.40s%s out of range", tok, len > 40 ? "..." : "");
			goto out;
		}
		j = json_new_double(d);
		/* An int only if the text said exactly this value: integer
		 * literals beyond int64 and decimals past 2^53 were rounded. */
		if (j && (integral || d >= 9007199254740992.0 || d <= -9007199254740992.0))
			j->u.num.is_int = false;
	}
done:
	ret = attach(b, j, false, tok_end(b) >= len ? tok_end(b) - len : 0);
out:
	if (tok != small)
		free(tok);
	return ret;
}

/* yajl checks only the shape of UTF-8 sequences; RFC 3629 also rules out
 * overlong forms, surrogates and code points past U+10FFFF, which would
 * give one name several spellings. */
static bool utf8_valid(const unsigned char *s, size_t n)
{
	size_t i = 0, k;
	unsigned cp, min;

	while (i < n) {
		unsigned c = s[i];

		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xe0) == 0xc0) {
			k = 1;
			cp = c & 0x1f;
			min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			k = 2;
			cp = c & 0x0f;
			min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			k = 3;
			cp = c & 0x07;
			min = 0x10000;
		} else {
			return false;
		}
		if (n - i <= k)
			return false;
		for (size_t j = 1; j <= k; j++) {
			if ((s[i + j] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + j] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += k + 1;
	}
	return true;
}

static int cb_string(void *ctx, const unsigned char *s, size_t len)
{
	if (!utf8_valid(s, len))
		return cancel(ctx, "invalid UTF-8 in string");
	return attach(ctx, json_new_stringn((const char *)s, len), false,
		      str_start(ctx, tok_end(ctx)));
}

static int open_container(struct builder *b, enum json_type t)
{
	struct json *j;

	if (b->depth >= JSON_MAX_DEPTH)
		return cancel(b, "nesting deeper than %d levels", JSON_MAX_DEPTH);
	j = node_new(t);
	if (!attach(b, j, true, tok_end(b) ? tok_end(b) - 1 : 0))
		return 0;
	b->stack[b->depth++] = (struct frame){ .node = j };
	return 1;
}

static int close_container(struct builder *b)
{
	b->depth--;
	if (b->depth == 0) {
		struct json *doc = b->root;

		b->root = NULL;
		return b->deliver(b, doc);
	}
	return 1;
}

static int cb_start_map(void *ctx)
{
	return open_container(ctx, JSON_OBJECT);
}

static int cb_map_key(void *ctx, const unsigned char *s, size_t len)
{
	struct builder *b = ctx;
	struct frame *f = &b->stack[b->depth - 1];

	if (!utf8_valid(s, len))
		return cancel(b, "invalid UTF-8 in key");
	if (obj_find(f->node, (const char *)s, len) != NOT_FOUND && b->text)
		b->cancel_at = str_start(b, tok_end(b));
	if (obj_find(f->node, (const char *)s, len) != NOT_FOUND)
		return cancel(b, "duplicate key \"%.*s\"%s", (int)(len > 64 ? 64 : len), s,
			      len > 64 ? "..." : "");
	f->key = memdup0((const char *)s, len);
	if (!f->key)
		return cancel(b, "out of memory");
	f->key_len = len;
	f->key_offset = str_start(b, tok_end(b));
	return 1;
}

static int cb_end(void *ctx)
{
	return close_container(ctx);
}

static int cb_start_array(void *ctx)
{
	return open_container(ctx, JSON_ARRAY);
}

static const yajl_callbacks callbacks = {
	.yajl_null = cb_null,
	.yajl_boolean = cb_boolean,
	.yajl_number = cb_number,
	.yajl_string = cb_string,
	.yajl_start_map = cb_start_map,
	.yajl_map_key = cb_map_key,
	.yajl_end_map = cb_end,
	.yajl_start_array = cb_start_array,
	.yajl_end_array = cb_end,
};

/* The message for a failed yajl_parse()/yajl_complete_parse(). */
static void status_msg(struct builder *b, yajl_status st, char *out, size_t n)
{
	unsigned char *e;
	size_t len;

	if (st == yajl_status_client_canceled) {
		snprintf(out, n, "%s", b->msg);
		return;
	}
	e = yajl_get_error(b->h, 0, NULL, 0);
	if (!e) {
		snprintf(out, n, "parse error");
		return;
	}
	len = strlen((char *)e);
	while (len && (e[len - 1] == '\n' || e[len - 1] == ' ' || e[len - 1] == '.'))
		len--;
	snprintf(out, n, "%.*s", (int)len, e);
	yajl_free_error(b->h, e);
}

static bool builder_init(struct builder *b, bool multiple)
{
	memset(b, 0, sizeof(*b));
	b->h = yajl_alloc(&callbacks, NULL, b);
	if (!b->h)
		return false;
	if (multiple)
		yajl_config(b->h, yajl_allow_multiple_values, 1);
	return true;
}

static void builder_fini(struct builder *b)
{
	builder_reset(b);
	if (b->h)
		yajl_free(b->h);
	b->h = NULL;
}

struct parse_one {
	struct builder b; /* first: deliver() casts back */
	struct json *result;
};

static bool deliver_one(struct builder *b, struct json *doc)
{
	struct parse_one *p = (struct parse_one *)b;

	p->result = doc;
	return true;
}

struct json *json_parse_max(const char *data, size_t len, size_t max_bytes,
			    struct json_error *err)
{
	struct parse_one p;
	yajl_status st;
	char msg[sizeof(err->msg)];
	size_t off, bad;

	if (len > max_bytes) {
		json_error_set(err, data, max_bytes, "input larger than %zu bytes", max_bytes);
		return NULL;
	}
	if (!builder_init(&p.b, false)) {
		json_error_set(err, NULL, 0, "out of memory");
		return NULL;
	}
	p.b.deliver = deliver_one;
	p.b.text = data;
	p.b.cancel_at = SIZE_MAX;
	p.result = NULL;
	/* An earlier error from yajl wins over a bad escape. */
	bad = scan_escapes(&p.b, data, len);
	st = yajl_parse(p.b.h, (const unsigned char *)data, bad == SIZE_MAX ? len : bad);
	off = yajl_get_bytes_consumed(p.b.h);
	if (st == yajl_status_ok && bad != SIZE_MAX) {
		json_error_set(err, data, bad, "invalid UTF-16 surrogate in \\u escape");
		json_free(p.result);
		p.result = NULL;
		goto out;
	}
	if (st == yajl_status_ok) {
		st = yajl_complete_parse(p.b.h);
		off = len;
	}
	if (st != yajl_status_ok) {
		status_msg(&p.b, st, msg, sizeof(msg));
		if (st == yajl_status_client_canceled && p.b.cancel_at != SIZE_MAX)
			off = p.b.cancel_at;
		if (off > len)
			off = len;
		json_error_set(err, data, off, "%s", msg);
		json_free(p.result);
		p.result = NULL;
	}
out:
	builder_fini(&p.b);
	return p.result;
}

struct json *json_parse(const char *data, size_t len, struct json_error *err)
{
	return json_parse_max(data, len, JSON_MAX_BYTES, err);
}

/* ---- streaming ------------------------------------------------------- */

struct json_stream {
	struct builder b; /* first: deliver() casts back */
	json_stream_cb cb;
	void *arg;
	size_t max_doc;
	size_t fed; /* bytes given to yajl so far */
	size_t line, col; /* position of byte `fed` */
	bool started; /* a value has begun and not ended */
	size_t doc_start; /* its first byte */
	size_t chunk_base; /* offset of the piece inside yajl_parse() */
	bool completed; /* a value ended inside the current piece */
	size_t last_end; /* offset just past that value */
	bool failed, finished;
	struct json_error error;
};

static bool deliver_stream(struct builder *b, struct json *doc)
{
	struct json_stream *s = (struct json_stream *)b;

	s->completed = true;
	s->last_end = s->chunk_base + yajl_get_bytes_consumed(b->h);
	if (!s->cb(doc, s->arg))
		return cancel(b, "stopped by the document handler");
	return true;
}

struct json_stream *json_stream_new(size_t max_doc_bytes, json_stream_cb cb, void *arg)
{
	struct json_stream *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	if (!builder_init(&s->b, true)) {
		free(s);
		return NULL;
	}
	s->b.deliver = deliver_stream;
	s->cb = cb;
	s->arg = arg;
	/* Keeps doc_start + max_doc from overflowing. */
	s->max_doc = max_doc_bytes > SIZE_MAX / 2 ? SIZE_MAX / 2 : max_doc_bytes;
	s->line = 1;
	s->col = 1;
	return s;
}

void json_stream_free(struct json_stream *s)
{
	if (!s)
		return;
	builder_fini(&s->b);
	free(s);
}

static bool is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static size_t skip_ws(const char *p, size_t n)
{
	size_t i = 0;

	while (i < n && is_ws(p[i]))
		i++;
	return i;
}

static bool stream_fail(struct json_stream *s, const char *piece, size_t at, const char *msg,
			struct json_error *err)
{
	size_t line = s->line, col = s->col;

	advance_pos(&line, &col, piece, at);
	error_set_at(&s->error, line, col, s->fed + at, "%s", msg);
	s->failed = true;
	builder_reset(&s->b);
	if (err)
		*err = s->error;
	return false;
}

bool json_stream_feed(struct json_stream *s, const void *data, size_t len, struct json_error *err)
{
	const char *p = data;
	char msg[sizeof(s->error.msg)];

	if (s->failed) {
		if (err)
			*err = s->error;
		return false;
	}
	if (s->finished)
		return stream_fail(s, p, 0, "input after the end of the stream", err);
	while (len > 0) {
		size_t n = len, k;
		bool bad_escape;
		yajl_status st;

		if (!s->started) {
			k = skip_ws(p, n);
			if (k < n) {
				s->started = true;
				s->doc_start = s->fed + k;
			}
		}
		/* yajl buffers a partial token without bound: never hand it more
		 * than one byte past the cap of an unfinished value. */
		if (s->started && n > s->doc_start + s->max_doc - s->fed + 1)
			n = s->doc_start + s->max_doc - s->fed + 1;
		/* Values before a bad escape are still delivered. */
		k = scan_escapes(&s->b, p, n);
		bad_escape = k != SIZE_MAX;
		if (bad_escape)
			n = k;
		s->chunk_base = s->fed;
		s->completed = false;
		st = yajl_parse(s->b.h, (const unsigned char *)p, n);
		if (st != yajl_status_ok) {
			size_t at = yajl_get_bytes_consumed(s->b.h);

			status_msg(&s->b, st, msg, sizeof(msg));
			return stream_fail(s, p, at > n ? n : at, msg, err);
		}
		if (s->completed) {
			size_t from = s->last_end - s->chunk_base;

			k = from + skip_ws(p + from, n - from);
			s->started = k < n;
			s->doc_start = s->fed + k;
		}
		if (s->started && s->fed + n - s->doc_start > s->max_doc) {
			snprintf(msg, sizeof(msg), "document larger than %zu bytes", s->max_doc);
			return stream_fail(s, p, s->doc_start + s->max_doc - s->fed, msg, err);
		}
		advance_pos(&s->line, &s->col, p, n);
		s->fed += n;
		p += n;
		len -= n;
		if (bad_escape)
			return stream_fail(s, p, 0, "invalid UTF-16 surrogate in \\u escape", err);
	}
	return true;
}

bool json_stream_finish(struct json_stream *s, struct json_error *err)
{
	char msg[sizeof(s->error.msg)];
	yajl_status st;

	if (s->failed) {
		if (err)
			*err = s->error;
		return false;
	}
	if (s->finished)
		return true;
	s->finished = true;
	if (!s->started)
		return true;
	s->chunk_base = s->fed;
	s->completed = false;
	st = yajl_complete_parse(s->b.h);
	if (st != yajl_status_ok) {
		status_msg(&s->b, st, msg, sizeof(msg));
		return stream_fail(s, "", 0, msg, err);
	}
	/* After a complete value yajl accepts a half-lexed token at the end
	 * (a string missing its closing quote): we know a value began. */
	if (!s->completed)
		return stream_fail(s, "", 0, "premature EOF: incomplete document", err);
	return true;
}

/* ---- output ---------------------------------------------------------- */

struct gen_out {
	struct buf *out;
	int err;
};

static void gen_print(void *ctx, const char *s, size_t len)
{
	struct gen_out *o = ctx;

	if (!o->err)
		o->err = buf_add(o->out, s, len);
}

/* The shortest %g form that reads back as the same double. */
static void format_double(char *out, size_t n, double d)
{
	for (int prec = 15; prec <= 17; prec++) {
		snprintf(out, n, "%.*g", prec, d);
		if (strtod(out, NULL) == d)
			break;
	}
}

static int gen_node(yajl_gen g, const struct json *j, int depth)
{
	char num[40];
	int n;

	if ((j->type == JSON_ARRAY || j->type == JSON_OBJECT) && depth > JSON_MAX_DEPTH)
		return yajl_max_depth_exceeded;
	switch (j->type) {
	case JSON_NULL:
		return yajl_gen_null(g);
	case JSON_BOOL:
		return yajl_gen_bool(g, j->u.b);
	case JSON_NUMBER:
		if (j->u.num.is_int) {
			n = snprintf(num, sizeof(num), "%lld", (long long)j->u.num.i);
		} else {
			if (!isfinite(j->u.num.d))
				return yajl_gen_invalid_number;
			format_double(num, sizeof(num), j->u.num.d);
			n = (int)strlen(num);
		}
		return yajl_gen_number(g, num, (size_t)n);
	case JSON_STRING:
		return yajl_gen_string(g, (const unsigned char *)j->u.str.s, j->u.str.len);
	case JSON_ARRAY:
		/* yajl's beautifier splits an empty container over two lines;
		 * yajl_gen_number() writes any token verbatim, in place. */
		if (j->u.arr.len == 0)
			return yajl_gen_number(g, "[]", 2);
		if ((n = yajl_gen_array_open(g)))
			return n;
		for (size_t i = 0; i < j->u.arr.len; i++)
			if ((n = gen_node(g, j->u.arr.v[i], depth + 1)))
				return n;
		return yajl_gen_array_close(g);
	case JSON_OBJECT:
		if (j->u.obj.len == 0)
			return yajl_gen_number(g, "{}", 2);
		if ((n = yajl_gen_map_open(g)))
			return n;
		for (size_t i = 0; i < j->u.obj.len; i++) {
			const struct member *m = &j->u.obj.m[i];

			if ((n = yajl_gen_string(g, (const unsigned char *)m->key, m->key_len)))
				return n;
			if ((n = gen_node(g, m->val, depth + 1)))
				return n;
		}
		return yajl_gen_map_close(g);
	}
	return yajl_gen_invalid_number;
}

int json_dump(const struct json *j, struct buf *out, unsigned flags)
{
	struct gen_out o = { .out = out };
	yajl_gen g;
	int st;

	if (!j)
		return -EINVAL;
	g = yajl_gen_alloc(NULL);
	if (!g)
		return -ENOMEM;
	yajl_gen_config(g, yajl_gen_print_callback, gen_print, &o);
	yajl_gen_config(g, yajl_gen_validate_utf8, 1);
	if (flags & JSON_DUMP_PRETTY) {
		yajl_gen_config(g, yajl_gen_beautify, 1);
		yajl_gen_config(g, yajl_gen_indent_string, "  ");
	}
	st = gen_node(g, j, 1);
	yajl_gen_free(g);
	if (o.err)
		return o.err;
	return st == yajl_gen_status_ok ? 0 : -EINVAL;
}
