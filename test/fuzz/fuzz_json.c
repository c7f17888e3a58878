/* Parses the input as one JSON document, and as a stream split at a point
 * chosen by the first byte; whatever parses must dump and read back equal. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "json.h"

static void roundtrip(const struct json *j)
{
	struct buf b = BUF_INIT(1 << 24);
	struct json *again;

	if (json_dump(j, &b, 0) == 0) {
		again = json_parse((const char *)b.data, b.len, NULL);
		if (!again || !json_equal(j, again))
			abort();
		json_free(again);
	}
	buf_reset(&b);
	if (json_dump(j, &b, JSON_DUMP_PRETTY) == 0) {
		again = json_parse((const char *)b.data, b.len, NULL);
		if (!again || !json_equal(j, again))
			abort();
		json_free(again);
	}
	buf_free(&b);
}

static bool on_doc(struct json *doc, void *arg)
{
	size_t *n = arg;

	roundtrip(doc);
	(*n)++;
	json_free(doc);
	return *n < 1000;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct json_error err;
	struct json *j, *c;
	struct json_stream *s;
	size_t split, docs = 0;

	j = json_parse((const char *)data, size, &err);
	if (j) {
		roundtrip(j);
		c = json_clone(j);
		if (!c || !json_equal(j, c))
			abort();
		/* Merging a document into itself: still well-formed. */
		c = json_merge_patch(c, json_clone(j));
		json_free(c);
		json_free(j);
	} else if (err.line < 1 || err.column < 1 || err.offset > size) {
		abort();
	}

	if (size == 0)
		return 0;
	split = data[0] % size;
	s = json_stream_new(4096, on_doc, &docs);
	if (!s)
		return 0;
	if (json_stream_feed(s, data, split, &err) &&
	    json_stream_feed(s, data + split, size - split, &err))
		json_stream_finish(s, &err);
	json_stream_free(s);
	return 0;
}
