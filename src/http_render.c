/* http_render: ltvd's JSON answers, written by hand into a growable buffer
 * (printf's %g costs more than the rest of a prediction request). One
 * concern: bytes out. Pure; any thread; the caller owns the buffer. */
#include "http_render.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "timeutil.h"

/* ---- the buffer -------------------------------------------------------- */

/* ---- JSON values ------------------------------------------------------- */

static void render_u64(TextBuf *b, uint64_t v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[sizeof tmp - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    textbuf_append(b, tmp + sizeof tmp - n, (size_t)n);
}

/* A number with at most 6 decimals, trailing zeros dropped (money and
 * probabilities need no more); non-finite values become 0. */
static void render_num(TextBuf *b, double v)
{
    if (!isfinite(v))
        v = 0.0;
    if (fabs(v) >= 1e13) { /* below, v * 1e6 + 0.5 < 2^64: the cast is defined */
        textbuf_printf(b, "%.17g", v);
        return;
    }
    if (v < 0) {
        TEXT_LIT(b, "-");
        v = -v;
    }
    uint64_t scaled = (uint64_t)(v * 1e6 + 0.5);
    uint64_t ip = scaled / 1000000, fp = scaled % 1000000;
    render_u64(b, ip);
    if (!fp)
        return;
    char frac[8] = {'.'};
    int n = 6;
    while (fp % 10 == 0) {
        fp /= 10;
        n--;
    }
    for (int i = n; i >= 1; i--) {
        frac[i] = (char)('0' + fp % 10);
        fp /= 10;
    }
    textbuf_append(b, frac, (size_t)n + 1);
}

/* s (n bytes) as a JSON string literal, quotes included. */
static void render_string(TextBuf *b, const char *s, size_t n)
{
    TEXT_LIT(b, "\"");
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        if (i > start)
            textbuf_append(b, s + start, i - start);
        if (c == '"' || c == '\\')
            textbuf_printf(b, "\\%c", c);
        else
            textbuf_printf(b, "\\u%04x", c);
        start = i + 1;
    }
    if (n > start)
        textbuf_append(b, s + start, n - start);
    TEXT_LIT(b, "\"");
}

static void render_time(TextBuf *b, int64_t ts)
{
    char buf[TIME_RFC3339_LEN];
    time_format_rfc3339(ts, buf);
    textbuf_append(b, buf, TIME_RFC3339_LEN - 1);
}

static double finite_or_zero(double v) { return isfinite(v) ? v : 0.0; }

/* ---- answers ----------------------------------------------------------- */

void render_error(TextBuf *b, const char *code, const char *message, const EventError *details, size_t ndetails)
{
    textbuf_printf(b, "{\"error\":{\"code\":\"%s\",\"message\":", code);
    render_string(b, message, strlen(message));
    textbuf_printf(b, ",\"details\":[");
    for (size_t i = 0; i < ndetails; i++) {
        textbuf_printf(b, "%s{\"index\":%zu,\"field\":\"%s\",\"reason\":", i ? "," : "", details[i].index,
                      details[i].field);
        render_string(b, details[i].reason, strlen(details[i].reason));
        textbuf_printf(b, "}");
    }
    textbuf_printf(b, "]}}");
}

void render_status(TextBuf *b, const char *status) { textbuf_printf(b, "{\"status\":\"%s\"}", status); }

