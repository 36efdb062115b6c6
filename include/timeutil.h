/* timeutil: RFC 3339 / Unix-seconds parsing and formatting.
 *
 * ltvd keeps every timestamp as whole Unix seconds (int64). Accepted range is
 * 1970-01-01T00:00:00Z .. 2100-12-31T23:59:59Z (brief §2); anything outside is
 * refused by the parsers. All functions are pure and thread-safe. */
#ifndef LTVD_TIMEUTIL_H
#define LTVD_TIMEUTIL_H

#include <stddef.h>
#include <stdint.h>

#define TIME_MIN_TS 0LL
#define TIME_MAX_TS 4133980799LL /* 2100-12-31T23:59:59Z */
#define TIME_RFC3339_LEN 21      /* "YYYY-MM-DDTHH:MM:SSZ" + NUL */

/* Parses "YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm|-hh:mm)" ('T' may be 't' or a
 * space, 'Z' may be 'z'). Fractional seconds are truncated. Returns 0 and sets
 * *out, or -EINVAL for a malformed string, -ERANGE outside the accepted range. */
int time_parse_rfc3339(const char *s, int64_t *out);

/* Accepts a finite number of Unix seconds in range (fraction truncated):
 * the form of a time sent as a JSON number. */
int time_from_epoch(double seconds, int64_t *out);

/* The one parser of a time a client sends as text: an event's ts or a
 * batch's as_of given as a JSON string, as_of in a query string. Accepts
 * what docs/SEMANTICS.md documents, "RFC 3339 or Unix seconds":
 * time_parse_rfc3339's forms, or Unix seconds in decimal digits with an
 * optional fraction ("883612799", "883612799.5"; fraction truncated). No
 * sign, exponent, blanks or hex. 0 and *out, -EINVAL for anything else,
 * -ERANGE outside the accepted range. */
int time_parse(const char *s, int64_t *out);

/* Writes "YYYY-MM-DDTHH:MM:SSZ" into buf (>= TIME_RFC3339_LEN bytes). */
void time_format_rfc3339(int64_t ts, char *buf);

/* Days since 1970-01-01 for a civil date, and back (proleptic Gregorian). */
int64_t time_days_from_civil(int y, unsigned m, unsigned d);
void time_civil_from_days(int64_t days, int *y, unsigned *m, unsigned *d);

/* Wall clock, Unix seconds. */
int64_t time_now(void);
/* Monotonic clock in nanoseconds, for latency measurements. */
uint64_t time_mono_ns(void);

#endif
