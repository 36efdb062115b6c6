/* segments: the worker's population summary job (include/segments.h):
 * every shopper predicted under the serving model from copies taken in
 * short holds of the store lock, then tiers, activity states, the two
 * distributions and the two lists aggregated at nice 19, and the result
 * published whole behind seg_lock for the HTTP thread to read.
 *
 * Memory (n shoppers, L = segments.list_max, S = the slot size, about
 * 1 KiB at the default model sizes): SEG_COPY_SLOTS * S for the copies,
 * 24 n bytes of per-shopper records, 4 n for the LTV sort and 12 n for the
 * next peaks while a refresh runs (freed before it returns), 12 n for the
 * p_active peaks kept between refreshes, and 2 L rows of about 160 bytes
 * in the published result. At 1M shoppers and L = 10,000: about 56 MB
 * during a refresh (59 MiB of RSS measured), 15 MB between
 * (docs/PERFORMANCE.md, "Segments"). */
#include "segments.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "service_internal.h"
#include "timeutil.h"

/* Slots copied per hold of the store lock (the other jobs' figure), and
 * per nice-19 compute run: 1024 copies are about 1 MB. */
#define SEG_BATCH_HOLD 128
#define SEG_COPY_SLOTS 1024
/* List rows looked up by id hash between chances for a waiting request to
 * take the store lock (store_let_waiters): a lookup is a few cache misses
 * into a table of a million slots, up to about 6 us on a busy machine
 * (256 per hold measured 1.6 ms a hold at 1M shoppers; docs/PERFORMANCE.md,
 * "Segments refresh at 1M shoppers"). */
#define SEG_ID_HOLD 32

static const char *const tier_names[SEG_TIERS] = {"top", "high", "mid", "low"};
static const char *const activity_names[SEG_ACTIVITIES] = {"active", "at_risk", "lapsed"};
static const double tier_quantile[SEG_TIERS] = {0.95, 0.80, 0.50, 0.0};
static const double ltv_edges[SEG_LTV_BINS] = {0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000,
                                               20000, 50000};

const char *segments_tier_name(int tier) { return tier >= 0 && tier < SEG_TIERS ? tier_names[tier] : "?"; }
const char *segments_activity_name(int a) { return a >= 0 && a < SEG_ACTIVITIES ? activity_names[a] : "?"; }

void segments_retain(Segments *g) { atomic_fetch_add(&g->refs, 1); }

void segments_release(Segments *g)
{
    if (!g || atomic_fetch_sub(&g->refs, 1) != 1)
        return;
    free(g->top);
    free(g->churn);
    free(g);
}

void service_segments_init(Service *s) { pthread_mutex_init(&s->seg_lock, NULL); }

void service_segments_destroy(Service *s)
{
    segments_release(s->segments);
    free(s->seg_peaks);
    pthread_mutex_destroy(&s->seg_lock);
}

Segments *service_segments_acquire(Service *s)
{
    pthread_mutex_lock(&s->seg_lock);
    Segments *g = s->segments;
    if (g)
        segments_retain(g);
    pthread_mutex_unlock(&s->seg_lock);
    return g;
}

bool service_segments_due(Service *s)
{
    Segments *g = service_segments_acquire(s);
    bool due = !g || time_mono_ns() - g->computed_mono_ns >= (uint64_t)s->cfg.segments_refresh_s * 1000000000ull;
    segments_release(g);
    return due;
}

void service_segments_live(Service *s, const SegmentRow *const *rows, size_t n, bool *live)
{
    store_lock(s->store);
    for (size_t k = 0; k < n; k++) {
        if (k && k % SEG_ID_HOLD == 0)
            store_let_waiters(s->store);
        UserState *u = store_find_hash(s->store, rows[k]->hash);
        /* first_ts: a shopper erased and created again under the same id is
         * another shopper, whose figures the row does not hold */
        live[k] = u && strcmp(u->id, rows[k]->user_id) == 0 && u->agg.first_ts == rows[k]->first_ts;
    }
    store_unlock(s->store);
}

/* ---- the walk: copies out, predictions at nice 19 ------------------------ */

/* One shopper as predicted: 32 bytes. */
typedef struct SegRecord {
    uint64_t hash;
    int64_t first_ts; /* with hash, tells this shopper from one erased and created again */
    float ltv, p_active, spend, peak;
} SegRecord;

typedef struct SegWalk {
    Service *s;
    const Model *m;
    int64_t as_of;
    unsigned char *copies; /* (SEG_COPY_SLOTS, stride) */
    size_t stride, ncopies;
    SegRecord *rec;        /* (cap,) */
    size_t n, cap;
    const unsigned char *peaks; /* (npeaks,) the last refresh's, ascending by hash */
    size_t npeaks;
} SegWalk;

