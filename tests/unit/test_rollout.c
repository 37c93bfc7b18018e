/* test_rollout.c — rollout/, the staged-rollout policy, as scenario tables:
 * a plan, a fleet snapshot, the progress and `now` go in, the expected
 * actions and evidence come out. Covers bucketing, stage coverage (percent and
 * min_devices), each gate signal (failure count and rate, crashes, the
 * accuracy drop with its McNemar p and upper bound, the floor, latency
 * ratios), inconclusive → extend → pause, per-class and whole failure with
 * rollback, pause on failure, duplicates, flapping devices, enrolment
 * mid-rollout, the FAILED state's re-sent rollbacks, watch and complete, a
 * full walk over a simulated fleet, and every plan_check refusal. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "common/err.h"
#include "common/hash.h"
#include "common/mem.h"
#include "common/stats.h"
#include "rollout/rollout.h"

#define ROLLOUT_ID 42
#define FLEET_MAX  512

static const char *const two_classes[] = {"orin", "pi4"};

/* ---- fixtures ---- */

static void plan_init(struct mf_rollout_plan *p)
{
    memset(p, 0, sizeof *p);
    p->id = ROLLOUT_ID;
    p->model = "digits";
    p->version = "2.0";
    p->classes = two_classes;
    p->n_classes = 2;
    const double pct[] = {1, 10, 50, 100};
    for (size_t i = 0; i < 4; i++)
        p->stages[i] = (struct mf_rollout_stage){.percent = pct[i],
                                                 .min_devices = 2,
                                                 .min_reporting = 2,
                                                 .soak_s = 600,
                                                 .timeout_s = 3600};
    p->n_stages = 4;
    p->gates = (struct mf_rollout_gates){.max_failure_rate = 0.2,
                                         .max_failures = 5,
                                         .max_crashes = 2,
                                         .min_accuracy = 0,
                                         .max_accuracy_drop = 0.01,
                                         .alpha = 0.05};
    p->on_fail = MF_ROLLOUT_ON_FAIL_ROLLBACK;
    p->scope = MF_ROLLOUT_PER_CLASS;
    p->watch_s = 1800;
}

static void progress_init(struct mf_rollout_progress *pr, size_t stage, int64_t started)
{
    memset(pr, 0, sizeof *pr);
    pr->status = MF_ROLLOUT_RUNNING;
    pr->stage = stage;
    pr->stage_started = started;
}

struct fleet {
    struct mf_rollout_device dev[FLEET_MAX];
    char id[FLEET_MAX][32];
    size_t n;
};

static struct fleet *fleet_new(void)
{
    return mf_xcalloc(1, sizeof(struct fleet));
}

static struct mf_rollout_device *fleet_add(struct fleet *f, const char *id, const char *cls)
{
    assert_true(f->n < FLEET_MAX);
    size_t i = f->n++;
    snprintf(f->id[i], sizeof f->id[i], "%s", id);
    struct mf_rollout_device *d = &f->dev[i];
    memset(d, 0, sizeof *d);
    d->id = f->id[i];
    d->hw_class = cls;
    d->online = true;
    d->previous_version = "1.0";
    return d;
}

/* n devices "<cls>-000".. of class cls. */
static void fleet_class(struct fleet *f, const char *cls, size_t n)
{
    char id[32];
    for (size_t i = 0; i < n; i++) {
        snprintf(id, sizeof id, "%s-%03zu", cls, i);
        fleet_add(f, id, cls);
    }
}

/* The usual start: the default plan, a fleet of two classes ("orin" and
 * "pi4") and a fresh progress at time 0. */
static struct fleet *fleet_start(struct mf_rollout_plan *p, struct mf_rollout_progress *pr,
                                 size_t orin, size_t pi4)
{
    plan_init(p);
    struct fleet *f = fleet_new();
    fleet_class(f, "orin", orin);
    fleet_class(f, "pi4", pi4);
    progress_init(pr, 0, 0);
    return f;
}

static struct mf_rollout_device *fleet_find(struct fleet *f, const char *id)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->dev[i].id, id) == 0)
            return &f->dev[i];
    return NULL;
}

/* A report of `n` items: the candidate right on 90% minus what only the
 * incumbent got, oc items only the candidate got, oi only the incumbent. */
static void report_paired(struct mf_rollout_device *d, uint64_t n, uint64_t oc, uint64_t oi)
{
    d->has_report = true;
    struct mf_rollout_report *r = &d->report;
    memset(r, 0, sizeof *r);
    r->n = n;
    r->has_incumbent = true;
    r->only_candidate = oc;
    r->only_incumbent = oi;
    r->both = n * 9 / 10 - oc;
    r->neither = n - r->both - oc - oi;
    r->correct = r->both + oc;
    r->p50_ratio = 1.0;
    r->p99_ratio = 1.0;
}

/* The effect of committing the actions (what the server shell does). */
static void fleet_apply(struct fleet *f, const struct mf_rollout_result *res)
{
    for (size_t i = 0; i < res->n_actions; i++) {
        const struct mf_rollout_action *a = &res->actions[i];
        if (a->kind != MF_ROLLOUT_ASSIGN && a->kind != MF_ROLLOUT_ROLLBACK)
            continue;
        struct mf_rollout_device *d = fleet_find(f, a->device);
        assert_non_null(d);
        if (a->kind == MF_ROLLOUT_ASSIGN) {
            assert_int_equal(d->outcome, MF_ROLLOUT_DEV_NONE); /* never twice */
            d->outcome = MF_ROLLOUT_DEV_ASSIGNED;
        } else {
            d->outcome = MF_ROLLOUT_DEV_ROLLED_BACK;
        }
    }
}

static size_t count_kind(const struct mf_rollout_result *res, enum mf_rollout_action_kind k,
                         const char *cls)
{
    size_t n = 0;
    for (size_t i = 0; i < res->n_actions; i++)
        if (res->actions[i].kind == k &&
            (!cls || (res->actions[i].hw_class && strcmp(res->actions[i].hw_class, cls) == 0)))
            n++;
    return n;
}

static const struct mf_rollout_action *find_kind(const struct mf_rollout_result *res,
                                                 enum mf_rollout_action_kind k, const char *cls)
{
    for (size_t i = 0; i < res->n_actions; i++)
        if (res->actions[i].kind == k &&
            (!cls || (res->actions[i].hw_class && strcmp(res->actions[i].hw_class, cls) == 0)))
            return &res->actions[i];
    return NULL;
}

static bool has_action_for(const struct mf_rollout_result *res, enum mf_rollout_action_kind k,
                           const char *device)
{
    for (size_t i = 0; i < res->n_actions; i++)
        if (res->actions[i].kind == k && res->actions[i].device &&
            strcmp(res->actions[i].device, device) == 0)
            return true;
    return false;
}

static const struct mf_rollout_evidence *evidence_of(const struct mf_rollout_result *res,
                                                     const char *cls)
{
    for (size_t i = 0; i < res->n_evidence; i++)
        if (strcmp(res->evidence[i].hw_class, cls) == 0)
            return &res->evidence[i];
    return NULL;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* What stage `st` should cover in class cls, computed here independently:
 * buckets below percent, at least min_devices. Returns the count and marks
 * the covered ids' buckets in *threshold (the largest covered bucket). */
static size_t expected_cover(const struct fleet *f, const char *cls,
                             const struct mf_rollout_stage *st, double *threshold)
{
    double b[FLEET_MAX];
    size_t n = 0, below = 0;
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->dev[i].hw_class, cls) == 0)
            b[n++] = mf_rollout_bucket(f->dev[i].id, ROLLOUT_ID);
    qsort(b, n, sizeof b[0], cmp_dbl);
    while (below < n && b[below] < st->percent / 100)
        below++;
    size_t cov = below;
    if (cov < st->min_devices)
        cov = st->min_devices < n ? st->min_devices : n;
    *threshold = cov ? b[cov - 1] : -1;
    return cov;
}

/* Devices of a class that took the candidate (any outcome but NONE). */
static size_t count_taken(const struct fleet *f, const char *cls)
{
    size_t n = 0;
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->dev[i].hw_class, cls) == 0 && f->dev[i].outcome != MF_ROLLOUT_DEV_NONE)
            n++;
    return n;
}

/* ---- bucketing ---- */

