/* reconcile.c — the agent's state machine (see reconcile.h).
 * Invariants: the state file names the operation in flight and its phase
 * before the phase's side effect starts; `current` changes only in
 * ag__commit(), after the gate passed (or for a slot that was active before);
 * a candidate that fails any step is discarded and never linked; every
 * outcome produces exactly one event (plus a report for a benchmark that
 * ran). */
#define _GNU_SOURCE
#include "reconcile.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/bench.h"
#include "agent/gate.h"
#include "agent/install.h"
#include "agent/runner.h"
#include "common/buf.h"
#include "common/clock.h"
#include "common/encode.h"
#include "common/fs.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/mem.h"
#include "packaging/pkg.h"
#include "telemetry/devmsg.h"

#define HOOK_OUTPUT_MAX (64u * 1024)

void (*mf_agent_crash_hook)(const char *point) = NULL;

static void crash_point(const char *point)
{
    if (mf_agent_crash_hook)
        mf_agent_crash_hook(point);
}

struct mf_agent {
    const struct mf_agent_config *cfg;
    struct mf_agent_ops ops;
    volatile sig_atomic_t *stop;
    struct mf_keyring *trust;
    struct mf_state *state;
    struct mf_spool *spool;
    int lock_fd;
    char *downloads, *scratch, *desired_path;
};

/* What an install or activation is for: it goes into every event. */
struct job {
    const char *origin; /* "desired", "local", "recovery" */
    const char *model, *version, *package;
    uint64_t desired_seq;
    int64_t rollout;
    const struct mf_desired_model *dm; /* desired: what to fetch */
    const char *file;                  /* local: the package file */
};

/* ---- events, reports, state saves ---- */

static void ag__changed(struct mf_agent *ag, uint64_t msg)
{
    if (ag->ops.changed)
        ag->ops.changed(ag->ops.ctx, msg);
}

static void ag__push(struct mf_agent *ag, enum mf_devmsg_kind kind, char *text, size_t len)
{
    struct mf_diag d = {0};
    uint64_t msg = mf_spool_next(ag->spool);
    if (mf_spool_push(ag->spool, msg, kind, text, len, &d) != MF_OK) {
        mf_log(MF_LOG_ERROR, "spool: %s: %s device=%s", d.where, d.what, ag->cfg->device_id);
        msg = 0;
    }
    free(text);
    ag__changed(ag, msg);
}

/* Fills the event's identity from the job and pushes it; logs one line. */
static void ag__event(struct mf_agent *ag, const struct job *j, struct mf_event *e)
{
    e->device = ag->cfg->device_id;
    e->msg = mf_spool_next(ag->spool);
    e->time = mf_clock_now();
    if (j) {
        e->origin = e->origin ? e->origin : j->origin;
        e->model = e->model ? e->model : j->model;
        e->version = e->version ? e->version : j->version;
        e->package = e->package ? e->package : j->package;
        e->desired_seq = e->desired_seq ? e->desired_seq : j->desired_seq;
        e->rollout = e->rollout ? e->rollout : j->rollout;
    }
    enum mf_log_level lvl = e->kind == MF_EVENT_ACTIVATED || e->kind == MF_EVENT_DESIRED_ACCEPTED ||
                                    e->kind == MF_EVENT_ROLLED_BACK
                                ? MF_LOG_INFO
                                : MF_LOG_WARN;
    mf_log(lvl, "event %s device=%s model=%s version=%s reason=%s msg=%" PRIu64 "%s%s",
           mf_event_kind_name(e->kind), e->device, e->model ? e->model : "-",
           e->version ? e->version : "-", e->reason ? e->reason : "-", e->msg,
           e->detail ? ": " : "", e->detail ? e->detail : "");
    size_t len;
    char *text = mf_devmsg_event_format(e, &len);
    ag__push(ag, MF_DEVMSG_EVENT, text, len);
}

static void ag__event_err(struct mf_agent *ag, const struct job *j, enum mf_event_kind kind,
                          const char *reason, const struct mf_diag *d)
{
    char detail[MF_DIAG_WHERE + MF_DIAG_WHAT + 4];
    if (d && d->where[0])
        snprintf(detail, sizeof detail, "%s: %s", d->where, d->what);
    else
        snprintf(detail, sizeof detail, "%s", d ? d->what : "");
    struct mf_event e = {.kind = kind, .reason = reason, .detail = detail};
    ag__event(ag, j, &e);
}

static enum mf_err ag__save(struct mf_agent *ag, struct mf_diag *diag)
{
    enum mf_err err = mf_state_save(ag->cfg->state_dir, ag->state, diag);
    if (err != MF_OK)
        mf_log(MF_LOG_ERROR, "state: cannot save: %s: %s", diag->where, diag->what);
    ag__changed(ag, 0);
    return err;
}

/* Records the operation and its phase, then saves: the step after this call
 * is the side effect. */
static enum mf_err ag__op(struct mf_agent *ag, enum mf_state_op_kind kind, const char *model,
                          const char *package, const char *version, const char *slot,
                          enum mf_state_phase phase, struct mf_diag *diag)
{
    struct mf_state_op *op = &ag->state->op;
    if (op->kind != kind || strcmp(op->model, model) != 0)
        op->started = mf_clock_now() > 0 ? mf_clock_now() : 0;
    op->kind = kind;
    snprintf(op->model, sizeof op->model, "%s", model);
    snprintf(op->package, sizeof op->package, "%s", package);
    snprintf(op->version, sizeof op->version, "%s", version);
    snprintf(op->slot, sizeof op->slot, "%s", slot ? slot : "");
    op->phase = phase;
    enum mf_err err = ag__save(ag, diag);
    if (err == MF_OK) {
        char point[48];
        snprintf(point, sizeof point, "op:saved:%s",
                 kind == MF_STATE_OP_INSTALL ? mf_state_phase_name(phase)
                                             : mf_state_op_kind_name(kind));
        crash_point(point);
    }
    return err;
}

