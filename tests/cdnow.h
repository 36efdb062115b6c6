/* Reads the CDNOW sample into per-customer BG/NBD summaries for a calibration
 * end date, aggregating purchases by day as the literature does. */
#ifndef LTVD_TEST_CDNOW_H
#define LTVD_TEST_CDNOW_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shopper.h"
#include "timeutil.h"

/* Returns the number of customers (with a purchase by cal_end_day) written
 * to out (cap entries), or -1 if the file cannot be read. */
static int cdnow_summaries(const char *path, int64_t cal_end_day, CustomerSummary *out, int cap)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[256], last_id[32] = "";
    int n = -1;
    int64_t first = 0, last = 0, prev_day = -1;
    double first_spend = 0, total = 0, days = 0;
    for (;;) {
        char id[32] = "", sid[32];
        int date = 0, cds = 0;
        double value = 0;
        int got = fgets(line, sizeof line, f) ? sscanf(line, "%31s %31s %d %d %lf", id, sid, &date, &cds, &value) : -1;
        int64_t day = got == 5 ? time_days_from_civil(date / 10000, (unsigned)(date / 100 % 100), (unsigned)(date % 100)) : 0;
        int flush = got != 5 || strcmp(id, last_id) != 0;
        if (flush && n >= 0 && n < cap && days > 0) {
            CustomerSummary *s = &out[n];
            s->x = days - 1;
            s->t_x = (double)(last - first) / 7.0;
            s->T = (double)(cal_end_day - first) / 7.0;
            s->m = s->x > 0 ? (total - first_spend) / s->x : 0;
            n++;
        }
        if (got != 5)
            break;
        if (flush) {
            if (n < 0)
                n = 0;
            snprintf(last_id, sizeof last_id, "%s", id);
            days = 0;
            total = first_spend = 0;
            prev_day = -1;
        }
        if (day > cal_end_day)
            continue;
        if (days == 0) {
            first = day;
            first_spend = value;
            days = 1;
        } else if (day == first) {
            first_spend += value;
        } else if (day != prev_day) {
            days++;
        }
        total += value;
        last = day;
        prev_day = day;
    }
    fclose(f);
    return n < 0 ? 0 : n;
}

#endif