static void test_bucket(void **state)
{
    (void)state;
    /* The documented construction, recomputed with libsodium directly. */
    const char *msg = "modelfleet-bucket-v1\ndev-17\n42";
    uint8_t md[32];
    crypto_generichash(md, sizeof md, (const uint8_t *)msg, strlen(msg), NULL, 0);
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | md[i];
    double want = (double)(v >> 11) / 9007199254740992.0;
    assert_true(mf_rollout_bucket("dev-17", 42) == want);
    /* Deterministic, depends on both inputs. */
    assert_true(mf_rollout_bucket("dev-17", 42) == mf_rollout_bucket("dev-17", 42));
    assert_true(mf_rollout_bucket("dev-17", 43) != want);
    assert_true(mf_rollout_bucket("dev-18", 42) != want);
    /* Negative ids are printed in decimal like any other. */
    msg = "modelfleet-bucket-v1\nx\n-5";
    crypto_generichash(md, sizeof md, (const uint8_t *)msg, strlen(msg), NULL, 0);
    v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | md[i];
    assert_true(mf_rollout_bucket("x", -5) == (double)(v >> 11) / 9007199254740992.0);
    /* In [0, 1) and roughly uniform over 10000 ids. */
    char id[32];
    size_t below10 = 0, below50 = 0;
    for (int i = 0; i < 10000; i++) {
        snprintf(id, sizeof id, "device-%d", i);
        double b = mf_rollout_bucket(id, 7);
        assert_true(b >= 0 && b < 1);
        below10 += b < 0.1;
        below50 += b < 0.5;
    }
    assert_in_range(below10, 900, 1100);
    assert_in_range(below50, 4800, 5200);
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(mf_rollout_action_name(MF_ROLLOUT_ASSIGN), "assign");
    assert_string_equal(mf_rollout_action_name(MF_ROLLOUT_ROLLBACK), "rollback");
    assert_string_equal(mf_rollout_action_name(MF_ROLLOUT_FAIL_CLASS), "fail_class");
    assert_string_equal(mf_rollout_action_name(MF_ROLLOUT_COMPLETE), "complete");
    assert_string_equal(mf_rollout_action_name((enum mf_rollout_action_kind)99), "unknown");
    assert_string_equal(mf_rollout_verdict_name(MF_ROLLOUT_VERDICT_PASS), "pass");
    assert_string_equal(mf_rollout_verdict_name(MF_ROLLOUT_VERDICT_FAIL), "fail");
    assert_string_equal(mf_rollout_verdict_name(MF_ROLLOUT_VERDICT_INCONCLUSIVE), "inconclusive");
    assert_string_equal(mf_rollout_verdict_name((enum mf_rollout_verdict)9), "unknown");
    assert_string_equal(mf_rollout_status_name(MF_ROLLOUT_RUNNING), "running");
    assert_string_equal(mf_rollout_status_name(MF_ROLLOUT_WATCHING), "watching");
    assert_string_equal(mf_rollout_status_name(MF_ROLLOUT_ABORTED), "aborted");
    assert_string_equal(mf_rollout_status_name((enum mf_rollout_status)9), "unknown");
}

/* ---- plan_check ---- */

static void test_plan_check(void **state)
{
    (void)state;
    struct mf_rollout_plan p;
    struct mf_diag diag;
    plan_init(&p);
    assert_int_equal(mf_rollout_plan_check(&p, &diag), MF_OK);
    plan_init(&p);
    p.stages[0].min_devices = 0; /* percent alone is fine */
    p.watch_s = 0;
    p.gates.max_failure_rate = 0;
    assert_int_equal(mf_rollout_plan_check(&p, &diag), MF_OK);

    static const char *const dup[] = {"orin", "orin"};
    static const char *const badname[] = {"orin", "-pi"};
    static const char *const spaced[] = {"or in"};
    static const char *const empty[] = {""};
    static const char *const long65[] = {
        "a2345678901234567890123456789012345678901234567890123456789012345"};
    static const char *const long64[] = {
        "a234567890123456789012345678901234567890123456789012345678901234"};
    /* Table: a mutation, the field the diagnostic must name. */
    struct mf_rollout_plan q;
#define REFUSE(where_, stmt)                                                                       \
    do {                                                                                           \
        plan_init(&q);                                                                             \
        stmt;                                                                                      \
        memset(&diag, 0, sizeof diag);                                                             \
        assert_int_equal(mf_rollout_plan_check(&q, &diag), MF_ERR_SCHEMA);                         \
        assert_int_equal(diag.err, MF_ERR_SCHEMA);                                                 \
        assert_string_equal(diag.where, where_);                                                   \
        assert_true(diag.what[0] != 0);                                                            \
    } while (0)
    REFUSE("id", q.id = -1);
    REFUSE("model", q.model = NULL);
    REFUSE("model", q.model = "");
    REFUSE("version", q.version = "");
    REFUSE("classes", q.n_classes = 0);
    REFUSE("classes", q.n_classes = MF_ROLLOUT_CLASSES_MAX + 1);
    REFUSE("classes", q.classes = NULL);
    REFUSE("classes[1]", (q.classes = dup, q.n_classes = 2));
    REFUSE("classes[1]", (q.classes = badname, q.n_classes = 2));
    REFUSE("classes[0]", (q.classes = spaced, q.n_classes = 1));
    REFUSE("classes[0]", (q.classes = empty, q.n_classes = 1));
    REFUSE("classes[0]", (q.classes = long65, q.n_classes = 1));
    REFUSE("stages", q.n_stages = 0);
    REFUSE("stages", q.n_stages = MF_ROLLOUT_STAGES_MAX + 1);
    REFUSE("stages[0].percent", q.stages[0].percent = 0);
    REFUSE("stages[0].percent", q.stages[0].percent = -1);
    REFUSE("stages[0].percent", q.stages[0].percent = NAN);
    REFUSE("stages[3].percent", q.stages[3].percent = 100.5);
    REFUSE("stages[2].percent", q.stages[2].percent = 10);
    REFUSE("stages[2].percent", q.stages[2].percent = 5);
    REFUSE("stages[3].percent", q.stages[3].percent = 99);
    REFUSE("stages[2].percent", q.n_stages = 3);
    REFUSE("stages[1].min_reporting", q.stages[1].min_reporting = 0);
    REFUSE("stages[0].soak_s", q.stages[0].soak_s = -1);
    REFUSE("stages[0].timeout_s", q.stages[0].timeout_s = 0);
    REFUSE("stages[2].timeout_s", q.stages[2].timeout_s = 599);
    REFUSE("gates.max_failure_rate", q.gates.max_failure_rate = 1.5);
    REFUSE("gates.max_failure_rate", q.gates.max_failure_rate = -0.1);
    REFUSE("gates.min_accuracy", q.gates.min_accuracy = 2);
    REFUSE("gates.max_accuracy_drop", q.gates.max_accuracy_drop = NAN);
    REFUSE("gates.alpha", q.gates.alpha = 0);
    REFUSE("gates.alpha", q.gates.alpha = 0.51);
    REFUSE("gates.max_p50_ratio", q.gates.max_p50_ratio = -1);
    REFUSE("gates.max_p99_ratio", q.gates.max_p99_ratio = INFINITY);
    REFUSE("on_fail", q.on_fail = (enum mf_rollout_on_fail)7);
    REFUSE("scope", q.scope = (enum mf_rollout_scope)7);
    REFUSE("watch_s", q.watch_s = -1);
#undef REFUSE
    /* Edges that are fine: a 64-character class, alpha 0.5, one stage of 100. */
    plan_init(&q);
    q.classes = long64;
    q.n_classes = 1;
    q.gates.alpha = 0.5;
    q.stages[0].percent = 100;
    q.n_stages = 1;
    assert_int_equal(mf_rollout_plan_check(&q, NULL), MF_OK);
}

/* ---- coverage and assignment ---- */

/* The first step assigns exactly what stage 0 covers per class: buckets below
 * 1%, topped up to min_devices by lowest bucket; devices of classes not in
 * the plan are ignored; offline devices are assigned like online ones. */
