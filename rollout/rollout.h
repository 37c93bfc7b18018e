/* rollout.h — the staged-rollout policy, pure: a plan, a snapshot of the
 * target devices and what they reported, the rollout's own progress and
 * `now` go in; actions come out (assign, roll back, advance, extend, pause,
 * fail, complete), each with the evidence behind it. No I/O, no clock, no
 * globals, no allocation visible to the caller beyond the result it frees:
 * the server's controller loads the snapshot, calls mf_rollout_step(),
 * commits the actions in one transaction and publishes the desired states.
 *
 * Stages. Every target device gets a bucket, hash(device id, rollout id) in
 * [0, 1) (mf_rollout_bucket). Stage k covers, per hardware class, the devices
 * whose bucket is below stages[k].percent / 100, and at least
 * stages[k].min_devices of them (the lowest buckets first) when the class has
 * that many. Stages are cumulative, so a device that enrols or comes back
 * mid-rollout lands where its bucket says, and the next stage never reshuffles
 * the previous one.
 *
 * Gates, per stage and per hardware class, with three outcomes:
 *   fail          a signal shows a regression: the failure rate or count of
 *                 installs (download/verify/benchmark failures and on-device
 *                 gate refusals) over its limit; runner crashes over the limit;
 *                 the candidate's accuracy significantly worse than the
 *                 incumbent's by more than the margin (see mf_rollout_judge);
 *                 its accuracy below the floor; the median across devices of
 *                 the p50 or p99 latency ratio over its limit.
 *   pass          enough devices reported (min_reporting), non-inferiority is
 *                 shown (the upper confidence bound of the accuracy drop is
 *                 within the margin), every other signal is within its limit,
 *                 and the stage has soaked (soak_s since it started).
 *   inconclusive  anything else: not enough reports yet, or an interval that
 *                 straddles the margin. Missing data is never a regression and
 *                 never a pass: the stage is extended, and after timeout_s it
 *                 is paused with an alert.
 * With scope MF_ROLLOUT_PER_CLASS a failing class stops (and, with
 * on_fail = rollback, rolls back) only itself; the others go on. With
 * MF_ROLLOUT_WHOLE one failing class fails the whole rollout (and, with
 * on_fail = rollback, rolls back every class). With on_fail = pause, in
 * either scope, the failing class stops and the rollout pauses: nothing is
 * rolled back, ever; a resume goes on with the classes that did not fail.
 * When no class is left running the rollout fails.
 *
 * Pooling. Every device runs the package's evaluation set, the same items,
 * so the per-device paired tables of one class are summed for the estimates
 * (accuracy, drop), but the statistical test uses their mean table (the sum
 * divided by the number of reporting devices with an incumbent, rounded,
 * cell by cell): devices of one class mostly repeat the same item
 * outcomes, and counting each repetition as new evidence would claim a
 * certainty the data does not have. */
#ifndef MF_ROLLOUT_H
#define MF_ROLLOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define MF_ROLLOUT_STAGES_MAX  16
#define MF_ROLLOUT_CLASSES_MAX 32
#define MF_ROLLOUT_REASON_MAX  320

/* ---- the plan (from POST /api/v1/rollouts; validated by the shell) ---- */

struct mf_rollout_stage {
    double percent;         /* cumulative share of each class's targets, (0, 100] */
    uint64_t min_devices;   /* and at least this many per class (when it has them) */
    uint64_t min_reporting; /* per class: devices with a valid report before a pass, >= 1 */
    int64_t soak_s;         /* a pass needs the stage to have run this long */
    int64_t timeout_s;      /* inconclusive this long after the start: pause, alert */
};

struct mf_rollout_gates {
    double max_failure_rate;  /* failed + refused over assigned, per class, [0, 1] */
    uint64_t max_failures;    /* the same as a count; a class fails past either */
    uint64_t max_crashes;     /* runner crashes (benchmark_failed events) per class */
    double min_accuracy;      /* floor on the pooled candidate accuracy; 0 = none */
    double max_accuracy_drop; /* non-inferiority margin against the incumbent, [0, 1] */
    double alpha;             /* one-sided significance of the accuracy test, (0, 0.5] */
    double max_p50_ratio;     /* median over devices of candidate/incumbent p50; 0 = none */
    double max_p99_ratio;     /* ... p99; 0 = none */
};

enum mf_rollout_on_fail {
    MF_ROLLOUT_ON_FAIL_ROLLBACK = 0, /* every device that got the candidate goes back */
    MF_ROLLOUT_ON_FAIL_PAUSE,        /* stop where it is; a person decides */
};

enum mf_rollout_scope {
    MF_ROLLOUT_PER_CLASS = 0, /* a class that fails stops alone */
    MF_ROLLOUT_WHOLE,         /* a class that fails fails the rollout */
};