static enum mf_err ag__op_clear(struct mf_agent *ag, struct mf_diag *diag)
{
    memset(&ag->state->op, 0, sizeof ag->state->op);
    return ag__save(ag, diag);
}

/* ---- the post-activation hook ---- */

static void ag__hook(struct mf_agent *ag, const struct job *j, const char *model,
                     const char *version, const char *slot)
{
    const struct mf_agent_config *c = ag->cfg;
    if (!c->hook || !c->hook[0])
        return;
    crash_point("hook:before");
    char *dir = mf_install_slot_path(c->state_dir, model, slot);
    char *file = NULL;
    struct mf_diag d = {0};
    struct mf_buf mbuf, out;
    struct mf_manifest *m = NULL;
    struct mf_runner_result res;
    memset(&res, 0, sizeof res);
    mf_buf_init(&out, HOOK_OUTPUT_MAX);
    char *mpath = mf_xasprintf("%s/manifest.json", dir);
    if (mf_fs_read_file(mpath, MF_MANIFEST_MAX, &mbuf, &d) == MF_OK) {
        if (mf_manifest_parse(mbuf.data, mbuf.len, &m, &d) == MF_OK)
            file = mf_xasprintf("%s/%s", dir, m->entry);
        mf_buf_free(&mbuf);
    }
    char *hook = mf_xstrdup(c->hook), *mname = mf_xstrdup(model), *ver = mf_xstrdup(version);
    char *argv[] = {hook, mname, file ? file : dir, ver, dir, NULL};
    struct mf_exec_spec spec = {.argv = argv,
                                .cwd = c->state_dir,
                                .label = "hook",
                                .timeout_ms = (uint64_t)c->hook_timeout * 1000};
    if (mf_runner_exec(&spec, &out, &res, &d) != MF_OK) {
        struct mf_event e = {.kind = MF_EVENT_HOOK_FAILED,
                             .reason = mf_runner_fail_name(res.fail),
                             .model = model,
                             .version = version,
                             .detail = d.what};
        ag__event(ag, j, &e);
    } else {
        mf_log(MF_LOG_INFO, "hook done device=%s model=%s version=%s ms=%" PRIu64, c->device_id,
               model, version, res.wall_us / 1000);
    }
    mf_buf_free(&out);
    mf_manifest_free(m);
    free(mpath);
    free(hook);
    free(mname);
    free(ver);
    free(file);
    free(dir);
}

/* ---- activation: the only place `current` changes ---- */

/* Carries out the activation recorded in state->op (kind ACTIVATE, or
 * INSTALL in phase ACTIVATE): links, then the state, then the event and the
 * hook. Re-running it after a crash converges. */
static enum mf_err ag__commit(struct mf_agent *ag, const struct job *j, struct mf_diag *diag)
{
    struct mf_state_op op = ag->state->op;
    enum mf_err err;
    char from[MF_SEMVER_MAX] = "";

    if ((err = mf_install_activate(ag->cfg->state_dir, op.model, op.slot, diag)) != MF_OK)
        return err;
    crash_point("activate:linked");
    struct mf_state_model *sm = mf_state_model(ag->state, op.model, true);
    if (strcmp(sm->current.slot, op.slot) != 0) {
        snprintf(from, sizeof from, "%s", sm->current.version);
        if (sm->current.slot[0])
            sm->previous = sm->current;
        snprintf(sm->current.slot, sizeof sm->current.slot, "%s", op.slot);
        snprintf(sm->current.version, sizeof sm->current.version, "%s", op.version);
    }
    snprintf(sm->current.package, sizeof sm->current.package, "%s", op.package);
    memset(&ag->state->op, 0, sizeof ag->state->op);
    if ((err = ag__save(ag, diag)) != MF_OK)
        return err;

    struct mf_event e = {.kind = MF_EVENT_ACTIVATED,
                         .model = op.model,
                         .version = op.version,
                         .package = op.package,
                         .from_version = from[0] ? from : NULL,
                         .detail = op.kind == MF_STATE_OP_ACTIVATE
                                       ? "already installed: activated without download"
                                       : NULL};
    ag__event(ag, j, &e);
    ag__hook(ag, j, op.model, op.version, op.slot);

    unsigned removed = 0;
    struct mf_diag d = {0};
    if (mf_install_prune(ag->cfg->state_dir, op.model, (unsigned)ag->cfg->keep_versions, &removed,
                         &d) != MF_OK)
        mf_log(MF_LOG_WARN, "prune: %s: %s device=%s", d.where, d.what, ag->cfg->device_id);
    else if (removed)
        mf_log(MF_LOG_INFO, "pruned %u old slot(s) of %s device=%s", removed, op.model,
               ag->cfg->device_id);
    return MF_OK;
}

/* An installed slot (previous) made current: no download, no benchmark (it
 * passed its gate when it was installed). */
static enum mf_err ag__switch(struct mf_agent *ag, const struct job *j,
                              const struct mf_state_version *v, struct mf_diag *diag)
{
    enum mf_err err = ag__op(ag, MF_STATE_OP_ACTIVATE, j->model, j->package, v->version, v->slot,
                             MF_STATE_PHASE_ACTIVATE, diag);
    if (err != MF_OK)
        return err;
    /* the slot may be gone (removed by hand): a full install then. */
    char *path = mf_install_slot_path(ag->cfg->state_dir, j->model, v->slot);
    err = mf_install_check_slot(path, false, diag);
    free(path);
    if (err != MF_OK) {
        struct mf_diag d = {0};
        (void)ag__op_clear(ag, &d);
        return err;
    }
    return ag__commit(ag, j, diag);
}

