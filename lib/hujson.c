#include "hujson.h"

#include <errno.h>
#include <string.h>

#include "buf.h"

#define NO_COMMA SIZE_MAX

/* Blanks data[from, to) in out, keeping newlines so lines stay put. */
static void blank(char *out, const char *data, size_t from, size_t to)
{
	for (size_t i = from; i < to; i++)
		if (data[i] != '\n')
			out[i] = ' ';
}

bool hujson_standardize(const char *data, size_t len, struct buf *out, struct json_error *err)
{
	size_t start = out->len, comma = NO_COMMA;
	char prev = '\0'; /* last significant byte outside comments */
	const char *end;
	char *o;
	int rc;

	rc = buf_add(out, data, len);
	if (rc) {
		json_error_set(err, NULL, 0, rc == -ENOSPC ?
			       "huJSON input of %zu bytes does not fit the buffer" :
			       "out of memory for huJSON input of %zu bytes", len);
		return false;
	}
	o = (char *)out->data + start;
	for (size_t i = 0; i < len; i++) {
		char c = data[i];

		switch (c) {
		case ' ':
		case '\t':
		case '\n':
		case '\r':
			break;
		case '"':
			/* Skip the string: comment markers inside it are text. */
			for (i++; i < len && data[i] != '"'; i++)
				if (data[i] == '\\')
					i++;
			comma = NO_COMMA;
			prev = '"';
			break;
		case '/':
			if (i + 1 < len && data[i + 1] == '/') {
				end = memchr(data + i, '\n', len - i);
				blank(o, data, i, end ? (size_t)(end - data) : len);
				i = end ? (size_t)(end - data) : len;
				break;
			}
			if (i + 1 < len && data[i + 1] == '*') {
				end = memmem(data + i + 2, len - i - 2, "*/", 2);
				if (!end) {
					json_error_set(err, data, i, "unterminated block comment");
					out->len = start;
					if (out->data)
						out->data[start] = '\0';
					return false;
				}
				blank(o, data, i, (size_t)(end - data) + 2);
				i = (size_t)(end - data) + 1;
				break;
			}
			comma = NO_COMMA;
			prev = c; /* a stray '/': the JSON parser reports it */
			break;
		case ']':
		case '}':
			if (comma != NO_COMMA)
				o[comma] = ' ';
			comma = NO_COMMA;
			prev = c;
			break;
		case ',':
			/* Only a comma after a value can be a trailing one. */
			comma = (prev && prev != '[' && prev != '{' && prev != ',' && prev != ':') ?
					i : NO_COMMA;
			prev = c;
			break;
		default:
			comma = NO_COMMA;
			prev = c;
			break;
		}
	}
	return true;
}

struct json *hujson_parse(const char *data, size_t len, struct json_error *err)
{
	struct buf b = BUF_INIT(JSON_MAX_BYTES);
	struct json *j = NULL;

	if (len > JSON_MAX_BYTES) {
		json_error_set(err, data, JSON_MAX_BYTES, "input larger than %zu bytes",
			       (size_t)JSON_MAX_BYTES);
		goto out;
	}
	if (!hujson_standardize(data, len, &b, err))
		goto out;
	j = json_parse(buf_str(&b), b.len, err);
out:
	buf_free(&b);
	return j;
}
