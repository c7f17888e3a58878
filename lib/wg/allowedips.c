#include "wg/allowedips.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct allowedips_node {
	uint64_t key[2]; /* prefix, bit 0 = MSB of key[0]; bits past cidr are zero */
	struct allowedips_node *child[2];
	struct allowedips_node *parent;
	struct allowedips_peer *peer; /* NULL: a split point, then it has two children */
	struct allowedips_node *peer_prev, *peer_next;
	uint8_t cidr;
};

static inline uint64_t mask64(unsigned n)
{
	return n == 0 ? 0 : ~0ULL << (64 - n);
}

static inline bool prefix_matches(const uint64_t a[2], const uint64_t b[2], unsigned cidr)
{
	if (cidr <= 64)
		return ((a[0] ^ b[0]) & mask64(cidr)) == 0;
	return a[0] == b[0] && ((a[1] ^ b[1]) & mask64(cidr - 64)) == 0;
}

static inline unsigned bit_at(const uint64_t k[2], unsigned i)
{
	return i < 64 ? (k[0] >> (63 - i)) & 1 : (k[1] >> (127 - i)) & 1;
}

static inline unsigned common_bits(const uint64_t a[2], const uint64_t b[2])
{
	uint64_t x = a[0] ^ b[0];

	if (x)
		return (unsigned)__builtin_clzll(x);
	x = a[1] ^ b[1];
	return x ? 64 + (unsigned)__builtin_clzll(x) : 128;
}

static inline uint64_t load_be64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static inline void store_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

/* Returns the family's bit length and loads key, or 0 on a bad family. */
static unsigned load_key(uint64_t key[2], int family, const void *addr)
{
	const uint8_t *a = addr;

	if (family == AF_INET) {
		key[0] = ((uint64_t)a[0] << 56) | ((uint64_t)a[1] << 48) | ((uint64_t)a[2] << 40) |
			 ((uint64_t)a[3] << 32);
		key[1] = 0;
		return 32;
	}
	if (family == AF_INET6) {
		key[0] = load_be64(a);
		key[1] = load_be64(a + 8);
		return 128;
	}
	return 0;
}

static void mask_key(uint64_t key[2], unsigned cidr)
{
	if (cidr <= 64) {
		key[0] &= mask64(cidr);
		key[1] = 0;
	} else {
		key[1] &= mask64(cidr - 64);
	}
}

static struct allowedips_node **root_for(struct allowedips *t, unsigned bits)
{
	return bits == 32 ? &t->root4 : &t->root6;
}

static void peer_link(struct allowedips_node *n, struct allowedips_peer *peer)
{
	n->peer = peer;
	n->peer_prev = NULL;
	n->peer_next = peer->nodes;
	if (peer->nodes)
		peer->nodes->peer_prev = n;
	peer->nodes = n;
}

static void peer_unlink(struct allowedips_node *n)
{
	if (!n->peer)
		return;
	if (n->peer_prev)
		n->peer_prev->peer_next = n->peer_next;
	else
		n->peer->nodes = n->peer_next;
	if (n->peer_next)
		n->peer_next->peer_prev = n->peer_prev;
	n->peer = NULL;
	n->peer_prev = n->peer_next = NULL;
}

static struct allowedips_node **slot_of(struct allowedips_node **root, struct allowedips_node *n)
{
	if (!n->parent)
		return root;
	return &n->parent->child[n->parent->child[1] == n];
}

/* Walks down as far as the key's prefix allows: the deepest node that
 * contains key/cidr, with *exact set if it is that very prefix. */
static struct allowedips_node *find_parent(struct allowedips_node *node, const uint64_t key[2],
					   unsigned cidr, bool *exact)
{
	struct allowedips_node *parent = NULL;

	*exact = false;
	while (node && node->cidr <= cidr && prefix_matches(node->key, key, node->cidr)) {
		parent = node;
		if (node->cidr == cidr) {
			*exact = true;
			break;
		}
		node = node->child[bit_at(key, node->cidr)];
	}
	return parent;
}

static struct allowedips_node *node_new(const uint64_t key[2], unsigned cidr)
{
	struct allowedips_node *n = calloc(1, sizeof(*n));

	if (!n)
		return NULL;
	n->key[0] = key[0];
	n->key[1] = key[1];
	mask_key(n->key, cidr);
	n->cidr = (uint8_t)cidr;
	return n;
}

void allowedips_init(struct allowedips *t)
{
	memset(t, 0, sizeof(*t));
	pthread_rwlock_init(&t->lock, NULL);
}

static void free_trie(struct allowedips_node *n)
{
	if (!n)
		return;
	free_trie(n->child[0]);
	free_trie(n->child[1]);
	if (n->peer)
		n->peer->nodes = NULL;
	free(n);
}

void allowedips_free(struct allowedips *t)
{
	pthread_rwlock_wrlock(&t->lock);
	free_trie(t->root4);
	free_trie(t->root6);
	t->root4 = t->root6 = NULL;
	t->seq++;
	pthread_rwlock_unlock(&t->lock);
	pthread_rwlock_destroy(&t->lock);
}

static int insert(struct allowedips_node **root, uint64_t key[2], unsigned cidr,
		  struct allowedips_peer *peer)
{
	struct allowedips_node *parent, *newnode, *down, *mid, **slot;
	unsigned common;
	bool exact;

