/* wal_record: encoding and decoding of the log's record payloads
 * (include/wal_record.h has the layout). Pure; any thread. */
#include "wal_record.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "timeutil.h"

#define EVENT_FIXED 24u /* type, user_len, event_id_len, 0, ts, value, quantity */

int wal_record_encode_events(ByteBuf *out, const Event *ev, size_t n)
{
    size_t need = 4;
    for (size_t i = 0; i < n; i++)
        need += EVENT_FIXED + ev[i].user_len + (ev[i].event_id ? ev[i].event_id_len : 0);
    out->len = 0;
    int rc = bytebuf_reserve(out, need);
    if (rc)
        return rc;
    unsigned char *p = out->p;
    uint32_t n32 = (uint32_t)n;
    memcpy(p, &n32, 4);
    p += 4;
    for (size_t i = 0; i < n; i++) {
        const Event *e = &ev[i];
        size_t idlen = e->event_id ? e->event_id_len : 0;
        p[0] = (unsigned char)e->type;
        p[1] = (unsigned char)e->user_len;
        p[2] = (unsigned char)idlen;
        p[3] = 0;
        memcpy(p + 4, &e->ts, 8);
        memcpy(p + 12, &e->value, 8);
        memcpy(p + 20, &e->quantity, 4);
        p += EVENT_FIXED;
        memcpy(p, e->user_id, e->user_len);
        p += e->user_len;
        if (idlen)
            memcpy(p, e->event_id, idlen);
        p += idlen;
    }
    out->len = need;
    return 0;
}

/* Could events_parse have accepted e? Replay trusts what it decodes: a NaN
 * or a value past float reaches the LSTM and the ring's float, a
 * quantity of 0 the aggregates. (The bounds are events.c's.) */
static bool event_valid(const Event *e)
{
    return e->ts >= TIME_MIN_TS && e->ts <= TIME_MAX_TS && isfinite(e->value) && e->value >= 0 &&
           e->value <= 1e12 && e->quantity >= 1 && e->quantity <= 1000000000u &&
           shopper_id_valid(e->user_id, e->user_len);
}

int wal_record_decode_events(const unsigned char *p, size_t len, Event **out, size_t *n_out)
{
    if (len < 4)
        return -EBADMSG;
    uint32_t n;
    memcpy(&n, p, 4);
    const unsigned char *end = p + len;
    p += 4;
    if (n > (len - 4) / EVENT_FIXED) /* cannot hold n events: do not even allocate */
        return -EBADMSG;
    Event *ev = calloc(n ? n : 1, sizeof *ev);
    if (!ev)
        return -ENOMEM;
    for (uint32_t i = 0; i < n; i++) {
        if ((size_t)(end - p) < EVENT_FIXED || (size_t)(end - p) < EVENT_FIXED + p[1] + p[2] || p[0] >= EV_NTYPES ||
            p[1] == 0 || p[1] > USER_ID_MAX || p[2] > EVENT_ID_MAX) {
            free(ev);
            return -EBADMSG;
        }
        ev[i].type = (EventType)p[0];
        ev[i].user_len = p[1];
        ev[i].event_id_len = p[2];
        memcpy(&ev[i].ts, p + 4, 8);
        memcpy(&ev[i].value, p + 12, 8);
        memcpy(&ev[i].quantity, p + 20, 4);
        ev[i].user_id = (const char *)p + EVENT_FIXED;
        ev[i].event_id = ev[i].event_id_len ? (const char *)p + EVENT_FIXED + ev[i].user_len : NULL;
        p += EVENT_FIXED + ev[i].user_len + ev[i].event_id_len;
        if (!event_valid(&ev[i])) {
            free(ev);
            return -EBADMSG;
        }
    }
    if (p != end) { /* bytes after the last event */
        free(ev);
        return -EBADMSG;
    }
    *out = ev;
    *n_out = n;
    return 0;
}

size_t wal_record_encode_delete(unsigned char *out, const char *id, size_t len)
{
    out[0] = (unsigned char)len;
    memcpy(out + 1, id, len);
    return 1 + len;
}

int wal_record_decode_delete(const unsigned char *p, size_t len, const char **id, size_t *id_len)
{
    if (len < 2 || len != 1u + p[0] || p[0] > USER_ID_MAX)
        return -EBADMSG;
    *id = (const char *)p + 1;
    *id_len = p[0];
    return 0;
}
