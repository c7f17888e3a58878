#include "metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

enum kind { COUNTER, GAUGE, HISTOGRAM };

static const char *const kind_names[] = { "counter", "gauge", "histogram" };

static const double default_bounds[] = { .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10 };

struct metric {
	struct metrics_family *f;
	char **values; /* f->nlabels label values; immutable */
	/* counter, gauge: the value's bits, updated with CAS */
	_Atomic uint64_t bits;
	/* histogram, guarded by f->lock: per-bucket (not cumulative) counts,
	 * the last one for +Inf */
	uint64_t *counts;
	double sum;
	uint64_t count;
	struct metric *next;
};

struct metrics_family {
	struct metrics *m;
	enum kind kind;
	char *name;
	char *help;
	char **labels;
	size_t nlabels;
	double *bounds; /* histogram, without +Inf */
	size_t nbounds;
	metrics_value_fn fn; /* func families: no series */
	void *fn_arg;
	pthread_mutex_t lock; /* guards series, tail, nseries, and histogram data */
	struct metric *series, **tail;
	size_t nseries;
	struct metrics_family *next;
};

struct metrics {
	pthread_mutex_t lock; /* guards families, tail (registration, render), collect */
	struct metrics_family *families, **tail;
	metrics_collect_fn collect;
	void *collect_arg;
};

/* ---- atomic doubles ------------------------------------------------------ */

static uint64_t to_bits(double v)
{
	uint64_t u;

	memcpy(&u, &v, sizeof(u));
	return u;
}

static double from_bits(uint64_t u)
{
	double v;

	memcpy(&v, &u, sizeof(v));
	return v;
}

static void atomic_add_double(_Atomic uint64_t *p, double v)
{
	uint64_t old = atomic_load_explicit(p, memory_order_relaxed);

	while (!atomic_compare_exchange_weak_explicit(p, &old, to_bits(from_bits(old) + v),
						      memory_order_relaxed, memory_order_relaxed))
		;
}

/* ---- validation ------------------------------------------------------------ */

static bool name_ok(const char *s, bool colon)
{
	if (!s || !*s || (*s >= '0' && *s <= '9'))
		return false;
	for (; *s; s++) {
		char c = *s;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || (colon && c == ':')))
			return false;
	}
	return true;
}

