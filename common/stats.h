/* stats.h — the two distributions the gates need, pure and exact enough for
 * a decision: the exact binomial tail at p = 1/2 (the one-sided McNemar
 * test) and the inverse standard normal CDF (one-sided confidence bounds).
 * No state, no allocation. */
#ifndef MF_STATS_H
#define MF_STATS_H

#include <stdint.h>

/* Exact one-sided tail P[X >= k] for X ~ Binomial(m, 1/2); 1 when k == 0,
 * 0 when k > m. Accurate to ~1e-13 absolute, and keeps small tails (down to
 * ~1e-300) rather than rounding them to 0. */
double mf_stats_binom_tail_half(uint64_t m, uint64_t k);

/* The inverse of the standard normal CDF: z such that P[Z <= z] = p, for p
 * in (0, 1) (anything else is a programmer error and aborts). Acklam's
 * rational approximation refined by one Halley step: ~1e-9 relative or
 * better (quantile(0.95) = 1.6448536270). */
double mf_stats_normal_quantile(double p);

#endif
