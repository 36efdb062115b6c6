/* log: one line per notable event on stderr, as logfmt (the default)
 *   ts=2026-11-28T16:20:00Z level=info msg="listening" addr=127.0.0.1:8080
 * or, with log.format=json, as one JSON object per line
 *   {"ts":"2026-11-28T16:20:00Z","level":"info","msg":"listening","addr":"127.0.0.1:8080"}
 *
 * Every string value is escaped for its format: quotes, backslashes and
 * control characters never break a line or forge another. A line logged on
 * a thread that is handling an HTTP request carries that request's id
 * (request_id=..., log_set_request_id).
 *
 * Threads: any thread may log (one fwrite per line), but not a forked
 * snapshot child (stdio takes a lock). Level and format are set by main at
 * start and on a config reload (SIGHUP); the request id is per thread. */
#ifndef LTVD_LOG_H
#define LTVD_LOG_H

#include <stdbool.h>
#include <stddef.h>

typedef enum { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR } LogLevel;
/* The order of the log.format choices in config.c. */
typedef enum { LOG_FORMAT_LOGFMT = 0, LOG_FORMAT_JSON } LogFormat;

/* A line is cut (and marked truncated=true) past this many bytes. */
#define LOG_LINE_MAX 2048
/* The longest request id: the client's X-Request-Id is 1 to 64 bytes. */
#define LOG_REQUEST_ID_MAX 64

void log_set_level(LogLevel level);
void log_set_format(LogFormat format);
/* Would a line at level be written? */
bool log_enabled(LogLevel level);

/* The calling thread's current request id, put in each line it logs until
 * cleared (NULL or ""). At most LOG_REQUEST_ID_MAX bytes are kept. */
void log_set_request_id(const char *id);

/* fmt continues the line after msg=..., as "key=value ..." pairs (logfmt):
 * a value is a bare word (number, name) or a quoted string, "..." with
 * \" and \\ escaped; log_quote makes such a value from any text. The pairs
 * are parsed back and written in the configured format, so a stray quote
 * or newline in a value cannot break the line. */
void log_msg(LogLevel level, const char *msg, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* s as a quoted, escaped logfmt value ("a \"b\"\n" for a "b"<newline>),
 * into out (cap bytes, cut to fit). Returns out, for use as a %s argument. */
const char *log_quote(char *out, size_t cap, const char *s);

/* A line built field by field, for lines whose values come from clients
 * (the access log). The caller owns the LogLine (stack); log_begin returns
 * false, and the rest does nothing, if the level is below the log level. */
typedef struct LogLine {
    bool on;
    LogFormat format;
    size_t len;
    bool truncated;
    char buf[LOG_LINE_MAX];
} LogLine;

bool log_begin(LogLine *l, LogLevel level, const char *msg);
/* A string field: always quoted and escaped. */
void log_str(LogLine *l, const char *key, const char *value);
/* A number field, written as printf's %.*f (decimals) or %lld. */
void log_int(LogLine *l, const char *key, long long value);
void log_num(LogLine *l, const char *key, double value, int decimals);
void log_bool(LogLine *l, const char *key, bool value);
/* Writes the line. */
void log_end(LogLine *l);

#endif
