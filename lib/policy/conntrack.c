#include "policy/conntrack.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <sodium.h>

enum tcp_state {
	TCP_OPENING,
	TCP_ESTABLISHED,
	TCP_CLOSING,
	TCP_CLOSED,
};

struct entry {
	struct ct_key key;
	uint64_t expires; /* ms */
	uint32_t gen;
	uint8_t origin, denied;
	uint8_t first_dir, replied;
	uint8_t tcp_state, fin_dirs;
};

/* lock guards tags[] and e[]; tags[i] == 0 marks slot i free. */
struct bucket {
	pthread_mutex_t lock;
	uint32_t tags[CONNTRACK_SLOTS];
	struct entry e[CONNTRACK_SLOTS];
};

/* The buckets are an anonymous mapping faulted in as flows land in them:
 * a device with few flows (a pod identity; knitd carries hundreds) holds
 * a few pages of its table, not all of it (1.2 MB at the default size).
 * used has a bit per bucket that holds or held a flow since the last
 * expiry pass: lookups and expire() leave the other buckets untouched. A
 * bit is set and cleared only with its bucket's lock held. */
struct conntrack {
	struct bucket *buckets;
	size_t map_len;
	_Atomic uint64_t *used;
	size_t mask;
	size_t max;
	uint64_t seed[2];
	atomic_size_t entries;
	atomic_uint_fast64_t inserted, expired, evicted, full;
};

static uint64_t key_hash(const struct conntrack *ct, const struct ct_key *k)
{
	uint64_t w[sizeof(*k) / 8], h = ct->seed[0];

	_Static_assert(sizeof(*k) % 8 == 0, "ct_key is hashed as words");
	memcpy(w, k, sizeof(w));
	for (size_t i = 0; i < sizeof(w) / sizeof(w[0]); i++) {
		h = (h ^ w[i]) * 0x9e3779b97f4a7c15ULL;
		h ^= h >> 29;
	}
	h ^= ct->seed[1];
	h *= 0xbf58476d1ce4e5b9ULL;
	return h ^ (h >> 31);
}

static bool bucket_used(const struct conntrack *ct, size_t bi)
{
	return atomic_load_explicit(&ct->used[bi / 64], memory_order_acquire) & (1ULL << (bi % 64));
}

/* Caller holds the bucket's lock. */
static void bucket_set_used(struct conntrack *ct, const struct bucket *b)
{
	size_t bi = (size_t)(b - ct->buckets);

	atomic_fetch_or_explicit(&ct->used[bi / 64], 1ULL << (bi % 64), memory_order_release);
}

struct conntrack *conntrack_new(size_t max_entries)
{
	static const pthread_mutex_t zero_mutex;
	static const pthread_mutex_t init_mutex = PTHREAD_MUTEX_INITIALIZER;
	struct conntrack *ct = calloc(1, sizeof(*ct));
	size_t nb = 1, want;
	void *map;

