/* huJSON: JSON with comments and trailing commas, the format of Tailscale's
 * policy file.
 *
 * Comments (line and block) and trailing commas are replaced by spaces in
 * a copy of the same length, newlines inside block comments kept, and the
 * copy is parsed as strict JSON: every position in an error refers to the
 * original text. A trailing comma is one after a value that is followed,
 * past whitespace and comments, by ']' or '}'; "[,]" and "[1,,]" stay
 * errors. Everything else (duplicate keys, depth, size) is as in json.h.
 */
#ifndef KNIT_HUJSON_H
#define KNIT_HUJSON_H

#include <stdbool.h>
#include <stddef.h>

#include "json.h"

struct buf;

/* Appends the standardized text (exactly len bytes) to out. Returns false
 * with *err set for an unterminated block comment or when out cannot take
 * the bytes; out is then left as it was. Other syntax errors are left for
 * the JSON parser to find. */
bool hujson_standardize(const char *data, size_t len, struct buf *out, struct json_error *err);

/* Parses huJSON into a tree the caller frees with json_free(), or returns
 * NULL with *err set (err may be NULL). */
struct json *hujson_parse(const char *data, size_t len, struct json_error *err);

#endif
