/* decision.c — mf-bench-decision, measurement 5 of issue 6: how well do the
 * rollout gates decide? Many simulated rollouts per scenario (a good version,
 * accuracy regressions of 1, 2 and 5 points, latency regressions of +10% and
 * +50%) drive the real policy, mf_rollout_step, in a loop with a simulated
 * clock exactly as the server's controller does: each step sees the outcomes
 * and reports of the devices it assigned once their simulated delays have
 * passed, its actions are applied, its progress is carried to the next step.
 * Gate variants (the defaults, baselines a user might write, the previous defaults) run
 * on the same simulated worlds (common random numbers), so their rates are
 * paired. A benchmark, never a pass/fail test: the exit code only says
 * whether it ran. The noise model is described in docs/performance.md. */
#define _GNU_SOURCE

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/hash.h"
#include "common/mem.h"
#include "rollout/rollout.h"

#define ID_LEN      24
#define N_STAGES    4
#define CLASSES_MAX 8
#define JOBS_MAX    16
#define HORIZON_S   (7 * 24 * 3600) /* a simulated rollout never runs longer */

/* ---- random numbers: xoshiro256**, seeded by splitmix64 ---- */

struct rng {
    uint64_t s[4];
};

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void rng_seed(struct rng *r, uint64_t a, uint64_t b, uint64_t c)
{
    uint64_t x = a * 0x9e3779b97f4a7c15ULL ^ splitmix(&b) ^ (c << 17 | c >> 47);
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix(&x);
}

static uint64_t rng_next(struct rng *r)
{
    uint64_t *s = r->s;
    uint64_t v = s[1] * 5, res = (v << 7 | v >> 57) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = s[3] << 45 | s[3] >> 19;
    return res;
}

static double rng_unif(struct rng *r) /* [0, 1) */
{
    return (double)(rng_next(r) >> 11) * 0x1.0p-53;
}

static size_t rng_below(struct rng *r, size_t n)
{
    return (size_t)(rng_unif(r) * (double)n);
}