	if (!ct)
		return NULL;
	if (!max_entries)
		max_entries = CONNTRACK_DEFAULT_MAX;
	if (max_entries > ((size_t)1 << 26))
		max_entries = (size_t)1 << 26;
	/* The bound is the slots: memory is fixed, and a bucket that fills
	 * up makes room by its own flows' age (make_room). */
	want = (max_entries + CONNTRACK_SLOTS - 1) / CONNTRACK_SLOTS;
	while (nb < want)
		nb <<= 1;
	ct->max = nb * CONNTRACK_SLOTS;
	ct->map_len = nb * sizeof(*ct->buckets);
	map = mmap(NULL, ct->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ct->used = calloc((nb + 63) / 64, sizeof(*ct->used));
	if (map == MAP_FAILED || !ct->used) {
		if (map != MAP_FAILED)
			munmap(map, ct->map_len);
		free(ct->used);
		free(ct);
		return NULL;
	}
	ct->buckets = map;
	/* The mapping reads as zeros; where the C library's initialized mutex
	 * is all zeros too (glibc, musl) it stays untouched until used. */
	if (memcmp(&zero_mutex, &init_mutex, sizeof(init_mutex)))
		for (size_t i = 0; i < nb; i++)
			pthread_mutex_init(&ct->buckets[i].lock, NULL);
	ct->mask = nb - 1;
	randombytes_buf(ct->seed, sizeof(ct->seed));
	return ct;
}

void conntrack_free(struct conntrack *ct)
{
	if (!ct)
		return;
	/* Default mutexes hold nothing but their memory: the mapping goes. */
	munmap(ct->buckets, ct->map_len);
	free(ct->used);
	free(ct);
}

size_t conntrack_capacity(const struct conntrack *ct)
{
	return ct->max;
}

static uint32_t timeout_of(const struct entry *e)
{
	if (e->key.proto == 6) {
		switch (e->tcp_state) {
		case TCP_ESTABLISHED:
			return CT_TIMEOUT_TCP_ESTABLISHED;
		case TCP_CLOSING:
			return CT_TIMEOUT_TCP_CLOSING;
		case TCP_CLOSED:
			return CT_TIMEOUT_TCP_CLOSED;
		default:
			return CT_TIMEOUT_TCP_OPENING;
		}
	}
	return e->replied ? CT_TIMEOUT_REPLIED : CT_TIMEOUT_UNREPLIED;
}

static void refresh(struct entry *e, enum ct_dir dir, uint8_t flags, uint64_t now)
{
	if (dir != e->first_dir)
		e->replied = 1;
	if (e->key.proto == 6) {
		if (flags & CT_TCP_RST) {
			e->tcp_state = TCP_CLOSED;
		} else if (flags & CT_TCP_FIN) {
			e->fin_dirs |= (uint8_t)(1u << dir);
			if (e->tcp_state != TCP_CLOSED)
				e->tcp_state = e->fin_dirs == 3 ? TCP_CLOSED : TCP_CLOSING;
		} else if (e->tcp_state == TCP_OPENING && e->replied) {
			e->tcp_state = TCP_ESTABLISHED;
		}
	}
	e->expires = now + timeout_of(e);
}

/* Caller holds b->lock. Index of k in b, or -1. */
static int slot_find(const struct bucket *b, const struct ct_key *k, uint32_t tag)
{
	for (int i = 0; i < CONNTRACK_SLOTS; i++)
		if (b->tags[i] == tag && !memcmp(&b->e[i].key, k, sizeof(*k)))
			return i;
	return -1;
}

/* Caller holds b->lock. */
static void slot_clear(struct conntrack *ct, struct bucket *b, int i)
{
	b->tags[i] = 0;
	atomic_fetch_sub(&ct->entries, 1);
}

/* Caller holds b->lock. A live expired flow is freed and counted as
 * expired; true if it was. */
static bool reap(struct conntrack *ct, struct bucket *b, int i, uint64_t now)
{
	if (!b->tags[i] || b->e[i].expires > now)
		return false;
	slot_clear(ct, b, i);
	atomic_fetch_add(&ct->expired, 1);
	return true;
}

static struct bucket *bucket_of(struct conntrack *ct, const struct ct_key *k, uint32_t *tag)
{
	uint64_t h = key_hash(ct, k);

	*tag = (uint32_t)(h >> 32) | 1;
	return &ct->buckets[h & ct->mask];
}

/* Caller holds b->lock. A TCP SYN on a closed flow opens a new connection
 * on the same ports: the old flow is forgotten. */
static int lookup_locked(struct conntrack *ct, struct bucket *b, const struct ct_key *k, uint32_t tag, uint8_t flags,
			 uint64_t now)
{
	int i = slot_find(b, k, tag);

	if (i < 0)
		return -1;
	if (reap(ct, b, i, now))
		return -1;
	if (k->proto == 6 && b->e[i].tcp_state == TCP_CLOSED && (flags & (CT_TCP_SYN | CT_TCP_ACK)) == CT_TCP_SYN) {
		slot_clear(ct, b, i);
		return -1;
	}
	return i;
}

static void flow_of(const struct entry *e, struct ct_flow *f)
{
	if (f)
		*f = (struct ct_flow){ .origin = e->origin, .denied = e->denied, .gen = e->gen };
}

bool conntrack_find(struct conntrack *ct, const struct ct_key *k, enum ct_dir dir, uint8_t tcp_flags, uint64_t now,
		    struct ct_flow *f)
{
	uint32_t tag;
	struct bucket *b = bucket_of(ct, k, &tag);
	int i;

