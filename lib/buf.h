/* Growable byte buffers with a hard size cap (in the spirit of curl's dynbuf).
 *
 * A buffer that would grow past its cap, or whose allocation fails, is reset
 * to a valid empty state and the call returns -ENOSPC / -ENOMEM: code reading
 * untrusted input cannot be made to hold more than it agreed to. The data is
 * always NUL-terminated after len (not counted) so text can be used as a C
 * string. */
#ifndef KNIT_BUF_H
#define KNIT_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

struct buf {
	uint8_t *data; /* NULL until the first write */
	size_t len;
	size_t alloc;
	size_t max; /* cap on len */
};

#define BUF_INIT(maxlen) { .data = NULL, .len = 0, .alloc = 0, .max = (maxlen) }

void buf_init(struct buf *b, size_t max);
/* Frees the storage and leaves an empty buffer with the same cap. */
void buf_free(struct buf *b);
/* Keeps the storage, drops the contents. */
void buf_reset(struct buf *b);
/* Like buf_free() but wipes the contents first (secrets). */
void buf_free_secure(struct buf *b);

int buf_add(struct buf *b, const void *p, size_t n);
/* Appends the whole file at path (its cap applies). 0 or a negative errno
 * (the file's open/read error, or buf_add's). */
int buf_read_file(struct buf *b, const char *path);
int buf_add_str(struct buf *b, const char *s);
int buf_add_byte(struct buf *b, uint8_t c);
int buf_addf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vaddf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Makes room for n more bytes; returns a pointer to write at, or NULL (and
 * sets *err) on cap/alloc failure. Commit with buf_commit(). */
uint8_t *buf_reserve(struct buf *b, size_t n, int *err);
void buf_commit(struct buf *b, size_t n);
/* Removes the first n bytes (n <= len). */
void buf_consume(struct buf *b, size_t n);

/* Returns the contents as a NUL-terminated string ("" when empty); the
 * buffer keeps ownership. */
const char *buf_str(const struct buf *b);
/* Transfers ownership of the contents to the caller (free() it) and leaves b
 * empty. Returns a malloc'd "" for an empty buffer, NULL only on ENOMEM. *len
 * may be NULL. */
char *buf_steal(struct buf *b, size_t *len);

/* For functions that say why they failed in a caller's fixed buffer: the
 * message, truncated to errlen bytes; nothing if err is NULL or errlen 0. */
void errbuf_printf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void errbuf_vprintf(char *err, size_t errlen, const char *fmt, va_list ap) __attribute__((format(printf, 3, 0)));

#endif