static double rng_normal(struct rng *r)
{
    double u = 1.0 - rng_unif(r), v = rng_unif(r);
    return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

/* Binomial(n, p) by inversion; fine for the small n * p drawn here. */
static uint64_t rng_binom(struct rng *r, uint64_t n, double p)
{
    if (p <= 0 || n == 0)
        return 0;
    if (p >= 1)
        return n;
    double q = 1 - p, f = pow(q, (double)n), u = rng_unif(r), cum = f;
    uint64_t k = 0;
    while (u > cum && k < n) {
        f *= (double)(n - k) / (double)(k + 1) * p / q;
        k++;
        cum += f;
        if (f < 1e-300 && (double)k > (double)n * p)
            break;
    }
    return k;
}

/* ---- what is simulated ---- */

struct model { /* the noise model; see usage() */
    size_t classes, per_class;
    bool sampled;      /* the evaluation set as a random sample of the population */
    double acc;        /* the incumbent's accuracy */
    double churn;      /* items on which the candidate differs, both ways, no net change */
    double class_flip; /* per class and model: share of items a runtime flips */
    double dev_flip;   /* per device and model: share of items numeric noise flips */
    double p_fail;     /* install / download / verify failure (permanent) */
    double p_crash;    /* runner crash while benchmarking (a failure and a crash) */
    double p_offline;  /* offline when the rollout starts ... */
    double back_mean;  /* ... back after an exponential time, mean seconds */
    double delay_med, delay_sigma;   /* assign -> report + outcome, lognormal seconds */
    double sig50, sig99;             /* per device lognormal sigma of the latency ratios */
    double p_throttle, sig_throttle; /* a device throttled during the candidate's run */
    int64_t tick;                    /* controller interval, seconds */
};

struct scenario {
    const char *key, *what;
    double drop;    /* injected accuracy regression, fraction */
    double latency; /* true candidate / incumbent latency ratio, p50 and p99 */
};

static const struct scenario scenarios[] = {
    {"good", "good version (no regression)", 0, 1.0}, {"acc1", "accuracy -1 point", 0.01, 1.0},
    {"acc2", "accuracy -2 points", 0.02, 1.0},        {"acc5", "accuracy -5 points", 0.05, 1.0},
    {"lat10", "latency +10% (p50, p99)", 0, 1.10},    {"lat50", "latency +50% (p50, p99)", 0, 1.50},
};
#define N_SCEN (sizeof scenarios / sizeof *scenarios)

/* One gate configuration: the plan the controller runs, the package's own
 * acceptance threshold the agents apply, and (for the naive baseline) a
 * pooled-drop rule applied on top of a plan whose accuracy test is off. */
struct variant {
    const char *key, *what;
    size_t n_items;
    double pkg_drop; /* the package's max_accuracy_drop (agent gate); 1 = off */
    double naive;    /* > 0: fail a class when its pooled drop exceeds this */
    bool accuracy_only;
    struct mf_rollout_stage stages[N_STAGES];
    struct mf_rollout_gates gates;
};

/* The defaults every plan starts from (mf_rollout_plan_defaults). */
static void variant_defaults(struct variant *v)
{
    struct mf_rollout_plan p = {0};
    mf_rollout_plan_defaults(&p);
    for (size_t i = 0; i < N_STAGES; i++)
        v->stages[i] = p.stages[i];
    v->gates = p.gates;
    v->pkg_drop = 0.01; /* `modelfleet pack --max-accuracy-drop` default */
    v->naive = 0;
    v->n_items = 1000;
}

/* The defaults before this benchmark chose them (min_devices 1,
 * min_reporting 1 per stage, margin 0.01): the "before" of
 * docs/performance.md's decision-quality rows. */
static void variant_previous(struct variant *v)
{
    variant_defaults(v);
    for (size_t i = 0; i < N_STAGES; i++) {
        v->stages[i].min_devices = 1;
        v->stages[i].min_reporting = 1;
    }
    v->gates.max_accuracy_drop = 0.01;
}

/* ---- the world of one simulated rollout (shared by every variant) ---- */

enum dev_kind { DEV_OK = 0, DEV_FAIL, DEV_CRASH };

struct world {
    size_t n_dev, n_items;
    char *ids;       /* n_dev * ID_LEN */
    uint8_t *cls;    /* class of each device */
    double *bucket;  /* mf_rollout_bucket(id, rollout id) */
    size_t *order;   /* per class, devices by bucket: order[c * per_class + rank] */
    uint8_t *kind;   /* enum dev_kind */
    double *ready;   /* seconds after assignment until its outcome arrives (if online) */
    double *back_at; /* offline until this simulated time (0: online) */
    struct mf_rollout_report *rep;
    /* scratch for the item tables */
    uint8_t *inc, *cand, *cinc, *ccand;
    size_t *idx;
};

static const char *class_name(size_t c)
{
    static const char *const names[CLASSES_MAX] = {"jetson-orin", "rpi5",  "x86-ipc", "rpi4",
                                                   "jetson-nano", "imx8m", "rk3588",  "hailo8"};
    return names[c];
}

static void world_init(struct world *w, const struct model *m, size_t n_items)
{
    memset(w, 0, sizeof *w);
    w->n_dev = m->classes * m->per_class;
    w->n_items = n_items;
    w->ids = mf_xcalloc(w->n_dev, ID_LEN);
    w->cls = mf_xcalloc(w->n_dev, 1);
    w->bucket = mf_xcalloc(w->n_dev, sizeof *w->bucket);
    w->order = mf_xcalloc(w->n_dev, sizeof *w->order);
    w->kind = mf_xcalloc(w->n_dev, 1);
    w->ready = mf_xcalloc(w->n_dev, sizeof *w->ready);
    w->back_at = mf_xcalloc(w->n_dev, sizeof *w->back_at);
    w->rep = mf_xcalloc(w->n_dev, sizeof *w->rep);
    w->inc = mf_xcalloc(n_items, 1);
    w->cand = mf_xcalloc(n_items, 1);
    w->cinc = mf_xcalloc(n_items, 1);
    w->ccand = mf_xcalloc(n_items, 1);
    w->idx = mf_xcalloc(n_items, sizeof *w->idx);
    for (size_t i = 0; i < w->n_dev; i++) {
        w->cls[i] = (uint8_t)(i / m->per_class);
        snprintf(w->ids + i * ID_LEN, ID_LEN, "%s-%06zu", class_name(w->cls[i]), i % m->per_class);
    }
}

static void world_free(struct world *w)
{
    free(w->ids);
    free(w->cls);
    free(w->bucket);
    free(w->order);
    free(w->kind);
    free(w->ready);
    free(w->back_at);
    free(w->rep);
    free(w->inc);
    free(w->cand);
    free(w->cinc);
    free(w->ccand);
    free(w->idx);
}

static const double *sort_key;
static int cmp_by_key(const void *a, const void *b)
{
    double x = sort_key[*(const size_t *)a], y = sort_key[*(const size_t *)b];
    return x < y ? -1 : x > y;
}

/* k distinct items among those with inc == want and not yet touched (cand ==
 * inc), flipped in the candidate. */
static void flip_some(struct world *w, struct rng *r, uint8_t want, size_t k)
{
    size_t n = 0;
    for (size_t i = 0; i < w->n_items; i++)
        if (w->inc[i] == want && w->cand[i] == want)
            w->idx[n++] = i;
    if (k > n)
        k = n;
    for (size_t j = 0; j < k; j++) {
        size_t t = j + rng_below(r, n - j), tmp = w->idx[j];
        w->idx[j] = w->idx[t];
        w->idx[t] = tmp;
        w->cand[w->idx[j]] = !want;
    }
}

static int cell(uint8_t inc, uint8_t cand)
{
    return inc ? (cand ? 0 : 2) : (cand ? 1 : 3); /* both, only_cand, only_inc, neither */
}

/* Draws everything about one rollout that does not depend on the gates. */
static void world_draw(struct world *w, const struct model *m, const struct scenario *s,
                       uint64_t seed, size_t scen, size_t run, int64_t rollout_id)
{
    struct rng r;
    size_t n = w->n_items;
    rng_seed(&r, seed, (uint64_t)scen << 32 | n, run);

    /* The evaluation set: the incumbent's correctness per item, then the
     * candidate: churn (symmetric flips) plus the regression (extra
     * right -> wrong flips). */
    if (!m->sampled) {
        size_t right = (size_t)llround(m->acc * (double)n);
        for (size_t i = 0; i < n; i++)
            w->idx[i] = i;
        for (size_t i = 0; i < n; i++) { /* exactly `right` items right, at random */
            size_t t = i + rng_below(&r, n - i), tmp = w->idx[i];
            w->idx[i] = w->idx[t];
            w->idx[t] = tmp;
        }
        for (size_t i = 0; i < n; i++)
            w->inc[w->idx[i]] = i < right;
        memcpy(w->cand, w->inc, n);
        size_t half = (size_t)llround(m->churn * (double)n / 2);
        flip_some(w, &r, 1, half + (size_t)llround(s->drop * (double)n));
        flip_some(w, &r, 0, half);
    } else {
        /* Each item a draw from the population: P(only the incumbent right)
         * = churn / 2 + drop, P(only the candidate right) = churn / 2. */
        double pb = m->churn / 2, pc = m->churn / 2 + s->drop;
        for (size_t i = 0; i < n; i++) {
            double u = rng_unif(&r);
            if (u < pc) {
                w->inc[i] = 1, w->cand[i] = 0;
            } else if (u < pc + pb) {
                w->inc[i] = 0, w->cand[i] = 1;
            } else if (u < m->acc) {
                w->inc[i] = 1, w->cand[i] = 1;
            } else {
                w->inc[i] = 0, w->cand[i] = 0;
            }
        }
    }

    for (size_t c = 0; c < m->classes; c++) {
        /* The class's runtime flips a few borderline items of each model. */
        memcpy(w->cinc, w->inc, n);
        memcpy(w->ccand, w->cand, n);
        for (uint64_t k = rng_binom(&r, n, m->class_flip); k > 0; k--) {
            size_t i = rng_below(&r, n);
            w->cinc[i] = !w->cinc[i];
        }
        for (uint64_t k = rng_binom(&r, n, m->class_flip); k > 0; k--) {
            size_t i = rng_below(&r, n);
            w->ccand[i] = !w->ccand[i];
        }
        uint64_t cells[4] = {0};
        for (size_t i = 0; i < n; i++)
            cells[cell(w->cinc[i], w->ccand[i])]++;
        for (size_t j = 0; j < m->per_class; j++) {
            size_t d = c * m->per_class + j;
            /* Per device: numeric noise flips a few items of either model. */
            uint64_t t[4];
            memcpy(t, cells, sizeof t);
            size_t flips[64][2], nf = 0;
            uint64_t ki = rng_binom(&r, n, m->dev_flip), kc = rng_binom(&r, n, m->dev_flip);
            for (uint64_t k = 0; k < ki + kc && nf < 64; k++) {
                size_t i = rng_below(&r, n);
                uint8_t *v = k < ki ? w->cinc : w->ccand;
                t[cell(w->cinc[i], w->ccand[i])]--;
                v[i] = !v[i];
                t[cell(w->cinc[i], w->ccand[i])]++;
                flips[nf][0] = k < ki;
                flips[nf++][1] = i;
            }
            while (nf > 0) { /* undo, for the next device */
                nf--;
                uint8_t *v = flips[nf][0] ? w->cinc : w->ccand;
                v[flips[nf][1]] = !v[flips[nf][1]];
            }
            struct mf_rollout_report *rp = &w->rep[d];
            rp->n = n;
            rp->has_incumbent = true;
            rp->both = t[0];
            rp->only_candidate = t[1];
            rp->only_incumbent = t[2];
            rp->neither = t[3];
            rp->correct = t[0] + t[1];
            double thr =
                rng_unif(&r) < m->p_throttle ? exp(fabs(m->sig_throttle * rng_normal(&r))) : 1.0;
            rp->p50_ratio = s->latency * thr * exp(m->sig50 * rng_normal(&r));
            rp->p99_ratio = s->latency * thr * exp(m->sig99 * rng_normal(&r));
            double u = rng_unif(&r);
            w->kind[d] = u < m->p_fail ? DEV_FAIL : u < m->p_fail + m->p_crash ? DEV_CRASH : DEV_OK;
            w->ready[d] = m->delay_med * exp(m->delay_sigma * rng_normal(&r));
            w->back_at[d] =
                rng_unif(&r) < m->p_offline ? -m->back_mean * log(1.0 - rng_unif(&r)) : 0;
        }
    }

    for (size_t i = 0; i < w->n_dev; i++) {
        w->bucket[i] = mf_rollout_bucket(w->ids + i * ID_LEN, rollout_id);
        w->order[i] = i;
    }
    sort_key = w->bucket;
    for (size_t c = 0; c < m->classes; c++)
        qsort(w->order + c * m->per_class, m->per_class, sizeof *w->order, cmp_by_key);
}

/* ---- the tallies ---- */

enum cause { C_FAILURES = 0, C_RATE, C_CRASHES, C_ACCURACY, C_FLOOR, C_P50, C_P99, C_NAIVE, C_N };
static const char *const cause_names[C_N] = {"failures", "fail-rate", "crashes", "accuracy",
                                             "floor",    "p50",       "p99",     "naive-drop"};

struct tally {
    uint64_t rollouts, classes;
    uint64_t cls_stop[N_STAGES]; /* class failed at stage k (watching counts as the last) */
    uint64_t cls_done, cls_paused;
    uint64_t ro_stop[N_STAGES]; /* rollouts whose first class failure came at stage k */
    uint64_t ro_completed, ro_paused, ro_failed;
    uint64_t cause[C_N];
    uint64_t steps;
    double stop_time_sum; /* seconds from the start to a class failure */
    double end_time_sum;  /* seconds from the start to the end of the simulation */
};

static enum cause cause_of(const char *reason)
{
    if (strstr(reason, "failed installs"))
        return C_FAILURES;
    if (strstr(reason, "failure rate"))
        return C_RATE;
    if (strstr(reason, "runner crashes"))
        return C_CRASHES;
    if (strstr(reason, "accuracy drop"))
        return C_ACCURACY;
    if (strstr(reason, "pooled accuracy"))
        return C_FLOOR;
    if (strstr(reason, "p50"))
        return C_P50;
    return C_P99;
}

/* ---- one simulated rollout under one variant ----
 *
 * The controller steps every tick; a tick at which nothing arrived and no
 * clock threshold (soak, timeout) passed gives the policy the same inputs
 * as the tick before, so only the ticks at which something changes are
 * simulated. Most of those still change nothing: when every running class's
 * gate (mf_rollout_judge, the function the step judges each class with, on
 * the same devices) is inconclusive within the timeout, the step can only
 * extend the stage, so it is not called; the moment any gate says pass or
 * fail, or the stage times out, the real mf_rollout_step decides. A class's
 * verdict is recomputed only when one of its devices changed or the soak
 * passed. --full-snapshot checks all this: every changing tick goes through
 * mf_rollout_step with every device, and the tallies must come out equal. */

struct sim {
    const struct model *m;
    const struct variant *v;
    const struct world *w;
    struct mf_rollout_plan plan;
    const char *classes[CLASSES_MAX];
    struct mf_rollout_device *dev;          /* every device as the controller's snapshot shows it */
    struct mf_rollout_device *snap;         /* the covered ones, contiguous, for mf_rollout_step */
    const struct mf_rollout_device **picks; /* per class, the covered ones, for the judge */
    size_t n_picks[CLASSES_MAX];
    int64_t *seen_at; /* when the controller first sees its outcome; 0: not assigned */
    uint8_t *back;    /* rolled back */
    uint8_t *covered; /* scratch */
    size_t *pend;     /* assigned devices by seen_at */
    size_t n_pend, next_pend;
    bool full; /* the reference path: every device, every changing tick, the real step */
};

static size_t cover(const struct mf_rollout_stage *s, const struct world *w, const size_t *ord,
                    size_t n)
{
    size_t c = 0;
    while (c < n && (s->percent >= 100 || w->bucket[ord[c]] < s->percent / 100))
        c++;
    if (c < s->min_devices)
        c = s->min_devices < n ? (size_t)s->min_devices : n;
    return c;
}

static int64_t ceil_tick(double t, int64_t tick)
{
    int64_t s = (int64_t)ceil(t);
    return (s + tick - 1) / tick * tick;
}

/* Marks what `stage` covers and fills the judge's per-class lists (id
 * order). */
static void cover_stage(struct sim *S, size_t stage)
{
    const struct world *w = S->w;
    const struct model *m = S->m;
    for (size_t c = 0; c < m->classes; c++) {
        const size_t *ord = w->order + c * m->per_class;
        size_t cov = S->full ? m->per_class : cover(&S->v->stages[stage], w, ord, m->per_class);
        for (size_t j = 0; j < m->per_class; j++)
            S->covered[ord[j]] = j < cov;
        S->n_picks[c] = 0;
    }
    for (size_t d = 0; d < w->n_dev; d++)
        if (S->covered[d]) {
            size_t c = w->cls[d];
            S->picks[c * m->per_class + S->n_picks[c]++] = &S->dev[d];
        }
}

/* The step's input: the covered devices, in id order (the policy sorts by
 * id first, and sorted input sorts fastest). */
static size_t snapshot(struct sim *S)
{
    size_t k = 0;
    for (size_t d = 0; d < S->w->n_dev; d++)
        if (S->covered[d])
            S->snap[k++] = S->dev[d];
    return k;
}

/* A device's outcome and report reach the controller. */
static void arrive(struct sim *S, size_t d)
{
    const struct world *w = S->w;
    struct mf_rollout_device *x = &S->dev[d];
    if (w->kind[d] != DEV_OK) {
        x->outcome = MF_ROLLOUT_DEV_FAILED;
        x->crashes = w->kind[d] == DEV_CRASH;
        return;
    }
    const struct mf_rollout_report *rp = &w->rep[d];
    double drop = ((double)rp->only_incumbent - (double)rp->only_candidate) / (double)rp->n;
    x->outcome = drop > S->v->pkg_drop ? MF_ROLLOUT_DEV_REFUSED : MF_ROLLOUT_DEV_ACTIVE;
    x->has_report = true;
    x->report = *rp;
}

static size_t dev_index(const struct sim *S, const char *id)
{
    return (size_t)(id - S->w->ids) / ID_LEN;
}

static const int64_t *pend_key;
static int cmp_pend(const void *a, const void *b)
{
    int64_t x = pend_key[*(const size_t *)a], y = pend_key[*(const size_t *)b];
    return x < y ? -1 : x > y;
}

static void run_one(struct sim *S, struct tally *T, bool trace)
{
    const struct model *m = S->m;
    const struct variant *v = S->v;
    const struct world *w = S->w;
    struct mf_rollout_progress p = {0};
    int64_t now = 0;
    int failed_at[CLASSES_MAX];
    bool dirty[CLASSES_MAX];
    struct mf_rollout_evidence ev[CLASSES_MAX];
    for (size_t c = 0; c < m->classes; c++) {
        failed_at[c] = -1;
        dirty[c] = true;
    }
    int first_fail = -1;
    bool must_step = true, was_soaked = false;
    T->rollouts++;
    T->classes += m->classes;
    cover_stage(S, 0);

    while (now <= HORIZON_S) {
        /* What arrived by now. */
        while (S->next_pend < S->n_pend && S->seen_at[S->pend[S->next_pend]] <= now) {
            size_t d = S->pend[S->next_pend++];
            if (!S->back[d]) {
                arrive(S, d);
                dirty[w->cls[d]] = true;
            }
        }
        const struct mf_rollout_stage *st = &v->stages[p.stage];
        int64_t age = now - p.stage_started;
        bool soaked = age >= st->soak_s;
        if (soaked != was_soaked)
            for (size_t c = 0; c < m->classes; c++)
                dirty[c] = true;
        was_soaked = soaked;

        /* The shortcut: every running class inconclusive, within the
         * timeout, running, nothing to assign: the step would only extend. */
        bool step = must_step || S->full || p.status != MF_ROLLOUT_RUNNING || age > st->timeout_s;
        for (size_t c = 0; c < m->classes && !step; c++) {
            if (p.classes[c] != MF_ROLLOUT_CLASS_ACTIVE)
                continue;
            if (dirty[c]) {
                mf_rollout_judge(&S->plan, p.stage, S->classes[c], S->picks + c * m->per_class,
                                 S->n_picks[c], age, &ev[c]);
                dirty[c] = false;
            }
            if (ev[c].verdict != MF_ROLLOUT_VERDICT_INCONCLUSIVE)
                step = true;
            else if (v->naive > 0 && ev[c].reporting >= st->min_reporting && ev[c].with_incumbent &&
                     ev[c].drop > v->naive)
                step = true;
        }
        must_step = false;

        if (step) {
            struct mf_rollout_result res;
            size_t n = snapshot(S);
            mf_rollout_step(&S->plan, S->snap, n, &p, now, &res);
            T->steps++;
            if (v->naive > 0) {
                /* The naive baseline: a class whose pooled drop exceeds the
                 * margin on min_reporting reports fails, no test. */
                struct mf_rollout_progress q = p;
                bool any = false;
                for (size_t e = 0; e < res.n_evidence; e++) {
                    const struct mf_rollout_evidence *x = &res.evidence[e];
                    if (x->reporting < st->min_reporting || !x->with_incumbent ||
                        x->drop <= v->naive)
                        continue;
                    for (size_t c = 0; c < m->classes; c++)
                        if (strcmp(S->classes[c], x->hw_class) == 0 &&
                            q.classes[c] == MF_ROLLOUT_CLASS_ACTIVE) {
                            q.classes[c] = MF_ROLLOUT_CLASS_FAILED;
                            failed_at[c] = (int)p.stage;
                            T->cls_stop[p.stage]++;
                            T->cause[C_NAIVE]++;
                            T->stop_time_sum += (double)now;
                            any = true;
                            if (trace)
                                printf("  t=%6lld naive-fail %s: pooled drop %.4f\n",
                                       (long long)now, S->classes[c], x->drop);
                        }
                }
                if (any) {
                    bool left = false;
                    for (size_t c = 0; c < m->classes; c++)
                        left |= q.classes[c] == MF_ROLLOUT_CLASS_ACTIVE;
                    if (!left)
                        q.status = MF_ROLLOUT_FAILED;
                    if (first_fail < 0)
                        first_fail = (int)p.stage;
                    mf_rollout_result_free(&res);
                    mf_rollout_step(&S->plan, S->snap, n, &q, now, &res);
                    p = q;
                }
            }
            if (res.next.stage != p.stage) {
                /* An advance: load the new stage's devices and step again
                 * (the same decision, now with the new stage's assignments). */
                cover_stage(S, res.next.stage);
                if (!S->full) {
                    mf_rollout_result_free(&res);
                    n = snapshot(S);
                    mf_rollout_step(&S->plan, S->snap, n, &p, now, &res);
                }
            }
            size_t pend0 = S->n_pend;
            for (size_t i = 0; i < res.n_actions; i++) {
                const struct mf_rollout_action *a = &res.actions[i];
                if (a->kind == MF_ROLLOUT_ASSIGN) {
                    size_t d = dev_index(S, a->device);
                    double t0 = w->back_at[d] > (double)now ? w->back_at[d] : (double)now;
                    int64_t seen = ceil_tick(t0 + w->ready[d], m->tick);
                    S->seen_at[d] = seen > now ? seen : now + m->tick;
                    S->dev[d].outcome = MF_ROLLOUT_DEV_ASSIGNED;
                    S->pend[S->n_pend++] = d;
                } else if (a->kind == MF_ROLLOUT_ROLLBACK) {
                    size_t d = dev_index(S, a->device);
                    S->back[d] = 1;
                    S->dev[d].outcome = MF_ROLLOUT_DEV_ROLLED_BACK;
                } else if (a->kind == MF_ROLLOUT_FAIL_CLASS) {
                    for (size_t c = 0; c < m->classes; c++)
                        if (strcmp(S->classes[c], a->hw_class) == 0 && failed_at[c] < 0) {
                            failed_at[c] = (int)a->stage;
                            T->cls_stop[a->stage]++;
                            T->cause[cause_of(res.evidence[a->evidence].reason)]++;
                            T->stop_time_sum += (double)now;
                            if (first_fail < 0)
                                first_fail = (int)a->stage;
                        }
                }
                if (trace && a->kind != MF_ROLLOUT_ASSIGN && a->kind != MF_ROLLOUT_ROLLBACK &&
                    a->kind != MF_ROLLOUT_EXTEND)
                    printf("  t=%6lld %-10s %s\n", (long long)now, mf_rollout_action_name(a->kind),
                           a->reason);
            }
            if (S->n_pend > pend0) { /* new assignments: keep the queue in time order */
                pend_key = S->seen_at;
                qsort(S->pend + S->next_pend, S->n_pend - S->next_pend, sizeof *S->pend, cmp_pend);
            }
            bool moved = res.next.stage != p.stage || res.next.stage_started != p.stage_started;
            p = res.next;
            mf_rollout_result_free(&res);
            if (p.status != MF_ROLLOUT_RUNNING && p.status != MF_ROLLOUT_WATCHING)
                break;
            for (size_t c = 0; c < m->classes; c++)
                dirty[c] = true;
            if (moved)
                was_soaked = false;
        }

        /* The next tick at which anything can change: an outcome arriving,
         * the soak or the timeout of the stage, the end of the watch. */
        st = &v->stages[p.stage];
        int64_t next = INT64_MAX;
        while (S->next_pend < S->n_pend && S->back[S->pend[S->next_pend]])
            S->next_pend++;
        if (S->next_pend < S->n_pend)
            next = S->seen_at[S->pend[S->next_pend]];
        int64_t soak = ceil_tick((double)(p.stage_started + st->soak_s), m->tick);
        int64_t tout = ceil_tick((double)(p.stage_started + st->timeout_s + 1), m->tick);
        if (p.status == MF_ROLLOUT_WATCHING) {
            int64_t end = ceil_tick((double)(p.watch_started + S->plan.watch_s), m->tick);
            if (end <= now)
                end = now + m->tick;
            if (end < next)
                next = end;
        } else {
            if (soak > now && soak < next)
                next = soak;
            if (tout > now && tout < next)
                next = tout;
        }
        if (next <= now)
            next = now + m->tick;
        now = next;
    }

    for (size_t c = 0; c < m->classes; c++) {
        if (failed_at[c] >= 0)
            continue;
        if (p.status == MF_ROLLOUT_COMPLETED)
            T->cls_done++;
        else
            T->cls_paused++; /* paused at a timeout (or the horizon) with the class active */
    }
    if (first_fail >= 0)
        T->ro_stop[first_fail]++;
    if (p.status == MF_ROLLOUT_COMPLETED)
        T->ro_completed++;
    else if (p.status == MF_ROLLOUT_FAILED)
        T->ro_failed++;
    else
        T->ro_paused++;
    T->end_time_sum += (double)now;
}

static void sim_init(struct sim *S, const struct model *m, const struct variant *v,
                     const struct world *w, int64_t rollout_id, bool full)
{
    memset(S, 0, sizeof *S);
    S->m = m;
    S->v = v;
    S->w = w;
    S->full = full;
    for (size_t c = 0; c < m->classes; c++)
        S->classes[c] = class_name(c);
    struct mf_rollout_plan *pl = &S->plan;
    pl->id = rollout_id;
    pl->model = "digits";
    pl->version = "2.0.0";
    pl->classes = S->classes;
    pl->n_classes = m->classes;
    memcpy(pl->stages, v->stages, sizeof v->stages);
    pl->n_stages = N_STAGES;
    pl->gates = v->gates;
    pl->on_fail = MF_ROLLOUT_ON_FAIL_ROLLBACK;
    pl->scope = MF_ROLLOUT_PER_CLASS;
    pl->watch_s = 0;
    S->dev = mf_xcalloc(w->n_dev, sizeof *S->dev);
    S->snap = mf_xcalloc(w->n_dev, sizeof *S->snap);
    S->picks = mf_xcalloc(w->n_dev, sizeof *S->picks);
    S->seen_at = mf_xcalloc(w->n_dev, sizeof *S->seen_at);
    S->back = mf_xcalloc(w->n_dev, 1);
    S->covered = mf_xcalloc(w->n_dev, 1);
    S->pend = mf_xcalloc(w->n_dev, sizeof *S->pend);
    for (size_t d = 0; d < w->n_dev; d++) {
        struct mf_rollout_device *x = &S->dev[d];
        x->id = w->ids + d * ID_LEN;
        x->hw_class = S->classes[w->cls[d]];
        x->online = w->back_at[d] <= 0;
        x->previous_version = "1.0.0";
        x->outcome = MF_ROLLOUT_DEV_NONE;
    }
    struct mf_diag diag = {0};
    if (mf_rollout_plan_check(pl, &diag) != MF_OK) {
        fprintf(stderr, "mf-bench-decision: variant %s: %s: %s\n", v->key, diag.where, diag.what);
        exit(2);
    }
}

static void sim_free(struct sim *S)
{
    free(S->dev);
    free(S->snap);
    free(S->picks);
    free(S->seen_at);
    free(S->back);
    free(S->covered);
    free(S->pend);
}

/* ---- variants ---- */

#define VARIANTS_MAX 24

struct options {
    size_t runs;
    uint64_t seed;
    unsigned jobs;
    bool quick, full_snapshot, scan;
    long trace; /* run to trace, -1 = none */
    const char *json, *command, *commit, *only;
};

static size_t variants_make(struct variant *out, const struct options *o)
{
    size_t n = 0;
    struct variant *v;

    v = &out[n++];
    variant_defaults(v);
    v->key = "defaults";
    v->what =
        "the defaults; packages as `modelfleet pack` makes them (agent refuses a drop > 0.01)";

    v = &out[n++];
    variant_defaults(v);
    v->key = "fleet-only";
    v->what = "the default fleet gates alone (package max_accuracy_drop 1: agents never refuse)";
    v->pkg_drop = 1;

    v = &out[n++];
    variant_defaults(v);
    v->key = "naive";
    v->what = "baseline: fail a class when its pooled drop > 0.01, no test (agents never refuse)";
    v->pkg_drop = 1;
    v->gates.max_accuracy_drop = 1;
    v->naive = 0.01;
    v->accuracy_only = true;

    v = &out[n++];
    variant_defaults(v);
    v->key = "agent-only";
    v->what = "baseline: the agents' per-device gate (drop > 0.01) and the failure gates, no "
              "fleet accuracy test";
    v->gates.max_accuracy_drop = 1;
    v->accuracy_only = true;

    v = &out[n++];
    variant_defaults(v);
    v->key = "defaults-360";
    v->what = "the defaults on a 360-item evaluation set (the test fixtures' size)";
    v->n_items = 360;

    v = &out[n++];
    variant_previous(v);
    v->key = "previous";
    v->what = "the previous defaults (before this benchmark chose them): min_devices 1 and "
              "min_reporting 1 per stage, margin 0.01";

    if (o->scan) {
        /* Exploration: the parts of the change from the previous defaults one by
         * one, and alternatives. */
        size_t stage_only = n;
        v = &out[n++];
        variant_previous(v);
        v->key = "scan-stage";
        v->what = "previous defaults with min_devices 20, min_reporting 5 per stage";
        for (size_t i = 0; i < N_STAGES; i++) {
            v->stages[i].min_devices = 20;
            v->stages[i].min_reporting = 5;
        }
        v = &out[n++];
        variant_previous(v);
        v->key = "scan-margin";
        v->what = "previous defaults with margin 0.015 only";
        v->gates.max_accuracy_drop = 0.015;
        v = &out[n++];
        *v = out[stage_only];
        v->key = "scan-stage-alpha";
        v->what = "scan-stage with alpha 0.1 (margin 0.01)";
        v->gates.alpha = 0.1;
        v = &out[n++];
        *v = out[stage_only];
        v->key = "scan-naive-stage";
        v->what = "the naive baseline with the default stages (min_devices 20, min_reporting 5)";
        v->pkg_drop = 1;
        v->gates.max_accuracy_drop = 1;
        v->naive = 0.01;
        v->accuracy_only = true;
        v = &out[n++];
        variant_defaults(v);
        v->key = "scan-defaults-fleet";
        v->what = "the defaults, packages without an agent threshold (max_accuracy_drop 1)";
        v->pkg_drop = 1;
        v = &out[n++];
        variant_defaults(v);
        v->key = "scan-defaults-360";
        v->what = "the defaults on a 360-item evaluation set";
        v->n_items = 360;
    }
    return n;
}

/* ---- the driver ---- */

struct job_out {
    struct tally t[VARIANTS_MAX][N_SCEN];
};

static void usage(FILE *f)
{
    fprintf(f, "usage: mf-bench-decision [options]\n"
               "  --runs N         simulated rollouts per scenario and variant [2000]\n"
               "  --seed S         seed [20240601]\n"
               "  --quick          200 runs\n"
               "  --jobs N         worker processes [2]\n"
               "  --json FILE      write the headline rows (shared result format)\n"
               "  --command TEXT   the command line to record in the JSON [argv]\n"
               "  --commit HASH    the commit to record in the JSON [unknown]\n"
               "  --only LIST      variants to run, comma-separated keys [all]\n"
               "  --scan           also run the exploration variants\n"
               "  --full-snapshot  pass every device to every step (slow; for checking)\n"
               "  --trace RUN      print the decisions of one run of every variant and scenario\n"
               "model (defaults in brackets):\n"
               "  --classes N [2]  --per-class N [500]  --sampled (eval set drawn from the "
               "population)\n"
               "  --acc X [0.9]  --churn X [0.02]  --class-flip X [0.003]  --dev-flip X [0.001]\n"
               "  --fail X [0.002]  --crash X [0.0005]  --offline X [0.03]  --back-mean S [7200]\n"
               "  --delay S [120]  --delay-sigma X [0.6]  --sig50 X [0.05]  --sig99 X [0.15]\n"
               "  --throttle X [0.02]  --tick S [1]\n");
}

static void tally_add(struct tally *a, const struct tally *b)
{
    uint64_t *x = (uint64_t *)a;
    const uint64_t *y = (const uint64_t *)b;
    size_t nu = offsetof(struct tally, stop_time_sum) / sizeof(uint64_t);
    for (size_t i = 0; i < nu; i++)
        x[i] += y[i];
    a->stop_time_sum += b->stop_time_sum;
    a->end_time_sum += b->end_time_sum;
}

static bool selected(const struct options *o, const char *key)
{
    if (!o->only)
        return true;
    size_t l = strlen(key);
    for (const char *p = o->only; *p;) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == l && strncmp(p, key, l) == 0)
            return true;
        p += n + (e ? 1 : 0);
    }
    return false;
}