/* ---- benchmark and gate ---- */

static char *ag__slot_file(const struct mf_agent *ag, const char *model, const char *slot,
                           const char *rel)
{
    char *dir = mf_install_slot_path(ag->cfg->state_dir, model, slot);
    char *p = mf_xasprintf("%s/%s", dir, rel);
    free(dir);
    return p;
}

static enum mf_err ag__slot_manifest(const struct mf_agent *ag, const char *model, const char *slot,
                                     struct mf_manifest **out, struct mf_diag *diag)
{
    char *p = ag__slot_file(ag, model, slot, "manifest.json");
    struct mf_buf b;
    enum mf_err err = mf_fs_read_file(p, MF_MANIFEST_MAX, &b, diag);
    if (err == MF_OK) {
        err = mf_manifest_parse(b.data, b.len, out, diag);
        mf_buf_free(&b);
    }
    free(p);
    return err;
}

static enum mf_err ag__run(struct mf_agent *ag, const char *runner, const char *model_file,
                           const char *inputs, uint64_t n, struct mf_runner_result *out,
                           struct mf_diag *diag)
{
    const struct mf_agent_config *c = ag->cfg;
    (void)mf_fs_rmtree(ag->scratch);
    if (mkdir(ag->scratch, 0700) != 0 && errno != EEXIST)
        return mf_diag_errno(diag, errno, ag->scratch, "cannot make the runner's directory");
    struct mf_runner_spec spec = {.runner = runner,
                                  .model = model_file,
                                  .inputs = inputs,
                                  .scratch_dir = ag->scratch,
                                  .n = n,
                                  .warmup = (unsigned)c->benchmark_warmup,
                                  .threads = (unsigned)c->benchmark_threads,
                                  .timeout_ms = (uint64_t)c->runner_timeout * 1000,
                                  .memory_bytes = c->runner_memory   ? c->runner_memory
                                                  : c->memory_budget ? 2 * c->memory_budget
                                                                     : 0};
    return mf_runner_run(&spec, out, diag);
}

static void ag__model_figures(const struct mf_bench_model *b, const char *version,
                              const char *package, struct mf_report_model *r)
{
    r->version = version;
    r->package = package;
    r->accuracy = b->accuracy;
    r->correct = b->correct;
    r->load_us = b->load_us;
    r->first_us = b->first_us;
    r->count = b->latency.count;
    r->mean_us = b->latency.mean_us;
    r->stddev_us = b->latency.stddev_us;
    r->p50_us = b->latency.p50_us;
    r->p90_us = b->latency.p90_us;
    r->p99_us = b->latency.p99_us;
    r->max_us = b->latency.max_us;
    r->peak_rss_bytes = b->peak_rss_bytes;
}

static void ag__failures(const struct mf_gate_verdict *v, struct mf_event_failure *f)
{
    for (unsigned i = 0; i < v->n_failures; i++)
        f[i] = (struct mf_event_failure){.check = mf_gate_check_name(v->failures[i].check),
                                         .measured = v->failures[i].measured,
                                         .limit = v->failures[i].limit,
                                         .excess = v->failures[i].excess,
                                         .reason = v->failures[i].reason};
}

/* Runs the candidate (and the incumbent, on the candidate's inputs), judges
 * the gate and pushes the report. MF_OK with *verdict filled when both
 * figures exist; otherwise a "benchmark_failed" event was pushed. */
static enum mf_err ag__benchmark(struct mf_agent *ag, const struct job *j,
                                 const struct mf_install_result *res,
                                 struct mf_gate_verdict *verdict, struct mf_diag *diag)
{
    const struct mf_agent_config *c = ag->cfg;
    const struct mf_manifest *m = res->manifest;
    struct mf_runner_result cand, inc;
    struct mf_manifest *im = NULL;
    int64_t *labels = NULL;
    size_t n_labels = 0;
    char *model_file = ag__slot_file(ag, m->model, res->slot, m->entry);
    char *inputs = ag__slot_file(ag, m->model, res->slot, m->eval.inputs);
    char *labels_file = ag__slot_file(ag, m->model, res->slot, m->eval.labels);
    char *inc_file = NULL, inc_warning[MF_SEMVER_MAX + MF_DIAG_WHERE + MF_DIAG_WHAT + 128] = "";
    const char *warnings[1];
    bool has_inc = false;
    enum mf_err err;
    memset(&cand, 0, sizeof cand);
    memset(&inc, 0, sizeof inc);

    err = ag__run(ag, mf_agent_config_runner(c, m->runtime), model_file, inputs, m->eval.n, &cand,
                  diag);
    if (err != MF_OK) {
        ag__event_err(ag, j, MF_EVENT_BENCHMARK_FAILED, mf_runner_fail_name(cand.fail), diag);
        goto out;
    }
    if ((err = mf_bench_load_labels(labels_file, m->eval.n, &labels, &n_labels, diag)) != MF_OK) {
        ag__event_err(ag, j, MF_EVENT_BENCHMARK_FAILED, "labels", diag);
        goto out;
    }

    const struct mf_state_model *sm = mf_state_model(ag->state, m->model, false);
    if (sm && sm->current.slot[0] && strcmp(sm->current.slot, res->slot) != 0) {
        struct mf_diag d = {0};
        const char *runner = NULL;
        if (ag__slot_manifest(ag, m->model, sm->current.slot, &im, &d) == MF_OK &&
            !(runner = mf_agent_config_runner(c, im->runtime)))
            mf_diag_set(&d, MF_ERR_USAGE, im->runtime, "no runner for this runtime");
        if (runner) {
            inc_file = ag__slot_file(ag, m->model, sm->current.slot, im->entry);
            has_inc = ag__run(ag, runner, inc_file, inputs, m->eval.n, &inc, &d) == MF_OK;
        }
        if (!has_inc) {
            snprintf(inc_warning, sizeof inc_warning,
                     "the incumbent %s could not run on this evaluation set (%s: %s): judged "
                     "without the paired comparison",
                     sm->current.version, d.where, d.what);
            warnings[0] = inc_warning;
            mf_log(MF_LOG_WARN, "%s device=%s", inc_warning, c->device_id);
        }
    }