void render_prediction(TextBuf *b, const PredictionView *p)
{
    TEXT_LIT(b, "{\"user_id\":");
    render_string(b, p->user_id, p->user_len);
    if (p->known)
        TEXT_LIT(b, ",\"known\":true,\"as_of\":\"");
    else
        TEXT_LIT(b, ",\"known\":false,\"as_of\":\"");
    render_time(b, p->as_of);
    TEXT_LIT(b, "\",\"horizon_days\":");
    render_u64(b, (uint64_t)p->horizon_days);
    TEXT_LIT(b, ",\"ltv\":");
    render_num(b, p->p.ltv);
    TEXT_LIT(b, ",\"p_active\":");
    render_num(b, p->p.p_active);
    TEXT_LIT(b, ",\"p10\":");
    render_num(b, p->p.p10);
    TEXT_LIT(b, ",\"p50\":");
    render_num(b, p->p.p50);
    TEXT_LIT(b, ",\"p90\":");
    render_num(b, p->p.p90);
    TEXT_LIT(b, ",\"model_version\":");
    render_u64(b, p->model_version);
    if (p->p.from_network)
        TEXT_LIT(b, ",\"source\":\"network\",\"events\":");
    else
        TEXT_LIT(b, ",\"source\":\"fallback\",\"events\":");
    render_u64(b, p->events);
    if (p->known) {
        TEXT_LIT(b, ",\"last_event_ts\":\"");
        render_time(b, p->last_event_ts);
        TEXT_LIT(b, "\"}");
    } else {
        TEXT_LIT(b, ",\"last_event_ts\":null}");
    }
}

void render_predictions(TextBuf *b, const PredictionView *pv, size_t n)
{
    TEXT_LIT(b, "{\"predictions\":[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            TEXT_LIT(b, ",");
        render_prediction(b, &pv[i]);
    }
    TEXT_LIT(b, "]}");
}

void render_applied(TextBuf *b, const ApplyResult *res, const PredictionView *single)
{
    TEXT_LIT(b, "{\"accepted\":");
    render_u64(b, res->accepted);
    TEXT_LIT(b, ",\"duplicates\":");
    render_u64(b, res->duplicates);
    TEXT_LIT(b, ",\"late\":");
    render_u64(b, res->late);
    if (single) {
        TEXT_LIT(b, ",\"prediction\":");
        render_prediction(b, single);
    }
    TEXT_LIT(b, "}");
}

void render_user(TextBuf *b, const char *id, size_t len, const UserSummaryView *v)
{
    char first[TIME_RFC3339_LEN], last[TIME_RFC3339_LEN];
    time_format_rfc3339(v->agg.first_ts, first);
    time_format_rfc3339(v->agg.last_ts, last);
    TEXT_LIT(b, "{\"user_id\":");
    render_string(b, id, len);
    textbuf_printf(b,
                  ",\"events\":%u,\"purchases\":%u,\"refunds\":%u,\"purchase_days\":%u,\"spend\":%.10g,"
                  "\"first_event_ts\":\"%s\",\"last_event_ts\":\"%s\",\"recent_events\":%u}",
                  v->agg.events, v->agg.purchases, v->agg.refunds, v->agg.purchase_days, v->agg.spend, first, last,
                  v->recent_events);
}

