#include "yamldoc.h"

#include <yaml.h>

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

#define TAG_STR "tag:yaml.org,2002:str"
#define TAG_INT "tag:yaml.org,2002:int"
#define TAG_FLOAT "tag:yaml.org,2002:float"
#define TAG_BOOL "tag:yaml.org,2002:bool"
#define TAG_NULL "tag:yaml.org,2002:null"

/* ---- scalar resolution (YAML 1.2 core schema, section 10.3.2) -------- */

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_one_of(const char *s, const char *const *words)
{
	for (; *words; words++)
		if (strcmp(s, *words) == 0)
			return true;
	return false;
}

static const char *const null_words[] = { "", "~", "null", "Null", "NULL", NULL };
static const char *const true_words[] = { "true", "True", "TRUE", NULL };
static const char *const false_words[] = { "false", "False", "FALSE", NULL };

/* [-+]?[0-9]+ */
static bool match_dec(const char *s)
{
	if (*s == '-' || *s == '+')
		s++;
	if (!is_digit(*s))
		return false;
	while (is_digit(*s))
		s++;
	return *s == '\0';
}

/* 0o[0-7]+ or 0x[0-9a-fA-F]+: returns the base, or 0. */
static int match_radix(const char *s)
{
	int base;

	if (s[0] != '0' || (s[1] != 'o' && s[1] != 'x'))
		return 0;
	base = s[1] == 'o' ? 8 : 16;
	s += 2;
	if (!*s)
		return 0;
	for (; *s; s++) {
		char c = *s;

		if (base == 8 ? (c < '0' || c > '7') :
				!(is_digit(c) || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')))
			return 0;
	}
	return base;
}

/* [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
static bool match_float(const char *s)
{
	bool digits = false;

	if (*s == '-' || *s == '+')
		s++;
	while (is_digit(*s)) {
		s++;
		digits = true;
	}
	if (*s == '.') {
		s++;
		if (!digits && !is_digit(*s))
			return false;
		while (is_digit(*s)) {
			s++;
			digits = true;
		}
	}
	if (!digits)
		return false;
	if (*s == 'e' || *s == 'E') {
		s++;
		if (*s == '-' || *s == '+')
			s++;
		if (!is_digit(*s))
			return false;
		while (is_digit(*s))
			s++;
	}
	return *s == '\0';
}

static bool match_inf_nan(const char *s, double *d)
{
	static const char *const inf[] = { ".inf", ".Inf", ".INF", NULL };
	static const char *const nan[] = { ".nan", ".NaN", ".NAN", NULL };
	bool neg = *s == '-';

	if (is_one_of(s, nan)) {
		*d = __builtin_nan("");
		return true;
	}
	if (*s == '-' || *s == '+')
		s++;
	if (is_one_of(s, inf)) {
		*d = neg ? -__builtin_inf() : __builtin_inf();
		return true;
	}
	return false;
}

static struct json *make_int(const char *s, int base)
{
	unsigned long long u;
	long long v;
	double d = 0;

	errno = 0;
	if (base == 10) {
		v = strtoll(s, NULL, 10);
		/* Beyond int64: a double, as json.c does; "-0" keeps its sign. */
		if (errno || (v == 0 && s[0] == '-'))
			return json_new_double(strtod(s, NULL));
		return json_new_int(v);
	}
	u = strtoull(s + 2, NULL, base);
	if (!errno && u <= LLONG_MAX)
		return json_new_int((long long)u);
	for (s += 2; *s; s++)
		d = d * base + (is_digit(*s) ? *s - '0' : (*s | 0x20) - 'a' + 10);
	return json_new_double(d);
}

enum resolved { R_NULL, R_BOOL, R_INT, R_FLOAT, R_STR };

/* What a plain scalar means; s is NUL-terminated without embedded NUL. */
static enum resolved resolve(const char *s, int *base, double *d, bool *b)
{
	if (is_one_of(s, null_words))
		return R_NULL;
	if (is_one_of(s, true_words) || is_one_of(s, false_words)) {
		*b = is_one_of(s, true_words);
		return R_BOOL;
	}
	if (match_dec(s)) {
		*base = 10;
		return R_INT;
	}
	if ((*base = match_radix(s)))
		return R_INT;
	if (match_float(s)) {
		*d = strtod(s, NULL);
		return R_FLOAT;
	}
	if (match_inf_nan(s, d))
		return R_FLOAT;
	return R_STR;
}

