/* platt: Platt's logistic calibration (include/platt.h). */
#include "platt.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>

#include "util.h"

/* The log-likelihood of (a, b) over the pairs: Σ y log σ(b z + a) + (1 - y) log(1 - σ(b z + a)). */
static double loglik(const double *z, const double *y, size_t n, double a, double b)
{
    double ll = 0;
    for (size_t i = 0; i < n; i++) {
        double t = b * z[i] + a;
        ll -= y[i] > 0 ? softplus(-t) : softplus(t);
    }
    return ll;
}

int platt_fit(const double *logit, const double *y, size_t n, double *scale, double *offset)
{
    size_t pos = 0;
    for (size_t i = 0; i < n; i++)
        pos += y[i] > 0;
    if (pos == 0 || pos == n)
        return -EDOM;
    double a = 0.0, b = 1.0, ll = loglik(logit, y, n, a, b);
    bool converged = false;
    for (int it = 0; it < 100 && !converged; it++) {
        double ga = 0, gb = 0, haa = 0, hab = 0, hbb = 0; /* gradient and (negated) Hessian */
        for (size_t i = 0; i < n; i++) {
            double q = sigmoid(b * logit[i] + a), r = (y[i] > 0) - q, w = q * (1 - q);
            ga += r, gb += r * logit[i];
            haa += w, hab += w * logit[i], hbb += w * logit[i] * logit[i];
        }
        double det = haa * hbb - hab * hab;
        if (!(det > 0) || !isfinite(det))
            return -EDOM;
        double da = (hbb * ga - hab * gb) / det, db = (haa * gb - hab * ga) / det;
        double step = 1.0, next = ll;
        for (int h = 0; h < 30; h++, step *= 0.5) { /* halve the step until the likelihood does not fall */
            next = loglik(logit, y, n, a + step * da, b + step * db);
            if (next >= ll)
                break;
        }
        if (!(next >= ll))
            return -EDOM;
        a += step * da, b += step * db;
        converged = next - ll < 1e-10 * (1 + fabs(ll)) && fabs(step * da) + fabs(step * db) < 1e-8;
        ll = next;
    }
    if (!converged || !isfinite(a) || !isfinite(b) || b < PLATT_SCALE_MIN || b > PLATT_SCALE_MAX ||
        fabs(a) > PLATT_OFFSET_MAX)
        return -EDOM;
    *scale = b;
    *offset = a;
    return 0;
}
