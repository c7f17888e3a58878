#include "wg/noise.h"

#include "wg/aead.h"
#include "wg/blake2s.h"
#include "wg/replay.h"

#include <endian.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define INDEX_BUCKETS (1u << 13)

enum entry_type { ENTRY_HANDSHAKE = 1, ENTRY_KEYPAIR };

struct index_entry {
	struct index_entry *next; /* bucket chain, guarded by noise_index.lock */
	uint32_t index;
	bool hashed;
	enum entry_type type;
	struct noise_remote *remote;
	struct noise_keypair *keypair;
};

struct noise_index {
	pthread_rwlock_t lock;
	struct index_entry *buckets[INDEX_BUCKETS];
};

enum handshake_state {
	HANDSHAKE_ZEROED,
	HANDSHAKE_CREATED_INITIATION,
	HANDSHAKE_CONSUMED_INITIATION,
	HANDSHAKE_CREATED_RESPONSE,
	HANDSHAKE_CONSUMED_RESPONSE,
};

struct noise_keypair {
	struct index_entry entry; /* entry.index: our receiver index */
	struct noise_remote *remote;
	struct aead_key *send_key, *recv_key; /* prepared once; wiped with the keypair */
	_Atomic uint64_t send_counter;
	atomic_bool send_valid;
	atomic_bool recv_valid;
	atomic_bool in_next; /* sits in remote->next, awaiting confirmation */
	atomic_uint refcount;
	pthread_mutex_t replay_lock; /* guards replay */
	struct replay replay;
	uint64_t birthdate;
	uint32_t remote_index;
	bool initiator;
};

struct noise_remote {
	struct noise_local *local;
	void *arg;
	struct noise_remote *prev, *next; /* guarded by local->remotes_lock */
	uint8_t remote_static[NOISE_PUBLIC_KEY_LEN];

	pthread_rwlock_t handshake_lock;
	struct index_entry hs_entry;
	enum handshake_state state;
	bool has_consumed;
	uint64_t last_initiation_consumption;
	uint8_t precomputed_ss[NOISE_PUBLIC_KEY_LEN];
	uint8_t psk[NOISE_SYMMETRIC_KEY_LEN];
	uint8_t ephemeral_private[NOISE_PUBLIC_KEY_LEN];
	uint8_t remote_ephemeral[NOISE_PUBLIC_KEY_LEN];
	uint8_t hash[NOISE_HASH_LEN];
	uint8_t chaining_key[NOISE_HASH_LEN];
	uint8_t latest_timestamp[NOISE_TIMESTAMP_LEN];
	uint32_t remote_index;

	pthread_mutex_t keypairs_lock;
	struct noise_keypair *kp_current, *kp_previous, *kp_next;
};

struct noise_local {
	pthread_rwlock_t identity_lock;
	bool has_identity;
	uint8_t static_private[NOISE_PUBLIC_KEY_LEN];
	uint8_t static_public[NOISE_PUBLIC_KEY_LEN];

	struct noise_upcalls upcalls;
	struct noise_index *index;
	bool own_index;

	pthread_mutex_t remotes_lock;
	struct noise_remote *remotes;
};

/* HASH(CONSTRUCTION) and HASH(HASH(CONSTRUCTION) || IDENTIFIER) */
static uint8_t initial_chaining_key[NOISE_HASH_LEN];
static uint8_t initial_hash[NOISE_HASH_LEN];
static pthread_once_t initial_once = PTHREAD_ONCE_INIT;

static void initial_compute(void)
{
	struct blake2s_state s;

	blake2s(initial_chaining_key, NOISE_HASH_LEN, NOISE_CONSTRUCTION, strlen(NOISE_CONSTRUCTION), NULL, 0);
	blake2s_init(&s, NOISE_HASH_LEN);
	blake2s_update(&s, initial_chaining_key, NOISE_HASH_LEN);
	blake2s_update(&s, NOISE_IDENTIFIER, strlen(NOISE_IDENTIFIER));
	blake2s_final(&s, initial_hash);
}

/* ---- X25519 ---- */

void noise_keygen(uint8_t priv[NOISE_PUBLIC_KEY_LEN])
{
	randombytes_buf(priv, NOISE_PUBLIC_KEY_LEN);
	priv[0] &= 248;
	priv[31] = (priv[31] & 127) | 64;
}

bool noise_public_from_private(uint8_t pub[NOISE_PUBLIC_KEY_LEN], const uint8_t priv[NOISE_PUBLIC_KEY_LEN])
{
	if (sodium_is_zero(priv, NOISE_PUBLIC_KEY_LEN) || crypto_scalarmult_base(pub, priv) != 0) {
		memset(pub, 0, NOISE_PUBLIC_KEY_LEN);
		return false;
	}
	return true;
}

bool noise_dh(uint8_t out[NOISE_PUBLIC_KEY_LEN], const uint8_t priv[NOISE_PUBLIC_KEY_LEN],
	      const uint8_t pub[NOISE_PUBLIC_KEY_LEN])
{
	/* libsodium fails on an all-zero result; check again regardless. */
	if (crypto_scalarmult(out, priv, pub) != 0 || sodium_is_zero(out, NOISE_PUBLIC_KEY_LEN)) {
		sodium_memzero(out, NOISE_PUBLIC_KEY_LEN);
		return false;
	}
	return true;
}

