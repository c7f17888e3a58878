/* A string-keyed hash map (separate chaining, power-of-two buckets, grows
 * at load 1). Keys are copied; values are the caller's. Not thread-safe:
 * the owner locks. */
#ifndef KNIT_STRMAP_H
#define KNIT_STRMAP_H

#include <stdbool.h>
#include <stddef.h>

struct strmap;

struct strmap *strmap_new(void);
/* Frees the map and its keys; values are not touched. */
void strmap_free(struct strmap *m);
size_t strmap_len(const struct strmap *m);
void *strmap_get(const struct strmap *m, const char *key);
bool strmap_has(const struct strmap *m, const char *key);
/* Inserts or replaces; *old (if non-NULL) gets the replaced value or NULL.
 * -ENOMEM on failure (map unchanged). */
int strmap_set(struct strmap *m, const char *key, void *value, void **old);
/* Removes key; returns its value (NULL if absent). */
void *strmap_del(struct strmap *m, const char *key);

/* Iteration: for (it = strmap_first(m); it; it = strmap_next(m, it)).
 * Deleting the current entry during iteration is not allowed; collect keys
 * first. */
struct strmap_entry;
struct strmap_entry *strmap_first(const struct strmap *m);
struct strmap_entry *strmap_next(const struct strmap *m, struct strmap_entry *e);
const char *strmap_key(const struct strmap_entry *e);
void *strmap_value(const struct strmap_entry *e);

#endif