    struct mf_bench bench;
    if ((err = mf_bench_compute(labels, n_labels, &cand, has_inc ? &inc : NULL, &bench, diag)) !=
        MF_OK) {
        ag__event_err(ag, j, MF_EVENT_BENCHMARK_FAILED, "runner_output", diag);
        goto out;
    }
    struct mf_gate_thresholds th = {.min_accuracy = m->thresholds.min_accuracy,
                                    .max_accuracy_drop = m->thresholds.max_accuracy_drop,
                                    .latency_p99_ms = m->thresholds.latency_p99_ms,
                                    .memory_bytes = m->thresholds.memory_bytes};
    if (c->memory_budget && (!th.memory_bytes || c->memory_budget < th.memory_bytes))
        th.memory_bytes = c->memory_budget;
    struct mf_gate_input gin;
    mf_gate_input_from_bench(&bench, &th, &gin);
    mf_gate_judge(&gin, verdict);

    struct mf_event_failure fails[MF_GATE__COUNT];
    ag__failures(verdict, fails);
    const struct mf_manifest_file *ef = mf_manifest_find(m, m->eval.inputs);
    const struct mf_manifest_file *mfile = mf_manifest_find(m, m->entry);
    char eval_hash[MF_HASH_HEX];
    mf_hex_encode(eval_hash, ef->hash, MF_HASH_BYTES);
    struct mf_report r = {.device = c->device_id,
                          .hw_class = c->hw_class,
                          .model = m->model,
                          .agent_version = MF_AGENT_VERSION,
                          .runtime = cand.runtime,
                          .runtime_version = cand.runtime_version,
                          .msg = mf_spool_next(ag->spool),
                          .time = mf_clock_now(),
                          .desired_seq = j->desired_seq,
                          .rollout = j->rollout,
                          .warmup = (unsigned)c->benchmark_warmup,
                          .threads = (unsigned)c->benchmark_threads,
                          .eval_hash = eval_hash,
                          .n = bench.n,
                          .metric = m->eval.metric,
                          .model_bytes = mfile ? mfile->size : 0,
                          .has_incumbent = has_inc,
                          .both = bench.paired.both,
                          .only_candidate = bench.paired.only_candidate,
                          .only_incumbent = bench.paired.only_incumbent,
                          .neither = bench.paired.neither,
                          .p50_ratio = bench.p50_ratio,
                          .p99_ratio = bench.p99_ratio,
                          .pass = verdict->pass,
                          .drop = verdict->drop,
                          .mcnemar_p = verdict->mcnemar_p,
                          .failures = fails,
                          .n_failures = verdict->n_failures,
                          .valid = true,
                          .warnings = warnings,
                          .n_warnings = inc_warning[0] ? 1 : 0};
    ag__model_figures(&bench.candidate, m->version, j->package, &r.candidate);
    if (has_inc)
        ag__model_figures(&bench.incumbent, sm->current.version, sm->current.package, &r.incumbent);
    size_t len;
    char *text = mf_devmsg_report_format(&r, &len);
    ag__push(ag, MF_DEVMSG_REPORT, text, len);
    mf_log(MF_LOG_INFO,
           "benchmark device=%s model=%s version=%s accuracy=%.4f p99_ms=%.3f rss_mb=%.1f "
           "incumbent=%s pass=%s",
           c->device_id, m->model, m->version, bench.candidate.accuracy,
           (double)bench.candidate.latency.p99_us / 1000.0,
           (double)bench.candidate.peak_rss_bytes / 1048576.0, has_inc ? sm->current.version : "-",
           verdict->pass ? "yes" : "no");
out:
    mf_runner_result_free(&cand);
    mf_runner_result_free(&inc);
    mf_manifest_free(im);
    free(labels);
    free(model_file);
    free(inputs);
    free(labels_file);
    free(inc_file);
    return err;
}

/* ---- install ---- */

static bool ag__has_hw(const struct mf_manifest *m, const char *hw)
{
    for (size_t i = 0; i < m->hardware.n; i++)
        if (strcmp(m->hardware.v[i], hw) == 0)
            return true;
    return false;
}

/* Drops a candidate that will not be activated (never current or previous). */
static void ag__discard(struct mf_agent *ag, const char *model, const char *slot)
{
    struct mf_diag d = {0};
    if (!slot || !slot[0])
        return;
    if (mf_install_discard(ag->cfg->state_dir, model, slot, &d) != MF_OK &&
        d.err != MF_ERR_CONFLICT && d.err != MF_ERR_NOT_FOUND)
        mf_log(MF_LOG_WARN, "cannot discard %s/%s: %s", model, slot, d.what);
}

/* Ends a failed install: discard the slot, clear the op, keep `err`. */
static enum mf_err ag__fail(struct mf_agent *ag, const char *model, const char *slot,
                            enum mf_err err)
{
    struct mf_diag d = {0};
    ag__discard(ag, model, slot);
    (void)ag__op_clear(ag, &d);
    return err;
}

/* The whole path for one package: fetch (desired) -> unpack -> checks ->
 * benchmark -> gate -> activate. Returns MF_OK when the package is current at
 * the end. */
static enum mf_err ag__install(struct mf_agent *ag, const struct job *j, struct mf_diag *diag)
{
    const struct mf_agent_config *c = ag->cfg;
    struct mf_state_model *sm = mf_state_model(ag->state, j->model, false);
    struct mf_install_result res;
    struct mf_gate_verdict verdict;
    char *path = NULL;
    enum mf_err err;
    memset(&res, 0, sizeof res);

