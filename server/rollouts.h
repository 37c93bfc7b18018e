/* rollouts.h — a rollout plan and its gate evidence as JSON: the body of
 * POST /api/v1/rollouts and the rollouts.plan column (schema/0004) on one
 * side, struct mf_rollout_plan and struct mf_rollout_evidence (rollout/) on
 * the other. Shared by the API (server/api_rollouts.c) and the controller
 * (server/controller.c), so a plan is read the same way everywhere.
 *
 * A plan in JSON (every field but model and version optional; docs/rollouts.md):
 *   {"model":"digits","version":"1.1.0","classes":["rpi4"],"labels":{"site":"b"},
 *    "stages":[{"percent":1,"min_devices":1,"min_reporting":1,"soak_s":300,
 *               "timeout_s":3600}, ...],
 *    "gates":{"max_failure_rate":0.1, ...},
 *    "on_fail":"rollback","scope":"per_class","watch_s":0} */
#ifndef MF_SERVER_ROLLOUTS_H
#define MF_SERVER_ROLLOUTS_H

#include <jansson.h>
#include <stdbool.h>

#include "common/err.h"
#include "rollout/rollout.h"

/* A plan with the strings it points at. */
struct mf_plan {
    struct mf_rollout_plan p; /* p.model, p.version, p.classes point into this struct */
    char *model, *version;
    char *classes[MF_ROLLOUT_CLASSES_MAX];
    json_t *labels; /* the selector's labels: an object of string values, maybe empty */
};

/* Reads a plan. Absent fields get the defaults of docs/rollouts.md (stages
 * 1/10/50/100%, the default gates, rollback, per_class, watch 0); unknown
 * fields are refused. An absent or empty "classes" leaves p.n_classes 0 for
 * the caller to fill (the API: every class the version has a package for);
 * with allow_no_classes false it is an error. Any "id" is ignored (p.id = id).
 * The plan is checked with mf_rollout_plan_check unless p.n_classes is 0.
 * Errors: MF_ERR_SCHEMA with diag->where naming the field
 * ("stages[2].percent", "gates.alpha", "labels.site"). */
MF_MUST_CHECK enum mf_err mf_plan_from_json(const json_t *j, int64_t id, bool allow_no_classes,
                                            struct mf_plan *out, struct mf_diag *diag);

/* Sets the classes (copies; at most MF_ROLLOUT_CLASSES_MAX) and checks the
 * whole plan (MF_ERR_SCHEMA as above). */
MF_MUST_CHECK enum mf_err mf_plan_set_classes(struct mf_plan *pl, const char *const *classes,
                                              size_t n, struct mf_diag *diag);

/* Every field, defaults filled in, as stored in rollouts.plan and shown by
 * the API (no "id"). */
json_t *mf_plan_to_json(const struct mf_plan *pl);

void mf_plan_free(struct mf_plan *pl);

/* One class's gate evidence: {"hw_class","stage","verdict","targeted",
 * "assigned","active","refused","failed","crashes","reporting",
 * "with_incumbent","n","both","only_candidate","only_incumbent","neither",
 * "correct","accuracy","drop","drop_upper","p_worse","p50_ratio","p99_ratio",
 * "reason"}; reals that are not finite, and accuracy without reports or the
 * paired figures (drop, drop_upper, p_worse, ratios) without an incumbent,
 * are null. */
json_t *mf_evidence_to_json(const struct mf_rollout_evidence *e);

/* Device labels: at most MF_LABELS_MAX pairs, keys 1-64 characters of
 * [A-Za-z0-9._-], values strings of at most MF_LABEL_VALUE_MAX bytes (no NUL).
 * Shared by enrollment and plan selectors. */
#define MF_LABELS_MAX      16
#define MF_LABEL_VALUE_MAX 128

/* MF_ERR_SCHEMA with diag->where = `where` or `where.<key>` when `labels`
 * is not such an object. */
MF_MUST_CHECK enum mf_err mf_labels_check(const json_t *labels, const char *where,
                                          struct mf_diag *diag);

/* "active" | "failed" | "done", and back (false: unknown name). */
const char *mf_class_status_name(enum mf_rollout_class_status s);
bool mf_class_status_parse(const char *name, enum mf_rollout_class_status *out);
/* The inverse of mf_rollout_status_name (false: unknown name). */
bool mf_rollout_status_parse(const char *name, enum mf_rollout_status *out);

#endif
