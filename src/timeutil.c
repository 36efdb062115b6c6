/* timeutil: RFC 3339 / Unix-seconds parsing (time_parse is the one parser of
 * a client's time) and formatting on whole Unix seconds. The civil-date
 * conversion uses the era-based day count (400-year cycles of 146097 days). */
#include "timeutil.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <time.h>

int64_t time_days_from_civil(int y, unsigned m, unsigned d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

void time_civil_from_days(int64_t z, int *y, unsigned *m, unsigned *d)
{
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = (unsigned)(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int)(yoe + era * 400) + (*m <= 2);
}

static int read_digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

static int days_in_month(int y, int m)
{
    static const int dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 ? 28 + leap : dim[m - 1];
}

/* Past an optional fraction ('.' and at least one digit, ignored: ltvd
 * keeps whole seconds); NULL if the '.' has no digit after it. */
static const char *skip_fraction(const char *p)
{
    if (*p != '.')
        return p;
    p++;
    if (*p < '0' || *p > '9')
        return NULL;
    while (*p >= '0' && *p <= '9')
        p++;
    return p;
}

int time_parse_rfc3339(const char *s, int64_t *out)
{
    int y, mo, d, h, mi, sec;
    if (read_digits(s, 4, &y) || s[4] != '-' || read_digits(s + 5, 2, &mo) || s[7] != '-' ||
        read_digits(s + 8, 2, &d))
        return -EINVAL;
    if (s[10] != 'T' && s[10] != 't' && s[10] != ' ')
        return -EINVAL;
    if (read_digits(s + 11, 2, &h) || s[13] != ':' || read_digits(s + 14, 2, &mi) || s[16] != ':' ||
        read_digits(s + 17, 2, &sec))
        return -EINVAL;
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60)
        return -EINVAL;
    const char *p = s + 19;
    if (!(p = skip_fraction(p)))
        return -EINVAL;
    int offset = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (read_digits(p + 1, 2, &oh) || p[3] != ':' || read_digits(p + 4, 2, &om) || oh > 23 || om > 59)
            return -EINVAL;
        offset = (oh * 60 + om) * 60 * (*p == '+' ? 1 : -1);
        p += 6;
    } else {
        return -EINVAL;
    }
    if (*p != '\0')
        return -EINVAL;
    if (sec == 60)
        sec = 59; /* a leap second is folded onto the second before it */
    int64_t ts = time_days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + sec - offset;
    if (ts < TIME_MIN_TS || ts > TIME_MAX_TS)
        return -ERANGE;
    *out = ts;
    return 0;
}

int time_from_epoch(double seconds, int64_t *out)
{
    if (!isfinite(seconds))
        return -EINVAL;
    if (seconds < (double)TIME_MIN_TS || seconds >= (double)TIME_MAX_TS + 1.0)
        return -ERANGE;
    *out = (int64_t)seconds;
    return 0;
}

/* Decimal Unix seconds: digits, then optionally '.' and at least one digit. */
static int parse_seconds(const char *s, int64_t *out)
{
    const char *p = s;
    int64_t v = 0;
    bool big = false;
    if (*p < '0' || *p > '9')
        return -EINVAL;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > TIME_MAX_TS)
            big = true; /* no overflow; the rest must still be digits */
        else
            v = v * 10 + (*p - '0');
    }
    if (!(p = skip_fraction(p)))
        return -EINVAL;
    if (*p != '\0')
        return -EINVAL;
    if (big || v > TIME_MAX_TS)
        return -ERANGE;
    *out = v;
    return 0;
}

int time_parse(const char *s, int64_t *out)
{
    /* Unix seconds are all digits; anything else must be RFC 3339 */
    const char *p = s;
    while (*p >= '0' && *p <= '9')
        p++;
    bool seconds = p > s && (*p == '\0' || *p == '.');
    return seconds ? parse_seconds(s, out) : time_parse_rfc3339(s, out);
}

static void put2(char *p, unsigned v)
{
    p[0] = (char)('0' + v / 10);
    p[1] = (char)('0' + v % 10);
}

void time_format_rfc3339(int64_t ts, char *buf)
{
    int64_t days = ts / 86400, rem = ts % 86400;
    if (rem < 0) {
        rem += 86400;
        days--;
    }
    int y;
    unsigned m, d;
    time_civil_from_days(days, &y, &m, &d);
    if (y < 0 || y > 9999) {
        snprintf(buf, TIME_RFC3339_LEN, "0000-00-00T00:00:00Z");
        return;
    }
    /* by hand: this runs for every prediction served */
    put2(buf, (unsigned)y / 100);
    put2(buf + 2, (unsigned)y % 100);
    buf[4] = '-';
    put2(buf + 5, m);
    buf[7] = '-';
    put2(buf + 8, d);
    buf[10] = 'T';
    put2(buf + 11, (unsigned)(rem / 3600));
    buf[13] = ':';
    put2(buf + 14, (unsigned)(rem / 60 % 60));
    buf[16] = ':';
    put2(buf + 17, (unsigned)(rem % 60));
    buf[19] = 'Z';
    buf[20] = '\0';
}

int64_t time_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec;
}

uint64_t time_mono_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}