static bool utf8_ok(const unsigned char *s)
{
	while (*s) {
		unsigned c = *s++;
		int n;
		uint32_t cp, min;
		if (c < 0x80)
			continue;
		if ((c & 0xe0) == 0xc0) {
			n = 1, cp = c & 0x1f, min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			n = 2, cp = c & 0x0f, min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			n = 3, cp = c & 0x07, min = 0x10000;
		} else {
			return false;
		}
		while (n--) {
			if ((*s & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (*s++ & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
	}
	return true;
}

static const char *const hist_suffixes[] = { "_bucket", "_sum", "_count" };

static bool is_derived(const char *name, const char *base)
{
	size_t n = strlen(base);

	if (strncmp(name, base, n))
		return false;
	for (size_t i = 0; i < 3; i++)
		if (!strcmp(name + n, hist_suffixes[i]))
			return true;
	return false;
}

/* Does name (of kind k) clash with a registered family? m->lock held. */
static bool name_taken(const struct metrics *m, const char *name, enum kind k)
{
	for (const struct metrics_family *f = m->families; f; f = f->next) {
		if (!strcmp(f->name, name))
			return true;
		if (f->kind == HISTOGRAM && is_derived(name, f->name))
			return true;
		if (k == HISTOGRAM && is_derived(f->name, name))
			return true;
	}
	return false;
}

/* ---- registry ---------------------------------------------------------------- */

struct metrics *metrics_new(void)
{
	struct metrics *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	pthread_mutex_init(&m->lock, NULL);
	m->tail = &m->families;
	return m;
}

static void metric_free(struct metric *x, size_t nlabels)
{
	if (!x)
		return;
	if (x->values)
		for (size_t i = 0; i < nlabels; i++)
			free(x->values[i]);
	free(x->values);
	free(x->counts);
	free(x);
}

static void family_free(struct metrics_family *f)
{
	struct metric *x, *next;

	if (!f)
		return;
	for (x = f->series; x; x = next) {
		next = x->next;
		metric_free(x, f->nlabels);
	}
	if (f->labels)
		for (size_t i = 0; i < f->nlabels; i++)
			free(f->labels[i]);
	free(f->labels);
	free(f->bounds);
	free(f->name);
	free(f->help);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

void metrics_free(struct metrics *m)
{
	struct metrics_family *f, *next;

	if (!m)
		return;
	for (f = m->families; f; f = next) {
		next = f->next;
		family_free(f);
	}
	pthread_mutex_destroy(&m->lock);
	free(m);
}

static struct metric *series_new(struct metrics_family *f, const char *const *values)
{
	struct metric *x = calloc(1, sizeof(*x));

	if (!x)
		return NULL;
	x->f = f;
	if (f->nlabels) {
		x->values = calloc(f->nlabels, sizeof(*x->values));
		if (!x->values)
			goto fail;
		for (size_t i = 0; i < f->nlabels; i++)
			if (!(x->values[i] = strdup(values[i])))
				goto fail;
	}
	if (f->kind == HISTOGRAM) {
		x->counts = calloc(f->nbounds + 1, sizeof(*x->counts));
		if (!x->counts)
			goto fail;
	}
	atomic_init(&x->bits, to_bits(0));
	return x;
fail:
	metric_free(x, f->nlabels);
	return NULL;
}

/* Appends x to f's series. f->lock held. */
static void series_link(struct metrics_family *f, struct metric *x)
{
	*f->tail = x;
	f->tail = &x->next;
	f->nseries++;
}

static struct metrics_family *family_new(struct metrics *m, enum kind kind, const char *name,
					 const char *help, const char *const *labels,
					 const double *bounds, size_t nbounds)
{
	struct metrics_family *f = NULL;
	size_t nlabels = 0;
	int err = EINVAL;

	if (!name_ok(name, true))
		goto fail;
	for (; labels && labels[nlabels]; nlabels++) {
		const char *l = labels[nlabels];
		if (!name_ok(l, false) || !strncmp(l, "__", 2) ||
		    (kind == HISTOGRAM && !strcmp(l, "le")))
			goto fail;
		for (size_t j = 0; j < nlabels; j++)
			if (!strcmp(labels[j], l))
				goto fail;
	}
	if (kind == HISTOGRAM) {
		if (!bounds || !nbounds) {
			bounds = default_bounds;
			nbounds = sizeof(default_bounds) / sizeof(default_bounds[0]);
		}
		if (isinf(bounds[nbounds - 1]) && bounds[nbounds - 1] > 0)
			nbounds--;
		if (nbounds > METRICS_MAX_BUCKETS)
			goto fail;
		for (size_t i = 0; i < nbounds; i++)
			if (isnan(bounds[i]) || isinf(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1]))
				goto fail;
	}

	err = ENOMEM;
	f = calloc(1, sizeof(*f));
	if (!f)
		goto fail;
	pthread_mutex_init(&f->lock, NULL);
	f->m = m;
	f->kind = kind;
	f->tail = &f->series;
	f->name = strdup(name);
	if (!f->name || (help && !(f->help = strdup(help))))
		goto fail;
	if (nlabels) {
		f->labels = calloc(nlabels, sizeof(*f->labels));
		if (!f->labels)
			goto fail;
		f->nlabels = nlabels;
		for (size_t i = 0; i < nlabels; i++)
			if (!(f->labels[i] = strdup(labels[i])))
				goto fail;
	}
	if (kind == HISTOGRAM && nbounds) {
		f->bounds = malloc(nbounds * sizeof(*f->bounds));
		if (!f->bounds)
			goto fail;
		memcpy(f->bounds, bounds, nbounds * sizeof(*f->bounds));
	}
	f->nbounds = nbounds;
	return f;
fail:
	family_free(f);
	errno = err;
	return NULL;
}

/* Publishes f unless its name is taken; an unlabelled non-func family gets
 * its one series now so that it renders from the start. */
static struct metrics_family *family_register(struct metrics *m, struct metrics_family *f)
{
	int err = 0;

	if (!f)
		return NULL;
	if (!f->nlabels && !f->fn) {
		struct metric *x = series_new(f, NULL);
		if (!x) {
			family_free(f);
			errno = ENOMEM;
			return NULL;
		}
		series_link(f, x);
	}
	pthread_mutex_lock(&m->lock);
	if (name_taken(m, f->name, f->kind)) {
		err = EEXIST;
	} else {
		*m->tail = f;
		m->tail = &f->next;
	}
	pthread_mutex_unlock(&m->lock);
	if (err) {
		family_free(f);
		errno = err;
		return NULL;
	}
	return f;
}

struct metrics_family *metrics_counter_new(struct metrics *m, const char *name, const char *help,
					   const char *const *labels)
{
	return family_register(m, family_new(m, COUNTER, name, help, labels, NULL, 0));
}

struct metrics_family *metrics_gauge_new(struct metrics *m, const char *name, const char *help,
					 const char *const *labels)
{
	return family_register(m, family_new(m, GAUGE, name, help, labels, NULL, 0));
}

struct metrics_family *metrics_histogram_new(struct metrics *m, const char *name, const char *help,
					     const char *const *labels, const double *bounds,
					     size_t nbounds)
{
	return family_register(m, family_new(m, HISTOGRAM, name, help, labels, bounds, nbounds));
}

static struct metrics_family *func_new(struct metrics *m, enum kind kind, const char *name,
				       const char *help, metrics_value_fn fn, void *arg)
{
	struct metrics_family *f;

	if (!fn) {
		errno = EINVAL;
		return NULL;
	}
	f = family_new(m, kind, name, help, NULL, NULL, 0);
	if (!f)
		return NULL;
	f->fn = fn;
	f->fn_arg = arg;
	return family_register(m, f);
}

struct metrics_family *metrics_gauge_func_new(struct metrics *m, const char *name, const char *help,
					      metrics_value_fn fn, void *arg)
{
	return func_new(m, GAUGE, name, help, fn, arg);
}

struct metrics_family *metrics_counter_func_new(struct metrics *m, const char *name,
						const char *help, metrics_value_fn fn, void *arg)
{
	return func_new(m, COUNTER, name, help, fn, arg);
}

struct metric *metrics_with(struct metrics_family *f, const char *const *values)
{
	struct metric *x = NULL;
	size_t n = 0;
	int err = 0;

	if (!f || f->fn) {
		errno = EINVAL;
		return NULL;
	}
	while (values && values[n])
		n++;
	if (n != f->nlabels) {
		errno = EINVAL;
		return NULL;
	}
	pthread_mutex_lock(&f->lock);
	for (x = f->series; x; x = x->next) {
		size_t i = 0;
		while (i < n && !strcmp(x->values[i], values[i]))
			i++;
		if (i == n)
			goto out;
	}
	for (size_t i = 0; i < n; i++)
		if (strlen(values[i]) > METRICS_MAX_LABEL_VALUE ||
		    !utf8_ok((const unsigned char *)values[i])) {
			err = EINVAL;
			goto out;
		}
	if (f->nseries >= METRICS_MAX_SERIES) {
		err = ENOSPC;
		goto out;
	}
	x = series_new(f, values);
	if (!x) {
		err = ENOMEM;
		goto out;
	}
	series_link(f, x);
out:
	pthread_mutex_unlock(&f->lock);
	if (err)
		errno = err;
	return x;
}

/* ---- updates ------------------------------------------------------------------ */

void metrics_inc(struct metric *x)
{
	metrics_add(x, 1);
}

void metrics_add(struct metric *x, double v)
{
	if (!x || x->f->kind == HISTOGRAM || isnan(v) || (x->f->kind == COUNTER && v < 0))
		return;
	atomic_add_double(&x->bits, v);
}

void metrics_set(struct metric *x, double v)
{
	if (!x || x->f->kind != GAUGE)
		return;
	atomic_store_explicit(&x->bits, to_bits(v), memory_order_relaxed);
}

void metrics_observe(struct metric *x, double v)
{
	struct metrics_family *f;
	size_t i = 0;

	if (!x || x->f->kind != HISTOGRAM || isnan(v))
		return;
	f = x->f;
	while (i < f->nbounds && v > f->bounds[i])
		i++;
	pthread_mutex_lock(&f->lock);
	x->counts[i]++;
	x->sum += v;
	x->count++;
	pthread_mutex_unlock(&f->lock);
}

double metrics_value(struct metric *x)
{
	double v;

	if (!x)
		return 0;
	if (x->f->kind != HISTOGRAM)
		return from_bits(atomic_load_explicit(&x->bits, memory_order_relaxed));
	pthread_mutex_lock(&x->f->lock);
	v = (double)x->count;
	pthread_mutex_unlock(&x->f->lock);
	return v;
}

/* ---- exposition format 0.0.4 ------------------------------------------------------- */

/* Go's strconv style as Prometheus prints it: integers plainly, others in
 * the shortest form that reads back exactly. */
static int add_double(struct buf *b, double v)
{
	char s[40];

	if (isnan(v))
		return buf_add_str(b, "NaN");
	if (isinf(v))
		return buf_add_str(b, v > 0 ? "+Inf" : "-Inf");
	if (v > -1e15 && v < 1e15 && v == (double)(int64_t)v)
		return buf_addf(b, "%" PRId64, (int64_t)v);
	snprintf(s, sizeof(s), "%.15g", v);
	if (strtod(s, NULL) != v)
		snprintf(s, sizeof(s), "%.17g", v);
	return buf_add_str(b, s);
}

/* HELP text escapes \ and newline; label values also ". */
static int add_escaped(struct buf *b, const char *s, bool quote)
{
	int err = 0;

	for (; *s && !err; s++) {
		if (*s == '\\')
			err = buf_add_str(b, "\\\\");
		else if (*s == '\n')
			err = buf_add_str(b, "\\n");
		else if (quote && *s == '"')
			err = buf_add_str(b, "\\\"");
		else
			err = buf_add_byte(b, (uint8_t)*s);
	}
	return err;
}

/* {a="x",b="y"[,le="..."]} or nothing. */
static int add_labels(struct buf *b, const struct metrics_family *f, const struct metric *x,
		      const double *le)
{
	int err = 0;

	if (!f->nlabels && !le)
		return 0;
	err = buf_add_byte(b, '{');
	for (size_t i = 0; i < f->nlabels && !err; i++) {
		err = buf_addf(b, "%s%s=\"", i ? "," : "", f->labels[i]);
		if (!err)
			err = add_escaped(b, x->values[i], true);
		if (!err)
			err = buf_add_byte(b, '"');
	}
	if (le && !err) {
		err = buf_addf(b, "%sle=\"", f->nlabels ? "," : "");
		if (!err)
			err = add_double(b, *le);
		if (!err)
			err = buf_add_byte(b, '"');
	}
	if (!err)
		err = buf_add_byte(b, '}');
	return err;
}

static int add_sample(struct buf *b, const struct metrics_family *f, const char *suffix,
		      const struct metric *x, const double *le, double v)
{
	int err = buf_addf(b, "%s%s", f->name, suffix);

	if (!err && x)
		err = add_labels(b, f, x, le);
	if (!err)
		err = buf_add_byte(b, ' ');
	if (!err)
		err = add_double(b, v);
	if (!err)
		err = buf_add_byte(b, '\n');
	return err;
}

/* f->lock held. */
static int render_histogram(struct buf *b, const struct metrics_family *f, const struct metric *x)
{
	const double inf = INFINITY;
	uint64_t cum = 0;
	int err = 0;

	for (size_t i = 0; i <= f->nbounds && !err; i++) {
		cum += x->counts[i];
		err = add_sample(b, f, "_bucket", x, i < f->nbounds ? &f->bounds[i] : &inf,
				 (double)cum);
	}
	if (!err)
		err = add_sample(b, f, "_sum", x, NULL, x->sum);
	if (!err)
		err = add_sample(b, f, "_count", x, NULL, (double)x->count);
	return err;
}

static int render_family(struct buf *b, struct metrics_family *f)
{
	int err = 0;

	if (f->help) {
		err = buf_addf(b, "# HELP %s ", f->name);
		if (!err)
			err = add_escaped(b, f->help, false);
		if (!err)
			err = buf_add_byte(b, '\n');
	}
	if (!err)
		err = buf_addf(b, "# TYPE %s %s\n", f->name, kind_names[f->kind]);
	if (err)
		return err;
	if (f->fn)
		return add_sample(b, f, "", NULL, NULL, f->fn(f->fn_arg));

	pthread_mutex_lock(&f->lock);
	for (const struct metric *x = f->series; x && !err; x = x->next) {
		if (f->kind == HISTOGRAM)
			err = render_histogram(b, f, x);
		else
			err = add_sample(b, f, "", x, NULL,
					 from_bits(atomic_load_explicit(&x->bits, memory_order_relaxed)));
	}
	pthread_mutex_unlock(&f->lock);
	return err;
}

void metrics_set_collector(struct metrics *m, metrics_collect_fn fn, void *arg)
{
	pthread_mutex_lock(&m->lock);
	m->collect = fn;
	m->collect_arg = arg;
	pthread_mutex_unlock(&m->lock);
}

int metrics_render(struct metrics *m, struct buf *out)
{
	metrics_collect_fn collect;
	void *arg;
	int err = 0;

	pthread_mutex_lock(&m->lock);
	collect = m->collect;
	arg = m->collect_arg;
	pthread_mutex_unlock(&m->lock);
	if (collect)
		collect(arg);
	pthread_mutex_lock(&m->lock);
	for (struct metrics_family *f = m->families; f && !err; f = f->next)
		err = render_family(out, f);
	pthread_mutex_unlock(&m->lock);
	return err;
}