static bool scenario_applies(const struct variant *v, size_t s)
{
    return !v->accuracy_only || scenarios[s].latency == 1.0;
}

static void work(const struct options *o, const struct model *m, const struct variant *vs,
                 size_t nv, unsigned job, unsigned jobs, struct job_out *out)
{
    size_t sizes[VARIANTS_MAX], n_sizes = 0;
    for (size_t i = 0; i < nv; i++) {
        bool seen = false;
        for (size_t j = 0; j < n_sizes; j++)
            seen |= sizes[j] == vs[i].n_items;
        if (!seen)
            sizes[n_sizes++] = vs[i].n_items;
    }
    struct world w;
    for (size_t si = 0; si < n_sizes; si++) {
        world_init(&w, m, sizes[si]);
        for (size_t s = 0; s < N_SCEN; s++)
            for (size_t run = job; run < o->runs; run += jobs) {
                int64_t rollout_id = (int64_t)run + 1;
                bool drawn = false;
                for (size_t i = 0; i < nv; i++) {
                    if (vs[i].n_items != sizes[si] || !scenario_applies(&vs[i], s))
                        continue;
                    if (!drawn) {
                        world_draw(&w, m, &scenarios[s], o->seed, s, run, rollout_id);
                        drawn = true;
                    }
                    struct sim S;
                    sim_init(&S, m, &vs[i], &w, rollout_id, o->full_snapshot);
                    bool trace = o->trace >= 0 && (size_t)o->trace == run;
                    if (trace)
                        printf("trace: run %zu, variant %s, scenario %s\n", run, vs[i].key,
                               scenarios[s].key);
                    run_one(&S, &out->t[i][s], trace);
                    sim_free(&S);
                }
            }
        world_free(&w);
    }
}