struct mf_rollout_plan {
    int64_t id;                 /* the rollout id: part of every bucket */
    const char *model;          /* the candidate model name */
    const char *version;        /* ... and version */
    const char *const *classes; /* hardware classes targeted, each once */
    size_t n_classes;           /* 1 .. MF_ROLLOUT_CLASSES_MAX */
    struct mf_rollout_stage stages[MF_ROLLOUT_STAGES_MAX];
    size_t n_stages; /* 1 .. MF_ROLLOUT_STAGES_MAX, percent strictly increasing, last 100 */
    struct mf_rollout_gates gates;
    enum mf_rollout_on_fail on_fail;
    enum mf_rollout_scope scope;
    int64_t watch_s; /* after the last stage passed: keep judging this long, then complete */
};

/* The default plan (docs/rollouts.md, "Starting"; chosen with
 * bench/decision, docs/performance.md): stages 1/10/50/100 % each covering
 * at least 20 devices per class and passing on at least 5 reports, soak
 * 300 s, timeout 3600 s; gates max_failure_rate 0.1, max_failures 5,
 * max_crashes 2, no accuracy floor, margin 0.015, alpha 0.05, latency
 * ratios 1.5 (p50) and 2.0 (p99); rollback on failure, per class, no
 * watch window. Leaves id, model, version and classes alone. */
void mf_rollout_plan_defaults(struct mf_rollout_plan *p);
/* A stage with the default counts and times (percent 0: the caller's). */
struct mf_rollout_stage mf_rollout_stage_default(void);

/* Checks a plan (MF_ERR_SCHEMA naming the field: "stages[2].percent"). */
MF_MUST_CHECK enum mf_err mf_rollout_plan_check(const struct mf_rollout_plan *p,
                                                struct mf_diag *diag);

/* ---- the snapshot: the target devices as the server knows them ---- */

enum mf_rollout_outcome {
    MF_ROLLOUT_DEV_NONE = 0,    /* not assigned the candidate (yet) */
    MF_ROLLOUT_DEV_ASSIGNED,    /* its desired state names the candidate; no outcome yet */
    MF_ROLLOUT_DEV_ACTIVE,      /* the candidate activated on it */
    MF_ROLLOUT_DEV_REFUSED,     /* its on-device gate refused the candidate */
    MF_ROLLOUT_DEV_FAILED,      /* download, verify or install failed */
    MF_ROLLOUT_DEV_ROLLED_BACK, /* sent back to its previous version by this rollout */
};

/* A device's benchmark report of the candidate (one: the latest valid). A
 * report whose figures disagree (n 0 or above 2^32, correct > n, cells not
 * summing to n or to correct) is not counted. */
struct mf_rollout_report {
    uint64_t n;                    /* evaluation items */
    uint64_t correct;              /* candidate right */
    bool has_incumbent;            /* then the four cells and ratios are set */
    uint64_t both, only_candidate; /* the paired table ... */
    uint64_t only_incumbent, neither;
    double p50_ratio, p99_ratio; /* candidate / incumbent latency on this device */
};

struct mf_rollout_device {
    const char *id;
    const char *hw_class;
    bool online;
    enum mf_rollout_outcome outcome;
    const char *previous_version; /* what to roll back to ("" or NULL: nothing) */
    bool has_report;
    struct mf_rollout_report report;
    uint64_t crashes; /* runner crashes reported for the candidate */
};

/* ---- the rollout's own progress (kept by the shell between steps) ---- */

enum mf_rollout_status {
    MF_ROLLOUT_RUNNING = 0,
    MF_ROLLOUT_PAUSED,   /* by a person or by a timeout: no action until resumed */
    MF_ROLLOUT_WATCHING, /* every stage passed; judged for watch_s more */
    MF_ROLLOUT_COMPLETED,
    MF_ROLLOUT_FAILED,  /* every class failed, or one did with scope whole */
    MF_ROLLOUT_ABORTED, /* by a person */
};

enum mf_rollout_class_status {
    MF_ROLLOUT_CLASS_ACTIVE = 0,
    MF_ROLLOUT_CLASS_FAILED, /* stopped (and rolled back per on_fail) */
    MF_ROLLOUT_CLASS_DONE,   /* every stage passed */
};

struct mf_rollout_progress {
    enum mf_rollout_status status;
    size_t stage;          /* the current stage index */
    int64_t stage_started; /* when it started (the shell's clock, seconds) */
    int64_t watch_started; /* when WATCHING began */
    enum mf_rollout_class_status classes[MF_ROLLOUT_CLASSES_MAX]; /* plan order */
};

/* ---- the result ---- */

enum mf_rollout_verdict { /* MF_ROLLOUT_VERDICT_: MF_ROLLOUT_FAIL is the action */
                          MF_ROLLOUT_VERDICT_INCONCLUSIVE = 0,
                          MF_ROLLOUT_VERDICT_PASS,
                          MF_ROLLOUT_VERDICT_FAIL,
};

/* Why a class's gate said what it said: the numbers go into the API and the
 * audit log as they are. */
