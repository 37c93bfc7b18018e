/* rollouts.c — plans and gate evidence as JSON (see rollouts.h). */
#include "server/rollouts.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json.h"
#include "common/mem.h"

static enum mf_err bad(struct mf_diag *diag, const char *where, const char *what)
{
    return mf_diag_set(diag, MF_ERR_SCHEMA, where, "%s", what);
}

/* diag (from mf_json_only inside an object) again, its where under `at`. */
static enum mf_err prefixed(struct mf_diag *diag, const char *at)
{
    char where[sizeof diag->where], what[sizeof diag->what];
    snprintf(where, sizeof where, "%.64s%s%.128s", at, diag->where[0] ? "." : "", diag->where);
    snprintf(what, sizeof what, "%s", diag->what);
    return bad(diag, where, what);
}

/* A real (integer or real JSON number), if present. */
static enum mf_err get_real(const json_t *o, const char *key, const char *at, double *out,
                            struct mf_diag *diag)
{
    const json_t *v = json_object_get(o, key);
    if (!v)
        return MF_OK;
    if (!json_is_number(v) || !isfinite(json_number_value(v)))
        return bad(diag, at, "must be a number");
    *out = json_number_value(v);
    return MF_OK;
}

/* A non-negative integer below 2^53, if present. */
static enum mf_err get_uint(const json_t *o, const char *key, const char *at, uint64_t *out,
                            struct mf_diag *diag)
{
    const json_t *v = json_object_get(o, key);
    if (!v)
        return MF_OK;
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        json_integer_value(v) > (json_int_t)1 << 53)
        return bad(diag, at, "must be an integer from 0 to 2^53");
    *out = (uint64_t)json_integer_value(v);
    return MF_OK;
}

static enum mf_err get_secs(const json_t *o, const char *key, const char *at, int64_t *out,
                            struct mf_diag *diag)
{
    uint64_t u = (uint64_t)*out;
    enum mf_err rc = get_uint(o, key, at, &u, diag);
    *out = (int64_t)u;
    return rc;
}

static enum mf_err get_stage(const json_t *s, size_t i, struct mf_rollout_stage *out,
                             struct mf_diag *diag)
{
    static const char *const fields[] = {"percent", "min_devices", "min_reporting",
                                         "soak_s",  "timeout_s",   NULL};
    char at[64];
    enum mf_err rc;

    snprintf(at, sizeof at, "stages[%zu]", i);
    if ((rc = mf_json_only(s, fields, diag)) != MF_OK) {
        return prefixed(diag, at);
    }
    *out = mf_rollout_stage_default();
    if (!json_object_get(s, "percent"))
        return bad(diag, (snprintf(at, sizeof at, "stages[%zu].percent", i), at), "is required");
    const struct {
        const char *key;
        double *real;
        uint64_t *uint;
        int64_t *secs;
    } f[] = {{"percent", &out->percent, NULL, NULL},
             {"min_devices", NULL, &out->min_devices, NULL},
             {"min_reporting", NULL, &out->min_reporting, NULL},
             {"soak_s", NULL, NULL, &out->soak_s},
             {"timeout_s", NULL, NULL, &out->timeout_s}};
    for (size_t k = 0; k < sizeof f / sizeof *f; k++) {
        snprintf(at, sizeof at, "stages[%zu].%s", i, f[k].key);
        rc = f[k].real   ? get_real(s, f[k].key, at, f[k].real, diag)
             : f[k].uint ? get_uint(s, f[k].key, at, f[k].uint, diag)
                         : get_secs(s, f[k].key, at, f[k].secs, diag);
        if (rc != MF_OK)
            return rc;
    }
    return MF_OK;
}

static enum mf_err get_gates(const json_t *g, struct mf_rollout_gates *out, struct mf_diag *diag)
{
    static const char *const fields[] = {"max_failure_rate", "max_failures",      "max_crashes",
                                         "min_accuracy",     "max_accuracy_drop", "alpha",
                                         "max_p50_ratio",    "max_p99_ratio",     NULL};
    char at[64];
    enum mf_err rc;

