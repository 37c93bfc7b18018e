/* controller.c — the rollout controller and the desired-state outbox (see
 * controller.h). */
#include "server/controller.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <mosquitto.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/json.h"
#include "common/log.h"
#include "common/mem.h"
#include "rollout/rollout.h"
#include "server/db.h"
#include "server/mqtt.h"
#include "server/rollouts.h"
#include "server/server.h"
#include "telemetry/desired.h"
#include "telemetry/devmsg.h"

#define CTL_LEADER_KEY "7237243516785157236" /* pg advisory lock: one controller at a time */
/* the outbox is read 10000 desired states at a time (sql_outbox) */
#define CTL_INFLIGHT_S  30 /* unacknowledged this long: publish again */
#define CTL_KEEPALIVE   30
#define CTL_LOG_EVERY_S 60 /* repeated failures are logged at most this often */

/* A desired state handed to the broker and not acknowledged yet. */
struct inflight {
    int mid;
    char device[MF_TOPIC_MAX];
    int64_t seq;
    int64_t sent; /* monotonic seconds */
};

struct mf_controller {
    struct mf_server *s;
    pthread_t th;
    bool started;
    pthread_mutex_t mu; /* stop, and the publisher's lists below */
    pthread_cond_t cv;
    bool stop;
    bool wake; /* step now (mf_controller_wake) */

    /* publisher */
    struct mosquitto *mosq;
    char *host;
    int port;
    atomic_bool connected;
    atomic_bool reconnected; /* since the last publishing pass: send everything again */
    struct inflight *fl;     /* controller thread only */
    size_t n_fl, cap_fl;
    int *acked; /* mids the broker acknowledged (callback thread -> controller) */
    size_t n_acked, cap_acked;

    int64_t last_fail_log;
    bool loop_started;        /* controller thread only */
    int64_t last_connect_log; /* ... */
};

/* ---- publisher callbacks (libmosquitto's thread) ---- */

static void ctl__on_connect(struct mosquitto *m, void *obj, int rc)
{
    struct mf_controller *c = obj;
    (void)m;
    if (rc != 0) {
        mf_log(MF_LOG_ERROR, "controller: broker %s:%d refused the connection: %s", c->host,
               c->port, mosquitto_connack_string(rc));
        return;
    }
    atomic_store(&c->reconnected, true);
    atomic_store(&c->connected, true);
    mf_log(MF_LOG_INFO, "controller: publishing desired states through %s:%d", c->host, c->port);
}

static void ctl__on_disconnect(struct mosquitto *m, void *obj, int rc)
{
    struct mf_controller *c = obj;
    (void)m;
    atomic_store(&c->connected, false);
    if (rc != 0)
        mf_log(MF_LOG_WARN, "controller: lost the broker %s:%d; reconnecting", c->host, c->port);
}

static void ctl__on_publish(struct mosquitto *m, void *obj, int mid)
{
    struct mf_controller *c = obj;
    (void)m;
    pthread_mutex_lock(&c->mu);
    if (c->n_acked == c->cap_acked) {
        c->cap_acked = c->cap_acked ? 2 * c->cap_acked : 256;
        c->acked = mf_xreallocarray(c->acked, c->cap_acked, sizeof *c->acked);
    }
    c->acked[c->n_acked++] = mid;
    pthread_mutex_unlock(&c->mu);
}

/* ---- small database helpers ---- */

static int64_t ctl__mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

static enum mf_err ctl__exec(struct mf_db *db, const char *sql, int n, const char *const *p,
                             struct mf_diag *diag)
{
    PGresult *res = NULL;
    enum mf_err rc = mf_db_exec(db, sql, n, p, &res, diag);
    PQclear(res);
    return rc;
}

