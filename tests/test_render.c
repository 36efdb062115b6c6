/* The JSON renderers: numbers of every size come out as the values they
 * stand for (a fixed-point fast path below 1e13, %.17g above it: the fast
 * path's cast to uint64_t would overflow past 1.8e13, undefined behaviour
 * that float-cast-overflow reports), non-finite values as 0. */
#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>

#include "../src/http_render.h"
#include "test_util.h"

static double rendered_ltv(double v)
{
    PredictionView p;
    memset(&p, 0, sizeof p);
    memcpy(p.user_id, "u", 2);
    p.user_len = 1;
    p.p.ltv = v;
    TextBuf b = {0};
    render_prediction(&b, &p);
    ASSERT(!b.err);
    cJSON *j = cJSON_ParseWithLength((const char *)b.b.p, b.b.len);
    ASSERT(j);
    cJSON *ltv = cJSON_GetObjectItem(j, "ltv");
    ASSERT(cJSON_IsNumber(ltv));
    double out = ltv->valuedouble;
    cJSON_Delete(j);
    textbuf_free(&b);
    return out;
}

int main(void)
{
    const double values[] = {0,      1.5,    0.000001, 123456.789012, 9.99e12, 1e13,  1.8e13, 1.9e13,
                             5e14,   9.9e14, 1e15,     3e17,          1e300,   -2.25, -3e14,  -1e20};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        double v = values[i], got = rendered_ltv(v);
        ASSERT_NEAR(got, v, fabs(v) < 1e13 ? 5e-7 : fabs(v) * 1e-15);
    }
    ASSERT(rendered_ltv(NAN) == 0 && rendered_ltv(INFINITY) == 0 && rendered_ltv(-INFINITY) == 0);
    TEST_DONE("render");
}