static double pct(uint64_t a, uint64_t b)
{
    return b ? 100.0 * (double)a / (double)b : 0;
}

/* Wilson 95% interval of a share, in percent. */
static void wilson(uint64_t k, uint64_t n, double *lo, double *hi)
{
    if (n == 0) {
        *lo = *hi = 0;
        return;
    }
    double z = 1.959964, p = (double)k / (double)n, nn = (double)n;
    double c = (p + z * z / (2 * nn)) / (1 + z * z / nn);
    double h = z * sqrt(p * (1 - p) / nn + z * z / (4 * nn * nn)) / (1 + z * z / nn);
    *lo = 100 * (c - h > 0 ? c - h : 0);
    *hi = 100 * (c + h < 1 ? c + h : 1);
}

static uint64_t stop_by(const struct tally *t, size_t stage) /* classes, stages 0..stage */
{
    uint64_t k = 0;
    for (size_t i = 0; i <= stage && i < N_STAGES; i++)
        k += t->cls_stop[i];
    return k;
}

static uint64_t ro_stop_by(const struct tally *t, size_t stage)
{
    uint64_t k = 0;
    for (size_t i = 0; i <= stage && i < N_STAGES; i++)
        k += t->ro_stop[i];
    return k;
}

static void print_table(const struct variant *v, const struct tally *ts, const struct model *m)
{
    printf(
        "\n%s: %s\n  %zu evaluation items; package max_accuracy_drop %g; margin %g, alpha %g,"
        " max_failures %llu, max_failure_rate %g, min_devices %llu/%llu/%llu/%llu, "
        "min_reporting %llu/%llu/%llu/%llu, p50/p99 limits %g/%g\n",
        v->key, v->what, v->n_items, v->pkg_drop, v->gates.max_accuracy_drop, v->gates.alpha,
        (unsigned long long)v->gates.max_failures, v->gates.max_failure_rate,
        (unsigned long long)v->stages[0].min_devices, (unsigned long long)v->stages[1].min_devices,
        (unsigned long long)v->stages[2].min_devices, (unsigned long long)v->stages[3].min_devices,
        (unsigned long long)v->stages[0].min_reporting,
        (unsigned long long)v->stages[1].min_reporting,
        (unsigned long long)v->stages[2].min_reporting,
        (unsigned long long)v->stages[3].min_reporting, v->gates.max_p50_ratio,
        v->gates.max_p99_ratio);
    printf("  %-28s %7s | %7s %7s %7s %7s %7s | %8s %8s %8s | %6s %6s | %s\n",
           "scenario (per class)", "classes", "stop@1", "stop<=2", "stop", "done", "paused",
           "ro-stop", "ro<=2", "ro-pause", "t-stop", "steps", "causes of the class failures");
    for (size_t s = 0; s < N_SCEN; s++) {
        const struct tally *t = &ts[s];
        if (!t->rollouts)
            continue;
        char causes[200] = "";
        size_t used = 0;
        for (size_t c = 0; c < C_N; c++)
            if (t->cause[c] && used < sizeof causes)
                used += (size_t)snprintf(causes + used, sizeof causes - used, "%s%s %llu",
                                         used ? ", " : "", cause_names[c],
                                         (unsigned long long)t->cause[c]);
        uint64_t stops = stop_by(t, N_STAGES - 1);
        printf("  %-28s %7llu | %6.2f%% %6.2f%% %6.2f%% %6.2f%% %6.2f%% | %7.2f%% %7.2f%% "
               "%7.2f%% | %6.0f %6.0f | %s\n",
               scenarios[s].what, (unsigned long long)t->classes, pct(stop_by(t, 0), t->classes),
               pct(stop_by(t, 1), t->classes), pct(stops, t->classes), pct(t->cls_done, t->classes),
               pct(t->cls_paused, t->classes), pct(ro_stop_by(t, N_STAGES - 1), t->rollouts),
               pct(ro_stop_by(t, 1), t->rollouts), pct(t->ro_paused, t->rollouts),
               stops ? t->stop_time_sum / (double)stops : 0, (double)t->steps / (double)t->rollouts,
               causes[0] ? causes : "-");
    }
    (void)m;
}