void noise_tai64n(uint8_t out[NOISE_TIMESTAMP_LEN], const struct timespec *realtime)
{
	uint64_t sec = 0x400000000000000aULL + (uint64_t)realtime->tv_sec; /* 2^62 + 10 */
	uint32_t nsec = (uint32_t)realtime->tv_nsec & ~((1u << 24) - 1);
	uint64_t be_sec = htobe64(sec);
	uint32_t be_nsec = htobe32(nsec);

	memcpy(out, &be_sec, 8);
	memcpy(out + 8, &be_nsec, 4);
}

/* ---- index table ---- */

struct noise_index *noise_index_new(void)
{
	struct noise_index *idx = calloc(1, sizeof(*idx));

	if (!idx)
		return NULL;
	if (pthread_rwlock_init(&idx->lock, NULL) != 0) {
		free(idx);
		return NULL;
	}
	return idx;
}

void noise_index_free(struct noise_index *idx)
{
	if (!idx)
		return;
	pthread_rwlock_destroy(&idx->lock);
	free(idx);
}

static struct index_entry **bucket(struct noise_index *idx, uint32_t index)
{
	return &idx->buckets[index & (INDEX_BUCKETS - 1)];
}

static bool index_present(struct noise_index *idx, uint32_t index)
{
	for (struct index_entry *e = *bucket(idx, index); e; e = e->next)
		if (e->index == index)
			return true;
	return false;
}

static void unhash_locked(struct noise_index *idx, struct index_entry *entry)
{
	struct index_entry **pp;

	if (!entry->hashed)
		return;
	for (pp = bucket(idx, entry->index); *pp; pp = &(*pp)->next) {
		if (*pp == entry) {
			*pp = entry->next;
			break;
		}
	}
	entry->next = NULL;
	entry->hashed = false;
}

static void hash_locked(struct noise_index *idx, struct index_entry *entry)
{
	struct index_entry **b = bucket(idx, entry->index);

	entry->next = *b;
	*b = entry;
	entry->hashed = true;
}

/* (Re)inserts entry under a fresh random index. */
static uint32_t index_insert(struct noise_index *idx, struct index_entry *entry)
{
	uint32_t index;

	pthread_rwlock_wrlock(&idx->lock);
	unhash_locked(idx, entry);
	do
		index = randombytes_random();
	while (index_present(idx, index));
	entry->index = index;
	hash_locked(idx, entry);
	pthread_rwlock_unlock(&idx->lock);
	return index;
}

static void index_remove(struct noise_index *idx, struct index_entry *entry)
{
	pthread_rwlock_wrlock(&idx->lock);
	unhash_locked(idx, entry);
	pthread_rwlock_unlock(&idx->lock);
}

/* The keypair takes over the handshake's index: the peer addresses its
 * data to the index we sent in our handshake message. */
static void index_replace(struct noise_index *idx, struct index_entry *old, struct index_entry *new)
{
	pthread_rwlock_wrlock(&idx->lock);
	new->index = old->index;
	unhash_locked(idx, old);
	hash_locked(idx, new);
	pthread_rwlock_unlock(&idx->lock);
}

struct noise_remote *noise_index_lookup_handshake(struct noise_index *idx, uint32_t index)
{
	struct noise_remote *r = NULL;

	pthread_rwlock_rdlock(&idx->lock);
	for (struct index_entry *e = *bucket(idx, index); e; e = e->next) {
		if (e->index == index && e->type == ENTRY_HANDSHAKE) {
			r = e->remote;
			break;
		}
	}
	pthread_rwlock_unlock(&idx->lock);
	return r;
}

struct noise_remote *noise_index_lookup_remote(struct noise_index *idx, uint32_t index)
{
	struct noise_remote *r = NULL;

	pthread_rwlock_rdlock(&idx->lock);
	for (struct index_entry *e = *bucket(idx, index); e; e = e->next) {
		if (e->index == index) {
			r = e->remote;
			break;
		}
	}
	pthread_rwlock_unlock(&idx->lock);
	return r;
}

struct noise_keypair *noise_keypair_lookup(struct noise_index *idx, uint32_t index)
{
	struct noise_keypair *kp = NULL;

	pthread_rwlock_rdlock(&idx->lock);
	for (struct index_entry *e = *bucket(idx, index); e; e = e->next) {
		if (e->index == index && e->type == ENTRY_KEYPAIR) {
			kp = noise_keypair_get(e->keypair);
			break;
		}
	}
	pthread_rwlock_unlock(&idx->lock);
	return kp;
}

/* ---- symmetric state (section 5.4) ---- */

static void mix_hash(uint8_t hash[NOISE_HASH_LEN], const void *src, size_t len)
{
	struct blake2s_state s;

	blake2s_init(&s, NOISE_HASH_LEN);
	blake2s_update(&s, hash, NOISE_HASH_LEN);
	blake2s_update(&s, src, len);
	blake2s_final(&s, hash);
}

static bool mix_dh(uint8_t ck[NOISE_HASH_LEN], uint8_t *key, const uint8_t priv[NOISE_PUBLIC_KEY_LEN],
		   const uint8_t pub[NOISE_PUBLIC_KEY_LEN])
{
	uint8_t dh[NOISE_PUBLIC_KEY_LEN];
	bool ok = noise_dh(dh, priv, pub);

	if (ok)
		blake2s_kdf(ck, key, NULL, dh, sizeof(dh), ck);
	sodium_memzero(dh, sizeof(dh));
	return ok;
}

static bool mix_precomputed_dh(uint8_t ck[NOISE_HASH_LEN], uint8_t *key, const uint8_t ss[NOISE_PUBLIC_KEY_LEN])
{
	if (sodium_is_zero(ss, NOISE_PUBLIC_KEY_LEN))
		return false;
	blake2s_kdf(ck, key, NULL, ss, NOISE_PUBLIC_KEY_LEN, ck);
	return true;
}

