/* bench.c — accuracy, the paired table and latency statistics from the
 * labels and the runners' reports; the labels loader. Percentiles sort a
 * copy, so the runner's per-sample order is left as reported. */
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/mem.h"
#include "packaging/npy.h"

static int bench__cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

uint64_t mf_latency_percentile(const uint64_t *sorted, size_t n, unsigned pct)
{
    if (n == 0 || pct == 0 || pct > 100)
        abort(); /* misuse */
    /* rank = ceil(pct * n / 100), computed exactly in integers. */
    uint64_t rank = ((uint64_t)pct * n + 99) / 100;
    if (rank < 1)
        rank = 1;
    return sorted[rank - 1];
}

void mf_latency_stats_compute(const uint64_t *lat, size_t n, struct mf_latency_stats *out)
{
    struct mf_latency_stats s = {0};
    if (n == 0) {
        *out = s;
        return;
    }
    uint64_t *sorted = mf_xreallocarray(NULL, n, sizeof *sorted);
    memcpy(sorted, lat, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, bench__cmp);
    /* Welford: stable for long runs of similar values. */
    double mean = 0, m2 = 0;
    for (size_t i = 0; i < n; i++) {
        double x = (double)lat[i], d = x - mean;
        mean += d / (double)(i + 1);
        m2 += d * (x - mean);
    }
    s.count = n;
    s.mean_us = mean;
    s.stddev_us = n > 1 ? sqrt(m2 / (double)(n - 1)) : 0;
    s.p50_us = mf_latency_percentile(sorted, n, 50);
    s.p90_us = mf_latency_percentile(sorted, n, 90);
    s.p99_us = mf_latency_percentile(sorted, n, 99);
    s.max_us = sorted[n - 1];
    free(sorted);
    *out = s;
}

static void bench__model(const int64_t *labels, size_t n, const struct mf_runner_result *r,
                         struct mf_bench_model *m)
{
    memset(m, 0, sizeof *m);
    for (size_t i = 0; i < n; i++)
        m->correct += labels[i] >= 0 && (uint64_t)labels[i] == r->classes[i];
    m->accuracy = (double)m->correct / (double)n;
    mf_latency_stats_compute(r->latencies_us, n, &m->latency);
    m->load_us = r->load_us;
    m->first_us = r->first_us;
    m->peak_rss_bytes = r->peak_rss_bytes;
}

static double bench__ratio(uint64_t cand, uint64_t inc)
{
    return (double)(cand ? cand : 1) / (double)(inc ? inc : 1);
}

enum mf_err mf_bench_compute(const int64_t *labels, size_t n,
                             const struct mf_runner_result *candidate,
                             const struct mf_runner_result *incumbent, struct mf_bench *out,
                             struct mf_diag *diag)
{
    struct mf_bench b;
    if (!labels || !candidate || !out || n == 0)
        abort(); /* misuse */
    if (candidate->n != n || !candidate->classes || !candidate->latencies_us)
        return mf_diag_set(diag, MF_ERR_SCHEMA, "candidate",
                           "the run reports %llu samples, the labels hold %zu",
                           (unsigned long long)candidate->n, n);
    if (incumbent && (incumbent->n != n || !incumbent->classes || !incumbent->latencies_us))
        return mf_diag_set(diag, MF_ERR_SCHEMA, "incumbent",
                           "the run reports %llu samples, the labels hold %zu",
                           (unsigned long long)incumbent->n, n);
    memset(&b, 0, sizeof b);
    b.n = n;
    bench__model(labels, n, candidate, &b.candidate);
    if (incumbent) {
        b.has_incumbent = true;
        bench__model(labels, n, incumbent, &b.incumbent);
        for (size_t i = 0; i < n; i++) {
            bool c = labels[i] >= 0 && (uint64_t)labels[i] == candidate->classes[i];
            bool k = labels[i] >= 0 && (uint64_t)labels[i] == incumbent->classes[i];
            if (c && k)
                b.paired.both++;
            else if (c)
                b.paired.only_candidate++;
            else if (k)
                b.paired.only_incumbent++;
            else
                b.paired.neither++;
        }
        b.p50_ratio = bench__ratio(b.candidate.latency.p50_us, b.incumbent.latency.p50_us);
        b.p99_ratio = bench__ratio(b.candidate.latency.p99_us, b.incumbent.latency.p99_us);
    }
    *out = b;
    return MF_OK;
}

enum mf_err mf_bench_load_labels(const char *path, uint64_t expect_n, int64_t **labels, size_t *n,
                                 struct mf_diag *diag)
{
    struct mf_npy h;
    enum mf_err err = mf_npy_load_header(path, &h, diag);
    int64_t *v = NULL;
    int fd = -1;
    if (err != MF_OK)
        return err;
    if (strcmp(h.descr, "<i8") != 0 || h.ndim != 1)
        return mf_diag_set(diag, MF_ERR_SCHEMA, path,
                           "labels must be a 1-D little-endian int64 array ('<i8'), not '%s' "
                           "with %u dimensions",
                           h.descr, h.ndim);
    if (h.shape[0] != expect_n)
        return mf_diag_set(diag, MF_ERR_SCHEMA, path, "%llu labels for %llu evaluation inputs",
                           (unsigned long long)h.shape[0], (unsigned long long)expect_n);
    if (expect_n == 0 || expect_n > MF_RUNNER_MAX_SAMPLES)
        return mf_diag_set(diag, MF_ERR_SCHEMA, path, "%llu labels: must be 1..%d",
                           (unsigned long long)expect_n, MF_RUNNER_MAX_SAMPLES);
    size_t count = (size_t)expect_n, bytes = count * sizeof *v;
    v = mf_xreallocarray(NULL, count, sizeof *v);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err = mf_diag_errno(diag, errno, path, "cannot open");
        goto out;
    }
    for (size_t got = 0; got < bytes;) {
        ssize_t r = pread(fd, (char *)v + got, bytes - got, (off_t)(h.data_offset + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            err = r < 0 ? mf_diag_errno(diag, errno, path, "cannot read")
                        : mf_diag_set(diag, MF_ERR_TRUNCATED, path, "labels end early");
            goto out;
        }
        got += (size_t)r;
    }
    for (size_t i = 0; i < count; i++) {
        /* '<i8' on disk; every supported device is little-endian (npy.c). */
        if (v[i] < 0) {
            err = mf_diag_set(diag, MF_ERR_SCHEMA, path, "label %zu is negative (%lld)", i,
                              (long long)v[i]);
            goto out;
        }
    }
    *labels = v;
    *n = count;
    v = NULL;
out:
    if (fd >= 0)
        close(fd);
    free(v);
    return err;
}