	if (!bucket_used(ct, (size_t)(b - ct->buckets)))
		return false;
	pthread_mutex_lock(&b->lock);
	i = lookup_locked(ct, b, k, tag, tcp_flags, now);
	if (i >= 0) {
		refresh(&b->e[i], dir, tcp_flags, now);
		flow_of(&b->e[i], f);
	}
	pthread_mutex_unlock(&b->lock);
	return i >= 0;
}

bool conntrack_peek(struct conntrack *ct, const struct ct_key *k, uint64_t now, struct ct_flow *f)
{
	uint32_t tag;
	struct bucket *b = bucket_of(ct, k, &tag);
	int i;

	if (!bucket_used(ct, (size_t)(b - ct->buckets)))
		return false;
	pthread_mutex_lock(&b->lock);
	i = slot_find(b, k, tag);
	if (i >= 0 && b->e[i].expires <= now)
		i = -1;
	if (i >= 0)
		flow_of(&b->e[i], f);
	pthread_mutex_unlock(&b->lock);
	return i >= 0;
}

/* Caller holds b->lock. A slot for a new flow: a free one, else an
 * expired one, else the oldest never replied to; -1 if every flow here has
 * been seen both ways. */
static int make_room(struct conntrack *ct, struct bucket *b, uint64_t now)
{
	int victim = -1;

	for (int i = 0; i < CONNTRACK_SLOTS; i++)
		if (!b->tags[i])
			return i;
	for (int i = 0; i < CONNTRACK_SLOTS; i++)
		if (reap(ct, b, i, now))
			return i;
	for (int i = 0; i < CONNTRACK_SLOTS; i++) {
		struct entry *e = &b->e[i];

		if (e->replied)
			continue;
		if (victim < 0 || e->expires < b->e[victim].expires)
			victim = i;
	}
	if (victim >= 0) {
		slot_clear(ct, b, victim);
		atomic_fetch_add(&ct->evicted, 1);
	}
	return victim;
}

int conntrack_add(struct conntrack *ct, const struct ct_key *k, enum ct_dir dir, uint8_t tcp_flags, uint64_t now,
		  const struct ct_flow *f)
{
	uint32_t tag;
	struct bucket *b = bucket_of(ct, k, &tag);
	struct entry *e;
	int i, ret = 0;

	pthread_mutex_lock(&b->lock);
	i = lookup_locked(ct, b, k, tag, tcp_flags, now);
	if (i >= 0) {
		refresh(&b->e[i], dir, tcp_flags, now);
		goto out;
	}
	i = make_room(ct, b, now);
	if (i < 0) {
		atomic_fetch_add(&ct->full, 1);
		ret = -ENOSPC;
		goto out;
	}
	e = &b->e[i];
	*e = (struct entry){
		.key = *k,
		.gen = f->gen,
		.origin = f->origin,
		.denied = f->denied,
		.first_dir = (uint8_t)dir,
		.tcp_state = TCP_OPENING,
	};
	b->tags[i] = tag;
	bucket_set_used(ct, b);
	atomic_fetch_add(&ct->entries, 1);
	atomic_fetch_add(&ct->inserted, 1);
	refresh(e, dir, tcp_flags, now);
out:
	pthread_mutex_unlock(&b->lock);
	return ret;
}

void conntrack_judge(struct conntrack *ct, const struct ct_key *k, uint32_t gen, bool denied)
{
	uint32_t tag;
	struct bucket *b = bucket_of(ct, k, &tag);
	int i;

	if (!bucket_used(ct, (size_t)(b - ct->buckets)))
		return;
	pthread_mutex_lock(&b->lock);
	i = slot_find(b, k, tag);
	if (i >= 0) {
		b->e[i].gen = gen;
		b->e[i].denied = denied;
	}
	pthread_mutex_unlock(&b->lock);
}

size_t conntrack_expire(struct conntrack *ct, uint64_t now)
{
	size_t n = 0;

	for (size_t w = 0; w <= ct->mask / 64; w++) {
		uint64_t bits = atomic_load_explicit(&ct->used[w], memory_order_acquire);

		for (; bits; bits &= bits - 1) {
			size_t bi = w * 64 + (size_t)__builtin_ctzll(bits);
			struct bucket *b = &ct->buckets[bi];
			bool empty = true;

			pthread_mutex_lock(&b->lock);
			for (int i = 0; i < CONNTRACK_SLOTS; i++) {
				n += reap(ct, b, i, now);
				empty &= !b->tags[i];
			}
			if (empty)
				atomic_fetch_and_explicit(&ct->used[w], ~(1ULL << (bi % 64)), memory_order_relaxed);
			pthread_mutex_unlock(&b->lock);
		}
	}
	return n;
}

void conntrack_stats(const struct conntrack *ct, struct conntrack_stats *st)
{
	struct conntrack *c = (struct conntrack *)ct;

	st->entries = atomic_load(&c->entries);
	st->inserted = atomic_load(&c->inserted);
	st->expired = atomic_load(&c->expired);
	st->evicted = atomic_load(&c->evicted);
	st->full = atomic_load(&c->full);
}