    if ((rc = mf_json_only(g, fields, diag)) != MF_OK) {
        return prefixed(diag, "gates");
    }
    const struct {
        const char *key;
        double *real;
        uint64_t *uint;
    } f[] = {{"max_failure_rate", &out->max_failure_rate, NULL},
             {"max_failures", NULL, &out->max_failures},
             {"max_crashes", NULL, &out->max_crashes},
             {"min_accuracy", &out->min_accuracy, NULL},
             {"max_accuracy_drop", &out->max_accuracy_drop, NULL},
             {"alpha", &out->alpha, NULL},
             {"max_p50_ratio", &out->max_p50_ratio, NULL},
             {"max_p99_ratio", &out->max_p99_ratio, NULL}};
    for (size_t k = 0; k < sizeof f / sizeof *f; k++) {
        snprintf(at, sizeof at, "gates.%s", f[k].key);
        rc = f[k].real ? get_real(g, f[k].key, at, f[k].real, diag)
                       : get_uint(g, f[k].key, at, f[k].uint, diag);
        if (rc != MF_OK)
            return rc;
    }
    return MF_OK;
}

static bool label_key_ok(const char *k)
{
    size_t n = strlen(k);
    if (n < 1 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = k[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

enum mf_err mf_labels_check(const json_t *labels, const char *where, struct mf_diag *diag)
{
    const char *k;
    json_t *v;

    if (!json_is_object(labels) || json_object_size(labels) > MF_LABELS_MAX)
        return mf_diag_set(diag, MF_ERR_SCHEMA, where,
                           "must be an object of at most %d string values", MF_LABELS_MAX);
    json_object_foreach((json_t *)labels, k, v)
    {
        if (!label_key_ok(k))
            return mf_diag_set(diag, MF_ERR_SCHEMA, where,
                               "label names must be 1-64 characters of [A-Za-z0-9._-]");
        if (!json_is_string(v) || json_string_length(v) > MF_LABEL_VALUE_MAX ||
            strlen(json_string_value(v)) != json_string_length(v)) {
            char w[MF_DIAG_WHERE];
            snprintf(w, sizeof w, "%s.%s", where, k);
            return mf_diag_set(diag, MF_ERR_SCHEMA, w,
                               "must be a string of at most %d bytes (no NUL)", MF_LABEL_VALUE_MAX);
        }
    }
    return MF_OK;
}

static const char *const on_fail_names[] = {"rollback", "pause"};
static const char *const scope_names[] = {"per_class", "whole"};

static enum mf_err get_enum(const json_t *o, const char *key, const char *const *names, int *out,
                            struct mf_diag *diag)
{
    const json_t *v = json_object_get(o, key);
    if (!v)
        return MF_OK;
    for (int i = 0; i < 2; i++)
        if (json_is_string(v) && strcmp(json_string_value(v), names[i]) == 0) {
            *out = i;
            return MF_OK;
        }
    return mf_diag_set(diag, MF_ERR_SCHEMA, key, "must be \"%s\" or \"%s\"", names[0], names[1]);
}

enum mf_err mf_plan_from_json(const json_t *j, int64_t id, bool allow_no_classes,
                              struct mf_plan *out, struct mf_diag *diag)
{
    static const char *const fields[] = {"id",     "model",   "version", "classes",
                                         "labels", "stages",  "gates",   "on_fail",
                                         "scope",  "watch_s", NULL};
    enum mf_err rc;
    const json_t *v;

    memset(out, 0, sizeof *out);
    out->p.id = id;
    mf_rollout_plan_defaults(&out->p);
    if ((rc = mf_json_only(j, fields, diag)) != MF_OK)
        return rc;
    v = json_object_get(j, "model");
    if (!json_is_string(v) || json_string_length(v) == 0)
        return bad(diag, "model", "is required: the model's name");
    out->model = mf_xstrdup(json_string_value(v));
    v = json_object_get(j, "version");
    if (!json_is_string(v) || json_string_length(v) == 0)
        return bad(diag, "version", "is required: the version to roll out");
    out->version = mf_xstrdup(json_string_value(v));
    out->p.model = out->model;
    out->p.version = out->version;

    v = json_object_get(j, "labels");
    if (v && (rc = mf_labels_check(v, "labels", diag)) != MF_OK)
        return rc;
    out->labels = v ? json_deep_copy(v) : json_object();

    v = json_object_get(j, "stages");
    if (v) {
        if (!json_is_array(v) || json_array_size(v) == 0 ||
            json_array_size(v) > MF_ROLLOUT_STAGES_MAX)
            return mf_diag_set(diag, MF_ERR_SCHEMA, "stages", "must be an array of 1 to %d stages",
                               MF_ROLLOUT_STAGES_MAX);
        for (size_t i = 0; i < json_array_size(v); i++)
            if ((rc = get_stage(json_array_get(v, i), i, &out->p.stages[i], diag)) != MF_OK)
                return rc;
        out->p.n_stages = json_array_size(v);
    }
    v = json_object_get(j, "gates");
    if (v && (rc = get_gates(v, &out->p.gates, diag)) != MF_OK)
        return rc;
    int on_fail = MF_ROLLOUT_ON_FAIL_ROLLBACK, scope = MF_ROLLOUT_PER_CLASS;
    if ((rc = get_enum(j, "on_fail", on_fail_names, &on_fail, diag)) != MF_OK ||
        (rc = get_enum(j, "scope", scope_names, &scope, diag)) != MF_OK ||
        (rc = get_secs(j, "watch_s", "watch_s", &out->p.watch_s, diag)) != MF_OK)
        return rc;
    out->p.on_fail = (enum mf_rollout_on_fail)on_fail;
    out->p.scope = (enum mf_rollout_scope)scope;

    v = json_object_get(j, "classes");
    if (v && !json_is_array(v))
        return bad(diag, "classes", "must be an array of hardware class names");
    size_t n = v ? json_array_size(v) : 0;
    if (n > MF_ROLLOUT_CLASSES_MAX)
        return mf_diag_set(diag, MF_ERR_SCHEMA, "classes", "must list at most %d hardware classes",
                           MF_ROLLOUT_CLASSES_MAX);
    const char *names[MF_ROLLOUT_CLASSES_MAX];
    for (size_t i = 0; i < n; i++) {
        names[i] = json_string_value(json_array_get(v, i));
        if (!names[i]) {
            char at[32];
            snprintf(at, sizeof at, "classes[%zu]", i);
            return bad(diag, at, "must be a hardware class name");
        }
    }
    if (n == 0) {
        if (!allow_no_classes)
            return bad(diag, "classes", "must list 1 or more hardware classes");
        return MF_OK;
    }
    return mf_plan_set_classes(out, names, n, diag);
}

enum mf_err mf_plan_set_classes(struct mf_plan *pl, const char *const *classes, size_t n,
                                struct mf_diag *diag)
{
    if (n == 0 || n > MF_ROLLOUT_CLASSES_MAX)
        return mf_diag_set(diag, MF_ERR_SCHEMA, "classes", "must list 1 to %d hardware classes",
                           MF_ROLLOUT_CLASSES_MAX);
    for (size_t i = 0; i < pl->p.n_classes; i++) {
        free(pl->classes[i]);
        pl->classes[i] = NULL;
    }
    for (size_t i = 0; i < n; i++)
        pl->classes[i] = mf_xstrdup(classes[i]);
    pl->p.classes = (const char *const *)pl->classes;
    pl->p.n_classes = n;
    return mf_rollout_plan_check(&pl->p, diag);
}

json_t *mf_plan_to_json(const struct mf_plan *pl)
{
    const struct mf_rollout_plan *p = &pl->p;
    json_t *classes = json_array(), *stages = json_array();
    for (size_t i = 0; i < p->n_classes; i++)
        json_array_append_new(classes, json_string(p->classes[i]));
    for (size_t i = 0; i < p->n_stages; i++) {
        const struct mf_rollout_stage *s = &p->stages[i];
        json_array_append_new(stages, json_pack("{s:f, s:I, s:I, s:I, s:I}", "percent", s->percent,
                                                "min_devices", (json_int_t)s->min_devices,
                                                "min_reporting", (json_int_t)s->min_reporting,
                                                "soak_s", (json_int_t)s->soak_s, "timeout_s",
                                                (json_int_t)s->timeout_s));
    }
    const struct mf_rollout_gates *g = &p->gates;
    json_t *gates = json_pack(
        "{s:f, s:I, s:I, s:f, s:f, s:f, s:f, s:f}", "max_failure_rate", g->max_failure_rate,
        "max_failures", (json_int_t)g->max_failures, "max_crashes", (json_int_t)g->max_crashes,
        "min_accuracy", g->min_accuracy, "max_accuracy_drop", g->max_accuracy_drop, "alpha",
        g->alpha, "max_p50_ratio", g->max_p50_ratio, "max_p99_ratio", g->max_p99_ratio);
    return json_pack("{s:s, s:s, s:o, s:o, s:o, s:o, s:s, s:s, s:I}", "model", p->model, "version",
                     p->version, "classes", classes, "labels",
                     pl->labels ? json_incref(pl->labels) : json_object(), "stages", stages,
                     "gates", gates, "on_fail", on_fail_names[p->on_fail], "scope",
                     scope_names[p->scope], "watch_s", (json_int_t)p->watch_s);
}

void mf_plan_free(struct mf_plan *pl)
{
    if (!pl)
        return;
    free(pl->model);
    free(pl->version);
    for (size_t i = 0; i < MF_ROLLOUT_CLASSES_MAX; i++)
        free(pl->classes[i]);
    json_decref(pl->labels);
    memset(pl, 0, sizeof *pl);
}

static json_t *real_or_null(double x)
{
    return isfinite(x) ? json_real(x) : json_null();
}

json_t *mf_evidence_to_json(const struct mf_rollout_evidence *e)
{
    json_t *o = json_pack("{s:s, s:I, s:s}", "hw_class", e->hw_class ? e->hw_class : "", "stage",
                          (json_int_t)e->stage, "verdict", mf_rollout_verdict_name(e->verdict));
    const struct {
        const char *key;
        uint64_t v;
    } counts[] = {{"targeted", e->targeted},
                  {"assigned", e->assigned},
                  {"active", e->active},
                  {"refused", e->refused},
                  {"failed", e->failed},
                  {"crashes", e->crashes},
                  {"reporting", e->reporting},
                  {"with_incumbent", e->with_incumbent},
                  {"n", e->n},
                  {"both", e->both},
                  {"only_candidate", e->only_candidate},
                  {"only_incumbent", e->only_incumbent},
                  {"neither", e->neither},
                  {"correct", e->correct}};
    for (size_t i = 0; i < sizeof counts / sizeof *counts; i++)
        json_object_set_new(o, counts[i].key, json_integer((json_int_t)counts[i].v));
    const struct {
        const char *key;
        double v;
    } reals[] = {{"accuracy", e->accuracy},     {"drop", e->drop},
                 {"drop_upper", e->drop_upper}, {"p_worse", e->p_worse},
                 {"p50_ratio", e->p50_ratio},   {"p99_ratio", e->p99_ratio}};
    for (size_t i = 0; i < sizeof reals / sizeof *reals; i++) {
        /* without a paired table there is no drop, bound, p or ratio: null */
        bool paired_only = i > 0;
        json_object_set_new(o, reals[i].key,
                            (paired_only && e->with_incumbent == 0) || (i == 0 && e->n == 0)
                                ? json_null()
                                : real_or_null(reals[i].v));
    }
    json_object_set_new(o, "reason", json_string(e->reason));
    return o;
}

static const char *const class_status_names[] = {"active", "failed", "done"};

const char *mf_class_status_name(enum mf_rollout_class_status s)
{
    return (unsigned)s < 3 ? class_status_names[s] : "unknown";
}

bool mf_class_status_parse(const char *name, enum mf_rollout_class_status *out)
{
    for (int i = 0; i < 3; i++)
        if (name && strcmp(name, class_status_names[i]) == 0) {
            *out = (enum mf_rollout_class_status)i;
            return true;
        }
    return false;
}

bool mf_rollout_status_parse(const char *name, enum mf_rollout_status *out)
{
    for (int i = MF_ROLLOUT_RUNNING; i <= MF_ROLLOUT_ABORTED; i++)
        if (name && strcmp(name, mf_rollout_status_name((enum mf_rollout_status)i)) == 0) {
            *out = (enum mf_rollout_status)i;
            return true;
        }
    return false;
}