static void test_first_step_assigns(void **state)
{
    (void)state;
    struct mf_rollout_plan p;
    plan_init(&p);
    p.stages[0].min_devices = 3;
    struct fleet *f = fleet_new();
    fleet_class(f, "orin", 150);
    fleet_class(f, "pi4", 120);
    fleet_class(f, "x86", 5); /* not targeted */
    for (size_t i = 0; i < f->n; i += 3)
        f->dev[i].online = false;
    struct mf_rollout_progress pr;
    progress_init(&pr, 0, 1000);
    struct mf_rollout_result res;

    for (size_t stage = 0; stage < 3; stage++) {
        pr.stage = stage;
        mf_rollout_step(&p, f->dev, f->n, &pr, 1000, &res);
        for (size_t c = 0; c < 2; c++) {
            const char *cls = two_classes[c];
            double thr;
            size_t want = expected_cover(f, cls, &p.stages[stage], &thr);
            assert_int_equal(count_kind(&res, MF_ROLLOUT_ASSIGN, cls), want);
            assert_true(want >= 3);
            if (stage > 0)
                assert_true(want > 3);
            /* Exactly the lowest buckets, in bucket order, naming the
             * candidate and the stage. */
            double last = -1;
            for (size_t i = 0; i < res.n_actions; i++) {
                const struct mf_rollout_action *a = &res.actions[i];
                if (a->kind != MF_ROLLOUT_ASSIGN || strcmp(a->hw_class, cls) != 0)
                    continue;
                double b = mf_rollout_bucket(a->device, ROLLOUT_ID);
                assert_true(b <= thr);
                assert_true(b > last);
                last = b;
                assert_string_equal(a->version, "2.0");
                assert_int_equal(a->stage, stage);
                assert_int_equal(a->evidence, -1);
                assert_string_equal(fleet_find(f, a->device)->hw_class, cls);
            }
            /* No reports yet: inconclusive, extended, evidence counts. */
            const struct mf_rollout_evidence *e = evidence_of(&res, cls);
            assert_non_null(e);
            assert_int_equal(e->verdict, MF_ROLLOUT_VERDICT_INCONCLUSIVE);
            assert_int_equal(e->targeted, want);
            assert_int_equal(e->assigned, 0);
            assert_int_equal(e->reporting, 0);
            assert_non_null(find_kind(&res, MF_ROLLOUT_EXTEND, cls));
        }
        assert_int_equal(count_kind(&res, MF_ROLLOUT_ASSIGN, "x86"), 0);
        assert_int_equal(res.n_evidence, 2);
        assert_int_equal(res.next.status, MF_ROLLOUT_RUNNING);
        assert_int_equal(res.next.stage, stage);
        mf_rollout_result_free(&res);
    }

    /* A class smaller than min_devices: all of it. */
    struct fleet *g = fleet_new();
    fleet_class(g, "orin", 2);
    fleet_class(g, "pi4", 40);
    p.stages[0].min_devices = 5;
    pr.stage = 0;
    mf_rollout_step(&p, g->dev, g->n, &pr, 1000, &res);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_ASSIGN, "orin"), 2);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_ASSIGN, "pi4"), 5);
    /* Already assigned devices are not assigned again. */
    fleet_apply(g, &res);
    mf_rollout_result_free(&res);
    mf_rollout_step(&p, g->dev, g->n, &pr, 1100, &res);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_ASSIGN, NULL), 0);
    assert_int_equal(evidence_of(&res, "pi4")->assigned, 5);
    mf_rollout_result_free(&res);
    free(g);
    free(f);
}

/* ---- inconclusive, extend, pause ---- */

/* One report where two are needed: extended until the timeout, paused right
 * after it; then no action while paused. */
static void test_too_few_reports(void **state)
{
    (void)state;
    struct mf_rollout_plan p;
    struct mf_rollout_progress pr;
    struct fleet *f = fleet_start(&p, &pr, 50, 50);
    struct mf_rollout_result res;
    mf_rollout_step(&p, f->dev, f->n, &pr, 0, &res);
    fleet_apply(f, &res);
    mf_rollout_result_free(&res);
    /* One device per class activates and reports; the other stays silent. */
    for (size_t c = 0; c < 2; c++)
        for (size_t i = 0; i < f->n; i++)
            if (strcmp(f->dev[i].hw_class, two_classes[c]) == 0 &&
                f->dev[i].outcome == MF_ROLLOUT_DEV_ASSIGNED) {
                f->dev[i].outcome = MF_ROLLOUT_DEV_ACTIVE;
                report_paired(&f->dev[i], 1000, 5, 5);
                break;
            }

    const struct {
        int64_t now;
        enum mf_rollout_action_kind kind;
        enum mf_rollout_status status;
    } table[] = {
        {100, MF_ROLLOUT_EXTEND, MF_ROLLOUT_RUNNING},
        {600, MF_ROLLOUT_EXTEND, MF_ROLLOUT_RUNNING},  /* soaked, still too few */
        {3600, MF_ROLLOUT_EXTEND, MF_ROLLOUT_RUNNING}, /* the timeout itself */
        {3601, MF_ROLLOUT_PAUSE, MF_ROLLOUT_PAUSED},
        {99999, MF_ROLLOUT_PAUSE, MF_ROLLOUT_PAUSED},
    };
    for (size_t t = 0; t < sizeof table / sizeof table[0]; t++) {
        mf_rollout_step(&p, f->dev, f->n, &pr, table[t].now, &res);
        assert_int_equal(res.next.status, table[t].status);
        assert_int_equal(count_kind(&res, MF_ROLLOUT_FAIL_CLASS, NULL), 0);
        assert_int_equal(count_kind(&res, MF_ROLLOUT_ROLLBACK, NULL), 0);
        assert_int_equal(count_kind(&res, MF_ROLLOUT_ASSIGN, NULL), 0);
        for (size_t c = 0; c < 2; c++) {
            const struct mf_rollout_evidence *e = evidence_of(&res, two_classes[c]);
            assert_int_equal(e->verdict, MF_ROLLOUT_VERDICT_INCONCLUSIVE);
            assert_int_equal(e->reporting, 1);
            assert_int_equal(e->assigned, 2);
            assert_non_null(strstr(e->reason, "1 of the 2 reports needed"));
        }
        if (table[t].kind == MF_ROLLOUT_EXTEND) {
            assert_int_equal(count_kind(&res, MF_ROLLOUT_EXTEND, NULL), 2);
            assert_int_equal(count_kind(&res, MF_ROLLOUT_PAUSE, NULL), 0);
        } else {
            assert_int_equal(count_kind(&res, MF_ROLLOUT_EXTEND, NULL), 0);
            assert_int_equal(count_kind(&res, MF_ROLLOUT_PAUSE, NULL), 1);
            const struct mf_rollout_action *a = find_kind(&res, MF_ROLLOUT_PAUSE, NULL);
            assert_null(a->hw_class);
            assert_true(a->evidence >= 0);
            assert_non_null(strstr(a->reason, "timeout 3600 s"));
        }
        mf_rollout_result_free(&res);
    }
    /* Paused: nothing happens, whatever the data says. */
    pr.status = MF_ROLLOUT_PAUSED;
    mf_rollout_step(&p, f->dev, f->n, &pr, 100000, &res);
    assert_int_equal(res.n_actions, 0);
    assert_int_equal(res.next.status, MF_ROLLOUT_PAUSED);
    mf_rollout_result_free(&res);
    /* Completed and aborted: nothing either. */
    pr.status = MF_ROLLOUT_ABORTED;
    mf_rollout_step(&p, f->dev, f->n, &pr, 100000, &res);
    assert_int_equal(res.n_actions, 0);
    mf_rollout_result_free(&res);
    pr.status = MF_ROLLOUT_COMPLETED;
    mf_rollout_step(&p, f->dev, f->n, &pr, 100000, &res);
    assert_int_equal(res.n_actions, 0);
    assert_int_equal(res.next.status, MF_ROLLOUT_COMPLETED);
    mf_rollout_result_free(&res);
    free(f);
}

/* An interval that straddles the margin: b = c = 4 of 360 per device has
 * an upper bound above 0.01, so it is inconclusive (never a fail), then
 * paused at the timeout. */
static void test_straddling_interval(void **state)
{
    (void)state;
    struct mf_rollout_plan p;
    plan_init(&p);
    p.n_classes = 1;
    struct fleet *f = fleet_new();
    for (int i = 0; i < 4; i++) {
        char id[16];
        snprintf(id, sizeof id, "o%d", i);
        struct mf_rollout_device *d = fleet_add(f, id, "orin");
        d->outcome = MF_ROLLOUT_DEV_ACTIVE;
        report_paired(d, 360, 4, 4);
    }
    struct mf_rollout_progress pr;
    progress_init(&pr, 3, 0);
    struct mf_rollout_result res;
    mf_rollout_step(&p, f->dev, f->n, &pr, 1000, &res);
    const struct mf_rollout_evidence *e = evidence_of(&res, "orin");
    assert_int_equal(e->verdict, MF_ROLLOUT_VERDICT_INCONCLUSIVE);
    assert_float_equal(e->drop, 0, 1e-15);
    double z = mf_stats_normal_quantile(0.95);
    assert_float_equal(e->drop_upper, z * sqrt(8.0) / 360 + 1.0 / 360, 1e-12);
    assert_true(e->drop_upper > 0.01);
    assert_float_equal(e->p_worse, mf_stats_binom_tail_half(8, 4), 1e-15);
    assert_non_null(strstr(e->reason, "non-inferiority not shown"));
    assert_int_equal(count_kind(&res, MF_ROLLOUT_EXTEND, "orin"), 1);
    mf_rollout_result_free(&res);
    mf_rollout_step(&p, f->dev, f->n, &pr, 3601, &res);
    assert_int_equal(res.next.status, MF_ROLLOUT_PAUSED);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_FAIL_CLASS, NULL), 0);
    mf_rollout_result_free(&res);
    free(f);
}

/* ---- the accuracy gate ---- */

/* Three devices with 360 items each, (only candidate, only incumbent) =
 * (1, 8), (0, 9), (2, 7): pooled 3 vs 24 of 1080, a 1.94-point drop; mean
 * table 1 vs 8 of 360, p = P[X >= 8 | Bin(9, 1/2)] = 10/512. A fail: the
 * class stops and exactly the devices that took the candidate (and have
 * something to go back to) are rolled back; the other class goes on. */
