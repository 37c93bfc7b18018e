/* api_rollouts.c — the /api/v1/rollouts handlers. A plan is read with
 * server/rollouts.h (the controller reads the stored one the same way),
 * completed with the version's hardware classes and stored normalized in
 * rollouts.plan. Invariants: at most one live rollout (running, paused,
 * watching) per model and hardware class — checked under a per-model advisory
 * lock, so two concurrent creations cannot both pass; every transition takes
 * the rollout's row lock (as the controller's step does), changes the rollout
 * and its stage rows, and writes its audit_log row, in one transaction. Reads are one statement
 * each, JSON built by PostgreSQL; values travel only as parameters. */
#include "server/api_rollouts.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/json.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/semver.h"
#include "packaging/manifest.h"
#include "server/controller.h"
#include "server/rollouts.h"
#include "server/store.h"

/* ---- SQL ---------------------------------------------------------------- */

/* A device's outcome in rollout `r`, for its row `rd` of rollout_devices,
 * `m` its device_models row for the rollout's model (or NULLs) and `ev.kind`
 * its latest outcome event for the candidate (or NULL): rolled back by the
 * rollout; else active when it runs the candidate or that event is an
 * activation; else refused or failed by that event; else assigned. */
#define RO_OUTCOME                                                                                 \
    "CASE WHEN rd.rolled_back_at IS NOT NULL THEN 'rolled_back'"                                   \
    " WHEN m.version = r.version OR ev.kind = 'activated' THEN 'active'"                           \
    " WHEN ev.kind = 'refused' THEN 'refused' WHEN ev.kind IS NOT NULL THEN 'failed'"              \
    " ELSE 'assigned' END"

/* The events that decide an outcome (see RO_OUTCOME), of the candidate. */
#define RO_EVENT_KINDS                                                                             \
    "e.rollout_id = r.id AND e.version = r.version AND e.kind IN ('activated', 'refused',"         \
    " 'download_failed', 'install_failed', 'benchmark_failed', 'desired_refused')"

/* The hardware classes of rollout `r` with their statuses, in plan order. */
#define RO_CLASSES                                                                                 \
    "(SELECT coalesce(json_agg(json_build_object('hw_class', u.c, 'status', u.s) ORDER BY u.k),"   \
    " '[]'::json) FROM unnest(r.classes, r.class_status) WITH ORDINALITY u(c, s, k))"

#define RO_SUMMARY_FIELDS                                                                          \
    "'id', r.id, 'model', r.model, 'version', r.version, 'status', r.status, 'stage', r.stage,"    \
    " 'reason', r.reason, 'created_by', r.created_by, 'created_at', mf_rfc3339(r.created_at),"     \
    " 'updated_at', mf_rfc3339(r.updated_at), 'finished_at', mf_rfc3339(r.finished_at),"           \
    " 'classes', " RO_CLASSES

/* The list item. */
#define RO_SUMMARY                                                                                 \
    "json_build_object(" RO_SUMMARY_FIELDS ", 'stages', jsonb_array_length(r.plan->'stages'))"

/* The stage rows with the controller's decision (reason, per-class evidence). */
#define RO_STAGES                                                                                  \
    "(SELECT coalesce(json_agg(json_build_object('stage', s.stage,"                                \
    " 'percent', r.plan->'stages'->s.stage->'percent', 'status', s.status,"                        \
    " 'started_at', mf_rfc3339(s.started_at), 'ended_at', mf_rfc3339(s.ended_at),"                 \
    " 'reason', s.decision->>'reason', 'classes', coalesce(s.decision->'classes', '[]'::jsonb))"   \
    " ORDER BY s.stage), '[]'::json) FROM rollout_stages s WHERE s.rollout_id = r.id)"

/* The rollout object. Counts per class, set-based (one pass each): tg the
 * devices the plan selects (class and labels), ev the latest outcome event
 * of each device, oc the assigned devices by outcome. */
