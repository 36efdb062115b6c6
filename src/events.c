/* events: validation of posted events, field by field, with the reason a
 * client reads in the 400 answer. Pure; any thread (include/events.h). */
#include "events.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "timeutil.h"

static int fail_field(EventError *e, size_t index, const char *field, const char *reason)
{
    e->index = index;
    e->field = field;
    snprintf(e->reason, sizeof e->reason, "%s", reason);
    return -EINVAL;
}

/* Validates one event object into *ev; on error fills *err and returns -EINVAL. */
static int parse_event(const cJSON *o, const LtvdConfig *cfg, size_t index, int64_t wall_now, Event *ev,
                       EventError *err)
{
    if (!cJSON_IsObject(o))
        return fail_field(err, index, "event", "must be a JSON object");
    memset(ev, 0, sizeof *ev);
    const cJSON *uid = cJSON_GetObjectItemCaseSensitive(o, "user_id");
    if (!uid)
        return fail_field(err, index, "user_id", "is required");
    if (!cJSON_IsString(uid))
        return fail_field(err, index, "user_id", "must be a string");
    ev->user_id = uid->valuestring;
    ev->user_len = strlen(uid->valuestring);
    if (!shopper_id_valid(ev->user_id, ev->user_len))
        return fail_field(err, index, "user_id", ev->user_len == 0 || ev->user_len > USER_ID_MAX
                                                     ? "must be 1 to 128 bytes"
                                                     : "must be valid UTF-8");

    const cJSON *type = cJSON_GetObjectItemCaseSensitive(o, "type");
    if (!type)
        return fail_field(err, index, "type", "is required");
    int t = cJSON_IsString(type) ? event_type_parse(type->valuestring) : -1;
    if (t < 0)
        return fail_field(err, index, "type", "must be one of view, click, add_to_cart, purchase, refund");
    ev->type = (EventType)t;

    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(o, "ts");
    if (!ts || cJSON_IsNull(ts)) {
        ev->ts = wall_now;
    } else if (cJSON_IsString(ts)) {
        int rc = time_parse_rfc3339(ts->valuestring, &ev->ts);
        if (rc == -ERANGE)
            return fail_field(err, index, "ts", "must lie between 1970 and 2100");
        if (rc)
            return fail_field(err, index, "ts", "must be an RFC 3339 timestamp or Unix seconds");
    } else if (cJSON_IsNumber(ts)) {
        int rc = time_from_epoch(ts->valuedouble, &ev->ts);
        if (rc)
            return fail_field(err, index, "ts", "must be Unix seconds between 1970 and 2100");
    } else {
        return fail_field(err, index, "ts", "must be an RFC 3339 string or a number of Unix seconds");
    }
    if (cfg->clock == CLOCK_WALL && ev->ts > wall_now + cfg->limits_max_future_s)
        return fail_field(err, index, "ts", "is too far in the future (limits.max_future_s)");

    const cJSON *value = cJSON_GetObjectItemCaseSensitive(o, "value");
    bool monetary = ev->type == EV_PURCHASE || ev->type == EV_REFUND;
    if (value) {
        if (!cJSON_IsNumber(value))
            return fail_field(err, index, "value", "must be a number");
        if (!isfinite(value->valuedouble) || value->valuedouble > 1e12)
            return fail_field(err, index, "value", "must be finite (at most 1e12)");
        if (value->valuedouble < 0)
            return fail_field(err, index, "value", "must be >= 0");
        ev->value = value->valuedouble;
    } else if (monetary) {
        return fail_field(err, index, "value", "is required for purchase and refund");
    }

    const cJSON *q = cJSON_GetObjectItemCaseSensitive(o, "quantity");
    ev->quantity = 1;
    if (q) {
        if (!cJSON_IsNumber(q) || q->valuedouble != floor(q->valuedouble))
            return fail_field(err, index, "quantity", "must be an integer");
        if (q->valuedouble < 1 || q->valuedouble > 1e9)
            return fail_field(err, index, "quantity", "must be between 1 and 1e9");
        ev->quantity = (uint32_t)q->valuedouble;
    }

    const cJSON *eid = cJSON_GetObjectItemCaseSensitive(o, "event_id");
    if (eid && !cJSON_IsNull(eid)) {
        if (!cJSON_IsString(eid))
            return fail_field(err, index, "event_id", "must be a string");
        size_t n = strlen(eid->valuestring);
        if (n == 0 || n > EVENT_ID_MAX)
            return fail_field(err, index, "event_id", "must be 1 to 128 bytes");
        ev->event_id = eid->valuestring;
        ev->event_id_len = n;
    }
    return 0;
}

/* The body is not an event batch at all: one error, the batch empty. */
static int fail_body(EventBatch *b, const char *field, const char *reason)
{
    b->errors = &b->one_error;
    b->nerrors = 1;
    fail_field(&b->one_error, 0, field, reason);
    return -EPROTO;
}

int events_parse(const cJSON *root, const LtvdConfig *cfg, int64_t wall_now, EventBatch *b)
{
    memset(b, 0, sizeof *b);
    if (!cJSON_IsObject(root))
        return fail_body(b, "body", "must be an event object or {\"events\": [...]}");
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "events");
    if (!arr) {
        b->single = true;
        b->events = &b->one;
        b->n = 1;
        b->errors = &b->one_error;
        if (parse_event(root, cfg, 0, wall_now, &b->one, &b->one_error)) {
            b->nerrors = 1;
            return -EINVAL;
        }
        return 0;
    }
    if (!cJSON_IsArray(arr))
        return fail_body(b, "events", "must be an array");
    size_t n = (size_t)cJSON_GetArraySize(arr);
    if (n == 0)
        return fail_body(b, "events", "must not be empty");
    if (n > (size_t)cfg->limits_max_batch_events)
        return -E2BIG;
    b->events = malloc(n * sizeof(Event));
    b->errors = malloc(n * sizeof(EventError));
    if (!b->events || !b->errors) {
        free(b->events);
        free(b->errors);
        memset(b, 0, sizeof *b);
        return -ENOMEM;
    }
    b->n = n;
    size_t i = 0;
    for (const cJSON *it = arr->child; it; it = it->next, i++)
        if (parse_event(it, cfg, i, wall_now, &b->events[i], &b->errors[b->nerrors]))
            b->nerrors++;
    return b->nerrors ? -EINVAL : 0;
}

void events_batch_free(EventBatch *b)
{
    if (b->events && b->events != &b->one)
        free(b->events);
    if (b->errors && b->errors != &b->one_error)
        free(b->errors);
    memset(b, 0, sizeof *b);
}
