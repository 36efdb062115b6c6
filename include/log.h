/* log: one logfmt line per notable event on stderr:
 *   ts=2026-11-28T16:20:00Z level=info msg="listening" addr=127.0.0.1:8080
 * Thread-safe (a single fprintf per line). */
#ifndef LTVD_LOG_H
#define LTVD_LOG_H

typedef enum { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR } LogLevel;

void log_set_level(LogLevel level);
/* fmt continues the line after msg=..., as "key=value ..." pairs. */
void log_msg(LogLevel level, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