static void set_drop_class(struct fleet *f, const char *cls, const char *prefix)
{
    const uint64_t oc[3] = {1, 0, 2}, oi[3] = {8, 9, 7};
    char id[32];
    for (int i = 0; i < 3; i++) {
        snprintf(id, sizeof id, "%s-r%d", prefix, i);
        struct mf_rollout_device *d = fleet_add(f, id, cls);
        d->outcome = MF_ROLLOUT_DEV_ACTIVE;
        report_paired(d, 360, oc[i], oi[i]);
    }
}

static void test_accuracy_drop_fails(void **state)
{
    (void)state;
    struct mf_rollout_plan p;
    plan_init(&p);
    struct fleet *f = fleet_new();
    set_drop_class(f, "orin", "orin");
    struct mf_rollout_device *d;
    d = fleet_add(f, "orin-assigned", "orin"); /* sent, offline, silent */
    d->outcome = MF_ROLLOUT_DEV_ASSIGNED;
    d->online = false;
    d = fleet_add(f, "orin-refused", "orin");
    d->outcome = MF_ROLLOUT_DEV_REFUSED;
    d = fleet_add(f, "orin-first", "orin"); /* first install: nothing to go back to */
    d->outcome = MF_ROLLOUT_DEV_ACTIVE;
    d->previous_version = "";
    d = fleet_add(f, "orin-none", "orin"); /* never assigned */
    d = fleet_add(f, "orin-back", "orin"); /* already rolled back */
    d->outcome = MF_ROLLOUT_DEV_ROLLED_BACK;
    fleet_class(f, "pi4", 20); /* nothing reported yet */
    p.gates.max_failure_rate = 0.5;

    struct mf_rollout_progress pr;
    progress_init(&pr, 0, 0);
    struct mf_rollout_result res;
    mf_rollout_step(&p, f->dev, f->n, &pr, 100, &res);

    const struct mf_rollout_evidence *e = evidence_of(&res, "orin");
    assert_non_null(e);
    assert_int_equal(e->verdict, MF_ROLLOUT_VERDICT_FAIL);
    assert_int_equal(e->assigned, 7);
    assert_int_equal(e->active, 4);
    assert_int_equal(e->refused, 1);
    assert_int_equal(e->reporting, 3);
    assert_int_equal(e->with_incumbent, 3);
    assert_int_equal(e->n, 1080);
    assert_int_equal(e->only_candidate, 3);
    assert_int_equal(e->only_incumbent, 24);
    assert_int_equal(e->both + e->only_candidate + e->only_incumbent + e->neither, 1080);
    assert_int_equal(e->correct, e->both + e->only_candidate);
    assert_float_equal(e->drop, 21.0 / 1080, 1e-15);
    assert_float_equal(e->accuracy, (double)e->correct / 1080, 1e-15);
    assert_float_equal(e->p_worse, 10.0 / 512, 1e-13);
    double n = 360, b = 1, c = 8;
    double upper =
        (c - b) / n +
        mf_stats_normal_quantile(0.95) * sqrt((b + c - (c - b) * (c - b) / n) / (n * n)) + 1 / n;
    assert_float_equal(e->drop_upper, upper, 1e-12);
    assert_non_null(strstr(e->reason, "accuracy drop 0.0194"));
    assert_non_null(strstr(e->reason, "p = 0.0195 < alpha 0.05"));
    assert_non_null(strstr(e->reason, "margin 0.0100"));

    const struct mf_rollout_action *fc = find_kind(&res, MF_ROLLOUT_FAIL_CLASS, "orin");
    assert_non_null(fc);
    assert_int_equal(fc->evidence, (int)(e - res.evidence));
    assert_int_equal(count_kind(&res, MF_ROLLOUT_FAIL_CLASS, NULL), 1);
    /* Rolled back: exactly the three reporters, the silent one and the
     * refused one; not the first install, not the unassigned, not the one
     * already back. */
    assert_int_equal(count_kind(&res, MF_ROLLOUT_ROLLBACK, NULL), 5);
    const char *back[] = {"orin-r0", "orin-r1", "orin-r2", "orin-assigned", "orin-refused"};
    for (size_t i = 0; i < 5; i++)
        assert_true(has_action_for(&res, MF_ROLLOUT_ROLLBACK, back[i]));
    for (size_t i = 0; i < res.n_actions; i++)
        if (res.actions[i].kind == MF_ROLLOUT_ROLLBACK) {
            assert_string_equal(res.actions[i].version, "1.0");
            assert_string_equal(res.actions[i].hw_class, "orin");
            assert_int_equal(res.actions[i].evidence, fc->evidence);
        }
    assert_false(has_action_for(&res, MF_ROLLOUT_ASSIGN, "orin-none"));
    assert_int_equal(count_kind(&res, MF_ROLLOUT_ASSIGN, "orin"), 0);
    /* pi4 goes on: extended, assigned its first devices. */
    assert_int_equal(res.next.classes[0], MF_ROLLOUT_CLASS_FAILED);
    assert_int_equal(res.next.classes[1], MF_ROLLOUT_CLASS_ACTIVE);
    assert_int_equal(res.next.status, MF_ROLLOUT_RUNNING);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_EXTEND, "pi4"), 1);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_ASSIGN, "pi4"), 2);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_FAIL, NULL), 0);

    /* Next step, two of the rollbacks recorded: the other three are sent
     * again, orin is not judged again, and nothing is assigned there. */
    struct mf_rollout_progress pr2 = res.next;
    fleet_find(f, "orin-r0")->outcome = MF_ROLLOUT_DEV_ROLLED_BACK;
    fleet_find(f, "orin-r1")->outcome = MF_ROLLOUT_DEV_ROLLED_BACK;
    mf_rollout_result_free(&res);
    mf_rollout_step(&p, f->dev, f->n, &pr2, 200, &res);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_ROLLBACK, "orin"), 3);
    assert_true(has_action_for(&res, MF_ROLLOUT_ROLLBACK, "orin-r2"));
    assert_null(evidence_of(&res, "orin"));
    assert_int_equal(count_kind(&res, MF_ROLLOUT_ASSIGN, "orin"), 0);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_FAIL_CLASS, NULL), 0);
    mf_rollout_result_free(&res);

    /* The same data, but not significant (alpha 0.01): the drop alone does
     * not fail the class; the interval keeps it inconclusive. */
    p.gates.alpha = 0.01;
    mf_rollout_step(&p, f->dev, f->n, &pr, 100, &res);
    e = evidence_of(&res, "orin");
    assert_int_equal(e->verdict, MF_ROLLOUT_VERDICT_INCONCLUSIVE);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_ROLLBACK, NULL), 0);
    mf_rollout_result_free(&res);
    free(f);
}

/* Noise alone: 1000 items, 5 vs 5 discordant per device. Inconclusive while
 * soaking, a pass once soaked, and the rollout advances (and assigns the
 * next stage's devices) only then. */
static void test_noise_passes(void **state)
{
    (void)state;
    struct mf_rollout_plan p;
    struct mf_rollout_progress pr;
    struct fleet *f = fleet_start(&p, &pr, 100, 100);
    struct mf_rollout_result res;
    mf_rollout_step(&p, f->dev, f->n, &pr, 0, &res);
    fleet_apply(f, &res);
    mf_rollout_result_free(&res);
    for (size_t i = 0; i < f->n; i++)
        if (f->dev[i].outcome == MF_ROLLOUT_DEV_ASSIGNED) {
            f->dev[i].outcome = MF_ROLLOUT_DEV_ACTIVE;
            report_paired(&f->dev[i], 1000, 5, 5);
        }

    mf_rollout_step(&p, f->dev, f->n, &pr, 599, &res);
    for (size_t c = 0; c < 2; c++) {
        const struct mf_rollout_evidence *e = evidence_of(&res, two_classes[c]);
        assert_int_equal(e->verdict, MF_ROLLOUT_VERDICT_INCONCLUSIVE);
        assert_non_null(strstr(e->reason, "soaking: 599 s of 600 s"));
        assert_true(e->drop_upper <= 0.01);
    }
    assert_int_equal(count_kind(&res, MF_ROLLOUT_ADVANCE, NULL), 0);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_EXTEND, NULL), 2);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_ASSIGN, NULL), 0);
    assert_int_equal(res.next.stage, 0);
    mf_rollout_result_free(&res);

    mf_rollout_step(&p, f->dev, f->n, &pr, 600, &res);
    for (size_t c = 0; c < 2; c++) {
        const struct mf_rollout_evidence *e = evidence_of(&res, two_classes[c]);
        assert_int_equal(e->verdict, MF_ROLLOUT_VERDICT_PASS);
        assert_float_equal(e->drop, 0, 1e-15);
        assert_float_equal(e->p_worse, mf_stats_binom_tail_half(10, 5), 1e-15);
        double z = mf_stats_normal_quantile(0.95);
        assert_float_equal(e->drop_upper, z * sqrt(10.0) / 1000 + 0.001, 1e-12);
        assert_float_equal(e->p50_ratio, 1.0, 0);
        double thr;
        size_t want = expected_cover(f, two_classes[c], &p.stages[1], &thr);
        assert_int_equal(count_kind(&res, MF_ROLLOUT_ASSIGN, two_classes[c]), want - 2);
    }
    const struct mf_rollout_action *a = find_kind(&res, MF_ROLLOUT_ADVANCE, NULL);
    assert_non_null(a);
    assert_int_equal(a->stage, 1);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_ADVANCE, NULL), 1);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_EXTEND, NULL), 0);
    assert_int_equal(res.next.stage, 1);
    assert_int_equal(res.next.stage_started, 600);
    assert_int_equal(res.next.status, MF_ROLLOUT_RUNNING);
    for (size_t i = 0; i < res.n_actions; i++)
        if (res.actions[i].kind == MF_ROLLOUT_ASSIGN)
            assert_int_equal(res.actions[i].stage, 1);
    mf_rollout_result_free(&res);
    free(f);
}