/* The peaks kept from one refresh to the next (Service.seg_peaks): per
 * shopper, 20 bytes, ascending by id hash: the hash (u64), the first_ts it
 * was seen with (i64) and the highest p_active seen (float), unaligned, so
 * read and written with memcpy. They are made in place of the refresh's
 * records (peaks_from_records), and the last ones are freed once the
 * records are sorted: a refresh holds its records and the last peaks (52
 * bytes per shopper) at most, not 72 as with separate arrays. */
#define PEAK_BYTES 20u
_Static_assert(sizeof(SegRecord) >= PEAK_BYTES, "peaks are written over the records they come from");

static uint64_t peak_hash(const unsigned char *peaks, size_t i)
{
    uint64_t h;
    memcpy(&h, peaks + i * PEAK_BYTES, sizeof h);
    return h;
}

/* The records rec (n,), sorted by hash, rewritten as peaks in their own
 * memory, shrunk to fit; rec is gone. Entry i ends at byte 20i + 20, before
 * record i + 1 starts (32i + 32): each record is read before any write
 * reaches it. */
static unsigned char *peaks_from_records(SegRecord *rec, size_t n)
{
    unsigned char *out = (unsigned char *)rec;
    for (size_t i = 0; i < n; i++) {
        SegRecord r = rec[i];
        memcpy(out + i * PEAK_BYTES, &r.hash, 8);
        memcpy(out + i * PEAK_BYTES + 8, &r.first_ts, 8);
        memcpy(out + i * PEAK_BYTES + 16, &r.peak, 4);
    }
    unsigned char *fit = realloc(out, n ? n * PEAK_BYTES : 1);
    return fit ? fit : out;
}

/* Copies the next shoppers' slots. Store lock held. */
static int visit_copy(void *arg, UserState *u)
{
    SegWalk *w = arg;
    memcpy(w->copies + w->ncopies++ * w->stride, u, w->stride);
    return w->ncopies == SEG_COPY_SLOTS;
}

/* The highest p_active seen for key at earlier refreshes, or -1. */
static float peak_of(const SegWalk *w, uint64_t key, int64_t first_ts)
{
    size_t lo = 0, hi = w->npeaks;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (peak_hash(w->peaks, mid) < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == w->npeaks || peak_hash(w->peaks, lo) != key)
        return -1.0f;
    int64_t first;
    float peak;
    memcpy(&first, w->peaks + lo * PEAK_BYTES + 8, sizeof first);
    memcpy(&peak, w->peaks + lo * PEAK_BYTES + 16, sizeof peak);
    return first == first_ts ? peak : -1.0f;
}

/* Compute thread: predicts the copies (their states rebuilt first if they
 * were made under other weights) into records. */
static int predict_copies(void *arg)
{
    SegWalk *w = arg;
    for (size_t i = 0; i < w->ncopies && w->n < w->cap; i++) {
        if (atomic_load_explicit(&w->s->cancel_jobs, memory_order_relaxed))
            return -ECANCELED; /* shutting down: a starved nice-19 thread must not hold up SIGTERM */
        if (i % 64 == 0)
            pace_point();
        UserState *u = (UserState *)(w->copies + i * w->stride);
        service_ensure_state(w->s, u, w->m->net);
        Prediction p;
        RecentSummary rs;
        service_recent_summary(w->s, u, w->as_of, &rs);
        model_predict(w->m, store_user_h(w->s->store, u), &u->agg, &rs, w->as_of, &p);
        float pa = (float)p.p_active, peak = peak_of(w, u->hash, u->agg.first_ts);
        w->rec[w->n++] = (SegRecord){
            .hash = u->hash,
            .first_ts = u->agg.first_ts,
            .ltv = (float)(isfinite(p.ltv) && p.ltv > 0 ? p.ltv : 0.0),
            .p_active = pa,
            .spend = (float)u->agg.spend,
            .peak = peak > pa ? peak : pa,
        };
    }
    return 0;
}

/* ---- the aggregates ------------------------------------------------------ */

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

static void rec_swap(SegRecord *r, size_t i, size_t j)
{
    SegRecord t = r[i];
    r[i] = r[j], r[j] = t;
}

/* Sorts r (n,) by hash in place. Not qsort: glibc's sorts a copy (a
 * merge sort with an n-record buffer), which at 10M shoppers was 308 MiB
 * more at the refresh's peak. Quicksort with the median of three, the
 * smaller side first (a stack of log n), insertion sort below 16; the
 * hashes are keyed, so no client can choose a worst case. */