/* "adjuster": the RL adjuster's state and the prediction log it learns from. */
static void render_adjuster(TextBuf *b, const ModelInfo *mi, const PredLogStats *pl)
{
    textbuf_printf(b,
                  "\"adjuster\":{\"enabled\":%s,\"active\":%s,\"prediction_log\":{\"capacity\":%zu,\"pending\":%zu,"
                  "\"matured_pairs\":%zu,\"pairs_predicted\":%.6g,\"pairs_realised\":%.6g,\"logged\":%llu,"
                  "\"matured\":%llu,\"dropped_full\":%llu,\"dropped_unknown\":%llu}",
                  mi->adjuster_enabled ? "true" : "false", mi->has_adj ? "true" : "false", pl->cap, pl->pending,
                  pl->pairs, pl->pairs_predicted, pl->pairs_realised, (unsigned long long)pl->logged,
                  (unsigned long long)pl->matured, (unsigned long long)pl->dropped_full,
                  (unsigned long long)pl->dropped_unknown);
    if (mi->has_adj) {
        const AdjTable *t = &mi->adj;
        int shown = t->runs < 8 ? (int)t->runs : 8;
        textbuf_printf(b,
                      ",\"runs\":%u,\"episodes\":%llu,\"live_pairs\":%u,\"backtest_pairs\":%u,\"reward\":%.6g,"
                      "\"reward_trend\":[",
                      t->runs, (unsigned long long)t->episodes, t->live_pairs, t->backtest_pairs, t->reward_greedy);
        for (int k = 8 - shown; k < 8; k++)
            textbuf_printf(b, "%s%.6g", k > 8 - shown ? "," : "", t->trend[k]);
        textbuf_printf(b, "],\"multipliers\":[");
        for (int a = 0; a < ADJ_ACTIONS; a++)
            textbuf_printf(b, "%s%g", a ? "," : "", ADJ_MULTIPLIERS[a]);
        textbuf_printf(b, "],\"recency_buckets_days\":[30,90,180,null],\"tenure_buckets_days\":[90,180,365,null],"
                         "\"segments\":[");
        int first = 1;
        for (int sgm = 0; sgm < ADJ_SEGMENTS; sgm++) {
            if (!t->pairs[sgm])
                continue; /* no outcomes: x1.0, nothing learned */
            textbuf_printf(b,
                          "%s{\"segment\":%d,\"value_decile\":%d,\"recency_bucket\":%d,\"tenure_bucket\":%d,"
                          "\"pairs\":%u,\"ratio\":%.4g,\"action\":%g,\"q\":[",
                          first ? "" : ",", sgm, sgm / (ADJ_RECENCY * ADJ_TENURE) + 1, sgm / ADJ_TENURE % ADJ_RECENCY,
                          sgm % ADJ_TENURE, t->pairs[sgm], finite_or_zero(t->ratio[sgm]),
                          ADJ_MULTIPLIERS[t->action[sgm]]);
            first = 0;
            for (int a = 0; a < ADJ_ACTIONS; a++)
                textbuf_printf(b, "%s%.4g", a ? "," : "", t->q[sgm][a]);
            textbuf_printf(b, "],\"visits\":[");
            for (int a = 0; a < ADJ_ACTIONS; a++)
                textbuf_printf(b, "%s%u", a ? "," : "", t->visits[sgm][a]);
            textbuf_printf(b, "]}");
        }
        textbuf_printf(b, "]");
    }
    textbuf_printf(b, "}");
}

/* "history": the training history's figures (docs/MODEL.md, "Training history"). */
static void render_history(TextBuf *b, const ModelInfo *mi)
{
    const HistoryStats *h = &mi->history;
    char archived[TIME_RFC3339_LEN] = "", compacted[TIME_RFC3339_LEN] = "";
    if (h->last_archive_unix)
        time_format_rfc3339(h->last_archive_unix, archived);
    if (h->last_compaction_unix)
        time_format_rfc3339(h->last_compaction_unix, compacted);
    textbuf_printf(b, "\"history\":{\"enabled\":%s,\"bytes\":%llu,\"records\":%llu,\"tombstones\":%llu,"
                   "\"shoppers\":%llu,\"parts\":%u,\"parts_not_compacted\":[", mi->history_enabled ? "true" : "false",
                   (unsigned long long)h->bytes, (unsigned long long)h->records, (unsigned long long)h->tombstones,
                   (unsigned long long)h->shoppers, h->parts);
    /* the parts whose shoppers the figure leaves out (history.h) */
    for (unsigned i = 0, n = 0; i < h->parts && i < HISTORY_PARTS_MAX; i++)
        if (!h->part_compacted[i])
            textbuf_printf(b, "%s%u", n++ ? "," : "", i);
    textbuf_printf(b, "],\"bytes_per_event\":%d,\"archived_seq\":%llu,\"archives\":%llu,"
                   "\"compactions\":%llu,\"last_archive\":%s%s%s,\"last_compaction\":%s%s%s},",
                   HISTORY_RECORD_BYTES, (unsigned long long)h->archived_seq,
                   (unsigned long long)h->archives, (unsigned long long)h->compactions,
                   archived[0] ? "\"" : "", archived[0] ? archived : "null", archived[0] ? "\"" : "",
                   compacted[0] ? "\"" : "", compacted[0] ? compacted : "null", compacted[0] ? "\"" : "");
}