static void mix_psk(uint8_t ck[NOISE_HASH_LEN], uint8_t hash[NOISE_HASH_LEN], uint8_t key[NOISE_SYMMETRIC_KEY_LEN],
		    const uint8_t psk[NOISE_SYMMETRIC_KEY_LEN])
{
	uint8_t tau[NOISE_HASH_LEN];

	blake2s_kdf(ck, tau, key, psk, NOISE_SYMMETRIC_KEY_LEN, ck);
	mix_hash(hash, tau, sizeof(tau));
	sodium_memzero(tau, sizeof(tau));
}

static void encrypt_and_hash(uint8_t *dst, const uint8_t *src, size_t len,
			     const uint8_t key[NOISE_SYMMETRIC_KEY_LEN], uint8_t hash[NOISE_HASH_LEN])
{
	aead_seal(dst, src, len, hash, NOISE_HASH_LEN, 0, key);
	mix_hash(hash, dst, NOISE_ENCRYPTED_LEN(len));
}

static bool decrypt_and_hash(uint8_t *dst, const uint8_t *src, size_t srclen,
			     const uint8_t key[NOISE_SYMMETRIC_KEY_LEN], uint8_t hash[NOISE_HASH_LEN])
{
	if (!aead_open(dst, src, srclen, hash, NOISE_HASH_LEN, 0, key))
		return false;
	mix_hash(hash, src, srclen);
	return true;
}

/* e: the ephemeral goes out in the clear, into the hash and the chaining key. */
static void mix_ephemeral(uint8_t ck[NOISE_HASH_LEN], uint8_t hash[NOISE_HASH_LEN],
			  const uint8_t e[NOISE_PUBLIC_KEY_LEN])
{
	mix_hash(hash, e, NOISE_PUBLIC_KEY_LEN);
	blake2s_kdf(ck, NULL, NULL, e, NOISE_PUBLIC_KEY_LEN, ck);
}

static void handshake_init(uint8_t ck[NOISE_HASH_LEN], uint8_t hash[NOISE_HASH_LEN],
			   const uint8_t responder_static[NOISE_PUBLIC_KEY_LEN])
{
	pthread_once(&initial_once, initial_compute);
	memcpy(ck, initial_chaining_key, NOISE_HASH_LEN);
	memcpy(hash, initial_hash, NOISE_HASH_LEN);
	mix_hash(hash, responder_static, NOISE_PUBLIC_KEY_LEN);
}

/* Caller holds handshake_lock for writing. Keeps the replay/flood state,
 * the PSK and the static-static DH. */
static void handshake_zero(struct noise_remote *r)
{
	index_remove(r->local->index, &r->hs_entry);
	sodium_memzero(r->ephemeral_private, sizeof(r->ephemeral_private));
	sodium_memzero(r->remote_ephemeral, sizeof(r->remote_ephemeral));
	sodium_memzero(r->hash, sizeof(r->hash));
	sodium_memzero(r->chaining_key, sizeof(r->chaining_key));
	r->remote_index = 0;
	r->state = HANDSHAKE_ZEROED;
}

/* ---- keypairs ---- */

struct noise_keypair *noise_keypair_get(struct noise_keypair *kp)
{
	atomic_fetch_add_explicit(&kp->refcount, 1, memory_order_relaxed);
	return kp;
}

void noise_keypair_put(struct noise_keypair *kp)
{
	if (!kp || atomic_fetch_sub_explicit(&kp->refcount, 1, memory_order_acq_rel) != 1)
		return;
	pthread_mutex_destroy(&kp->replay_lock);
	aead_key_free(kp->send_key);
	aead_key_free(kp->recv_key);
	sodium_memzero(kp, sizeof(*kp));
	free(kp);
}

/* Takes a keypair out of its slot: no new lookups find it, then the slot's
 * reference goes. Caller holds keypairs_lock. */
static void keypair_unslot(struct noise_remote *r, struct noise_keypair *kp)
{
	if (!kp)
		return;
	atomic_store(&kp->in_next, false);
	index_remove(r->local->index, &kp->entry);
	noise_keypair_put(kp);
}

struct noise_remote *noise_keypair_remote(const struct noise_keypair *kp)
{
	return kp->remote;
}

bool noise_keypair_is_initiator(const struct noise_keypair *kp)
{
	return kp->initiator;
}

uint32_t noise_keypair_local_index(const struct noise_keypair *kp)
{
	return kp->entry.index;
}

uint32_t noise_keypair_remote_index(const struct noise_keypair *kp)
{
	return kp->remote_index;
}

uint64_t noise_keypair_send_counter(const struct noise_keypair *kp)
{
	return atomic_load(&kp->send_counter);
}

void noise_keypair_set_send_counter(struct noise_keypair *kp, uint64_t counter)
{
	atomic_store(&kp->send_counter, counter);
}

struct noise_keypair *noise_keypair_current(struct noise_remote *r)
{
	struct noise_keypair *kp;

	pthread_mutex_lock(&r->keypairs_lock);
	kp = r->kp_current;
	if (kp && atomic_load(&kp->send_valid))
		noise_keypair_get(kp);
	else
		kp = NULL;
	pthread_mutex_unlock(&r->keypairs_lock);
	return kp;
}

/* Slots a fresh keypair (the Linux module's rotation). Caller holds
 * keypairs_lock; takes over the creation reference. */
