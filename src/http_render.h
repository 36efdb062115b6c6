/* http_render: the JSON ltvd answers with, written into a growable buffer.
 * Pure: no libmicrohttpd, no service calls, no locks; the renderers take
 * the values the handlers fetched and only write them out.
 *
 * Threads: any; a TextBuf (util.h) belongs to one request at a time. The
 * buffer is malloc'd; whoever holds it frees it with textbuf_free or hands
 * b.p to libmicrohttpd (http_server.c), which frees it after sending. */
#ifndef LTVD_HTTP_RENDER_H
#define LTVD_HTTP_RENDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "events.h"
#include "predlog.h"
#include "explain.h"
#include "segments.h"
#include "service.h"
#include "util.h"


/* The error object every refusal carries: {"error": {code, message,
 * details: [{index, field, reason}]}}. */
void render_error(TextBuf *b, const char *code, const char *message, const EventError *details, size_t ndetails);
/* {"status": status} for /healthz and /readyz. */
void render_status(TextBuf *b, const char *status);
/* One prediction object. */
void render_prediction(TextBuf *b, const PredictionView *p);
/* {"predictions": [...]} of a batch, pv (n,). */
void render_predictions(TextBuf *b, const PredictionView *pv, size_t n);
/* The answer to POST /v1/events; single (NULL for a batch) is the shopper's
 * updated prediction after a one-event post. */
void render_applied(TextBuf *b, const ApplyResult *res, const PredictionView *single);
/* The answer to GET /v1/users/{id}. */
void render_user(TextBuf *b, const char *id, size_t len, const UserSummaryView *v);
/* The answer to GET /v1/model. */
void render_model(TextBuf *b, const ModelInfo *mi, const PredLogStats *pl);
/* {"job": job} of an accepted retrain or snapshot. */
void render_job(TextBuf *b, uint64_t job);
/* One entry of the model history (GET /v1/models, rollback, import). */
void render_model_file(TextBuf *b, const ModelFileInfo *f);
/* GET /v1/models: {"serving_version", "keep", "models": [...]}, files (n,). */
void render_models(TextBuf *b, uint64_t serving, int keep, const ModelFileInfo *files, size_t n);
/* GET /v1/calibration: {"horizon_days", "live": {...}|null, "backtest": {...}|null}. */
void render_calibration(TextBuf *b, const CalibrationView *v);

/* The answer to GET /v1/segments; age_s: the result's age now. */
void render_segments(TextBuf *b, const Segments *g, double age_s);
/* A page of a list: rows (n,) of the total the list holds, and the cursor of
 * the next page (NULL: this is the last). */
void render_segment_list(TextBuf *b, const Segments *g, double age_s, const SegmentRow *const *rows, size_t n,
                         size_t total, const char *next_cursor);

/* A prediction object with its "explain" member (?explain=true). */
void render_explained(TextBuf *b, const PredictionView *p, const Explanation *ex);

#endif
