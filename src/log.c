/* log: logfmt lines on stderr, one fprintf each, so any thread may log
 * (but not a forked snapshot child: stdio takes a lock). The level is set
 * by main at start and on a config reload (SIGHUP); atomic, since every
 * thread reads it. */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>

#include "timeutil.h"

static atomic_int min_level = LOG_INFO;

void log_set_level(LogLevel level) { atomic_store_explicit(&min_level, (int)level, memory_order_relaxed); }

void log_msg(LogLevel level, const char *msg, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    if ((int)level < atomic_load_explicit(&min_level, memory_order_relaxed))
        return;
    char line[2048], ts[TIME_RFC3339_LEN];
    time_format_rfc3339(time_now(), ts);
    int n = snprintf(line, sizeof line, "ts=%s level=%s msg=\"%s\"", ts, names[level], msg);
    if (fmt && n > 0 && (size_t)n < sizeof line - 1) {
        line[n++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
        va_end(ap);
    }
    fprintf(stderr, "%s\n", line);
}