static const char ro__sql_get[] =
    "WITH r AS (SELECT * FROM rollouts WHERE id = $1::bigint),"
    " tg AS (SELECT d.hw_class, count(*) AS targeted, count(*) FILTER (WHERE d.online) AS online"
    " FROM r JOIN devices d ON d.hw_class = ANY (r.classes)"
    " AND d.labels @> coalesce(r.plan->'labels', '{}'::jsonb) GROUP BY d.hw_class),"
    " ev AS (SELECT DISTINCT ON (e.device_id) e.device_id, e.kind FROM r JOIN events e "
    "ON " RO_EVENT_KINDS " ORDER BY e.device_id DESC, e.id DESC),"
    " oc AS (SELECT o.hw_class, count(*) AS assigned,"
    " count(*) FILTER (WHERE o.outcome = 'active') AS active,"
    " count(*) FILTER (WHERE o.outcome = 'refused') AS refused,"
    " count(*) FILTER (WHERE o.outcome = 'failed') AS failed,"
    " count(*) FILTER (WHERE o.outcome = 'rolled_back') AS rolled_back"
    " FROM (SELECT d.hw_class, " RO_OUTCOME " AS outcome FROM r"
    " JOIN rollout_devices rd ON rd.rollout_id = r.id JOIN devices d ON d.id = rd.device_id"
    " LEFT JOIN device_models m ON m.device_id = rd.device_id AND m.model = r.model"
    " LEFT JOIN ev ON ev.device_id = rd.device_id) o GROUP BY o.hw_class)"
    " SELECT json_build_object(" RO_SUMMARY_FIELDS ", 'plan', r.plan,"
    " 'stage_started', mf_rfc3339(r.stage_started), 'watch_started', mf_rfc3339(r.watch_started),"
    " 'rollback_pending', r.rollback_pending,"
    " 'counts', (SELECT coalesce(json_agg(json_build_object('hw_class', c.hw_class,"
    " 'targeted', coalesce(tg.targeted, 0), 'assigned', coalesce(oc.assigned, 0),"
    " 'active', coalesce(oc.active, 0), 'refused', coalesce(oc.refused, 0),"
    " 'failed', coalesce(oc.failed, 0), 'rolled_back', coalesce(oc.rolled_back, 0),"
    " 'online', coalesce(tg.online, 0)) ORDER BY c.k), '[]'::json)"
    " FROM unnest(r.classes) WITH ORDINALITY c(hw_class, k)"
    " LEFT JOIN tg ON tg.hw_class = c.hw_class LEFT JOIN oc ON oc.hw_class = c.hw_class),"
    " 'stages', " RO_STAGES ")::text FROM r";

/* Newest first; after = an id: the ids below it. $2: a status or 'live'. */
static const char ro__sql_list[] =
    "SELECT json_build_object('rollouts',"
    " coalesce(json_agg(s.j ORDER BY s.id DESC) FILTER (WHERE s.rn <= $4::integer), '[]'::json),"
    " 'next', CASE WHEN count(*) > $4::integer"
    " THEN min(s.id) FILTER (WHERE s.rn <= $4::integer) END)::text"
    " FROM (SELECT r.id, row_number() OVER (ORDER BY r.id DESC) AS rn, " RO_SUMMARY " AS j"
    " FROM rollouts r WHERE ($1::text IS NULL OR r.model = $1::text)"
    " AND ($2::text IS NULL OR r.status = $2::text"
    " OR ($2::text = 'live' AND r.status IN ('running', 'paused', 'watching')))"
    " AND ($3::bigint IS NULL OR r.id < $3::bigint)"
    " ORDER BY r.id DESC LIMIT $4::integer + 1) s";

