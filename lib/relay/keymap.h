/* A hash map from 32-byte public keys to the caller's values: the relay's
 * client table and its table of clients on meshed relays. Keys are chosen
 * by whoever connects, so buckets are picked with SipHash under a random
 * per-map key (libsodium's crypto_shorthash) and no client can crowd one.
 * Not thread-safe. */
#ifndef KNIT_RELAY_KEYMAP_H
#define KNIT_RELAY_KEYMAP_H

#include <stddef.h>
#include <stdint.h>

struct keymap;

struct keymap *keymap_new(void);
/* Frees the map; values are not touched. NULL is a no-op. */
void keymap_free(struct keymap *m);
size_t keymap_len(const struct keymap *m);
void *keymap_get(const struct keymap *m, const uint8_t key[32]);
/* Inserts or replaces (*old gets the replaced value or NULL; old may be
 * NULL). -ENOMEM leaves the map unchanged. */
int keymap_set(struct keymap *m, const uint8_t key[32], void *value, void **old);
/* Removes key and returns its value (NULL if absent). */
void *keymap_del(struct keymap *m, const uint8_t key[32]);
/* Calls fn for every entry; fn must not change the map. */
void keymap_each(const struct keymap *m, void (*fn)(const uint8_t key[32], void *value, void *arg),
		 void *arg);

#endif