struct mf_rollout_evidence {
    const char *hw_class;
    size_t stage;
    enum mf_rollout_verdict verdict;
    uint64_t targeted; /* devices of the class the stage covers */
    uint64_t assigned; /* ... that were sent the candidate (any outcome but NONE) */
    uint64_t active, refused, failed, crashes;
    uint64_t reporting;      /* valid reports */
    uint64_t with_incumbent; /* ... that carry a paired table */
    /* pooled paired table (sums) and what follows from it */
    uint64_t n, both, only_candidate, only_incumbent, neither, correct;
    double accuracy;   /* correct / n, pooled */
    double drop;       /* (only_incumbent - only_candidate) / (sum of the four cells) */
    double drop_upper; /* one-sided (1 - alpha) upper bound of the drop (mean table) */
    double p_worse;    /* exact one-sided McNemar p that the candidate is worse (mean table) */
    double p50_ratio, p99_ratio; /* medians over reporting devices with an incumbent; 0 = none */
    char reason[MF_ROLLOUT_REASON_MAX]; /* one sentence: the deciding signal and its numbers */
};

enum mf_rollout_action_kind {
    MF_ROLLOUT_ASSIGN = 0, /* device: desired state naming the candidate */
    MF_ROLLOUT_ROLLBACK,   /* device: desired state naming its previous version */
    MF_ROLLOUT_ADVANCE,    /* to `stage` */
    MF_ROLLOUT_EXTEND,     /* the stage goes on (inconclusive, within its timeout) */
    MF_ROLLOUT_PAUSE,      /* status -> paused (timeout, or a failure with on_fail pause) */
    MF_ROLLOUT_FAIL_CLASS, /* hw_class -> failed */
    MF_ROLLOUT_FAIL,       /* status -> failed */
    MF_ROLLOUT_WATCH,      /* every stage passed: status -> watching */
    MF_ROLLOUT_COMPLETE,   /* status -> completed */
};

struct mf_rollout_action {
    enum mf_rollout_action_kind kind;
    const char *device;   /* ASSIGN / ROLLBACK: borrowed from the snapshot */
    const char *version;  /* ASSIGN: the candidate; ROLLBACK: the previous version */
    const char *hw_class; /* the class concerned, or NULL for the whole rollout */
    size_t stage;
    int evidence; /* index into result.evidence, or -1 */
    char reason[MF_ROLLOUT_REASON_MAX];
};

struct mf_rollout_result {
    struct mf_rollout_action *actions; /* owned */
    size_t n_actions;
    struct mf_rollout_evidence *evidence; /* owned: one per class judged this step */
    size_t n_evidence;
    struct mf_rollout_progress next; /* the progress after the actions */
};

/* One step of the controller. devices may list a device twice (a duplicate
 * from the shell): only its first entry counts. Devices of classes not in
 * the plan are ignored. The result is deterministic for the same inputs
 * (devices in bucket order, then by id). Actions come in this order:
 * rollbacks not yet landed of classes failed earlier; per failing class its
 * FAIL_CLASS and rollbacks (scope whole with rollback: the FAIL_CLASSes,
 * FAIL, then every class's rollbacks); then FAIL or PAUSE, or EXTENDs, or
 * ADVANCE / WATCH / COMPLETE; last the ASSIGNs of the stage in force after
 * the step (the new one after an ADVANCE), class by class. Each class is judged on
 * the devices its stage covers plus any that already took the candidate.
 * Caller frees with mf_rollout_result_free. Inconsistent inputs (a progress
 * stage past the plan) are programmer errors and abort. */
void mf_rollout_step(const struct mf_rollout_plan *plan, const struct mf_rollout_device *devices,
                     size_t n_devices, const struct mf_rollout_progress *progress, int64_t now,
                     struct mf_rollout_result *out);

void mf_rollout_result_free(struct mf_rollout_result *r);

/* The gate of one class at one stage, on its devices (exported for tests and
 * for the API's live view); devices of other classes are skipped, a device
 * listed twice counts once. stage_age_s (now - stage_started) decides the
 * soak. */
void mf_rollout_judge(const struct mf_rollout_plan *plan, size_t stage, const char *hw_class,
                      const struct mf_rollout_device *const *devices, size_t n_devices,
                      int64_t stage_age_s, struct mf_rollout_evidence *out);

/* hash(device id, rollout id) in [0, 1): the first 53 bits of
 * BLAKE2b-256("modelfleet-bucket-v1\n" id "\n" decimal rollout id). */
double mf_rollout_bucket(const char *device_id, int64_t rollout_id);

/* Stable names ("assign", "pass", "running", ...); never NULL. */
const char *mf_rollout_action_name(enum mf_rollout_action_kind k);
const char *mf_rollout_verdict_name(enum mf_rollout_verdict v);
const char *mf_rollout_status_name(enum mf_rollout_status s);

#endif
