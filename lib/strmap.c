#include "strmap.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct strmap_entry {
	struct strmap_entry *next;
	void *value;
	uint64_t hash;
	char key[];
};

struct strmap {
	struct strmap_entry **buckets;
	size_t nbuckets; /* power of two */
	size_t len;
};

/* FNV-1a: keys are short names; no attacker chooses enough of them to
 * matter, and the table grows anyway. */
static uint64_t hash_str(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ull;
	}
	return h;
}

struct strmap *strmap_new(void)
{
	struct strmap *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->nbuckets = 16;
	m->buckets = calloc(m->nbuckets, sizeof(*m->buckets));
	if (!m->buckets) {
		free(m);
		return NULL;
	}
	return m;
}

void strmap_free(struct strmap *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->nbuckets; i++) {
		struct strmap_entry *e = m->buckets[i], *n;
		for (; e; e = n) {
			n = e->next;
			free(e);
		}
	}
	free(m->buckets);
	free(m);
}

size_t strmap_len(const struct strmap *m)
{
	return m->len;
}

static struct strmap_entry **find(const struct strmap *m, const char *key, uint64_t h)
{
	struct strmap_entry **p = &m->buckets[h & (m->nbuckets - 1)];

	for (; *p; p = &(*p)->next)
		if ((*p)->hash == h && strcmp((*p)->key, key) == 0)
			return p;
	return p;
}

void *strmap_get(const struct strmap *m, const char *key)
{
	struct strmap_entry *e = *find(m, key, hash_str(key));

	return e ? e->value : NULL;
}

bool strmap_has(const struct strmap *m, const char *key)
{
	return *find(m, key, hash_str(key)) != NULL;
}

static void grow(struct strmap *m)
{
	size_t n = m->nbuckets * 2;
	struct strmap_entry **b = calloc(n, sizeof(*b));

	if (!b)
		return; /* keep working with longer chains */
	for (size_t i = 0; i < m->nbuckets; i++) {
		struct strmap_entry *e = m->buckets[i], *next;
		for (; e; e = next) {
			next = e->next;
			e->next = b[e->hash & (n - 1)];
			b[e->hash & (n - 1)] = e;
		}
	}
	free(m->buckets);
	m->buckets = b;
	m->nbuckets = n;
}

int strmap_set(struct strmap *m, const char *key, void *value, void **old)
{
	uint64_t h = hash_str(key);
	struct strmap_entry **p = find(m, key, h), *e;
	size_t klen;

	if (*p) {
		if (old)
			*old = (*p)->value;
		(*p)->value = value;
		return 0;
	}
	klen = strlen(key);
	e = malloc(sizeof(*e) + klen + 1);
	if (!e)
		return -ENOMEM;
	e->hash = h;
	e->value = value;
	memcpy(e->key, key, klen + 1);
	e->next = NULL;
	*p = e;
	m->len++;
	if (old)
		*old = NULL;
	if (m->len > m->nbuckets)
		grow(m);
	return 0;
}

void *strmap_del(struct strmap *m, const char *key)
{
	struct strmap_entry **p = find(m, key, hash_str(key)), *e = *p;
	void *v;

	if (!e)
		return NULL;
	*p = e->next;
	v = e->value;
	free(e);
	m->len--;
	return v;
}

struct strmap_entry *strmap_first(const struct strmap *m)
{
	for (size_t i = 0; i < m->nbuckets; i++)
		if (m->buckets[i])
			return m->buckets[i];
	return NULL;
}

struct strmap_entry *strmap_next(const struct strmap *m, struct strmap_entry *e)
{
	if (e->next)
		return e->next;
	for (size_t i = (e->hash & (m->nbuckets - 1)) + 1; i < m->nbuckets; i++)
		if (m->buckets[i])
			return m->buckets[i];
	return NULL;
}

const char *strmap_key(const struct strmap_entry *e)
{
	return e->key;
}

void *strmap_value(const struct strmap_entry *e)
{
	return e->value;
}
