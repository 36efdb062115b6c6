/* http_handlers (private to the http_* files): one handler per row of the
 * route table (http_routes.c), in three files by concern: http_handlers.c
 * (events and shoppers, cluster forwarding), http_admin.c (the model, its
 * history, operations, health and metrics), http_reports.c (calibration,
 * segments, the lists, the dashboard). A handler parses what the request
 * carries, calls the service, chooses the status and hands a rendered body
 * to http_send*. The router has already checked method, body size, token
 * and readiness, and decoded the {user_id} into c->id.
 *
 * Threads: a libmicrohttpd thread, the one that runs the call. Handlers own
 * nothing past the call: parsed bodies are freed before they return. */
#ifndef LTVD_HTTP_HANDLERS_H
#define LTVD_HTTP_HANDLERS_H

#include <cJSON.h>

#include "http_routes.h"

/* http_handlers.c: events and shoppers */
HttpHandler handle_events;      /* POST /v1/events */
HttpHandler handle_user_ltv;    /* GET /v1/users/{user_id}/ltv */
HttpHandler handle_user_get;    /* GET /v1/users/{user_id} */
HttpHandler handle_user_delete; /* DELETE /v1/users/{user_id} */
HttpHandler handle_ltv_batch;   /* POST /v1/ltv/batch */
HttpHandler handle_cluster;     /* GET /v1/cluster */

/* http_admin.c: the model, operations, health and metrics */
HttpHandler handle_model;          /* GET /v1/model */
HttpHandler handle_retrain;        /* POST /v1/model/retrain */
HttpHandler handle_healthz;        /* GET /healthz */
HttpHandler handle_readyz;         /* GET /readyz */
HttpHandler handle_metrics;        /* GET /metrics */
HttpHandler handle_admin_snapshot; /* POST /v1/admin/snapshot */
HttpHandler handle_models_list;    /* GET /v1/models */
HttpHandler handle_model_import;   /* POST /v1/models */
HttpHandler handle_model_export;   /* GET /v1/models/{version} */
HttpHandler handle_model_rollback; /* POST /v1/model/rollback */

/* http_reports.c: the population's reports and the dashboard */
HttpHandler handle_calibration;     /* GET /v1/calibration */
HttpHandler handle_dashboard;       /* GET /dashboard */
HttpHandler handle_dashboard_asset; /* GET /dashboard/{asset} */
HttpHandler handle_segments;        /* GET /v1/segments */
HttpHandler handle_list_top;        /* GET /v1/lists/top */
HttpHandler handle_list_churn;      /* GET /v1/lists/churn-risk */

/* The request's body parsed as one JSON text (the caller cJSON_Deletes
 * it), or NULL with c answered 400 and *ret its http_send* result: not
 * JSON, anything but white space after the value (invalid_json), or a
 * string holding \u0000 (invalid_request). (http_handlers.c) */
cJSON *http_parse_json(HttpCall *c, int *ret);

#endif