    if (sm && strcmp(sm->current.package, j->package) == 0)
        return MF_OK; /* already current */
    if (sm && sm->previous.slot[0] && strcmp(sm->previous.package, j->package) == 0 &&
        ag__switch(ag, j, &sm->previous, diag) == MF_OK)
        return MF_OK;

    if (j->file) {
        path = mf_xstrdup(j->file);
    } else {
        if ((err = ag__op(ag, MF_STATE_OP_INSTALL, j->model, j->package, j->version, NULL,
                          MF_STATE_PHASE_DOWNLOAD, diag)) != MF_OK)
            return err;
        uint64_t used = c->disk_budget ? mf_install_usage(c->state_dir) : 0;
        if (!ag->ops.fetch)
            err = mf_diag_set(diag, MF_ERR_NOT_FOUND, "server_url",
                              "no server configured to download from");
        else if (c->disk_budget &&
                 (j->dm->size > c->disk_budget || used + 2 * j->dm->size > c->disk_budget))
            /* the blob and its extracted slot are on disk together for a while */
            err = mf_diag_set(diag, MF_ERR_DISK_BUDGET, j->package,
                              "%" PRIu64 " bytes to download and about as many to extract, "
                              "%" PRIu64 " bytes of models installed: over the disk budget "
                              "of %" PRIu64 " bytes",
                              j->dm->size, used, c->disk_budget);
        else
            err = ag->ops.fetch(ag->ops.ctx, j->dm, ag->downloads, &path, diag);
        if (err != MF_OK) {
            /* Stopped by SIGTERM: not a failure; the .part and the pending
             * desired state carry on at the next start. */
            if (!(ag->stop && *ag->stop))
                ag__event_err(ag, j, MF_EVENT_DOWNLOAD_FAILED, mf_errname(err), diag);
            return ag__fail(ag, j->model, NULL, err);
        }
        crash_point("fetch:done");
    }

    if ((err = ag__op(ag, MF_STATE_OP_INSTALL, j->model, j->package, j->version, NULL,
                      MF_STATE_PHASE_EXTRACT, diag)) != MF_OK)
        goto out;
    err = mf_install_unpack(path, ag->trust, c->state_dir, c->disk_budget, MF_AGENT_VERSION, &res,
                            diag);
    if (err != MF_OK) {
        ag__event_err(ag, j, MF_EVENT_INSTALL_FAILED, mf_errname(err), diag);
        err = ag__fail(ag, j->model, NULL, err);
        goto out;
    }
    const struct mf_manifest *m = res.manifest;
    const char *reason = NULL;
    if (strcmp(m->model, j->model) != 0 || strcmp(m->version, j->version) != 0) {
        reason = "mismatch";
        err = mf_diag_set(diag, MF_ERR_CONFLICT, j->package,
                          "the package holds %s %s, the desired state names %s %s", m->model,
                          m->version, j->model, j->version);
    } else if (!ag__has_hw(m, c->hw_class)) {
        reason = "wrong_hardware";
        err = mf_diag_set(diag, MF_ERR_CONFLICT, j->package,
                          "the package is not built for hardware class %s", c->hw_class);
    } else if (!mf_agent_config_runner(c, m->runtime)) {
        reason = "unsupported_runtime";
        err = mf_diag_set(diag, MF_ERR_CONFLICT, j->package,
                          "no runner is configured for runtime %s", m->runtime);
    }
    if (reason) {
        ag__event_err(ag, j, MF_EVENT_INSTALL_FAILED, reason, diag);
        err = ag__fail(ag, j->model, res.reused ? NULL : res.slot, err);
        goto out;
    }
    sm = mf_state_model(ag->state, j->model, false);
    if (sm && strcmp(sm->current.slot, res.slot) == 0) {
        /* The same content re-signed: nothing to switch. */
        snprintf(sm->current.package, sizeof sm->current.package, "%s", j->package);
        memset(&ag->state->op, 0, sizeof ag->state->op);
        err = ag__save(ag, diag);
        goto out;
    }
    bool is_previous = sm && strcmp(sm->previous.slot, res.slot) == 0;
    if (is_previous) {
        err = ag__switch(ag, j, &sm->previous, diag);
        goto out;
    }

    if ((err = ag__op(ag, MF_STATE_OP_INSTALL, j->model, j->package, j->version, res.slot,
                      MF_STATE_PHASE_BENCHMARK, diag)) != MF_OK)
        goto out;
    if ((err = ag__benchmark(ag, j, &res, &verdict, diag)) != MF_OK) {
        err = ag__fail(ag, j->model, res.slot, err);
        goto out;
    }
    if (!verdict.pass) {
        char detail[MF_DEVMSG_TEXT_MAX];
        struct mf_event_failure fails[MF_GATE__COUNT];
        ag__failures(&verdict, fails);
        snprintf(detail, sizeof detail, "%s", verdict.failures[0].reason);
        for (unsigned i = 1; i < verdict.n_failures; i++) {
            size_t l = strlen(detail);
            snprintf(detail + l, sizeof detail - l, "; %s", verdict.failures[i].reason);
        }
        struct mf_event e = {.kind = MF_EVENT_REFUSED,
                             .reason = mf_gate_check_name(verdict.failures[0].check),
                             .detail = detail,
                             .failures = fails,
                             .n_failures = verdict.n_failures};
        ag__event(ag, j, &e);
        err = mf_diag_set(diag, MF_ERR_REFUSED, j->model, "%s %s refused: %s", j->model, j->version,
                          detail);
        err = ag__fail(ag, j->model, res.slot, err);
        goto out;
    }
    crash_point("gate:passed");
    if ((err = ag__op(ag, MF_STATE_OP_INSTALL, j->model, j->package, j->version, res.slot,
                      MF_STATE_PHASE_ACTIVATE, diag)) != MF_OK ||
        (err = ag__commit(ag, j, diag)) != MF_OK)
        goto out;
out:
    if (err == MF_OK && !j->file && path)
        (void)unlink(path); /* installed: the blob is no longer needed */
    free(path);
    mf_install_result_free(&res);
    return err;
}

