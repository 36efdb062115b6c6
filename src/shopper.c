/* shopper: event type names, what a shopper id may be, and the aggregate
 * bookkeeping. Pure functions, any thread. */
#include "shopper.h"

#include <string.h>

static const char *const type_names[EV_NTYPES] = {"view", "click", "add_to_cart", "purchase", "refund"};

int event_type_parse(const char *s)
{
    for (int i = 0; i < EV_NTYPES; i++)
        if (strcmp(s, type_names[i]) == 0)
            return i;
    return -1;
}

const char *event_type_name(EventType t) { return (unsigned)t < EV_NTYPES ? type_names[t] : "unknown"; }

/* Well-formed UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
static bool utf8_valid(const unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        size_t extra;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            extra = 1;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            extra = 2;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            extra = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + extra >= n)
            return false; /* truncated sequence */
        for (size_t k = 1; k <= extra; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        if ((extra == 1 && cp < 0x80) || (extra == 2 && cp < 0x800) || (extra == 3 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += extra + 1;
    }
    return true;
}

bool shopper_id_valid(const char *id, size_t len)
{
    return len >= 1 && len <= USER_ID_MAX && memchr(id, '\0', len) == NULL &&
           utf8_valid((const unsigned char *)id, len);
}

void shopper_agg_init(ShopperAgg *agg)
{
    memset(agg, 0, sizeof *agg);
    agg->first_purchase_day = -1;
    agg->last_purchase_day = -1;
}

static int32_t day_of(int64_t ts) { return (int32_t)(ts / 86400); }

void shopper_agg_apply(ShopperAgg *agg, const Event *ev)
{
    if (agg->events == 0 || ev->ts < agg->first_ts)
        agg->first_ts = ev->ts;
    if (agg->events == 0 || ev->ts > agg->last_ts)
        agg->last_ts = ev->ts;
    agg->events++;
    if (ev->type == EV_REFUND) {
        agg->refunds++;
        agg->spend -= ev->value;
        return;
    }
    if (ev->type != EV_PURCHASE)
        return;
    int32_t day = day_of(ev->ts);
    agg->purchases++;
    agg->spend += ev->value;
    if (agg->first_purchase_day < 0) {
        agg->first_purchase_day = agg->last_purchase_day = day;
        agg->purchase_days = 1;
        agg->first_day_spend = ev->value;
    } else if (day == agg->first_purchase_day) {
        agg->first_day_spend += ev->value;
    } else if (day < agg->first_purchase_day) {
        /* A late purchase before the first one becomes the new first day; the
         * old first day turns into a repeat day. */
        agg->first_purchase_day = day;
        agg->first_day_spend = ev->value;
        agg->purchase_days++;
    } else if (day > agg->last_purchase_day) {
        agg->last_purchase_day = day;
        agg->purchase_days++;
    } else if (day != agg->last_purchase_day) {
        /* Only a late purchase lands strictly between the first and last purchase
         * day. Whether that day already had a purchase is not recorded, so it is
         * counted as a new day: the documented approximation. */
        agg->purchase_days++;
    }
}

bool shopper_summary(const ShopperAgg *agg, int64_t as_of, CustomerSummary *s)
{
    int32_t now_day = day_of(as_of);
    if (agg->first_purchase_day < 0 || agg->first_purchase_day > now_day)
        return false;
    double x = agg->purchase_days > 0 ? agg->purchase_days - 1.0 : 0.0;
    s->x = x;
    s->t_x = (agg->last_purchase_day - agg->first_purchase_day) / 7.0;
    s->T = (now_day - agg->first_purchase_day) / 7.0;
    if (s->t_x > s->T)
        s->t_x = s->T;
    double repeat_spend = agg->spend - agg->first_day_spend;
    s->m = x > 0 ? repeat_spend / x : 0.0;
    if (x > 0 && s->m < 0.01)
        s->m = 0.01; /* refunds can drive it to zero; Gamma-Gamma needs m > 0 */
    return true;
}
