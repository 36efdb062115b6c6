/* Small assertion helpers for the unit tests (one binary per area). A failed
 * assertion prints where and why and exits 1; TEST_SKIP exits 77, which meson
 * reports as SKIP (CI fails on any skip: .ci/run). */
#ifndef LTVD_TEST_UTIL_H
#define LTVD_TEST_UTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int test_checks;

#define ASSERT(cond)                                                                 \
    do {                                                                             \
        test_checks++;                                                               \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #cond); \
            exit(1);                                                                 \
        }                                                                            \
    } while (0)

#define ASSERT_NEAR(a, b, tol)                                                              \
    do {                                                                                    \
        test_checks++;                                                                      \
        double a_ = (a), b_ = (b);                                                          \
        if (!(fabs(a_ - b_) <= (tol))) {                                                    \
            fprintf(stderr, "%s:%d: %s = %.10g, expected %.10g (tol %g)\n", __FILE__, __LINE__, \
                    #a, a_, b_, (double)(tol));                                             \
            exit(1);                                                                        \
        }                                                                                   \
    } while (0)

/* Relative closeness: |a-b| <= rel * max(|b|, tiny). */
#define ASSERT_REL(a, b, rel) ASSERT_NEAR(a, b, (rel) * fmax(fabs((double)(b)), 1e-300))

/* Ends a test that cannot run here (its data is missing): says why, exit 77. */
#define TEST_SKIP(...)                 \
    do {                               \
        printf("SKIP: ");              \
        printf(__VA_ARGS__);           \
        printf("\n");                  \
        fflush(stdout);                \
        exit(77);                      \
    } while (0)

#define TEST_DONE(name)                                              \
    do {                                                             \
        printf("%s: %d checks passed\n", name, test_checks);         \
        return 0;                                                    \
    } while (0)

#endif