static void keypair_add(struct noise_remote *r, struct noise_keypair *kp)
{
	if (kp->initiator) {
		/* The response confirmed the keys: usable at once. A pending
		 * next keypair becomes previous (it may still receive); else
		 * the current one does. */
		if (r->kp_next) {
			atomic_store(&r->kp_next->in_next, false);
			keypair_unslot(r, r->kp_previous);
			r->kp_previous = r->kp_next;
			r->kp_next = NULL;
			keypair_unslot(r, r->kp_current);
		} else {
			keypair_unslot(r, r->kp_previous);
			r->kp_previous = r->kp_current;
		}
		r->kp_current = kp;
	} else {
		/* Responder: not usable for sending until the initiator's first
		 * data packet confirms it, so it waits in next. */
		keypair_unslot(r, r->kp_next);
		keypair_unslot(r, r->kp_previous);
		r->kp_previous = NULL;
		atomic_store(&kp->in_next, true);
		r->kp_next = kp;
	}
}

bool noise_keypair_received_with(struct noise_keypair *kp)
{
	struct noise_remote *r;
	bool rotated = false;

	if (!atomic_load(&kp->in_next))
		return false;
	r = kp->remote;
	pthread_mutex_lock(&r->keypairs_lock);
	if (r->kp_next == kp) {
		atomic_store(&kp->in_next, false);
		keypair_unslot(r, r->kp_previous);
		r->kp_previous = r->kp_current;
		r->kp_current = kp;
		r->kp_next = NULL;
		rotated = true;
	}
	pthread_mutex_unlock(&r->keypairs_lock);
	return rotated;
}

void noise_keypairs_clear(struct noise_remote *r)
{
	pthread_mutex_lock(&r->keypairs_lock);
	keypair_unslot(r, r->kp_next);
	keypair_unslot(r, r->kp_previous);
	keypair_unslot(r, r->kp_current);
	r->kp_next = r->kp_previous = r->kp_current = NULL;
	pthread_mutex_unlock(&r->keypairs_lock);
}

void noise_keypairs_expire(struct noise_remote *r)
{
	pthread_mutex_lock(&r->keypairs_lock);
	if (r->kp_next)
		atomic_store(&r->kp_next->send_valid, false);
	if (r->kp_current)
		atomic_store(&r->kp_current->send_valid, false);
	pthread_mutex_unlock(&r->keypairs_lock);
}

static inline bool has_expired(uint64_t birthdate, uint64_t age, uint64_t now)
{
	return now >= birthdate + age;
}

/* Runs handed to the AEAD at once (bounded: they live on the stack). */
#define NOISE_RUN 64

void noise_keypair_encrypt_many(struct noise_keypair *kp, uint8_t *const pkt[], const uint32_t payload_len[],
				unsigned n, uint64_t now, uint8_t ok[], uint32_t pkt_len[])
{
	struct aead_msg v[NOISE_RUN];
	unsigned from[NOISE_RUN];

	memset(ok, 0, n);
	if (!atomic_load(&kp->send_valid) || has_expired(kp->birthdate, REJECT_AFTER_TIME_MS, now))
		return;
	for (unsigned base = 0; base < n; base += NOISE_RUN) {
		unsigned count = n - base < NOISE_RUN ? n - base : NOISE_RUN, k = 0;
		uint64_t first = atomic_fetch_add(&kp->send_counter, count);

		for (unsigned i = 0; i < count; i++) {
			struct message_data *hdr = (struct message_data *)pkt[base + i];
			uint64_t nonce = first + i;

			if (nonce >= REJECT_AFTER_MESSAGES) {
				atomic_store(&kp->send_counter, REJECT_AFTER_MESSAGES);
				break;
			}
			hdr->header.type = htole32(MESSAGE_DATA);
			hdr->key_idx = htole32(kp->remote_index);
			hdr->counter = htole64(nonce);
			v[k] = (struct aead_msg){ .dst = pkt[base + i] + MESSAGE_DATA_HEADER_LEN,
						  .src = pkt[base + i] + MESSAGE_DATA_HEADER_LEN,
						  .len = payload_len[base + i],
						  .counter = nonce };
			from[k++] = base + i;
		}
		aead_key_seal_many(kp->send_key, v, k);
		for (unsigned i = 0; i < k; i++) {
			ok[from[i]] = v[i].ok;
			pkt_len[from[i]] = (uint32_t)(MESSAGE_DATA_HEADER_LEN + v[i].len + MESSAGE_DATA_TAG_LEN);
		}
	}
}