static struct json *resolved_node(enum resolved r, const char *s, size_t len, int base,
				  double d, bool b)
{
	switch (r) {
	case R_NULL:
		return json_new_null();
	case R_BOOL:
		return json_new_bool(b);
	case R_INT:
		return make_int(s, base);
	case R_FLOAT:
		return json_new_double(d);
	case R_STR:
		break;
	}
	return json_new_stringn(s, len);
}

/* ---- loading --------------------------------------------------------- */

struct anchor {
	char *name;
	struct json *node; /* in the tree, or owned (a key) */
	bool owned;
};

struct yframe {
	struct json *node;
	char *anchor; /* registered when the node ends */
	char *key; /* pending key of a mapping */
	size_t key_len;
	bool have_key;
};

struct loader {
	yaml_parser_t parser;
	struct yframe stack[JSON_MAX_DEPTH];
	size_t depth;
	struct json *root;
	struct anchor *anchors;
	size_t nanchors, anchors_cap;
	size_t alias_nodes;
	const char *text;
	struct json_error *err;
};

static bool __attribute__((format(printf, 3, 4)))
fail(struct loader *l, const yaml_mark_t *m, const char *fmt, ...)
{
	va_list ap;

	if (!l->err)
		return false;
	l->err->line = m->line + 1;
	l->err->column = m->column + 1;
	l->err->offset = m->index;
	va_start(ap, fmt);
	vsnprintf(l->err->msg, sizeof(l->err->msg), fmt, ap);
	va_end(ap);
	return false;
}

static bool fail_parser(struct loader *l)
{
	yaml_parser_t *p = &l->parser;
	const char *problem = p->problem ? p->problem : "out of memory";
	yaml_mark_t m = p->problem_mark;

	if (p->error == YAML_READER_ERROR) {
		/* The reader has a byte offset, not a mark. */
		json_error_set(l->err, l->text, p->problem_offset, "%s", problem);
		return false;
	}
	if (p->context)
		return fail(l, &m, "%s %s", p->context, problem);
	return fail(l, &m, "%s", problem);
}

static void anchors_clear(struct loader *l)
{
	for (size_t i = 0; i < l->nanchors; i++) {
		free(l->anchors[i].name);
		if (l->anchors[i].owned)
			json_free(l->anchors[i].node);
	}
	l->nanchors = 0;
}

static void loader_reset(struct loader *l)
{
	for (size_t i = 0; i < l->depth; i++) {
		free(l->stack[i].anchor);
		free(l->stack[i].key);
	}
	l->depth = 0;
	json_free(l->root);
	l->root = NULL;
	anchors_clear(l);
	l->alias_nodes = 0;
}

/* Takes ownership of node (if owned) but not of name. */
static bool anchor_add(struct loader *l, const char *name, struct json *node, bool owned,
		       const yaml_mark_t *m)
{
	char *n = strdup(name);

	if (n && l->nanchors == l->anchors_cap) {
		size_t cap = l->anchors_cap ? l->anchors_cap * 2 : 8;
		struct anchor *a = reallocarray(l->anchors, cap, sizeof(*a));

		if (!a) {
			free(n);
			n = NULL;
		} else {
			l->anchors = a;
			l->anchors_cap = cap;
		}
	}
	if (!n) {
		if (owned)
			json_free(node);
		return fail(l, m, "out of memory");
	}
	l->anchors[l->nanchors++] = (struct anchor){ n, node, owned };
	return true;
}

static const struct anchor *anchor_find(struct loader *l, const char *name)
{
	/* A redefined anchor means its latest definition. */
	for (size_t i = l->nanchors; i-- > 0;)
		if (strcmp(l->anchors[i].name, name) == 0)
			return &l->anchors[i];
	return NULL;
}

static bool in_key_position(const struct loader *l)
{
	const struct yframe *f;

	if (l->depth == 0)
		return false;
	f = &l->stack[l->depth - 1];
	return json_is_object(f->node) && !f->have_key;
}

