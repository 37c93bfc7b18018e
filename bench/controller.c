/* controller.c — mf-bench-controller: times the rollout controller's step
 * (mf_controller_step_once, its own transaction, exactly as the controller
 * thread runs it, without publishing) on a rollout prepared by
 * bench/controller, next to the cost of its snapshot SQL alone on the same
 * connection, alternating run by run:
 *
 *   steady   the rollout sits mid-stage (nothing to assign, the stage is not
 *            soaked yet): load the snapshot, judge, rewrite the evidence;
 *   watch    the same on a watching rollout (--case watch): every device of
 *            its classes is assigned and judged;
 *   advance  the stage has soaked and passes: the step advances and assigns
 *            the next stage's devices (a signed desired state each). The rows
 *            it wrote are restored (untimed) before every repetition.
 *
 * Also `--buckets ROLLOUT N`: prints "dev-%07d<TAB>bucket" for devices 1..N,
 * the buckets the policy draws (mf_rollout_bucket), for the fill script;
 * `--explain`: EXPLAIN (ANALYZE, BUFFERS) of the snapshot statements.
 * A benchmark, never a pass/fail test: the exit code only says whether it ran. */
#define _GNU_SOURCE

#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/err.h"
#include "common/log.h"
#include "common/mem.h"
#include "packaging/key.h"
#include "rollout/rollout.h"
#include "server/controller.h"
#include "server/db.h"
#include "server/server.h"
#include "telemetry/desired.h"

/* The controller's snapshot statements, the very text ctl__step runs
 * (server/controller.c); declared here because only this bench uses them. */

#define DEFAULT_RUNS   7
#define DEFAULT_WARMUP 2

