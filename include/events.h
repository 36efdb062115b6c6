/* events: turns a request body, already parsed into a cJSON tree, into
 * validated events, or into one error per bad event (the rules are in
 * docs/SEMANTICS.md and openapi/ltvd.yaml).
 *
 * Pure: reads the tree and the config, touches nothing else; any thread.
 * The batch's events point into the tree (ids are not copied), so the tree
 * must outlive the batch; the caller frees the batch with
 * events_batch_free, then the tree. */
#ifndef LTVD_EVENTS_H
#define LTVD_EVENTS_H

#include <cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "shopper.h"

/* One problem with one event of a batch. */
typedef struct EventError {
    size_t index;
    const char *field;   /* static string */
    char reason[112];
} EventError;

/* A body's events. */
typedef struct EventBatch {
    Event *events;       /* (n,) */
    size_t n;
    EventError *errors;  /* (nerrors,): at most one per event */
    size_t nerrors;
    bool single;         /* the body was one event object, not {"events": [...]} */
    Event one;           /* storage for a single event */
    EventError one_error;
} EventBatch;

/* Validates a body: one event object, or {"events": [...]}. wall_now is
 * the server's clock: the default ts, and with clock = wall the reference
 * for limits.max_future_s.
 * 0: every event valid. -EINVAL: b->errors says which are bad and why;
 * -E2BIG: more than limits.max_batch_events; -EPROTO: the body has neither
 * shape (b->errors[0] says why); -ENOMEM. Whatever it returns, free b with
 * events_batch_free. */
int events_parse(const cJSON *root, const LtvdConfig *cfg, int64_t wall_now, EventBatch *b);
void events_batch_free(EventBatch *b);

#endif
