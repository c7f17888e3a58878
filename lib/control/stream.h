/* The map stream's record framing (docs/control-protocol.md): each record
 * is a 4-byte big-endian length followed by that many bytes (a sealed
 * frame). Pure: bytes in, records out, from chunks split anywhere. */
#ifndef KNIT_CONTROL_STREAM_H
#define KNIT_CONTROL_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

struct buf;

#define STREAM_HEADER_LEN 4
#define STREAM_MAX_RECORD_DEFAULT ((size_t)16 << 20)

struct stream {
	struct buf pending; /* header bytes, then the record, while incomplete */
	size_t max_record;
	size_t need; /* the record's length once the header is complete */
	bool have_len;
	bool failed;
	uint64_t offset; /* bytes fed so far, for messages */
	char error[128];
};

/* Gets each complete record; rec is valid until it returns. Returning
 * false stops the stream: stream_feed() then fails with the message the
 * callback left in msg (up to msglen bytes), or "stopped by the caller". */
typedef bool (*stream_record_fn)(const uint8_t *rec, size_t len, void *arg, char *msg, size_t msglen);

/* max_record caps each record's length (0: STREAM_MAX_RECORD_DEFAULT). */
void stream_init(struct stream *s, size_t max_record);
/* Frees what is pending; s may be initialised again. */
void stream_free(struct stream *s);
/* Feeds a chunk, calling fn for each record it completes. Returns false on
 * a zero-length or oversized record, ENOMEM, or a callback refusal, with
 * the reason in stream_error(); after that every feed fails the same way.
 * Records larger than max_record are refused from their header, before
 * any of their body is buffered. */
bool stream_feed(struct stream *s, const void *data, size_t len, stream_record_fn fn, void *arg);
/* True at a record boundary: a stream that ends elsewhere was truncated. */
bool stream_at_boundary(const struct stream *s);
/* The reason for the last failure, "" if none. */
const char *stream_error(const struct stream *s);

/* Appends the record header and rec to out (the server side). -EMSGSIZE
 * if rec cannot be framed (0 bytes or over 4 GiB), else buf's errors. */
int stream_record_append(struct buf *out, const void *rec, size_t len);

#endif
