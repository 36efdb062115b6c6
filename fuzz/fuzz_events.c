/* fuzz_events: the body of POST /v1/events (a single event or a batch)
 * through cJSON and events_parse, under both clocks. Checks what the
 * handler relies on: every accepted event is valid (events.h), errors name
 * an index inside the batch, at most one per event. */
#include <cJSON.h>
#include <math.h>

#include "events.h"
#include "fuzz_common.h"
#include "timeutil.h"

static LtvdConfig cfg_wall, cfg_event;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_config(&cfg_wall);
    cfg_event = cfg_wall;
    cfg_event.clock = CLOCK_EVENT;
    return 0;
}

static void check_batch(int rc, const EventBatch *b, const LtvdConfig *cfg, int64_t now)
{
    FUZZ_CHECK(rc == 0 || rc == -EINVAL || rc == -E2BIG || rc == -EPROTO);
    FUZZ_CHECK(b->nerrors <= (b->n ? b->n : 1));
    for (size_t i = 0; i < b->nerrors; i++) {
        FUZZ_CHECK(b->n == 0 || b->errors[i].index < b->n);
        FUZZ_CHECK(b->errors[i].field != NULL);
        FUZZ_CHECK(memchr(b->errors[i].reason, '\0', sizeof b->errors[i].reason) != NULL);
    }
    if (rc != 0)
        return;
    FUZZ_CHECK(b->n >= 1 && b->n <= (size_t)cfg->limits_max_batch_events);
    for (size_t i = 0; i < b->n; i++) {
        const Event *e = &b->events[i];
        FUZZ_CHECK(shopper_id_valid(e->user_id, e->user_len));
        FUZZ_CHECK((int)e->type >= 0 && e->type < EV_NTYPES);
        FUZZ_CHECK(e->ts >= TIME_MIN_TS && e->ts <= TIME_MAX_TS);
        FUZZ_CHECK(cfg->clock != CLOCK_WALL || e->ts <= now + cfg->limits_max_future_s);
        FUZZ_CHECK(isfinite(e->value) && e->value >= 0 && e->value <= 1e12);
        FUZZ_CHECK(e->quantity >= 1 && e->quantity <= 1000000000u);
        FUZZ_CHECK(!e->event_id || (e->event_id_len >= 1 && e->event_id_len <= EVENT_ID_MAX));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cJSON *root = cJSON_ParseWithLength((const char *)data, size);
    if (!root)
        return 0;
    int64_t now = time_now();
    const LtvdConfig *cfgs[2] = {&cfg_wall, &cfg_event};
    for (int k = 0; k < 2; k++) {
        EventBatch b;
        int rc = events_parse(root, cfgs[k], now, &b);
        check_batch(rc, &b, cfgs[k], now);
        events_batch_free(&b);
    }
    cJSON_Delete(root);
    return 0;
}