/* ---- one class failing, the other passing ---- */

static void test_one_class_fails(void **state)
{
    (void)state;
    struct mf_rollout_plan p;
    plan_init(&p);
    p.gates.max_failure_rate = 1;
    struct fleet *f = fleet_new();
    set_drop_class(f, "orin", "orin"); /* fails */
    for (int i = 0; i < 3; i++) {      /* passes */
        char id[16];
        snprintf(id, sizeof id, "pi4-r%d", i);
        struct mf_rollout_device *d = fleet_add(f, id, "pi4");
        d->outcome = MF_ROLLOUT_DEV_ACTIVE;
        report_paired(d, 1000, 4, 5);
    }
    fleet_class(f, "orin", 60);
    fleet_class(f, "pi4", 60);
    struct mf_rollout_progress pr;
    progress_init(&pr, 0, 0);
    struct mf_rollout_result res;

    /* Per class: orin fails and goes back, pi4 advances to stage 1 alone. */
    mf_rollout_step(&p, f->dev, f->n, &pr, 700, &res);
    assert_int_equal(evidence_of(&res, "orin")->verdict, MF_ROLLOUT_VERDICT_FAIL);
    assert_int_equal(evidence_of(&res, "pi4")->verdict, MF_ROLLOUT_VERDICT_PASS);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_FAIL_CLASS, "orin"), 1);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_ROLLBACK, "orin"), 3);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_ROLLBACK, "pi4"), 0);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_ADVANCE, NULL), 1);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_FAIL, NULL), 0);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_ASSIGN, "orin"), 0);
    assert_true(count_kind(&res, MF_ROLLOUT_ASSIGN, "pi4") > 0);
    assert_int_equal(res.next.stage, 1);
    assert_int_equal(res.next.status, MF_ROLLOUT_RUNNING);
    assert_int_equal(res.next.classes[0], MF_ROLLOUT_CLASS_FAILED);
    assert_int_equal(res.next.classes[1], MF_ROLLOUT_CLASS_ACTIVE);
    /* Deterministic order: the fail and its rollbacks, then the advance,
     * then the assignments. */
    size_t i_fail = SIZE_MAX, i_adv = SIZE_MAX, i_first_assign = SIZE_MAX, i_last_rb = 0;
    for (size_t i = 0; i < res.n_actions; i++) {
        enum mf_rollout_action_kind k = res.actions[i].kind;
        if (k == MF_ROLLOUT_FAIL_CLASS)
            i_fail = i;
        if (k == MF_ROLLOUT_ROLLBACK)
            i_last_rb = i;
        if (k == MF_ROLLOUT_ADVANCE)
            i_adv = i;
        if (k == MF_ROLLOUT_ASSIGN && i_first_assign == SIZE_MAX)
            i_first_assign = i;
    }
    assert_true(i_fail < i_last_rb && i_last_rb < i_adv && i_adv < i_first_assign);
    /* The same inputs, the same actions. */
    struct mf_rollout_result again;
    mf_rollout_step(&p, f->dev, f->n, &pr, 700, &again);
    assert_int_equal(again.n_actions, res.n_actions);
    for (size_t i = 0; i < res.n_actions; i++) {
        assert_int_equal(again.actions[i].kind, res.actions[i].kind);
        assert_ptr_equal(again.actions[i].device, res.actions[i].device);
        assert_string_equal(again.actions[i].reason, res.actions[i].reason);
    }
    mf_rollout_result_free(&again);
    mf_rollout_result_free(&res);

    /* Whole: one failing class fails the rollout and everything that took
     * the candidate, in both classes, goes back; nothing advances. */
    p.scope = MF_ROLLOUT_WHOLE;
    mf_rollout_step(&p, f->dev, f->n, &pr, 700, &res);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_FAIL_CLASS, "orin"), 1);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_FAIL_CLASS, "pi4"), 0);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_FAIL, NULL), 1);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_ROLLBACK, "orin"), 3);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_ROLLBACK, "pi4"), 3);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_ADVANCE, NULL), 0);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_ASSIGN, NULL), 0);
    assert_int_equal(res.next.status, MF_ROLLOUT_FAILED);
    assert_non_null(strstr(find_kind(&res, MF_ROLLOUT_FAIL, NULL)->reason, "scope is whole"));

    /* FAILED re-sends the rollbacks that have not landed, and nothing else. */
    struct mf_rollout_progress failed = res.next;
    mf_rollout_result_free(&res);
    fleet_find(f, "orin-r0")->outcome = MF_ROLLOUT_DEV_ROLLED_BACK;
    fleet_find(f, "pi4-r1")->outcome = MF_ROLLOUT_DEV_ROLLED_BACK;
    mf_rollout_step(&p, f->dev, f->n, &failed, 5000, &res);
    assert_int_equal(res.n_actions, 4);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_ROLLBACK, NULL), 4);
    assert_false(has_action_for(&res, MF_ROLLOUT_ROLLBACK, "orin-r0"));
    assert_false(has_action_for(&res, MF_ROLLOUT_ROLLBACK, "pi4-r1"));
    assert_true(has_action_for(&res, MF_ROLLOUT_ROLLBACK, "pi4-r2"));
    assert_int_equal(res.n_evidence, 0);
    assert_int_equal(res.next.status, MF_ROLLOUT_FAILED);
    mf_rollout_result_free(&res);
    for (size_t i = 0; i < f->n; i++)
        if (f->dev[i].outcome != MF_ROLLOUT_DEV_NONE)
            f->dev[i].outcome = MF_ROLLOUT_DEV_ROLLED_BACK;
    mf_rollout_step(&p, f->dev, f->n, &failed, 6000, &res);
    assert_int_equal(res.n_actions, 0); /* converged */
    mf_rollout_result_free(&res);
    free(f);
}

/* on_fail = pause: the failing class stops, nothing is rolled back, the
 * rollout pauses for a person; when it was the only class, it fails. */
static void test_fail_pause(void **state)
{
    (void)state;
    struct mf_rollout_plan p;
    plan_init(&p);
    p.on_fail = MF_ROLLOUT_ON_FAIL_PAUSE;
    struct fleet *f = fleet_new();
    set_drop_class(f, "orin", "orin");
    fleet_class(f, "pi4", 30);
    struct mf_rollout_progress pr;
    progress_init(&pr, 0, 0);
    struct mf_rollout_result res;
    mf_rollout_step(&p, f->dev, f->n, &pr, 100, &res);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_FAIL_CLASS, "orin"), 1);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_PAUSE, NULL), 1);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_ROLLBACK, NULL), 0);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_ASSIGN, NULL), 0);
    assert_int_equal(res.next.status, MF_ROLLOUT_PAUSED);
    assert_int_equal(res.next.classes[0], MF_ROLLOUT_CLASS_FAILED);
    mf_rollout_result_free(&res);
    /* Resumed (the shell sets running): the failed class gets no rollback
     * (pause never rolls back), pi4 goes on. */
    pr.classes[0] = MF_ROLLOUT_CLASS_FAILED;
    mf_rollout_step(&p, f->dev, f->n, &pr, 200, &res);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_ROLLBACK, NULL), 0);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_ASSIGN, "pi4"), 2);
    assert_int_equal(res.next.status, MF_ROLLOUT_RUNNING);
    mf_rollout_result_free(&res);
    /* FAILED with on_fail = pause sends no rollbacks either. */
    pr.status = MF_ROLLOUT_FAILED;
    mf_rollout_step(&p, f->dev, f->n, &pr, 300, &res);
    assert_int_equal(res.n_actions, 0);
    mf_rollout_result_free(&res);
    /* One class only: its failure is the rollout's. */
    p.n_classes = 1;
    progress_init(&pr, 0, 0);
    mf_rollout_step(&p, f->dev, f->n, &pr, 100, &res);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_FAIL, NULL), 1);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_PAUSE, NULL), 0);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_ROLLBACK, NULL), 0);
    assert_int_equal(res.next.status, MF_ROLLOUT_FAILED);
    mf_rollout_result_free(&res);
    /* ... and with rollback, every class failing fails the rollout with
     * its rollbacks. */
    p.on_fail = MF_ROLLOUT_ON_FAIL_ROLLBACK;
    mf_rollout_step(&p, f->dev, f->n, &pr, 100, &res);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_FAIL, NULL), 1);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_ROLLBACK, NULL), 3);
    assert_non_null(strstr(find_kind(&res, MF_ROLLOUT_FAIL, NULL)->reason, "every class"));
    mf_rollout_result_free(&res);
    free(f);
}

