/* bench.h — the figures of an on-device benchmark, computed by the agent from
 * the labels (which no runner ever sees) and the runners' reports: top-1
 * accuracy, the paired table against the incumbent, latency statistics
 * (nearest-rank percentiles) and the candidate/incumbent latency ratios.
 * Pure computation, plus a loader for the labels .npy. */
#ifndef MF_AGENT_BENCH_H
#define MF_AGENT_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/runner.h"
#include "common/err.h"

/* Latency statistics over per-sample microseconds. Percentiles are nearest
 * rank: the value at 1-based rank ceil(p/100 * count) of the sorted sample
 * (so p50 of 1..10 is 5, p90 is 9, p99 is 10). stddev is the sample standard
 * deviation (n - 1 in the denominator; 0 for one sample). */
struct mf_latency_stats {
    uint64_t count;
    double mean_us;
    double stddev_us;
    uint64_t p50_us, p90_us, p99_us, max_us;
};

/* Both models over the same items, pair by pair. */
struct mf_paired {
    uint64_t both;           /* candidate right, incumbent right */
    uint64_t only_candidate; /* candidate right, incumbent wrong */
    uint64_t only_incumbent; /* candidate wrong, incumbent right */
    uint64_t neither;        /* both wrong */
};

/* One model's figures. */
struct mf_bench_model {
    uint64_t correct;
    double accuracy; /* correct / n */
    struct mf_latency_stats latency;
    uint64_t load_us, first_us, peak_rss_bytes; /* copied from the run */
};

struct mf_bench {
    uint64_t n; /* evaluation items */
    struct mf_bench_model candidate;
    bool has_incumbent; /* the fields below are zero without one */
    struct mf_bench_model incumbent;
    struct mf_paired paired;
    /* candidate / incumbent; each latency is counted as at least 1 us (the
     * protocol's resolution), so a ratio is always finite and positive. */
    double p50_ratio, p99_ratio;
};

/* Nearest-rank statistics of lat[0..n) (n may be 0: all zero). */
void mf_latency_stats_compute(const uint64_t *lat, size_t n, struct mf_latency_stats *out);

/* Nearest-rank percentile (1 <= pct <= 100) of an ascending array, n >= 1. */
uint64_t mf_latency_percentile(const uint64_t *sorted, size_t n, unsigned pct);

/* Figures from the labels and a successful candidate run, optionally with a
 * successful incumbent run on the same inputs (NULL without one). Both runs
 * must report exactly n samples: MF_ERR_SCHEMA otherwise. Writes *out only on
 * success. */
MF_MUST_CHECK enum mf_err mf_bench_compute(const int64_t *labels, size_t n,
                                           const struct mf_runner_result *candidate,
                                           const struct mf_runner_result *incumbent,
                                           struct mf_bench *out, struct mf_diag *diag);

/* Loads the labels .npy: little-endian int64 ('<i8'), one dimension, exactly
 * `expect_n` items (the inputs' n), every label >= 0. On success *labels
 * (caller frees with free()) and *n are set. */
MF_MUST_CHECK enum mf_err mf_bench_load_labels(const char *path, uint64_t expect_n,
                                               int64_t **labels, size_t *n, struct mf_diag *diag);

#endif