/* Sets the pending key of the innermost mapping; takes ownership of key. */
static bool set_key(struct loader *l, char *key, size_t len, const yaml_mark_t *m)
{
	struct yframe *f = &l->stack[l->depth - 1];

	if (!key)
		return fail(l, m, "out of memory");
	if (json_getn(f->node, key, len)) {
		fail(l, m, "duplicate key \"%.*s\"%s", (int)(len > 64 ? 64 : len), key,
		     len > 64 ? "..." : "");
		free(key);
		return false;
	}
	f->key = key;
	f->key_len = len;
	f->have_key = true;
	return true;
}

/* Attaches a complete or just-opened node (owned) where the parser is. */
static bool attach(struct loader *l, struct json *v, const yaml_mark_t *m)
{
	struct yframe *f;
	int rc;

	if (!v)
		return fail(l, m, "out of memory");
	if (l->depth == 0) {
		l->root = v;
		return true;
	}
	f = &l->stack[l->depth - 1];
	if (json_is_array(f->node)) {
		rc = json_array_append(f->node, v);
	} else {
		rc = json_object_setn(f->node, f->key, f->key_len, v);
		free(f->key);
		f->key = NULL;
		f->have_key = false;
	}
	return rc ? fail(l, m, "out of memory") : true;
}

static struct json *scalar_node(struct loader *l, const yaml_event_t *ev)
{
	const char *s = (const char *)ev->data.scalar.value;
	size_t len = ev->data.scalar.length;
	const char *tag = (const char *)ev->data.scalar.tag;
	bool plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
	enum resolved r = R_STR, want;
	double d = 0;
	bool b = false;
	int base = 10;

	/* Only quoted scalars can hold a NUL ("\0"), and such text is no
	 * number or keyword even under a tag. */
	if ((plain || tag) && !memchr(s, '\0', len))
		r = resolve(s, &base, &d, &b);
	if (!tag)
		return resolved_node(plain ? r : R_STR, s, len, base, d, b);
	if (strcmp(tag, TAG_STR) == 0 || strcmp(tag, "!") == 0)
		return json_new_stringn(s, len);
	if (strcmp(tag, TAG_INT) == 0)
		want = R_INT;
	else if (strcmp(tag, TAG_FLOAT) == 0)
		want = R_FLOAT;
	else if (strcmp(tag, TAG_BOOL) == 0)
		want = R_BOOL;
	else if (strcmp(tag, TAG_NULL) == 0)
		want = R_NULL;
	else
		return resolved_node(plain ? r : R_STR, s, len, base, d, b);
	if (want == R_FLOAT && r == R_INT) {
		struct json *i = make_int(s, base);

		if (!i)
			return NULL;
		d = json_double(i, 0);
		json_free(i);
		r = R_FLOAT;
	}
	if (r != want) {
		fail(l, &ev->start_mark, "\"%.*s\" is not a valid %s", (int)(len > 64 ? 64 : len),
		     s, tag + strlen("tag:yaml.org,2002:"));
		return NULL;
	}
	return resolved_node(r, s, len, base, d, b);
}

static bool on_scalar(struct loader *l, const yaml_event_t *ev)
{
	const char *anchor = (const char *)ev->data.scalar.anchor;
	struct json *v;

	if (in_key_position(l)) {
		size_t len = ev->data.scalar.length;
		char *key = malloc(len + 1);

		if (key) {
			memcpy(key, ev->data.scalar.value, len);
			key[len] = '\0';
		}
		if (anchor) {
			v = json_new_stringn((const char *)ev->data.scalar.value, len);
			if (!v) {
				free(key);
				return fail(l, &ev->start_mark, "out of memory");
			}
			if (!anchor_add(l, anchor, v, true, &ev->start_mark)) {
				free(key);
				return false;
			}
		}
		return set_key(l, key, len, &ev->start_mark);
	}
	v = scalar_node(l, ev);
	if (!v)
		return l->err && l->err->msg[0] ? false : fail(l, &ev->start_mark, "out of memory");
	if (!attach(l, v, &ev->start_mark))
		return false;
	if (anchor)
		return anchor_add(l, anchor, v, false, &ev->start_mark);
	return true;
}

