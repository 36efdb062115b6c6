/* The service without HTTP: after a model swap, every prediction uses a
 * state computed by the weights that serve it. A prediction made with a
 * state left over from the old weights would differ from a fresh service
 * that only ever knew the new weights: this test would catch it. And an
 * event that could not be applied (the table full, a shopper that could
 * not be created) leaves no trace in the dedupe window: the client's retry
 * of the same event_id is applied, not called a duplicate. */
#include <cJSON.h>
#include <errno.h>
#include <string.h>

#include "bgnbd.h"
#include "events.h"
#include "refit_data.h"
#include "service.h"
#include "service_testing.h"
#include "test_util.h"

static Model *trained_model(int hidden, uint64_t seed, uint32_t id, uint64_t version)
{
    LstmWeights *net;
    ASSERT(lstm_weights_create(&net, hidden, seed, id) == 0);
    net->hybrid = true;
    for (size_t i = 0; i < 3u * (size_t)(hidden + HEAD_EXTRA); i++)
        net->head_w[i] *= 0.5f; /* the head reads h: predictions depend on the state */
    FallbackFit fit = {BGNBD_CDNOW_PRIOR, GG_CDNOW_PRIOR, 0, 0, 0, 0, {0}};
    Model *m;
    ASSERT(model_create(&m, net, &fit, 182, MODEL_TRAINED, version) == 0);
    lstm_weights_release(net);
    return m;
}

static void apply_json(Service *s, const LtvdConfig *cfg, const char *json)
{
    cJSON *root = cJSON_Parse(json);
    ASSERT(root);
    EventBatch b;
    ASSERT(events_parse(root, cfg, 0, &b) == 0);
    ApplyResult r;
    ASSERT(service_apply(s, b.events, b.n, &r, NULL) == 0);
    events_batch_free(&b);
    cJSON_Delete(root);
}

/* Applies a JSON body; returns service_apply's result, *r its counts. */
static int try_apply(Service *s, const LtvdConfig *cfg, const char *json, ApplyResult *r)
{
    cJSON *root = cJSON_Parse(json);
    ASSERT(root);
    EventBatch b;
    ASSERT(events_parse(root, cfg, 0, &b) == 0);
    int rc = service_apply(s, b.events, b.n, r, NULL);
    events_batch_free(&b);
    cJSON_Delete(root);
    return rc;
}

static void test_retry_after_failure(const LtvdConfig *base, Model *m)
{
    LtvdConfig cfg = *base;
    cfg.limits_max_users = 2;
    static Metrics mt;
    metrics_init(&mt);
    Service *s;
    ASSERT(service_create(&s, &cfg, &mt, m) == 0);
    ApplyResult r;
    const char *first = "{\"user_id\": \"a\", \"type\": \"view\", \"ts\": 1700000000, \"event_id\": \"e-1\"}";
    ASSERT(try_apply(s, &cfg, first, &r) == 0 && r.accepted == 1);
    ASSERT(try_apply(s, &cfg, first, &r) == 0 && r.accepted == 0 && r.duplicates == 1);

    /* a shopper that cannot be created (as out of memory): the event is
     * not applied, the answer is an error, and its event_id is not taken */
    const char *batch = "{\"events\": ["
                        "{\"user_id\": \"a\", \"type\": \"view\", \"ts\": 1700000100, \"event_id\": \"e-2\"},"
                        "{\"user_id\": \"b\", \"type\": \"purchase\", \"value\": 9, \"ts\": 1700000100, "
                        "\"event_id\": \"e-3\"}]}";
    service_fail_shopper_inserts(s, 1);
    ASSERT(try_apply(s, &cfg, batch, &r) == -ENOMEM);
    ASSERT(r.accepted == 1 && r.duplicates == 0);
    UserSummaryView v;
    ASSERT(service_user_summary(s, "b", 1, &v) == -ENOENT);
    /* the retry: e-2 was applied (a duplicate now), e-3 was not (applied now) */
    ASSERT(try_apply(s, &cfg, batch, &r) == 0);
    ASSERT(r.accepted == 1 && r.duplicates == 1);
    ASSERT(service_user_summary(s, "b", 1, &v) == 0 && v.agg.purchases == 1);
    ASSERT(service_user_summary(s, "a", 1, &v) == 0 && v.agg.events == 2);

    /* the table full (limits.max_users = 2): refused, nothing applied ... */
    const char *third = "{\"user_id\": \"c\", \"type\": \"view\", \"ts\": 1700000200, \"event_id\": \"e-4\"}";
    ASSERT(try_apply(s, &cfg, third, &r) == -ENOSPC);
    ASSERT(service_user_summary(s, "c", 1, &v) == -ENOENT);
    /* ... and once room is made, the same event_id is applied */
    uint64_t wait;
    ASSERT(service_delete_user(s, "b", 1, &wait) == 0);
    ASSERT(try_apply(s, &cfg, third, &r) == 0 && r.accepted == 1 && r.duplicates == 0);
    ASSERT(service_user_summary(s, "c", 1, &v) == 0 && v.agg.events == 1);
    service_destroy(s);
}