	mask_key(key, cidr);
	parent = find_parent(*root, key, cidr, &exact);
	if (exact) {
		if (parent->peer != peer) {
			peer_unlink(parent);
			peer_link(parent, peer);
		}
		return 0;
	}
	newnode = node_new(key, cidr);
	if (!newnode)
		return -ENOMEM;
	slot = parent ? &parent->child[bit_at(key, parent->cidr)] : root;
	down = *slot;
	if (!down) {
		*slot = newnode;
		newnode->parent = parent;
		peer_link(newnode, peer);
		return 0;
	}
	/* down does not contain the new prefix: either the new prefix
	 * contains down, or both hang off a new split node. */
	common = common_bits(down->key, key);
	if (common > cidr)
		common = cidr;
	if (common == cidr) {
		newnode->child[bit_at(down->key, cidr)] = down;
		down->parent = newnode;
		*slot = newnode;
		newnode->parent = parent;
	} else {
		mid = node_new(key, common);
		if (!mid) {
			free(newnode);
			return -ENOMEM;
		}
		mid->child[bit_at(down->key, common)] = down;
		mid->child[bit_at(key, common)] = newnode;
		down->parent = mid;
		newnode->parent = mid;
		*slot = mid;
		mid->parent = parent;
	}
	peer_link(newnode, peer);
	return 0;
}

int allowedips_insert(struct allowedips *t, int family, const void *addr, uint8_t cidr,
		      struct allowedips_peer *peer)
{
	uint64_t key[2];
	unsigned bits = load_key(key, family, addr);
	int ret;

	if (!bits || cidr > bits || !peer)
		return -EINVAL;
	pthread_rwlock_wrlock(&t->lock);
	ret = insert(root_for(t, bits), key, cidr, peer);
	t->seq++;
	pthread_rwlock_unlock(&t->lock);
	return ret;
}

/* Drops node's prefix; a node left as a split point with fewer than two
 * children is spliced out, and so is its parent if that becomes one. */
static void remove_node(struct allowedips_node **root, struct allowedips_node *node)
{
	struct allowedips_node *child, *parent;

	peer_unlink(node);
	if (node->child[0] && node->child[1])
		return;
	child = node->child[0] ? node->child[0] : node->child[1];
	parent = node->parent;
	*slot_of(root, node) = child;
	if (child)
		child->parent = parent;
	free(node);
	if (parent && !parent->peer && !(parent->child[0] && parent->child[1])) {
		child = parent->child[0] ? parent->child[0] : parent->child[1];
		*slot_of(root, parent) = child;
		if (child)
			child->parent = parent->parent;
		free(parent);
	}
}

int allowedips_remove(struct allowedips *t, int family, const void *addr, uint8_t cidr,
		      struct allowedips_peer *peer)
{
	struct allowedips_node *node, **root;
	uint64_t key[2];
	unsigned bits = load_key(key, family, addr);
	bool exact;
	int ret = -ENOENT;

	if (!bits || cidr > bits)
		return -EINVAL;
	mask_key(key, cidr);
	pthread_rwlock_wrlock(&t->lock);
	root = root_for(t, bits);
	node = find_parent(*root, key, cidr, &exact);
	if (exact && node->peer && (!peer || node->peer == peer)) {
		remove_node(root, node);
		t->seq++;
		ret = 0;
	}
	pthread_rwlock_unlock(&t->lock);
	return ret;
}

static struct allowedips_node **root_of(struct allowedips *t, struct allowedips_node *n)
{
	while (n->parent)
		n = n->parent;
	return t->root4 == n ? &t->root4 : &t->root6;
}

void allowedips_remove_by_peer(struct allowedips *t, struct allowedips_peer *peer)
{
	pthread_rwlock_wrlock(&t->lock);
	while (peer->nodes)
		remove_node(root_of(t, peer->nodes), peer->nodes);
	t->seq++;
	pthread_rwlock_unlock(&t->lock);
}

struct allowedips_peer *allowedips_lookup(struct allowedips *t, int family, const void *addr)
{
	struct allowedips_peer *found = NULL;
	struct allowedips_node *node;
	uint64_t key[2];
	unsigned bits = load_key(key, family, addr);

	if (!bits)
		return NULL;
	pthread_rwlock_rdlock(&t->lock);
	node = *root_for(t, bits);
	while (node && prefix_matches(node->key, key, node->cidr)) {
		if (node->peer)
			found = node->peer;
		if (node->cidr == bits)
			break;
		node = node->child[bit_at(key, node->cidr)];
	}
	pthread_rwlock_unlock(&t->lock);
	return found;
}

int allowedips_foreach(struct allowedips *t, struct allowedips_peer *peer, allowedips_cb cb, void *arg)
{
	struct allowedips_node *n;
	uint8_t addr[16];
	int ret = 0;

	pthread_rwlock_rdlock(&t->lock);
	for (n = peer->nodes; n && !ret; n = n->peer_next) {
		bool v4 = root_of(t, n) == &t->root4;

		store_be64(addr, n->key[0]);
		store_be64(addr + 8, n->key[1]);
		ret = cb(arg, v4 ? AF_INET : AF_INET6, addr, n->cidr);
	}
	pthread_rwlock_unlock(&t->lock);
	return ret;
}