void noise_keypair_decrypt_many(struct noise_keypair *kp, uint8_t *const pkt[], const uint32_t pkt_len[],
				unsigned n, uint64_t now, uint8_t rx[], uint32_t payload_len[])
{
	struct aead_msg v[NOISE_RUN];
	unsigned from[NOISE_RUN];
	bool live = atomic_load(&kp->recv_valid);

	if (live && has_expired(kp->birthdate, REJECT_AFTER_TIME_MS, now)) {
		atomic_store(&kp->recv_valid, false);
		live = false;
	}
	for (unsigned base = 0; base < n; base += NOISE_RUN) {
		unsigned count = n - base < NOISE_RUN ? n - base : NOISE_RUN, k = 0;

		for (unsigned i = 0; i < count; i++) {
			const struct message_data *hdr = (const struct message_data *)pkt[base + i];
			size_t len = pkt_len[base + i];

			rx[base + i] = NOISE_RX_INVALID;
			if (!live || len < MESSAGE_DATA_MIN_LEN || le32toh(hdr->header.type) != MESSAGE_DATA ||
			    le32toh(hdr->key_idx) != kp->entry.index || le64toh(hdr->counter) >= REJECT_AFTER_MESSAGES)
				continue;
			v[k] = (struct aead_msg){ .dst = pkt[base + i] + MESSAGE_DATA_HEADER_LEN,
						  .src = pkt[base + i] + MESSAGE_DATA_HEADER_LEN,
						  .len = len - MESSAGE_DATA_HEADER_LEN,
						  .counter = le64toh(hdr->counter) };
			from[k++] = base + i;
		}
		aead_key_open_many(kp->recv_key, v, k);
		/* The window only after authentication, in arrival order. */
		pthread_mutex_lock(&kp->replay_lock);
		for (unsigned i = 0; i < k; i++) {
			if (!v[i].ok)
				rx[from[i]] = NOISE_RX_AUTH;
			else if (!replay_check(&kp->replay, v[i].counter))
				rx[from[i]] = NOISE_RX_REPLAY;
			else {
				rx[from[i]] = NOISE_RX_OK;
				payload_len[from[i]] = (uint32_t)(v[i].len - MESSAGE_DATA_TAG_LEN);
			}
		}
		pthread_mutex_unlock(&kp->replay_lock);
	}
}

/* The single-packet calls are runs of one. */
bool noise_keypair_encrypt(struct noise_keypair *kp, uint8_t *pkt, size_t payload_len, uint64_t now,
			   size_t *pkt_len)
{
	uint32_t len = (uint32_t)payload_len, out = 0;
	uint8_t ok = 0;

	if (payload_len > UINT32_MAX - MESSAGE_DATA_MIN_LEN)
		return false;
	noise_keypair_encrypt_many(kp, &pkt, &len, 1, now, &ok, &out);
	*pkt_len = out;
	return ok;
}

enum noise_rx noise_keypair_decrypt(struct noise_keypair *kp, uint8_t *pkt, size_t pkt_len, uint64_t now,
				    size_t *payload_len)
{
	uint32_t len = (uint32_t)pkt_len, out = 0;
	uint8_t rx = NOISE_RX_INVALID;

	if (pkt_len > UINT32_MAX)
		return NOISE_RX_INVALID;
	noise_keypair_decrypt_many(kp, &pkt, &len, 1, now, &rx, &out);
	if (rx == NOISE_RX_OK)
		*payload_len = out;
	return (enum noise_rx)rx;
}

bool noise_keypair_should_rekey_send(struct noise_keypair *kp, uint64_t now)
{
	return atomic_load(&kp->send_valid) &&
	       (atomic_load(&kp->send_counter) > REKEY_AFTER_MESSAGES ||
		(kp->initiator && has_expired(kp->birthdate, REKEY_AFTER_TIME_MS, now)));
}

bool noise_keypair_should_rekey_recv(struct noise_keypair *kp, uint64_t now)
{
	return atomic_load(&kp->send_valid) && kp->initiator &&
	       has_expired(kp->birthdate, REJECT_AFTER_TIME_MS - KEEPALIVE_TIMEOUT_MS - REKEY_TIMEOUT_MS, now);
}

/* ---- identities and remotes ---- */

struct noise_local *noise_local_new(const struct noise_upcalls *upcalls, struct noise_index *index)
{
	struct noise_local *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	l->upcalls = *upcalls;
	l->index = index;
	if (!index) {
		l->index = noise_index_new();
		l->own_index = true;
		if (!l->index) {
			free(l);
			return NULL;
		}
	}
	pthread_rwlock_init(&l->identity_lock, NULL);
	pthread_mutex_init(&l->remotes_lock, NULL);
	return l;
}

void noise_local_free(struct noise_local *l)
{
	if (!l)
		return;
	if (l->own_index)
		noise_index_free(l->index);
	pthread_rwlock_destroy(&l->identity_lock);
	pthread_mutex_destroy(&l->remotes_lock);
	sodium_memzero(l, sizeof(*l));
	free(l);
}

struct noise_index *noise_local_index(struct noise_local *l)
{
	return l->index;
}

/* Caller holds identity_lock (any mode) and the remote's handshake_lock
 * for writing. */
static void precompute_static_static(struct noise_remote *r)
{
	struct noise_local *l = r->local;

	if (!l->has_identity || !memcmp(l->static_public, r->remote_static, NOISE_PUBLIC_KEY_LEN) ||
	    !noise_dh(r->precomputed_ss, l->static_private, r->remote_static))
		sodium_memzero(r->precomputed_ss, sizeof(r->precomputed_ss));
}

bool noise_local_set_private(struct noise_local *l, const uint8_t priv[NOISE_PUBLIC_KEY_LEN])
{
	uint8_t pub[NOISE_PUBLIC_KEY_LEN] = { 0 };
	bool changed, ret = true;

	pthread_rwlock_wrlock(&l->identity_lock);
	if (priv && !noise_public_from_private(pub, priv)) {
		ret = false;
		goto out;
	}
	changed = !priv || !l->has_identity || sodium_memcmp(priv, l->static_private, NOISE_PUBLIC_KEY_LEN) != 0;
	if (priv) {
		memcpy(l->static_private, priv, NOISE_PUBLIC_KEY_LEN);
		memcpy(l->static_public, pub, NOISE_PUBLIC_KEY_LEN);
		l->has_identity = true;
	} else {
		sodium_memzero(l->static_private, NOISE_PUBLIC_KEY_LEN);
		sodium_memzero(l->static_public, NOISE_PUBLIC_KEY_LEN);
		l->has_identity = false;
	}
	pthread_mutex_lock(&l->remotes_lock);
	for (struct noise_remote *r = l->remotes; r; r = r->next) {
		pthread_rwlock_wrlock(&r->handshake_lock);
		precompute_static_static(r);
		if (changed)
			handshake_zero(r);
		pthread_rwlock_unlock(&r->handshake_lock);
		if (changed)
			noise_keypairs_expire(r);
	}
	pthread_mutex_unlock(&l->remotes_lock);
out:
	pthread_rwlock_unlock(&l->identity_lock);
	sodium_memzero(pub, sizeof(pub));
	return ret;
}