static char *ctl__json(json_t *j) /* steals j */
{
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

static const char *ctl__val(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

/* ---- one rollout's step ---- */

static const char sql_rollout[] =
    "SELECT status, stage, plan::text, array_to_json(class_status)::text,"
    " extract(epoch FROM stage_started)::bigint,"
    " coalesce(extract(epoch FROM watch_started)::bigint, 0), rollback_pending,"
    " extract(epoch FROM now())::bigint, (extract(epoch FROM clock_timestamp()) * 1000)::bigint"
    " FROM rollouts WHERE id = $1::bigint FOR UPDATE";

/* The snapshot, in two statements merged by device id (ctl__snapshot_rows):
 *
 * the target devices: the plan's classes and labels; with labels {} (every
 * device) the filter folds away and the covering index devices_hw_online
 * answers alone (no heap rows: a device row carries its whole state);
 *
 * the rollout's devices: those it assigned and any with a runner crash of
 * the candidate, with this rollout's row, their latest outcome event of the
 * candidate and their crash count (one pass over the rollout's events), their
 * latest valid report of the candidate, and what they run of the model, read
 * only where it can change the outcome (assigned, not rolled back, no
 * `activated` event: a device whose state says it runs the candidate counts
 * as active even if that event was lost). A target device not in it is
 * unassigned, without crashes.
 *
 * A tick thus reads the fleet's ids once (an index) and only the rows of
 * this rollout, instead of joining every device with its models, events and
 * reports. */
const char mf_controller_sql_targets[] =
    "SELECT d.id, d.hw_class, d.online FROM devices d"
    " WHERE d.hw_class = ANY (ARRAY(SELECT jsonb_array_elements_text($1::jsonb)))"
    " AND ($2::jsonb = '{}'::jsonb OR d.labels @> $2::jsonb)";
const char mf_controller_sql_rollout_devices[] =
    "WITH ev AS (SELECT DISTINCT ON (device_id) device_id, kind,"
    "   count(*) FILTER (WHERE kind = 'benchmark_failed') OVER (PARTITION BY device_id"
    "   ORDER BY id DESC ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS crashes"
    "   FROM events WHERE rollout_id = $1::bigint AND version = $3::text AND kind IN ('activated',"
    "   'refused', 'download_failed', 'install_failed', 'benchmark_failed')"
    "   ORDER BY device_id, id DESC)"
    " SELECT t.device_id, rd.device_id IS NOT NULL, rd.rolled_back_at IS NOT NULL,"
    " rd.from_version, CASE WHEN rd.device_id IS NOT NULL AND rd.rolled_back_at IS NULL"
    "   AND ev.kind IS DISTINCT FROM 'activated' THEN (SELECT dm.version FROM device_models dm"
    "   WHERE dm.device_id = t.device_id AND dm.model = $2::text) END,"
    " ev.kind, rp.n, rp.correct, rp.paired, rp.both, rp.only_candidate, rp.only_incumbent,"
    " rp.neither, rp.p50, rp.p99, coalesce(ev.crashes, 0)"
    " FROM (SELECT device_id FROM rollout_devices WHERE rollout_id = $1::bigint"
    "   UNION SELECT device_id FROM ev WHERE crashes > 0) t"
    " LEFT JOIN rollout_devices rd ON rd.rollout_id = $1::bigint AND rd.device_id = t.device_id"
    " LEFT JOIN ev ON ev.device_id = t.device_id"
    " LEFT JOIN (SELECT DISTINCT ON (device_id) device_id, body->'eval'->>'n' AS n,"
    "   body->'candidate'->>'correct' AS correct, body ? 'paired' AS paired,"
    "   body->'paired'->>'both' AS both, body->'paired'->>'only_candidate' AS only_candidate,"
    "   body->'paired'->>'only_incumbent' AS only_incumbent,"
    "   body->'paired'->>'neither' AS neither, body->'latency_ratio'->>'p50' AS p50,"
    "   body->'latency_ratio'->>'p99' AS p99 FROM reports"
    "   WHERE rollout_id = $1::bigint AND version = $3::text AND valid"
    "   ORDER BY device_id DESC, id DESC) rp ON rp.device_id = t.device_id";

/* JIT compilation (some 40 ms) never pays off for these statements; each is
 * planned with its own values, and at 100k devices the estimate of the lazy
 * model lookup above alone would cross jit_above_cost. */
static const char sql_no_jit[] = "SET LOCAL jit = off";

struct snap {
    PGresult *targets, *mine; /* the two statements' results */
    struct mf_rollout_device *dev;
    size_t n;
};

static uint64_t ctl__u64(const char *s)
{
    return s ? strtoull(s, NULL, 10) : 0;
}

static double ctl__real(const char *s)
{
    return s ? strtod(s, NULL) : 0;
}

/* Rows of a result by the text of a column (a device id), sorted with
 * strcmp so a lookup is a binary search. */
struct keyrow {
    const char *key;
    int row;
};

static int ctl__keyrow_cmp(const void *a, const void *b)
{
    return strcmp(((const struct keyrow *)a)->key, ((const struct keyrow *)b)->key);
}

static struct keyrow *ctl__keyrows(const PGresult *res, int col, size_t *n)
{
    *n = res ? (size_t)PQntuples(res) : 0;
    struct keyrow *k = mf_xcalloc(*n ? *n : 1, sizeof *k);
    for (size_t i = 0; i < *n; i++)
        k[i] = (struct keyrow){.key = PQgetvalue(res, (int)i, col), .row = (int)i};
    qsort(k, *n, sizeof *k, ctl__keyrow_cmp);
    return k;
}

static int ctl__keyrow_find(const struct keyrow *k, size_t n, const char *key)
{
    struct keyrow want = {.key = key};
    const struct keyrow *hit = bsearch(&want, k, n, sizeof *k, ctl__keyrow_cmp);
    return hit ? hit->row : -1;
}

/* The rollout's rows by device id: an open-addressing table (FNV-1a, linear
 * probing, at most half full), probed once per target device. */
struct idtab {
    const PGresult *res;
    int *slot; /* row + 1; 0 = empty */
    size_t mask;
};

static uint64_t ctl__fnv(const char *s)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3u;
    return h;
}

static void ctl__idtab_init(struct idtab *t, const PGresult *res)
{
    size_t n = (size_t)PQntuples(res), cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    t->res = res;
    t->mask = cap - 1;
    t->slot = mf_xcalloc(cap, sizeof *t->slot);
    for (size_t i = 0; i < n; i++) {
        size_t k = ctl__fnv(PQgetvalue(res, (int)i, 0)) & t->mask;
        while (t->slot[k])
            k = (k + 1) & t->mask;
        t->slot[k] = (int)i + 1;
    }
}

static int ctl__idtab_find(const struct idtab *t, const char *id)
{
    for (size_t k = ctl__fnv(id) & t->mask; t->slot[k]; k = (k + 1) & t->mask)
        if (strcmp(PQgetvalue(t->res, t->slot[k] - 1, 0), id) == 0)
            return t->slot[k] - 1;
    return -1;
}

/* One device per target row, with what the rollout knows of it. */
static void ctl__snapshot_rows(struct snap *sn, const char *version)
{
    PGresult *t = sn->targets, *r = sn->mine;
    struct idtab mine;
    ctl__idtab_init(&mine, r);
    sn->n = (size_t)PQntuples(t);
    sn->dev = mf_xcalloc(sn->n ? sn->n : 1, sizeof *sn->dev);
    for (size_t i = 0; i < sn->n; i++) {
        struct mf_rollout_device *d = &sn->dev[i];
        d->id = PQgetvalue(t, (int)i, 0);
        d->hw_class = PQgetvalue(t, (int)i, 1);
        d->online = *PQgetvalue(t, (int)i, 2) == 't';
        d->outcome = MF_ROLLOUT_DEV_NONE;
        int row = ctl__idtab_find(&mine, d->id);
        if (row < 0)
            continue;
        const char *running = ctl__val(r, row, 4), *kind = ctl__val(r, row, 5);
        bool assigned = *PQgetvalue(r, row, 1) == 't';
        d->previous_version = ctl__val(r, row, 3);
        if (!assigned)
            d->outcome = MF_ROLLOUT_DEV_NONE;
        else if (*PQgetvalue(r, row, 2) == 't')
            d->outcome = MF_ROLLOUT_DEV_ROLLED_BACK;
        else if ((running && strcmp(running, version) == 0) ||
                 (kind && strcmp(kind, "activated") == 0))
            d->outcome = MF_ROLLOUT_DEV_ACTIVE; /* its state says so even if the event is lost */
        else if (kind && strcmp(kind, "refused") == 0)
            d->outcome = MF_ROLLOUT_DEV_REFUSED;
        else if (kind)
            d->outcome = MF_ROLLOUT_DEV_FAILED;
        else
            d->outcome = MF_ROLLOUT_DEV_ASSIGNED;
        if (!PQgetisnull(r, row, 6) && d->outcome != MF_ROLLOUT_DEV_NONE) {
            struct mf_rollout_report *rp = &d->report;
            d->has_report = true;
            rp->n = ctl__u64(ctl__val(r, row, 6));
            rp->correct = ctl__u64(ctl__val(r, row, 7));
            rp->has_incumbent = *PQgetvalue(r, row, 8) == 't';
            rp->both = ctl__u64(ctl__val(r, row, 9));
            rp->only_candidate = ctl__u64(ctl__val(r, row, 10));
            rp->only_incumbent = ctl__u64(ctl__val(r, row, 11));
            rp->neither = ctl__u64(ctl__val(r, row, 12));
            rp->p50_ratio = ctl__real(ctl__val(r, row, 13));
            rp->p99_ratio = ctl__real(ctl__val(r, row, 14));
        }
        d->crashes = ctl__u64(ctl__val(r, row, 15));
    }
    free(mine.slot);
}

/* What a device is told: the model at `version`, or nothing (skip). */
struct want {
    const char *device, *hw_class, *version;
    bool rollback;
    const struct mf_rollout_device *d;
};

/* Packages of the model for the versions wanted: version, hw_class -> id, size. */
static const char sql_packages[] =
    "SELECT ph.version, ph.hw_class, ph.package, p.size FROM package_hardware ph"
    " JOIN packages p ON p.id = ph.package"
    " WHERE ph.model = $1::text AND ph.version IN (SELECT jsonb_array_elements_text($2::jsonb))";

/* The devices to tell, a row each: their earlier desired state (if any) and
 * what they run of the model (for rollout_devices.from_version). */
static const char sql_desired_old[] =
    "SELECT x.id, s.seq, s.body::text, dm.version, dm.previous_version"
    " FROM unnest($1::text[]) x(id)"
    " LEFT JOIN desired_states s ON s.device_id = x.id COLLATE \"C\""
    " LEFT JOIN device_models dm ON dm.device_id = x.id COLLATE \"C\" AND dm.model = $2::text";

/* body is the payload's JSON: its third line to the end (docs/protocol.md),
 * the very bytes signed, so it is formatted once. */
static const char sql_desired_put[] =
    "INSERT INTO desired_states AS s (device_id, seq, body, payload, rollout_id, updated_at,"
    " published_at)"
    " SELECT x.device_id, x.seq, split_part(x.payload, E'\\n', 3)::jsonb, x.payload, $2::bigint,"
    " now(), NULL FROM json_to_recordset($1::json) AS x(device_id text, seq bigint, payload text)"
    " ON CONFLICT (device_id) DO UPDATE SET seq = EXCLUDED.seq, body = EXCLUDED.body,"
    " payload = EXCLUDED.payload, rollout_id = EXCLUDED.rollout_id, updated_at = now(),"
    " published_at = NULL";

static const char sql_assigned[] =
    "INSERT INTO rollout_devices (rollout_id, device_id, stage, bucket, from_version, hw_class)"
    " SELECT $1::bigint, x.device_id, x.stage, x.bucket, x.from_version, x.hw_class"
    " FROM json_to_recordset($2::json) AS x(device_id text, stage integer,"
    " bucket double precision, from_version text, hw_class text)"
    " ON CONFLICT (rollout_id, device_id) DO NOTHING";

static const char sql_rolled_back[] =
    "UPDATE rollout_devices rd SET rolled_back_at = now(), rollback_version = x.version"
    " FROM jsonb_to_recordset($2::jsonb) AS x(device_id text, version text)"
    " WHERE rd.rollout_id = $1::bigint AND rd.device_id = x.device_id";

/* The models of a device's earlier desired state (row `r` of sql_desired_old,
 * -1: none), as {name: {version, package, size}}. */
static json_t *ctl__old_models(PGresult *old, int r, int64_t *seq)
{
    json_t *models = json_object();
    *seq = 0;
    if (r < 0 || PQgetisnull(old, r, 1))
        return models;
    *seq = strtoll(PQgetvalue(old, r, 1), NULL, 10);
    json_t *body = json_loads(PQgetvalue(old, r, 2), 0, NULL);
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(body, "models"), i, m)
    {
        const char *name = json_string_value(json_object_get(m, "name"));
        if (name)
            json_object_set(models, name, m);
    }
    json_decref(body);
    return models;
}

