/* A Prometheus registry: counters, gauges and histograms, optionally with
 * labels, rendered in the text exposition format 0.0.4.
 *
 *   struct metrics_family *rec = metrics_counter_new(m, "knit_reconciles_total",
 *		"Reconciles by kind and result.", (const char *[]){ "kind", "result", NULL });
 *   metrics_inc(METRICS_WITH(rec, "AuthKey", "error"));
 *
 * A family is registered once; each distinct set of label values is a
 * series, made on first use and kept (its pointer stable) until the
 * registry is freed, so hot paths look it up once and keep it. Unlabelled
 * families have one series, present (as 0) from registration on.
 *
 * Thread-safe: any thread may register, look up, update and render.
 * Counter and gauge updates are lock-free; a histogram observation takes
 * its family's lock. The update functions accept NULL (a failed lookup)
 * and a series of the wrong kind, and then do nothing: a metric must never
 * be the reason a daemon crashes. */
#ifndef KNIT_METRICS_H
#define KNIT_METRICS_H

#include <stddef.h>

struct buf;
struct metrics;
struct metrics_family;
struct metric;

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
/* Series per family: label values can come from outside (a CRD's kind). */
#define METRICS_MAX_SERIES 10000u
#define METRICS_MAX_LABEL_VALUE 1024u
#define METRICS_MAX_BUCKETS 128u

typedef double (*metrics_value_fn)(void *arg);

struct metrics *metrics_new(void);
void metrics_free(struct metrics *m);

/* Registration. name must match [a-zA-Z_:][a-zA-Z0-9_:]*, label names
 * [a-zA-Z_][a-zA-Z0-9_]* without a leading "__" (and not "le" for a
 * histogram), no duplicates; labels is NULL-terminated or NULL; help may be
 * NULL (no HELP line). Strings are copied. NULL with errno EINVAL (bad
 * name, labels or buckets), EEXIST (name, or a histogram's _bucket/_sum/
 * _count, already taken) or ENOMEM. */
struct metrics_family *metrics_counter_new(struct metrics *m, const char *name, const char *help,
					   const char *const *labels);
struct metrics_family *metrics_gauge_new(struct metrics *m, const char *name, const char *help,
					 const char *const *labels);
/* bounds: strictly increasing upper bounds (a trailing +Inf may be given or
 * not; it is always there). NULL/0: the Prometheus defaults .005 .. 10. */
struct metrics_family *metrics_histogram_new(struct metrics *m, const char *name, const char *help,
					     const char *const *labels, const double *bounds,
					     size_t nbounds);
/* Unlabelled, evaluated at render time (queue depth, kernel counters). fn
 * runs on the rendering thread with the registry locked: it must not call
 * into the registry. */
struct metrics_family *metrics_gauge_func_new(struct metrics *m, const char *name, const char *help,
					      metrics_value_fn fn, void *arg);
struct metrics_family *metrics_counter_func_new(struct metrics *m, const char *name,
						const char *help, metrics_value_fn fn, void *arg);

/* The series for these label values (NULL-terminated, one per label name;
 * NULL for an unlabelled family). NULL with errno EINVAL (wrong count,
 * invalid UTF-8, value over METRICS_MAX_LABEL_VALUE), ENOSPC (family at
 * METRICS_MAX_SERIES) or ENOMEM. */
struct metric *metrics_with(struct metrics_family *f, const char *const *values);
#define METRICS_WITH(f, ...) metrics_with((f), (const char *const[]){ __VA_ARGS__, NULL })

/* Counters: inc/add (negative and NaN amounts are ignored). Gauges:
 * inc/add/set. Histograms: observe (NaN ignored). */
void metrics_inc(struct metric *x);
void metrics_add(struct metric *x, double v);
void metrics_set(struct metric *x, double v);
void metrics_observe(struct metric *x, double v);
/* A counter's or gauge's value, a histogram's count; 0 for NULL. */
double metrics_value(struct metric *x);

/* A collector runs at the start of every metrics_render(), on the
 * rendering thread and before the registry is locked, so it may mirror
 * another component's own counters into series (metrics_add() what they
 * grew by, metrics_set() a gauge) just before they are read. One per
 * registry; fn NULL removes it. */
typedef void (*metrics_collect_fn)(void *arg);
void metrics_set_collector(struct metrics *m, metrics_collect_fn fn, void *arg);

/* Appends the whole registry to out in registration order (series in
 * creation order). Returns 0, -ENOSPC (out's cap) or -ENOMEM; on error out
 * is left as buf_add() leaves it (empty). */
int metrics_render(struct metrics *m, struct buf *out);

#endif
