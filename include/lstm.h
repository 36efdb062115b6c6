/* lstm: one LSTM step through OpenBLAS, allocation-free.
 *
 * Gate order in the stacked weights is i, f, g, o (input, forget, cell
 * candidate, output):
 *   z = W [x; h] + b                 W (4H, I+H) row-major, b (4H,)
 *   i = σ(z_i)  f = σ(z_f)  g = tanh(z_g)  o = σ(z_o)
 *   c' = f ⊙ c + i ⊙ g               h' = o ⊙ tanh(c')
 * Any thread may call lstm_step concurrently with its own scratch. */
#ifndef LTVD_LSTM_H
#define LTVD_LSTM_H

#include <stddef.h>

#define LSTM_MAX_HIDDEN 256
#define LSTM_MAX_INPUT 32

typedef struct LstmConfig {
    int input;  /* I */
    int hidden; /* H */
} LstmConfig;

/* Floats of scratch lstm_step needs: (I+H) for [x; h] and 4H for z. */
static inline size_t lstm_scratch_floats(const LstmConfig *cfg)
{
    return (size_t)(cfg->input + cfg->hidden) + 4u * (size_t)cfg->hidden;
}

/* Advances (h, c) in place by one input x.
 *   w (4H, I+H), b (4H,), x (I,), h (H,), c (H,), scratch (lstm_scratch_floats,) */
void lstm_step(const LstmConfig *cfg, const float *w, const float *b, const float *x, float *h, float *c,
               float *scratch);

#endif