/* Large parameters (a row per device told) are written straight into a
 * buffer: text the server made, so only JSON string escaping is needed. */
static void ctl__put(struct mf_buf *b, const char *fmt, ...) MF_PRINTF(2, 3);
static void ctl__put(struct mf_buf *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    MF_ASSERT(n >= 0 && (size_t)n < sizeof small);
    MF_ASSERT(mf_buf_append(b, small, (size_t)n) == MF_OK);
}

static void ctl__jstr(struct mf_buf *b, const char *s)
{
    MF_ASSERT(mf_buf_append(b, "\"", 1) == MF_OK);
    const char *run = s;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        char esc[8];
        if (c == '"' || c == '\\')
            snprintf(esc, sizeof esc, "\\%c", c);
        else if (c == '\n')
            snprintf(esc, sizeof esc, "\\n");
        else
            snprintf(esc, sizeof esc, "\\u%04x", c);
        MF_ASSERT(mf_buf_append(b, run, (size_t)(s - run)) == MF_OK);
        MF_ASSERT(mf_buf_append_str(b, esc) == MF_OK);
        run = s + 1;
    }
    MF_ASSERT(mf_buf_append(b, run, (size_t)(s - run)) == MF_OK);
    MF_ASSERT(mf_buf_append(b, "\"", 1) == MF_OK);
}

/* Appends s as an element of a text[] literal. */
static void ctl__arr_str(struct mf_buf *b, const char *s)
{
    MF_ASSERT(mf_buf_append(b, "\"", 1) == MF_OK);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            MF_ASSERT(mf_buf_append(b, "\\", 1) == MF_OK);
        MF_ASSERT(mf_buf_append(b, s, 1) == MF_OK);
    }
    MF_ASSERT(mf_buf_append(b, "\"", 1) == MF_OK);
}

/* Signs the desired state of one device: its earlier models with `model`
 * set to the package of `version` for its class. Appends the row for
 * sql_desired_put to the JSON array being written in `rows`. False (logged) when no package serves
 * that version on the device's class. */