/* ---- JSON: the headline rows ---- */

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            fprintf(f, "\\u%04x", *s);
        else
            fputc(*s, f);
    }
    fputc('"', f);
}

struct row {
    char key[64], what[200], figure[160], baseline[200], ratio[32], goal[64];
    int met; /* -1 null, 0 false, 1 true */
};

static int find_variant(const struct variant *vs, size_t nv, const char *key)
{
    for (size_t i = 0; i < nv; i++)
        if (strcmp(vs[i].key, key) == 0)
            return (int)i;
    return -1;
}

static void share_text(char *dst, size_t len, uint64_t k, uint64_t n, const char *unit)
{
    double lo, hi;
    wilson(k, n, &lo, &hi);
    snprintf(dst, len, "%.2f%% of %llu %s (95%% CI %.2f-%.2f%%)", pct(k, n), (unsigned long long)n,
             unit, lo, hi);
}

static void ratio_text(char *dst, size_t len, uint64_t k1, uint64_t n1, uint64_t k0, uint64_t n0)
{
    double a = n1 ? (double)k1 / (double)n1 : 0, b = n0 ? (double)k0 / (double)n0 : 0;
    if (b > 0)
        snprintf(dst, len, "%.2fx", a / b);
    else
        snprintf(dst, len, "%s", a > 0 ? "inf" : "n/a (both 0)");
}

