/* RFC 3339 and Unix-seconds parsing: accepted forms, offsets, range. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "test_util.h"
#include "timeutil.h"

int main(void)
{
    int64_t t;
    ASSERT(time_parse_rfc3339("1970-01-01T00:00:00Z", &t) == 0 && t == 0);
    ASSERT(time_parse_rfc3339("1997-12-31T23:59:59Z", &t) == 0 && t == 883612799);
    ASSERT(time_parse_rfc3339("1997-12-31t23:59:59z", &t) == 0 && t == 883612799);
    ASSERT(time_parse_rfc3339("1997-12-31 23:59:59Z", &t) == 0 && t == 883612799);
    ASSERT(time_parse_rfc3339("1997-12-31T23:59:59.999Z", &t) == 0 && t == 883612799);
    ASSERT(time_parse_rfc3339("1998-01-01T01:59:59+02:00", &t) == 0 && t == 883612799);
    ASSERT(time_parse_rfc3339("1997-12-31T20:59:59-03:00", &t) == 0 && t == 883612799);
    ASSERT(time_parse_rfc3339("2000-02-29T00:00:00Z", &t) == 0 && t == 951782400);
    ASSERT(time_parse_rfc3339("2100-12-31T23:59:59Z", &t) == 0 && t == TIME_MAX_TS);
    /* malformed */
    ASSERT(time_parse_rfc3339("1997-12-31", &t) == -EINVAL);
    ASSERT(time_parse_rfc3339("1997-12-31T23:59:59", &t) == -EINVAL);     /* no zone */
    ASSERT(time_parse_rfc3339("1997-02-29T00:00:00Z", &t) == -EINVAL);    /* not a leap year */
    ASSERT(time_parse_rfc3339("1997-13-01T00:00:00Z", &t) == -EINVAL);
    ASSERT(time_parse_rfc3339("1997-12-31T24:00:00Z", &t) == -EINVAL);
    ASSERT(time_parse_rfc3339("1997-12-31T23:59:59Zjunk", &t) == -EINVAL);
    ASSERT(time_parse_rfc3339("1997-12-31T23:59:59.Z", &t) == -EINVAL);
    ASSERT(time_parse_rfc3339("yesterday", &t) == -EINVAL);
    ASSERT(time_parse_rfc3339("", &t) == -EINVAL);
    /* out of range */
    ASSERT(time_parse_rfc3339("1969-12-31T23:59:59Z", &t) == -ERANGE);
    ASSERT(time_parse_rfc3339("2101-01-01T00:00:00Z", &t) == -ERANGE);
    /* epoch numbers */
    ASSERT(time_from_epoch(883612799.75, &t) == 0 && t == 883612799);
    ASSERT(time_from_epoch(-1, &t) == -ERANGE);
    ASSERT(time_from_epoch(5e9, &t) == -ERANGE);
    ASSERT(time_from_epoch(NAN, &t) == -EINVAL);
    ASSERT(time_from_epoch(INFINITY, &t) == -EINVAL);
    /* time_parse: the one parser of a client's time given as text (ts, as_of) */
    ASSERT(time_parse("1997-12-31T23:59:59Z", &t) == 0 && t == 883612799);
    ASSERT(time_parse("1998-01-01 01:59:59.5+02:00", &t) == 0 && t == 883612799);
    ASSERT(time_parse("883612799", &t) == 0 && t == 883612799);
    ASSERT(time_parse("883612799.999", &t) == 0 && t == 883612799);
    ASSERT(time_parse("0", &t) == 0 && t == 0);
    ASSERT(time_parse("7", &t) == 0 && t == 7);
    ASSERT(time_parse("4133980799", &t) == 0 && t == TIME_MAX_TS);
    ASSERT(time_parse("1997", &t) == 0 && t == 1997); /* a bare number is seconds */
    t = 42;
    /* refused, and *out left alone */
    static const char *const malformed[] = {
        "", " 883612799", "883612799 ", "+883612799", "-0", "883612799.", ".5", "8.8e8", "1e9", "0x34AA0E7F",
        "inf", "nan", "883612799Z", "883_612_799", "1997-12-31", "1997-12-31T23:59:59", "yesterday",
        "1997-12-31T23:59:59Z ", "1997-"};
    for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++) {
        int rc = time_parse(malformed[i], &t);
        if (rc != -EINVAL)
            fprintf(stderr, "time_parse(\"%s\") = %d, wanted -EINVAL\n", malformed[i], rc);
        ASSERT(rc == -EINVAL);
    }
    ASSERT(time_parse("4133980800", &t) == -ERANGE);
    ASSERT(time_parse("4133980800.5", &t) == -ERANGE);
    ASSERT(time_parse("99999999999999999999999999", &t) == -ERANGE); /* no overflow */
    ASSERT(time_parse("1969-12-31T23:59:59Z", &t) == -ERANGE);
    ASSERT(time_parse("2100-12-31T23:59:59-00:01", &t) == -ERANGE);
    ASSERT(t == 42);
    /* formatting round-trips */
    char buf[TIME_RFC3339_LEN];
    time_format_rfc3339(883612799, buf);
    ASSERT(strcmp(buf, "1997-12-31T23:59:59Z") == 0);
    for (int64_t x = 0; x < TIME_MAX_TS; x += 86399 * 37 + 13) {
        time_format_rfc3339(x, buf);
        ASSERT(time_parse_rfc3339(buf, &t) == 0 && t == x);
    }
    TEST_DONE("test_time");
}