void render_model(TextBuf *b, const ModelInfo *mi, const PredLogStats *pl)
{
    static const char *const states[] = {"idle", "running", "failed"};
    char trained[TIME_RFC3339_LEN] = "", fitted[TIME_RFC3339_LEN] = "";
    if (mi->trained_at)
        time_format_rfc3339(mi->trained_at, trained);
    if (mi->fallback.fitted_at)
        time_format_rfc3339(mi->fallback.fitted_at, fitted);
    textbuf_printf(b, "{\"version\":%llu,\"status\":\"%s\",", (unsigned long long)mi->version,
                  mi->status == MODEL_TRAINED ? "trained" : "fallback");
    if (mi->trained_at)
        textbuf_printf(b, "\"trained_at\":\"%s\",", trained);
    else
        textbuf_printf(b, "\"trained_at\":null,");
    textbuf_printf(b,
                  "\"horizon_days\":%d,\"hidden_size\":%d,"
                  "\"training\":{\"examples\":%llu,\"users\":%llu,\"epochs\":%llu,\"val_loss\":%.6g,"
                  "\"val_gini\":%.6g,\"seconds\":%.3f,\"level_shift\":%.6g,\"p_scale\":%.6g,\"p_offset\":%.6g,"
                  "\"m_shrink\":%.6g,\"m_center\":%.6g},",
                  mi->horizon_days, mi->hidden_size, (unsigned long long)mi->train.examples,
                  (unsigned long long)mi->train.users, (unsigned long long)mi->train.epochs,
                  finite_or_zero(mi->train.val_loss), finite_or_zero(mi->train.val_gini), mi->train.seconds,
                  mi->calib.level_shift, mi->calib.p_scale, mi->calib.p_offset, mi->calib.m_shrink, mi->calib.m_center);
    const FallbackFit *f = &mi->fallback;
    textbuf_printf(b,
                  "\"fallback\":{\"model\":\"bgnbd+gamma_gamma\",\"fitted\":%s,\"fitted_at\":%s%s%s,"
                  "\"customers\":%llu,\"repeat_buyers\":%llu,\"purchases\":%llu,"
                  "\"bgnbd\":{\"r\":%.6g,\"alpha\":%.6g,\"a\":%.6g,\"b\":%.6g},"
                  "\"gamma_gamma\":{\"p\":%.6g,\"q\":%.6g,\"v\":%.6g},",
                  f->fitted_at ? "true" : "false", f->fitted_at ? "\"" : "", f->fitted_at ? fitted : "null",
                  f->fitted_at ? "\"" : "", (unsigned long long)f->customers, (unsigned long long)f->repeat_buyers,
                  (unsigned long long)f->purchases, f->bg.r, f->bg.alpha, f->bg.a, f->bg.b, f->gg.p, f->gg.q,
                  f->gg.v);
    static const char *const cold_states[] = {"prior", "capped", "fitted"};
    textbuf_printf(b, "\"cold_start\":{\"state\":\"%s\",\"examples\":%llu,\"converted\":%llu,\"beta_p\":[",
                   cold_states[f->cold.state <= COLD_FITTED ? f->cold.state : 0], (unsigned long long)f->cold.examples,
                   (unsigned long long)f->cold.converted);
    for (int i = 0; i < COLD_FEATURES; i++)
        textbuf_printf(b, "%s%.6g", i ? "," : "", finite_or_zero(f->cold.beta_p[i]));
    textbuf_printf(b, "],\"beta_mu\":[");
    for (int i = 0; i < COLD_FEATURES; i++)
        textbuf_printf(b, "%s%.6g", i ? "," : "", finite_or_zero(f->cold.beta_mu[i]));
    textbuf_printf(b, "],\"sigma\":%.6g}},", finite_or_zero(f->cold.sigma));
    textbuf_printf(b, "\"retrain\":{\"state\":\"%s\",\"job\":%llu,\"last_error\":", states[mi->retrain_state],
                  (unsigned long long)mi->retrain_job);
    if (mi->retrain_error[0])
        render_string(b, mi->retrain_error, strlen(mi->retrain_error));
    else
        textbuf_printf(b, "null");
    const TrainFigures *lt = &mi->last_train;
    textbuf_printf(b,
                  ",\"network\":%s,\"last_training\":{\"examples\":%llu,\"users\":%llu,\"events\":%llu,"
                  "\"history_events\":%llu,\"epochs\":%llu,"
                  "\"head\":\"%s\",\"seasonal\":%s,\"seasonal_events\":%s,\"val_loss\":%.6g,\"val_loss_other_head\":%.6g,\"val_loss_fallback\":%.6g,"
                  "\"val_loss_serving\":%.6g,\"val_gini\":%.6g,\"val_gini_fallback\":%.6g,\"seconds\":%.3f,"
                  "\"swapped\":%s,\"level\":{\"rule\":\"%s\",\"shift\":%.6g,\"p_scale\":%.6g,\"p_offset\":%.6g,"
                  "\"m_shrink\":%.6g,\"m_center\":%.6g,"
                  "\"val_total_error_fallback\":%.6g,"
                  "\"val_total_error_held_out\":%.6g,\"val_total_error_network\":%.6g,\"shoppers\":%llu,"
                  "\"buyers\":%llu}},\"runs\":[",
                  mi->network_enabled ? "true" : "false", (unsigned long long)lt->examples,
                  (unsigned long long)lt->users, (unsigned long long)lt->events,
                  (unsigned long long)lt->history_events, (unsigned long long)lt->epochs,
                  lt->epochs ? (lt->hybrid ? "hybrid" : "lstm_only") : "none", lt->seasonal ? "true" : "false",
                  lt->seasonal_events ? "true" : "false", finite_or_zero(lt->val_loss),
                  finite_or_zero(lt->val_loss_other), finite_or_zero(lt->val_loss_fallback),
                  finite_or_zero(lt->val_loss_serving), finite_or_zero(lt->val_gini),
                  finite_or_zero(lt->val_gini_fallback), lt->seconds, lt->swapped ? "true" : "false",
                  model_level_rule_name(lt->level_rule), finite_or_zero(lt->level_shift),
                  lt->p_scale > 0 ? lt->p_scale : 1.0, finite_or_zero(lt->p_offset), /* 0: no training yet */
                  finite_or_zero(lt->m_shrink), finite_or_zero(lt->m_center),
                  finite_or_zero(lt->val_total_error_fallback), finite_or_zero(lt->val_total_error_held_out),
                  finite_or_zero(lt->val_total_error_network), (unsigned long long)lt->level_shoppers,
                  (unsigned long long)lt->level_buyers);
    for (unsigned k = 0; k < mi->nruns; k++) {
        const TrainRun *run = &mi->runs[k];
        char at[TIME_RFC3339_LEN];
        time_format_rfc3339(run->at, at);
        textbuf_printf(b,
                       "%s{\"version\":%llu,\"at\":\"%s\",\"swapped\":%s,\"head\":\"%s\",\"examples\":%llu,"
                       "\"val_loss\":%.6g,\"val_loss_fallback\":%.6g,\"val_gini\":%.6g,\"val_gini_fallback\":%.6g}",
                       k ? "," : "", (unsigned long long)run->version, at, run->f.swapped ? "true" : "false",
                       run->f.hybrid ? "hybrid" : "lstm_only", (unsigned long long)run->f.examples,
                       finite_or_zero(run->f.val_loss), finite_or_zero(run->f.val_loss_fallback),
                       finite_or_zero(run->f.val_gini), finite_or_zero(run->f.val_gini_fallback));
    }
    textbuf_printf(b, "]},");
    render_history(b, mi);
    render_adjuster(b, mi, pl);
    textbuf_printf(b, "}");
}