/* Cluster mode's shards: shoppers of shard 0 ids start with "a", of shard 1
 * with "b". */
static uint32_t first_letter_shard(void *arg, const char *id, size_t len) { return id[0] == 'b'; }

static int events_with_ids(Service *s, const LtvdConfig *cfg, ApplyResult *r)
{
    return try_apply(s, cfg,
                     "{\"events\": ["
                     "{\"user_id\": \"a1\", \"type\": \"purchase\", \"value\": 30, \"ts\": \"2024-01-02T00:00:00Z\", "
                     "\"event_id\": \"e1\"},"
                     "{\"user_id\": \"b1\", \"type\": \"view\", \"ts\": \"2024-01-03T00:00:00Z\", \"event_id\": \"e2\"},"
                     "{\"user_id\": \"b1\", \"type\": \"purchase\", \"value\": 25, \"ts\": \"2024-01-09T00:00:00Z\", "
                     "\"event_id\": \"e3\"},"
                     "{\"user_id\": \"b2\", \"type\": \"purchase\", \"value\": 70, \"ts\": \"2024-02-01T00:00:00Z\", "
                     "\"event_id\": \"e4\"}]}",
                     r);
}

/* A shard handed from one node to another: the shoppers arrive with their
 * history, their state recomputed under the receiver's weights (as if they
 * had always lived there), their event_ids still duplicates; the sender
 * forgets them and their ids; a corrupt or too large copy loads nothing. */