static void sort_by_hash(SegRecord *r, size_t n)
{
    while (n > 16) {
        size_t mid = n / 2;
        if (r[mid].hash < r[0].hash)
            rec_swap(r, mid, 0);
        if (r[n - 1].hash < r[0].hash)
            rec_swap(r, n - 1, 0);
        if (r[n - 1].hash < r[mid].hash)
            rec_swap(r, n - 1, mid);
        uint64_t pivot = r[mid].hash;
        size_t i = 0, j = n - 1;
        for (;;) { /* Hoare: r[0, j] <= pivot <= r[j+1, n) */
            while (r[i].hash < pivot)
                i++;
            while (r[j].hash > pivot)
                j--;
            if (i >= j)
                break;
            rec_swap(r, i++, j--);
        }
        size_t left = j + 1;
        if (left < n - left) {
            sort_by_hash(r, left);
            r += left, n -= left;
        } else {
            sort_by_hash(r + left, n - left);
            n = left;
        }
    }
    for (size_t i = 1; i < n; i++)
        for (size_t k = i; k > 0 && r[k].hash < r[k - 1].hash; k--)
            rec_swap(r, k, k - 1);
}

/* A bounded min-heap of record indices by score: the best `cap` seen. */
typedef struct TopK {
    uint32_t *idx;  /* (cap,) */
    float *score;   /* (cap,) */
    size_t n, cap;
} TopK;

static void topk_sift_down(TopK *h, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < h->n && h->score[l] < h->score[m])
            m = l;
        if (r < h->n && h->score[r] < h->score[m])
            m = r;
        if (m == i)
            return;
        float ts = h->score[i];
        uint32_t ti = h->idx[i];
        h->score[i] = h->score[m], h->idx[i] = h->idx[m];
        h->score[m] = ts, h->idx[m] = ti;
        i = m;
    }
}

static void topk_push(TopK *h, uint32_t idx, float score)
{
    if (h->n < h->cap) {
        size_t i = h->n++;
        h->idx[i] = idx, h->score[i] = score;
        while (i && h->score[(i - 1) / 2] > h->score[i]) {
            size_t p = (i - 1) / 2;
            float ts = h->score[i];
            uint32_t ti = h->idx[i];
            h->score[i] = h->score[p], h->idx[i] = h->idx[p];
            h->score[p] = ts, h->idx[p] = ti;
            i = p;
        }
    } else if (h->cap && score > h->score[0]) {
        h->idx[0] = idx, h->score[0] = score;
        topk_sift_down(h, 0);
    }
}

/* Empties the heap into out (n,), best first; returns n. */
static size_t topk_drain(TopK *h, uint32_t *out)
{
    size_t n = h->n;
    while (h->n) {
        out[h->n - 1] = h->idx[0];
        h->idx[0] = h->idx[h->n - 1], h->score[0] = h->score[h->n - 1];
        h->n--;
        topk_sift_down(h, 0);
    }
    return n;
}

typedef struct SegAggregate {
    Service *cancel; /* its cancel_jobs stops the run; its last peaks go once rec holds them */
    SegRecord *rec;  /* (n,) */
    size_t n, list_max;
    Segments *g;
    uint32_t *top_idx, *churn_idx; /* (list_max,) each */
    size_t ntop, nchurn;
    bool sorted; /* rec is sorted by hash, one per shopper: it can become the peaks */
    int rc;
} SegAggregate;

static int tier_of(const Segments *g, float ltv)
{
    for (int t = 0; t < SEG_LOW; t++)
        if (ltv >= g->tier_min[t])
            return t;
    return SEG_LOW;
}

static int activity_of(float p)
{
    return p >= SEG_ACTIVE_MIN ? SEG_ACTIVE : p >= SEG_AT_RISK_MIN ? SEG_AT_RISK : SEG_LAPSED;
}

/* Compute thread: sorts the records by hash (they become the next peaks)
 * and keeps one record per hash, the newer shopper's for one seen twice
 * (erased and created again in a later slot during the walk); frees the
 * last peaks; then the cut points, cells, distributions and the lists'
 * members. */