/* The rollout's assigned devices by id; no row when the rollout is unknown. */
static const char ro__sql_devices[] =
    "SELECT json_build_object('devices',"
    " coalesce(json_agg(s.j ORDER BY s.id) FILTER (WHERE s.rn <= $5::integer), '[]'::json),"
    " 'next', CASE WHEN count(s.id) > $5::integer"
    " THEN max(s.id) FILTER (WHERE s.rn <= $5::integer) END)::text"
    " FROM rollouts r LEFT JOIN LATERAL (SELECT y.id, row_number() OVER (ORDER BY y.id) AS rn,"
    " json_build_object('id', y.id, 'hw_class', y.hw_class, 'online', y.online,"
    " 'bucket', y.bucket, 'stage', y.stage, 'outcome', y.outcome, 'from_version', y.from_version,"
    " 'running', y.running, 'assigned_at', mf_rfc3339(y.assigned_at),"
    " 'rolled_back_at', mf_rfc3339(y.rolled_back_at)) AS j"
    " FROM (SELECT d.id, d.hw_class, d.online, rd.bucket, rd.stage, rd.from_version,"
    " m.version AS running, rd.assigned_at, rd.rolled_back_at, " RO_OUTCOME " AS outcome"
    " FROM rollout_devices rd JOIN devices d ON d.id = rd.device_id"
    " LEFT JOIN device_models m ON m.device_id = d.id AND m.model = r.model"
    " LEFT JOIN LATERAL (SELECT e.kind FROM events e WHERE " RO_EVENT_KINDS
    " AND e.device_id = rd.device_id ORDER BY e.id DESC LIMIT 1) ev ON true"
    " WHERE rd.rollout_id = r.id AND ($2::text IS NULL OR d.hw_class = $2::text)"
    " AND ($4::text IS NULL OR d.id > $4::text)) y"
    " WHERE ($3::text IS NULL OR y.outcome = $3::text)"
    " ORDER BY y.id LIMIT $5::integer + 1) s ON true"
    " WHERE r.id = $1::bigint GROUP BY r.id";

/* Creation: the rollout, its stage rows (the first running), its audit row.
 * $1 model, $2 version, $3 plan (normalized), $4 created_by. */
static const char ro__sql_insert[] =
    "WITH r AS (INSERT INTO rollouts (model, version, status, plan, stage, classes, class_status,"
    " stage_started, created_by)"
    " SELECT $1::text, $2::text, 'running', p.plan, 0, p.classes,"
    " array_fill('active'::text, ARRAY[cardinality(p.classes)]), now(), $4::text"
    " FROM (SELECT $3::jsonb AS plan,"
    " ARRAY(SELECT jsonb_array_elements_text($3::jsonb->'classes')) AS classes) p"
    " RETURNING id, plan, classes),"
    " s AS (INSERT INTO rollout_stages (rollout_id, stage, fraction, status, started_at)"
    " SELECT r.id, (e.k - 1)::integer, (e.st->>'percent')::double precision / 100,"
    " CASE WHEN e.k = 1 THEN 'running' ELSE 'pending' END, CASE WHEN e.k = 1 THEN now() END"
    " FROM r, jsonb_array_elements(r.plan->'stages') WITH ORDINALITY e(st, k)),"
    " a AS (INSERT INTO audit_log (actor, action, object, detail)"
    " SELECT $4::text, 'rollout.start', 'rollout/' || r.id, jsonb_build_object('model', $1::text,"
    " 'version', $2::text, 'classes', to_jsonb(r.classes), 'plan', r.plan) FROM r)"
    " SELECT id FROM r";

static const char ro__sql_audit[] = "INSERT INTO audit_log (actor, action, object, detail)"
                                    " VALUES ($1::text, $2::text, $3::text, $4::jsonb)";

/* ---- helpers ------------------------------------------------------------ */

/* The rollout id of the path; false (400 set) when it is not one. */
static bool ro__id(struct mf_http_req *req, const char **id)
{
    const char *s = req->param[0];
    size_t n = 0;
    while (s[n] >= '0' && s[n] <= '9')
        n++;
    if (n == 0 || n > 18 || s[n] != '\0' || s[0] == '0') {
        mf_http_error(req, 400, "bad_request", "the rollout id must be a positive integer");
        return false;
    }
    *id = s;
    return true;
}

static bool ro__one_of(const char *s, const char *const *names)
{
    for (size_t i = 0; names[i]; i++)
        if (strcmp(s, names[i]) == 0)
            return true;
    return false;
}

/* Answers with the rollout object (status 200 or 201). */
static void ro__reply_get(struct mf_http_req *req, const char *id, unsigned status)
{
    struct mf_diag diag = {0};
    char *json = NULL;
    const char *p[1] = {id};
    enum mf_err rc = mf_store_json(req->db, ro__sql_get, 1, p, &json, &diag);
    if (rc == MF_OK) {
        mf_http_json_text(req, status, json, strlen(json));
        free(json);
        return;
    }
    if (rc == MF_ERR_NOT_FOUND)
        mf_diag_set(&diag, rc, "", "no rollout with id %s", id);
    mf_http_error_diag(req, &diag);
}

