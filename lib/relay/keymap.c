/* Key-indexed hash map; see keymap.h. Separate chaining, power-of-two
 * buckets, grows at load 1. */
#include "relay/keymap.h"

#include <errno.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

struct entry {
	struct entry *next;
	uint8_t key[32];
	void *value;
};

struct keymap {
	struct entry **buckets;
	size_t nbuckets, len;
	uint8_t sipkey[crypto_shorthash_KEYBYTES];
};

static size_t slot(const struct keymap *m, const uint8_t key[32], size_t nbuckets)
{
	uint8_t h[crypto_shorthash_BYTES];
	uint64_t v;

	crypto_shorthash(h, key, 32, m->sipkey);
	memcpy(&v, h, sizeof(v));
	return (size_t)(v & (nbuckets - 1));
}

struct keymap *keymap_new(void)
{
	struct keymap *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->nbuckets = 16;
	m->buckets = calloc(m->nbuckets, sizeof(*m->buckets));
	if (!m->buckets) {
		free(m);
		return NULL;
	}
	randombytes_buf(m->sipkey, sizeof(m->sipkey));
	return m;
}

void keymap_free(struct keymap *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->nbuckets; i++) {
		struct entry *e = m->buckets[i], *n;

		for (; e; e = n) {
			n = e->next;
			free(e);
		}
	}
	free(m->buckets);
	free(m);
}

size_t keymap_len(const struct keymap *m)
{
	return m->len;
}

static struct entry **find(const struct keymap *m, const uint8_t key[32])
{
	struct entry **pe = &m->buckets[slot(m, key, m->nbuckets)];

	while (*pe && memcmp((*pe)->key, key, 32) != 0)
		pe = &(*pe)->next;
	return pe;
}

void *keymap_get(const struct keymap *m, const uint8_t key[32])
{
	struct entry *e = *find(m, key);

	return e ? e->value : NULL;
}

static void grow(struct keymap *m)
{
	size_t n = m->nbuckets * 2;
	struct entry **b = calloc(n, sizeof(*b));

	if (!b)
		return; /* stays correct, only slower */
	for (size_t i = 0; i < m->nbuckets; i++) {
		struct entry *e = m->buckets[i], *next;

		for (; e; e = next) {
			size_t s = slot(m, e->key, n);

			next = e->next;
			e->next = b[s];
			b[s] = e;
		}
	}
	free(m->buckets);
	m->buckets = b;
	m->nbuckets = n;
}

int keymap_set(struct keymap *m, const uint8_t key[32], void *value, void **old)
{
	struct entry **pe = find(m, key), *e;

	if (*pe) {
		if (old)
			*old = (*pe)->value;
		(*pe)->value = value;
		return 0;
	}
	e = malloc(sizeof(*e));
	if (!e)
		return -ENOMEM;
	memcpy(e->key, key, 32);
	e->value = value;
	e->next = NULL;
	*pe = e;
	m->len++;
	if (old)
		*old = NULL;
	if (m->len > m->nbuckets)
		grow(m);
	return 0;
}

void *keymap_del(struct keymap *m, const uint8_t key[32])
{
	struct entry **pe = find(m, key), *e = *pe;
	void *v;

	if (!e)
		return NULL;
	*pe = e->next;
	v = e->value;
	free(e);
	m->len--;
	return v;
}

void keymap_each(const struct keymap *m, void (*fn)(const uint8_t key[32], void *value, void *arg),
		 void *arg)
{
	for (size_t i = 0; i < m->nbuckets; i++)
		for (struct entry *e = m->buckets[i]; e; e = e->next)
			fn(e->key, e->value, arg);
}