void render_job(TextBuf *b, uint64_t job) { textbuf_printf(b, "{\"job\":%llu}", (unsigned long long)job); }

void render_model_file(TextBuf *b, const ModelFileInfo *f)
{
    textbuf_printf(b, "{\"version\":%llu,\"serving\":%s,\"bytes\":%llu,\"valid\":%s,", (unsigned long long)f->version,
                   f->serving ? "true" : "false", (unsigned long long)f->bytes, f->valid ? "true" : "false");
    if (!f->valid) {
        textbuf_printf(b, "\"error\":");
        render_string(b, f->error, strlen(f->error));
        textbuf_printf(b, "}");
        return;
    }
    char trained[TIME_RFC3339_LEN] = "", fitted[TIME_RFC3339_LEN] = "";
    if (f->trained_at)
        time_format_rfc3339(f->trained_at, trained);
    if (f->fitted_at)
        time_format_rfc3339(f->fitted_at, fitted);
    bool net = f->status == MODEL_TRAINED;
    textbuf_printf(b, "\"error\":null,\"status\":\"%s\",\"head\":%s,\"trained_at\":%s%s%s,\"fallback_fitted_at\":%s%s%s,",
                   net ? "trained" : "fallback", !net ? "null" : f->hybrid ? "\"hybrid\"" : "\"lstm_only\"",
                   net && f->trained_at ? "\"" : "", net && f->trained_at ? trained : "null",
                   net && f->trained_at ? "\"" : "", f->fitted_at ? "\"" : "", f->fitted_at ? fitted : "null",
                   f->fitted_at ? "\"" : "");
    if (net)
        textbuf_printf(b, "\"validation\":{\"loss\":%.6g,\"gini\":%.6g,\"examples\":%llu}}",
                       finite_or_zero(f->train.val_loss), finite_or_zero(f->train.val_gini),
                       (unsigned long long)f->train.examples);
    else
        textbuf_printf(b, "\"validation\":null}");
}

