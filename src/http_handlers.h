/* http_handlers (private to the http_* files): one handler per row of the
 * route table (http_routes.c). A handler parses what the request carries,
 * calls the service, chooses the status and hands a rendered body to
 * http_send*. The router has already checked method, body size, token and
 * readiness, and decoded the {user_id} into c->id.
 *
 * Threads: a libmicrohttpd thread, the one that runs the call. Handlers own
 * nothing past the call: parsed bodies are freed before they return. */
#ifndef LTVD_HTTP_HANDLERS_H
#define LTVD_HTTP_HANDLERS_H

#include "http_routes.h"

HttpHandler handle_events;      /* POST /v1/events */
HttpHandler handle_user_ltv;    /* GET /v1/users/{user_id}/ltv */
HttpHandler handle_user_get;    /* GET /v1/users/{user_id} */
HttpHandler handle_user_delete; /* DELETE /v1/users/{user_id} */
HttpHandler handle_ltv_batch;   /* POST /v1/ltv/batch */
HttpHandler handle_model;       /* GET /v1/model */
HttpHandler handle_retrain;     /* POST /v1/model/retrain */
HttpHandler handle_healthz;     /* GET /healthz */
HttpHandler handle_readyz;      /* GET /readyz */
HttpHandler handle_metrics;     /* GET /metrics */
HttpHandler handle_admin_snapshot; /* POST /v1/admin/snapshot */
HttpHandler handle_models_list;    /* GET /v1/models */
HttpHandler handle_model_import;   /* POST /v1/models */
HttpHandler handle_model_export;   /* GET /v1/models/{version} */
HttpHandler handle_model_rollback; /* POST /v1/model/rollback */
HttpHandler handle_calibration;    /* GET /v1/calibration */
HttpHandler handle_dashboard;      /* GET /dashboard */
HttpHandler handle_dashboard_asset; /* GET /dashboard/{asset} */
HttpHandler handle_segments;       /* GET /v1/segments */
HttpHandler handle_list_top;       /* GET /v1/lists/top */
HttpHandler handle_list_churn;     /* GET /v1/lists/churn-risk */
HttpHandler handle_cluster;        /* GET /v1/cluster */

#endif
