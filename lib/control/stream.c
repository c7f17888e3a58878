#include "control/stream.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "buf.h"

#define STREAM_KEEP (16u << 10) /* room kept between records */

static bool fail(struct stream *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static bool fail(struct stream *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->error, sizeof(s->error), fmt, ap);
	va_end(ap);
	s->failed = true;
	buf_free(&s->pending);
	return false;
}

void stream_init(struct stream *s, size_t max_record)
{
	memset(s, 0, sizeof(*s));
	s->max_record = max_record ? max_record : STREAM_MAX_RECORD_DEFAULT;
	/* Header plus one record at most. */
	buf_init(&s->pending, s->max_record + STREAM_HEADER_LEN);
}

void stream_free(struct stream *s)
{
	buf_free(&s->pending);
	s->have_len = false;
	s->need = 0;
}

bool stream_at_boundary(const struct stream *s)
{
	return !s->failed && !s->have_len && s->pending.len == 0;
}

const char *stream_error(const struct stream *s)
{
	return s->error;
}

static bool header_done(struct stream *s, const uint8_t h[STREAM_HEADER_LEN])
{
	uint32_t n = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];

	if (n == 0)
		return fail(s, "record at byte %llu has length 0",
			    (unsigned long long)s->offset);
	if (n > s->max_record)
		return fail(s, "record at byte %llu is %u bytes, over the %zu-byte cap",
			    (unsigned long long)s->offset, n, s->max_record);
	s->need = n;
	s->have_len = true;
	return true;
}

static bool deliver(struct stream *s, const uint8_t *rec, size_t len, stream_record_fn fn, void *arg)
{
	char msg[sizeof(s->error)] = "";

	s->offset += STREAM_HEADER_LEN + len;
	s->have_len = false;
	s->need = 0;
	if (fn(rec, len, arg, msg, sizeof(msg)))
		return true;
	return fail(s, "%s", *msg ? msg : "stopped by the caller");
}

bool stream_feed(struct stream *s, const void *data, size_t len, stream_record_fn fn, void *arg)
{
	const uint8_t *p = data;
	size_t take;
	int err;

	if (s->failed)
		return false;
	while (len > 0) {
		if (!s->have_len) {
			/* Whole header in this chunk and nothing pending: no copy. */
			if (s->pending.len == 0 && len >= STREAM_HEADER_LEN) {
				if (!header_done(s, p))
					return false;
				p += STREAM_HEADER_LEN;
				len -= STREAM_HEADER_LEN;
			} else {
				take = STREAM_HEADER_LEN - s->pending.len;
				if (take > len)
					take = len;
				if ((err = buf_add(&s->pending, p, take)))
					return fail(s, "out of memory (%s)", strerror(-err));
				p += take;
				len -= take;
				if (s->pending.len < STREAM_HEADER_LEN)
					return true;
				if (!header_done(s, s->pending.data))
					return false;
				buf_reset(&s->pending);
			}
			continue;
		}
		if (s->pending.len == 0 && len >= s->need) {
			/* The whole record is in this chunk: deliver in place. */
			size_t n = s->need;

			if (!deliver(s, p, n, fn, arg))
				return false;
			p += n;
			len -= n;
			continue;
		}
		take = s->need - s->pending.len;
		if (take > len)
			take = len;
		if ((err = buf_add(&s->pending, p, take)))
			return fail(s, "out of memory (%s)", strerror(-err));
		p += take;
		len -= take;
		if (s->pending.len == s->need) {
			bool ok = deliver(s, s->pending.data, s->pending.len, fn, arg);

			if (!ok)
				return false;
			/* A full netmap of hundreds of peers is one big record: do
			 * not hold its room for the small deltas that follow (knitd
			 * keeps a stream per pod identity). */
			if (s->pending.alloc > STREAM_KEEP)
				buf_free(&s->pending);
			else
				buf_reset(&s->pending);
		}
	}
	return true;
}

int stream_record_append(struct buf *out, const void *rec, size_t len)
{
	uint8_t *p;
	int err = 0;

	if (len == 0 || len > UINT32_MAX)
		return -EMSGSIZE;
	p = buf_reserve(out, STREAM_HEADER_LEN + len, &err);
	if (!p)
		return err;
	p[0] = (uint8_t)(len >> 24);
	p[1] = (uint8_t)(len >> 16);
	p[2] = (uint8_t)(len >> 8);
	p[3] = (uint8_t)len;
	memcpy(p + STREAM_HEADER_LEN, rec, len);
	buf_commit(out, STREAM_HEADER_LEN + len);
	return 0;
}