/* Counts the nodes of j and its nesting height (containers). */
static void measure(const struct json *j, size_t *nodes, size_t *height)
{
	size_t h = 0, i, ch;
	const char *k;
	struct json *v;

	(*nodes)++;
	for (i = 0; i < json_array_len(j); i++) {
		measure(json_array_at(j, i), nodes, &ch);
		if (ch > h)
			h = ch;
	}
	json_object_foreach(j, i, k, v) {
		measure(v, nodes, &ch);
		if (ch > h)
			h = ch;
	}
	*height = h + (json_is_array(j) || json_is_object(j));
}

static bool on_alias(struct loader *l, const yaml_event_t *ev)
{
	const char *name = (const char *)ev->data.alias.anchor;
	const struct anchor *a = anchor_find(l, name);
	size_t nodes = 0, height = 0;
	struct json *copy;

	if (!a)
		return fail(l, &ev->start_mark, "unknown anchor \"%.64s\" (or an alias inside "
			    "the node it names)", name);
	if (in_key_position(l)) {
		struct buf text = BUF_INIT(256);
		char *key;
		size_t len;

		if (json_is_string(a->node)) {
			const char *s = json_strn(a->node, &len);

			key = malloc(len + 1);
			if (key) {
				memcpy(key, s, len);
				key[len] = '\0';
			}
		} else if (json_is_array(a->node) || json_is_object(a->node)) {
			return fail(l, &ev->start_mark, "complex mapping keys are not supported");
		} else {
			if (json_dump(a->node, &text, 0))
				return fail(l, &ev->start_mark, "cannot use *%.64s as a key", name);
			key = buf_steal(&text, &len);
		}
		return set_key(l, key, len, &ev->start_mark);
	}
	measure(a->node, &nodes, &height);
	if (nodes > YAMLDOC_MAX_ALIAS_NODES - l->alias_nodes)
		return fail(l, &ev->start_mark, "aliases expand to more than %d nodes",
			    YAMLDOC_MAX_ALIAS_NODES);
	l->alias_nodes += nodes;
	if (l->depth + height > JSON_MAX_DEPTH)
		return fail(l, &ev->start_mark, "nesting deeper than %d levels", JSON_MAX_DEPTH);
	copy = json_clone(a->node);
	return attach(l, copy, &ev->start_mark);
}

static bool on_start(struct loader *l, const yaml_event_t *ev, bool mapping)
{
	const yaml_char_t *anchor = mapping ? ev->data.mapping_start.anchor :
					      ev->data.sequence_start.anchor;
	struct json *node;
	char *a = NULL;

	if (in_key_position(l))
		return fail(l, &ev->start_mark, "complex mapping keys are not supported");
	if (l->depth >= JSON_MAX_DEPTH)
		return fail(l, &ev->start_mark, "nesting deeper than %d levels", JSON_MAX_DEPTH);
	if (anchor) {
		a = strdup((const char *)anchor);
		if (!a)
			return fail(l, &ev->start_mark, "out of memory");
	}
	node = mapping ? json_new_object() : json_new_array();
	if (!attach(l, node, &ev->start_mark)) {
		free(a);
		return false;
	}
	l->stack[l->depth++] = (struct yframe){ .node = node, .anchor = a };
	return true;
}

static bool on_end(struct loader *l, const yaml_event_t *ev)
{
	struct yframe *f = &l->stack[--l->depth];
	bool ok = true;

	if (f->anchor)
		ok = anchor_add(l, f->anchor, f->node, false, &ev->start_mark);
	free(f->anchor);
	free(f->key);
	*f = (struct yframe){ 0 };
	return ok;
}

static struct json *load(const char *data, size_t len, bool all, struct json_error *err)
{
	struct loader l = { .err = err, .text = data };
	struct json *docs = NULL, *single = NULL;
	yaml_mark_t zero = { 0 };
	size_t ndocs = 0;
	bool ok = false, done = false;

