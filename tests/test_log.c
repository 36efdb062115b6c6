/* log.c: what an operator reads. Each call writes exactly one line; a
 * quote, backslash, newline or byte that is not UTF-8 in a value is escaped
 * (it cannot end the line or forge another); the JSON format writes one
 * object per line with numbers and booleans as JSON values; a line too long
 * is cut but stays well-formed and says so; the thread's request id is in
 * each line; lines below the level are not written. stderr is redirected to
 * a temporary file and read back. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "test_util.h"

static FILE *capture;
static char out[16384];
static int saved_stderr = -1;

/* ASSERT with stderr given back first, so that a failure and the output
 * it was about are seen. */
#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fflush(stderr);                                                  \
            dup2(saved_stderr, fileno(stderr));                              \
            fprintf(stderr, "logged: %s\n", out);                            \
        }                                                                    \
        ASSERT(cond);                                                        \
    } while (0)

/* Everything logged since the last call, NUL-terminated in out. */
static const char *captured(void)
{
    fflush(stderr);
    int fd = fileno(capture); /* shares its offset with stderr's */
    off_t n = lseek(fd, 0, SEEK_CUR);
    ASSERT(n >= 0 && (size_t)n < sizeof out);
    ssize_t got = pread(fd, out, (size_t)n, 0);
    ASSERT(got == n);
    out[got] = '\0';
    ASSERT(ftruncate(fd, 0) == 0 && lseek(fd, 0, SEEK_SET) == 0);
    return out;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

int main(void)
{
    capture = tmpfile();
    CHECK(capture);
    saved_stderr = dup(fileno(stderr));
    CHECK(dup2(fileno(capture), fileno(stderr)) >= 0);

    /* a forged line and a quote in a printf value: one line, escaped */
    const char *evil = "a\"b\nts=2026-01-01T00:00:00Z level=error msg=\"forged\"";
    log_msg(LOG_INFO, "hello", "path=\"%s\" n=%d", evil, 5);
    const char *s = captured();
    CHECK(count_lines(s) == 1);
    CHECK(strstr(s, " level=info msg=\"hello\" path=\"a\\\"b\\nts=2026-01-01T00:00:00Z level=error msg=\\\"forged\\\"\" n=5\n"));

    /* log_quote makes the same value by hand */
    char q[256];
    log_msg(LOG_INFO, "hello", "path=%s", log_quote(q, sizeof q, "x\"y\\z\t"));
    s = captured();
    CHECK(strstr(s, " path=\"x\\\"y\\\\z\\t\"\n"));

    /* bytes that are not UTF-8 are escaped, UTF-8 passes; control bytes too */
    LogLine l;
    CHECK(log_begin(&l, LOG_WARN, "bytes"));
    log_str(&l, "v", "\xc3\xa9-\xff-\x01");
    log_end(&l);
    s = captured();
    CHECK(strstr(s, " v=\"\xc3\xa9-\\u00ff-\\u0001\"\n"));

    /* the request id of the thread, until cleared */
    log_set_request_id("req-42");
    log_msg(LOG_INFO, "in a request", NULL);
    log_set_request_id(NULL);
    log_msg(LOG_INFO, "after it", NULL);
    s = captured();
    CHECK(count_lines(s) == 2);
    CHECK(strstr(s, "msg=\"in a request\" request_id=\"req-42\"\n") && strstr(s, "msg=\"after it\"\n"));

    /* JSON: typed values, escaped strings, a bare word becomes true */
    log_set_format(LOG_FORMAT_JSON);
    log_msg(LOG_INFO, "json", "n=5 x=1.5e3 name=abc ok=false flag p=\"%s\" bad=1.2.3", "q\"\n");
    s = captured();
    CHECK(count_lines(s) == 1 && s[0] == '{' && strstr(s, "}\n"));
    CHECK(strstr(s, "\"level\":\"info\",\"msg\":\"json\",\"n\":5,\"x\":1.5e3,\"name\":\"abc\",\"ok\":false,"
                     "\"flag\":true,\"p\":\"q\\\"\\n\",\"bad\":\"1.2.3\"}\n"));
    CHECK(log_begin(&l, LOG_INFO, "built"));
    log_int(&l, "status", 204);
    log_num(&l, "us", 12.25, 1);
    log_bool(&l, "held", true);
    log_end(&l);
    s = captured();
    CHECK(strstr(s, "\"msg\":\"built\",\"status\":204,\"us\":12.2,\"held\":true}\n") ||
           strstr(s, "\"msg\":\"built\",\"status\":204,\"us\":12.3,\"held\":true}\n"));

    /* too long: cut, closed, marked */
    static char big[6000];
    memset(big, 'x', sizeof big - 1);
    log_msg(LOG_INFO, "long", "v=\"%s\" after=1", big);
    s = captured();
    CHECK(count_lines(s) == 1 && strlen(s) <= LOG_LINE_MAX);
    CHECK(strstr(s, "xxx\",\"truncated\":true}\n"));
    log_set_format(LOG_FORMAT_LOGFMT);
    CHECK(log_begin(&l, LOG_INFO, "long"));
    log_str(&l, "v", big);
    log_int(&l, "after", 1);
    log_end(&l);
    s = captured();
    CHECK(count_lines(s) == 1 && strlen(s) <= LOG_LINE_MAX);
    CHECK(strstr(s, "xxx\" truncated=true\n") && !strstr(s, "after="));

    /* below the level: nothing */
    log_set_level(LOG_WARN);
    log_msg(LOG_INFO, "quiet", NULL);
    CHECK(!log_begin(&l, LOG_INFO, "quiet"));
    log_str(&l, "v", "ignored");
    log_end(&l);
    s = captured();
    CHECK(s[0] == '\0');

    dup2(saved_stderr, fileno(stderr));
    close(saved_stderr);
    fclose(capture);
    TEST_DONE("test_log");
}
