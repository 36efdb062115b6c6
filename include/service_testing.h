/* service_testing: what unit tests may do to a Service that ltvd itself
 * does only through its worker jobs. Not called by ltvd. */
#ifndef LTVD_SERVICE_TESTING_H
#define LTVD_SERVICE_TESTING_H

#include "service.h"

/* Publishes m (takes ownership) as the serving model, as a retrain that
 * swaps does: shoppers' states are recomputed from their recent events
 * before any prediction uses the new weights. Any thread. */
void service_model_swap(Service *s, Model *m);

/* As a worker job publishes (service_publish_if): m serves only if version
 * expect still does; else m is released and -ESTALE returned. */
int service_model_swap_if(Service *s, Model *m, uint64_t expect);

/* The next n shoppers the apply path creates fail as if out of memory: the
 * event is not applied and service_apply returns -ENOMEM. Any thread. */
void service_fail_shopper_inserts(Service *s, unsigned n);

#endif