void render_models(TextBuf *b, uint64_t serving, int keep, const ModelFileInfo *files, size_t n)
{
    textbuf_printf(b, "{\"serving_version\":%llu,\"keep\":%d,\"models\":[", (unsigned long long)serving, keep);
    for (size_t i = 0; i < n; i++) {
        if (i)
            textbuf_printf(b, ",");
        render_model_file(b, &files[i]);
    }
    textbuf_printf(b, "]}");
}

static void render_cal_groups(TextBuf *b, const Calibration *cal)
{
    textbuf_printf(b, "\"pairs\":%zu,\"predicted_total\":%.6g,\"realised_total\":%.6g,\"deciles\":[", cal->pairs,
                   finite_or_zero(cal->predicted_total), finite_or_zero(cal->realised_total));
    for (int k = 0; k < cal->ngroups; k++) {
        const CalGroup *g = &cal->g[k];
        textbuf_printf(b,
                       "%s{\"decile\":%d,\"count\":%u,\"predicted\":%.6g,\"realised\":%.6g,\"pred_min\":%.6g,"
                       "\"pred_max\":%.6g}",
                       k ? "," : "", k + 1, g->count, finite_or_zero(g->predicted), finite_or_zero(g->realised),
                       finite_or_zero(g->pred_min), finite_or_zero(g->pred_max));
    }
    textbuf_printf(b, "]");
}

void render_calibration(TextBuf *b, const CalibrationView *v)
{
    textbuf_printf(b, "{\"horizon_days\":%d,\"live\":", v->horizon_days);
    if (v->has_live) {
        textbuf_printf(b, "{");
        render_cal_groups(b, &v->live);
        textbuf_printf(b, "}");
    } else {
        textbuf_printf(b, "null");
    }
    textbuf_printf(b, ",\"backtest\":");
    if (v->has_backtest) {
        char at[TIME_RFC3339_LEN];
        time_format_rfc3339(v->backtest_at, at);
        textbuf_printf(b, "{\"model_version\":%llu,\"computed_at\":\"%s\",", (unsigned long long)v->backtest_version,
                       at);
        render_cal_groups(b, &v->backtest);
        textbuf_printf(b, "}");
    } else {
        textbuf_printf(b, "null");
    }
    textbuf_printf(b, "}");
}

/* ---- segments and lists ---------------------------------------------------- */