static void write_json(const struct options *o, const struct variant *vs, size_t nv,
                       const struct job_out *res, const char *load, const char *command)
{
    struct row rows[32];
    size_t nr = 0;
    int vd = find_variant(vs, nv, "defaults"), vn = find_variant(vs, nv, "naive"),
        va = find_variant(vs, nv, "agent-only"), vp = find_variant(vs, nv, "previous"),
        v3 = find_variant(vs, nv, "defaults-360"), vf = find_variant(vs, nv, "fleet-only");
    const char *who[2] = {"defaults", "previous"};
    int which[2] = {vd, vp};
    for (int k = 0; k < 2; k++) {
        int vi = which[k];
        if (vi < 0)
            continue;
        const struct tally *T = res->t[vi];
        const struct tally *B = vn >= 0 ? res->t[vn] : NULL;
        struct row *r = &rows[nr++];
        memset(r, 0, sizeof *r);
        /* false rollbacks: rollouts of a good version with any class stopped */
        snprintf(r->key, sizeof r->key, "decision.%s.false_rollback", who[k]);
        snprintf(r->what, sizeof r->what,
                 "good versions rolled back in some class (%s gates; simulated rollouts)", who[k]);
        share_text(r->figure, sizeof r->figure, ro_stop_by(&T[0], N_STAGES - 1), T[0].rollouts,
                   "rollouts");
        if (B) {
            share_text(r->baseline, sizeof r->baseline, ro_stop_by(&B[0], N_STAGES - 1),
                       B[0].rollouts, "rollouts, naive pooled-drop gate");
            ratio_text(r->ratio, sizeof r->ratio, ro_stop_by(&T[0], N_STAGES - 1), T[0].rollouts,
                       ro_stop_by(&B[0], N_STAGES - 1), B[0].rollouts);
        }
        snprintf(r->goal, sizeof r->goal, "<= 1%%");
        r->met = pct(ro_stop_by(&T[0], N_STAGES - 1), T[0].rollouts) <= 1.0;
        for (size_t s = 2; s <= 3; s++) {
            r = &rows[nr++];
            memset(r, 0, sizeof *r);
            snprintf(r->key, sizeof r->key, "decision.%s.%s_stopped_by_stage2", who[k],
                     scenarios[s].key);
            snprintf(r->what, sizeof r->what, "%s: classes stopped by the second stage (%s gates)",
                     scenarios[s].what, who[k]);
            share_text(r->figure, sizeof r->figure, stop_by(&T[s], 1), T[s].classes, "classes");
            if (B) {
                share_text(r->baseline, sizeof r->baseline, stop_by(&B[s], 1), B[s].classes,
                           "classes, naive pooled-drop gate");
                ratio_text(r->ratio, sizeof r->ratio, stop_by(&T[s], 1), T[s].classes,
                           stop_by(&B[s], 1), B[s].classes);
            }
            snprintf(r->goal, sizeof r->goal, ">= 99%%");
            r->met = pct(stop_by(&T[s], 1), T[s].classes) >= 99.0;
        }
        r = &rows[nr++];
        memset(r, 0, sizeof *r);
        snprintf(r->key, sizeof r->key, "decision.%s.good_paused", who[k]);
        snprintf(r->what, sizeof r->what,
                 "good versions paused at a stage timeout, never shown non-inferior (%s gates)",
                 who[k]);
        share_text(r->figure, sizeof r->figure, T[0].ro_paused, T[0].rollouts, "rollouts");
        if (B)
            share_text(r->baseline, sizeof r->baseline, B[0].ro_paused, B[0].rollouts,
                       "rollouts, naive pooled-drop gate");
        r->met = -1;
        const size_t info[3] = {1, 4, 5};
        for (size_t j = 0; j < 3 && k == 0; j++) { /* the previous defaults: headline rows only */
            size_t s = info[j];
            r = &rows[nr++];
            memset(r, 0, sizeof *r);
            snprintf(r->key, sizeof r->key, "decision.%s.%s_stopped", who[k], scenarios[s].key);
            snprintf(r->what, sizeof r->what,
                     "%s: classes stopped at any stage (%s gates; %.1f%% paused)",
                     scenarios[s].what, who[k], pct(T[s].cls_paused, T[s].classes));
            share_text(r->figure, sizeof r->figure, stop_by(&T[s], N_STAGES - 1), T[s].classes,
                       "classes");
            if (B && B[s].rollouts) {
                share_text(r->baseline, sizeof r->baseline, stop_by(&B[s], N_STAGES - 1),
                           B[s].classes, "classes, naive pooled-drop gate");
                ratio_text(r->ratio, sizeof r->ratio, stop_by(&T[s], N_STAGES - 1), T[s].classes,
                           stop_by(&B[s], N_STAGES - 1), B[s].classes);
            } else if (s >= 4) {
                snprintf(r->baseline, sizeof r->baseline, "limit %g (p50), %g (p99)",
                         vs[vi].gates.max_p50_ratio, vs[vi].gates.max_p99_ratio);
            }
            r->met = -1;
        }
    }
    if (va >= 0 && vd >= 0) {
        const struct tally *T = res->t[vd], *A = res->t[va];
        struct row *r = &rows[nr++];
        memset(r, 0, sizeof *r);
        snprintf(r->key, sizeof r->key, "decision.agent_only.false_rollback");
        snprintf(r->what, sizeof r->what,
                 "good versions rolled back, defaults vs the agents' per-device gate alone");
        share_text(r->figure, sizeof r->figure, ro_stop_by(&T[0], N_STAGES - 1), T[0].rollouts,
                   "rollouts");
        share_text(r->baseline, sizeof r->baseline, ro_stop_by(&A[0], N_STAGES - 1), A[0].rollouts,
                   "rollouts, agent gate alone");
        ratio_text(r->ratio, sizeof r->ratio, ro_stop_by(&T[0], N_STAGES - 1), T[0].rollouts,
                   ro_stop_by(&A[0], N_STAGES - 1), A[0].rollouts);
        r->met = -1;
    }
    if (vf >= 0 && vn >= 0) {
        const struct tally *T = res->t[vf], *B = res->t[vn];
        for (size_t s = 0; s <= 2; s += 2) {
            struct row *r = &rows[nr++];
            memset(r, 0, sizeof *r);
            snprintf(r->key, sizeof r->key, "decision.fleet_only.%s", scenarios[s].key);
            snprintf(r->what, sizeof r->what,
                     "%s: fleet statistics alone (agents never refuse): %s", scenarios[s].what,
                     s == 0 ? "rollouts rolled back" : "classes stopped by stage 2");
            uint64_t k1 = s == 0 ? ro_stop_by(&T[s], N_STAGES - 1) : stop_by(&T[s], 1);
            uint64_t n1 = s == 0 ? T[s].rollouts : T[s].classes;
            uint64_t k0 = s == 0 ? ro_stop_by(&B[s], N_STAGES - 1) : stop_by(&B[s], 1);
            uint64_t n0 = s == 0 ? B[s].rollouts : B[s].classes;
            share_text(r->figure, sizeof r->figure, k1, n1, s == 0 ? "rollouts" : "classes");
            share_text(r->baseline, sizeof r->baseline, k0, n0,
                       s == 0 ? "rollouts, naive pooled-drop gate"
                              : "classes, naive pooled-drop gate");
            ratio_text(r->ratio, sizeof r->ratio, k1, n1, k0, n0);
            r->met = -1;
        }
    }
    if (v3 >= 0) {
        const struct tally *T = res->t[v3];
        struct row *r = &rows[nr++];
        memset(r, 0, sizeof *r);
        snprintf(r->key, sizeof r->key, "decision.defaults_360.good_paused");
        snprintf(r->what, sizeof r->what,
                 "good versions paused (never shown non-inferior) on a 360-item evaluation set");
        share_text(r->figure, sizeof r->figure, T[0].ro_paused, T[0].rollouts, "rollouts");
        if (vd >= 0)
            share_text(r->baseline, sizeof r->baseline, res->t[vd][0].ro_paused,
                       res->t[vd][0].rollouts, "rollouts, 1000 items");
        r->met = -1;
    }

    FILE *f = fopen(o->json, "w");
    if (!f) {
        fprintf(stderr, "mf-bench-decision: %s: %s\n", o->json, strerror(errno));
        exit(1);
    }
    char date[16];
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%d", localtime(&now));
    fprintf(f, "{\"bench\": \"decision\", \"rows\": [");
    for (size_t i = 0; i < nr; i++) {
        const struct row *r = &rows[i];
        fprintf(f, "%s\n  {\"key\": ", i ? "," : "");
        json_str(f, r->key);
        fprintf(f, ", \"what\": ");
        json_str(f, r->what);
        fprintf(f, ", \"figure\": ");
        json_str(f, r->figure);
        fprintf(f, ", \"baseline\": ");
        json_str(f, r->baseline);
        fprintf(f, ", \"ratio\": ");
        json_str(f, r->ratio);
        fprintf(f, ", \"goal\": ");
        json_str(f, r->goal);
        fprintf(f, ", \"met\": %s", r->met < 0 ? "null" : r->met ? "true" : "false");
        fprintf(f, ", \"command\": ");
        json_str(f, command);
        fprintf(f, ", \"date\": \"%s\", \"commit\": ", date);
        json_str(f, o->commit);
        fprintf(f, ", \"load\": ");
        json_str(f, load);
        fputc('}', f);
    }
    fprintf(f, "\n]}\n");
    if (fclose(f) != 0) {
        fprintf(stderr, "mf-bench-decision: %s: %s\n", o->json, strerror(errno));
        exit(1);
    }
}