	if (err)
		memset(err, 0, sizeof(*err));
	if (len > YAMLDOC_MAX_BYTES) {
		json_error_set(err, data, YAMLDOC_MAX_BYTES, "input larger than %zu bytes",
			       (size_t)YAMLDOC_MAX_BYTES);
		return NULL;
	}
	if (!yaml_parser_initialize(&l.parser)) {
		fail(&l, &zero, "out of memory");
		return NULL;
	}
	yaml_parser_set_input_string(&l.parser, (const unsigned char *)data, len);
	docs = all ? json_new_array() : NULL;
	if (all && !docs) {
		fail(&l, &zero, "out of memory");
		goto out;
	}
	while (!done) {
		yaml_event_t ev;
		bool step = true;

		if (!yaml_parser_parse(&l.parser, &ev)) {
			fail_parser(&l);
			goto out;
		}
		switch (ev.type) {
		case YAML_STREAM_END_EVENT:
			done = true;
			break;
		case YAML_DOCUMENT_START_EVENT:
			if (!all && ndocs > 0)
				step = fail(&l, &ev.start_mark,
					    "expected a single YAML document, found another");
			break;
		case YAML_DOCUMENT_END_EVENT:
			ndocs++;
			/* Anchors do not reach across documents. */
			anchors_clear(&l);
			l.alias_nodes = 0;
			if (!all) {
				single = l.root;
			} else if (json_is_null(l.root)) {
				json_free(l.root);
			} else if (json_array_append(docs, l.root)) {
				l.root = NULL;
				step = fail(&l, &ev.start_mark, "out of memory");
			}
			l.root = NULL;
			break;
		case YAML_SCALAR_EVENT:
			step = on_scalar(&l, &ev);
			break;
		case YAML_ALIAS_EVENT:
			step = on_alias(&l, &ev);
			break;
		case YAML_SEQUENCE_START_EVENT:
			step = on_start(&l, &ev, false);
			break;
		case YAML_MAPPING_START_EVENT:
			step = on_start(&l, &ev, true);
			break;
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT:
			step = on_end(&l, &ev);
			break;
		default:
			break;
		}
		yaml_event_delete(&ev);
		if (!step)
			goto out;
	}
	if (!all && ndocs == 0) {
		fail(&l, &l.parser.mark, "no YAML document");
		goto out;
	}
	ok = true;
out:
	loader_reset(&l);
	free(l.anchors);
	yaml_parser_delete(&l.parser);
	if (!ok) {
		json_free(docs);
		json_free(single);
		return NULL;
	}
	return all ? docs : single;
}

struct json *yamldoc_parse(const char *data, size_t len, struct json_error *err)
{
	return load(data, len, false, err);
}

struct json *yamldoc_parse_all(const char *data, size_t len, struct json_error *err)
{
	return load(data, len, true, err);
}

/* ---- dumping --------------------------------------------------------- */

/* Would a plain scalar with this text read back as something other than
 * this string, here or in a YAML 1.1 reader (kubectl's, for one)? */
static bool needs_quotes(const char *s, size_t len)
{
	static const char *const yaml11[] = {
		"y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO",
		"on", "On", "ON", "off", "Off", "OFF", "<<", "=", NULL,
	};
	int base;
	double d;
	bool b;

	if (memchr(s, '\0', len))
		return true;
	if (resolve(s, &base, &d, &b) != R_STR || is_one_of(s, yaml11))
		return true;
	/* 1.1 also has 0b101, 1_000, 0755, 1:20 (base 60)... quote anything
	 * that starts like a number and holds only number characters. */
	if (is_digit(s[0]) || ((s[0] == '-' || s[0] == '+' || s[0] == '.') && is_digit(s[1]))) {
		if (strspn(s, "0123456789abcdefABCDEFxXoObB_.:+-") == len)
			return true;
	}
	return false;
}

static int emit(yaml_emitter_t *e, yaml_event_t *ev, bool made)
{
	if (!made)
		return -EINVAL; /* the initializers refuse invalid UTF-8 */
	return yaml_emitter_emit(e, ev) ? 0 : -EIO;
}

static int emit_scalar(yaml_emitter_t *e, const char *s, size_t len, bool string)
{
	yaml_scalar_style_t style = YAML_ANY_SCALAR_STYLE;
	yaml_event_t ev;
	int plain_ok = 1;

	if (string && needs_quotes(s, len)) {
		style = YAML_DOUBLE_QUOTED_SCALAR_STYLE;
		plain_ok = 0;
	} else if (string && memchr(s, '\n', len)) {
		style = YAML_LITERAL_SCALAR_STYLE; /* libyaml falls back if it must */
	}
	return emit(e, &ev, yaml_scalar_event_initialize(&ev, NULL, NULL,
		(yaml_char_t *)s, (int)len, plain_ok, 1, style));
}

