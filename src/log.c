/* log: lines on stderr as logfmt or JSON, one fwrite each, so any thread
 * may log (but not a forked snapshot child: stdio takes a lock). The level
 * and format are set by main at start and on a config reload (SIGHUP);
 * atomic, since every thread reads them. The current request id is
 * thread-local: the HTTP thread handling a request sets it.
 *
 * Every line is built field by field into a LogLine (LOG_LINE_MAX bytes,
 * the last LOG_RESERVE of them kept for closing it), escaping each string
 * value with one escaper that suits both formats: \" \\ \n \r \t, other
 * control bytes and bytes that are not UTF-8 as \u00XX. log_msg's printf
 * pairs are parsed back into fields, so they obey the same rules. */
#include "log.h"

#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "timeutil.h"

/* Room always left for: a closing quote, the truncated marker, "}\n". */
#define LOG_RESERVE 48

static atomic_int min_level = LOG_INFO;
static atomic_int out_format = LOG_FORMAT_LOGFMT;
static _Thread_local char request_id[LOG_REQUEST_ID_MAX + 1];

void log_set_level(LogLevel level) { atomic_store_explicit(&min_level, (int)level, memory_order_relaxed); }

void log_set_format(LogFormat format) { atomic_store_explicit(&out_format, (int)format, memory_order_relaxed); }

bool log_enabled(LogLevel level) { return (int)level >= atomic_load_explicit(&min_level, memory_order_relaxed); }

void log_set_request_id(const char *id)
{
    size_t n = id ? strnlen(id, LOG_REQUEST_ID_MAX) : 0;
    memcpy(request_id, id ? id : "", n);
    request_id[n] = '\0';
}

/* ---- escaping ------------------------------------------------------------ */

/* The length of the well-formed UTF-8 sequence of 2 to 4 bytes at p (n bytes
 * left), or 0. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf;
    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        len = 2;
    else if (p[0] >= 0xe0 && p[0] <= 0xef)
        len = 3, lo = p[0] == 0xe0 ? 0xa0 : 0x80, hi = p[0] == 0xed ? 0x9f : 0xbf;
    else if (p[0] >= 0xf0 && p[0] <= 0xf4)
        len = 4, lo = p[0] == 0xf0 ? 0x90 : 0x80, hi = p[0] == 0xf4 ? 0x8f : 0xbf;
    else
        return 0;
    if (n < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return len;
}

/* Appends d (n bytes) to out at *len if it fits within cap; false if not. */
static bool put(char *out, size_t cap, size_t *len, const char *d, size_t n)
{
    if (*len + n > cap)
        return false;
    memcpy(out + *len, d, n);
    *len += n;
    return true;
}

/* Appends v (n bytes) escaped, without quotes, as far as whole escapes fit
 * within cap. False if cut. */
static bool put_escaped(char *out, size_t cap, size_t *len, const char *v, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char ch = (unsigned char)v[i];
        char esc[8];
        const char *d = esc;
        size_t dn = 2, step = 1;
        if (ch == '"' || ch == '\\') {
            esc[0] = '\\', esc[1] = (char)ch;
        } else if (ch == '\n' || ch == '\r' || ch == '\t') {
            esc[0] = '\\', esc[1] = ch == '\n' ? 'n' : ch == '\r' ? 'r' : 't';
        } else if (ch >= 0x20 && ch < 0x7f) {
            d = v + i, dn = 1;
        } else if (ch >= 0x80 && (step = utf8_seq((const unsigned char *)v + i, n - i)) > 0) {
            d = v + i, dn = step;
        } else {
            snprintf(esc, sizeof esc, "\\u%04x", ch);
            dn = 6, step = 1;
        }
        if (!put(out, cap, len, d, dn))
            return false;
        i += step;
    }
    return true;
}

const char *log_quote(char *out, size_t cap, const char *s)
{
    if (cap < 3) {
        if (cap)
            out[0] = '\0';
        return out;
    }
    size_t len = 0;
    out[len++] = '"';
    put_escaped(out, cap - 2, &len, s, strlen(s));
    out[len++] = '"';
    out[len] = '\0';
    return out;
}