/* ---- flapping, duplicates ---- */

/* A device going online and offline changes nothing: it is assigned either
 * way, never twice, and its missing report keeps the class inconclusive,
 * never failed. */
static void test_flapping_device(void **state)
{
    (void)state;
    struct mf_rollout_plan p;
    plan_init(&p);
    p.n_classes = 1;
    p.stages[0].min_devices = 3;
    p.stages[0].min_reporting = 3;
    struct fleet *f = fleet_new();
    fleet_class(f, "orin", 40);
    struct mf_rollout_progress pr;
    progress_init(&pr, 0, 0);
    struct mf_rollout_result on, off;
    /* The lowest bucket flaps. */
    size_t low = 0;
    for (size_t i = 1; i < f->n; i++)
        if (mf_rollout_bucket(f->dev[i].id, ROLLOUT_ID) <
            mf_rollout_bucket(f->dev[low].id, ROLLOUT_ID))
            low = i;
    f->dev[low].online = true;
    mf_rollout_step(&p, f->dev, f->n, &pr, 0, &on);
    f->dev[low].online = false;
    mf_rollout_step(&p, f->dev, f->n, &pr, 0, &off);
    assert_int_equal(on.n_actions, off.n_actions);
    for (size_t i = 0; i < on.n_actions; i++) {
        assert_int_equal(on.actions[i].kind, off.actions[i].kind);
        assert_ptr_equal(on.actions[i].device, off.actions[i].device);
    }
    assert_true(has_action_for(&off, MF_ROLLOUT_ASSIGN, f->dev[low].id));
    fleet_apply(f, &on);
    mf_rollout_result_free(&on);
    mf_rollout_result_free(&off);
    /* The two others report well; the flapper never does. */
    for (size_t i = 0; i < f->n; i++)
        if (i != low && f->dev[i].outcome == MF_ROLLOUT_DEV_ASSIGNED) {
            f->dev[i].outcome = MF_ROLLOUT_DEV_ACTIVE;
            report_paired(&f->dev[i], 1000, 5, 5);
        }
    for (int t = 1; t <= 8; t++) {
        f->dev[low].online = t % 2;
        struct mf_rollout_result res;
        mf_rollout_step(&p, f->dev, f->n, &pr, t * 600, &res);
        const struct mf_rollout_evidence *e = evidence_of(&res, "orin");
        assert_int_equal(e->verdict, MF_ROLLOUT_VERDICT_INCONCLUSIVE);
        assert_int_equal(e->reporting, 2);
        assert_int_equal(e->assigned, 3);
        assert_int_equal(count_kind(&res, MF_ROLLOUT_ASSIGN, NULL), 0);
        assert_int_equal(count_kind(&res, MF_ROLLOUT_FAIL_CLASS, NULL), 0);
        assert_int_equal(count_kind(&res, MF_ROLLOUT_ROLLBACK, NULL), 0);
        assert_int_equal(res.next.status, t * 600 > 3600 ? MF_ROLLOUT_PAUSED : MF_ROLLOUT_RUNNING);
        mf_rollout_result_free(&res);
    }
    free(f);
}

/* A device listed several times counts once (its first entry): one
 * assignment, one report, and a later conflicting entry is ignored. */
static void test_duplicates(void **state)
{
    (void)state;
    struct mf_rollout_plan p;
    plan_init(&p);
    p.n_classes = 1;
    p.gates.max_failures = 0;
    struct fleet *f = fleet_new();
    fleet_class(f, "orin", 30);
    struct mf_rollout_progress pr;
    progress_init(&pr, 0, 0);
    struct mf_rollout_result res;
    /* Every device twice. */
    size_t n0 = f->n;
    for (size_t i = 0; i < n0; i++)
        *fleet_add(f, f->id[i], "orin") = f->dev[i];
    mf_rollout_step(&p, f->dev, f->n, &pr, 0, &res);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_ASSIGN, NULL), 2);
    assert_int_equal(evidence_of(&res, "orin")->targeted, 2);
    mf_rollout_result_free(&res);

    /* Three reports from one device (the same entry thrice), one more
     * device; the duplicates of the first say FAILED and crashed: ignored. */
    struct fleet *g = fleet_new();
    struct mf_rollout_device *a = fleet_add(g, "a", "orin");
    a->outcome = MF_ROLLOUT_DEV_ACTIVE;
    report_paired(a, 1000, 5, 5);
    *fleet_add(g, "a", "orin") = *a;
    struct mf_rollout_device *a3 = fleet_add(g, "a", "orin");
    *a3 = *a;
    a3->outcome = MF_ROLLOUT_DEV_FAILED;
    a3->crashes = 10;
    struct mf_rollout_device *b = fleet_add(g, "b", "orin");
    b->outcome = MF_ROLLOUT_DEV_ACTIVE;
    report_paired(b, 1000, 5, 5);
    mf_rollout_step(&p, g->dev, g->n, &pr, 1000, &res);
    const struct mf_rollout_evidence *e = evidence_of(&res, "orin");
    assert_int_equal(e->reporting, 2);
    assert_int_equal(e->assigned, 2);
    assert_int_equal(e->failed, 0);
    assert_int_equal(e->crashes, 0);
    assert_int_equal(e->n, 2000);
    assert_int_equal(e->verdict, MF_ROLLOUT_VERDICT_PASS);
    mf_rollout_result_free(&res);
    /* mf_rollout_judge directly, with the same pointer three times. */
    const struct mf_rollout_device *ptrs[] = {&g->dev[0], &g->dev[0], &g->dev[3], &g->dev[0]};
    struct mf_rollout_evidence ev;
    mf_rollout_judge(&p, 0, "orin", ptrs, 4, 1000, &ev);
    assert_int_equal(ev.reporting, 2);
    assert_int_equal(ev.targeted, 2);
    assert_int_equal(ev.verdict, MF_ROLLOUT_VERDICT_PASS);
    /* A device of another class handed to judge is not counted. */
    g->dev[3].hw_class = "pi4";
    mf_rollout_judge(&p, 0, "orin", ptrs, 4, 1000, &ev);
    assert_int_equal(ev.reporting, 1);
    assert_int_equal(ev.verdict, MF_ROLLOUT_VERDICT_INCONCLUSIVE);
    free(g);
    free(f);
}

/* ---- failure counts and rates, crashes, floor, latency ---- */

static void test_failures_and_crashes(void **state)
{
    (void)state;
    struct mf_rollout_plan p;
    plan_init(&p);
    p.n_classes = 1;
    p.gates.max_failures = 5;
    p.gates.max_failure_rate = 0.2;
    struct fleet *f = fleet_new();
    for (int i = 0; i < 10; i++) {
        char id[16];
        snprintf(id, sizeof id, "o%d", i);
        struct mf_rollout_device *d = fleet_add(f, id, "orin");
        d->outcome = i < 3 ? MF_ROLLOUT_DEV_REFUSED : MF_ROLLOUT_DEV_ACTIVE;
        report_paired(d, 1000, 5, 5);
    }
    const struct mf_rollout_device *ptrs[10];
    for (int i = 0; i < 10; i++)
        ptrs[i] = &f->dev[i];
    struct mf_rollout_evidence e;

    /* 3 refusals of 10: rate 0.3 > 0.2 (count 3 <= 5). */
    mf_rollout_judge(&p, 0, "orin", ptrs, 10, 0, &e);
    assert_int_equal(e.verdict, MF_ROLLOUT_VERDICT_FAIL);
    assert_int_equal(e.refused, 3);
    assert_non_null(strstr(e.reason, "failure rate 0.3000"));
    assert_non_null(strstr(e.reason, "limit 0.2000"));
    /* At the rate limit exactly: not a fail. */
    f->dev[2].outcome = MF_ROLLOUT_DEV_ACTIVE;
    mf_rollout_judge(&p, 0, "orin", ptrs, 10, 1000, &e);
    assert_int_equal(e.verdict, MF_ROLLOUT_VERDICT_PASS);
    /* The count: 3 failures and refusals over max_failures 2 (any rate allowed). */
    f->dev[2].outcome = MF_ROLLOUT_DEV_FAILED;
    p.gates.max_failures = 2;
    p.gates.max_failure_rate = 1;
    mf_rollout_judge(&p, 0, "orin", ptrs, 10, 1000, &e);
    assert_int_equal(e.verdict, MF_ROLLOUT_VERDICT_FAIL);
    assert_int_equal(e.failed, 1);
    assert_non_null(strstr(e.reason, "3 failed installs and refusals"));
    assert_non_null(strstr(e.reason, "limit of 2"));
    p.gates.max_failures = 3;
    mf_rollout_judge(&p, 0, "orin", ptrs, 10, 1000, &e);
    assert_int_equal(e.verdict, MF_ROLLOUT_VERDICT_PASS);
    /* Crashes: 3 over 2. */
    f->dev[5].crashes = 2;
    f->dev[6].crashes = 1;
    mf_rollout_judge(&p, 0, "orin", ptrs, 10, 1000, &e);
    assert_int_equal(e.crashes, 3);
    assert_int_equal(e.verdict, MF_ROLLOUT_VERDICT_FAIL);
    assert_non_null(strstr(e.reason, "3 runner crashes"));
    f->dev[6].crashes = 0;
    mf_rollout_judge(&p, 0, "orin", ptrs, 10, 1000, &e);
    assert_int_equal(e.verdict, MF_ROLLOUT_VERDICT_PASS);

    /* Through a step: the refusals fail the class and roll back every
     * device that took the candidate, refused ones included. */
    p.gates.max_failure_rate = 0.2;
    for (int i = 0; i < 3; i++)
        f->dev[i].outcome = MF_ROLLOUT_DEV_REFUSED;
    struct mf_rollout_progress pr;
    progress_init(&pr, 3, 0);
    struct mf_rollout_result res;
    mf_rollout_step(&p, f->dev, f->n, &pr, 10, &res);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_FAIL_CLASS, "orin"), 1);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_FAIL, NULL), 1);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_ROLLBACK, NULL), 10);
    assert_true(has_action_for(&res, MF_ROLLOUT_ROLLBACK, "o0"));
    mf_rollout_result_free(&res);
    free(f);
}