static int aggregate(void *arg)
{
    SegAggregate *a = arg;
    Segments *g = a->g;
    if (atomic_load(&a->cancel->cancel_jobs))
        return a->rc = -ECANCELED;
    sort_by_hash(a->rec, a->n);
    size_t kept = 0;
    for (size_t i = 0; i < a->n; i++) {
        if (!kept || a->rec[i].hash != a->rec[kept - 1].hash)
            a->rec[kept++] = a->rec[i];
        else if (a->rec[i].first_ts > a->rec[kept - 1].first_ts) /* erased and created again: the newer */
            a->rec[kept - 1] = a->rec[i];
    }
    a->n = kept;
    a->sorted = true;
    /* each record's peak is the higher of the last refresh's and now's:
     * the last peaks go before this run allocates (the worker waits for
     * it in service_run_niced; nothing else reads them) */
    free(a->cancel->seg_peaks);
    a->cancel->seg_peaks = NULL, a->cancel->seg_npeaks = 0;
    float *ltv = malloc((a->n + 1) * sizeof *ltv); /* (n,) */
    TopK top = {.idx = malloc((a->list_max + 1) * sizeof(uint32_t)), .score = malloc((a->list_max + 1) * sizeof(float)),
                .cap = a->list_max};
    TopK churn = {.idx = malloc((a->list_max + 1) * sizeof(uint32_t)),
                  .score = malloc((a->list_max + 1) * sizeof(float)), .cap = a->list_max};
    if (!ltv || !top.idx || !top.score || !churn.idx || !churn.score) {
        a->rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < a->n; i++)
        ltv[i] = a->rec[i].ltv;
    qsort(ltv, a->n, sizeof *ltv, cmp_float);
    for (int t = 0; t < SEG_TIERS; t++)
        g->tier_min[t] = t == SEG_LOW || !a->n ? 0.0 : ltv[(size_t)floor(tier_quantile[t] * (double)(a->n - 1))];
    g->churn_min_value = g->tier_min[SEG_HIGH];
    memcpy(g->ltv_edges, ltv_edges, sizeof ltv_edges);
    for (int k = 0; k < SEG_P_BINS; k++)
        g->p_edges[k] = k / (double)SEG_P_BINS;
    for (size_t i = 0; i < a->n; i++) {
        if (i % 4096 == 0 && atomic_load_explicit(&a->cancel->cancel_jobs, memory_order_relaxed)) {
            a->rc = -ECANCELED;
            goto out;
        }
        const SegRecord *r = &a->rec[i];
        SegmentCell *c = &g->cells[tier_of(g, r->ltv)][activity_of(r->p_active)];
        c->count++;
        c->predicted_value += r->ltv;
        c->realised_spend += r->spend;
        int lb = SEG_LTV_BINS - 1;
        while (lb > 0 && r->ltv < ltv_edges[lb])
            lb--;
        g->ltv_counts[lb]++;
        int pb = (int)(r->p_active * SEG_P_BINS);
        g->p_counts[pb < 0 ? 0 : pb >= SEG_P_BINS ? SEG_P_BINS - 1 : pb]++;
        topk_push(&top, (uint32_t)i, r->ltv);
        float value = r->ltv > r->spend ? r->ltv : r->spend, drop = r->peak - r->p_active;
        if (drop > 1e-4f && value >= g->churn_min_value)
            topk_push(&churn, (uint32_t)i, drop);
    }
    a->ntop = topk_drain(&top, a->top_idx);
    a->nchurn = topk_drain(&churn, a->churn_idx);
    a->rc = 0;
out:
    free(ltv);
    free(top.idx), free(top.score), free(churn.idx), free(churn.score);
    return a->rc;
}

/* Worker: the rows of the records idx (n,), ids looked up in short holds;
 * a shopper erased since the walk is left out. Returns the rows kept. */
static size_t fill_rows(Service *s, const SegRecord *rec, const uint32_t *idx, size_t n, SegmentRow *rows)
{
    size_t k = 0;
    store_lock(s->store);
    for (size_t j = 0; j < n; j++) {
        if (j && j % SEG_ID_HOLD == 0)
            store_let_waiters(s->store);
        const SegRecord *r = &rec[idx[j]];
        UserState *u = store_find_hash(s->store, r->hash);
        if (!u || u->agg.first_ts != r->first_ts)
            continue;
        rows[k] = (SegmentRow){.hash = r->hash, .first_ts = r->first_ts, .ltv = r->ltv, .p_active = r->p_active, .p_active_peak = r->peak,
                               .spend = r->spend};
        memcpy(rows[k].user_id, u->id, (size_t)u->id_len + 1);
        k++;
    }
    store_unlock(s->store);
    return k;
}

/* Worker: every shopper's record, copied out SEG_BATCH_HOLD slots per
 * hold and predicted at nice 19. */