static void read_load(char *dst, size_t len)
{
    FILE *f = fopen("/proc/loadavg", "r");
    double a = 0, b = 0, c = 0;
    if (!f || fscanf(f, "%lf %lf %lf", &a, &b, &c) != 3)
        snprintf(dst, len, "unknown");
    else
        snprintf(dst, len, "%.2f %.2f %.2f", a, b, c);
    if (f)
        fclose(f);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool read_all(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t r = read(fd, p, len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        p += r;
        len -= (size_t)r;
    }
    return true;
}

static bool write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t r = write(fd, p, len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        p += r;
        len -= (size_t)r;
    }
    return true;
}

static double num(const char *opt, const char *s, double lo, double hi)
{
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (errno || end == s || *end || !(x >= lo && x <= hi)) {
        fprintf(stderr, "mf-bench-decision: %s: '%s' is not a number in [%g, %g]\n", opt, s, lo,
                hi);
        exit(2);
    }
    return x;
}

int main(int argc, char **argv)
{
    struct options o = {.runs = 2000, .seed = 20240601, .jobs = 2, .trace = -1};
    struct model m = {.classes = 2,
                      .per_class = 500,
                      .acc = 0.9,
                      .churn = 0.02,
                      .class_flip = 0.003,
                      .dev_flip = 0.001,
                      .p_fail = 0.002,
                      .p_crash = 0.0005,
                      .p_offline = 0.03,
                      .back_mean = 7200,
                      .delay_med = 120,
                      .delay_sigma = 0.6,
                      .sig50 = 0.05,
                      .sig99 = 0.15,
                      .p_throttle = 0.02,
                      .sig_throttle = 0.3,
                      .tick = 1};
    bool runs_set = false;
    enum {
        O_RUNS = 256,
        O_SEED,
        O_QUICK,
        O_JOBS,
        O_JSON,
        O_COMMAND,
        O_COMMIT,
        O_ONLY,
        O_SCAN,
        O_FULL,
        O_TRACE,
        O_CLASSES,
        O_PER_CLASS,
        O_SAMPLED,
        O_ACC,
        O_CHURN,
        O_CLASS_FLIP,
        O_DEV_FLIP,
        O_FAIL,
        O_CRASH,
        O_OFFLINE,
        O_BACK,
        O_DELAY,
        O_DELAY_SIGMA,
        O_SIG50,
        O_SIG99,
        O_THROTTLE,
        O_TICK,
        O_HELP
    };
    static const struct option lo[] = {
        {"runs", required_argument, NULL, O_RUNS},
        {"seed", required_argument, NULL, O_SEED},
        {"quick", no_argument, NULL, O_QUICK},
        {"jobs", required_argument, NULL, O_JOBS},
        {"json", required_argument, NULL, O_JSON},
        {"command", required_argument, NULL, O_COMMAND},
        {"commit", required_argument, NULL, O_COMMIT},
        {"only", required_argument, NULL, O_ONLY},
        {"scan", no_argument, NULL, O_SCAN},
        {"full-snapshot", no_argument, NULL, O_FULL},
        {"trace", required_argument, NULL, O_TRACE},
        {"classes", required_argument, NULL, O_CLASSES},
        {"per-class", required_argument, NULL, O_PER_CLASS},
        {"sampled", no_argument, NULL, O_SAMPLED},
        {"acc", required_argument, NULL, O_ACC},
        {"churn", required_argument, NULL, O_CHURN},
        {"class-flip", required_argument, NULL, O_CLASS_FLIP},
        {"dev-flip", required_argument, NULL, O_DEV_FLIP},
        {"fail", required_argument, NULL, O_FAIL},
        {"crash", required_argument, NULL, O_CRASH},
        {"offline", required_argument, NULL, O_OFFLINE},
        {"back-mean", required_argument, NULL, O_BACK},
        {"delay", required_argument, NULL, O_DELAY},
        {"delay-sigma", required_argument, NULL, O_DELAY_SIGMA},
        {"sig50", required_argument, NULL, O_SIG50},
        {"sig99", required_argument, NULL, O_SIG99},
        {"throttle", required_argument, NULL, O_THROTTLE},
        {"tick", required_argument, NULL, O_TICK},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case O_RUNS:
            o.runs = (size_t)num("--runs", optarg, 1, 1e7);
            runs_set = true;
            break;
        case O_SEED:
            o.seed = (uint64_t)num("--seed", optarg, 0, 1e18);
            break;
        case O_QUICK:
            o.quick = true;
            break;
        case O_JOBS:
            o.jobs = (unsigned)num("--jobs", optarg, 1, JOBS_MAX);
            break;
        case O_JSON:
            o.json = optarg;
            break;
        case O_COMMAND:
            o.command = optarg;
            break;
        case O_COMMIT:
            o.commit = optarg;
            break;
        case O_ONLY:
            o.only = optarg;
            break;
        case O_SCAN:
            o.scan = true;
            break;
        case O_FULL:
            o.full_snapshot = true;
            break;
        case O_TRACE:
            o.trace = (long)num("--trace", optarg, 0, 1e7);
            break;
        case O_CLASSES:
            m.classes = (size_t)num("--classes", optarg, 1, CLASSES_MAX);
            break;
        case O_PER_CLASS:
            m.per_class = (size_t)num("--per-class", optarg, 1, 1e6);
            break;
        case O_SAMPLED:
            m.sampled = true;
            break;
        case O_ACC:
            m.acc = num("--acc", optarg, 0.1, 0.999);
            break;
        case O_CHURN:
            m.churn = num("--churn", optarg, 0, 0.5);
            break;
        case O_CLASS_FLIP:
            m.class_flip = num("--class-flip", optarg, 0, 0.1);
            break;
        case O_DEV_FLIP:
            m.dev_flip = num("--dev-flip", optarg, 0, 0.01);
            break;
        case O_FAIL:
            m.p_fail = num("--fail", optarg, 0, 1);
            break;
        case O_CRASH:
            m.p_crash = num("--crash", optarg, 0, 1);
            break;
        case O_OFFLINE:
            m.p_offline = num("--offline", optarg, 0, 1);
            break;
        case O_BACK:
            m.back_mean = num("--back-mean", optarg, 1, 1e7);
            break;
        case O_DELAY:
            m.delay_med = num("--delay", optarg, 1, 1e5);
            break;
        case O_DELAY_SIGMA:
            m.delay_sigma = num("--delay-sigma", optarg, 0, 3);
            break;
        case O_SIG50:
            m.sig50 = num("--sig50", optarg, 0, 2);
            break;
        case O_SIG99:
            m.sig99 = num("--sig99", optarg, 0, 2);
            break;
        case O_THROTTLE:
            m.p_throttle = num("--throttle", optarg, 0, 1);
            break;
        case O_TICK:
            m.tick = (int64_t)num("--tick", optarg, 1, 3600);
            break;
        case O_HELP:
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    if (o.quick && !runs_set)
        o.runs = 200;
    if (m.p_fail + m.p_crash > 1) {
        fprintf(stderr, "mf-bench-decision: --fail + --crash above 1\n");
        return 2;
    }
    if (!o.commit)
        o.commit = "unknown";
    char *command = NULL;
    if (o.command) {
        command = mf_xstrdup(o.command);
    } else {
        size_t len = 1;
        for (int i = 0; i < argc; i++)
            len += strlen(argv[i]) + 1;
        command = mf_xcalloc(len, 1);
        for (int i = 0; i < argc; i++) {
            strcat(command, argv[i]);
            if (i + 1 < argc)
                strcat(command, " ");
        }
    }
    mf_crypto_init();

    struct variant all[VARIANTS_MAX], vs[VARIANTS_MAX];
    size_t n_all = variants_make(all, &o), nv = 0;
    for (size_t i = 0; i < n_all; i++)
        if (selected(&o, all[i].key))
            vs[nv++] = all[i];
    if (nv == 0) {
        fprintf(stderr, "mf-bench-decision: --only selects no variant\n");
        return 2;
    }

    char load0[64];
    read_load(load0, sizeof load0);
    printf("mf-bench-decision: %zu runs per scenario and variant, seed %llu, %u jobs; load "
           "before: %s\n",
           o.runs, (unsigned long long)o.seed, o.jobs, load0);
    printf("fleet: %zu classes x %zu devices; evaluation items per variant; incumbent accuracy "
           "%.3f; churn %.3f (%s); class flips %.4f, device flips %.4f per item and model\n",
           m.classes, m.per_class, m.acc, m.churn,
           m.sampled ? "items drawn from the population" : "exact counts on the set", m.class_flip,
           m.dev_flip);
    printf("devices: install failures %.4f, runner crashes %.4f, offline at start %.3f (back "
           "after %.0f s on average); outcome after a lognormal delay (median %.0f s, sigma "
           "%.2f); latency ratio sigma p50 %.2f, p99 %.2f, throttled %.3f (sigma %.2f); "
           "controller tick %lld s\n",
           m.p_fail, m.p_crash, m.p_offline, m.back_mean, m.delay_med, m.delay_sigma, m.sig50,
           m.sig99, m.p_throttle, m.sig_throttle, (long long)m.tick);
    fflush(stdout);

    double t0 = now_s();
    struct job_out *total = mf_xcalloc(1, sizeof *total);
    if (o.jobs == 1 || o.trace >= 0) {
        work(&o, &m, vs, nv, 0, 1, total);
    } else {
        pid_t pids[JOBS_MAX];
        int fds[JOBS_MAX];
        for (unsigned j = 0; j < o.jobs; j++) {
            int p[2];
            if (pipe(p) != 0) {
                perror("mf-bench-decision: pipe");
                return 1;
            }
            pid_t pid = fork();
            if (pid < 0) {
                perror("mf-bench-decision: fork");
                return 1;
            }
            if (pid == 0) {
                close(p[0]);
                struct job_out *out = mf_xcalloc(1, sizeof *out);
                work(&o, &m, vs, nv, j, o.jobs, out);
                _exit(write_all(p[1], out, sizeof *out) ? 0 : 1);
            }
            close(p[1]);
            pids[j] = pid;
            fds[j] = p[0];
        }
        bool ok = true;
        struct job_out *part = mf_xcalloc(1, sizeof *part);
        for (unsigned j = 0; j < o.jobs; j++) {
            ok &= read_all(fds[j], part, sizeof *part);
            close(fds[j]);
            int st;
            ok &= waitpid(pids[j], &st, 0) == pids[j] && WIFEXITED(st) && WEXITSTATUS(st) == 0;
            for (size_t i = 0; i < nv; i++)
                for (size_t s = 0; s < N_SCEN; s++)
                    tally_add(&total->t[i][s], &part->t[i][s]);
        }
        free(part);
        if (!ok) {
            fprintf(stderr, "mf-bench-decision: a worker failed\n");
            return 1;
        }
    }
    double secs = now_s() - t0;

    printf("\ncolumns: per class (each rollout has %zu classes, the regression in every one): "
           "stopped (class failed and rolled back) at stage 1, by stage 2, at any stage, "
           "completed, paused (a stage timed out inconclusive); per rollout: some class stopped "
           "(any stage, by stage 2), paused; mean simulated seconds to a stop; controller steps "
           "per rollout\n",
           m.classes);
    for (size_t i = 0; i < nv; i++)
        print_table(&vs[i], total->t[i], &m);

    char load1[64];
    read_load(load1, sizeof load1);
    printf("\nran %.1f s; load after: %s\n", secs, load1);
    if (o.json)
        write_json(&o, vs, nv, total, load1, command);
    free(total);
    free(command);
    return 0;
}
