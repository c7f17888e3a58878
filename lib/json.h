/* JSON documents as trees, parsed with yajl and written with yajl_gen.
 *
 * Decisions callers should know:
 * - Strings (values and keys) carry a length and are always NUL-terminated.
 *   JSON may smuggle a NUL in with \u0000; json_str() refuses such a string
 *   (returns NULL) so that strcmp() on it cannot be fooled, json_strn() gives
 *   the raw bytes. Keys with a NUL are found only with json_getn().
 * - Numbers keep a double and, when the value is integral and fits, an
 *   int64: "1e3" is an int (1000), 2^63 is only a double. -0 stays a double.
 * - Strings must be valid UTF-8 (RFC 3629: no overlong forms, no
 *   surrogates, also none from broken \u escape pairs).
 * - Duplicate object keys are a parse error: in a policy document the
 *   reviewer and the parser must not see different values.
 * - Parsing is bounded: nesting deeper than JSON_MAX_DEPTH and input larger
 *   than the byte cap are errors with a position. Builders do not check
 *   depth; json_dump() refuses trees nested deeper than JSON_MAX_DEPTH.
 * - Object members keep insertion order. Large objects get a hash index, so
 *   lookups and duplicate checks stay cheap.
 */
#ifndef KNIT_JSON_H
#define KNIT_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;
struct json;

enum json_type {
	JSON_NULL,
	JSON_BOOL,
	JSON_NUMBER,
	JSON_STRING,
	JSON_ARRAY,
	JSON_OBJECT,
};

/* yajl_gen cannot nest 128 deep; stay clear of it so all we parse we can write. */
#define JSON_MAX_DEPTH 100
#define JSON_MAX_BYTES ((size_t)64 << 20)

struct json_error {
	size_t line;   /* 1-based */
	size_t column; /* 1-based, counted in bytes */
	size_t offset; /* bytes from the start of the input (or stream) */
	char msg[192];
};

/* Parses exactly one JSON value (surrounding whitespace allowed). Returns a
 * tree the caller frees with json_free(), or NULL with *err filled in (err
 * may be NULL). */
struct json *json_parse(const char *data, size_t len, struct json_error *err);
/* Same with a caller-chosen cap on len instead of JSON_MAX_BYTES. */
struct json *json_parse_max(const char *data, size_t len, size_t max_bytes,
			    struct json_error *err);
void json_free(struct json *j);
/* Frees a tree that holds secrets (auth keys, private keys, a Secret's
 * data): every string and member name is wiped with sodium_memzero()
 * first. NULL is a no-op. */
void json_free_secret(struct json *j);

enum json_type json_type(const struct json *j); /* JSON_NULL for a NULL node */
const char *json_type_name(enum json_type t);
bool json_is_null(const struct json *j);
bool json_is_bool(const struct json *j);
bool json_is_number(const struct json *j);
bool json_is_int(const struct json *j); /* number that fits int64 exactly */
bool json_is_string(const struct json *j);
bool json_is_array(const struct json *j);
bool json_is_object(const struct json *j);

/* Accessors are safe on NULL and on the wrong type. */
const char *json_str(const struct json *j); /* NULL unless a string without NUL */
const char *json_strn(const struct json *j, size_t *len);
size_t json_str_len(const struct json *j);
int64_t json_int(const struct json *j, int64_t def);
double json_double(const struct json *j, double def);
bool json_bool(const struct json *j, bool def);

size_t json_array_len(const struct json *j);
struct json *json_array_at(const struct json *j, size_t i);

size_t json_object_len(const struct json *j);
/* The i-th member in insertion order: returns its value, *key its name
 * (key_len may be NULL). NULL when out of range or not an object. */
struct json *json_object_at(const struct json *j, size_t i, const char **key,
			    size_t *key_len);
/* Where a parsed node began in the text given to json_parse() (or
 * hujson_parse(), whose offsets are the original text's): the byte offset
 * of its first byte, or of the opening quote of an object member's key.
 * 0 for nodes built, cloned or streamed, and for NULL. json_error_set()
 * turns an offset into line:column. */