struct bench {
    struct mf_server srv;
    struct mf_db *db;
    const char *rollout;
    char model[128], version[128], *classes, *labels;
    int64_t rollout_id;
    long stage0;      /* the stage the prepared rollout sits at */
    long assigned0;   /* its rollout_devices rows */
    long devices;     /* devices of the plan's classes */
    long audit_max;   /* audit_log rows above this are the bench's */
    const char *size; /* label for the output */
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static double cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void die_diag(const char *what, const struct mf_diag *diag)
{
    char msg[MF_DIAG_STR_MAX];
    fprintf(stderr, "mf-bench-controller: %s: %s\n", what, mf_diag_str(diag, msg, sizeof msg));
    exit(1);
}

/* Runs one statement; dies on an error. The result is the caller's (or NULL). */
static PGresult *sql(struct bench *b, const char *stmt, int n, const char *const *p)
{
    struct mf_diag diag = {0};
    PGresult *res = NULL;
    if (mf_db_exec(b->db, stmt, n, p, &res, &diag) != MF_OK)
        die_diag(stmt, &diag);
    return res;
}

static long sql_long(struct bench *b, const char *stmt, int n, const char *const *p)
{
    PGresult *res = sql(b, stmt, n, p);
    long v =
        PQntuples(res) > 0 && !PQgetisnull(res, 0, 0) ? strtol(PQgetvalue(res, 0, 0), NULL, 10) : 0;
    PQclear(res);
    return v;
}

static void sql_do(struct bench *b, const char *stmt, int n, const char *const *p)
{
    PQclear(sql(b, stmt, n, p));
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, c = *(const double *)y;
    return (a > c) - (a < c);
}

/* Nearest-rank percentile of v[0..n) (sorts a copy). */
static double pct(const double *v, size_t n, double p)
{
    double *s = mf_xcalloc(n, sizeof *s);
    memcpy(s, v, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp_double);
    size_t k = (size_t)(p / 100 * (double)n + 0.999999);
    double r = s[k < 1 ? 0 : (k > n ? n - 1 : k - 1)];
    free(s);
    return r;
}

/* ---- the two sides ---- */

static double time_tick(struct bench *b, double *cpu)
{
    struct mf_diag diag = {0};
    bool leader = false;
    double c0 = cpu_ms(), t0 = now_ms();
    enum mf_err rc = mf_controller_step_once(&b->srv, b->db, b->rollout_id, &leader, &diag);
    double t = now_ms() - t0;
    if (cpu)
        *cpu = cpu_ms() - c0;
    if (rc != MF_OK)
        die_diag("mf_controller_step_once", &diag);
    if (!leader) {
        fprintf(stderr, "mf-bench-controller: another controller holds the leader lock\n");
        exit(1);
    }
    return t;
}

/* The snapshot statements alone (the target devices, then the rollout's),
 * with the values the step binds, rows fetched (libpq reads the whole
 * result before returning). */
static double time_sql(struct bench *b, long *rows)
{
    const char *pt[2] = {b->classes, b->labels};
    const char *pm[3] = {b->rollout, b->model, b->version};
    double t0 = now_ms();
    PGresult *t = sql(b, mf_controller_sql_targets, 2, pt);
    PGresult *m = sql(b, mf_controller_sql_rollout_devices, 3, pm);
    double dt = now_ms() - t0;
    if (rows)
        *rows = PQntuples(t);
    PQclear(t);
    PQclear(m);
    return dt;
}

/* EXPLAIN (ANALYZE, BUFFERS) of the snapshot statements, same values. */
static void explain(struct bench *b)
{
    const char *pt[2] = {b->classes, b->labels};
    const char *pm[3] = {b->rollout, b->model, b->version};
    const char *stmt[2] = {mf_controller_sql_targets, mf_controller_sql_rollout_devices};
    const char *const *params[2] = {pt, pm};
    int n[2] = {2, 3};
    for (int i = 0; i < 2; i++) {
        char *q = mf_xasprintf("EXPLAIN (ANALYZE, BUFFERS) %s", stmt[i]);
        PGresult *res = sql(b, q, n[i], params[i]);
        printf("-- %s\n", stmt[i]);
        for (int r = 0; r < PQntuples(res); r++)
            printf("%s\n", PQgetvalue(res, r, 0));
        printf("\n");
        PQclear(res);
        free(q);
    }
}

/* ---- the prepared state and its restore ---- */

static const char sql_soak[] =
    "UPDATE rollouts SET stage_started = now() - make_interval(secs => $2::double precision),"
    " watch_started = CASE WHEN status = 'watching' THEN now() - interval '600 s' END"
    " WHERE id = $1::bigint";

static void set_age(struct bench *b, const char *secs)
{
    const char *p[2] = {b->rollout, secs};
    sql_do(b, sql_soak, 2, p);
}

static void backup(struct bench *b)
{
    const char *p[1] = {b->rollout};
    sql_do(b, "DROP TABLE IF EXISTS bench_ctl_ds, bench_ctl_ro, bench_ctl_st", 0, NULL);
    sql_do(b, "CREATE UNLOGGED TABLE bench_ctl_ds AS SELECT * FROM desired_states", 0, NULL);
    sql_do(b, "ALTER TABLE bench_ctl_ds ADD PRIMARY KEY (device_id)", 0, NULL);
    sql_do(b, "CREATE UNLOGGED TABLE bench_ctl_ro AS SELECT * FROM rollouts WHERE id = $1::bigint",
           1, p);
    sql_do(b,
           "CREATE UNLOGGED TABLE bench_ctl_st AS SELECT * FROM rollout_stages"
           " WHERE rollout_id = $1::bigint",
           1, p);
    b->audit_max = sql_long(b, "SELECT coalesce(max(id), 0) FROM audit_log", 0, NULL);
}

/* Puts back what a step wrote: the rows assigned after stage0, their desired
 * states, the rollout's progress, its stages, the audit rows; then VACUUM so
 * every repetition starts from tables of the same shape. Untimed. */
static void restore(struct bench *b)
{
    char stage[24], audit[24];
    snprintf(stage, sizeof stage, "%ld", b->stage0);
    snprintf(audit, sizeof audit, "%ld", b->audit_max);
    const char *p2[2] = {b->rollout, stage};
    const char *p1[1] = {b->rollout};
    const char *pa[1] = {audit};
    sql_do(b, "BEGIN", 0, NULL);
    sql_do(b,
           "WITH del AS (DELETE FROM rollout_devices WHERE rollout_id = $1::bigint"
           " AND stage > $2::integer RETURNING device_id)"
           " UPDATE desired_states d SET seq = o.seq, body = o.body, payload = o.payload,"
           " rollout_id = o.rollout_id, updated_at = o.updated_at, published_at = o.published_at"
           " FROM del JOIN bench_ctl_ds o ON o.device_id = del.device_id"
           " WHERE d.device_id = del.device_id",
           2, p2);
    sql_do(b,
           "DELETE FROM desired_states d WHERE NOT EXISTS"
           " (SELECT 1 FROM bench_ctl_ds o WHERE o.device_id = d.device_id)",
           0, NULL);
    sql_do(
        b,
        "UPDATE rollouts r SET status = o.status, stage = o.stage, stage_started = o.stage_started,"
        " watch_started = o.watch_started, class_status = o.class_status, reason = o.reason,"
        " rollback_pending = o.rollback_pending, finished_at = o.finished_at,"
        " updated_at = o.updated_at, stepped_at = o.stepped_at"
        " FROM bench_ctl_ro o WHERE r.id = o.id AND r.id = $1::bigint",
        1, p1);
    sql_do(b,
           "UPDATE rollout_stages s SET status = o.status, started_at = o.started_at,"
           " ended_at = o.ended_at, decision = o.decision FROM bench_ctl_st o"
           " WHERE s.rollout_id = o.rollout_id AND s.stage = o.stage AND s.rollout_id = $1::bigint",
           1, p1);
    sql_do(b, "DELETE FROM audit_log WHERE id > $1::bigint", 1, pa);
    sql_do(b, "COMMIT", 0, NULL);
    sql_do(b, "VACUUM desired_states, rollout_devices, rollouts, rollout_stages, audit_log", 0,
           NULL);
}

static long assigned(struct bench *b)
{
    const char *p[1] = {b->rollout};
    return sql_long(b, "SELECT count(*) FROM rollout_devices WHERE rollout_id = $1::bigint", 1, p);
}

static long stage_now(struct bench *b)
{
    const char *p[1] = {b->rollout};
    return sql_long(b, "SELECT stage FROM rollouts WHERE id = $1::bigint", 1, p);
}

/* ---- the cases ---- */

struct result {
    size_t n;
    double *tick, *sql, *cpu, *ratio;
    long rows, new_assigned;
};

static void result_init(struct result *r, size_t n)
{
    r->n = n;
    r->tick = mf_xcalloc(n, sizeof *r->tick);
    r->sql = mf_xcalloc(n, sizeof *r->sql);
    r->cpu = mf_xcalloc(n, sizeof *r->cpu);
    r->ratio = mf_xcalloc(n, sizeof *r->ratio);
}

static void result_free(struct result *r)
{
    free(r->tick);
    free(r->sql);
    free(r->cpu);
    free(r->ratio);
}

static void result_print(const struct bench *b, const char *name, const struct result *r,
                         double sign_ms)
{
    printf("  %-8s tick p50 %9.2f ms  p90 %9.2f ms | snapshot SQL p50 %8.2f ms  p90 %8.2f ms | "
           "tick/SQL %6.2fx | bench CPU in tick p50 %8.2f ms",
           name, pct(r->tick, r->n, 50), pct(r->tick, r->n, 90), pct(r->sql, r->n, 50),
           pct(r->sql, r->n, 90), pct(r->ratio, r->n, 50), pct(r->cpu, r->n, 50));
    if (r->new_assigned > 0)
        printf(" | assigned %ld, signing alone %.2f ms", r->new_assigned, sign_ms);
    printf("\n");
    printf("MFBENCH size=%s case=%s runs=%zu devices=%ld rows=%ld tick_p50_ms=%.3f "
           "tick_p90_ms=%.3f sql_p50_ms=%.3f sql_p90_ms=%.3f ratio=%.3f cpu_p50_ms=%.3f "
           "assigned=%ld sign_ms=%.3f\n",
           b->size, name, r->n, b->devices, r->rows, pct(r->tick, r->n, 50), pct(r->tick, r->n, 90),
           pct(r->sql, r->n, 50), pct(r->sql, r->n, 90), pct(r->ratio, r->n, 50),
           pct(r->cpu, r->n, 50), r->new_assigned, sign_ms);
    fflush(stdout);
}

/* Mid-stage: nothing to assign; K pairs, tick first in odd pairs. */
static void run_steady(struct bench *b, int runs, int warmup, struct result *r)
{
    set_age(b, "600"); /* 10 minutes into a stage that soaks 30 */
    for (int i = 0; i < warmup; i++) {
        (void)time_tick(b, NULL);
        (void)time_sql(b, NULL);
    }
    result_init(r, (size_t)runs);
    for (int i = 0; i < runs; i++) {
        if (i % 2 == 0) {
            r->tick[i] = time_tick(b, &r->cpu[i]);
            r->sql[i] = time_sql(b, &r->rows);
        } else {
            r->sql[i] = time_sql(b, &r->rows);
            r->tick[i] = time_tick(b, &r->cpu[i]);
        }
        r->ratio[i] = r->tick[i] / r->sql[i];
    }
    long st = stage_now(b), as = assigned(b);
    if (st != b->stage0 || as != b->assigned0) {
        fprintf(stderr,
                "mf-bench-controller: the steady tick changed the rollout (stage %ld -> %ld, "
                "assigned %ld -> %ld): the prepared state is not mid-stage\n",
                b->stage0, st, b->assigned0, as);
        exit(1);
    }
}

/* The stage has soaked: every repetition advances and assigns, then the rows
 * are restored. The SQL baseline runs on the same (restored) state right
 * before each tick. */
static void run_advance(struct bench *b, int runs, int warmup, struct result *r)
{
    result_init(r, (size_t)runs);
    for (int i = -warmup; i < runs; i++) {
        restore(b);
        set_age(b, "3600"); /* soaked (soak 30 min), not timed out (2 h) */
        double s = time_sql(b, &r->rows), cpu = 0;
        double t = time_tick(b, &cpu);
        long st = stage_now(b), as = assigned(b);
        if (st != b->stage0 + 1 || as <= b->assigned0) {
            fprintf(stderr,
                    "mf-bench-controller: the soaked tick did not advance (stage %ld -> %ld, "
                    "assigned %ld -> %ld): check the prepared reports and gates\n",
                    b->stage0, st, b->assigned0, as);
            exit(1);
        }
        r->new_assigned = as - b->assigned0;
        if (i < 0)
            continue;
        r->tick[i] = t;
        r->sql[i] = s;
        r->cpu[i] = cpu;
        r->ratio[i] = t / s;
    }
    restore(b);
    set_age(b, "600");
}

/* The Ed25519 floor of the advance tick: format + sign n desired states like
 * the ones it writes (two models), nothing else. */
static double sign_floor(struct bench *b, long n)
{
    struct mf_desired_model m[2] = {
        {.name = "digits", .version = b->version, .size = 111616},
        {.name = "keyword", .version = "1.0.0", .size = 52000},
    };
    memset(m[0].package, 'a', MF_HASH_HEX - 1);
    memset(m[1].package, 'b', MF_HASH_HEX - 1);
    double t0 = now_ms();
    for (long i = 0; i < n; i++) {
        char dev[32];
        snprintf(dev, sizeof dev, "dev-%07ld", i + 1);
        struct mf_desired d = {.device = dev,
                               .seq = 1800000000000u + (uint64_t)i,
                               .issued = 1800000000,
                               .rollout = b->rollout_id,
                               .models = m,
                               .n_models = 2};
        size_t len = 0;
        free(mf_desired_sign(&d, &b->srv.key, &len));
    }
    return now_ms() - t0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mf-bench-controller --db URL --key FILE [--rollout ID] [--runs K]\n"
            "                           [--warmup W] [--size LABEL] [--case "
            "steady|watch|advance|both]\n"
            "       mf-bench-controller --db URL --key FILE [--rollout ID] --explain\n"
            "       mf-bench-controller --buckets ROLLOUT N | --print-sql\n"
            "Times mf_controller_step_once on a rollout prepared by bench/controller (mid-stage:\n"
            "steady; soaked: advance), K pairs each, against its snapshot SQL alone.\n"
            "  --runs K     timed pairs per case [%d]\n"
            "  --warmup W   untimed ticks first [%d]\n",
            DEFAULT_RUNS, DEFAULT_WARMUP);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"db", required_argument, NULL, 'd'},      {"key", required_argument, NULL, 'k'},
        {"rollout", required_argument, NULL, 'r'}, {"runs", required_argument, NULL, 'n'},
        {"warmup", required_argument, NULL, 'w'},  {"size", required_argument, NULL, 's'},
        {"case", required_argument, NULL, 'c'},    {"buckets", no_argument, NULL, 'b'},
        {"print-sql", no_argument, NULL, 'p'},     {"explain", no_argument, NULL, 'e'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
    struct bench b = {.rollout = "2", .size = "?"};
    const char *db = NULL, *key = NULL, *which = "both";
    int runs = DEFAULT_RUNS, warmup = DEFAULT_WARMUP, opt;
    bool buckets = false, plans = false;

    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (opt) {
        case 'd':
            db = optarg;
            break;
        case 'k':
            key = optarg;
            break;
        case 'r':
            b.rollout = optarg;
            break;
        case 'n':
            runs = atoi(optarg);
            break;
        case 'w':
            warmup = atoi(optarg);
            break;
        case 's':
            b.size = optarg;
            break;
        case 'c':
            which = optarg;
            break;
        case 'b':
            buckets = true;
            break;
        case 'e':
            plans = true;
            break;
        case 'p':
            printf("%s;\n%s;\n", mf_controller_sql_targets, mf_controller_sql_rollout_devices);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (buckets) {
        if (argc - optind != 2) {
            usage(stderr);
            return 2;
        }
        int64_t rid = strtoll(argv[optind], NULL, 10);
        long n = strtol(argv[optind + 1], NULL, 10);
        for (long i = 1; i <= n; i++) {
            char id[32];
            snprintf(id, sizeof id, "dev-%07ld", i);
            printf("%s\t%.17g\n", id, mf_rollout_bucket(id, rid));
        }
        return 0;
    }
    if (!db || !key || runs < 1 || warmup < 0 || optind != argc ||
        (strcmp(which, "steady") && strcmp(which, "watch") && strcmp(which, "advance") &&
         strcmp(which, "both"))) {
        usage(stderr);
        return 2;
    }
    if (sodium_init() < 0)
        return 1;
    mf_log_set_level(MF_LOG_WARN);

    struct mf_diag diag = {0};
    b.srv.cfg.database_url = (char *)db;
    if (mf_key_secret_load(key, &b.srv.key, &diag) != MF_OK)
        die_diag("signing key", &diag);
    b.db = mf_db_new(db, 10);
    b.rollout_id = strtoll(b.rollout, NULL, 10);

    const char *pr[1] = {b.rollout};
    PGresult *res = sql(&b,
                        "SELECT model, version, (plan->'classes')::text,"
                        " coalesce(plan->'labels', '{}'::jsonb)::text, stage, status"
                        " FROM rollouts WHERE id = $1::bigint",
                        1, pr);
    if (PQntuples(res) != 1 || (strcmp(PQgetvalue(res, 0, 5), "running") != 0 &&
                                strcmp(PQgetvalue(res, 0, 5), "watching") != 0)) {
        fprintf(stderr, "mf-bench-controller: rollout %s is missing or not running\n", b.rollout);
        return 1;
    }
    snprintf(b.model, sizeof b.model, "%s", PQgetvalue(res, 0, 0));
    snprintf(b.version, sizeof b.version, "%s", PQgetvalue(res, 0, 1));
    b.classes = mf_xstrdup(PQgetvalue(res, 0, 2));
    b.labels = mf_xstrdup(PQgetvalue(res, 0, 3));
    b.stage0 = strtol(PQgetvalue(res, 0, 4), NULL, 10);
    PQclear(res);
    const char *pc[1] = {b.classes};
    b.devices = sql_long(&b,
                         "SELECT count(*) FROM devices"
                         " WHERE hw_class IN (SELECT jsonb_array_elements_text($1::jsonb))",
                         1, pc);
    /* as the step does for its transaction (server/controller.c) */
    sql_do(&b, "SET jit = off", 0, NULL);
    b.assigned0 = assigned(&b);
    if (plans) {
        explain(&b);
        return 0;
    }
    backup(&b);
    printf("mf-bench-controller: size %s: rollout %s (%s %s) at stage %ld, %ld devices in its "
           "classes, %ld assigned; %d timed pairs per case after %d warm-up\n",
           b.size, b.rollout, b.model, b.version, b.stage0 + 1, b.devices, b.assigned0, runs,
           warmup);
    fflush(stdout);

    if (strcmp(which, "advance") != 0) {
        struct result r = {0};
        run_steady(&b, runs, warmup, &r);
        result_print(&b, strcmp(which, "watch") == 0 ? "watch" : "steady", &r, 0);
        result_free(&r);
    }
    if (strcmp(which, "steady") != 0 && strcmp(which, "watch") != 0) {
        struct result r = {0};
        run_advance(&b, runs, warmup > 0 ? 1 : 0, &r);
        result_print(&b, "advance", &r, sign_floor(&b, r.new_assigned));
        result_free(&r);
    }
    sql_do(&b, "DROP TABLE IF EXISTS bench_ctl_ds, bench_ctl_ro, bench_ctl_st", 0, NULL);
    free(b.classes);
    free(b.labels);
    mf_db_free(b.db);
    sodium_memzero(&b.srv.key, sizeof b.srv.key);
    return 0;
}
