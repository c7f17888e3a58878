/* Standardizes and parses huJSON. The standardized text must have the
 * input's length and differ only by spaces put over comments and commas,
 * with every newline kept; hujson_parse() must agree with json_parse() on
 * it. */
#include <stdint.h>
#include <stdlib.h>

#include "buf.h"
#include "hujson.h"
#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct buf b = BUF_INIT(1 << 24);
	struct json_error err;
	struct json *hu, *std;
	const char *in = (const char *)data;
	bool ok;

	ok = hujson_standardize(in, size, &b, &err);
	hu = hujson_parse(in, size, &err);
	if (!ok) {
		if (hu || b.len != 0)
			abort();
		goto out;
	}
	if (b.len != size)
		abort();
	for (size_t i = 0; i < size; i++) {
		char o = (char)b.data[i];

		if (o != in[i] && (o != ' ' || in[i] == '\n'))
			abort();
	}
	std = json_parse((const char *)b.data, b.len, NULL);
	if (!hu != !std || (hu && !json_equal(hu, std)))
		abort();
	json_free(std);
out:
	json_free(hu);
	buf_free(&b);
	return 0;
}
