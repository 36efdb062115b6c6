/* bare_mhd: the benchmark's peer. A libmicrohttpd 0.9.75 server with the same
 * threading as ltvd (one internal polling thread; epoll here, as in the
 * brief's reference figure, where ltvd polls: docs/PERFORMANCE.md, "Polling
 * mode") that answers every request
 * with a constant 200-byte JSON body, responding on the handler's second
 * call as ltvd does. Usage: bare_mhd PORT */
#include <microhttpd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* 200 bytes, shaped like a prediction */
static const char BODY[] =
    "{\"user_id\":\"u123456\",\"known\":true,\"as_of\":\"2026-11-28T00:00:00Z\",\"horizon_days\":182,"
    "\"ltv\":31.4,\"p_active\":0.41,\"p10\":0,\"p50\":0,\"p90\":88,\"model_version\":7,\"events\":12,\"pad\":\"xxxxxxxxxxxxxxxxxxxxxxxxx\"}";

static int marker;

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_size, void **ctx)
{
    if (*ctx == NULL) {
        *ctx = &marker;
        return MHD_YES;
    }
    if (*upload_size) {
        *upload_size = 0;
        return MHD_YES;
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(sizeof BODY - 1, (void *)BODY, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bare_mhd PORT\n");
        return 2;
    }
    _Static_assert(sizeof BODY - 1 == 200, "body must be 200 bytes");
    struct MHD_Daemon *d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC,
                                            (uint16_t)atoi(argv[1]), NULL, NULL, on_request, NULL,
                                            MHD_OPTION_CONNECTION_LIMIT, 4096u, MHD_OPTION_END);
    if (!d)
        return 1;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sig;
    sigwait(&set, &sig);
    MHD_stop_daemon(d);
    return 0;
}