size_t json_offset(const struct json *j);
size_t json_key_offset(const struct json *obj, size_t i);
#define json_object_foreach(obj, i, key, val) \
	for ((i) = 0; ((val) = json_object_at((obj), (i), &(key), NULL)); (i)++)

struct json *json_get(const struct json *obj, const char *key);
struct json *json_getn(const struct json *obj, const char *key, size_t key_len);
/* Follows object keys: json_path(pod, "metadata", "name", NULL). */
struct json *json_path(const struct json *j, ...) __attribute__((sentinel));

/* Builders return NULL on ENOMEM. */
struct json *json_new_null(void);
struct json *json_new_bool(bool v);
struct json *json_new_int(int64_t v);
struct json *json_new_double(double v);
struct json *json_new_string(const char *s);
struct json *json_new_stringn(const char *s, size_t len);
struct json *json_new_array(void);
struct json *json_new_object(void);

/* Take ownership of val even when they fail (-ENOMEM, -EINVAL); an existing
 * member with that key is replaced in place, keeping its position. */
int json_object_set(struct json *obj, const char *key, struct json *val);
int json_object_setn(struct json *obj, const char *key, size_t key_len, struct json *val);
int json_array_append(struct json *arr, struct json *val);

/* Building with one check at the end: an error sticks in *err (0 to
 * start with), and later puts free their value and do nothing. Each takes
 * ownership of val; a NULL val (a failed builder) or obj is -ENOMEM.
 * Return *err. json_put_str puts nothing for a NULL s. */
int json_put(struct json *obj, const char *key, struct json *val, int *err);
int json_put_str(struct json *obj, const char *key, const char *s, int *err);
int json_put_int(struct json *obj, const char *key, int64_t v, int *err);
int json_put_bool(struct json *obj, const char *key, bool v, int *err);
/* Returns true if the key was there. */
bool json_object_del(struct json *obj, const char *key);

struct json *json_clone(const struct json *j);
/* Deep equality; member order is ignored, numbers compare by value, NaN
 * equals NaN (so YAML's .nan round-trips). */
bool json_equal(const struct json *a, const struct json *b);

#define JSON_DUMP_PRETTY 0x1
/* Appends the JSON text of j to out. Returns 0, -ENOSPC/-ENOMEM from out,
 * or -EINVAL for what JSON cannot hold (NaN, infinities, invalid UTF-8, or
 * nesting deeper than JSON_MAX_DEPTH). On error out holds partial output. */
int json_dump(const struct json *j, struct buf *out, unsigned flags);

/* RFC 7386 JSON Merge Patch. Consumes both arguments and returns the
 * result (which may be one of them, or a new node); NULL on ENOMEM. */
struct json *json_merge_patch(struct json *target, struct json *patch);

/* Streaming parser for a sequence of top-level values (Kubernetes watch
 * streams: one object per line, arriving in arbitrary chunks). */
struct json_stream;
/* Gets each complete value as soon as its last byte is fed, and owns it.
 * Returning false stops the stream with an error. Called from inside
 * json_stream_feed()/finish(): it must not feed or free the stream. */
typedef bool (*json_stream_cb)(struct json *doc, void *arg);

/* max_doc_bytes bounds each value, counted from its first byte. */
struct json_stream *json_stream_new(size_t max_doc_bytes, json_stream_cb cb, void *arg);
void json_stream_free(struct json_stream *s);
/* Returns false on a parse error, an oversized value, ENOMEM or a callback
 * refusal; positions in *err count from the start of the stream. After an
 * error the stream refuses all further input with the same error. */
bool json_stream_feed(struct json_stream *s, const void *data, size_t len,
		      struct json_error *err);
/* End of input: a value still incomplete is an error. */
bool json_stream_finish(struct json_stream *s, struct json_error *err);

/* Fills err (may be NULL) with a position computed from text[0..offset):
 * shared with the YAML and huJSON parsers. */
void json_error_set(struct json_error *err, const char *text, size_t offset,
		    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
