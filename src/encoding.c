/* encoding: how an event and a shopper become the network's inputs
 * (docs/MODEL.md, "Inputs"). Pure functions into caller-owned arrays; any
 * thread. */
#include "encoding.h"

#include <math.h>
#include <string.h>

static const double two_pi = 6.283185307179586;

/* Where ts falls in the (mean Gregorian) year, in [0, 1). */
static double year_phase(int64_t ts)
{
    return fmod((double)ts / 86400.0, 365.2425) / 365.2425;
}

void encode_event(float *x, const Event *ev, const EncodeContext *ctx)
{
    memset(x, 0, sizeof(float) * FEATURE_DIM);
    x[ev->type] = 1.0f;                                   /* 0..4: one-hot type */
    double v = ev->type == EV_PURCHASE || ev->type == EV_REFUND ? ev->value : 0.0;
    x[5] = (float)log1p(v);                               /* 5: log value */
    x[6] = (float)log1p((double)ev->quantity);            /* 6: log quantity */
    bool first = ctx->events_before == 0;
    double gap_days = first ? 0.0 : fmax(0.0, (double)(ev->ts - ctx->prev_ts) / 86400.0);
    x[7] = (float)log1p(gap_days);                        /* 7: log days since previous event */
    x[8] = first ? 1.0f : 0.0f;                           /* 8: first event of the shopper */
    double days = (double)ev->ts / 86400.0;
    double dow = fmod(days + 3.0, 7.0) / 7.0;             /* 1970-01-01 was a Thursday */
    x[9] = (float)sin(two_pi * dow);                      /* 9,10: day of week */
    x[10] = (float)cos(two_pi * dow);
    double year = two_pi * year_phase(ev->ts);
    x[FEATURE_SEASON] = (float)sin(year);                 /* 11,12: time of year */
    x[FEATURE_SEASON + 1] = (float)cos(year);
    x[13] = (float)log1p((double)ctx->events_before);     /* 13: log events so far */
    x[14] = (float)log1p((double)ctx->purchases_before);  /* 14: log purchases so far */
    double age_days = first ? 0.0 : fmax(0.0, (double)(ev->ts - ctx->first_ts) / 86400.0);
    x[15] = (float)log1p(age_days);                       /* 15: log shopper age in days */
}

void encode_context_advance(EncodeContext *ctx, const Event *ev)
{
    if (ctx->events_before == 0)
        ctx->first_ts = ev->ts;
    ctx->prev_ts = ev->ts;
    ctx->events_before++;
    ctx->purchases_before += ev->type == EV_PURCHASE;
}

void recent_summary_init(RecentSummary *r) { memset(r, 0, sizeof *r); }

void recent_summary_apply(RecentSummary *r, const Event *ev)
{
    switch (ev->type) {
    case EV_VIEW:
    case EV_CLICK:
        r->browses++;
        if (ev->ts > r->last_browse_ts)
            r->last_browse_ts = ev->ts;
        break;
    case EV_ADD_TO_CART:
        r->carts++;
        if (ev->ts > r->last_cart_ts)
            r->last_cart_ts = ev->ts;
        break;
    case EV_PURCHASE:
        if (ev->ts > r->last_purchase_ts)
            r->last_purchase_ts = ev->ts;
        break;
    default:
        break;
    }
}

void recent_summary_of(RecentSummary *r, const Event *ev, size_t n, size_t ring, int64_t as_of)
{
    recent_summary_init(r);
    for (size_t i = ring && n > ring ? n - ring : 0; i < n; i++)
        if (ev[i].ts <= as_of)
            recent_summary_apply(r, &ev[i]);
}

/* Days from ts to as_of, 0 when ts is later; none (ts <= 0): the tenure. */
static double days_since(int64_t ts, int64_t as_of, double tenure)
{
    if (ts <= 0)
        return tenure;
    return fmin(tenure, fmax(0.0, (double)(as_of - ts) / 86400.0));
}

void encode_head_extra(float *e, const ShopperAgg *agg, const RecentSummary *rs, int64_t as_of, double bg_log_ltv,
                       double bg_p_alive, double bg_p_active)
{
    double recency = 0.0, age = 0.0, purchases = 0.0, spend = 0.0;
    int64_t browse = 0, cart = 0, purchase = 0;
    if (agg && agg->events > 0) {
        recency = fmax(0.0, (double)(as_of - agg->last_ts) / 86400.0);
        age = fmax(0.0, (double)(as_of - agg->first_ts) / 86400.0);
        purchases = agg->purchases;
        spend = fmax(0.0, agg->spend);
        if (agg->last_purchase_day >= 0)
            purchase = (int64_t)agg->last_purchase_day * 86400; /* that day's start, unless retained (below) */
    }
    if (rs) {
        browse = rs->last_browse_ts;
        cart = rs->last_cart_ts;
        if (rs->last_purchase_ts > 0 && rs->last_purchase_ts / 86400 >= purchase / 86400)
            purchase = rs->last_purchase_ts;
    }
    e[0] = (float)log1p(recency);   /* days since the last event at as_of */
    e[1] = (float)log1p(age);       /* days since the first event */
    e[2] = (float)log1p(purchases);
    e[3] = (float)log1p(spend);
    e[4] = (float)log1p(days_since(browse, as_of, age));   /* since the last view or click */
    e[5] = (float)log1p(days_since(cart, as_of, age));     /* since the last add-to-cart */
    e[6] = (float)log1p(days_since(purchase, as_of, age)); /* since the last purchase */
    const double silence = log1p(recency);
    e[7] = (float)fmax(0.0, silence - log1p(30.0));  /* the silence beyond a month */
    e[8] = (float)fmax(0.0, silence - log1p(180.0)); /* and beyond half a year */
    const double year = two_pi * year_phase(as_of), sy = sin(year), cy = cos(year);
    e[9] = (float)sy;               /* the time of year at as_of: the season of the horizon ahead */
    e[10] = (float)cy;
    e[11] = (float)bg_log_ltv;      /* fallback's expectation: anchors the level */
    e[12] = (float)bg_p_alive;
    e[13] = (float)(bg_p_active * sy); /* the season, by how active the fallback finds the shopper */
    e[14] = (float)(bg_p_active * cy);
}