static int emit_node(yaml_emitter_t *e, const struct json *j, int depth)
{
	char num[40];
	yaml_event_t ev;
	const char *k, *s;
	struct json *v;
	size_t i, len;
	int rc;

	switch (json_type(j)) {
	case JSON_NULL:
		return emit_scalar(e, "null", 4, false);
	case JSON_BOOL:
		return json_bool(j, false) ? emit_scalar(e, "true", 4, false) :
					     emit_scalar(e, "false", 5, false);
	case JSON_NUMBER:
		if (json_is_int(j)) {
			snprintf(num, sizeof(num), "%lld", (long long)json_int(j, 0));
		} else {
			double d = json_double(j, 0);

			if (d != d) {
				snprintf(num, sizeof(num), ".nan");
			} else if (d > 1.7976931348623157e308 || d < -1.7976931348623157e308) {
				snprintf(num, sizeof(num), "%s.inf", d < 0 ? "-" : "");
			} else {
				for (int prec = 15; prec <= 17; prec++) {
					snprintf(num, sizeof(num), "%.*g", prec, d);
					if (strtod(num, NULL) == d)
						break;
				}
			}
		}
		return emit_scalar(e, num, strlen(num), false);
	case JSON_STRING:
		s = json_strn(j, &len);
		if (len > INT_MAX)
			return -EINVAL;
		return emit_scalar(e, s, len, true);
	case JSON_ARRAY:
		if (depth > JSON_MAX_DEPTH)
			return -EINVAL;
		if ((rc = emit(e, &ev, yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1,
				YAML_ANY_SEQUENCE_STYLE))))
			return rc;
		for (i = 0; i < json_array_len(j); i++)
			if ((rc = emit_node(e, json_array_at(j, i), depth + 1)))
				return rc;
		return emit(e, &ev, yaml_sequence_end_event_initialize(&ev));
	case JSON_OBJECT:
		if (depth > JSON_MAX_DEPTH)
			return -EINVAL;
		if ((rc = emit(e, &ev, yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1,
				YAML_ANY_MAPPING_STYLE))))
			return rc;
		for (i = 0; (v = json_object_at(j, i, &k, &len)); i++) {
			if (len > INT_MAX)
				return -EINVAL;
			if ((rc = emit_scalar(e, k, len, true)) || (rc = emit_node(e, v, depth + 1)))
				return rc;
		}
		return emit(e, &ev, yaml_mapping_end_event_initialize(&ev));
	}
	return -EINVAL;
}

struct emit_out {
	struct buf *out;
	int err;
};

static int write_out(void *data, unsigned char *p, size_t n)
{
	struct emit_out *o = data;

	if (!o->err)
		o->err = buf_add(o->out, p, n);
	return o->err ? 0 : 1;
}

int yamldoc_dump(const struct json *j, struct buf *out)
{
	struct emit_out o = { .out = out };
	yaml_emitter_t e;
	yaml_event_t ev;
	int rc;

	if (!j)
		return -EINVAL;
	if (!yaml_emitter_initialize(&e))
		return -ENOMEM;
	yaml_emitter_set_output(&e, write_out, &o);
	yaml_emitter_set_unicode(&e, 1);
	yaml_emitter_set_width(&e, -1);
	yaml_emitter_set_indent(&e, 2);
	rc = emit(&e, &ev, yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING));
	if (!rc)
		rc = emit(&e, &ev, yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1));
	if (!rc)
		rc = emit_node(&e, j, 1);
	if (!rc)
		rc = emit(&e, &ev, yaml_document_end_event_initialize(&ev, 1));
	if (!rc)
		rc = emit(&e, &ev, yaml_stream_end_event_initialize(&ev));
	if (!rc && !yaml_emitter_flush(&e))
		rc = -EIO;
	yaml_emitter_delete(&e);
	if (o.err)
		return o.err;
	return rc;
}