bool noise_local_public(struct noise_local *l, uint8_t pub[NOISE_PUBLIC_KEY_LEN])
{
	bool has;

	pthread_rwlock_rdlock(&l->identity_lock);
	has = l->has_identity;
	memcpy(pub, l->static_public, NOISE_PUBLIC_KEY_LEN);
	pthread_rwlock_unlock(&l->identity_lock);
	return has;
}

struct noise_remote *noise_remote_new(struct noise_local *l, const uint8_t pub[NOISE_PUBLIC_KEY_LEN], void *arg)
{
	struct noise_remote *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->local = l;
	r->arg = arg;
	memcpy(r->remote_static, pub, NOISE_PUBLIC_KEY_LEN);
	r->hs_entry.type = ENTRY_HANDSHAKE;
	r->hs_entry.remote = r;
	pthread_rwlock_init(&r->handshake_lock, NULL);
	pthread_mutex_init(&r->keypairs_lock, NULL);

	pthread_rwlock_rdlock(&l->identity_lock);
	pthread_mutex_lock(&l->remotes_lock);
	pthread_rwlock_wrlock(&r->handshake_lock);
	precompute_static_static(r);
	pthread_rwlock_unlock(&r->handshake_lock);
	r->next = l->remotes;
	if (l->remotes)
		l->remotes->prev = r;
	l->remotes = r;
	pthread_mutex_unlock(&l->remotes_lock);
	pthread_rwlock_unlock(&l->identity_lock);
	return r;
}

void noise_remote_free(struct noise_remote *r)
{
	struct noise_local *l;

	if (!r)
		return;
	l = r->local;
	pthread_mutex_lock(&l->remotes_lock);
	if (r->prev)
		r->prev->next = r->next;
	else
		l->remotes = r->next;
	if (r->next)
		r->next->prev = r->prev;
	pthread_mutex_unlock(&l->remotes_lock);

	noise_handshake_clear(r);
	noise_keypairs_clear(r);
	pthread_rwlock_destroy(&r->handshake_lock);
	pthread_mutex_destroy(&r->keypairs_lock);
	sodium_memzero(r, sizeof(*r));
	free(r);
}

void *noise_remote_arg(const struct noise_remote *r)
{
	return r->arg;
}

struct noise_local *noise_remote_local(const struct noise_remote *r)
{
	return r->local;
}

void noise_remote_public(const struct noise_remote *r, uint8_t pub[NOISE_PUBLIC_KEY_LEN])
{
	memcpy(pub, r->remote_static, NOISE_PUBLIC_KEY_LEN);
}

void noise_remote_set_psk(struct noise_remote *r, const uint8_t psk[NOISE_SYMMETRIC_KEY_LEN])
{
	pthread_rwlock_wrlock(&r->handshake_lock);
	if (psk)
		memcpy(r->psk, psk, NOISE_SYMMETRIC_KEY_LEN);
	else
		sodium_memzero(r->psk, NOISE_SYMMETRIC_KEY_LEN);
	pthread_rwlock_unlock(&r->handshake_lock);
}

bool noise_remote_psk(struct noise_remote *r, uint8_t psk[NOISE_SYMMETRIC_KEY_LEN])
{
	bool has;

	pthread_rwlock_rdlock(&r->handshake_lock);
	memcpy(psk, r->psk, NOISE_SYMMETRIC_KEY_LEN);
	has = !sodium_is_zero(r->psk, NOISE_SYMMETRIC_KEY_LEN);
	pthread_rwlock_unlock(&r->handshake_lock);
	return has;
}

/* ---- handshake (section 5.4.2 - 5.4.5) ---- */

void noise_handshake_clear(struct noise_remote *r)
{
	pthread_rwlock_wrlock(&r->handshake_lock);
	handshake_zero(r);
	pthread_rwlock_unlock(&r->handshake_lock);
}

bool noise_handshake_create_initiation(struct noise_remote *r, struct message_handshake_initiation *dst,
				       const uint8_t timestamp[NOISE_TIMESTAMP_LEN])
{
	struct noise_local *l = r->local;
	uint8_t key[NOISE_SYMMETRIC_KEY_LEN];
	uint8_t e_pub[NOISE_PUBLIC_KEY_LEN];
	bool ret = false;

	pthread_rwlock_rdlock(&l->identity_lock);
	pthread_rwlock_wrlock(&r->handshake_lock);
	if (!l->has_identity)
		goto out;

	dst->header.type = htole32(MESSAGE_HANDSHAKE_INITIATION);
	handshake_init(r->chaining_key, r->hash, r->remote_static);

	/* e */
	noise_keygen(r->ephemeral_private);
	if (!noise_public_from_private(e_pub, r->ephemeral_private))
		goto out;
	memcpy(dst->unencrypted_ephemeral, e_pub, NOISE_PUBLIC_KEY_LEN);
	mix_ephemeral(r->chaining_key, r->hash, e_pub);

	/* es */
	if (!mix_dh(r->chaining_key, key, r->ephemeral_private, r->remote_static))
		goto out;

	/* s */
	encrypt_and_hash(dst->encrypted_static, l->static_public, NOISE_PUBLIC_KEY_LEN, key, r->hash);

	/* ss */
	if (!mix_precomputed_dh(r->chaining_key, key, r->precomputed_ss))
		goto out;

	/* {t} */
	encrypt_and_hash(dst->encrypted_timestamp, timestamp, NOISE_TIMESTAMP_LEN, key, r->hash);

	dst->sender_index = htole32(index_insert(l->index, &r->hs_entry));
	r->state = HANDSHAKE_CREATED_INITIATION;
	ret = true;
out:
	if (!ret)
		handshake_zero(r);
	pthread_rwlock_unlock(&r->handshake_lock);
	pthread_rwlock_unlock(&l->identity_lock);
	sodium_memzero(key, sizeof(key));
	return ret;
}