static bool ctl__desired(struct mf_server *s, const struct mf_plan *pl, const struct want *w,
                         PGresult *pkgs, PGresult *old, int old_row, int64_t now, int64_t now_ms,
                         struct mf_buf *rows)
{
    const char *pkg = NULL;
    uint64_t size = 0;
    for (int r = 0; r < PQntuples(pkgs); r++)
        if (strcmp(PQgetvalue(pkgs, r, 0), w->version) == 0 &&
            strcmp(PQgetvalue(pkgs, r, 1), w->hw_class) == 0) {
            pkg = PQgetvalue(pkgs, r, 2);
            size = ctl__u64(PQgetvalue(pkgs, r, 3));
        }
    if (!pkg || strlen(pkg) != MF_HASH_HEX - 1) {
        mf_log(MF_LOG_WARN,
               "controller: rollout %" PRId64 ": no package of %s %s for class %s: device=%s"
               " not sent %s",
               pl->p.id, pl->model, w->version, w->hw_class, w->device,
               w->rollback ? "back" : "the candidate");
        return false;
    }
    int64_t old_seq = 0;
    json_t *models = ctl__old_models(old, old_row, &old_seq);
    json_object_set_new(models, pl->model,
                        json_pack("{s:s, s:s, s:s, s:I}", "name", pl->model, "version", w->version,
                                  "package", pkg, "size", (json_int_t)size));
    struct mf_desired d = {.device = (char *)w->device,
                           .seq = (uint64_t)(old_seq + 1 > now_ms ? old_seq + 1 : now_ms),
                           .issued = now,
                           .rollout = pl->p.id};
    d.models = mf_xcalloc(json_object_size(models) + 1, sizeof *d.models);
    const char *name;
    json_t *m;
    json_object_foreach(models, name, m)
    { /* jansson keeps keys sorted? no: sorted below */
        const char *ver = json_string_value(json_object_get(m, "version"));
        const char *p = json_string_value(json_object_get(m, "package"));
        json_int_t sz = json_integer_value(json_object_get(m, "size"));
        if (!ver || !p || strlen(p) != MF_HASH_HEX - 1 || sz <= 0 ||
            d.n_models == MF_DESIRED_MODELS)
            continue;
        struct mf_desired_model *dm = &d.models[d.n_models++];
        dm->name = (char *)name;
        dm->version = (char *)ver;
        memcpy(dm->package, p, MF_HASH_HEX);
        dm->size = (uint64_t)sz;
    }
    /* models sorted by name (mf_desired_format also sorts; keep it explicit) */
    for (size_t i = 1; i < d.n_models; i++)
        for (size_t j = i; j > 0 && strcmp(d.models[j - 1].name, d.models[j].name) > 0; j--) {
            struct mf_desired_model t = d.models[j];
            d.models[j] = d.models[j - 1];
            d.models[j - 1] = t;
        }
    char *payload = mf_desired_sign(&d, &s->key, NULL);
    ctl__put(rows, rows->len > 1 ? ",{\"device_id\":" : "{\"device_id\":");
    ctl__jstr(rows, w->device);
    ctl__put(rows, ",\"seq\":%" PRIu64 ",\"payload\":", d.seq);
    ctl__jstr(rows, payload);
    ctl__put(rows, "}");
    free(payload);
    free(d.models);
    json_decref(models);
    return true;
}

static void ctl__audit(json_t *audit, const char *action, json_t *detail)
{
    json_array_append_new(audit, json_pack("{s:s, s:o}", "action", action, "detail", detail));
}

static const char sql_audit[] =
    "INSERT INTO audit_log (actor, action, object, detail)"
    " SELECT 'controller', x.action, $1::text, x.detail"
    " FROM jsonb_to_recordset($2::jsonb) AS x(action text, detail jsonb)";

/* The stage's decision: this step's reason, and the evidence of the classes
 * judged now in place of their earlier entries (a class that failed earlier
 * keeps the evidence it failed on). */
static const char sql_stage_decision[] =
    "UPDATE rollout_stages SET decision = jsonb_build_object('reason', $3::jsonb->'reason',"
    " 'classes', (SELECT coalesce(jsonb_agg(e ORDER BY e->>'hw_class'), '[]'::jsonb) FROM ("
    "   SELECT e FROM jsonb_array_elements($3::jsonb->'classes') e UNION ALL"
    "   SELECT o FROM jsonb_array_elements(coalesce(decision->'classes', '[]'::jsonb)) o"
    "   WHERE o->>'hw_class' NOT IN (SELECT x->>'hw_class'"
    "     FROM jsonb_array_elements($3::jsonb->'classes') x)) m)),"
    " status = coalesce($4::text, status),"
    " ended_at = CASE WHEN $5::boolean THEN now() ELSE ended_at END"
    " WHERE rollout_id = $1::bigint AND stage = $2::integer";

static const char sql_stage_start[] =
    "UPDATE rollout_stages SET status = 'running', started_at = now(), ended_at = NULL"
    " WHERE rollout_id = $1::bigint AND stage = $2::integer";

static const char sql_progress[] =
    "UPDATE rollouts SET status = $2::text, stage = $3::integer,"
    " stage_started = CASE WHEN $4::boolean THEN now() ELSE stage_started END,"
    " watch_started = CASE WHEN $5::boolean THEN now() ELSE watch_started END,"
    " class_status = ARRAY(SELECT jsonb_array_elements_text($6::jsonb)),"
    " reason = coalesce($7::text, reason), rollback_pending = $8::boolean,"
    " finished_at = CASE WHEN $2::text IN ('completed', 'failed', 'aborted')"
    "   THEN coalesce(finished_at, now()) ELSE finished_at END,"
    " updated_at = CASE WHEN $9::boolean THEN now() ELSE updated_at END, stepped_at = now()"
    " WHERE id = $1::bigint";

/* A snapshot device by the address of its id. */
struct addr {
    uintptr_t p;
    size_t k;
};

static int ctl__addr_cmp(const void *a, const void *b)
{
    uintptr_t x = ((const struct addr *)a)->p, y = ((const struct addr *)b)->p;
    return (x > y) - (x < y);
}

/* Loads, decides and writes one rollout, inside the caller's transaction. */
static enum mf_err ctl__step(struct mf_server *srv, struct mf_db *db, int64_t id,
                             struct mf_diag *diag)
{
    char idbuf[24];
    PGresult *ro = NULL, *pkgs = NULL, *old = NULL;
    struct snap sn = {0};
    struct mf_plan pl = {0};
    struct mf_rollout_result res = {0};
    struct want *wants = NULL;
    struct addr *by_addr = NULL;
    struct mf_buf ids; /* devices told, a text[] literal (its size is the planner's estimate) */
    mf_buf_init(&ids, SIZE_MAX);
    json_t *audit = json_array();
    char *objname = NULL;
    enum mf_err rc;

