/* rollout.c — the staged-rollout policy (contract in rollout.h). Pure: the
 * plan, the snapshot, the progress and `now` go in, actions and evidence come
 * out; nothing is read or written anywhere else. One step: drop duplicate and
 * foreign devices, bucket and sort each class (bucket, then id), judge every
 * active class, turn the verdicts into transitions, then assign what the
 * stage (possibly the new one) covers. Every list is built in plan order and
 * bucket order, so the same inputs give the same actions. */
#include "rollout.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/hash.h"
#include "common/mem.h"
#include "common/stats.h"

#define BUCKET_DOMAIN "modelfleet-bucket-v1\n"
#define REPORT_N_MAX  UINT32_MAX /* items per report; more is a bad report */

/* ---- names ---- */

const char *mf_rollout_action_name(enum mf_rollout_action_kind k)
{
    switch (k) {
    case MF_ROLLOUT_ASSIGN:
        return "assign";
    case MF_ROLLOUT_ROLLBACK:
        return "rollback";
    case MF_ROLLOUT_ADVANCE:
        return "advance";
    case MF_ROLLOUT_EXTEND:
        return "extend";
    case MF_ROLLOUT_PAUSE:
        return "pause";
    case MF_ROLLOUT_FAIL_CLASS:
        return "fail_class";
    case MF_ROLLOUT_FAIL:
        return "fail";
    case MF_ROLLOUT_WATCH:
        return "watch";
    case MF_ROLLOUT_COMPLETE:
        return "complete";
    }
    return "unknown";
}

const char *mf_rollout_verdict_name(enum mf_rollout_verdict v)
{
    switch (v) {
    case MF_ROLLOUT_VERDICT_INCONCLUSIVE:
        return "inconclusive";
    case MF_ROLLOUT_VERDICT_PASS:
        return "pass";
    case MF_ROLLOUT_VERDICT_FAIL:
        return "fail";
    }
    return "unknown";
}

const char *mf_rollout_status_name(enum mf_rollout_status s)
{
    switch (s) {
    case MF_ROLLOUT_RUNNING:
        return "running";
    case MF_ROLLOUT_PAUSED:
        return "paused";
    case MF_ROLLOUT_WATCHING:
        return "watching";
    case MF_ROLLOUT_COMPLETED:
        return "completed";
    case MF_ROLLOUT_FAILED:
        return "failed";
    case MF_ROLLOUT_ABORTED:
        return "aborted";
    }
    return "unknown";
}

/* ---- bucketing ---- */

double mf_rollout_bucket(const char *device_id, int64_t rollout_id)
{
    MF_ASSERT(device_id);
    char num[24];
    int len = snprintf(num, sizeof num, "%lld", (long long)rollout_id);
    MF_ASSERT(len > 0 && (size_t)len < sizeof num);
    struct mf_hash h;
    uint8_t md[MF_HASH_BYTES];
    mf_hash_init(&h);
    mf_hash_update(&h, BUCKET_DOMAIN, strlen(BUCKET_DOMAIN));
    mf_hash_update(&h, device_id, strlen(device_id));
    mf_hash_update(&h, "\n", 1);
    mf_hash_update(&h, num, (size_t)len);
    mf_hash_final(&h, md);
    uint64_t v = 0;
    for (int i = 0; i < 7; i++) /* 56 bits, big-endian, then keep the first 53 */
        v = v << 8 | md[i];
    v >>= 3;
    return (double)v / 9007199254740992.0; /* 2^53 */
}

/* ---- the plan ---- */