static void test_shards(const LtvdConfig *base)
{
    LtvdConfig cfg = *base;
    static Metrics ma, mb, mc;
    metrics_init(&ma);
    metrics_init(&mb);
    metrics_init(&mc);
    HashKey key = {11, 22};
    Service *a, *b, *c;
    ASSERT(service_create(&a, &cfg, &ma, trained_model(16, 1, 1, 1)) == 0);
    ASSERT(service_create(&b, &cfg, &mb, trained_model(16, 2, 2, 2)) == 0);
    ASSERT(service_create(&c, &cfg, &mc, trained_model(16, 2, 2, 2)) == 0); /* a reference: weights 2 always */
    ASSERT(service_use_shards(a, 2, first_letter_shard, NULL, &key) == 0);
    ASSERT(service_use_shards(b, 2, first_letter_shard, NULL, &key) == 0);
    ApplyResult r;
    ASSERT(events_with_ids(a, &cfg, &r) == 0 && r.accepted == 4);
    ASSERT(events_with_ids(c, &cfg, &r) == 0);
    ASSERT(service_use_shards(a, 2, first_letter_shard, NULL, &key) == -EBUSY);

    ByteBuf copy = {0};
    uint64_t users = 0;
    ASSERT(service_shard_export(a, 1, &copy, &users) == 0 && users == 2);
    char err[256];
    /* corrupt: refused, nothing loaded */
    copy.p[copy.len / 2] ^= 1;
    ASSERT(service_shard_import(b, 1, copy.p, copy.len, &users, err, sizeof err) == -EBADMSG);
    ASSERT(strstr(err, "CRC"));
    copy.p[copy.len / 2] ^= 1;
    ASSERT(service_shard_import(b, 0, copy.p, copy.len, &users, err, sizeof err) == -EBADMSG); /* another shard */
    /* crafted copies with a good CRC: relabelled as shard 0 (its shoppers are shard 1's), and one claiming a
     * shopper more than it holds; neither loads anything */
    UserSummaryView us;
    ByteBuf bad = {0};
    ASSERT(bytebuf_put(&bad, copy.p, copy.len) == 0);
    uint32_t zero = 0;
    memcpy(bad.p + 8 + 4 * sizeof(uint32_t), &zero, sizeof zero); /* the header's shard field */
    uint32_t crc = crc32_update(0, bad.p, bad.len - 4);
    memcpy(bad.p + bad.len - 4, &crc, 4);
    ASSERT(service_shard_import(b, 0, bad.p, bad.len, &users, err, sizeof err) == -EBADMSG);
    ASSERT(service_user_summary(b, "b1", 2, &us) == -ENOENT && service_user_summary(b, "b2", 2, &us) == -ENOENT);
    memcpy(bad.p, copy.p, copy.len);
    uint64_t more = 3;
    memcpy(bad.p + 8 + 6 * sizeof(uint32_t), &more, sizeof more); /* the header's user count */
    crc = crc32_update(0, bad.p, bad.len - 4);
    memcpy(bad.p + bad.len - 4, &crc, 4);
    ASSERT(service_shard_import(b, 1, bad.p, bad.len, &users, err, sizeof err) == -EBADMSG && strstr(err, "hold"));
    bytebuf_free(&bad);
    ASSERT(service_user_summary(b, "b1", 2, &us) == -ENOENT);
    ASSERT(service_shard_import(b, 1, copy.p, copy.len, &users, err, sizeof err) == 0 && users == 2);

    /* b's shoppers: the history as a had it, predictions as under weights 2 from the start */
    ASSERT(service_user_summary(b, "b1", 2, &us) == 0 && us.agg.events == 2 && us.agg.purchases == 1);
    ASSERT(service_user_summary(b, "a1", 2, &us) == -ENOENT);
    int64_t as_of = 1712000000;
    PredictionView pa, pb, pc;
    service_predict(a, "b2", 2, as_of, &pa);
    service_predict(b, "b2", 2, as_of, &pb);
    service_predict(c, "b2", 2, as_of, &pc);
    ASSERT(fabs(pa.p.ltv - pc.p.ltv) > 1e-6);
    ASSERT_REL(pb.p.ltv, pc.p.ltv, 1e-6);
    /* the ids came along: shard 1's events are duplicates on b, shard 0's are new */
    ASSERT(events_with_ids(b, &cfg, &r) == 0 && r.duplicates == 3 && r.accepted == 1);
    ASSERT(service_user_summary(b, "b1", 2, &us) == 0 && us.agg.events == 2);

    /* a forgets shard 1: its shoppers and ids */
    bool drop[2] = {false, true};
    ASSERT(service_shard_drop(a, drop) == 2);
    ASSERT(service_user_summary(a, "b1", 2, &us) == -ENOENT && service_user_summary(a, "a1", 2, &us) == 0);
    ASSERT(events_with_ids(a, &cfg, &r) == 0 && r.duplicates == 1 && r.accepted == 3);

    /* a copy larger than limits.max_users allows: nothing loaded */
    LtvdConfig small = cfg;
    small.limits_max_users = 1;
    Service *d;
    static Metrics md;
    metrics_init(&md);
    ASSERT(service_create(&d, &small, &md, trained_model(16, 2, 2, 2)) == 0);
    ASSERT(service_use_shards(d, 2, first_letter_shard, NULL, &key) == 0);
    ASSERT(service_shard_import(d, 1, copy.p, copy.len, &users, err, sizeof err) == -ENOSPC);
    ASSERT(service_user_summary(d, "b1", 2, &us) == -ENOENT && service_user_summary(d, "b2", 2, &us) == -ENOENT);
    bytebuf_free(&copy);
    service_destroy(a);
    service_destroy(b);
    service_destroy(c);
    service_destroy(d);
}

/* The fallback's fit does not depend on the process: two services (each
 * draws its own hash key for its table) given the same 300 shoppers, in
 * opposite orders, collect the same summaries in the same order, and
 * BG/NBD and Gamma-Gamma fitted on them agree to the last bit. (The
 * summaries came in the order of the keyed hash, so the fit's sums, and
 * with them its last digits and every network trained on its predictions,
 * differed from one run of ltvd to the next.) */