static void render_refresh_head(TextBuf *b, const Segments *g, double age_s)
{
    TEXT_LIT(b, "{\"computed_at\":\"");
    render_time(b, g->computed_at);
    TEXT_LIT(b, "\",\"age_s\":");
    render_num(b, age_s);
    TEXT_LIT(b, ",\"as_of\":\"");
    render_time(b, g->as_of);
    TEXT_LIT(b, "\",\"model_version\":");
    render_u64(b, g->model_version);
    TEXT_LIT(b, ",\"horizon_days\":");
    render_u64(b, (uint64_t)g->horizon_days);
    TEXT_LIT(b, ",\"shoppers\":");
    render_u64(b, g->shoppers);
}

static void render_histogram(TextBuf *b, const double *edges, const uint64_t *counts, int n)
{
    TEXT_LIT(b, "{\"edges\":[");
    for (int k = 0; k < n; k++) {
        if (k)
            TEXT_LIT(b, ",");
        render_num(b, edges[k]);
    }
    TEXT_LIT(b, "],\"counts\":[");
    for (int k = 0; k < n; k++) {
        if (k)
            TEXT_LIT(b, ",");
        render_u64(b, counts[k]);
    }
    TEXT_LIT(b, "]}");
}

void render_segments(TextBuf *b, const Segments *g, double age_s)
{
    render_refresh_head(b, g, age_s);
    TEXT_LIT(b, ",\"refresh_ms\":");
    render_num(b, g->refresh_ms);
    TEXT_LIT(b, ",\"refresh_bytes\":");
    render_u64(b, g->work_bytes);
    TEXT_LIT(b, ",\"tiers\":[");
    for (int t = 0; t < SEG_TIERS; t++) {
        textbuf_printf(b, "%s{\"name\":\"%s\",\"min_ltv\":", t ? "," : "", segments_tier_name(t));
        render_num(b, g->tier_min[t]);
        TEXT_LIT(b, "}");
    }
    TEXT_LIT(b, "],\"activity\":[{\"name\":\"active\",\"min_p_active\":");
    render_num(b, SEG_ACTIVE_MIN);
    TEXT_LIT(b, "},{\"name\":\"at_risk\",\"min_p_active\":");
    render_num(b, SEG_AT_RISK_MIN);
    TEXT_LIT(b, "},{\"name\":\"lapsed\",\"min_p_active\":0}],\"segments\":[");
    for (int t = 0; t < SEG_TIERS; t++)
        for (int a = 0; a < SEG_ACTIVITIES; a++) {
            const SegmentCell *c = &g->cells[t][a];
            textbuf_printf(b, "%s{\"tier\":\"%s\",\"activity\":\"%s\",\"count\":", t || a ? "," : "",
                           segments_tier_name(t), segments_activity_name(a));
            render_u64(b, c->count);
            TEXT_LIT(b, ",\"predicted_value\":");
            render_num(b, c->predicted_value);
            TEXT_LIT(b, ",\"realised_spend\":");
            render_num(b, c->realised_spend);
            TEXT_LIT(b, "}");
        }
    TEXT_LIT(b, "],\"distributions\":{\"ltv\":");
    render_histogram(b, g->ltv_edges, g->ltv_counts, SEG_LTV_BINS);
    TEXT_LIT(b, ",\"p_active\":");
    render_histogram(b, g->p_edges, g->p_counts, SEG_P_BINS);
    TEXT_LIT(b, "}}");
}