static void test_floor_and_latency(void **state)
{
    (void)state;
    struct mf_rollout_plan p;
    plan_init(&p);
    p.n_classes = 1;
    p.stages[0].min_reporting = 3;
    p.gates.max_p99_ratio = 1.5;
    struct fleet *f = fleet_new();
    const double p99[3] = {1.4, 1.7, 1.8};
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof id, "o%d", i);
        struct mf_rollout_device *d = fleet_add(f, id, "orin");
        d->outcome = MF_ROLLOUT_DEV_ACTIVE;
        report_paired(d, 1000, 5, 5);
        d->report.p99_ratio = p99[i];
        d->report.p50_ratio = 1.1;
    }
    const struct mf_rollout_device *ptrs[3] = {&f->dev[0], &f->dev[1], &f->dev[2]};
    struct mf_rollout_evidence e;
    /* Median p99 ratio 1.7 > 1.5. */
    mf_rollout_judge(&p, 0, "orin", ptrs, 3, 1000, &e);
    assert_int_equal(e.verdict, MF_ROLLOUT_VERDICT_FAIL);
    assert_float_equal(e.p99_ratio, 1.7, 1e-15);
    assert_float_equal(e.p50_ratio, 1.1, 1e-15);
    assert_non_null(strstr(e.reason, "median p99 latency ratio 1.700"));
    /* Too few reports for the latency signal: inconclusive, not a fail. */
    mf_rollout_judge(&p, 0, "orin", ptrs, 2, 1000, &e);
    assert_int_equal(e.verdict, MF_ROLLOUT_VERDICT_INCONCLUSIVE);
    /* One outlier does not move the median: 1.2, 1.4, 2.5 → 1.4, a pass. */
    f->dev[0].report.p99_ratio = 1.2;
    f->dev[1].report.p99_ratio = 2.5;
    f->dev[2].report.p99_ratio = 1.4;
    mf_rollout_judge(&p, 0, "orin", ptrs, 3, 1000, &e);
    assert_float_equal(e.p99_ratio, 1.4, 1e-15);
    assert_int_equal(e.verdict, MF_ROLLOUT_VERDICT_PASS);
    /* Even count: the mean of the middle two. */
    mf_rollout_judge(&p, 0, "orin", ptrs, 2, 1000, &e);
    assert_float_equal(e.p99_ratio, 1.85, 1e-15);
    /* The p50 limit. */
    p.gates.max_p50_ratio = 1.05;
    mf_rollout_judge(&p, 0, "orin", ptrs, 3, 1000, &e);
    assert_int_equal(e.verdict, MF_ROLLOUT_VERDICT_FAIL);
    assert_non_null(strstr(e.reason, "median p50 latency ratio 1.100"));
    p.gates.max_p50_ratio = 0;
    /* The floor: pooled accuracy 0.9 under 0.95. */
    p.gates.min_accuracy = 0.95;
    mf_rollout_judge(&p, 0, "orin", ptrs, 3, 1000, &e);
    assert_int_equal(e.verdict, MF_ROLLOUT_VERDICT_FAIL);
    assert_float_equal(e.accuracy, 0.9, 1e-12);
    assert_int_equal(e.correct, 2700);
    assert_non_null(strstr(e.reason, "below the floor 0.9500"));
    /* ... but not on too few reports. */
    mf_rollout_judge(&p, 0, "orin", ptrs, 2, 1000, &e);
    assert_int_equal(e.verdict, MF_ROLLOUT_VERDICT_INCONCLUSIVE);
    p.gates.min_accuracy = 0.9;
    mf_rollout_judge(&p, 0, "orin", ptrs, 3, 1000, &e);
    assert_int_equal(e.verdict, MF_ROLLOUT_VERDICT_PASS);

    /* No incumbent anywhere (first install): no accuracy comparison, no
     * latency ratios; a pass on the floor and counts alone. */
    for (int i = 0; i < 3; i++) {
        f->dev[i].report.has_incumbent = false;
        f->dev[i].report.p99_ratio = 9;
    }
    mf_rollout_judge(&p, 0, "orin", ptrs, 3, 1000, &e);
    assert_int_equal(e.with_incumbent, 0);
    assert_float_equal(e.p99_ratio, 0, 0);
    assert_float_equal(e.p_worse, 1, 0);
    assert_int_equal(e.verdict, MF_ROLLOUT_VERDICT_PASS);
    assert_non_null(strstr(e.reason, "none with an incumbent"));
    /* A report whose figures disagree is not counted. */
    f->dev[0].report.correct = f->dev[0].report.n + 1;
    mf_rollout_judge(&p, 0, "orin", ptrs, 3, 1000, &e);
    assert_int_equal(e.reporting, 2);
    assert_int_equal(e.verdict, MF_ROLLOUT_VERDICT_INCONCLUSIVE);
    f->dev[0].report.correct = 900;
    f->dev[0].report.has_incumbent = true;
    f->dev[0].report.neither += 1; /* cells no longer sum to n */
    mf_rollout_judge(&p, 0, "orin", ptrs, 3, 1000, &e);
    assert_int_equal(e.reporting, 2);
    free(f);
}

/* ---- enrolment mid-rollout ---- */

static void test_enrolment_mid_rollout(void **state)
{
    (void)state;
    struct mf_rollout_plan p;
    plan_init(&p);
    struct fleet *f = fleet_new();
    fleet_class(f, "orin", 40);
    fleet_class(f, "pi4", 40);
    /* At 50%, every covered device already took the candidate. */
    for (size_t i = 0; i < f->n; i++)
        if (mf_rollout_bucket(f->dev[i].id, ROLLOUT_ID) < 0.5) {
            f->dev[i].outcome = MF_ROLLOUT_DEV_ACTIVE;
            report_paired(&f->dev[i], 1000, 5, 5);
        }
    /* Two newcomers: one whose bucket is below 50%, one above. */
    char lo[32] = "", hi[32] = "", id[32];
    for (int i = 0; i < 1000 && (!lo[0] || !hi[0]); i++) {
        snprintf(id, sizeof id, "late-%d", i);
        double b = mf_rollout_bucket(id, ROLLOUT_ID);
        if (b < 0.5 && !lo[0])
            snprintf(lo, sizeof lo, "%s", id);
        if (b >= 0.5 && !hi[0])
            snprintf(hi, sizeof hi, "%s", id);
    }
    assert_true(lo[0] && hi[0]);
    fleet_add(f, lo, "pi4")->online = false;
    fleet_add(f, hi, "pi4");
    struct mf_rollout_progress pr;
    progress_init(&pr, 2, 1000);
    struct mf_rollout_result res;
    mf_rollout_step(&p, f->dev, f->n, &pr, 1100, &res);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_ASSIGN, NULL), 1);
    assert_true(has_action_for(&res, MF_ROLLOUT_ASSIGN, lo));
    assert_int_equal(find_kind(&res, MF_ROLLOUT_ASSIGN, NULL)->stage, 2);
    fleet_apply(f, &res);
    mf_rollout_result_free(&res);
    /* Soaked: advance to 100% and the other newcomer lands there. */
    mf_rollout_step(&p, f->dev, f->n, &pr, 1600, &res);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_ADVANCE, NULL), 1);
    assert_true(has_action_for(&res, MF_ROLLOUT_ASSIGN, hi));
    assert_false(has_action_for(&res, MF_ROLLOUT_ASSIGN, lo));
    fleet_apply(f, &res);
    mf_rollout_result_free(&res);
    for (size_t i = 0; i < f->n; i++)
        assert_int_not_equal(f->dev[i].outcome, MF_ROLLOUT_DEV_NONE);
    free(f);
}