    snprintf(idbuf, sizeof idbuf, "%" PRId64, id);
    const char *pid[1] = {idbuf};
    if ((rc = mf_db_exec(db, sql_rollout, 1, pid, &ro, diag)) != MF_OK)
        goto out;
    if (PQntuples(ro) != 1)
        goto out; /* gone meanwhile */
    const char *status_s = PQgetvalue(ro, 0, 0);
    struct mf_rollout_progress prog = {0};
    enum mf_rollout_status status0;
    json_t *plan_j = json_loads(PQgetvalue(ro, 0, 2), 0, NULL);
    json_t *cls_j = json_loads(PQgetvalue(ro, 0, 3), 0, NULL);
    bool rollback_pending = *PQgetvalue(ro, 0, 6) == 't';
    int64_t now = strtoll(PQgetvalue(ro, 0, 7), NULL, 10);
    int64_t now_ms = strtoll(PQgetvalue(ro, 0, 8), NULL, 10);
    struct mf_diag pd = {0};
    if (!mf_rollout_status_parse(status_s, &status0) ||
        mf_plan_from_json(plan_j, id, false, &pl, &pd) != MF_OK ||
        json_array_size(cls_j) != pl.p.n_classes) {
        /* an error, so the tick's log rate limit applies (ctl__fail_log) */
        char why[MF_DIAG_STR_MAX];
        rc = mf_diag_set(diag, MF_ERR_SCHEMA, "plan", "unreadable plan (%s); skipped",
                         pd.what[0] ? mf_diag_str(&pd, why, sizeof why) : "status or classes");
        json_decref(plan_j);
        json_decref(cls_j);
        goto out;
    }
    prog.status = status0;
    prog.stage = (size_t)strtoul(PQgetvalue(ro, 0, 1), NULL, 10);
    prog.stage_started = strtoll(PQgetvalue(ro, 0, 4), NULL, 10);
    prog.watch_started = strtoll(PQgetvalue(ro, 0, 5), NULL, 10);
    for (size_t i = 0; i < pl.p.n_classes; i++)
        if (!mf_class_status_parse(json_string_value(json_array_get(cls_j, i)), &prog.classes[i]))
            prog.classes[i] = MF_ROLLOUT_CLASS_ACTIVE;
    json_decref(plan_j);
    json_decref(cls_j);
    if (prog.stage >= pl.p.n_stages)
        prog.stage = pl.p.n_stages - 1;
    /* A rollout aborted (or failed) with rollbacks still to send converges
     * like a failed one with on_fail rollback. */
    bool converge = status0 == MF_ROLLOUT_ABORTED || status0 == MF_ROLLOUT_FAILED;
    if (converge) {
        if (!rollback_pending)
            goto out;
        prog.status = MF_ROLLOUT_FAILED;
        pl.p.on_fail = MF_ROLLOUT_ON_FAIL_ROLLBACK;
    } else if (status0 != MF_ROLLOUT_RUNNING && status0 != MF_ROLLOUT_WATCHING) {
        goto out;
    }

    /* the snapshot */
    json_t *classes = json_array();
    for (size_t i = 0; i < pl.p.n_classes; i++)
        json_array_append_new(classes, json_string(pl.classes[i]));
    char *classes_s = ctl__json(classes);
    char *labels_s = json_dumps(pl.labels, JSON_COMPACT);
    const char *pt[2] = {classes_s, labels_s};
    const char *pm[3] = {idbuf, pl.model, pl.version};
    rc = ctl__exec(db, sql_no_jit, 0, NULL, diag);
    if (rc == MF_OK)
        rc = mf_db_exec(db, mf_controller_sql_targets, 2, pt, &sn.targets, diag);
    if (rc == MF_OK)
        rc = mf_db_exec(db, mf_controller_sql_rollout_devices, 3, pm, &sn.mine, diag);
    free(classes_s);
    free(labels_s);
    if (rc != MF_OK)
        goto out;
    ctl__snapshot_rows(&sn, pl.version);

    mf_rollout_step(&pl.p, sn.dev, sn.n, &prog, now, &res);

    /* Devices to tell: assignments and rollbacks. An action names its
     * device by the snapshot's own id pointer: found by address. */
    wants = mf_xcalloc(res.n_actions + 1, sizeof *wants);
    size_t n_w = 0, n_assign = 0, n_back = 0;
    json_t *versions = json_array();
    ctl__put(&ids, "{");
    json_array_append_new(versions, json_string(pl.version));
    for (size_t i = 0; i < res.n_actions; i++) {
        const struct mf_rollout_action *a = &res.actions[i];
        if (a->kind != MF_ROLLOUT_ASSIGN && a->kind != MF_ROLLOUT_ROLLBACK)
            continue;
        if (!by_addr) {
            by_addr = mf_xcalloc(sn.n ? sn.n : 1, sizeof *by_addr);
            for (size_t k = 0; k < sn.n; k++)
                by_addr[k] = (struct addr){.p = (uintptr_t)sn.dev[k].id, .k = k};
            qsort(by_addr, sn.n, sizeof *by_addr, ctl__addr_cmp);
        }
        struct addr key = {.p = (uintptr_t)a->device};
        const struct addr *hit = bsearch(&key, by_addr, sn.n, sizeof *by_addr, ctl__addr_cmp);
        MF_ASSERT(hit);
        const struct mf_rollout_device *d = &sn.dev[hit->k];
        wants[n_w++] = (struct want){.device = a->device,
                                     .hw_class = d->hw_class,
                                     .version = a->version,
                                     .rollback = a->kind == MF_ROLLOUT_ROLLBACK,
                                     .d = d};
        if (n_w > 1)
            ctl__put(&ids, ",");
        ctl__arr_str(&ids, a->device);
        if (a->kind == MF_ROLLOUT_ROLLBACK)
            json_array_append_new(versions, json_string(a->version));
    }
    if (n_w > 0) {
        ctl__put(&ids, "}");
        const char *ids_s = (const char *)ids.data;
        char *vers_s = ctl__json(versions);
        const char *pp[2] = {pl.model, vers_s};
        const char *po[2] = {ids_s, pl.model};
        rc = mf_db_exec(db, sql_packages, 2, pp, &pkgs, diag);
        if (rc == MF_OK)
            rc = mf_db_exec(db, sql_desired_old, 2, po, &old, diag);
        free(vers_s);
        if (rc != MF_OK)
            goto out;
        struct mf_buf rows, assigned;
        mf_buf_init(&rows, SIZE_MAX);
        mf_buf_init(&assigned, SIZE_MAX);
        ctl__put(&rows, "[");
        ctl__put(&assigned, "[");
        json_t *back = json_array(), *back_ids = json_array();
        size_t n_old = 0;
        struct keyrow *old_by_id = ctl__keyrows(old, 0, &n_old);
        for (size_t i = 0; i < n_w; i++) {
            const struct want *w = &wants[i];
            int orow = ctl__keyrow_find(old_by_id, n_old, w->device);
            bool ok = ctl__desired(srv, &pl, w, pkgs, old, orow, now, now_ms, &rows);
            if (w->rollback) {
                /* marked even without a package, so it is not retried every tick */
                json_array_append_new(back, json_pack("{s:s, s:s?}", "device_id", w->device,
                                                      "version", ok ? w->version : NULL));
                json_array_append_new(back_ids, json_string(w->device));
                n_back++;
            } else if (ok) {
                const char *running = orow < 0 ? NULL : ctl__val(old, orow, 3);
                const char *from = running && strcmp(running, pl.version) != 0 ? running
                                   : orow < 0                                  ? NULL
                                              : ctl__val(old, orow, 4);
                ctl__put(&assigned, n_assign ? ",{\"device_id\":" : "{\"device_id\":");
                ctl__jstr(&assigned, w->device);
                ctl__put(&assigned,
                         ",\"stage\":%zu,\"bucket\":%.17g,\"from_version\":", res.next.stage,
                         mf_rollout_bucket(w->device, id));
                if (from)
                    ctl__jstr(&assigned, from);
                else
                    ctl__put(&assigned, "null");
                ctl__put(&assigned, ",\"hw_class\":");
                ctl__jstr(&assigned, w->hw_class);
                ctl__put(&assigned, "}");
                n_assign++;
            }
        }
        free(old_by_id);
        ctl__put(&rows, "]");
        ctl__put(&assigned, "]");
        char *bk_s = ctl__json(back);
        const char *pd1[2] = {(const char *)rows.data, idbuf};
        const char *pd2[2] = {idbuf, (const char *)assigned.data};
        const char *pd3[2] = {idbuf, bk_s};
        rc = ctl__exec(db, sql_desired_put, 2, pd1, diag);
        if (rc == MF_OK)
            rc = ctl__exec(db, sql_assigned, 2, pd2, diag);
        if (rc == MF_OK)
            rc = ctl__exec(db, sql_rolled_back, 2, pd3, diag);
        mf_buf_free(&rows);
        mf_buf_free(&assigned);
        free(bk_s);
        if (n_assign > 0)
            ctl__audit(audit, "rollout.assign",
                       json_pack("{s:I, s:I}", "stage", (json_int_t)res.next.stage, "devices",
                                 (json_int_t)n_assign));
        if (n_back > 0)
            ctl__audit(audit, "rollout.rollback",
                       json_pack("{s:I, s:o}", "devices_count", (json_int_t)n_back, "devices",
                                 json_incref(back_ids)));
        json_decref(back_ids);
        if (rc != MF_OK)
            goto out;
    } else {
        json_decref(versions);
    }