void render_segment_list(TextBuf *b, const Segments *g, double age_s, const SegmentRow *const *rows, size_t n,
                         size_t total, const char *next_cursor)
{
    render_refresh_head(b, g, age_s);
    TEXT_LIT(b, ",\"total\":");
    render_u64(b, total);
    TEXT_LIT(b, ",\"entries\":[");
    for (size_t i = 0; i < n; i++) {
        const SegmentRow *r = rows[i];
        if (i)
            TEXT_LIT(b, ",");
        TEXT_LIT(b, "{\"user_id\":");
        render_string(b, r->user_id, strlen(r->user_id));
        TEXT_LIT(b, ",\"ltv\":");
        render_num(b, r->ltv);
        TEXT_LIT(b, ",\"p_active\":");
        render_num(b, r->p_active);
        TEXT_LIT(b, ",\"p_active_peak\":");
        render_num(b, r->p_active_peak);
        TEXT_LIT(b, ",\"p_active_drop\":");
        render_num(b, fmax(0.0, (double)r->p_active_peak - (double)r->p_active));
        TEXT_LIT(b, ",\"realised_spend\":");
        render_num(b, r->spend);
        TEXT_LIT(b, "}");
    }
    TEXT_LIT(b, "],\"next_cursor\":");
    if (next_cursor) {
        render_string(b, next_cursor, strlen(next_cursor));
        TEXT_LIT(b, "}");
    } else {
        TEXT_LIT(b, "null}");
    }
}

/* ---- explanations ------------------------------------------------------- */

void render_explained(TextBuf *b, const PredictionView *p, const Explanation *ex)
{
    render_prediction(b, p);
    if (b->err || b->b.len == 0)
        return;
    b->b.len--; /* the prediction's closing brace: the explanation goes inside */
    TEXT_LIT(b, ",\"explain\":{\"composition\":\"ltv = fallback.ltv + network.delta + adjuster.delta\","
                "\"fallback\":{\"source\":");
    textbuf_printf(b, "\"%s\"", ex->source ? ex->source : "prior");
    TEXT_LIT(b, ",\"frequency\":");
    render_num(b, ex->frequency);
    TEXT_LIT(b, ",\"recency_weeks\":");
    render_num(b, ex->recency_weeks);
    TEXT_LIT(b, ",\"tenure_weeks\":");
    render_num(b, ex->tenure_weeks);
    TEXT_LIT(b, ",\"weeks_since_last_purchase\":");
    render_num(b, ex->weeks_since_last);
    TEXT_LIT(b, ",\"mean_spend\":");
    render_num(b, ex->mean_spend);
    TEXT_LIT(b, ",\"spend\":");
    render_num(b, ex->spend);
    TEXT_LIT(b, ",\"expected_purchases\":");
    render_num(b, ex->expected_purchases);
    TEXT_LIT(b, ",\"value_per_purchase\":");
    render_num(b, ex->value_per_purchase);
    TEXT_LIT(b, ",\"p_alive\":");
    render_num(b, ex->p_alive);
    TEXT_LIT(b, ",\"p_active\":");
    render_num(b, ex->fallback_p_active);
    TEXT_LIT(b, ",\"ltv\":");
    render_num(b, ex->fallback_ltv);
    textbuf_printf(b, "},\"network\":{\"used\":%s,\"ltv\":", ex->network_used ? "true" : "false");
    render_num(b, ex->network_ltv);
    TEXT_LIT(b, ",\"delta\":");
    render_num(b, ex->network_ltv - ex->fallback_ltv);
    textbuf_printf(b, "},\"adjuster\":{\"used\":%s,\"multiplier\":", ex->adjuster_used ? "true" : "false");
    render_num(b, ex->adjuster_multiplier);
    TEXT_LIT(b, ",\"delta\":");
    render_num(b, ex->ltv - ex->network_ltv);
    textbuf_printf(b, "},\"events\":{\"method\":\"leave_one_out\",\"ring_events\":%u,\"considered\":%u,\"top\":[",
                   ex->ring_events, ex->nevents);
    for (unsigned i = 0; i < ex->nevents; i++) {
        const ExplainEvent *e = &ex->events[i];
        if (i)
            TEXT_LIT(b, ",");
        TEXT_LIT(b, "{\"ts\":\"");
        render_time(b, e->ts);
        textbuf_printf(b, "\",\"type\":\"%s\",\"value\":", event_type_name(e->type));
        render_num(b, e->value);
        TEXT_LIT(b, ",\"effect\":");
        render_num(b, e->effect);
        TEXT_LIT(b, "}");
    }
    TEXT_LIT(b, "]}}}");
}
