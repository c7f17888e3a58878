#include "buf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#define BUF_MIN_ALLOC 64

void buf_init(struct buf *b, size_t max)
{
	b->data = NULL;
	b->len = 0;
	b->alloc = 0;
	b->max = max;
}

void buf_free(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = 0;
	b->alloc = 0;
}

void buf_free_secure(struct buf *b)
{
	if (b->data)
		sodium_memzero(b->data, b->alloc);
	buf_free(b);
}

void buf_reset(struct buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}

/* Ensures room for n more bytes plus the NUL. On failure the buffer is
 * freed, left empty and usable, and a negative errno is returned. */
static int grow(struct buf *b, size_t n)
{
	size_t need, a;
	uint8_t *p;

	if (n > b->max || b->len > b->max - n) {
		buf_free(b);
		return -ENOSPC;
	}
	need = b->len + n + 1;
	if (need <= b->alloc)
		return 0;
	a = b->alloc ? b->alloc : BUF_MIN_ALLOC;
	while (a < need)
		a = a > SIZE_MAX / 2 ? need : a * 2;
	/* Never allocate much more than the cap permits. */
	if (b->max < SIZE_MAX && a > b->max + 1)
		a = b->max + 1;
	p = realloc(b->data, a);
	if (!p) {
		buf_free(b);
		return -ENOMEM;
	}
	b->data = p;
	b->alloc = a;
	return 0;
}

int buf_add(struct buf *b, const void *p, size_t n)
{
	int err = grow(b, n);

	if (err)
		return err;
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

int buf_add_str(struct buf *b, const char *s)
{
	return buf_add(b, s, strlen(s));
}

int buf_add_byte(struct buf *b, uint8_t c)
{
	return buf_add(b, &c, 1);
}

int buf_vaddf(struct buf *b, const char *fmt, va_list ap)
{
	va_list ap2;
	char small[256];
	int n, err;

	va_copy(ap2, ap);
	n = vsnprintf(small, sizeof(small), fmt, ap2);
	va_end(ap2);
	if (n < 0) {
		buf_free(b);
		return -EINVAL;
	}
	if ((size_t)n < sizeof(small))
		return buf_add(b, small, (size_t)n);
	err = grow(b, (size_t)n);
	if (err)
		return err;
	vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
	return 0;
}

int buf_addf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int err;

	va_start(ap, fmt);
	err = buf_vaddf(b, fmt, ap);
	va_end(ap);
	return err;
}

uint8_t *buf_reserve(struct buf *b, size_t n, int *err)
{
	int e = grow(b, n);

	if (err)
		*err = e;
	return e ? NULL : b->data + b->len;
}

void buf_commit(struct buf *b, size_t n)
{
	b->len += n;
	b->data[b->len] = '\0';
}

void buf_consume(struct buf *b, size_t n)
{
	if (n >= b->len) {
		buf_reset(b);
		return;
	}
	memmove(b->data, b->data + n, b->len - n);
	b->len -= n;
	b->data[b->len] = '\0';
}

const char *buf_str(const struct buf *b)
{
	return b->data ? (const char *)b->data : "";
}

char *buf_steal(struct buf *b, size_t *len)
{
	char *p = (char *)b->data;

	if (len)
		*len = b->len;
	if (!p)
		p = calloc(1, 1);
	b->data = NULL;
	b->len = 0;
	b->alloc = 0;
	return p;
}

void errbuf_vprintf(char *err, size_t errlen, const char *fmt, va_list ap)
{
	if (err && errlen)
		vsnprintf(err, errlen, fmt, ap);
}

void errbuf_printf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	errbuf_vprintf(err, errlen, fmt, ap);
	va_end(ap);
}

int buf_read_file(struct buf *b, const char *path)
{
	char chunk[8192];
	int fd = open(path, O_RDONLY | O_CLOEXEC), ret = 0;
	ssize_t n;

	if (fd < 0)
		return -errno;
	while ((n = read(fd, chunk, sizeof(chunk))) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			break;
		}
		if ((ret = buf_add(b, chunk, (size_t)n)))
			break;
	}
	close(fd);
	return ret;
}
