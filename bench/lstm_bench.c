/* lstm_bench: time of one LSTM step (ltvd's lstm_step, OpenBLAS sgemv) per
 * event, hidden H (default 32), input 16. Prints the median over 7 runs of
 * STEPS steps each, in nanoseconds per step. Usage: lstm_bench [H] [STEPS] */
#include <stdio.h>
#include <stdlib.h>

#include "encoding.h"
#include "lstm.h"
#include "model.h"
#include "timeutil.h"

extern void openblas_set_num_threads(int num_threads);

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int H = argc > 1 ? atoi(argv[1]) : 32;
    long steps = argc > 2 ? atol(argv[2]) : 1000000;
    openblas_set_num_threads(1);
    LstmWeights *net;
    if (lstm_weights_create(&net, H, 1, 1))
        return 1;
    float *h = calloc((size_t)H, sizeof(float)), *c = calloc((size_t)H, sizeof(float));
    float *scratch = calloc(lstm_scratch_floats(&net->cfg), sizeof(float));
    enum { NX = 64 };
    static float xs[NX][FEATURE_DIM]; /* a few varied inputs, cycled */
    for (int k = 0; k < NX; k++)
        for (int j = 0; j < FEATURE_DIM; j++)
            xs[k][j] = (float)(((k * 31 + j * 17) % 23) / 11.5 - 1.0);
    double runs[7];
    for (int r = 0; r < 7; r++) {
        uint64_t t0 = time_mono_ns();
        for (long i = 0; i < steps; i++)
            lstm_step(&net->cfg, net->w, net->b, xs[i % NX], h, c, scratch);
        runs[r] = (double)(time_mono_ns() - t0) / (double)steps;
    }
    qsort(runs, 7, sizeof runs[0], cmp_double);
    printf("{\"hidden\": %d, \"input\": %d, \"steps\": %ld, \"ns_per_step_median\": %.1f, \"ns_min\": %.1f, "
           "\"ns_max\": %.1f, \"checksum\": %.6f}\n",
           H, FEATURE_DIM, steps, runs[3], runs[0], runs[6], (double)h[0]);
    free(h);
    free(c);
    free(scratch);
    lstm_weights_release(net);
    return 0;
}
