/* fuzz_time: the text parsers of a client's time (timeutil.c): an event's
 * ts, as_of in a query or batch body. Input: the string (a NUL ends it
 * early, as in a C string from cJSON or a query); also its first 8 bytes
 * as a double of Unix seconds. Checks: an accepted time lies in range and
 * formats to text that parses back to the same second. */
#include "fuzz_common.h"
#include "timeutil.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_ok(int rc, int64_t t)
{
    FUZZ_CHECK(rc == 0 || rc == -EINVAL || rc == -ERANGE);
    if (rc)
        return;
    FUZZ_CHECK(t >= TIME_MIN_TS && t <= TIME_MAX_TS);
    char buf[TIME_RFC3339_LEN];
    time_format_rfc3339(t, buf);
    int64_t back = -1;
    FUZZ_CHECK(time_parse_rfc3339(buf, &back) == 0 && back == t);
    FUZZ_CHECK(time_parse(buf, &back) == 0 && back == t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 256)
        return 0;
    char s[257];
    memcpy(s, data, size);
    s[size] = '\0';
    int64_t t = -1;
    check_ok(time_parse(s, &t), t);
    t = -1;
    check_ok(time_parse_rfc3339(s, &t), t);
    if (size >= 8) {
        double d;
        memcpy(&d, data, 8);
        t = -1;
        check_ok(time_from_epoch(d, &t), t);
    }
    return 0;
}