    /* Progress, stage evidence and audit. */
    json_t *evidence = json_array();
    for (size_t i = 0; i < res.n_evidence; i++)
        json_array_append_new(evidence, mf_evidence_to_json(&res.evidence[i]));
    const char *reason = NULL, *stage_reason = NULL, *stage_status = NULL;
    bool transition = false, advanced = false, watched = false, ended = false;
    for (size_t i = 0; i < res.n_actions; i++) {
        const struct mf_rollout_action *a = &res.actions[i];
        if (a->kind == MF_ROLLOUT_ASSIGN || a->kind == MF_ROLLOUT_ROLLBACK)
            continue;
        stage_reason = a->reason;
        if (a->kind == MF_ROLLOUT_EXTEND)
            continue;
        transition = true;
        reason = a->reason;
        char action[48];
        snprintf(action, sizeof action, "rollout.%s", mf_rollout_action_name(a->kind));
        json_t *detail = json_pack("{s:s, s:I, s:s?}", "reason", a->reason, "stage",
                                   (json_int_t)a->stage, "hw_class", a->hw_class);
        if (a->evidence >= 0)
            json_object_set_new(detail, "evidence",
                                mf_evidence_to_json(&res.evidence[a->evidence]));
        else if (res.n_evidence > 0)
            json_object_set(detail, "evidence", evidence);
        ctl__audit(audit, action, detail);
        mf_log(a->kind == MF_ROLLOUT_FAIL || a->kind == MF_ROLLOUT_FAIL_CLASS ||
                       a->kind == MF_ROLLOUT_PAUSE
                   ? MF_LOG_WARN
                   : MF_LOG_INFO,
               "controller: rollout %" PRId64 " %s %s: %s", id, pl.model, pl.version, a->reason);
        switch (a->kind) {
        case MF_ROLLOUT_ADVANCE:
            advanced = true;
            stage_status = "passed";
            ended = true;
            break;
        case MF_ROLLOUT_WATCH:
            watched = true;
            stage_status = "passed";
            ended = true;
            break;
        case MF_ROLLOUT_PAUSE:
            stage_status = "paused";
            break;
        case MF_ROLLOUT_FAIL:
            if (!converge) {
                stage_status = "failed";
                ended = true;
            }
            break;
        default:
            break;
        }
    }
    if (converge) { /* an aborted rollout stays aborted; its rollbacks are written */
        res.next.status = status0;
        reason = NULL;
        transition = n_back > 0;
    }
    json_t *cls = json_array();
    for (size_t i = 0; i < pl.p.n_classes; i++)
        json_array_append_new(cls, json_string(mf_class_status_name(res.next.classes[i])));
    char stage_s[24], next_stage_s[24];
    snprintf(stage_s, sizeof stage_s, "%zu", prog.stage);
    snprintf(next_stage_s, sizeof next_stage_s, "%zu", res.next.stage);
    if (res.n_evidence > 0 || stage_status) {
        json_t *dec = json_pack("{s:s?, s:O}", "reason", stage_reason, "classes", evidence);
        char *dec_s = ctl__json(dec);
        const char *p[5] = {idbuf, stage_s, dec_s, stage_status, ended ? "true" : "false"};
        rc = ctl__exec(db, sql_stage_decision, 5, p, diag);
        free(dec_s);
    }
    json_decref(evidence);
    if (rc == MF_OK && advanced) {
        const char *p[2] = {idbuf, next_stage_s};
        rc = ctl__exec(db, sql_stage_start, 2, p, diag);
    }
    char *cls_s = ctl__json(cls);
    const char *pp[9] = {idbuf,
                         mf_rollout_status_name(res.next.status),
                         next_stage_s,
                         advanced ? "true" : "false",
                         watched ? "true" : "false",
                         cls_s,
                         reason,
                         "false",
                         transition ? "true" : "false"};
    if (rc == MF_OK)
        rc = ctl__exec(db, sql_progress, 9, pp, diag);
    free(cls_s);
    if (rc == MF_OK && json_array_size(audit) > 0) {
        objname = mf_xasprintf("rollout/%" PRId64, id);
        char *audit_s = json_dumps(audit, JSON_COMPACT);
        const char *p[2] = {objname, audit_s};
        rc = ctl__exec(db, sql_audit, 2, p, diag);
        free(audit_s);
    }
out:
    json_decref(audit);
    free(objname);
    free(wants);
    free(by_addr);
    mf_buf_free(&ids);
    mf_rollout_result_free(&res);
    free(sn.dev);
    PQclear(sn.targets);
    PQclear(sn.mine);
    PQclear(pkgs);
    PQclear(old);
    PQclear(ro);
    mf_plan_free(&pl);
    return rc;
}

