/* stats.c — binomial tail and normal quantile (stats.h). The binomial tail
 * is summed from its largest term downwards so it neither underflows early
 * nor loses the small p-values that matter; below the mode it is taken as
 * the complement of the mirrored tail. */
#include "stats.h"

#include <math.h>

#include "err.h"

double mf_stats_binom_tail_half(uint64_t m, uint64_t k)
{
    if (k == 0)
        return 1.0;
    if (k > m)
        return 0.0;
    if (2 * k <= m) /* below the mode: 1 - P[X <= k-1] = 1 - P[X >= m-k+1] */
        return 1.0 - mf_stats_binom_tail_half(m, m - k + 1);
    /* k above the mode: terms j = k..m decrease, the first is the largest. */
    double md = (double)m, kd = (double)k;
    double t = exp(lgamma(md + 1) - lgamma(kd + 1) - lgamma(md - kd + 1) - md * log(2.0));
    double sum = 0;
    for (uint64_t j = k; j <= m; j++) {
        sum += t;
        if (t < sum * 1e-17 || j == m)
            break;
        t *= (double)(m - j) / (double)(j + 1);
    }
    return sum > 1.0 ? 1.0 : sum;
}

/* Acklam's coefficients (central region a/b, tails c/d). */
static const double qa[6] = {-3.969683028665376e+01, 2.209460984245205e+02,  -2.759285104469687e+02,
                             1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
static const double qb[5] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                             6.680131188771972e+01, -1.328068155833013e+01};
static const double qc[6] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                             -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
static const double qd[4] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                             3.754408661907416e+00};

double mf_stats_normal_quantile(double p)
{
    MF_ASSERT(p > 0 && p < 1);
    const double plow = 0.02425;
    double x;
    if (p < plow || p > 1 - plow) {
        double q = sqrt(-2 * log(p < plow ? p : 1 - p));
        x = (((((qc[0] * q + qc[1]) * q + qc[2]) * q + qc[3]) * q + qc[4]) * q + qc[5]) /
            ((((qd[0] * q + qd[1]) * q + qd[2]) * q + qd[3]) * q + 1);
        if (p > 1 - plow)
            x = -x;
    } else {
        double q = p - 0.5, r = q * q;
        x = (((((qa[0] * r + qa[1]) * r + qa[2]) * r + qa[3]) * r + qa[4]) * r + qa[5]) * q /
            (((((qb[0] * r + qb[1]) * r + qb[2]) * r + qb[3]) * r + qb[4]) * r + 1);
    }
    /* One Halley step on Phi(x) - p, Phi from erfc (full double precision).
     * Above the median it is computed as (1 - p) - (1 - Phi(x)), which keeps
     * its digits where Phi(x) rounds to 1 (1 - p is exact for p >= 1/2). */
    double e = p > 0.5 ? (1 - p) - 0.5 * erfc(x / sqrt(2.0)) : 0.5 * erfc(-x / sqrt(2.0)) - p;
    double u = e * 2.506628274631000502 /* sqrt(2 pi) */ * exp(x * x / 2);
    return x - u / (1 + x * u / 2);
}
