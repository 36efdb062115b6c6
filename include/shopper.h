/* shopper: event types, a validated event, and a shopper's running
 * aggregates (the part of a shopper's history that is never forgotten, while
 * the LSTM state and the recent-event ring summarise the rest).
 * Pure data and pure functions; callers provide locking. */
#ifndef LTVD_SHOPPER_H
#define LTVD_SHOPPER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define USER_ID_MAX 128
#define EVENT_ID_MAX 128

typedef enum {
    EV_VIEW = 0,
    EV_CLICK = 1,
    EV_ADD_TO_CART = 2,
    EV_PURCHASE = 3,
    EV_REFUND = 4,
    EV_NTYPES = 5
} EventType;

/* A validated event. user_id / event_id point into the request body and
 * live only as long as it does. */
typedef struct Event {
    const char *user_id;
    size_t user_len;
    const char *event_id; /* NULL if absent */
    size_t event_id_len;
    int64_t ts;
    double value;
    uint32_t quantity;
    EventType type;
} Event;

typedef struct ShopperAgg {
    int64_t first_ts, last_ts;     /* first and newest applied event */
    uint32_t events, purchases, refunds;
    uint32_t purchase_days;        /* distinct days with a purchase (BG/NBD: x + 1) */
    int32_t first_purchase_day;    /* days since epoch, -1 if none */
    int32_t last_purchase_day;     /* -1 if none */
    double spend;                  /* purchases minus refunds */
    double first_day_spend;        /* spend on first_purchase_day (not a repeat) */
} ShopperAgg;

/* BG/NBD summary of one shopper as of a time, in weeks (Fader-Hardie-Lee):
 * x = repeat purchase days, t_x = first to last purchase, T = first purchase
 * to as_of, m = mean spend per repeat purchase day (0 when x = 0). */
typedef struct CustomerSummary {
    double x, t_x, T, m;
} CustomerSummary;

int event_type_parse(const char *s);       /* EventType or -1 */
const char *event_type_name(EventType t);

/* A user_id as accepted in events and paths: 1..USER_ID_MAX bytes of
 * well-formed UTF-8 without NUL. */
bool shopper_id_valid(const char *id, size_t len);

void shopper_agg_init(ShopperAgg *agg);
/* Folds an event into the aggregates, in or out of time order (a late
 * event still counts towards spend and purchases; docs/SEMANTICS.md). */
void shopper_agg_apply(ShopperAgg *agg, const Event *ev);
/* Fills s and returns true when the shopper has a purchase on or before as_of. */
bool shopper_summary(const ShopperAgg *agg, int64_t as_of, CustomerSummary *s);

#endif
