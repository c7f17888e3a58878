#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *log_component = "knit";
static _Atomic int log_min = LOG_INFO;
static _Atomic int log_fd = -1;

static const char *const level_names[] = {
	[LOG_DEBUG] = "debug",
	[LOG_INFO] = "info",
	[LOG_WARN] = "warn",
	[LOG_ERROR] = "error",
};

void log_init(const char *component, enum log_level min_level)
{
	if (component && *component)
		log_component = component;
	log_min = min_level;
}

void log_set_level(enum log_level min_level) { log_min = min_level; }
enum log_level log_get_level(void) { return (enum log_level)log_min; }
bool log_enabled(enum log_level level) { return (int)level >= log_min; }
void log_set_fd(int fd) { log_fd = fd; }

bool log_level_parse(const char *s, enum log_level *out)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (s && strcmp(s, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return true;
		}
	}
	return false;
}

static bool needs_quotes(const char *s)
{
	if (!*s)
		return true;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c >= 0x7f)
			return true;
	}
	return false;
}

/* Appends s as a logfmt value at out[*pos], never past outlen-1. */
static void put_value(char *out, size_t outlen, size_t *pos, const char *s)
{
	size_t p = *pos;
	bool quote = needs_quotes(s);

#define PUT(ch) do { if (p + 1 < outlen) out[p++] = (ch); } while (0)
	if (quote)
		PUT('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (!quote) {
			PUT((char)c);
		} else if (c == '"' || c == '\\') {
			PUT('\\');
			PUT((char)c);
		} else if (c == '\n') {
			PUT('\\');
			PUT('n');
		} else if (c == '\t') {
			PUT('\\');
			PUT('t');
		} else if (c < 0x20 || c == 0x7f) {
			static const char hex[] = "0123456789abcdef";
			if (p + 4 < outlen) {
				out[p++] = '\\';
				out[p++] = 'x';
				out[p++] = hex[c >> 4];
				out[p++] = hex[c & 15];
			}
		} else {
			PUT((char)c);
		}
	}
	if (quote)
		PUT('"');
#undef PUT
	out[p < outlen ? p : outlen - 1] = '\0';
	*pos = p;
}

char *log_quote(char *out, size_t outlen, const char *s)
{
	size_t pos = 0;

	if (!outlen)
		return out;
	put_value(out, outlen, &pos, s ? s : "");
	/* A truncated quoted value must still end in a quote to stay parseable. */
	if (pos + 1 >= outlen && out[0] == '"' && outlen >= 2)
		out[outlen - 2] = '"';
	return out;
}

void log_msg(enum log_level level, const char *msg, const char *fields, ...)
{
	char line[4096];
	size_t pos = 0;
	int saved_errno = errno;
	struct timespec ts;
	struct tm tm;
	int n;

	if (!log_enabled(level))
		return;
	if ((unsigned)level > LOG_ERROR)
		level = LOG_ERROR;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, sizeof(line), "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s comp=",
		     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		     ts.tv_nsec / 1000000, level_names[level]);
	pos = (size_t)n;
	put_value(line, sizeof(line), &pos, log_component);
	if (pos + 5 < sizeof(line)) {
		memcpy(line + pos, " msg=", 5);
		pos += 5;
	}
	put_value(line, sizeof(line), &pos, msg ? msg : "");

	while (fields && *fields == ' ')
		fields++;
	if (fields && *fields && pos + 2 < sizeof(line)) {
		va_list ap;
		line[pos++] = ' ';
		va_start(ap, fields);
		n = vsnprintf(line + pos, sizeof(line) - pos, fields, ap);
		va_end(ap);
		if (n > 0)
			pos += (size_t)n < sizeof(line) - pos ? (size_t)n : sizeof(line) - pos - 1;
	}
	/* Room for the newline is always kept: truncate the line if needed. */
	if (pos > sizeof(line) - 2)
		pos = sizeof(line) - 2;
	line[pos++] = '\n';

	int fd = log_fd >= 0 ? log_fd : STDERR_FILENO;
	const char *p = line;
	while (pos > 0) {
		ssize_t w = write(fd, p, pos);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		p += w;
		pos -= (size_t)w;
	}
	errno = saved_errno;
}
