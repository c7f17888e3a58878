/* Structured logging: one logfmt line per event, to stderr.
 *
 *   ts=2026-11-22T23:50:01.123Z level=info comp=knitd msg="peer up" peer=ab12 rx=10
 *
 * `msg` is a human sentence (quoted and escaped for you); `fields` is a
 * printf format for key=value pairs, written as given after one space
 * (leading spaces in it are skipped). Use log_quote() for
 * values that may contain spaces or quotes. Thread-safe: one write(2) per line. */
#ifndef KNIT_LOG_H
#define KNIT_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Component name written as comp=NAME; default "knit". Not copied: pass a literal. */
void log_init(const char *component, enum log_level min_level);
void log_set_level(enum log_level min_level);
enum log_level log_get_level(void);
bool log_enabled(enum log_level level);
/* Parses "debug", "info", "warn", "error"; false if unknown. */
bool log_level_parse(const char *s, enum log_level *out);
/* Redirects output (tests); fd < 0 restores stderr. */
void log_set_fd(int fd);

void log_msg(enum log_level level, const char *msg, const char *fields, ...)
	__attribute__((format(printf, 3, 4)));

/* Writes s into out as a logfmt value: bare if safe, else "quoted\"escaped".
 * Always NUL-terminates (truncating if needed); returns out. */
char *log_quote(char *out, size_t outlen, const char *s);

/* log_info("peer up", "peer=%s rx=%zu", p, rx); the fields are optional.
 * The " " prefix keeps the format non-empty when there are none. */
#define log_debug(msg, ...) do { if (log_enabled(LOG_DEBUG)) log_msg(LOG_DEBUG, msg, " " __VA_ARGS__); } while (0)
#define log_info(msg, ...)  log_msg(LOG_INFO, msg, " " __VA_ARGS__)
#define log_warn(msg, ...)  log_msg(LOG_WARN, msg, " " __VA_ARGS__)
#define log_error(msg, ...) log_msg(LOG_ERROR, msg, " " __VA_ARGS__)

#endif