static void test_fit_order(const LtvdConfig *base)
{
    enum { N = 300, PER = 6 };
    static char ids[N][8];
    static Event ev[N * PER];
    const int64_t t0 = 1704067200; /* 2024-01-01 */
    size_t n = 0;
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof ids[i], "c%d", i);
        int buys = 1 + (i * 7) % PER;
        for (int k = 0; k < buys; k++)
            ev[n++] = (Event){.user_id = ids[i], .user_len = strlen(ids[i]), .type = EV_PURCHASE, .quantity = 1,
                              .ts = t0 + (int64_t)((i % 50) + 23 * k + (i * k) % 11) * 86400,
                              .value = 5.0 + (double)((i * 13 + k * 29) % 97)};
    }
    LtvdConfig cfg = *base;
    cfg.limits_max_users = 2 * N;
    cfg.limits_dedupe_max_ids = N * PER;
    static Metrics m[2];
    Service *s[2];
    CustomerSummary *sum[2];
    size_t ns[2];
    FallbackFit fit[2];
    for (int k = 0; k < 2; k++) {
        metrics_init(&m[k]);
        ASSERT(service_create(&s[k], &cfg, &m[k], trained_model(16, 1, 1, 1)) == 0);
        for (size_t e = 0; e < n; e++) { /* the second service gets the shoppers in reverse */
            ApplyResult r;
            ASSERT(service_apply(s[k], &ev[k ? n - 1 - e : e], 1, &r, NULL) == 0 && r.accepted == 1);
        }
        size_t total, ncold;
        sum[k] = service_collect_summaries(s[k], t0 + 200 * 86400, &ns[k], &total, NULL, &ncold);
        ASSERT(sum[k] && ns[k] == N && total == N);
        fit[k] = (FallbackFit){BGNBD_CDNOW_PRIOR, GG_CDNOW_PRIOR, 0, 0, 0, 0, {0}};
        size_t repeaters;
        ASSERT(bgnbd_fit(sum[k], ns[k], &fit[k].bg) == 0 && gg_fit(sum[k], ns[k], &fit[k].gg, &repeaters) == 0);
    }
    ASSERT(memcmp(sum[0], sum[1], N * sizeof *sum[0]) == 0);
    ASSERT(memcmp(&fit[0].bg, &fit[1].bg, sizeof fit[0].bg) == 0);
    ASSERT(memcmp(&fit[0].gg, &fit[1].gg, sizeof fit[0].gg) == 0);
    ASSERT(fit[0].bg.r != BGNBD_CDNOW_PRIOR.r); /* it did fit */
    for (int k = 0; k < 2; k++) {
        free(sum[k]);
        service_destroy(s[k]);
    }
}

static const char *EVENTS =
    "{\"events\": ["
    "{\"user_id\": \"u\", \"type\": \"view\", \"ts\": \"2024-01-01T00:00:00Z\"},"
    "{\"user_id\": \"u\", \"type\": \"purchase\", \"value\": 40, \"ts\": \"2024-01-03T00:00:00Z\"},"
    "{\"user_id\": \"u\", \"type\": \"click\", \"ts\": \"2024-02-10T00:00:00Z\"},"
    "{\"user_id\": \"u\", \"type\": \"purchase\", \"value\": 15, \"ts\": \"2024-03-01T00:00:00Z\"}]}";

int main(void)
{
    LtvdConfig cfg;
    config_defaults(&cfg);
    cfg.clock = CLOCK_EVENT;
    cfg.limits_max_users = 100;
    cfg.limits_dedupe_max_ids = 100;
    cfg.model_hidden_size = 16;
    static Metrics ma, mb;
    metrics_init(&ma);
    metrics_init(&mb);
    int64_t as_of = 1712000000; /* 2024-04-01 */

    /* A: events under weights 1, then weights 2 swapped in */
    Service *a;
    ASSERT(service_create(&a, &cfg, &ma, trained_model(16, 1, 1, 1)) == 0);
    apply_json(a, &cfg, EVENTS);
    PredictionView before;
    service_predict(a, "u", 1, as_of, &before);
    service_model_swap(a, trained_model(16, 2, 2, 2));
    PredictionView after;
    service_predict(a, "u", 1, as_of, &after);

    /* B: only ever weights 2 */
    Service *b;
    ASSERT(service_create(&b, &cfg, &mb, trained_model(16, 2, 2, 2)) == 0);
    apply_json(b, &cfg, EVENTS);
    PredictionView fresh;
    service_predict(b, "u", 1, as_of, &fresh);

    ASSERT(before.p.from_network && after.p.from_network);
    ASSERT(fabs(before.p.ltv - fresh.p.ltv) > 1e-6);     /* the weights matter */
    ASSERT_REL(after.p.ltv, fresh.p.ltv, 1e-6);          /* same state as if trained on B from the start */
    ASSERT_REL(after.p.p_active, fresh.p.p_active, 1e-6);
    ASSERT(after.model_version == 2);
    ASSERT(atomic_load(&ma.state_rebuilds) == 1);

    /* events after the swap go on from the rebuilt state */
    apply_json(a, &cfg, "{\"user_id\": \"u\", \"type\": \"view\", \"ts\": \"2024-03-15T00:00:00Z\"}");
    apply_json(b, &cfg, "{\"user_id\": \"u\", \"type\": \"view\", \"ts\": \"2024-03-15T00:00:00Z\"}");
    service_predict(a, "u", 1, as_of, &after);
    service_predict(b, "u", 1, as_of, &fresh);
    ASSERT_REL(after.p.ltv, fresh.p.ltv, 1e-6);
    service_destroy(a);
    service_destroy(b);

    test_retry_after_failure(&cfg, trained_model(16, 3, 3, 1));
    test_fit_order(&cfg);
    test_shards(&cfg);
    TEST_DONE("test_service");
}
