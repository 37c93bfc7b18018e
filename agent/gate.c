/* gate.c — the activation gate (rule in gate.h). Pure: it reads its input
 * and writes its verdict, nothing else. The McNemar tail is common/stats.c's
 * exact binomial tail, shared with the rollout gates. */
#include "gate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/stats.h"

static const char *const check_names[MF_GATE__COUNT] = {
    [MF_GATE_ACCURACY] = "min_accuracy",
    [MF_GATE_DROP] = "max_accuracy_drop",
    [MF_GATE_LATENCY] = "latency_p99_ms",
    [MF_GATE_MEMORY] = "memory_bytes",
};

const char *mf_gate_check_name(enum mf_gate_check check)
{
    if ((unsigned)check >= MF_GATE__COUNT)
        return "unknown";
    return check_names[check];
}

double mf_gate_binom_tail(uint64_t m, uint64_t k)
{
    return mf_stats_binom_tail_half(m, k);
}

static struct mf_gate_failure *gate__fail(struct mf_gate_verdict *v, enum mf_gate_check check,
                                          double measured, double limit, double excess)
{
    struct mf_gate_failure *f = &v->failures[v->n_failures++];
    f->check = check;
    f->measured = measured;
    f->limit = limit;
    f->excess = excess;
    return f;
}

void mf_gate_judge(const struct mf_gate_input *in, struct mf_gate_verdict *out)
{
    MF_ASSERT(in && out);
    MF_ASSERT(in->n >= 1 && in->correct <= in->n);
    const struct mf_gate_thresholds *th = &in->thresholds;
    const struct mf_paired *p = &in->paired;
    struct mf_gate_verdict v;
    memset(&v, 0, sizeof v);
    double n = (double)in->n;

    v.accuracy = (double)in->correct / n;
    v.mcnemar_p = 1.0;
    if (v.accuracy < th->min_accuracy) {
        struct mf_gate_failure *f = gate__fail(&v, MF_GATE_ACCURACY, v.accuracy, th->min_accuracy,
                                               th->min_accuracy - v.accuracy);
        snprintf(f->reason, sizeof f->reason,
                 "accuracy %.4f is below the minimum %.4f by %.4f (%llu of %llu right)", v.accuracy,
                 th->min_accuracy, f->excess, (unsigned long long)in->correct,
                 (unsigned long long)in->n);
    }

    if (in->has_incumbent) {
        MF_ASSERT(p->both + p->only_candidate + p->only_incumbent + p->neither == in->n);
        MF_ASSERT(p->both + p->only_candidate == in->correct);
        v.has_incumbent = true;
        v.drop = ((double)p->only_incumbent - (double)p->only_candidate) / n;
        v.mcnemar_p = mf_gate_binom_tail(p->only_candidate + p->only_incumbent, p->only_incumbent);
        if (v.drop > th->max_accuracy_drop) {
            struct mf_gate_failure *f = gate__fail(&v, MF_GATE_DROP, v.drop, th->max_accuracy_drop,
                                                   v.drop - th->max_accuracy_drop);
            snprintf(f->reason, sizeof f->reason,
                     "accuracy drop %.4f against the incumbent exceeds the maximum %.4f by %.4f "
                     "(paired: only the incumbent right on %llu items, only the candidate on "
                     "%llu, of %llu; one-sided McNemar p = %.3g)",
                     v.drop, th->max_accuracy_drop, f->excess,
                     (unsigned long long)p->only_incumbent, (unsigned long long)p->only_candidate,
                     (unsigned long long)in->n, v.mcnemar_p);
        }
    }

    if (th->latency_p99_ms > 0) {
        double ms = (double)in->p99_us / 1000.0;
        if (ms > th->latency_p99_ms) {
            struct mf_gate_failure *f =
                gate__fail(&v, MF_GATE_LATENCY, ms, th->latency_p99_ms, ms - th->latency_p99_ms);
            snprintf(f->reason, sizeof f->reason,
                     "latency p99 %.3f ms exceeds the budget %.3f ms by %.3f ms", ms,
                     th->latency_p99_ms, f->excess);
        }
    }

    if (th->memory_bytes > 0 && in->peak_rss_bytes > th->memory_bytes) {
        uint64_t over = in->peak_rss_bytes - th->memory_bytes;
        struct mf_gate_failure *f = gate__fail(&v, MF_GATE_MEMORY, (double)in->peak_rss_bytes,
                                               (double)th->memory_bytes, (double)over);
        snprintf(f->reason, sizeof f->reason,
                 "peak memory %llu bytes (%.1f MiB) exceeds the budget %llu bytes (%.1f MiB) by "
                 "%llu bytes",
                 (unsigned long long)in->peak_rss_bytes, (double)in->peak_rss_bytes / 1048576.0,
                 (unsigned long long)th->memory_bytes, (double)th->memory_bytes / 1048576.0,
                 (unsigned long long)over);
    }

    v.pass = v.n_failures == 0;
    *out = v;
}

void mf_gate_input_from_bench(const struct mf_bench *bench,
                              const struct mf_gate_thresholds *thresholds,
                              struct mf_gate_input *out)
{
    MF_ASSERT(bench && thresholds && out);
    memset(out, 0, sizeof *out);
    out->thresholds = *thresholds;
    out->n = bench->n;
    out->correct = bench->candidate.correct;
    out->has_incumbent = bench->has_incumbent;
    out->paired = bench->paired;
    out->p99_us = bench->candidate.latency.p99_us;
    out->peak_rss_bytes = bench->candidate.peak_rss_bytes;
}
