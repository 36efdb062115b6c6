/* http_render: the JSON ltvd answers with, written into a growable buffer.
 * Pure: no libmicrohttpd, no service calls, no locks; the renderers take
 * the values the handlers fetched and only write them out.
 *
 * Threads: any; a RenderBuf belongs to one request at a time. The buffer
 * is malloc'd; whoever holds it frees it with render_free or hands .p to
 * libmicrohttpd (http_server.c), which frees it after sending. */
#ifndef LTVD_HTTP_RENDER_H
#define LTVD_HTTP_RENDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "events.h"
#include "predlog.h"
#include "service.h"

/* A growable byte buffer, kept NUL-terminated: replies out, bodies in.
 * {0} is empty. After a failed allocation oom is set and every later
 * append is a no-op, so writers check once at the end. */
typedef struct RenderBuf {
    char *p;
    size_t len, cap;
    bool oom;
} RenderBuf;

/* Appends n raw bytes. */
void render_append(RenderBuf *b, const char *s, size_t n);
#define RENDER_LIT(b, lit) render_append(b, lit, sizeof(lit) - 1)
__attribute__((format(printf, 2, 3))) void render_printf(RenderBuf *b, const char *fmt, ...);
void render_free(RenderBuf *b);

/* The error object every refusal carries: {"error": {code, message,
 * details: [{index, field, reason}]}}. */
void render_error(RenderBuf *b, const char *code, const char *message, const EventError *details, size_t ndetails);
/* {"status": status} for /healthz and /readyz. */
void render_status(RenderBuf *b, const char *status);
/* One prediction object. */
void render_prediction(RenderBuf *b, const PredictionView *p);
/* {"predictions": [...]} of a batch, pv (n,). */
void render_predictions(RenderBuf *b, const PredictionView *pv, size_t n);
/* The answer to POST /v1/events; single (NULL for a batch) is the shopper's
 * updated prediction after a one-event post. */
void render_applied(RenderBuf *b, const ApplyResult *res, const PredictionView *single);
/* The answer to GET /v1/users/{id}. */
void render_user(RenderBuf *b, const char *id, size_t len, const UserSummaryView *v);
/* The answer to GET /v1/model. */
void render_model(RenderBuf *b, const ModelInfo *mi, const PredLogStats *pl);
/* {"job": job} of an accepted retrain. */
void render_job(RenderBuf *b, uint64_t job);

#endif