/* ---- building a line ------------------------------------------------------ */

static size_t room(void) { return LOG_LINE_MAX - LOG_RESERVE; }

/* Starts field key: ` key=` or `,"key":`, plus an opening quote if quoted.
 * False (the line is then truncated) if that and a little more do not fit. */
static bool field_start(LogLine *l, const char *key, size_t keylen, bool quoted)
{
    if (!l->on || l->truncated)
        return false;
    size_t len = l->len;
    bool ok;
    if (l->format == LOG_FORMAT_JSON) {
        ok = put(l->buf, room(), &len, ",\"", 2) && put_escaped(l->buf, room(), &len, key, keylen) &&
             put(l->buf, room(), &len, "\":", 2);
    } else {
        ok = put(l->buf, room(), &len, " ", 1);
        for (size_t i = 0; ok && i < keylen; i++) {
            /* keys are the code's own names; anything odd becomes '_' */
            char ch = key[i];
            ok = put(l->buf, room(), &len, (ch > 0x20 && ch < 0x7f && ch != '=' && ch != '"') ? &ch : "_", 1);
        }
        ok = ok && put(l->buf, room(), &len, "=", 1);
    }
    ok = ok && (!quoted || put(l->buf, room(), &len, "\"", 1)) && len + 8 <= room();
    if (!ok) {
        l->truncated = true;
        return false;
    }
    l->len = len;
    return true;
}

/* A quoted field from n bytes of value. */
static void field_str(LogLine *l, const char *key, size_t keylen, const char *v, size_t n)
{
    if (!field_start(l, key, keylen, true))
        return;
    if (!put_escaped(l->buf, room(), &l->len, v, n))
        l->truncated = true;
    l->buf[l->len++] = '"'; /* from the reserve */
}

/* A field whose value is written as is (a number, true, false). */
static void field_raw(LogLine *l, const char *key, const char *v)
{
    if (field_start(l, key, strlen(key), false) && !put(l->buf, room(), &l->len, v, strlen(v)))
        l->truncated = true;
}

bool log_begin(LogLine *l, LogLevel level, const char *msg)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    l->on = log_enabled(level);
    l->len = 0;
    l->truncated = false;
    if (!l->on)
        return false;
    l->format = (LogFormat)atomic_load_explicit(&out_format, memory_order_relaxed);
    char ts[TIME_RFC3339_LEN];
    time_format_rfc3339(time_now(), ts);
    if (l->format == LOG_FORMAT_JSON) {
        l->len = (size_t)snprintf(l->buf, room(), "{\"ts\":\"%s\",\"level\":\"%s\"", ts, names[level]);
        log_str(l, "msg", msg);
    } else {
        l->len = (size_t)snprintf(l->buf, room(), "ts=%s level=%s", ts, names[level]);
        log_str(l, "msg", msg);
    }
    if (request_id[0])
        log_str(l, "request_id", request_id);
    return true;
}

void log_str(LogLine *l, const char *key, const char *value)
{
    field_str(l, key, strlen(key), value ? value : "", value ? strlen(value) : 0);
}

void log_int(LogLine *l, const char *key, long long value)
{
    char v[24];
    snprintf(v, sizeof v, "%lld", value);
    field_raw(l, key, v);
}

void log_num(LogLine *l, const char *key, double value, int decimals)
{
    char v[64];
    snprintf(v, sizeof v, "%.*f", decimals, value);
    if (isfinite(value))
        field_raw(l, key, v);
    else
        log_str(l, key, v); /* JSON has no nan or inf */
}

void log_bool(LogLine *l, const char *key, bool value) { field_raw(l, key, value ? "true" : "false"); }

