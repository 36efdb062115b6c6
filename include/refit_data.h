/* refit_data: what a fallback refit fits on (src/refit_data.c). */
#ifndef LTVD_REFIT_DATA_H
#define LTVD_REFIT_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "coldstart.h"
#include "service.h"
#include "shopper.h"

/* Customers a refit fits on, at most: each Nelder-Mead evaluation is a
 * pass over every customer fitted (about 0.3 ms per customer per fit on a
 * small machine), so beyond this a uniform sample drawn by id hash stands
 * for them all. Four parameters from 50,000 customers: the sampling error
 * is far below the model's (docs/PERFORMANCE.md, "Tail latency"). */
#define FALLBACK_FIT_MAX_CUSTOMERS 50000

/* Cold-start examples (coldstart.h) a refit collects at most: 80 bytes each (16 MB). */
#define COLD_MAX_EXAMPLES 200000

/* The cap customers with the smallest keys among those added: a uniform
 * sample when the keys are hashes of the ids, held in cap entries (40
 * bytes each) however many are added. arr and keys: (n,), in no order. */
typedef struct SummarySample {
    CustomerSummary *arr;
    uint64_t *keys;
    size_t n, cap;
    size_t total; /* added so far */
} SummarySample;

int summary_sample_init(SummarySample *ss, size_t cap); /* 0 or -ENOMEM */
void summary_sample_add(SummarySample *ss, const CustomerSummary *cs, uint64_t key);
void summary_sample_free(SummarySample *ss);

/* Worker: the customers' summaries at now (malloc'd, caller frees; NULL
 * when out of memory): every customer's, or past FALLBACK_FIT_MAX_CUSTOMERS
 * that many with the smallest id hashes, so the memory is the sample's (2
 * MB) whatever the store's size; *total gets the customers before
 * sampling. With cold (COLD_MAX_EXAMPLES,) not NULL, the cold-start
 * examples of shoppers without a purchase go there (*ncold). */
CustomerSummary *service_collect_summaries(Service *s, int64_t now, size_t *n, size_t *total, ColdExample *cold,
                                           size_t *ncold);

#endif
