#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "control/messages.h"
#include "podtoken.h"

int podtoken_read(const char *path, char **out)
{
	FILE *f = fopen(path, "re");
	char *buf = NULL;
	size_t n = 0;
	int err = 0;

	*out = NULL;
	if (!f)
		return -errno;
	if (!(buf = malloc(MESSAGES_POD_TOKEN_MAX + 2))) {
		err = -ENOMEM;
		goto out;
	}
	n = fread(buf, 1, MESSAGES_POD_TOKEN_MAX + 1, f);
	if (ferror(f)) {
		err = -EIO;
		goto out;
	}
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
		n--;
	if (n > MESSAGES_POD_TOKEN_MAX)
		err = -EFBIG;
	else if (!n || memchr(buf, '\0', n))
		err = -EINVAL;
	if (!err) {
		buf[n] = '\0';
		*out = buf;
		buf = NULL;
	}
out:
	if (buf) {
		sodium_memzero(buf, MESSAGES_POD_TOKEN_MAX + 2);
		free(buf);
	}
	fclose(f);
	return err;
}

void podtoken_free(char *token)
{
	if (!token)
		return;
	sodium_memzero(token, strlen(token));
	free(token);
}