struct noise_remote *noise_handshake_consume_initiation(struct noise_local *l,
							const struct message_handshake_initiation *src,
							uint64_t now)
{
	struct noise_remote *r = NULL, *ret = NULL;
	uint8_t s[NOISE_PUBLIC_KEY_LEN];
	uint8_t e[NOISE_PUBLIC_KEY_LEN];
	uint8_t t[NOISE_TIMESTAMP_LEN];
	uint8_t key[NOISE_SYMMETRIC_KEY_LEN];
	uint8_t hash[NOISE_HASH_LEN];
	uint8_t ck[NOISE_HASH_LEN];
	bool replay, flood;

	pthread_rwlock_rdlock(&l->identity_lock);
	if (!l->has_identity || le32toh(src->header.type) != MESSAGE_HANDSHAKE_INITIATION)
		goto out;

	handshake_init(ck, hash, l->static_public);

	/* e */
	memcpy(e, src->unencrypted_ephemeral, NOISE_PUBLIC_KEY_LEN);
	mix_ephemeral(ck, hash, e);

	/* es */
	if (!mix_dh(ck, key, l->static_private, e))
		goto out;

	/* s */
	if (!decrypt_and_hash(s, src->encrypted_static, sizeof(src->encrypted_static), key, hash))
		goto out;

	r = l->upcalls.remote_get ? l->upcalls.remote_get(l->upcalls.arg, s) : NULL;
	if (!r || r->local != l)
		goto out;

	pthread_rwlock_wrlock(&r->handshake_lock);

	/* ss */
	if (!mix_precomputed_dh(ck, key, r->precomputed_ss))
		goto out_unlock;

	/* {t} */
	if (!decrypt_and_hash(t, src->encrypted_timestamp, sizeof(src->encrypted_timestamp), key, hash))
		goto out_unlock;

	/* Section 5.1: a replayed initiation must not reset the session, and
	 * initiations are limited to INITIATIONS_PER_SECOND per peer. */
	replay = memcmp(t, r->latest_timestamp, NOISE_TIMESTAMP_LEN) <= 0;
	flood = r->has_consumed && now < r->last_initiation_consumption + 1000 / INITIATIONS_PER_SECOND;
	if (replay || flood)
		goto out_unlock;

	memcpy(r->remote_ephemeral, e, NOISE_PUBLIC_KEY_LEN);
	memcpy(r->latest_timestamp, t, NOISE_TIMESTAMP_LEN);
	memcpy(r->hash, hash, NOISE_HASH_LEN);
	memcpy(r->chaining_key, ck, NOISE_HASH_LEN);
	r->remote_index = le32toh(src->sender_index);
	r->last_initiation_consumption = now;
	r->has_consumed = true;
	r->state = HANDSHAKE_CONSUMED_INITIATION;
	ret = r;
out_unlock:
	pthread_rwlock_unlock(&r->handshake_lock);
out:
	pthread_rwlock_unlock(&l->identity_lock);
	sodium_memzero(key, sizeof(key));
	sodium_memzero(hash, sizeof(hash));
	sodium_memzero(ck, sizeof(ck));
	sodium_memzero(t, sizeof(t));
	return ret;
}

bool noise_handshake_create_response(struct noise_remote *r, struct message_handshake_response *dst)
{
	struct noise_local *l = r->local;
	uint8_t key[NOISE_SYMMETRIC_KEY_LEN];
	uint8_t e_pub[NOISE_PUBLIC_KEY_LEN];
	bool ret = false;

	pthread_rwlock_rdlock(&l->identity_lock);
	pthread_rwlock_wrlock(&r->handshake_lock);
	if (!l->has_identity || r->state != HANDSHAKE_CONSUMED_INITIATION)
		goto out;

	dst->header.type = htole32(MESSAGE_HANDSHAKE_RESPONSE);
	dst->receiver_index = htole32(r->remote_index);

	/* e */
	noise_keygen(r->ephemeral_private);
	if (!noise_public_from_private(e_pub, r->ephemeral_private))
		goto out;
	memcpy(dst->unencrypted_ephemeral, e_pub, NOISE_PUBLIC_KEY_LEN);
	mix_ephemeral(r->chaining_key, r->hash, e_pub);

	/* ee */
	if (!mix_dh(r->chaining_key, NULL, r->ephemeral_private, r->remote_ephemeral))
		goto out;

	/* se */
	if (!mix_dh(r->chaining_key, NULL, r->ephemeral_private, r->remote_static))
		goto out;

	/* psk */
	mix_psk(r->chaining_key, r->hash, key, r->psk);

	/* {} */
	encrypt_and_hash(dst->encrypted_nothing, dst->encrypted_nothing, 0, key, r->hash);

	dst->sender_index = htole32(index_insert(l->index, &r->hs_entry));
	r->state = HANDSHAKE_CREATED_RESPONSE;
	ret = true;
out:
	if (!ret)
		handshake_zero(r);
	pthread_rwlock_unlock(&r->handshake_lock);
	pthread_rwlock_unlock(&l->identity_lock);
	sodium_memzero(key, sizeof(key));
	return ret;
}