/* ---- desired states ---- */

/* Applies every model of d. Returns MF_ERR_UNAVAILABLE when a download could
 * not reach the server (the desired state stays pending: retried later). */
static enum mf_err ag__apply(struct mf_agent *ag, const struct mf_desired *d)
{
    enum mf_err result = MF_OK;
    for (size_t i = 0; i < d->n_models; i++) {
        if (ag->stop && *ag->stop)
            return MF_ERR_UNAVAILABLE;
        const struct mf_desired_model *dm = &d->models[i];
        struct job j = {.origin = "desired",
                        .model = dm->name,
                        .version = dm->version,
                        .package = dm->package,
                        .desired_seq = d->seq,
                        .rollout = d->rollout,
                        .dm = dm};
        struct mf_diag diag = {0};
        if (ag__install(ag, &j, &diag) == MF_ERR_UNAVAILABLE)
            result = MF_ERR_UNAVAILABLE;
    }
    if (result == MF_OK) {
        struct mf_diag diag = {0};
        ag->state->desired_done = true;
        (void)ag__save(ag, &diag);
    }
    return result;
}

static bool ag__same_as_saved(const struct mf_agent *ag, const uint8_t *msg, size_t len)
{
    struct mf_buf b;
    struct mf_diag d = {0};
    if (mf_fs_read_file(ag->desired_path, MF_DESIRED_MAX, &b, &d) != MF_OK)
        return false;
    bool same = b.len == len && (len == 0 || memcmp(b.data, msg, len) == 0);
    mf_buf_free(&b);
    return same;
}

enum mf_err mf_agent_desired(struct mf_agent *ag, const uint8_t *msg, size_t len, bool *quiet,
                             struct mf_diag *diag)
{
    struct mf_desired *d = NULL;
    char signer[MF_KEY_ID_LEN + 1];
    enum mf_err err;
    if (quiet)
        *quiet = false;

    err = mf_desired_open(msg, len, ag->trust, ag->cfg->device_id, ag->state->desired_seq, &d,
                          signer, diag);
    if (err == MF_ERR_STALE && ag__same_as_saved(ag, msg, len)) {
        if (quiet)
            *quiet = true;
        return MF_OK; /* the retained message we applied, delivered again */
    }
    if (err != MF_OK) {
        ag__event_err(ag, NULL, MF_EVENT_DESIRED_REFUSED, mf_errname(err), diag);
        return err;
    }
    if ((err = mf_fs_write_file(ag->desired_path, msg, len, 0600, diag)) != MF_OK)
        goto out;
    ag->state->desired_seq = d->seq;
    ag->state->desired_done = false;
    if ((err = ag__save(ag, diag)) != MF_OK)
        goto out;
    char detail[96];
    snprintf(detail, sizeof detail, "%zu model(s), signed by %s", d->n_models, signer);
    struct mf_event e = {.kind = MF_EVENT_DESIRED_ACCEPTED,
                         .desired_seq = d->seq,
                         .rollout = d->rollout,
                         .detail = detail};
    ag__event(ag, NULL, &e);
    (void)ag__apply(ag, d);
out:
    mf_desired_free(d);
    return err;
}

enum mf_err mf_agent_resume(struct mf_agent *ag, struct mf_diag *diag)
{
    struct mf_buf b;
    struct mf_desired *d = NULL;
    enum mf_err err;
    if (ag->state->desired_done || ag->state->desired_seq == 0)
        return MF_OK;
    if ((err = mf_fs_read_file(ag->desired_path, MF_DESIRED_MAX, &b, diag)) != MF_OK)
        goto give_up;
    err = mf_desired_open(b.data, b.len, ag->trust, ag->cfg->device_id, ag->state->desired_seq - 1,
                          &d, NULL, diag);
    mf_buf_free(&b);
    if (err == MF_OK && d->seq != ag->state->desired_seq)
        err = mf_diag_set(diag, MF_ERR_STALE, ag->desired_path,
                          "holds seq %" PRIu64 ", the state file %" PRIu64, d->seq,
                          ag->state->desired_seq);
    if (err != MF_OK)
        goto give_up;
    mf_log(MF_LOG_INFO, "resuming desired state seq=%" PRIu64 " device=%s", d->seq,
           ag->cfg->device_id);
    err = ag__apply(ag, d);
    mf_desired_free(d);
    return err == MF_ERR_UNAVAILABLE ? MF_OK : err;
give_up:
    /* Cannot be re-read: wait for the next desired state from the server. */
    mf_log(MF_LOG_WARN, "cannot resume the desired state: %s: %s device=%s", diag->where,
           diag->what, ag->cfg->device_id);
    ag->state->desired_done = true;
    {
        struct mf_diag d2 = {0};
        (void)ag__save(ag, &d2);
    }
    return err;
}

bool mf_agent_pending(const struct mf_agent *ag)
{
    return !ag->state->desired_done;
}

/* ---- local commands ---- */

enum mf_err mf_agent_install_file(struct mf_agent *ag, const char *path, struct mf_diag *diag)
{
    struct mf_pkg_result info;
    uint8_t h[MF_HASH_BYTES];
    char id[MF_HASH_HEX];
    uint64_t size;
    enum mf_err err;