/* ---- POST /rollouts ----------------------------------------------------- */

/* The hardware classes model+version has a package for, sorted; MF_ERR_NOT_FOUND
 * (diag set for the API) when the model or the version is unknown. */
static enum mf_err ro__package_classes(struct mf_db *db, const char *model, const char *version,
                                       struct mf_strlist *out, struct mf_diag *diag)
{
    PGresult *res = NULL;
    const char *p[2] = {model, version};
    enum mf_err rc = mf_db_exec(db,
                                "SELECT h.hw_class, (SELECT count(*) FROM models m"
                                " WHERE m.name = $1::text) FROM (SELECT 1) one"
                                " LEFT JOIN package_hardware h ON h.model = $1::text"
                                " AND h.version = $2::text ORDER BY h.hw_class",
                                2, p, &res, diag);
    if (rc != MF_OK)
        return rc;
    if (strcmp(PQgetvalue(res, 0, 1), "0") == 0)
        rc = mf_diag_set(diag, MF_ERR_NOT_FOUND, "", "no model named %s", model);
    else if (PQgetisnull(res, 0, 0))
        rc = mf_diag_set(diag, MF_ERR_NOT_FOUND, "", "no version %s of model %s", version, model);
    else
        for (int i = 0; i < PQntuples(res); i++)
            mf_strlist_push(out, PQgetvalue(res, i, 0));
    PQclear(res);
    return rc;
}

/* The live rollout of pl's model that targets one of its classes: its id and
 * those classes (comma-separated), or MF_ERR_NOT_FOUND. */
static enum mf_err ro__live_overlap(struct mf_db *db, const char *model, const char *plan_json,
                                    char **id, char **classes, struct mf_diag *diag)
{
    PGresult *res = NULL;
    const char *p[2] = {model, plan_json};
    enum mf_err rc =
        mf_db_exec(db,
                   "SELECT r.id, array_to_string(ARRAY(SELECT unnest(r.classes) INTERSECT"
                   " SELECT jsonb_array_elements_text($2::jsonb->'classes') ORDER BY 1), ', ')"
                   " FROM rollouts r WHERE r.model = $1::text"
                   " AND r.status IN ('running', 'paused', 'watching')"
                   " AND r.classes && ARRAY(SELECT jsonb_array_elements_text($2::jsonb->'classes'))"
                   " ORDER BY r.id LIMIT 1",
                   2, p, &res, diag);
    if (rc != MF_OK)
        return rc;
    if (PQntuples(res) == 0) {
        rc = MF_ERR_NOT_FOUND;
    } else {
        *id = mf_xstrdup(PQgetvalue(res, 0, 0));
        *classes = mf_xstrdup(PQgetvalue(res, 0, 1));
    }
    PQclear(res);
    return rc;
}