/* ---- the tick ---- */

static const char sql_leader[] = "SELECT pg_try_advisory_xact_lock(" CTL_LEADER_KEY ")";

static const char sql_work[] = "SELECT id FROM rollouts WHERE status IN ('running', 'watching')"
                               " OR rollback_pending ORDER BY id";

/* BEGIN and the leader lock: false (rolled back) when another server holds it. */
static enum mf_err ctl__begin(struct mf_db *db, bool *leader, struct mf_diag *diag)
{
    PGresult *res = NULL;
    enum mf_err rc = mf_db_begin(db, diag);
    *leader = false;
    if (rc == MF_OK)
        rc = mf_db_exec(db, sql_leader, 0, NULL, &res, diag);
    if (rc == MF_OK)
        *leader = PQntuples(res) == 1 && *PQgetvalue(res, 0, 0) == 't';
    PQclear(res);
    if (rc != MF_OK || !*leader)
        mf_db_rollback(db);
    return rc;
}

static void ctl__fail_log(struct mf_controller *c, const char *what, const struct mf_diag *diag)
{
    int64_t now = ctl__mono_s();
    if (c->last_fail_log && now - c->last_fail_log < CTL_LOG_EVERY_S)
        return;
    c->last_fail_log = now;
    char why[MF_DIAG_STR_MAX];
    mf_log(MF_LOG_WARN, "controller: %s: %s (retried every tick)", what,
           mf_diag_str(diag, why, sizeof why));
}

/* Steps every rollout with work; true when this server is the controller. */
static bool ctl__step_all(struct mf_controller *c, struct mf_db *db)
{
    struct mf_diag diag = {0};
    PGresult *res = NULL;
    bool leader = false;

    if (ctl__begin(db, &leader, &diag) != MF_OK) {
        ctl__fail_log(c, "database", &diag);
        return false;
    }
    if (!leader)
        return false;
    enum mf_err rc = mf_db_exec(db, sql_work, 0, NULL, &res, &diag);
    mf_db_rollback(db);
    if (rc != MF_OK) {
        ctl__fail_log(c, "listing rollouts", &diag);
        return true;
    }
    for (int r = 0; r < PQntuples(res); r++) {
        int64_t id = strtoll(PQgetvalue(res, r, 0), NULL, 10);
        if (ctl__begin(db, &leader, &diag) != MF_OK || !leader)
            break;
        rc = ctl__step(c->s, db, id, &diag);
        if (rc == MF_OK)
            rc = mf_db_commit(db, &diag);
        else
            mf_db_rollback(db);
        if (rc != MF_OK) {
            char what[64];
            snprintf(what, sizeof what, "rollout %" PRId64, id);
            ctl__fail_log(c, what, &diag);
        }
    }
    PQclear(res);
    return true;
}

/* ---- the outbox ---- */

static const char sql_outbox[] =
    "SELECT device_id, seq, payload FROM desired_states WHERE published_at IS NULL"
    " ORDER BY updated_at LIMIT 10000";

static const char sql_published[] =
    "UPDATE desired_states d SET published_at = now()"
    " FROM jsonb_to_recordset($1::jsonb) AS x(device_id text, seq bigint)"
    " WHERE d.device_id = x.device_id AND d.seq = x.seq";

static int ctl__cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* In-flight messages by (device, seq). */
static int ctl__cmp_inflight(const void *a, const void *b)
{
    const struct inflight *x = a, *y = b;
    int d = strcmp(x->device, y->device);
    return d ? d : (x->seq > y->seq) - (x->seq < y->seq);
}

/* Marks what the broker acknowledged; forgets what waited too long (or was
 * sent before a reconnect), so the next pass sends it again. Linear after a
 * sort: a step may have put ten thousand desired states in flight. */
static void ctl__settle(struct mf_controller *c, struct mf_db *db)
{
    int *acked;
    size_t n_acked;
    struct mf_diag diag = {0};

    pthread_mutex_lock(&c->mu);
    acked = c->acked;
    n_acked = c->n_acked;
    c->acked = NULL;
    c->n_acked = c->cap_acked = 0;
    pthread_mutex_unlock(&c->mu);

    json_t *done = json_array();
    int64_t now = ctl__mono_s();
    bool again = atomic_exchange(&c->reconnected, false);
    size_t kept = 0;
    if (n_acked > 1)
        qsort(acked, n_acked, sizeof *acked, ctl__cmp_int);
    for (size_t i = 0; i < c->n_fl; i++) {
        struct inflight *f = &c->fl[i];
        bool ok = n_acked > 0 && bsearch(&f->mid, acked, n_acked, sizeof *acked, ctl__cmp_int);
        if (ok)
            json_array_append_new(
                done, json_pack("{s:s, s:I}", "device_id", f->device, "seq", (json_int_t)f->seq));
        else if (!again && now - f->sent < CTL_INFLIGHT_S)
            c->fl[kept++] = *f;
    }
    c->n_fl = kept;
    free(acked);
    if (json_array_size(done) > 0) {
        char *s = json_dumps(done, JSON_COMPACT);
        const char *p[1] = {s};
        if (ctl__exec(db, sql_published, 1, p, &diag) != MF_OK)
            ctl__fail_log(c, "marking desired states published", &diag);
        free(s);
    }
    json_decref(done);
}

/* The first connection: libmosquitto's own thread reconnects a connection
 * that was once started, but not one whose first attempt failed at once
 * (connection refused), so that one is tried again every tick here. */
static bool ctl__connect(struct mf_controller *c)
{
    if (c->loop_started)
        return true;
    int mrc = mosquitto_connect_async(c->mosq, c->host, c->port, CTL_KEEPALIVE);
    if (mrc == MOSQ_ERR_SUCCESS)
        mrc = mosquitto_loop_start(c->mosq);
    if (mrc == MOSQ_ERR_SUCCESS) {
        c->loop_started = true;
        return true;
    }
    int64_t now = ctl__mono_s();
    if (!c->last_connect_log || now - c->last_connect_log >= CTL_LOG_EVERY_S) {
        c->last_connect_log = now;
        mf_log(MF_LOG_WARN,
               "controller: cannot connect to broker %s:%d (%s); desired states wait in the "
               "outbox, retrying",
               c->host, c->port, mrc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(mrc));
    }
    return false;
}