    if ((err = mf_hash_file(path, h, &size, diag)) != MF_OK)
        return err;
    mf_hex_encode(id, h, sizeof h);
    memset(&info, 0, sizeof info);
    /* The manifest names the op; mf_install_unpack verifies it all again. */
    if ((err = mf_pkg_inspect(path, &info, diag)) != MF_OK)
        return err;
    struct job j = {.origin = "local",
                    .model = info.manifest->model,
                    .version = info.manifest->version,
                    .package = id,
                    .file = path};
    err = ag__install(ag, &j, diag);
    mf_pkg_result_free(&info);
    return err;
}

/* Finishes the rollback recorded in state->op (slot = the target): swaps the
 * links unless the crash came after the swap, then the state. */
static enum mf_err ag__finish_rollback(struct mf_agent *ag, const struct job *j,
                                       struct mf_diag *diag)
{
    struct mf_state_op op = ag->state->op;
    char cur[MF_INSTALL_SLOT_MAX] = "";
    enum mf_err err = mf_install_current(ag->cfg->state_dir, op.model, cur, diag);
    if (err != MF_OK && err != MF_ERR_NOT_FOUND)
        return err;
    if (strcmp(cur, op.slot) != 0 &&
        (err = mf_install_rollback(ag->cfg->state_dir, op.model, NULL, diag)) != MF_OK)
        return err;
    struct mf_state_model *sm = mf_state_model(ag->state, op.model, true);
    char from[MF_SEMVER_MAX];
    snprintf(from, sizeof from, "%s", sm->current.version);
    if (strcmp(sm->current.slot, op.slot) != 0) {
        struct mf_state_version t = sm->current;
        sm->current = sm->previous;
        sm->previous = t;
    }
    memset(&ag->state->op, 0, sizeof ag->state->op);
    if ((err = ag__save(ag, diag)) != MF_OK)
        return err;
    struct mf_event e = {.kind = MF_EVENT_ROLLED_BACK,
                         .model = op.model,
                         .version = sm->current.version,
                         .package = sm->current.package,
                         .from_version = from};
    ag__event(ag, j, &e);
    ag__hook(ag, j, op.model, sm->current.version, sm->current.slot);
    return MF_OK;
}

enum mf_err mf_agent_rollback(struct mf_agent *ag, const char *model, struct mf_diag *diag)
{
    struct mf_state_model *sm = mf_state_model(ag->state, model, false);
    enum mf_err err;
    if (!sm || !sm->previous.slot[0])
        return mf_diag_set(diag, MF_ERR_NOT_FOUND, model, "no previous version to roll back to");
    struct mf_state_version target = sm->previous;
    if ((err = ag__op(ag, MF_STATE_OP_ROLLBACK, model, target.package, target.version, target.slot,
                      MF_STATE_PHASE_ACTIVATE, diag)) != MF_OK)
        return err;
    struct job j = {.origin = "local", .model = model, .version = target.version};
    return ag__finish_rollback(ag, &j, diag);
}

/* ---- start-up ---- */

/* Finishes or undoes the operation a crash interrupted. */
static enum mf_err ag__recover_op(struct mf_agent *ag, struct mf_diag *diag)
{
    struct mf_state_op op = ag->state->op;
    struct job j = {.origin = "recovery",
                    .model = op.model,
                    .version = op.version,
                    .package = op.package,
                    .desired_seq = ag->state->desired_seq};
    char detail[MF_NAME_MAX + MF_SEMVER_MAX + 128];
    enum mf_err err = MF_OK;

    switch (op.kind) {
    case MF_STATE_OP_NONE:
        return MF_OK;
    case MF_STATE_OP_INSTALL:
        if (op.phase != MF_STATE_PHASE_ACTIVATE) {
            snprintf(detail, sizeof detail,
                     "the install was cut during %s; nothing was activated%s",
                     mf_state_phase_name(op.phase),
                     ag->state->desired_done ? "" : "; the desired state is applied again");
            ag__discard(ag, op.model, op.slot);
            if ((err = ag__op_clear(ag, diag)) != MF_OK)
                return err;
            struct mf_event e = {
                .kind = MF_EVENT_RECOVERED, .reason = "install_abandoned", .detail = detail};
            ag__event(ag, &j, &e);
            return MF_OK;
        }
        __attribute__((fallthrough)); /* the gate had passed: finish it */
    case MF_STATE_OP_ACTIVATE: {
        snprintf(detail, sizeof detail, "an activation of %s %s was cut; finished now", op.model,
                 op.version);
        struct mf_event e = {
            .kind = MF_EVENT_RECOVERED, .reason = "activation_finished", .detail = detail};
        ag__event(ag, &j, &e);
        return ag__commit(ag, &j, diag);
    }
    case MF_STATE_OP_ROLLBACK: {
        snprintf(detail, sizeof detail, "a rollback of %s was cut; finished now", op.model);
        struct mf_event e = {
            .kind = MF_EVENT_RECOVERED, .reason = "rollback_finished", .detail = detail};
        ag__event(ag, &j, &e);
        return ag__finish_rollback(ag, &j, diag);
    }
    }
    return err;
}

/* A current slot that fails its check (damaged storage): back to previous
 * when that one is whole. */
static void ag__repair(struct mf_agent *ag, const struct mf_install_recovery *rec)
{
    for (size_t i = 0; i < rec->broken.n; i++) {
        const char *line = rec->broken.v[i];
        const char *colon = strchr(line, ':');
        char model[MF_NAME_MAX + 1];
        size_t n = colon ? (size_t)(colon - line) : 0;
        if (!n || n > MF_NAME_MAX)
            continue;
        memcpy(model, line, n);
        model[n] = '\0';
        struct mf_state_model *sm = mf_state_model(ag->state, model, false);
        struct job j = {.origin = "recovery", .model = model};
        struct mf_diag d = {0};
        struct mf_event e = {
            .kind = MF_EVENT_RECOVERED, .reason = "current_damaged", .detail = line};
        ag__event(ag, &j, &e);
        if (sm && sm->previous.slot[0] &&
            ag__op(ag, MF_STATE_OP_ROLLBACK, model, sm->previous.package, sm->previous.version,
                   sm->previous.slot, MF_STATE_PHASE_ACTIVATE, &d) == MF_OK)
            (void)ag__finish_rollback(ag, &j, &d);
    }
}