void mf_api_rollout_create(struct mf_http_req *req)
{
    struct mf_plan pl = {0};
    struct mf_diag diag = {0};
    struct mf_strlist have = {0};
    struct mf_semver sv;
    json_t *plan_j = NULL;
    char *plan = NULL, *id = NULL, *other = NULL, *other_classes = NULL;
    PGresult *res = NULL;
    bool in_tx = false;
    enum mf_err rc;

    rc = mf_plan_from_json(req->json, 0, true, &pl, &diag);
    if (rc != MF_OK)
        goto fail;
    if (!mf_pkg_name_ok(pl.model)) {
        rc = mf_diag_set(&diag, MF_ERR_SCHEMA, "model",
                         "must be 1-64 characters of [A-Za-z0-9._-] starting with a letter or "
                         "digit");
        goto fail;
    }
    if (mf_semver_parse(pl.version, &sv, NULL) != MF_OK) {
        rc = mf_diag_set(&diag, MF_ERR_SCHEMA, "version",
                         "must be a semantic version such as 1.2.0");
        goto fail;
    }
    rc = ro__package_classes(req->db, pl.model, pl.version, &have, &diag);
    if (rc != MF_OK)
        goto fail;
    if (pl.p.n_classes == 0) {
        rc = mf_plan_set_classes(&pl, (const char *const *)have.v, have.n, &diag);
        if (rc != MF_OK)
            goto fail;
    }
    for (size_t i = 0; i < pl.p.n_classes; i++) {
        size_t j = 0;
        while (j < have.n && strcmp(have.v[j], pl.p.classes[i]) != 0)
            j++;
        if (j == have.n) {
            char w[32];
            snprintf(w, sizeof w, "classes[%zu]", i);
            if (!mf_pkg_name_ok(pl.p.classes[i]))
                rc = mf_diag_set(&diag, MF_ERR_SCHEMA, w,
                                 "must be a hardware class name: 1-64 characters of "
                                 "[A-Za-z0-9._-]");
            else
                rc = mf_diag_set(&diag, MF_ERR_SCHEMA, w,
                                 "no package of %s %s for hardware class %s", pl.model, pl.version,
                                 pl.p.classes[i]);
            goto fail;
        }
    }
    plan_j = mf_plan_to_json(&pl);
    /* 15 significant digits: a threshold typed as 0.05 is stored as 0.05,
     * not as the 17-digit expansion of the nearest double. */
    plan = json_dumps(plan_j, JSON_COMPACT | JSON_REAL_PRECISION(15));

    const char *pk[1] = {pl.model};
    const char *pi[4] = {pl.model, pl.version, plan, req->who.name};
    rc = mf_db_begin(req->db, &diag);
    if (rc != MF_OK)
        goto fail;
    in_tx = true;
    rc = mf_db_exec(req->db, "SELECT pg_advisory_xact_lock(hashtext('mf-rollout:' || $1::text))", 1,
                    pk, NULL, &diag);
    if (rc != MF_OK)
        goto fail;
    rc = ro__live_overlap(req->db, pl.model, plan, &other, &other_classes, &diag);
    if (rc == MF_OK) {
        mf_db_rollback(req->db);
        in_tx = false;
        req->log_error = "conflict";
        char msg[512];
        snprintf(msg, sizeof msg, "rollout %s of %s is live on hardware class%s %s", other,
                 pl.model, strchr(other_classes, ',') ? "es" : "", other_classes);
        mf_http_json(req, 409,
                     json_pack("{s:s, s:s, s:I}", "error", "conflict", "message", msg, "existing",
                               (json_int_t)strtoll(other, NULL, 10)));
        goto out;
    }
    if (rc != MF_ERR_NOT_FOUND)
        goto fail;
    rc = mf_db_exec(req->db, ro__sql_insert, 4, pi, &res, &diag);
    if (rc != MF_OK)
        goto fail;
    id = mf_xstrdup(PQgetvalue(res, 0, 0));
    rc = mf_db_commit(req->db, &diag);
    in_tx = false;
    if (rc != MF_OK)
        goto fail;
    mf_log(MF_LOG_INFO, "rollout started rollout=%s model=%s version=%s classes=%zu by=%s", id,
           pl.model, pl.version, pl.p.n_classes, req->who.name);
    mf_controller_wake(req->srv->controller); /* the first stage starts now, not at the next tick */
    ro__reply_get(req, id, 201);
    goto out;
fail:
    if (in_tx)
        mf_db_rollback(req->db);
    mf_http_error_diag(req, &diag);
out:
    PQclear(res);
    free(id);
    free(other);
    free(other_classes);
    free(plan);
    json_decref(plan_j);
    mf_strlist_free(&have);
    mf_plan_free(&pl);
}

/* ---- reads -------------------------------------------------------------- */

static const char *const ro__statuses[] = {"running", "paused",  "watching", "completed",
                                           "failed",  "aborted", NULL};
static const char *const ro__outcomes[] = {"none",   "assigned",    "active", "refused",
                                           "failed", "rolled_back", NULL};