/* ---- watch ---- */

/* The last stage passed: WATCH; a fail while watching rolls back like a
 * stage fail (the other class keeps watching); watch_s without a fail:
 * COMPLETE, classes done. */
static void test_watch(void **state)
{
    (void)state;
    struct mf_rollout_plan p;
    plan_init(&p);
    struct fleet *f = fleet_new();
    fleet_class(f, "orin", 10);
    fleet_class(f, "pi4", 10);
    for (size_t i = 0; i < f->n; i++) {
        f->dev[i].outcome = MF_ROLLOUT_DEV_ACTIVE;
        report_paired(&f->dev[i], 1000, 5, 5);
    }
    fleet_add(f, "orin-new", "orin"); /* enrols during the watch */
    struct mf_rollout_progress pr;
    progress_init(&pr, 3, 0);
    struct mf_rollout_result res;
    mf_rollout_step(&p, f->dev, f->n, &pr, 600, &res);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_WATCH, NULL), 1);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_ADVANCE, NULL), 0);
    assert_int_equal(res.next.status, MF_ROLLOUT_WATCHING);
    assert_int_equal(res.next.watch_started, 600);
    assert_int_equal(res.next.stage, 3);
    assert_true(has_action_for(&res, MF_ROLLOUT_ASSIGN, "orin-new"));
    struct mf_rollout_progress w = res.next;
    mf_rollout_result_free(&res);

    /* Still watching: judged, nothing else (no extend, no pause). */
    mf_rollout_step(&p, f->dev, f->n, &w, 600 + 1799, &res);
    assert_int_equal(res.n_evidence, 2);
    assert_true(has_action_for(&res, MF_ROLLOUT_ASSIGN, "orin-new"));
    assert_int_equal(res.n_actions, 1);
    assert_int_equal(res.next.status, MF_ROLLOUT_WATCHING);
    mf_rollout_result_free(&res);
    fleet_find(f, "orin-new")->outcome = MF_ROLLOUT_DEV_ASSIGNED;

    /* Watched long enough: complete. */
    mf_rollout_step(&p, f->dev, f->n, &w, 600 + 1800, &res);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_COMPLETE, NULL), 1);
    assert_int_equal(res.n_actions, 1);
    assert_int_equal(res.next.status, MF_ROLLOUT_COMPLETED);
    assert_int_equal(res.next.classes[0], MF_ROLLOUT_CLASS_DONE);
    assert_int_equal(res.next.classes[1], MF_ROLLOUT_CLASS_DONE);
    mf_rollout_result_free(&res);

    /* A regression while watching: orin fails, rolls back (the late one
     * too); pi4 keeps watching; completion still comes for pi4. */
    for (size_t i = 0; i < 3; i++)
        report_paired(&f->dev[i], 360, 0, 30);
    mf_rollout_step(&p, f->dev, f->n, &w, 600 + 1800, &res);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_FAIL_CLASS, "orin"), 1);
    assert_non_null(strstr(find_kind(&res, MF_ROLLOUT_FAIL_CLASS, "orin")->reason, "watching"));
    assert_int_equal(count_kind(&res, MF_ROLLOUT_ROLLBACK, "orin"), 11);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_COMPLETE, NULL), 1);
    assert_int_equal(res.next.classes[0], MF_ROLLOUT_CLASS_FAILED);
    assert_int_equal(res.next.classes[1], MF_ROLLOUT_CLASS_DONE);
    mf_rollout_result_free(&res);
    mf_rollout_step(&p, f->dev, f->n, &w, 700, &res);
    assert_int_equal(count_kind(&res, MF_ROLLOUT_COMPLETE, NULL), 0);
    assert_int_equal(res.next.status, MF_ROLLOUT_WATCHING);
    mf_rollout_result_free(&res);
    free(f);
}

/* ---- the full walk ---- */

/* ~200 devices in two classes, a fake agent that activates and reports every
 * device assigned at the previous step, a step every 300 s: 1% → 10% → 50%
 * → 100% → WATCH → COMPLETE, each stage's coverage exactly as computed here,
 * no device assigned twice, nothing failed or rolled back. */
static void test_full_walk(void **state)
{
    (void)state;
    struct mf_rollout_plan p;
    plan_init(&p);
    struct fleet *f = fleet_new();
    fleet_class(f, "orin", 110);
    fleet_class(f, "pi4", 90);
    for (size_t i = 0; i < f->n; i += 7)
        f->dev[i].online = false; /* some offline: the broker keeps their desired state */
    struct mf_rollout_progress pr;
    progress_init(&pr, 0, 0);
    int64_t now = 0;
    size_t advances = 0, steps = 0;
    bool watched = false, completed = false;
    int64_t watch_at = -1;
    for (; steps < 100 && !completed; steps++, now += 300) {
        /* The agents: what was assigned last step has activated and
         * reported (an alternating small imbalance, never a regression). */
        for (size_t i = 0; i < f->n; i++)
            if (f->dev[i].outcome == MF_ROLLOUT_DEV_ASSIGNED) {
                f->dev[i].outcome = MF_ROLLOUT_DEV_ACTIVE;
                report_paired(&f->dev[i], 1000, 5 + i % 2, 5);
                f->dev[i].report.p99_ratio = 1.0 + (double)(i % 5) / 100;
            }
        struct mf_rollout_result res;
        mf_rollout_step(&p, f->dev, f->n, &pr, now, &res);
        assert_int_equal(count_kind(&res, MF_ROLLOUT_ROLLBACK, NULL), 0);
        assert_int_equal(count_kind(&res, MF_ROLLOUT_FAIL_CLASS, NULL), 0);
        assert_int_equal(count_kind(&res, MF_ROLLOUT_FAIL, NULL), 0);
        assert_int_equal(count_kind(&res, MF_ROLLOUT_PAUSE, NULL), 0);
        for (size_t e = 0; e < res.n_evidence; e++)
            assert_int_not_equal(res.evidence[e].verdict, MF_ROLLOUT_VERDICT_FAIL);
        const struct mf_rollout_action *adv = find_kind(&res, MF_ROLLOUT_ADVANCE, NULL);
        if (adv) {
            advances++;
            assert_int_equal(adv->stage, advances);
            assert_int_equal(res.next.stage, advances);
            assert_true(now - pr.stage_started >= p.stages[pr.stage].soak_s);
        }
        if (find_kind(&res, MF_ROLLOUT_WATCH, NULL)) {
            assert_int_equal(advances, 3);
            assert_false(watched);
            watched = true;
            watch_at = now;
        }
        if (find_kind(&res, MF_ROLLOUT_COMPLETE, NULL)) {
            assert_true(watched);
            assert_true(now - watch_at >= p.watch_s);
            completed = true;
        }
        fleet_apply(f, &res);
        /* Coverage: after this step's assignments, each class has taken the
         * candidate on exactly what the (new) stage covers. */
        for (size_t c = 0; c < 2; c++) {
            double thr;
            size_t want = expected_cover(f, two_classes[c], &p.stages[res.next.stage], &thr);
            assert_int_equal(count_taken(f, two_classes[c]), want);
            for (size_t i = 0; i < f->n; i++)
                if (strcmp(f->dev[i].hw_class, two_classes[c]) == 0)
                    assert_int_equal(f->dev[i].outcome != MF_ROLLOUT_DEV_NONE,
                                     mf_rollout_bucket(f->dev[i].id, ROLLOUT_ID) <= thr);
        }
        pr = res.next;
        mf_rollout_result_free(&res);
    }
    assert_true(completed);
    assert_int_equal(advances, 3);
    assert_int_equal(pr.status, MF_ROLLOUT_COMPLETED);
    assert_int_equal(pr.classes[0], MF_ROLLOUT_CLASS_DONE);
    assert_int_equal(pr.classes[1], MF_ROLLOUT_CLASS_DONE);
    for (size_t i = 0; i < f->n; i++)
        assert_int_equal(f->dev[i].outcome, MF_ROLLOUT_DEV_ACTIVE);
    /* 4 stages x (assign, report + soak) then the watch: bounded. */
    assert_in_range(steps, 10, 20);
    free(f);
}

int main(void)
{
    mf_crypto_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_plan_check),
        cmocka_unit_test(test_first_step_assigns),
        cmocka_unit_test(test_too_few_reports),
        cmocka_unit_test(test_straddling_interval),
        cmocka_unit_test(test_accuracy_drop_fails),
        cmocka_unit_test(test_noise_passes),
        cmocka_unit_test(test_one_class_fails),
        cmocka_unit_test(test_fail_pause),
        cmocka_unit_test(test_flapping_device),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_failures_and_crashes),
        cmocka_unit_test(test_floor_and_latency),
        cmocka_unit_test(test_enrolment_mid_rollout),
        cmocka_unit_test(test_watch),
        cmocka_unit_test(test_full_walk),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