static enum mf_err ag__lock(struct mf_agent *ag, struct mf_diag *diag)
{
    char *path = mf_xasprintf("%s/" MF_AGENT_LOCK, ag->cfg->state_dir);
    enum mf_err err = MF_OK;
    ag->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (ag->lock_fd < 0) {
        err = mf_diag_errno(diag, errno, path, "cannot open the lock file");
    } else if (flock(ag->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        char pid[32] = "";
        ssize_t r = pread(ag->lock_fd, pid, sizeof pid - 1, 0);
        pid[r > 0 ? r : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        err = mf_diag_set(diag, MF_ERR_CONFLICT, path,
                          "another modelfleet-agent (pid %s) uses this state directory",
                          pid[0] ? pid : "?");
    } else {
        char pid[32];
        int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
        if (ftruncate(ag->lock_fd, 0) != 0 || pwrite(ag->lock_fd, pid, (size_t)n, 0) != n)
            err = mf_diag_errno(diag, errno, path, "cannot write the lock file");
    }
    free(path);
    return err;
}

static enum mf_err ag__mkdir(const char *path, struct mf_diag *diag)
{
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        return mf_diag_errno(diag, errno, path, "cannot create the directory");
    return MF_OK;
}

/* Without an operation or a pending desired state, nothing in downloads/ is
 * needed any more (a .part is kept while a desired state is pending). */
static void ag__clean_downloads(struct mf_agent *ag)
{
    if (ag->state->op.kind != MF_STATE_OP_NONE || !ag->state->desired_done)
        return;
    (void)mf_fs_rmtree(ag->downloads);
    (void)mkdir(ag->downloads, 0700);
}

enum mf_err mf_agent_open(const struct mf_agent_config *cfg, const struct mf_agent_ops *ops,
                          volatile sig_atomic_t *stop, struct mf_agent **out, struct mf_diag *diag)
{
    struct mf_agent *ag = mf_xcalloc(1, sizeof *ag);
    struct mf_install_recovery rec;
    enum mf_err err;
    memset(&rec, 0, sizeof rec);
    ag->cfg = cfg;
    if (ops)
        ag->ops = *ops;
    ag->stop = stop;
    ag->lock_fd = -1;
    ag->downloads = mf_xasprintf("%s/" MF_AGENT_DOWNLOADS, cfg->state_dir);
    ag->scratch = mf_xasprintf("%s/" MF_AGENT_SCRATCH, cfg->state_dir);
    ag->desired_path = mf_xasprintf("%s/" MF_AGENT_DESIRED_MSG, cfg->state_dir);
    char *spool = mf_xasprintf("%s/" MF_AGENT_SPOOL, cfg->state_dir);

    if ((err = ag__mkdir(cfg->state_dir, diag)) != MF_OK || (err = ag__lock(ag, diag)) != MF_OK ||
        (err = ag__mkdir(ag->downloads, diag)) != MF_OK ||
        (err = mf_agent_config_keyring(cfg, &ag->trust, diag)) != MF_OK ||
        (err = mf_state_load(cfg->state_dir, &ag->state, diag)) != MF_OK)
        goto out;
    if (ag->state->fresh) {
        snprintf(ag->state->device, sizeof ag->state->device, "%s", cfg->device_id);
    } else if (strcmp(ag->state->device, cfg->device_id) != 0) {
        err = mf_diag_set(diag, MF_ERR_CONFLICT, cfg->state_dir,
                          "the state directory belongs to device %s, not %s", ag->state->device,
                          cfg->device_id);
        goto out;
    }
    struct mf_spool_limits lim = {.max_bytes = cfg->spool_max_bytes,
                                  .max_messages = (uint64_t)cfg->spool_max_messages};
    if ((err = mf_spool_open(spool, &lim, &ag->spool, diag)) != MF_OK)
        goto out;
    if ((err = mf_install_recover(cfg->state_dir, &rec, diag)) != MF_OK)
        goto out;
    for (size_t i = 0; i < rec.cleaned.n; i++)
        mf_log(MF_LOG_INFO, "recovery: removed %s device=%s", rec.cleaned.v[i], cfg->device_id);
    if (ag->state->fresh && (err = ag__save(ag, diag)) != MF_OK)
        goto out;
    if ((err = ag__recover_op(ag, diag)) != MF_OK)
        goto out;
    ag__repair(ag, &rec);
    ag__clean_downloads(ag);
out:
    free(spool);
    mf_install_recovery_free(&rec);
    if (err != MF_OK) {
        mf_agent_close(ag);
        return err;
    }
    *out = ag;
    return MF_OK;
}

void mf_agent_close(struct mf_agent *ag)
{
    if (!ag)
        return;
    mf_spool_close(ag->spool);
    mf_state_free(ag->state);
    if (ag->trust) {
        mf_keyring_free(ag->trust);
        free(ag->trust);
    }
    if (ag->lock_fd >= 0)
        close(ag->lock_fd); /* releases the lock */
    free(ag->downloads);
    free(ag->scratch);
    free(ag->desired_path);
    free(ag);
}

struct mf_spool *mf_agent_spool(struct mf_agent *ag)
{
    return ag->spool;
}

const struct mf_state *mf_agent_state(const struct mf_agent *ag)
{
    return ag->state;
}