void mf_api_rollouts(struct mf_http_req *req)
{
    struct mf_diag diag = {0};
    const char *model, *status = mf_http_query(req, "status"), *after = mf_http_query(req, "after");
    char lim[16], *json = NULL;
    int limit;

    if (!mf_http_query_limit(req, &limit) || !mf_http_query_name(req, "model", &model))
        return;
    if (status && strcmp(status, "live") != 0 && !ro__one_of(status, ro__statuses)) {
        mf_http_error(req, 400, "bad_request",
                      "status must be live, running, paused, watching, completed, failed or "
                      "aborted");
        return;
    }
    if (after) {
        size_t n = strspn(after, "0123456789");
        if (n == 0 || n > 18 || after[n]) {
            mf_http_error(req, 400, "bad_request", "after must be a rollout id");
            return;
        }
    }
    snprintf(lim, sizeof lim, "%d", limit);
    const char *p[4] = {model, status, after, lim};
    enum mf_err rc = mf_store_json(req->db, ro__sql_list, 4, p, &json, &diag);
    if (rc != MF_OK) {
        mf_http_error_diag(req, &diag);
        return;
    }
    mf_http_json_text(req, 200, json, strlen(json));
    free(json);
}

void mf_api_rollout(struct mf_http_req *req)
{
    const char *id;
    if (ro__id(req, &id))
        ro__reply_get(req, id, 200);
}

void mf_api_rollout_devices(struct mf_http_req *req)
{
    struct mf_diag diag = {0};
    const char *id, *hw_class, *after, *outcome = mf_http_query(req, "outcome");
    char lim[16], *json = NULL;
    int limit;

    if (!ro__id(req, &id) || !mf_http_query_limit(req, &limit) ||
        !mf_http_query_name(req, "hw_class", &hw_class) ||
        !mf_http_query_name(req, "after", &after))
        return;
    if (outcome && !ro__one_of(outcome, ro__outcomes)) {
        mf_http_error(req, 400, "bad_request",
                      "outcome must be none, assigned, active, refused, failed or rolled_back");
        return;
    }
    snprintf(lim, sizeof lim, "%d", limit);
    const char *p[5] = {id, hw_class, outcome, after, lim};
    enum mf_err rc = mf_store_json(req->db, ro__sql_devices, 5, p, &json, &diag);
    if (rc != MF_OK) {
        if (rc == MF_ERR_NOT_FOUND)
            mf_diag_set(&diag, rc, "", "no rollout with id %s", id);
        mf_http_error_diag(req, &diag);
        return;
    }
    mf_http_json_text(req, 200, json, strlen(json));
    free(json);
}

/* ---- transitions -------------------------------------------------------- */

enum ro_op { RO_PAUSE, RO_RESUME, RO_ABORT, RO_PROMOTE };

static const char *const ro__op_name[] = {"pause", "resume", "abort", "promote"};
static const char *const ro__op_from[] = {
    "running or watching",
    "paused",
    "running, paused or watching",
    "running or paused",
};

static bool ro__allowed(enum ro_op op, const char *status)
{
    bool running = strcmp(status, "running") == 0, paused = strcmp(status, "paused") == 0,
         watching = strcmp(status, "watching") == 0;
    switch (op) {
    case RO_PAUSE:
        return running || watching;
    case RO_RESUME:
        return paused;
    case RO_ABORT:
        return running || paused || watching;
    case RO_PROMOTE:
        return running || paused;
    }
    return false;
}

/* Runs the statements of `op` inside the open transaction, with the rollout
 * row locked (stage and stage count as read). *to gets the new status,
 * *new_stage the new stage. */
