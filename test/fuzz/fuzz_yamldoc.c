/* Parses the input as a YAML stream; every document must dump back to YAML
 * (and, when JSON can hold it, to JSON) and read back equal. */
#include <stdint.h>
#include <stdlib.h>

#include "buf.h"
#include "json.h"
#include "yamldoc.h"

static void roundtrip(const struct json *doc)
{
	struct buf b = BUF_INIT(1 << 24);
	struct json_error err;
	struct json *again;

	if (yamldoc_dump(doc, &b) == 0) {
		again = yamldoc_parse((const char *)b.data, b.len, &err);
		if (!again || !json_equal(doc, again))
			abort();
		json_free(again);
	}
	buf_reset(&b);
	if (json_dump(doc, &b, 0) == 0) {
		again = json_parse((const char *)b.data, b.len, &err);
		if (!again || !json_equal(doc, again))
			abort();
		json_free(again);
	}
	buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct json_error err;
	struct json *docs, *one;

	docs = yamldoc_parse_all((const char *)data, size, &err);
	if (!docs) {
		if (err.line < 1 || err.column < 1)
			abort();
		return 0;
	}
	for (size_t i = 0; i < json_array_len(docs); i++)
		roundtrip(json_array_at(docs, i));
	one = yamldoc_parse((const char *)data, size, &err);
	if (one && json_array_len(docs) == 1 && !json_equal(one, json_array_at(docs, 0)))
		abort();
	json_free(one);
	json_free(docs);
	return 0;
}