static int walk_shoppers(Service *s, SegWalk *w)
{
    for (size_t at = 0; at != SIZE_MAX && !atomic_load(&s->cancel_jobs);) {
        if (w->n + SEG_COPY_SLOTS > w->cap) { /* shoppers added meanwhile: up to limits.max_users */
            size_t cap = w->cap + w->cap / 4 + SEG_COPY_SLOTS;
            SegRecord *r = realloc(w->rec, cap * sizeof *r);
            if (!r)
                return -ENOMEM;
            w->rec = r, w->cap = cap;
        }
        w->ncopies = 0; /* the walk stops once SEG_COPY_SLOTS are copied, or at the end */
        at = store_visit_from(s->store, at, SEG_BATCH_HOLD, visit_copy, w);
        if (w->ncopies && service_run_niced(s, predict_copies, w))
            break;
    }
    return atomic_load(&s->cancel_jobs) ? -ECANCELED : 0;
}

static int segments_refresh(Service *s);

int service_segments_refresh(Service *s)
{
    Pace *was = pace_attach(&s->pace); /* its walk's batches on the worker: pace.h */
    int rc = segments_refresh(s);
    pace_attach(was);
    return rc;
}

static int segments_refresh(Service *s)
{
    uint64_t t0 = time_mono_ns();
    size_t list_max = (size_t)s->cfg.segments_list_max;
    Model *m = service_model_acquire(s);
    SegWalk w = {
        .s = s,
        .m = m,
        .as_of = service_now(s),
        .stride = store_slot_bytes(s->store),
        .cap = store_count(s->store) + SEG_COPY_SLOTS,
        .peaks = s->seg_peaks,
        .npeaks = s->seg_npeaks,
    };
    w.copies = malloc(SEG_COPY_SLOTS * w.stride);
    w.rec = malloc(w.cap * sizeof *w.rec);
    Segments *g = calloc(1, sizeof *g);
    SegAggregate a = {.cancel = s, .list_max = list_max, .g = g};
    a.top_idx = malloc((list_max + 1) * sizeof(uint32_t));
    a.churn_idx = malloc((list_max + 1) * sizeof(uint32_t));
    int rc = -ENOMEM;
    if (!w.copies || !w.rec || !g || !a.top_idx || !a.churn_idx)
        goto out;
    if ((rc = walk_shoppers(s, &w)) != 0)
        goto out;
    free(w.copies);
    w.copies = NULL;
    a.rec = w.rec, a.n = w.n;
    size_t old_peaks = s->seg_npeaks;
    if ((rc = service_run_niced(s, aggregate, &a)) != 0)
        goto out;
    g->top = malloc((a.ntop + 1) * sizeof *g->top);
    g->churn = malloc((a.nchurn + 1) * sizeof *g->churn);
    rc = -ENOMEM;
    if (!g->top || !g->churn)
        goto out;
    g->ntop = fill_rows(s, w.rec, a.top_idx, a.ntop, g->top);
    g->nchurn = fill_rows(s, w.rec, a.churn_idx, a.nchurn, g->churn);

    atomic_init(&g->refs, 1);
    g->computed_at = time_now();
    g->computed_mono_ns = time_mono_ns();
    g->generation = (uint64_t)g->computed_at * 1000000000ull + g->computed_mono_ns % 1000000000ull;
    g->as_of = w.as_of;
    g->model_version = m->version;
    g->horizon_days = m->horizon_days;
    g->shoppers = a.n;
    g->refresh_ms = (double)(g->computed_mono_ns - t0) / 1e6;
    size_t peaks_or_ltv = old_peaks * PEAK_BYTES > w.n * sizeof(float) ? old_peaks * PEAK_BYTES : w.n * sizeof(float);
    g->work_bytes = (uint64_t)(SEG_COPY_SLOTS * w.stride + w.cap * sizeof(SegRecord) + peaks_or_ltv +
                               2 * list_max * (sizeof(SegmentRow) + 2 * sizeof(uint32_t) + sizeof(float)));
    pthread_mutex_lock(&s->seg_lock);
    Segments *old = s->segments;
    s->segments = g;
    pthread_mutex_unlock(&s->seg_lock);
    segments_release(old);
    log_msg(LOG_DEBUG, "segments refreshed", "shoppers=%zu top=%zu churn=%zu ms=%.1f", a.n, a.ntop, a.nchurn,
            (double)(time_mono_ns() - t0) / 1e6);
    g = NULL;
    rc = 0;
out:
    if (g) {
        free(g->top);
        free(g->churn);
        free(g);
    }
    if (a.sorted) { /* the next peaks, whether or not this refresh was published */
        s->seg_peaks = peaks_from_records(w.rec, a.n);
        s->seg_npeaks = a.n;
        w.rec = NULL;
    }
    free(w.copies);
    free(w.rec);
    free(a.top_idx);
    free(a.churn_idx);
    model_release(m);
    return rc;
}