static enum mf_err ro__apply(struct mf_db *db, enum ro_op op, const char *id, const char *actor,
                             long stage, long n_stages, bool has_watch, bool rollback,
                             const char **to, long *new_stage, struct mf_diag *diag)
{
    char st[24], reason[256];
    const char *pr[3] = {id, reason, rollback ? "true" : "false"}; /* the rollouts row */
    const char *ps[2] = {id, st};                                  /* its stage rows */
    const char *sql_r = NULL, *sql_s = NULL;
    int nr = 2;
    enum mf_err rc;

    snprintf(st, sizeof st, "%ld", stage);
    *new_stage = stage;
    switch (op) {
    case RO_PAUSE:
        *to = "paused";
        snprintf(reason, sizeof reason, "paused by %s", actor);
        sql_r = "UPDATE rollouts SET status = 'paused', reason = $2::text, updated_at = now()"
                " WHERE id = $1::bigint";
        sql_s = "UPDATE rollout_stages SET status = 'paused' WHERE rollout_id = $1::bigint"
                " AND stage = $2::integer AND status = 'running'";
        break;
    case RO_RESUME:
        *to = has_watch ? "watching" : "running";
        snprintf(reason, sizeof reason, "resumed by %s", actor);
        sql_r = "UPDATE rollouts SET status = CASE WHEN watch_started IS NULL THEN 'running'"
                " ELSE 'watching' END, reason = $2::text, stage_started = now(),"
                " updated_at = now() WHERE id = $1::bigint";
        sql_s = "UPDATE rollout_stages SET status = 'running' WHERE rollout_id = $1::bigint"
                " AND stage = $2::integer AND status = 'paused'";
        break;
    case RO_ABORT:
        *to = "aborted";
        snprintf(reason, sizeof reason, "aborted by %s%s", actor,
                 rollback ? ", rolling back every device that took the candidate" : "");
        nr = 3;
        sql_r = "UPDATE rollouts SET status = 'aborted', reason = $2::text, finished_at = now(),"
                " updated_at = now(), rollback_pending = rollback_pending OR $3::boolean"
                " WHERE id = $1::bigint";
        sql_s = "UPDATE rollout_stages SET status = 'aborted', ended_at = now()"
                " WHERE rollout_id = $1::bigint AND stage = $2::integer"
                " AND status IN ('running', 'paused')";
        break;
    case RO_PROMOTE:
        if (stage + 1 < n_stages) {
            *to = "running";
            *new_stage = stage + 1;
            snprintf(reason, sizeof reason, "promoted to stage %ld/%ld by %s", stage + 2, n_stages,
                     actor);
            sql_r = "UPDATE rollouts SET status = 'running', stage = stage + 1,"
                    " stage_started = now(), reason = $2::text, updated_at = now()"
                    " WHERE id = $1::bigint";
            sql_s = "UPDATE rollout_stages SET"
                    " status = CASE WHEN stage = $2::integer THEN 'promoted' ELSE 'running' END,"
                    " ended_at = CASE WHEN stage = $2::integer THEN now() END,"
                    " started_at = CASE WHEN stage = $2::integer THEN started_at ELSE now() END"
                    " WHERE rollout_id = $1::bigint AND stage IN ($2::integer, $2::integer + 1)";
        } else {
            *to = "watching";
            snprintf(reason, sizeof reason, "promoted past the last stage by %s: watching", actor);
            sql_r = "UPDATE rollouts SET status = 'watching', watch_started = now(),"
                    " reason = $2::text, updated_at = now() WHERE id = $1::bigint";
            sql_s = "UPDATE rollout_stages SET status = 'promoted', ended_at = now()"
                    " WHERE rollout_id = $1::bigint AND stage = $2::integer";
        }
        break;
    }
    MF_ASSERT(sql_r && sql_s);
    rc = mf_db_exec(db, sql_r, nr, pr, NULL, diag);
    if (rc == MF_OK)
        rc = mf_db_exec(db, sql_s, 2, ps, NULL, diag);
    return rc;
}

