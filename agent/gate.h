/* gate.h — the agent's activation gate: does a benchmarked candidate meet its
 * package's thresholds on this device? Pure: no I/O, no clock, no globals.
 *
 * The rule (every check is made, so a refusal lists every failed threshold):
 *  1. accuracy floor:   accuracy = correct / n must be >= min_accuracy.
 *  2. non-inferiority:  only with an incumbent, judged on the paired table
 *     (the same items through both models), not on two independent
 *     accuracies: drop = (only_incumbent - only_candidate) / n, which equals
 *     incumbent accuracy - candidate accuracy; refused when
 *     drop > max_accuracy_drop. The exact one-sided McNemar p-value,
 *     P[X >= only_incumbent] for X ~ Binomial(only_candidate + only_incumbent,
 *     1/2), is reported as evidence of how surely the candidate is worse; it
 *     does not gate by itself (1 when there are no discordant pairs).
 *  3. latency:          p99 (ms) must be <= latency_p99_ms, when that is > 0.
 *  4. memory:           peak RSS must be <= memory_bytes, when that is > 0
 *     (the caller passes the tighter of the manifest's and the device's).
 * Without an incumbent (first install) only 1, 3 and 4 apply. A refused
 * candidate is never activated; each failure carries a sentence naming the
 * threshold, the measured value, the limit and by how much it missed. */
#ifndef MF_AGENT_GATE_H
#define MF_AGENT_GATE_H

#include <stdbool.h>
#include <stdint.h>

#include "agent/bench.h"

/* The package's acceptance thresholds (manifest "thresholds"). */
struct mf_gate_thresholds {
    double min_accuracy;      /* [0, 1] */
    double max_accuracy_drop; /* [0, 1], against the incumbent */
    double latency_p99_ms;    /* 0 = no budget */
    uint64_t memory_bytes;    /* 0 = no budget */
};

struct mf_gate_input {
    struct mf_gate_thresholds thresholds;
    uint64_t n;       /* evaluation items, >= 1 */
    uint64_t correct; /* candidate, <= n */
    bool has_incumbent;
    struct mf_paired paired; /* with an incumbent: the four cells sum to n */
    uint64_t p99_us;         /* candidate */
    uint64_t peak_rss_bytes; /* candidate */
};

enum mf_gate_check {
    MF_GATE_ACCURACY, /* "min_accuracy" */
    MF_GATE_DROP,     /* "max_accuracy_drop" */
    MF_GATE_LATENCY,  /* "latency_p99_ms" */
    MF_GATE_MEMORY,   /* "memory_bytes" */
    MF_GATE__COUNT
};

#define MF_GATE_REASON_MAX 256

struct mf_gate_failure {
    enum mf_gate_check check;
    double measured, limit, excess;  /* in the threshold's unit (ms, bytes, fraction) */
    char reason[MF_GATE_REASON_MAX]; /* "accuracy 0.7056 is below the minimum 0.9500 by 0.2444" */
};

struct mf_gate_verdict {
    bool pass;
    double accuracy;    /* candidate, correct / n */
    bool has_incumbent; /* the next two are 0 / 1 without one */
    double drop;        /* (only_incumbent - only_candidate) / n; negative = better */
    double mcnemar_p;   /* exact one-sided McNemar p-value (evidence only) */
    unsigned n_failures;
    struct mf_gate_failure failures[MF_GATE__COUNT]; /* in enum order */
};

/* The threshold's stable name, as in the manifest; never NULL. */
const char *mf_gate_check_name(enum mf_gate_check check);

/* Judges `in`; fills *out. Inconsistent figures (n == 0, correct > n, a
 * paired table that does not sum to n or disagrees with `correct`) are
 * programmer errors and abort. */
void mf_gate_judge(const struct mf_gate_input *in, struct mf_gate_verdict *out);

/* The gate's input from a benchmark and thresholds (pure helper). */
void mf_gate_input_from_bench(const struct mf_bench *bench,
                              const struct mf_gate_thresholds *thresholds,
                              struct mf_gate_input *out);

/* Exact one-sided binomial tail P[X >= k] for X ~ Binomial(m, 1/2); 1 when
 * k == 0, 0 when k > m. */
double mf_gate_binom_tail(uint64_t m, uint64_t k);

#endif