static bool name_ok(const char *s)
{
    if (!s || !((s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= 'a' && s[0] <= 'z') ||
                (s[0] >= '0' && s[0] <= '9')))
        return false;
    size_t i = 1;
    for (; s[i]; i++) {
        char c = s[i];
        if (i >= 64)
            return false;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static bool unit_ok(double x)
{
    return isfinite(x) && x >= 0 && x <= 1;
}

struct mf_rollout_stage mf_rollout_stage_default(void)
{
    return (struct mf_rollout_stage){
        .percent = 0, .min_devices = 20, .min_reporting = 5, .soak_s = 300, .timeout_s = 3600};
}

void mf_rollout_plan_defaults(struct mf_rollout_plan *p)
{
    static const double percent[] = {1, 10, 50, 100};
    for (size_t i = 0; i < sizeof percent / sizeof *percent; i++) {
        p->stages[i] = mf_rollout_stage_default();
        p->stages[i].percent = percent[i];
    }
    p->n_stages = sizeof percent / sizeof *percent;
    p->gates = (struct mf_rollout_gates){.max_failure_rate = 0.1,
                                         .max_failures = 5,
                                         .max_crashes = 2,
                                         .min_accuracy = 0,
                                         .max_accuracy_drop = 0.015,
                                         .alpha = 0.05,
                                         .max_p50_ratio = 1.5,
                                         .max_p99_ratio = 2.0};
    p->on_fail = MF_ROLLOUT_ON_FAIL_ROLLBACK;
    p->scope = MF_ROLLOUT_PER_CLASS;
    p->watch_s = 0;
}

enum mf_err mf_rollout_plan_check(const struct mf_rollout_plan *p, struct mf_diag *diag)
{
    MF_ASSERT(p);
    char at[64];
    if (p->id < 0)
        return mf_diag_set(diag, MF_ERR_SCHEMA, "id", "must not be negative (got %lld)",
                           (long long)p->id);
    if (!p->model || !p->model[0])
        return mf_diag_set(diag, MF_ERR_SCHEMA, "model", "must be a non-empty model name");
    if (!p->version || !p->version[0])
        return mf_diag_set(diag, MF_ERR_SCHEMA, "version", "must be a non-empty version");
    if (p->n_classes < 1 || p->n_classes > MF_ROLLOUT_CLASSES_MAX || !p->classes)
        return mf_diag_set(diag, MF_ERR_SCHEMA, "classes", "must list 1 to %d hardware classes",
                           MF_ROLLOUT_CLASSES_MAX);
    for (size_t i = 0; i < p->n_classes; i++) {
        snprintf(at, sizeof at, "classes[%zu]", i);
        if (!name_ok(p->classes[i]))
            return mf_diag_set(diag, MF_ERR_SCHEMA, at,
                               "must be 1-64 characters of [A-Za-z0-9._-] starting with a letter "
                               "or digit");
        for (size_t j = 0; j < i; j++)
            if (strcmp(p->classes[i], p->classes[j]) == 0)
                return mf_diag_set(diag, MF_ERR_SCHEMA, at, "'%s' is listed twice (also at %zu)",
                                   p->classes[i], j);
    }
    if (p->n_stages < 1 || p->n_stages > MF_ROLLOUT_STAGES_MAX)
        return mf_diag_set(diag, MF_ERR_SCHEMA, "stages", "must have 1 to %d stages",
                           MF_ROLLOUT_STAGES_MAX);
    for (size_t i = 0; i < p->n_stages; i++) {
        const struct mf_rollout_stage *s = &p->stages[i];
        if (!isfinite(s->percent) || s->percent <= 0 || s->percent > 100) {
            snprintf(at, sizeof at, "stages[%zu].percent", i);
            return mf_diag_set(diag, MF_ERR_SCHEMA, at, "must be in (0, 100] (got %g)", s->percent);
        }
        if (i > 0 && s->percent <= p->stages[i - 1].percent) {
            snprintf(at, sizeof at, "stages[%zu].percent", i);
            return mf_diag_set(diag, MF_ERR_SCHEMA, at,
                               "must be above the previous stage's %g (got %g): stages are "
                               "cumulative",
                               p->stages[i - 1].percent, s->percent);
        }
        if (i == p->n_stages - 1 && s->percent != 100) {
            snprintf(at, sizeof at, "stages[%zu].percent", i);
            return mf_diag_set(diag, MF_ERR_SCHEMA, at,
                               "the last stage must cover 100 percent (got %g)", s->percent);
        }
        if (s->min_reporting < 1) {
            snprintf(at, sizeof at, "stages[%zu].min_reporting", i);
            return mf_diag_set(diag, MF_ERR_SCHEMA, at,
                               "must be at least 1: a stage never passes on no data");
        }
        if (s->soak_s < 0) {
            snprintf(at, sizeof at, "stages[%zu].soak_s", i);
            return mf_diag_set(diag, MF_ERR_SCHEMA, at, "must not be negative (got %lld)",
                               (long long)s->soak_s);
        }
        if (s->timeout_s <= 0 || s->timeout_s < s->soak_s) {
            snprintf(at, sizeof at, "stages[%zu].timeout_s", i);
            return mf_diag_set(diag, MF_ERR_SCHEMA, at,
                               "must be positive and at least soak_s %lld (got %lld)",
                               (long long)s->soak_s, (long long)s->timeout_s);
        }
    }
    const struct mf_rollout_gates *g = &p->gates;
    if (!unit_ok(g->max_failure_rate))
        return mf_diag_set(diag, MF_ERR_SCHEMA, "gates.max_failure_rate",
                           "must be in [0, 1] (got %g)", g->max_failure_rate);
    if (!unit_ok(g->min_accuracy))
        return mf_diag_set(diag, MF_ERR_SCHEMA, "gates.min_accuracy", "must be in [0, 1] (got %g)",
                           g->min_accuracy);
    if (!unit_ok(g->max_accuracy_drop))
        return mf_diag_set(diag, MF_ERR_SCHEMA, "gates.max_accuracy_drop",
                           "must be in [0, 1] (got %g)", g->max_accuracy_drop);
    if (!isfinite(g->alpha) || g->alpha <= 0 || g->alpha > 0.5)
        return mf_diag_set(diag, MF_ERR_SCHEMA, "gates.alpha", "must be in (0, 0.5] (got %g)",
                           g->alpha);
    if (!isfinite(g->max_p50_ratio) || g->max_p50_ratio < 0)
        return mf_diag_set(diag, MF_ERR_SCHEMA, "gates.max_p50_ratio",
                           "must be 0 (none) or a positive ratio (got %g)", g->max_p50_ratio);
    if (!isfinite(g->max_p99_ratio) || g->max_p99_ratio < 0)
        return mf_diag_set(diag, MF_ERR_SCHEMA, "gates.max_p99_ratio",
                           "must be 0 (none) or a positive ratio (got %g)", g->max_p99_ratio);
    if (p->on_fail != MF_ROLLOUT_ON_FAIL_ROLLBACK && p->on_fail != MF_ROLLOUT_ON_FAIL_PAUSE)
        return mf_diag_set(diag, MF_ERR_SCHEMA, "on_fail", "must be rollback or pause");
    if (p->scope != MF_ROLLOUT_PER_CLASS && p->scope != MF_ROLLOUT_WHOLE)
        return mf_diag_set(diag, MF_ERR_SCHEMA, "scope", "must be per_class or whole");
    if (p->watch_s < 0)
        return mf_diag_set(diag, MF_ERR_SCHEMA, "watch_s", "must not be negative (got %lld)",
                           (long long)p->watch_s);
    return MF_OK;
}

/* ---- the gate ---- */

static uint64_t add_sat(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* A report whose figures disagree with themselves is not evidence. */
static bool report_ok(const struct mf_rollout_report *r)
{
    if (r->n < 1 || r->n > REPORT_N_MAX || r->correct > r->n)
        return false;
    if (!r->has_incumbent)
        return true;
    return r->both <= r->n && r->only_candidate <= r->n && r->only_incumbent <= r->n &&
           r->neither <= r->n &&
           r->both + r->only_candidate + r->only_incumbent + r->neither == r->n &&
           r->both + r->only_candidate == r->correct;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, size_t n)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Device pointers with their input position: sorting by (id, position)
 * keeps the first entry of each id first. */
struct dref {
    const struct mf_rollout_device *d;
    size_t pos;
    double bucket;
    size_t cls;
};

static int cmp_id_pos(const void *a, const void *b)
{
    const struct dref *x = a, *y = b;
    int c = strcmp(x->d->id, y->d->id);
    if (c)
        return c;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static int cmp_class_bucket_id(const void *a, const void *b)
{
    const struct dref *x = a, *y = b;
    if (x->cls != y->cls)
        return x->cls < y->cls ? -1 : 1;
    if (x->bucket != y->bucket)
        return x->bucket < y->bucket ? -1 : 1;
    return strcmp(x->d->id, y->d->id);
}

static void reason_set(char *dst, const char *fmt, ...) MF_PRINTF(2, 3);
static void reason_set(char *dst, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, MF_ROLLOUT_REASON_MAX, fmt, ap);
    va_end(ap);
}

typedef unsigned long long ull;

void mf_rollout_judge(const struct mf_rollout_plan *plan, size_t stage, const char *hw_class,
                      const struct mf_rollout_device *const *devices, size_t n_devices,
                      int64_t stage_age_s, struct mf_rollout_evidence *out)
{
    MF_ASSERT(plan && hw_class && out && (devices || n_devices == 0));
    MF_ASSERT(stage < plan->n_stages && stage < MF_ROLLOUT_STAGES_MAX);
    const struct mf_rollout_gates *g = &plan->gates;
    const struct mf_rollout_stage *st = &plan->stages[stage];
    MF_ASSERT(g->alpha > 0 && g->alpha <= 0.5);

    struct mf_rollout_evidence e;
    memset(&e, 0, sizeof e);
    e.hw_class = hw_class;
    e.stage = stage;
    e.p_worse = 1;

    /* This class's devices, each id once (its first entry). */
    struct dref *refs = mf_xcalloc(n_devices ? n_devices : 1, sizeof *refs);
    size_t n_refs = 0;
    for (size_t i = 0; i < n_devices; i++) {
        const struct mf_rollout_device *d = devices[i];
        MF_ASSERT(d && d->id);
        if (d->hw_class && strcmp(d->hw_class, hw_class) == 0)
            refs[n_refs++] = (struct dref){.d = d, .pos = i};
    }
    qsort(refs, n_refs, sizeof *refs, cmp_id_pos);
    double *p50 = mf_xcalloc(n_refs ? n_refs : 1, sizeof *p50);
    double *p99 = mf_xcalloc(n_refs ? n_refs : 1, sizeof *p99);
    size_t n_p50 = 0, n_p99 = 0;
    uint64_t pn = 0; /* pooled paired items (devices with an incumbent) */
    for (size_t i = 0; i < n_refs; i++) {
        if (i > 0 && strcmp(refs[i].d->id, refs[i - 1].d->id) == 0)
            continue;
        const struct mf_rollout_device *d = refs[i].d;
        e.targeted++;
        if (d->outcome == MF_ROLLOUT_DEV_NONE)
            continue;
        e.assigned++;
        if (d->outcome == MF_ROLLOUT_DEV_ACTIVE)
            e.active++;
        else if (d->outcome == MF_ROLLOUT_DEV_REFUSED)
            e.refused++;
        else if (d->outcome == MF_ROLLOUT_DEV_FAILED)
            e.failed++;
        e.crashes = add_sat(e.crashes, d->crashes);
        if (!d->has_report || !report_ok(&d->report))
            continue;
        const struct mf_rollout_report *r = &d->report;
        e.reporting++;
        e.n = add_sat(e.n, r->n);
        e.correct = add_sat(e.correct, r->correct);
        if (!r->has_incumbent)
            continue;
        e.with_incumbent++;
        e.both = add_sat(e.both, r->both);
        e.only_candidate = add_sat(e.only_candidate, r->only_candidate);
        e.only_incumbent = add_sat(e.only_incumbent, r->only_incumbent);
        e.neither = add_sat(e.neither, r->neither);
        pn = add_sat(pn, r->n);
        if (isfinite(r->p50_ratio) && r->p50_ratio > 0)
            p50[n_p50++] = r->p50_ratio;
        if (isfinite(r->p99_ratio) && r->p99_ratio > 0)
            p99[n_p99++] = r->p99_ratio;
    }
    e.p50_ratio = median(p50, n_p50);
    e.p99_ratio = median(p99, n_p99);
    free(p50);
    free(p99);
    free(refs);

    e.accuracy = e.n ? (double)e.correct / (double)e.n : 0;
    e.drop = pn ? ((double)e.only_incumbent - (double)e.only_candidate) / (double)pn : 0;
    /* The mean table: what one typical device saw. */
    uint64_t k = e.with_incumbent, mb = 0, mc = 0, mn = 0;
    e.drop_upper = 1;
    if (k > 0) {
        uint64_t both = (e.both + k / 2) / k, neither = (e.neither + k / 2) / k;
        mb = (e.only_candidate + k / 2) / k;
        mc = (e.only_incumbent + k / 2) / k;
        mn = both + mb + mc + neither;
        if (mn > 0) {
            double n = (double)mn, b = (double)mb, c = (double)mc;
            double d = (c - b) / n;
            double var = (b + c - (c - b) * (c - b) / n) / (n * n);
            double z = mf_stats_normal_quantile(1 - g->alpha);
            e.drop_upper = d + z * sqrt(var > 0 ? var : 0) + 1 / n;
        }
        e.p_worse = mb + mc ? mf_stats_binom_tail_half(mb + mc, mc) : 1;
    }

    uint64_t bad = add_sat(e.failed, e.refused);
    double bad_rate = e.assigned ? (double)bad / (double)e.assigned : 0;
    bool enough = e.reporting >= st->min_reporting;
    if (bad > g->max_failures) {
        e.verdict = MF_ROLLOUT_VERDICT_FAIL;
        reason_set(e.reason,
                   "%llu failed installs and refusals (%llu failed, %llu refused of %llu "
                   "assigned) exceed the limit of %llu",
                   (ull)bad, (ull)e.failed, (ull)e.refused, (ull)e.assigned, (ull)g->max_failures);
    } else if (e.assigned >= 1 && bad_rate > g->max_failure_rate) {
        e.verdict = MF_ROLLOUT_VERDICT_FAIL;
        reason_set(e.reason,
                   "failure rate %.4f (%llu failed, %llu refused of %llu assigned) exceeds the "
                   "limit %.4f",
                   bad_rate, (ull)e.failed, (ull)e.refused, (ull)e.assigned, g->max_failure_rate);
    } else if (e.crashes > g->max_crashes) {
        e.verdict = MF_ROLLOUT_VERDICT_FAIL;
        reason_set(e.reason,
                   "%llu runner crashes on %llu assigned devices exceed the limit of %llu",
                   (ull)e.crashes, (ull)e.assigned, (ull)g->max_crashes);
    } else if (k >= 1 && e.drop > g->max_accuracy_drop && e.p_worse < g->alpha) {
        e.verdict = MF_ROLLOUT_VERDICT_FAIL;
        reason_set(e.reason,
                   "accuracy drop %.4f (pooled over %llu devices: only the incumbent right %llu "
                   "times, only the candidate %llu, of %llu; per device %llu vs %llu of %llu) "
                   "exceeds the margin %.4f, p = %.3g < alpha %.3g",
                   e.drop, (ull)k, (ull)e.only_incumbent, (ull)e.only_candidate, (ull)pn, (ull)mc,
                   (ull)mb, (ull)mn, g->max_accuracy_drop, e.p_worse, g->alpha);
    } else if (enough && g->min_accuracy > 0 && e.accuracy < g->min_accuracy) {
        e.verdict = MF_ROLLOUT_VERDICT_FAIL;
        reason_set(e.reason,
                   "pooled accuracy %.4f (%llu of %llu right over %llu devices) is below the "
                   "floor %.4f",
                   e.accuracy, (ull)e.correct, (ull)e.n, (ull)e.reporting, g->min_accuracy);
    } else if (enough && g->max_p50_ratio > 0 && e.p50_ratio > g->max_p50_ratio) {
        e.verdict = MF_ROLLOUT_VERDICT_FAIL;
        reason_set(e.reason,
                   "median p50 latency ratio %.3f over %zu devices exceeds the limit %.3f",
                   e.p50_ratio, n_p50, g->max_p50_ratio);
    } else if (enough && g->max_p99_ratio > 0 && e.p99_ratio > g->max_p99_ratio) {
        e.verdict = MF_ROLLOUT_VERDICT_FAIL;
        reason_set(e.reason,
                   "median p99 latency ratio %.3f over %zu devices exceeds the limit %.3f",
                   e.p99_ratio, n_p99, g->max_p99_ratio);
    } else if (!enough) {
        e.verdict = MF_ROLLOUT_VERDICT_INCONCLUSIVE;
        reason_set(e.reason,
                   "%llu of the %llu reports needed (%llu devices covered, %llu assigned, %llu "
                   "active)",
                   (ull)e.reporting, (ull)st->min_reporting, (ull)e.targeted, (ull)e.assigned,
                   (ull)e.active);
    } else if (k >= 1 && e.drop_upper > g->max_accuracy_drop) {
        e.verdict = MF_ROLLOUT_VERDICT_INCONCLUSIVE;
        reason_set(e.reason,
                   "accuracy drop upper bound %.4f exceeds the margin %.4f: non-inferiority not "
                   "shown yet (drop %.4f over %llu devices, per device %llu vs %llu of %llu, "
                   "p = %.3g)",
                   e.drop_upper, g->max_accuracy_drop, e.drop, (ull)k, (ull)mc, (ull)mb, (ull)mn,
                   e.p_worse);
    } else if (stage_age_s < st->soak_s) {
        e.verdict = MF_ROLLOUT_VERDICT_INCONCLUSIVE;
        reason_set(e.reason, "soaking: %lld s of %lld s (every signal within its limit so far)",
                   (long long)stage_age_s, (long long)st->soak_s);
    } else if (k >= 1) {
        e.verdict = MF_ROLLOUT_VERDICT_PASS;
        reason_set(e.reason,
                   "%llu devices reported (%llu needed); accuracy drop %.4f, upper bound %.4f "
                   "within the margin %.4f; soaked %lld s of %lld s",
                   (ull)e.reporting, (ull)st->min_reporting, e.drop, e.drop_upper,
                   g->max_accuracy_drop, (long long)stage_age_s, (long long)st->soak_s);
    } else {
        e.verdict = MF_ROLLOUT_VERDICT_PASS;
        reason_set(e.reason,
                   "%llu devices reported (%llu needed), none with an incumbent to compare "
                   "against; pooled accuracy %.4f; soaked %lld s of %lld s",
                   (ull)e.reporting, (ull)st->min_reporting, e.accuracy, (long long)stage_age_s,
                   (long long)st->soak_s);
    }
    *out = e;
}

/* ---- the step ---- */

struct acts {
    struct mf_rollout_action *v;
    size_t n, cap;
};

static struct mf_rollout_action *act_push(struct acts *a, enum mf_rollout_action_kind kind,
                                          const char *hw_class, size_t stage, int evidence)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 16;
        a->v = mf_xreallocarray(a->v, a->cap, sizeof *a->v);
    }
    struct mf_rollout_action *x = &a->v[a->n++];
    memset(x, 0, sizeof *x);
    x->kind = kind;
    x->hw_class = hw_class;
    x->stage = stage;
    x->evidence = evidence;
    return x;
}

static bool rollback_due(const struct mf_rollout_device *d)
{
    return (d->outcome == MF_ROLLOUT_DEV_ASSIGNED || d->outcome == MF_ROLLOUT_DEV_ACTIVE ||
            d->outcome == MF_ROLLOUT_DEV_REFUSED || d->outcome == MF_ROLLOUT_DEV_FAILED) &&
           d->previous_version && d->previous_version[0];
}

/* ROLLBACK for every device of class c that took the candidate. */
static void rollback_class(struct acts *a, const struct mf_rollout_plan *plan,
                           const struct dref *dev, size_t from, size_t to, size_t stage,
                           int evidence, const char *why)
{
    for (size_t i = from; i < to; i++) {
        const struct mf_rollout_device *d = dev[i].d;
        if (!rollback_due(d))
            continue;
        struct mf_rollout_action *x =
            act_push(a, MF_ROLLOUT_ROLLBACK, plan->classes[dev[i].cls], stage, evidence);
        x->device = d->id;
        x->version = d->previous_version;
        reason_set(x->reason, "%s: back from %s %s to %s", why, plan->model, plan->version,
                   d->previous_version);
    }
}

/* How many of a class's devices (sorted by bucket) stage s covers. */
static size_t covered(const struct mf_rollout_stage *s, const struct dref *dev, size_t n)
{
    double limit = s->percent / 100;
    size_t c = 0;
    while (c < n && (s->percent >= 100 || dev[c].bucket < limit))
        c++;
    if (c < s->min_devices)
        c = s->min_devices < n ? (size_t)s->min_devices : n;
    return c;
}

void mf_rollout_step(const struct mf_rollout_plan *plan, const struct mf_rollout_device *devices,
                     size_t n_devices, const struct mf_rollout_progress *progress, int64_t now,
                     struct mf_rollout_result *out)
{
    MF_ASSERT(plan && progress && out && (devices || n_devices == 0));
    MF_ASSERT(plan->n_classes >= 1 && plan->n_classes <= MF_ROLLOUT_CLASSES_MAX && plan->classes);
    MF_ASSERT(plan->n_stages >= 1 && plan->n_stages <= MF_ROLLOUT_STAGES_MAX);
    MF_ASSERT(progress->stage < plan->n_stages);
    const size_t nc = plan->n_classes;
    struct acts acts = {0};
    struct mf_rollout_progress next = *progress;
    struct mf_rollout_evidence *ev = mf_xcalloc(nc, sizeof *ev);
    size_t n_ev = 0;
    int ev_of[MF_ROLLOUT_CLASSES_MAX] = {0};

    /* The snapshot: each id once (its first entry), plan classes only, then
     * by class, bucket, id. */
    struct dref *dev = mf_xcalloc(n_devices ? n_devices : 1, sizeof *dev);
    size_t n = 0;
    for (size_t i = 0; i < n_devices; i++) {
        MF_ASSERT(devices[i].id);
        dev[n++] = (struct dref){.d = &devices[i], .pos = i};
    }
    qsort(dev, n, sizeof *dev, cmp_id_pos);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && strcmp(dev[i].d->id, dev[i - 1].d->id) == 0)
            continue;
        const char *hc = dev[i].d->hw_class;
        size_t c = nc;
        for (size_t j = 0; hc && j < nc; j++)
            if (strcmp(plan->classes[j], hc) == 0) {
                c = j;
                break;
            }
        if (c == nc)
            continue;
        dev[kept] = dev[i];
        dev[kept].cls = c;
        dev[kept].bucket = mf_rollout_bucket(dev[i].d->id, plan->id);
        kept++;
    }
    n = kept;
    qsort(dev, n, sizeof *dev, cmp_class_bucket_id);
    size_t start[MF_ROLLOUT_CLASSES_MAX + 1];
    for (size_t c = 0, i = 0; c <= nc; c++) {
        while (i < n && dev[i].cls < c)
            i++;
        start[c] = i;
    }

    enum mf_rollout_status st = progress->status;
    bool rollback = plan->on_fail == MF_ROLLOUT_ON_FAIL_ROLLBACK;
    if (st == MF_ROLLOUT_FAILED) {
        /* Converge: whatever took the candidate goes back, every step. */
        if (rollback)
            for (size_t c = 0; c < nc; c++)
                rollback_class(&acts, plan, dev, start[c], start[c + 1], progress->stage, -1,
                               "the rollout failed");
        goto out;
    }
    if (st != MF_ROLLOUT_RUNNING && st != MF_ROLLOUT_WATCHING)
        goto out;

    size_t stage = progress->stage;
    const struct mf_rollout_stage *sp = &plan->stages[stage];
    int64_t age = now - progress->stage_started;
    bool watching = st == MF_ROLLOUT_WATCHING;

    /* Classes that failed earlier: re-send rollbacks that have not landed. */
    if (rollback)
        for (size_t c = 0; c < nc; c++)
            if (progress->classes[c] == MF_ROLLOUT_CLASS_FAILED)
                rollback_class(&acts, plan, dev, start[c], start[c + 1], stage, -1,
                               "its class failed");

    /* Judge every active class on what the stage covers plus anything that
     * already took the candidate. */
    const struct mf_rollout_device **pick = mf_xcalloc(n ? n : 1, sizeof *pick);
    size_t n_fail = 0, n_pass = 0, n_inconc = 0;
    for (size_t c = 0; c < nc; c++) {
        ev_of[c] = -1;
        if (progress->classes[c] != MF_ROLLOUT_CLASS_ACTIVE)
            continue;
        size_t cn = start[c + 1] - start[c], cov = covered(sp, dev + start[c], cn), np = 0;
        for (size_t i = 0; i < cn; i++)
            if (i < cov || dev[start[c] + i].d->outcome != MF_ROLLOUT_DEV_NONE)
                pick[np++] = dev[start[c] + i].d;
        ev_of[c] = (int)n_ev;
        mf_rollout_judge(plan, stage, plan->classes[c], pick, np, age, &ev[n_ev++]);
        switch (ev[ev_of[c]].verdict) {
        case MF_ROLLOUT_VERDICT_FAIL:
            n_fail++;
            break;
        case MF_ROLLOUT_VERDICT_PASS:
            n_pass++;
            break;
        case MF_ROLLOUT_VERDICT_INCONCLUSIVE:
            n_inconc++;
            break;
        }
    }
    free(pick);

    /* Failures first. */
    size_t n_active = n_fail + n_pass + n_inconc;
    bool whole = plan->scope == MF_ROLLOUT_WHOLE;
    if (n_active == 0) { /* running with no class left to run: converge */
        struct mf_rollout_action *x = act_push(&acts, MF_ROLLOUT_FAIL, NULL, stage, -1);
        reason_set(x->reason, "no hardware class is left running");
        next.status = MF_ROLLOUT_FAILED;
        goto out;
    }
    if (n_fail > 0) {
        for (size_t c = 0; c < nc; c++) {
            if (ev_of[c] < 0 || ev[ev_of[c]].verdict != MF_ROLLOUT_VERDICT_FAIL)
                continue;
            struct mf_rollout_action *x =
                act_push(&acts, MF_ROLLOUT_FAIL_CLASS, plan->classes[c], stage, ev_of[c]);
            reason_set(x->reason, "%s failed stage %zu/%zu (%g%%)%s: %s", plan->classes[c],
                       stage + 1, plan->n_stages, sp->percent, watching ? " while watching" : "",
                       ev[ev_of[c]].reason);
            next.classes[c] = MF_ROLLOUT_CLASS_FAILED;
            if (rollback && !whole)
                rollback_class(&acts, plan, dev, start[c], start[c + 1], stage, ev_of[c],
                               "its class failed the gate");
        }
        size_t first = 0;
        while (ev_of[first] < 0 || ev[ev_of[first]].verdict != MF_ROLLOUT_VERDICT_FAIL)
            first++;
        const struct mf_rollout_evidence *fe = &ev[ev_of[first]];
        if (n_fail == n_active || (whole && rollback)) {
            struct mf_rollout_action *x =
                act_push(&acts, MF_ROLLOUT_FAIL, NULL, stage, ev_of[first]);
            if (n_fail == n_active)
                reason_set(x->reason, "every class still running failed: %s: %s", fe->hw_class,
                           fe->reason);
            else
                reason_set(x->reason, "%s failed and the plan's scope is whole: %s", fe->hw_class,
                           fe->reason);
            next.status = MF_ROLLOUT_FAILED;
            if (whole && rollback)
                for (size_t c = 0; c < nc; c++)
                    if (ev_of[c] >= 0)
                        rollback_class(&acts, plan, dev, start[c], start[c + 1], stage, ev_of[c],
                                       "the rollout failed");
            goto out;
        }
        if (!rollback) {
            struct mf_rollout_action *x =
                act_push(&acts, MF_ROLLOUT_PAUSE, NULL, stage, ev_of[first]);
            reason_set(x->reason, "paused for a person (on_fail = pause): %s: %s", fe->hw_class,
                       fe->reason);
            next.status = MF_ROLLOUT_PAUSED;
            goto out;
        }
    }

    if (watching) {
        if (now - progress->watch_started >= plan->watch_s) {
            struct mf_rollout_action *x = act_push(&acts, MF_ROLLOUT_COMPLETE, NULL, stage, -1);
            char failed[160] = "";
            size_t n_failed = 0, used = 0;
            for (size_t c = 0; c < nc; c++)
                if (next.classes[c] == MF_ROLLOUT_CLASS_FAILED && used < sizeof failed) {
                    int w = snprintf(failed + used, sizeof failed - used, "%s%s",
                                     n_failed++ ? ", " : "", plan->classes[c]);
                    used += w > 0 ? (size_t)w : 0;
                }
            if (n_failed > 0)
                reason_set(x->reason,
                           "watched %lld s (watch_s %lld) without a failure: completed on %zu of "
                           "%zu classes (failed earlier: %s)",
                           (long long)(now - progress->watch_started), (long long)plan->watch_s,
                           nc - n_failed, nc, failed);
            else
                reason_set(x->reason, "watched %lld s (watch_s %lld) without a failure",
                           (long long)(now - progress->watch_started), (long long)plan->watch_s);
            next.status = MF_ROLLOUT_COMPLETED;
            for (size_t c = 0; c < nc; c++)
                if (next.classes[c] == MF_ROLLOUT_CLASS_ACTIVE)
                    next.classes[c] = MF_ROLLOUT_CLASS_DONE;
            goto out;
        }
    } else if (n_inconc > 0) {
        if (age > sp->timeout_s) {
            size_t c = 0;
            while (ev_of[c] < 0 || ev[ev_of[c]].verdict != MF_ROLLOUT_VERDICT_INCONCLUSIVE)
                c++;
            struct mf_rollout_action *x = act_push(&acts, MF_ROLLOUT_PAUSE, NULL, stage, ev_of[c]);
            reason_set(
                x->reason,
                "stage %zu/%zu (%g%%) still inconclusive after %lld s (timeout %lld s): %s: %s",
                stage + 1, plan->n_stages, sp->percent, (long long)age, (long long)sp->timeout_s,
                plan->classes[c], ev[ev_of[c]].reason);
            next.status = MF_ROLLOUT_PAUSED;
            goto out;
        }
        for (size_t c = 0; c < nc; c++) {
            if (ev_of[c] < 0 || ev[ev_of[c]].verdict != MF_ROLLOUT_VERDICT_INCONCLUSIVE)
                continue;
            struct mf_rollout_action *x =
                act_push(&acts, MF_ROLLOUT_EXTEND, plan->classes[c], stage, ev_of[c]);
            reason_set(x->reason, "stage %zu/%zu (%g%%) goes on for %s: %s", stage + 1,
                       plan->n_stages, sp->percent, plan->classes[c], ev[ev_of[c]].reason);
        }
    } else if (n_pass > 0) { /* every class still active passed */
        if (stage + 1 < plan->n_stages) {
            struct mf_rollout_action *x = act_push(&acts, MF_ROLLOUT_ADVANCE, NULL, stage + 1, -1);
            reason_set(
                x->reason, "every active class passed stage %zu/%zu (%g%%): on to stage %zu (%g%%)",
                stage + 1, plan->n_stages, sp->percent, stage + 2, plan->stages[stage + 1].percent);
            next.stage = stage + 1;
            next.stage_started = now;
            sp = &plan->stages[next.stage];
        } else {
            struct mf_rollout_action *x = act_push(&acts, MF_ROLLOUT_WATCH, NULL, stage, -1);
            reason_set(x->reason, "every active class passed the last stage: watching %lld s",
                       (long long)plan->watch_s);
            next.status = MF_ROLLOUT_WATCHING;
            next.watch_started = now;
        }
    }

    /* Assign what the (possibly new) stage covers in every active class. */
    for (size_t c = 0; c < nc; c++) {
        if (next.classes[c] != MF_ROLLOUT_CLASS_ACTIVE)
            continue;
        size_t cn = start[c + 1] - start[c], cov = covered(sp, dev + start[c], cn);
        for (size_t i = 0; i < cov; i++) {
            const struct dref *r = &dev[start[c] + i];
            if (r->d->outcome != MF_ROLLOUT_DEV_NONE)
                continue;
            struct mf_rollout_action *x =
                act_push(&acts, MF_ROLLOUT_ASSIGN, plan->classes[c], next.stage, -1);
            x->device = r->d->id;
            x->version = plan->version;
            if (sp->percent >= 100 || r->bucket < sp->percent / 100)
                reason_set(x->reason, "stage %zu/%zu (%g%%) covers bucket %.6f", next.stage + 1,
                           plan->n_stages, sp->percent, r->bucket);
            else
                reason_set(x->reason,
                           "stage %zu/%zu keeps at least %llu devices of %s: bucket %.6f",
                           next.stage + 1, plan->n_stages, (ull)sp->min_devices, plan->classes[c],
                           r->bucket);
        }
    }

out:
    free(dev);
    out->actions = acts.v;
    out->n_actions = acts.n;
    out->evidence = ev;
    out->n_evidence = n_ev;
    out->next = next;
}

void mf_rollout_result_free(struct mf_rollout_result *r)
{
    if (!r)
        return;
    free(r->actions);
    free(r->evidence);
    r->actions = NULL;
    r->evidence = NULL;
    r->n_actions = r->n_evidence = 0;
}