static void ro__transition(struct mf_http_req *req, enum ro_op op, bool rollback)
{
    struct mf_diag diag = {0};
    PGresult *res = NULL;
    const char *id, *to = NULL;
    char *status = NULL, *detail = NULL, object[40], action[24];
    long stage, n_stages, new_stage = 0;
    bool has_watch;
    enum mf_err rc;

    if (!ro__id(req, &id))
        return;
    const char *p[1] = {id};
    rc = mf_db_begin(req->db, &diag);
    if (rc != MF_OK)
        goto fail_out;
    rc = mf_db_exec(req->db,
                    "SELECT status, stage, jsonb_array_length(plan->'stages'),"
                    " watch_started IS NOT NULL FROM rollouts WHERE id = $1::bigint FOR UPDATE",
                    1, p, &res, &diag);
    if (rc == MF_OK && PQntuples(res) != 1)
        rc = mf_diag_set(&diag, MF_ERR_NOT_FOUND, "", "no rollout with id %s", id);
    if (rc != MF_OK)
        goto fail;
    status = mf_xstrdup(PQgetvalue(res, 0, 0));
    stage = strtol(PQgetvalue(res, 0, 1), NULL, 10);
    n_stages = strtol(PQgetvalue(res, 0, 2), NULL, 10);
    has_watch = *PQgetvalue(res, 0, 3) == 't';
    if (!ro__allowed(op, status)) {
        char msg[256];
        mf_db_rollback(req->db);
        snprintf(msg, sizeof msg, "rollout %s is %s; only a %s rollout can be %s", id, status,
                 ro__op_from[op],
                 op == RO_PAUSE    ? "paused"
                 : op == RO_RESUME ? "resumed"
                 : op == RO_ABORT  ? "aborted"
                                   : "promoted");
        req->log_error = "conflict";
        mf_http_json(
            req, 409,
            json_pack("{s:s, s:s, s:s}", "error", "conflict", "message", msg, "status", status));
        goto out;
    }
    rc = ro__apply(req->db, op, id, req->who.name, stage, n_stages, has_watch, rollback, &to,
                   &new_stage, &diag);
    if (rc != MF_OK)
        goto fail;
    json_t *d =
        json_pack("{s:s, s:s, s:I}", "from", status, "to", to, "stage", (json_int_t)new_stage);
    if (op == RO_ABORT)
        json_object_set_new(d, "rollback", json_boolean(rollback));
    detail = json_dumps(d, JSON_COMPACT);
    json_decref(d);
    snprintf(object, sizeof object, "rollout/%s", id);
    snprintf(action, sizeof action, "rollout.%s", ro__op_name[op]);
    const char *pa[4] = {req->who.name, action, object, detail};
    rc = mf_db_exec(req->db, ro__sql_audit, 4, pa, NULL, &diag);
    if (rc != MF_OK)
        goto fail;
    rc = mf_db_commit(req->db, &diag);
    if (rc != MF_OK)
        goto fail_out;
    mf_log(MF_LOG_INFO, "rollout %s rollout=%s from=%s to=%s stage=%ld by=%s", ro__op_name[op], id,
           status, to, new_stage, req->who.name);
    mf_controller_wake(req->srv->controller);
    ro__reply_get(req, id, 200);
    goto out;
fail:
    mf_db_rollback(req->db);
fail_out:
    mf_http_error_diag(req, &diag);
out:
    PQclear(res);
    free(status);
    free(detail);
}

void mf_api_rollout_pause(struct mf_http_req *req)
{
    ro__transition(req, RO_PAUSE, false);
}

void mf_api_rollout_resume(struct mf_http_req *req)
{
    ro__transition(req, RO_RESUME, false);
}

void mf_api_rollout_promote(struct mf_http_req *req)
{
    ro__transition(req, RO_PROMOTE, false);
}

/* The body is optional, so the route buffers it without parsing
 * (MF_BODY_NONE) and it is read here: nothing, or {"rollback": bool}. */
void mf_api_rollout_abort(struct mf_http_req *req)
{
    static const char *const fields[] = {"rollback", NULL};
    struct mf_diag diag = {0};
    json_t *body = NULL, *v;
    bool rollback = false;

    if (req->body.len > 0) {
        if (mf_json_parse(req->body.data, req->body.len, (size_t)req->srv->cfg.max_json_depth,
                          &body, &diag) != MF_OK) {
            mf_http_error(req, 400, "invalid_json", "the body is not valid JSON: %s", diag.what);
            return;
        }
        if (mf_json_only(body, fields, &diag) != MF_OK) {
            json_decref(body);
            mf_http_error_diag(req, &diag);
            return;
        }
        v = json_object_get(body, "rollback");
        if (v && !json_is_boolean(v)) {
            json_decref(body);
            mf_http_error(req, 400, "invalid_json", "rollback: must be true or false");
            return;
        }
        rollback = json_is_true(v);
        json_decref(body);
    }
    ro__transition(req, RO_ABORT, rollback);
}