static void ctl__publish(struct mf_controller *c, struct mf_db *db)
{
    struct mf_diag diag = {0};
    PGresult *res = NULL;

    ctl__settle(c, db);
    if (!c->mosq || !ctl__connect(c) || !atomic_load(&c->connected))
        return;
    if (mf_db_exec(db, sql_outbox, 0, NULL, &res, &diag) != MF_OK) {
        ctl__fail_log(c, "reading the outbox", &diag);
        return;
    }
    size_t sent = 0, n_old = c->n_fl; /* what was in flight before this pass, sorted */
    if (n_old > 1)
        qsort(c->fl, n_old, sizeof *c->fl, ctl__cmp_inflight);
    for (int r = 0; r < PQntuples(res); r++) {
        const char *device = PQgetvalue(res, r, 0);
        struct inflight key = {.seq = strtoll(PQgetvalue(res, r, 1), NULL, 10)};
        int64_t seq = key.seq;
        snprintf(key.device, sizeof key.device, "%s", device);
        bool pending =
            n_old > 0 && bsearch(&key, c->fl, n_old, sizeof *c->fl, ctl__cmp_inflight) != NULL;
        char topic[MF_TOPIC_MAX];
        if (pending || mf_topic(topic, device, MF_DEVMSG_DESIRED) != MF_OK)
            continue;
        int mid = 0;
        int mrc = mosquitto_publish(c->mosq, &mid, topic, PQgetlength(res, r, 2),
                                    PQgetvalue(res, r, 2), 1, true);
        if (mrc != MOSQ_ERR_SUCCESS) {
            mf_log(MF_LOG_WARN, "controller: publish to %s: %s (sent again later)", topic,
                   mosquitto_strerror(mrc));
            break;
        }
        if (c->n_fl == c->cap_fl) {
            c->cap_fl = c->cap_fl ? 2 * c->cap_fl : 256;
            c->fl = mf_xreallocarray(c->fl, c->cap_fl, sizeof *c->fl);
        }
        struct inflight *f = &c->fl[c->n_fl++];
        f->mid = mid;
        snprintf(f->device, sizeof f->device, "%s", device);
        f->seq = seq;
        f->sent = ctl__mono_s();
        sent++;
    }
    if (sent > 0)
        mf_log(MF_LOG_DEBUG, "controller: published %zu desired states", sent);
    PQclear(res);
}

/* ---- the thread ---- */

static void *ctl__main(void *arg)
{
    struct mf_controller *c = arg;
    const int64_t period_ms = c->s->cfg.controller_interval_ms;

    for (;;) {
        struct mf_db *db = mf_server_db(c->s);
        if (db && ctl__step_all(c, db))
            ctl__publish(c, db);

        struct timespec dl;
        clock_gettime(CLOCK_MONOTONIC, &dl);
        dl.tv_sec += period_ms / 1000;
        dl.tv_nsec += (period_ms % 1000) * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&c->mu);
        while (!c->stop && !c->wake && pthread_cond_timedwait(&c->cv, &c->mu, &dl) != ETIMEDOUT) {
        }
        c->wake = false;
        bool stop = c->stop;
        pthread_mutex_unlock(&c->mu);
        if (stop)
            break;
    }
    return NULL;
}

static void ctl__free(struct mf_controller *c)
{
    if (c->mosq) {
        if (c->loop_started) {
            (void)mosquitto_disconnect(c->mosq);
            (void)mosquitto_loop_stop(c->mosq, false);
        }
        mosquitto_destroy(c->mosq);
        mosquitto_lib_cleanup();
    }
    free(c->host);
    free(c->fl);
    free(c->acked);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

enum mf_err mf_controller_start(struct mf_server *s, struct mf_controller **out,
                                struct mf_diag *diag)
{
    struct mf_controller *c = mf_xcalloc(1, sizeof *c);
    pthread_condattr_t ca;
    enum mf_err rc;

    *out = NULL;
    c->s = s;
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&c->connected, false);
    atomic_init(&c->reconnected, false);

    if (*s->cfg.mqtt_broker) {
        char id[64];
        mosquitto_lib_init();
        snprintf(id, sizeof id, "modelfleet-ctl-%ld", (long)getpid());
        rc = mf_server_mqtt_new(&s->cfg, id, true, c, &c->mosq, &c->host, &c->port, diag);
        if (rc != MF_OK) {
            mosquitto_lib_cleanup();
            ctl__free(c);
            return rc;
        }
        mosquitto_connect_callback_set(c->mosq, ctl__on_connect);
        mosquitto_disconnect_callback_set(c->mosq, ctl__on_disconnect);
        mosquitto_publish_callback_set(c->mosq, ctl__on_publish);
        (void)mosquitto_reconnect_delay_set(c->mosq, 1, 30, true);
        /* a step may publish thousands at once: more than libmosquitto's
         * default of 20 unacknowledged (the broker's own limit still holds) */
        (void)mosquitto_max_inflight_messages_set(c->mosq, 1000);
        /* connected from the controller thread (ctl__connect) */
    } else {
        mf_log(MF_LOG_WARN, "controller: mqtt_broker is empty: desired states are written but "
                            "not published");
    }
    if (pthread_create(&c->th, NULL, ctl__main, c) != 0) {
        ctl__free(c);
        return mf_diag_set(diag, MF_ERR_IO, "controller", "cannot start the controller thread");
    }
    c->started = true;
    mf_log(MF_LOG_INFO, "controller: stepping rollouts every %" PRId64 " ms",
           s->cfg.controller_interval_ms);
    *out = c;
    return MF_OK;
}

void mf_controller_stop(struct mf_controller *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->stop = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (c->started)
        pthread_join(c->th, NULL);
    ctl__free(c);
}

enum mf_err mf_controller_step_once(struct mf_server *s, struct mf_db *db, int64_t rollout_id,
                                    bool *leader, struct mf_diag *diag)
{
    enum mf_err rc = ctl__begin(db, leader, diag);
    if (rc != MF_OK || !*leader)
        return rc;
    rc = ctl__step(s, db, rollout_id, diag);
    if (rc == MF_OK)
        return mf_db_commit(db, diag);
    mf_db_rollback(db);
    return rc;
}

void mf_controller_wake(struct mf_controller *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->mu);
    c->wake = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}
