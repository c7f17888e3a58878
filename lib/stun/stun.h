/* STUN (RFC 5389) as knit uses it: binding requests and their success
 * responses, for learning a socket's reflexive address (client) and telling
 * a client its own (server, in knit-relay). Pure: bytes in, structs out.
 *
 * Parsing is strict, as the bytes come from anyone on the network: the
 * header's top bits, magic cookie and length must agree with the datagram,
 * attributes must fit and be padded to 4 bytes, an address attribute must
 * have the length its family says, and a FINGERPRINT, when present, must be
 * the last attribute and match (RFC 5389 §15.5). Anything else is refused
 * with the reason in err. */
#ifndef KNIT_STUN_H
#define KNIT_STUN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define STUN_HEADER_LEN 20
#define STUN_MAGIC_COOKIE 0x2112A442u
#define STUN_TXID_LEN 12
/* Longest message this codec builds or accepts (RFC 5389 §7.1: over UDP a
 * message should fit the path MTU; 548 bytes for IPv4 without knowing it).
 * A larger datagram is refused unread. */
#define STUN_MAX_MSG 1280u

/* Message types (method Binding = 0x001 in each class). */
#define STUN_BINDING_REQUEST 0x0001u
#define STUN_BINDING_INDICATION 0x0011u
#define STUN_BINDING_SUCCESS 0x0101u
#define STUN_BINDING_ERROR 0x0111u

/* Attributes (RFC 5389 §18.2). */
#define STUN_ATTR_MAPPED_ADDRESS 0x0001u
#define STUN_ATTR_USERNAME 0x0006u
#define STUN_ATTR_MESSAGE_INTEGRITY 0x0008u
#define STUN_ATTR_ERROR_CODE 0x0009u
#define STUN_ATTR_UNKNOWN_ATTRIBUTES 0x000Au
#define STUN_ATTR_XOR_MAPPED_ADDRESS 0x0020u
#define STUN_ATTR_SOFTWARE 0x8022u
#define STUN_ATTR_FINGERPRINT 0x8028u

#define STUN_MAX_UNKNOWN 8u

struct stun_msg {
	uint16_t type;
	uint8_t txid[STUN_TXID_LEN];
	/* XOR-MAPPED-ADDRESS if present, else MAPPED-ADDRESS; port and
	 * address in the sockaddr's usual network order. */
	bool has_addr;
	bool addr_xored;
	struct sockaddr_storage addr;
	bool has_fingerprint; /* present and verified */
	/* MESSAGE-INTEGRITY's offset in the message (0 if absent), for
	 * stun_check_integrity(). */
	size_t integrity_off;
	/* SOFTWARE, not NUL-terminated, pointing into the parsed bytes. */
	const char *software;
	size_t software_len;
	uint16_t error_code; /* ERROR-CODE as class*100+number, 0 if absent */
	/* Comprehension-required attributes (type < 0x8000) this codec does
	 * not know: a server answers a request carrying any with 420. */
	uint16_t unknown[STUN_MAX_UNKNOWN];
	size_t nunknown;
};

/* True if p looks like a STUN message: the top two bits zero, the magic
 * cookie, a length that is a multiple of 4 and agrees with len. The socket
 * demultiplexer's test; stun_parse() does the rest. */
bool stun_is(const uint8_t *p, size_t len);

/* Fills txid with random bytes (libsodium's randombytes). */
void stun_txid_new(uint8_t txid[STUN_TXID_LEN]);

/* A Binding request with this transaction id, and FINGERPRINT when asked
 * (RFC 5389 §7.2.1 lets a client add it; some servers want it). Returns its
 * length, or 0 if cap is too small. */
size_t stun_binding_request(uint8_t *out, size_t cap, const uint8_t txid[STUN_TXID_LEN],
			    bool fingerprint);

/* A Binding success response telling the client addr (AF_INET or AF_INET6;
 * a v4-mapped IPv6 address is answered as IPv4), with XOR-MAPPED-ADDRESS,
 * MAPPED-ADDRESS (for RFC 3489 clients), SOFTWARE if software is not NULL
 * and FINGERPRINT. Returns the length, or 0 if cap is too small or addr's
 * family is neither. */
size_t stun_binding_response(uint8_t *out, size_t cap, const uint8_t txid[STUN_TXID_LEN],
			     const struct sockaddr *addr, const char *software);

/* A Binding error response (420 Unknown Attribute lists the request's
 * unknown attributes; 400 Bad Request otherwise). Returns the length or 0. */
size_t stun_binding_error(uint8_t *out, size_t cap, const struct stun_msg *req, uint16_t code);

/* Parses one message. False with the reason in err (NULL allowed) if the
 * bytes are not a well-formed STUN message. */
bool stun_parse(const uint8_t *p, size_t len, struct stun_msg *m, char *err, size_t errlen);

/* Verifies MESSAGE-INTEGRITY (HMAC-SHA1 over the message up to it, with the
 * length field covering it, RFC 5389 §15.4) with this key (the password
 * for short-term credentials). False if absent or wrong. */
bool stun_check_integrity(const uint8_t *p, size_t len, const struct stun_msg *m,
			  const void *key, size_t keylen);

/* RFC 5389's FINGERPRINT: CRC-32 (ISO 3309) XOR 0x5354554e. */
uint32_t stun_crc32(const uint8_t *p, size_t len);

#endif
