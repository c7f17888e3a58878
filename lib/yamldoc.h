/* YAML documents (kubeconfig, manifests) read into and written from the
 * struct json trees of json.h, over libyaml's event API.
 *
 * Reading follows the YAML 1.2 core schema: plain scalars resolve to null
 * (null, ~, empty), booleans (true/false in three casings), integers
 * (decimal, 0x, 0o; beyond int64 a double), floats (incl. .inf, .nan),
 * else strings. Quoted and block scalars are strings. The tags !!str,
 * !!int, !!float, !!bool and !!null are honoured (a value that does not fit
 * its tag is an error); other tags are ignored. YAML 1.1's yes/no/on/off
 * are strings, and "<<" is an ordinary key (no merge keys).
 *
 * Aliases are expanded by copying, and all copies together may not exceed
 * YAMLDOC_MAX_ALIAS_NODES nodes (the "billion laughs"). Mapping keys must be
 * scalars and are kept as their text; a key given twice is an error, as in
 * json.h. Nesting is bounded by JSON_MAX_DEPTH, input by YAMLDOC_MAX_BYTES.
 *
 * Errors carry libyaml's line and column (1-based, counted in characters)
 * and its problem text; offset is libyaml's character index.
 *
 * Named yamldoc, not yaml: <yaml.h> and the yaml_ prefix are libyaml's.
 */
#ifndef KNIT_YAMLDOC_H
#define KNIT_YAMLDOC_H

#include <stddef.h>

#include "json.h"

struct buf;

#define YAMLDOC_MAX_BYTES JSON_MAX_BYTES
#define YAMLDOC_MAX_ALIAS_NODES 100000

/* Exactly one document (an empty input is an error, an empty document is
 * null). Caller frees the result with json_free(). */
struct json *yamldoc_parse(const char *data, size_t len, struct json_error *err);
/* Every non-empty document of a multi-document stream ("---"), as a JSON
 * array; documents that are empty (or just null) are skipped. */
struct json *yamldoc_parse_all(const char *data, size_t len, struct json_error *err);

/* Appends j as one block-style YAML document. Strings that would read back
 * as another type (under YAML 1.2 or 1.1 rules) are quoted, so parsing the
 * output gives a tree json_equal() to j. Returns 0, -ENOSPC/-ENOMEM from
 * out, or -EINVAL (invalid UTF-8, nesting deeper than JSON_MAX_DEPTH). */
int yamldoc_dump(const struct json *j, struct buf *out);

#endif
