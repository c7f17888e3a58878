/* WireGuard wire formats and protocol constants (whitepaper section 5,
 * "WireGuard: Next Generation Kernel Network Tunnel").
 *
 * All multi-byte integers on the wire are little-endian. The structs below
 * are packed and laid out exactly as on the wire; the index fields hold the
 * raw little-endian bytes (use le32toh()/htole32()). */
#ifndef KNIT_WG_MESSAGES_H
#define KNIT_WG_MESSAGES_H

#include <stddef.h>
#include <stdint.h>

#define NOISE_PUBLIC_KEY_LEN 32
#define NOISE_SYMMETRIC_KEY_LEN 32
#define NOISE_TIMESTAMP_LEN 12 /* TAI64N */
#define NOISE_AUTHTAG_LEN 16
#define NOISE_HASH_LEN 32
#define NOISE_ENCRYPTED_LEN(plain) ((plain) + NOISE_AUTHTAG_LEN)

#define NOISE_CONSTRUCTION "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
#define NOISE_IDENTIFIER "WireGuard v1 zx2c4 Jason@zx2c4.com"
#define COOKIE_LABEL_MAC1 "mac1----"
#define COOKIE_LABEL_COOKIE "cookie--"

/* Times are in milliseconds of a monotonic clock the caller supplies. */
#define REKEY_AFTER_MESSAGES (1ULL << 60)
#define REJECT_AFTER_MESSAGES (UINT64_MAX - (1ULL << 13)) /* 2^64 - 2^13 - 1 */
#define REKEY_TIMEOUT_MS 5000ULL
#define REKEY_TIMEOUT_JITTER_MAX_MS 334ULL /* jitter in [0, 333] ms */
#define REKEY_AFTER_TIME_MS 120000ULL
#define REKEY_ATTEMPT_TIME_MS 90000ULL
#define REJECT_AFTER_TIME_MS 180000ULL
#define KEEPALIVE_TIMEOUT_MS 10000ULL
#define MAX_TIMER_HANDSHAKES (REKEY_ATTEMPT_TIME_MS / REKEY_TIMEOUT_MS)
#define INITIATIONS_PER_SECOND 50
#define MAX_PEERS_PER_DEVICE (1U << 20)

#define COOKIE_SECRET_MAX_AGE_MS 120000ULL
#define COOKIE_SECRET_LATENCY_MS 5000ULL
#define COOKIE_NONCE_LEN 24
#define COOKIE_LEN 16

#define MESSAGE_PADDING_MULTIPLE 16

enum message_type {
	MESSAGE_INVALID = 0,
	MESSAGE_HANDSHAKE_INITIATION = 1,
	MESSAGE_HANDSHAKE_RESPONSE = 2,
	MESSAGE_HANDSHAKE_COOKIE = 3,
	MESSAGE_DATA = 4,
};

/* One type byte followed by three reserved zero bytes: read as le32. */
struct message_header {
	uint32_t type;
} __attribute__((packed));

struct message_macs {
	uint8_t mac1[COOKIE_LEN];
	uint8_t mac2[COOKIE_LEN];
} __attribute__((packed));

struct message_handshake_initiation {
	struct message_header header;
	uint32_t sender_index;
	uint8_t unencrypted_ephemeral[NOISE_PUBLIC_KEY_LEN];
	uint8_t encrypted_static[NOISE_ENCRYPTED_LEN(NOISE_PUBLIC_KEY_LEN)];
	uint8_t encrypted_timestamp[NOISE_ENCRYPTED_LEN(NOISE_TIMESTAMP_LEN)];
	struct message_macs macs;
} __attribute__((packed));

struct message_handshake_response {
	struct message_header header;
	uint32_t sender_index;
	uint32_t receiver_index;
	uint8_t unencrypted_ephemeral[NOISE_PUBLIC_KEY_LEN];
	uint8_t encrypted_nothing[NOISE_ENCRYPTED_LEN(0)];
	struct message_macs macs;
} __attribute__((packed));

struct message_handshake_cookie {
	struct message_header header;
	uint32_t receiver_index;
	uint8_t nonce[COOKIE_NONCE_LEN];
	uint8_t encrypted_cookie[NOISE_ENCRYPTED_LEN(COOKIE_LEN)];
} __attribute__((packed));

struct message_data {
	struct message_header header;
	uint32_t key_idx;
	uint64_t counter;
	uint8_t encrypted_data[];
} __attribute__((packed));

#define MESSAGE_INITIATION_LEN 148
#define MESSAGE_RESPONSE_LEN 92
#define MESSAGE_COOKIE_LEN 64
#define MESSAGE_DATA_HEADER_LEN 16
#define MESSAGE_DATA_TAG_LEN NOISE_AUTHTAG_LEN
#define MESSAGE_DATA_MIN_LEN (MESSAGE_DATA_HEADER_LEN + MESSAGE_DATA_TAG_LEN) /* keepalive */
/* MAC1 covers everything before it; MAC2 everything before MAC2. */
#define MESSAGE_MAC1_OFFSET(len) ((len) - sizeof(struct message_macs))
#define MESSAGE_MAC2_OFFSET(len) ((len) - COOKIE_LEN)

_Static_assert(sizeof(struct message_handshake_initiation) == MESSAGE_INITIATION_LEN, "initiation size");
_Static_assert(sizeof(struct message_handshake_response) == MESSAGE_RESPONSE_LEN, "response size");
_Static_assert(sizeof(struct message_handshake_cookie) == MESSAGE_COOKIE_LEN, "cookie size");
_Static_assert(sizeof(struct message_data) == MESSAGE_DATA_HEADER_LEN, "data header size");

/* Returns the message type of a datagram whose length fits that type (the
 * first byte is the type, the next three must be zero), else
 * MESSAGE_INVALID. Cheap enough for demultiplexing a shared socket. */
static inline enum message_type message_classify(const uint8_t *pkt, size_t len)
{
	if (len < 4 || pkt[1] || pkt[2] || pkt[3])
		return MESSAGE_INVALID;
	switch (pkt[0]) {
	case MESSAGE_HANDSHAKE_INITIATION:
		return len == MESSAGE_INITIATION_LEN ? MESSAGE_HANDSHAKE_INITIATION : MESSAGE_INVALID;
	case MESSAGE_HANDSHAKE_RESPONSE:
		return len == MESSAGE_RESPONSE_LEN ? MESSAGE_HANDSHAKE_RESPONSE : MESSAGE_INVALID;
	case MESSAGE_HANDSHAKE_COOKIE:
		return len == MESSAGE_COOKIE_LEN ? MESSAGE_HANDSHAKE_COOKIE : MESSAGE_INVALID;
	case MESSAGE_DATA:
		return len >= MESSAGE_DATA_MIN_LEN ? MESSAGE_DATA : MESSAGE_INVALID;
	default:
		return MESSAGE_INVALID;
	}
}

/* The largest plaintext whose data message fits one UDP datagram over
 * IPv4 (65535 less the IPv4 and UDP headers, the data header and tag). */
#define MESSAGE_DATA_PAYLOAD_MAX (65535 - 20 - 8 - MESSAGE_DATA_MIN_LEN)

/* Plaintext length after padding to MESSAGE_PADDING_MULTIPLE, never past
 * mtu (section 5.4.6: zero padding, capped by the MTU). */
static inline size_t message_data_padded_len(size_t len, size_t mtu)
{
	size_t padded = (len + MESSAGE_PADDING_MULTIPLE - 1) & ~(size_t)(MESSAGE_PADDING_MULTIPLE - 1);

	if (len > mtu)
		return len;
	return padded > mtu ? mtu : padded;
}

#endif