void log_end(LogLine *l)
{
    if (!l->on)
        return;
    static const char mark_json[] = ",\"truncated\":true", mark_logfmt[] = " truncated=true";
    if (l->truncated) {
        const char *m = l->format == LOG_FORMAT_JSON ? mark_json : mark_logfmt;
        memcpy(l->buf + l->len, m, strlen(m));
        l->len += strlen(m);
    }
    if (l->format == LOG_FORMAT_JSON)
        l->buf[l->len++] = '}';
    l->buf[l->len++] = '\n';
    fwrite(l->buf, 1, l->len, stderr);
    l->on = false;
}

/* ---- log_msg: printf pairs parsed back into fields --------------------- */

/* Is v (n bytes) a JSON number? */
static bool json_number(const char *v, size_t n)
{
    size_t i = 0;
    if (i < n && v[i] == '-')
        i++;
    if (i >= n || v[i] < '0' || v[i] > '9')
        return false;
    if (v[i] == '0')
        i++;
    else
        while (i < n && v[i] >= '0' && v[i] <= '9')
            i++;
    if (i < n && v[i] == '.') {
        if (++i >= n || v[i] < '0' || v[i] > '9')
            return false;
        while (i < n && v[i] >= '0' && v[i] <= '9')
            i++;
    }
    if (i < n && (v[i] == 'e' || v[i] == 'E')) {
        if (++i < n && (v[i] == '+' || v[i] == '-'))
            i++;
        if (i >= n || v[i] < '0' || v[i] > '9')
            return false;
        while (i < n && v[i] >= '0' && v[i] <= '9')
            i++;
    }
    return i == n;
}

/* A bare value (no quotes in the pairs): as is where that is safe, else
 * quoted. In JSON, numbers and true/false stay bare. */
static void field_bare(LogLine *l, const char *key, size_t keylen, const char *v, size_t n)
{
    bool safe = n > 0;
    for (size_t i = 0; safe && i < n; i++)
        safe = v[i] > 0x20 && v[i] < 0x7f && v[i] != '"' && v[i] != '\\' && v[i] != '=';
    if (l->format == LOG_FORMAT_JSON)
        safe = json_number(v, n) || (n == 4 && !memcmp(v, "true", 4)) || (n == 5 && !memcmp(v, "false", 5));
    if (!safe) {
        field_str(l, key, keylen, v, n);
        return;
    }
    if (field_start(l, key, keylen, false) && !put(l->buf, room(), &l->len, v, n))
        l->truncated = true;
}

/* Parses "key=value key="quoted \"value\"" ..." into fields of l. A quoted
 * value ends at a quote followed by a space or the end, so a quote the
 * caller forgot to escape stays in the value. A word without '=' becomes
 * a field with the value true. */
static void add_pairs(LogLine *l, const char *p)
{
    static _Thread_local char val[LOG_LINE_MAX];
    while (*p) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        const char *key = p;
        while (*p && *p != '=' && *p != ' ')
            p++;
        size_t keylen = (size_t)(p - key);
        if (*p != '=') {
            field_bare(l, key, keylen, "true", 4);
            continue;
        }
        p++;
        if (*p == '"') {
            size_t n = 0;
            for (p++; *p; p++) {
                if (*p == '\\' && p[1]) {
                    p++;
                    val[n++] = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p == 'r' ? '\r' : *p;
                } else if (*p == '"' && (p[1] == ' ' || !p[1])) {
                    p++;
                    break;
                } else {
                    val[n++] = *p;
                }
            }
            field_str(l, key, keylen, val, n);
        } else {
            const char *v = p;
            while (*p && *p != ' ')
                p++;
            field_bare(l, key, keylen, v, (size_t)(p - v));
        }
    }
}

void log_msg(LogLevel level, const char *msg, const char *fmt, ...)
{
    LogLine l;
    if (!log_begin(&l, level, msg))
        return;
    if (fmt) {
        char pairs[LOG_LINE_MAX];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(pairs, sizeof pairs, fmt, ap);
        va_end(ap);
        add_pairs(&l, pairs);
    }
    log_end(&l);
}
