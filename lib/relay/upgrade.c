/* The relay's HTTP upgrade; see upgrade.h. */
#include "relay/upgrade.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

static const char *head_end(const char *p, size_t len)
{
	const char *e = memmem(p, len, "\r\n\r\n", 4);

	return e ? e + 4 : NULL;
}

/* Does the comma-separated header value v (length n) contain token? */
static bool has_token(const char *v, size_t n, const char *token)
{
	size_t tl = strlen(token);

	while (n) {
		size_t i = 0, s, e;

		while (i < n && v[i] != ',')
			i++;
		s = 0;
		e = i;
		while (s < e && (v[s] == ' ' || v[s] == '\t'))
			s++;
		while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
			e--;
		if (e - s == tl && strncasecmp(v + s, token, tl) == 0)
			return true;
		if (i == n)
			break;
		v += i + 1;
		n -= i + 1;
	}
	return false;
}

/* Walks the header lines after the first: checks each is "name: value"
 * without control bytes, and looks for Upgrade and Connection. */
static int headers(const char *p, const char *end, bool *upgrade, bool *connection, char *err,
		   size_t errlen)
{
	*upgrade = *connection = false;
	while (p < end - 2) {
		const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
		const char *colon;
		size_t vlen;

		if (!eol || eol == p)
			break;
		colon = memchr(p, ':', (size_t)(eol - p));
		if (!colon || colon == p) {
			errbuf_printf(err, errlen, "malformed header line");
			return -EINVAL;
		}
		for (const char *q = p; q < eol; q++)
			if ((unsigned char)*q < 0x20 && *q != '\t') {
				errbuf_printf(err, errlen, "control byte in a header");
				return -EINVAL;
			}
		vlen = (size_t)(eol - colon - 1);
		if ((size_t)(colon - p) == 7 && strncasecmp(p, "Upgrade", 7) == 0)
			*upgrade = *upgrade || has_token(colon + 1, vlen, RELAY_UPGRADE_TOKEN);
		else if ((size_t)(colon - p) == 10 && strncasecmp(p, "Connection", 10) == 0)
			*connection = *connection || has_token(colon + 1, vlen, "upgrade");
		p = eol + 2;
	}
	return 0;
}

int relay_upgrade_request_parse(const char *p, size_t len, size_t *head_len, char *err,
				size_t errlen)
{
	const char *end = head_end(p, len > RELAY_UPGRADE_MAX_HEAD ? RELAY_UPGRADE_MAX_HEAD : len);
	const char *eol, *sp1, *sp2;
	bool up, conn;
	int ret;

	if (!end) {
		if (len >= RELAY_UPGRADE_MAX_HEAD) {
			errbuf_printf(err, errlen, "request head over %u bytes", RELAY_UPGRADE_MAX_HEAD);
			return -EMSGSIZE;
		}
		/* Refuse early what cannot become a request line. */
		for (size_t i = 0; i < len && i < 8; i++)
			if (p[i] < 'A' || p[i] > 'Z') {
				if (p[i] == ' ' && i > 0)
					break;
				errbuf_printf(err, errlen, "not an HTTP request");
				return -EINVAL;
			}
		return 0;
	}
	eol = memmem(p, (size_t)(end - p), "\r\n", 2);
	sp1 = memchr(p, ' ', (size_t)(eol - p));
	sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
	if (!sp1 || !sp2 || (size_t)(eol - sp2 - 1) != 8 || strncmp(sp2 + 1, "HTTP/1.", 7) != 0) {
		errbuf_printf(err, errlen, "malformed request line");
		return -EINVAL;
	}
	if ((ret = headers(eol + 2, end, &up, &conn, err, errlen)))
		return ret;
	if (sp1 - p != 3 || strncmp(p, "GET", 3) != 0) {
		errbuf_printf(err, errlen, "method is not GET");
		return -EINVAL;
	}
	if ((size_t)(sp2 - sp1 - 1) != strlen(RELAY_UPGRADE_PATH) ||
	    strncmp(sp1 + 1, RELAY_UPGRADE_PATH, strlen(RELAY_UPGRADE_PATH)) != 0) {
		errbuf_printf(err, errlen, "path is not %s", RELAY_UPGRADE_PATH);
		return -ENOENT;
	}
	if (!up || !conn) {
		errbuf_printf(err, errlen, "no Upgrade: %s", RELAY_UPGRADE_TOKEN);
		return -EPROTO;
	}
	*head_len = (size_t)(end - p);
	return 1;
}

int relay_upgrade_response(struct buf *out)
{
	return buf_add_str(out, "HTTP/1.1 101 Switching Protocols\r\n"
				"Upgrade: " RELAY_UPGRADE_TOKEN "\r\n"
				"Connection: Upgrade\r\n\r\n");
}

int relay_upgrade_refusal(struct buf *out, int err)
{
	const char *status = err == -ENOENT	? "404 Not Found"
			     : err == -EPROTO	? "426 Upgrade Required"
			     : err == -EMSGSIZE ? "431 Request Header Fields Too Large"
						: "400 Bad Request";

	return buf_addf(out,
			"HTTP/1.1 %s\r\nUpgrade: %s\r\nConnection: close\r\n"
			"Content-Type: text/plain\r\nContent-Length: %zu\r\n\r\n%s\n",
			status, RELAY_UPGRADE_TOKEN, strlen(status) + 1, status);
}

int relay_upgrade_request(struct buf *out, const char *host)
{
	for (const char *q = host; *q; q++)
		if ((unsigned char)*q <= ' ')
			return -EINVAL;
	return buf_addf(out,
			"GET " RELAY_UPGRADE_PATH " HTTP/1.1\r\nHost: %s\r\n"
			"Upgrade: " RELAY_UPGRADE_TOKEN "\r\nConnection: Upgrade\r\n\r\n",
			host);
}

int relay_upgrade_response_parse(const char *p, size_t len, size_t *head_len, char *err,
				 size_t errlen)
{
	const char *end = head_end(p, len > RELAY_UPGRADE_MAX_HEAD ? RELAY_UPGRADE_MAX_HEAD : len);
	const char *eol;
	bool up, conn;
	int ret;

	if (!end) {
		if (len >= RELAY_UPGRADE_MAX_HEAD) {
			errbuf_printf(err, errlen, "response head over %u bytes", RELAY_UPGRADE_MAX_HEAD);
			return -EMSGSIZE;
		}
		return 0;
	}
	eol = memmem(p, (size_t)(end - p), "\r\n", 2);
	if ((size_t)(eol - p) < 12 || strncmp(p, "HTTP/1.", 7) != 0 || p[8] != ' ') {
		errbuf_printf(err, errlen, "malformed status line");
		return -EINVAL;
	}
	if (strncmp(p + 9, "101", 3) != 0) {
		errbuf_printf(err, errlen, "status %.3s, not 101", p + 9);
		return -EPROTO;
	}
	if ((ret = headers(eol + 2, end, &up, &conn, err, errlen)))
		return ret;
	if (!up) {
		errbuf_printf(err, errlen, "101 without Upgrade: %s", RELAY_UPGRADE_TOKEN);
		return -EPROTO;
	}
	*head_len = (size_t)(end - p);
	return 1;
}