struct noise_remote *noise_handshake_consume_response(struct noise_local *l,
						      const struct message_handshake_response *src)
{
	struct noise_remote *r, *ret = NULL;
	uint8_t e[NOISE_PUBLIC_KEY_LEN];
	uint8_t key[NOISE_SYMMETRIC_KEY_LEN];
	uint8_t hash[NOISE_HASH_LEN];
	uint8_t ck[NOISE_HASH_LEN];
	uint8_t empty[1];

	if (le32toh(src->header.type) != MESSAGE_HANDSHAKE_RESPONSE)
		return NULL;
	r = noise_index_lookup_handshake(l->index, le32toh(src->receiver_index));
	if (!r || r->local != l)
		return NULL;

	pthread_rwlock_rdlock(&l->identity_lock);
	pthread_rwlock_wrlock(&r->handshake_lock);
	if (!l->has_identity || r->state != HANDSHAKE_CREATED_INITIATION ||
	    r->hs_entry.index != le32toh(src->receiver_index))
		goto out;
	memcpy(hash, r->hash, NOISE_HASH_LEN);
	memcpy(ck, r->chaining_key, NOISE_HASH_LEN);

	/* e */
	memcpy(e, src->unencrypted_ephemeral, NOISE_PUBLIC_KEY_LEN);
	mix_ephemeral(ck, hash, e);

	/* ee */
	if (!mix_dh(ck, NULL, r->ephemeral_private, e))
		goto out;

	/* se */
	if (!mix_dh(ck, NULL, l->static_private, e))
		goto out;

	/* psk */
	mix_psk(ck, hash, key, r->psk);

	/* {} */
	if (!decrypt_and_hash(empty, src->encrypted_nothing, sizeof(src->encrypted_nothing), key, hash))
		goto out;

	memcpy(r->remote_ephemeral, e, NOISE_PUBLIC_KEY_LEN);
	memcpy(r->hash, hash, NOISE_HASH_LEN);
	memcpy(r->chaining_key, ck, NOISE_HASH_LEN);
	r->remote_index = le32toh(src->sender_index);
	r->state = HANDSHAKE_CONSUMED_RESPONSE;
	ret = r;
out:
	pthread_rwlock_unlock(&r->handshake_lock);
	pthread_rwlock_unlock(&l->identity_lock);
	sodium_memzero(key, sizeof(key));
	sodium_memzero(hash, sizeof(hash));
	sodium_memzero(ck, sizeof(ck));
	return ret;
}

bool noise_handshake_begin_session(struct noise_remote *r, uint64_t now)
{
	struct noise_keypair *kp = NULL;
	uint8_t send_key[NOISE_SYMMETRIC_KEY_LEN], recv_key[NOISE_SYMMETRIC_KEY_LEN];
	bool ret = false;

	pthread_rwlock_wrlock(&r->handshake_lock);
	if (r->state != HANDSHAKE_CREATED_RESPONSE && r->state != HANDSHAKE_CONSUMED_RESPONSE)
		goto out;
	kp = calloc(1, sizeof(*kp));
	if (!kp)
		goto out;
	if (pthread_mutex_init(&kp->replay_lock, NULL) != 0) {
		free(kp);
		kp = NULL;
		goto out;
	}
	/* Section 5.4.5: (T_send, T_recv) = KDF2(C, empty) for the initiator. */
	if (r->state == HANDSHAKE_CONSUMED_RESPONSE)
		blake2s_kdf(send_key, recv_key, NULL, NULL, 0, r->chaining_key);
	else
		blake2s_kdf(recv_key, send_key, NULL, NULL, 0, r->chaining_key);
	kp->send_key = aead_key_new(send_key, true);
	kp->recv_key = aead_key_new(recv_key, false);
	if (!kp->send_key || !kp->recv_key) {
		/* ENOMEM: the handshake stays, a retry may do better. */
		pthread_mutex_destroy(&kp->replay_lock);
		aead_key_free(kp->send_key);
		aead_key_free(kp->recv_key);
		free(kp);
		kp = NULL;
		goto out;
	}
	kp->entry.type = ENTRY_KEYPAIR;
	kp->entry.keypair = kp;
	kp->entry.remote = r;
	kp->remote = r;
	kp->initiator = r->state == HANDSHAKE_CONSUMED_RESPONSE;
	kp->remote_index = r->remote_index;
	kp->birthdate = now;
	atomic_init(&kp->refcount, 1);
	atomic_init(&kp->send_counter, 0);
	atomic_init(&kp->send_valid, true);
	atomic_init(&kp->recv_valid, true);
	atomic_init(&kp->in_next, false);
	replay_init(&kp->replay);

	index_replace(r->local->index, &r->hs_entry, &kp->entry);
	handshake_zero(r);

	pthread_mutex_lock(&r->keypairs_lock);
	keypair_add(r, kp);
	pthread_mutex_unlock(&r->keypairs_lock);
	ret = true;
out:
	pthread_rwlock_unlock(&r->handshake_lock);
	sodium_memzero(send_key, sizeof(send_key));
	sodium_memzero(recv_key, sizeof(recv_key));
	return ret;
}
