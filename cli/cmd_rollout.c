/* cmd_rollout.c — `modelfleet rollout start | status | list | pause | resume |
 * abort | promote | devices`: staged rollouts through modelfleet-server's API
 * (docs/api.md, plans in docs/rollouts.md). `start` builds the plan from a
 * --plan file and flags (a flag wins over the file) and POSTs it; `status`
 * shows a rollout's stages with the gate evidence of every class and the
 * device counts, and with --watch redraws until the rollout is over. Server
 * URL and token are found as for the other remote commands (remote.h);
 * people get tables, scripts get the server's JSON with --json. Stages are
 * numbered from 1 on screen; the API counts them from 0. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "cli/remote.h"
#include "common/buf.h"
#include "common/mem.h"

#define REMOTE_HELP MF_REMOTE_HELP_WHERE MF_REMOTE_HELP_EXIT

/* ---- output helpers ---- */

/* How jnum formats a number. */
enum num_style {
    NUM_FIXED4,  /* 0.9861 */
    NUM_SIGNED4, /* +0.0028 */
    NUM_FIXED2,  /* 1.02 */
    NUM_SHORT,   /* 0.0312, 1.2e-05 */
};

/* A number field into buf, or "-" for null or absent (no data); with
 * zero_none, 0 is "-" too (a ratio of 0 means none). */
static const char *jnum(char *buf, size_t size, const json_t *o, const char *key,
                        enum num_style style, bool zero_none)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_number(v))
        return "-";
    double d = json_number_value(v);
    if (!isfinite(d) || (zero_none && d == 0))
        return "-";
    switch (style) {
    case NUM_FIXED4:
        snprintf(buf, size, "%.4f", d);
        break;
    case NUM_SIGNED4:
        snprintf(buf, size, "%+.4f", d);
        break;
    case NUM_FIXED2:
        snprintf(buf, size, "%.2f", d);
        break;
    case NUM_SHORT:
        snprintf(buf, size, "%.3g", d);
        break;
    }
    return buf;
}

/* "k/N" (1-based) from a rollout's "stage" (0-based) and "stages". */
static void stage_of(char *buf, size_t size, const json_t *ro)
{
    json_t *k = json_object_get(ro, "stage");
    long long n = json_is_integer(json_object_get(ro, "stages"))
                      ? mf_jll(ro, "stages")
                      : (long long)json_array_size(json_object_get(ro, "stages"));
    if (json_is_integer(k))
        snprintf(buf, size, "%lld/%lld", (long long)json_integer_value(k) + 1, n);
    else
        snprintf(buf, size, "-");
}

static bool status_live(const char *s)
{
    return strcmp(s, "running") == 0 || strcmp(s, "paused") == 0 || strcmp(s, "watching") == 0;
}

/* getopt_long returned '?' (unknown option) or ':' (no value); optstrings
 * start with ':' and report themselves. */
static int bad_option(const char *cmd, int c, char **argv)
{
    const char *arg = argv[optind - 1];
    if (c == ':')
        return mf_cli_usage_error(cmd, "%s needs a value", arg);
    if (optopt && strncmp(arg, "--", 2) != 0)
        return mf_cli_usage_error(cmd, "unknown option '-%c'", optopt);
    return mf_cli_usage_error(cmd, "unknown option '%s'", arg);
}

/* A rollout id: a positive decimal integer. */
static bool parse_id(const char *s)
{
    if (!*s || strlen(s) > 18)
        return false;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    return strtoll(s, NULL, 10) > 0;
}

/* ---- rollout start ---- */

/* "300", "90s", "5m", "1h" -> seconds. */
static bool parse_duration(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    if (*s < '0' || *s > '9')
        return false;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s)
        return false;
    long long mul = 1;
    if (*end == 's')
        end++;
    else if (*end == 'm')
        mul = 60, end++;
    else if (*end == 'h')
        mul = 3600, end++;
    if (*end || v > INT64_MAX / 1000 / mul)
        return false;
    *out = v * mul;
    return true;
}

static bool parse_count(const char *s, json_int_t *out)
{
    char *end;
    errno = 0;
    if (*s < '0' || *s > '9')
        return false;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || end == s)
        return false;
    *out = v;
    return true;
}

static bool parse_real(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || end == s || !isfinite(v) || v < 0)
        return false;
    *out = v;
    return true;
}

/* A percent as JSON: an integer when it is one (1, 10, 50, 100). */
static json_t *json_percent(double p)
{
    return p == floor(p) && p < 1e15 ? json_integer((json_int_t)p) : json_real(p);
}

/* Options that apply to every stage; has_* says which were given. */
struct stage_opts {
    bool has_min_devices, has_min_reporting, has_soak, has_timeout;
    json_int_t min_devices, min_reporting;
    int64_t soak_s, timeout_s;
};

static bool stage_opts_any(const struct stage_opts *s)
{
    return s->has_min_devices || s->has_min_reporting || s->has_soak || s->has_timeout;
}

static void stage_opts_apply(const struct stage_opts *s, json_t *stage)
{
    if (s->has_min_devices)
        json_object_set_new(stage, "min_devices", json_integer(s->min_devices));
    if (s->has_min_reporting)
        json_object_set_new(stage, "min_reporting", json_integer(s->min_reporting));
    if (s->has_soak)
        json_object_set_new(stage, "soak_s", json_integer(s->soak_s));
    if (s->has_timeout)
        json_object_set_new(stage, "timeout_s", json_integer(s->timeout_s));
}

/* "1,10,50,100" -> [{"percent":1}, ...]; NULL if malformed. */
static json_t *parse_stages(const char *s)
{
    json_t *arr = json_array();
    const char *p = s;
    for (;;) {
        char *end;
        errno = 0;
        double v = strtod(p, &end);
        if (errno || end == p || !isfinite(v) || v <= 0 || v > 100 ||
            (*end != ',' && *end != '\0')) {
            json_decref(arr);
            return NULL;
        }
        json_array_append_new(arr, json_pack("{s:o}", "percent", json_percent(v)));
        if (*end == '\0')
            break;
        p = end + 1;
    }
    return arr;
}

/* "a,b" -> ["a","b"]; NULL for an empty name. */
static json_t *parse_classes(const char *s)
{
    json_t *arr = json_array();
    const char *p = s;
    for (;;) {
        while (*p == ' ')
            p++;
        size_t n = strcspn(p, ",");
        size_t m = n;
        while (m && p[m - 1] == ' ')
            m--;
        if (m == 0) {
            json_decref(arr);
            return NULL;
        }
        json_array_append_new(arr, json_stringn(p, m));
        if (!p[n])
            break;
        p += n + 1;
    }
    return arr;
}

/* The default stages of docs/rollouts.md, for per-stage flags without
 * --stages or a plan that has stages. */
static json_t *default_stages(void)
{
    static const int pct[] = {1, 10, 50, 100};
    json_t *arr = json_array();
    for (size_t i = 0; i < sizeof pct / sizeof pct[0]; i++)
        json_array_append_new(arr, json_pack("{s:i}", "percent", pct[i]));
    return arr;
}

/* Reads a --plan file: a JSON object. Exit code or -1 to go on. */
static int load_plan(const char *cmd, const char *path, json_t **out)
{
    json_error_t e;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &e);
    struct mf_diag diag = {0};
    if (!j) {
        if (e.line <= 0 && e.position == 0) /* could not open or read it */
            mf_diag_set(&diag, MF_ERR_IO, path, "cannot read the plan: %s", e.text);
        else
            mf_diag_set(&diag, MF_ERR_PARSE, path, "line %d column %d: %s", e.line, e.column,
                        e.text);
        return mf_cli_fail(cmd, &diag);
    }
    if (!json_is_object(j)) {
        json_decref(j);
        mf_diag_set(&diag, MF_ERR_SCHEMA, path, "a plan is a JSON object");
        return mf_cli_fail(cmd, &diag);
    }
    *out = j;
    return -1;
}

/* "1/10/50/100%" from a plan's stages. */
static char *stages_line(const json_t *stages)
{
    struct mf_buf b;
    mf_buf_init(&b, SIZE_MAX);
    size_t i;
    json_t *s;
    json_array_foreach(stages, i, s)
    {
        if (mf_buf_printf(&b, "%s%g", i ? "/" : "",
                          json_number_value(json_object_get(s, "percent"))) != MF_OK)
            abort();
    }
    if (mf_buf_append_str(&b, b.len ? "%" : "-") != MF_OK)
        abort();
    char *out = (char *)mf_buf_steal(&b, NULL);
    mf_buf_free(&b);
    return out;
}

static char *classes_line(const json_t *classes, const char *sep)
{
    struct mf_buf b;
    mf_buf_init(&b, SIZE_MAX);
    size_t i;
    json_t *c;
    json_array_foreach(classes, i, c)
    {
        const char *name =
            json_is_string(c) ? json_string_value(c) : mf_jstr(c, "hw_class"); /* plan or summary */
        if (mf_buf_printf(&b, "%s%s", i ? sep : "", name) != MF_OK)
            abort();
    }
    char *out = b.len ? (char *)mf_buf_steal(&b, NULL) : mf_xstrdup("-");
    mf_buf_free(&b);
    return out;
}

#define START_USAGE                                                                                \
    "usage: modelfleet rollout start MODEL VERSION [options]\n"                                    \
    "       modelfleet rollout start --plan FILE.json [MODEL VERSION] [options]\n"

static const char start_help[] =
    START_USAGE "\n"
                "Starts a staged rollout of MODEL VERSION (needs an operator token) and prints\n"
                "its id and a summary. The plan (docs/rollouts.md) is --plan FILE.json, if\n"
                "given, with every flag below replacing the file's value; what neither gives\n"
                "takes the server's default.\n"
                "\n"
                "target:\n"
                "  --classes A,B          hardware classes (default: every class the version\n"
                "                         has a package for)\n"
                "  --label KEY=VALUE      only devices carrying this label (repeatable; replaces\n"
                "                         the file's labels)\n"
                "stages (the per-stage options apply to every stage):\n"
                "  --stages 1,10,50,100   cumulative percent of each class per stage\n"
                "  --min-devices N        and at least N devices per class\n"
                "  --min-reporting N      valid reports per class before a stage can pass\n"
                "  --soak DURATION        how long a stage runs before it can pass\n"
                "  --timeout DURATION     an inconclusive stage pauses the rollout after this\n"
                "gates, per stage and class:\n"
                "  --max-failure-rate X   failed + refused installs / assigned devices\n"
                "  --min-accuracy X       floor on the pooled on-device accuracy (0 = none)\n"
                "  --max-accuracy-drop X  non-inferiority margin against the incumbent\n"
                "  --max-p50-ratio X      median candidate/incumbent p50 latency (0 = none)\n"
                "  --max-p99-ratio X      the same for p99\n"
                "policy:\n"
                "  --on-fail rollback|pause   what a failing class does\n"
                "  --scope per_class|whole    whether one failing class fails the rollout\n"
                "  --watch-window DURATION    keep judging this long after the last stage\n"
                "  --dry-run              print the plan that would be sent, send nothing\n"
                "  --json                 print the server's rollout object\n"
                "DURATION: seconds, or a number with s, m or h (90, 90s, 5m, 1h).\n" REMOTE_HELP;

static int rollout_start(int argc, char **argv)
{
    static const char cmd[] = "rollout start";
    enum {
        O_CLASSES = 1100,
        O_LABEL,
        O_STAGES,
        O_MIN_DEV,
        O_MIN_REP,
        O_SOAK,
        O_TIMEOUT,
        O_PLAN,
        O_ON_FAIL,
        O_SCOPE,
        O_WATCH,
        O_DROP,
        O_MIN_ACC,
        O_FAIL_RATE,
        O_P50,
        O_P99,
        O_DRY,
    };
    static const struct option opts[] = {MF_REMOTE_LONGOPTS,
                                         {"classes", required_argument, NULL, O_CLASSES},
                                         {"label", required_argument, NULL, O_LABEL},
                                         {"stages", required_argument, NULL, O_STAGES},
                                         {"min-devices", required_argument, NULL, O_MIN_DEV},
                                         {"min-reporting", required_argument, NULL, O_MIN_REP},
                                         {"soak", required_argument, NULL, O_SOAK},
                                         {"timeout", required_argument, NULL, O_TIMEOUT},
                                         {"plan", required_argument, NULL, O_PLAN},
                                         {"on-fail", required_argument, NULL, O_ON_FAIL},
                                         {"scope", required_argument, NULL, O_SCOPE},
                                         {"watch-window", required_argument, NULL, O_WATCH},
                                         {"max-accuracy-drop", required_argument, NULL, O_DROP},
                                         {"min-accuracy", required_argument, NULL, O_MIN_ACC},
                                         {"max-failure-rate", required_argument, NULL, O_FAIL_RATE},
                                         {"max-p50-ratio", required_argument, NULL, O_P50},
                                         {"max-p99-ratio", required_argument, NULL, O_P99},
                                         {"dry-run", no_argument, NULL, O_DRY},
                                         {0}};
    struct mf_remote_opts o = {0};
    struct mf_remote r;
    struct mf_client_resp resp = {0};
    struct stage_opts so = {0};
    json_t *plan = NULL, *classes = NULL, *labels = NULL, *stages = NULL, *gates = json_object();
    const char *plan_path = NULL, *on_fail = NULL, *scope = NULL;
    bool dry = false, has_watch = false;
    int64_t watch_s = 0;
    int rc = MF_EXIT_USAGE, c, longindex = 0;
    optind = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, &longindex)) != -1) {
        if (mf_remote_opt(c, &o))
            continue;
        const char *gate = NULL;
        double x;
        switch (c) {
        case O_CLASSES:
            json_decref(classes);
            if (!(classes = parse_classes(optarg))) {
                mf_cli_usage_error(cmd, "--classes '%s': expected names separated by commas",
                                   optarg);
                goto out;
            }
            break;
        case O_LABEL: {
            const char *eq = strchr(optarg, '=');
            if (!eq || eq == optarg) {
                mf_cli_usage_error(cmd, "--label '%s': expected KEY=VALUE", optarg);
                goto out;
            }
            if (!labels)
                labels = json_object();
            char *key = mf_xstrndup(optarg, (size_t)(eq - optarg));
            json_object_set_new(labels, key, json_string(eq + 1));
            free(key);
            break;
        }
        case O_STAGES:
            json_decref(stages);
            if (!(stages = parse_stages(optarg))) {
                mf_cli_usage_error(cmd,
                                   "--stages '%s': expected percents in (0, 100] separated by "
                                   "commas, e.g. 1,10,50,100",
                                   optarg);
                goto out;
            }
            break;
        case O_MIN_DEV:
        case O_MIN_REP: {
            json_int_t n;
            if (!parse_count(optarg, &n)) {
                mf_cli_usage_error(cmd, "--%s '%s' is not a whole number",
                                   c == O_MIN_DEV ? "min-devices" : "min-reporting", optarg);
                goto out;
            }
            if (c == O_MIN_DEV)
                so.has_min_devices = true, so.min_devices = n;
            else
                so.has_min_reporting = true, so.min_reporting = n;
            break;
        }
        case O_SOAK:
        case O_TIMEOUT:
        case O_WATCH: {
            int64_t d;
            if (!parse_duration(optarg, &d)) {
                mf_cli_usage_error(cmd,
                                   "--%s '%s' is not a duration (seconds, or a number with s, m "
                                   "or h)",
                                   c == O_SOAK      ? "soak"
                                   : c == O_TIMEOUT ? "timeout"
                                                    : "watch-window",
                                   optarg);
                goto out;
            }
            if (c == O_SOAK)
                so.has_soak = true, so.soak_s = d;
            else if (c == O_TIMEOUT)
                so.has_timeout = true, so.timeout_s = d;
            else
                has_watch = true, watch_s = d;
            break;
        }
        case O_PLAN:
            plan_path = optarg;
            break;
        case O_ON_FAIL:
            if (strcmp(optarg, "rollback") != 0 && strcmp(optarg, "pause") != 0) {
                mf_cli_usage_error(cmd, "--on-fail '%s': expected rollback or pause", optarg);
                goto out;
            }
            on_fail = optarg;
            break;
        case O_SCOPE:
            if (strcmp(optarg, "per_class") != 0 && strcmp(optarg, "whole") != 0) {
                mf_cli_usage_error(cmd, "--scope '%s': expected per_class or whole", optarg);
                goto out;
            }
            scope = optarg;
            break;
        case O_DROP:
            gate = "max_accuracy_drop";
            break;
        case O_MIN_ACC:
            gate = "min_accuracy";
            break;
        case O_FAIL_RATE:
            gate = "max_failure_rate";
            break;
        case O_P50:
            gate = "max_p50_ratio";
            break;
        case O_P99:
            gate = "max_p99_ratio";
            break;
        case O_DRY:
            dry = true;
            break;
        case 'h':
            fputs(start_help, stdout);
            rc = MF_EXIT_OK;
            goto out;
        default:
            bad_option(cmd, c, argv);
            goto out;
        }
        if (gate) {
            if (!parse_real(optarg, &x)) {
                mf_cli_usage_error(cmd, "--%s '%s' is not a number >= 0", opts[longindex].name,
                                   optarg);
                goto out;
            }
            json_object_set_new(gates, gate, json_real(x));
        }
    }
    int nargs = argc - optind;
    if (nargs != 0 && nargs != 2) {
        mf_cli_usage_error(cmd, "expected MODEL VERSION");
        goto out;
    }
    if (nargs == 0 && !plan_path) {
        mf_cli_usage_error(cmd, "expected MODEL VERSION (or a --plan file naming them)");
        goto out;
    }
    if (plan_path) {
        if ((rc = load_plan(cmd, plan_path, &plan)) >= 0)
            goto out;
    } else {
        plan = json_object();
    }
    if (nargs == 2) {
        json_object_set_new(plan, "model", json_string(argv[optind]));
        json_object_set_new(plan, "version", json_string(argv[optind + 1]));
    } else if (!json_is_string(json_object_get(plan, "model")) ||
               !json_is_string(json_object_get(plan, "version"))) {
        rc =
            mf_cli_usage_error(cmd, "%s names no model and version: give MODEL VERSION", plan_path);
        goto out;
    }
    if (classes)
        json_object_set(plan, "classes", classes);
    if (labels)
        json_object_set(plan, "labels", labels);
    if (stages)
        json_object_set(plan, "stages", stages);
    if (stage_opts_any(&so)) {
        json_t *st = json_object_get(plan, "stages");
        if (!st) {
            json_object_set_new(plan, "stages", default_stages());
            st = json_object_get(plan, "stages");
        }
        if (!json_is_array(st)) {
            struct mf_diag diag = {0};
            mf_diag_set(&diag, MF_ERR_SCHEMA, plan_path, "stages: expected an array");
            rc = mf_cli_fail(cmd, &diag);
            goto out;
        }
        size_t i;
        json_t *s;
        json_array_foreach(st, i, s) if (json_is_object(s)) stage_opts_apply(&so, s);
    }
    if (json_object_size(gates)) {
        json_t *g = json_object_get(plan, "gates");
        if (!g) {
            json_object_set(plan, "gates", gates);
        } else if (json_is_object(g)) {
            json_object_update(g, gates);
        } else {
            struct mf_diag diag = {0};
            mf_diag_set(&diag, MF_ERR_SCHEMA, plan_path, "gates: expected an object");
            rc = mf_cli_fail(cmd, &diag);
            goto out;
        }
    }
    if (on_fail)
        json_object_set_new(plan, "on_fail", json_string(on_fail));
    if (scope)
        json_object_set_new(plan, "scope", json_string(scope));
    if (has_watch)
        json_object_set_new(plan, "watch_s", json_integer(watch_s));
    if (dry) {
        mf_remote_print_json(stdout, plan);
        rc = MF_EXIT_OK;
        goto out;
    }
    if ((rc = mf_remote_open(&r, cmd, &o)) != MF_EXIT_OK)
        goto out;
    rc = mf_remote_post(&r, "/rollouts", plan, "operator", &resp);
    if (rc == MF_EXIT_OK) {
        if (o.json) {
            mf_remote_print_json(stdout, resp.body);
        } else {
            const json_t *p = json_object_get(resp.body, "plan");
            char *cl = classes_line(json_object_get(p, "classes"), ", ");
            char *sl = stages_line(json_object_get(p, "stages"));
            printf("started rollout %lld: %s %s to %s in stages %s, on failure %s (%s)\n",
                   mf_jll(resp.body, "id"), mf_jstr(resp.body, "model"),
                   mf_jstr(resp.body, "version"), cl, sl, mf_jstr(p, "on_fail"),
                   mf_jstr(p, "scope"));
            free(cl);
            free(sl);
        }
    }
    mf_client_resp_free(&resp);
    mf_remote_close(&r);
out:
    json_decref(plan);
    json_decref(classes);
    json_decref(labels);
    json_decref(stages);
    json_decref(gates);
    return rc;
}

/* ---- rollout status ---- */

/* The per-class gate evidence of one stage. */
static void status__stage(FILE *out, const json_t *st, size_t nstages)
{
    const json_t *ev_list = json_object_get(st, "classes");
    const char *status = mf_jstr(st, "status");
    fprintf(out, "\nstage %lld/%zu (%g%%): %s", mf_jll(st, "stage") + 1, nstages,
            json_number_value(json_object_get(st, "percent")), status);
    if (json_is_string(json_object_get(st, "started_at")))
        fprintf(out, ", %s .. %s", mf_jstr(st, "started_at"),
                json_is_string(json_object_get(st, "ended_at")) ? mf_jstr(st, "ended_at") : "now");
    fputc('\n', out);
    const char *reason = json_string_value(json_object_get(st, "reason"));
    if (reason && *reason)
        fprintf(out, "  %s\n", reason);
    if (!json_array_size(ev_list))
        return;
    struct mf_table t = {.ncol = 14};
    mf_table_row(&t, "CLASS", "VERDICT", "TARGETED", "ASSIGNED", "ACTIVE", "REFUSED", "FAILED",
                 "REPORTS", "ACCURACY", "DROP", "UPPER", "P-WORSE", "P50x", "P99x");
    size_t i;
    json_t *e;
    json_array_foreach(ev_list, i, e)
    {
        char b[6][32], acc[32], drop[32], up[32], p[32], p50[32], p99[32];
        mf_table_row(&t, mf_jstr(e, "hw_class"), mf_jstr(e, "verdict"),
                     mf_jint(b[0], 32, e, "targeted"), mf_jint(b[1], 32, e, "assigned"),
                     mf_jint(b[2], 32, e, "active"), mf_jint(b[3], 32, e, "refused"),
                     mf_jint(b[4], 32, e, "failed"), mf_jint(b[5], 32, e, "reporting"),
                     jnum(acc, 32, e, "accuracy", NUM_FIXED4, false),
                     jnum(drop, 32, e, "drop", NUM_SIGNED4, false),
                     jnum(up, 32, e, "drop_upper", NUM_SIGNED4, false),
                     jnum(p, 32, e, "p_worse", NUM_SHORT, false),
                     jnum(p50, 32, e, "p50_ratio", NUM_FIXED2, true),
                     jnum(p99, 32, e, "p99_ratio", NUM_FIXED2, true));
    }
    mf_table_print(out, &t, "  ");
    mf_table_free(&t);
    json_array_foreach(ev_list, i, e)
    {
        const char *why = json_string_value(json_object_get(e, "reason"));
        if (why && *why)
            fprintf(out, "  %s: %s\n", mf_jstr(e, "hw_class"), why);
    }
}

static const char *class_status(const json_t *ro, const char *hw)
{
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(ro, "classes"), i, c)
    {
        if (strcmp(mf_jstr(c, "hw_class"), hw) == 0)
            return mf_jstr(c, "status");
    }
    return "-";
}

/* The whole rollout as people read it. */
static void status__render(FILE *out, const json_t *ro)
{
    char stage[48];
    stage_of(stage, sizeof stage, ro);
    const json_t *plan = json_object_get(ro, "plan");
    const char *reason = json_string_value(json_object_get(ro, "reason"));
    fprintf(out, "rollout %lld: %s %s, %s, stage %s", mf_jll(ro, "id"), mf_jstr(ro, "model"),
            mf_jstr(ro, "version"), mf_jstr(ro, "status"), stage);
    if (reason && *reason)
        fprintf(out, ": %s", reason);
    fputc('\n', out);
    char *cl = classes_line(json_object_get(plan, "classes"), ", ");
    char *sl = stages_line(json_object_get(plan, "stages"));
    fprintf(out, "classes %s", cl);
    const json_t *labels = json_object_get(plan, "labels");
    const char *k;
    json_t *v;
    size_t n = 0;
    json_object_foreach((json_t *)labels, k, v)
    {
        fprintf(out, "%s%s=%s", n++ ? "," : " labelled ", k, json_string_value(v));
    }
    fprintf(out, "; stages %s; on failure %s (%s); started %s by %s", sl, mf_jstr(plan, "on_fail"),
            mf_jstr(plan, "scope"), mf_jstr(ro, "created_at"), mf_jstr(ro, "created_by"));
    if (json_is_string(json_object_get(ro, "finished_at")))
        fprintf(out, "; finished %s", mf_jstr(ro, "finished_at"));
    if (json_is_true(json_object_get(ro, "rollback_pending")))
        fputs("; rollback in progress", out);
    fputc('\n', out);
    free(cl);
    free(sl);

    const json_t *stages = json_object_get(ro, "stages");
    size_t i;
    json_t *s;
    json_array_foreach(stages, i, s) status__stage(out, s, json_array_size(stages));

    struct mf_table t = {.ncol = 9};
    mf_table_row(&t, "CLASS", "STATUS", "TARGETED", "ASSIGNED", "ACTIVE", "REFUSED", "FAILED",
                 "ROLLED-BACK", "ONLINE");
    json_array_foreach(json_object_get(ro, "counts"), i, s)
    {
        char b[7][32];
        mf_table_row(&t, mf_jstr(s, "hw_class"), class_status(ro, mf_jstr(s, "hw_class")),
                     mf_jint(b[0], 32, s, "targeted"), mf_jint(b[1], 32, s, "assigned"),
                     mf_jint(b[2], 32, s, "active"), mf_jint(b[3], 32, s, "refused"),
                     mf_jint(b[4], 32, s, "failed"), mf_jint(b[5], 32, s, "rolled_back"),
                     mf_jint(b[6], 32, s, "online"));
    }
    fputs("\ndevices:\n", out);
    mf_table_print(out, &t, "  ");
    mf_table_free(&t);
}

/* One frame (the text or the JSON) in a string the caller frees. */
static char *status__frame(const json_t *ro, bool json)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        abort();
    if (json)
        mf_remote_print_json(f, ro);
    else
        status__render(f, ro);
    if (fclose(f) != 0)
        abort();
    return text;
}

static volatile sig_atomic_t status__interrupted;

static void status__on_sigint(int sig)
{
    (void)sig;
    status__interrupted = 1;
}

/* Sleeps `seconds` unless SIGINT comes first. */
static void status__sleep(double seconds)
{
    struct timespec ts = {(time_t)seconds, (long)((seconds - floor(seconds)) * 1e9)};
    while (!status__interrupted && nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int rollout_status(int argc, char **argv)
{
    static const char cmd[] = "rollout status";
    enum { O_WATCH = 1100, O_INTERVAL };
    static const struct option opts[] = {MF_REMOTE_LONGOPTS,
                                         {"watch", no_argument, NULL, O_WATCH},
                                         {"interval", required_argument, NULL, O_INTERVAL},
                                         {0}};
    struct mf_remote_opts o = {0};
    struct mf_remote r;
    struct mf_client_resp resp = {0};
    bool watch = false, interval_given = false;
    double interval = 2;
    char *end;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, ":wh", opts, NULL)) != -1) {
        if (mf_remote_opt(c, &o))
            continue;
        switch (c) {
        case 'w':
        case O_WATCH:
            watch = true;
            break;
        case O_INTERVAL:
            errno = 0;
            interval = strtod(optarg, &end);
            if (errno || *end || end == optarg || !(interval >= 0.1 && interval <= 3600))
                return mf_cli_usage_error(cmd,
                                          "--interval '%s' is not a number of seconds in "
                                          "0.1..3600",
                                          optarg);
            interval_given = true;
            break;
        case 'h':
            printf("usage: modelfleet rollout status ID [--watch [--interval S]] [--json]\n\n"
                   "Shows a rollout: status, current stage and why; per stage the gate\n"
                   "evidence of every hardware class (devices targeted, assigned, active,\n"
                   "refused, failed and reporting, the verdict, pooled accuracy, its drop\n"
                   "against the incumbent with the upper confidence bound, the p-value that\n"
                   "the candidate is worse, latency ratios and the reason); then the devices\n"
                   "per class. Stages count from 1. Needs a viewer token.\n\n"
                   "--watch (-w) redraws every --interval seconds (default 2) until the\n"
                   "rollout is no longer running, paused or watching: on a terminal in place,\n"
                   "otherwise each changed view after a blank line. It exits 0 when the\n"
                   "rollout completed, 1 when it failed or was aborted, 130 on Ctrl-C.\n"
                   "--json prints the server's rollout object (with --watch: each "
                   "change).\n" REMOTE_HELP);
            return MF_EXIT_OK;
        default:
            return bad_option(cmd, c, argv);
        }
    }
    if (argc - optind != 1)
        return mf_cli_usage_error(cmd, "expected one rollout ID");
    if (!parse_id(argv[optind]))
        return mf_cli_usage_error(cmd, "'%s' is not a rollout id", argv[optind]);
    if (interval_given && !watch)
        return mf_cli_usage_error(cmd, "--interval needs --watch");
    int rc = mf_remote_open(&r, cmd, &o);
    if (rc != MF_EXIT_OK)
        return rc;
    char *path = mf_xasprintf("/rollouts/%s", argv[optind]);
    struct sigaction sa = {0}, old_sa;
    if (watch) {
        sa.sa_handler = status__on_sigint; /* no SA_RESTART: the sleep wakes up */
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, &old_sa);
    }
    bool tty = isatty(STDOUT_FILENO);
    char *prev = NULL;
    for (;;) {
        if ((rc = mf_remote_get(&r, path, "viewer", &resp)) != MF_EXIT_OK)
            break;
        if (status__interrupted)
            break;
        char *frame = status__frame(resp.body, o.json);
        const char *st = mf_jstr(resp.body, "status");
        bool live = status_live(st);
        if (watch && tty) {
            /* home, clear, then the frame: a terminal shows only the latest */
            char now[16];
            time_t t = time(NULL);
            strftime(now, sizeof now, "%H:%M:%S", localtime(&t));
            printf("\033[H\033[2J%s", frame);
            if (live)
                printf("\nas of %s, every %gs; Ctrl-C to stop\n", now, interval);
        } else if (!prev || strcmp(prev, frame) != 0) {
            printf("%s%s", prev ? "\n" : "", frame);
        }
        fflush(stdout);
        free(prev);
        prev = frame;
        if (!watch) {
            rc = MF_EXIT_OK;
            break;
        }
        if (!live) {
            rc = strcmp(st, "completed") == 0 ? MF_EXIT_OK : MF_EXIT_FAIL;
            break;
        }
        mf_client_resp_free(&resp);
        status__sleep(interval);
        if (status__interrupted)
            break;
    }
    if (watch) {
        if (status__interrupted)
            rc = 130;
        sigaction(SIGINT, &old_sa, NULL);
    }
    free(prev);
    free(path);
    mf_client_resp_free(&resp);
    mf_remote_close(&r);
    return rc;
}

/* ---- rollout list ---- */

static char *list__classes(const json_t *classes)
{
    struct mf_buf b;
    mf_buf_init(&b, SIZE_MAX);
    size_t i;
    json_t *c;
    json_array_foreach(classes, i, c)
    {
        const char *st = mf_jstr(c, "status");
        if (mf_buf_printf(&b, "%s%s", i ? "," : "", mf_jstr(c, "hw_class")) != MF_OK ||
            (strcmp(st, "active") != 0 && mf_buf_printf(&b, "(%s)", st) != MF_OK))
            abort();
    }
    char *out = b.len ? (char *)mf_buf_steal(&b, NULL) : mf_xstrdup("-");
    mf_buf_free(&b);
    return out;
}

/* Whether v is one of the NULL-terminated names. */
static bool one_of(const char *const *names, const char *v)
{
    for (size_t i = 0; names[i]; i++)
        if (strcmp(names[i], v) == 0)
            return true;
    return false;
}

/* Fetches every page of `key` from `path` and prints it: the JSON with
 * --json, "no <key>" when empty, else the table `rows` fills. */
static int list_print(struct mf_remote *r, const char *path, struct mf_buf *query, const char *key,
                      bool json, void (*rows)(struct mf_table *t, json_t *all))
{
    json_t *all = json_array();
    int rc = mf_remote_get_all(r, path, query, NULL, key, "viewer", all);
    if (rc == MF_EXIT_OK && json) {
        json_t *j = json_pack("{s:O, s:n}", key, all, "next");
        mf_remote_print_json(stdout, j);
        json_decref(j);
    } else if (rc == MF_EXIT_OK && !json_array_size(all)) {
        fprintf(stderr, "no %s\n", key);
    } else if (rc == MF_EXIT_OK) {
        struct mf_table t = {0};
        rows(&t, all);
        mf_table_print(stdout, &t, "");
        mf_table_free(&t);
    }
    json_decref(all);
    return rc;
}

static void list__table(struct mf_table *t, json_t *all)
{
    t->ncol = 9;
    mf_table_row(t, "ID", "MODEL", "VERSION", "STATUS", "STAGE", "CLASSES", "BY", "CREATED",
                 "REASON");
    size_t i;
    json_t *ro;
    json_array_foreach(all, i, ro)
    {
        char id[32], stage[48];
        char *cl = list__classes(json_object_get(ro, "classes"));
        stage_of(stage, sizeof stage, ro);
        mf_table_row(t, mf_jint(id, sizeof id, ro, "id"), mf_jstr(ro, "model"),
                     mf_jstr(ro, "version"), mf_jstr(ro, "status"), stage, cl,
                     mf_jstr(ro, "created_by"), mf_jstr(ro, "created_at"), mf_jstr(ro, "reason"));
        free(cl);
    }
}

static void devices__table(struct mf_table *t, json_t *all)
{
    t->ncol = 10;
    mf_table_row(t, "DEVICE", "HW-CLASS", "ONLINE", "BUCKET", "STAGE", "OUTCOME", "FROM", "RUNNING",
                 "ASSIGNED", "ROLLED-BACK");
    size_t i;
    json_t *d;
    json_array_foreach(all, i, d)
    {
        char bucket[32], stage[32] = "-";
        json_t *online = json_object_get(d, "online");
        if (json_is_integer(json_object_get(d, "stage")))
            snprintf(stage, sizeof stage, "%lld", mf_jll(d, "stage") + 1);
        mf_table_row(t, mf_jstr(d, "id"), mf_jstr(d, "hw_class"),
                     json_is_boolean(online) ? (json_is_true(online) ? "yes" : "no") : "-",
                     jnum(bucket, sizeof bucket, d, "bucket", NUM_FIXED4, false), stage,
                     mf_jstr(d, "outcome"), mf_jstr(d, "from_version"), mf_jstr(d, "running"),
                     mf_jstr(d, "assigned_at"), mf_jstr(d, "rolled_back_at"));
    }
}

static int rollout_list(int argc, char **argv)
{
    static const char cmd[] = "rollout list";
    static const char *const statuses[] = {"running", "paused",  "watching", "completed",
                                           "failed",  "aborted", "live",     NULL};
    enum { O_MODEL = 1100, O_STATUS };
    static const struct option opts[] = {MF_REMOTE_LONGOPTS,
                                         {"model", required_argument, NULL, O_MODEL},
                                         {"status", required_argument, NULL, O_STATUS},
                                         {0}};
    struct mf_remote_opts o = {0};
    struct mf_remote r;
    const char *model = NULL, *status = NULL;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        if (mf_remote_opt(c, &o))
            continue;
        switch (c) {
        case O_MODEL:
            model = optarg;
            break;
        case O_STATUS: {
            if (!one_of(statuses, optarg))
                return mf_cli_usage_error(cmd,
                                          "--status '%s': expected running, paused, watching, "
                                          "completed, failed, aborted or live",
                                          optarg);
            status = optarg;
            break;
        }
        case 'h':
            printf("usage: modelfleet rollout list [--model NAME] [--status STATUS|live] [--json]\n"
                   "\n"
                   "Lists rollouts, newest first: id, model, version, status, current stage,\n"
                   "the target classes (a class that stopped shows its status), who started it\n"
                   "and when, and the latest reason. --status live: running, paused or\n"
                   "watching. Needs a viewer token.\n" REMOTE_HELP);
            return MF_EXIT_OK;
        default:
            return bad_option(cmd, c, argv);
        }
    }
    if (optind != argc)
        return mf_cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
    int rc = mf_remote_open(&r, cmd, &o);
    if (rc != MF_EXIT_OK)
        return rc;
    struct mf_buf query;
    mf_buf_init(&query, SIZE_MAX);
    if (model)
        mf_remote_query_add(&query, "model", model);
    if (status)
        mf_remote_query_add(&query, "status", status);
    rc = list_print(&r, "/rollouts", &query, "rollouts", o.json, list__table);
    mf_buf_free(&query);
    mf_remote_close(&r);
    return rc;
}

/* ---- rollout pause | resume | promote | abort ---- */

static int rollout_action(const char *action, int argc, char **argv)
{
    enum { O_ROLLBACK = 1100 };
    static const struct option opts[] = {
        MF_REMOTE_LONGOPTS, {"rollback", no_argument, NULL, O_ROLLBACK}, {0}};
    static const struct {
        const char *name, *help;
    } helps[] = {
        {"pause", "Pauses a running or watching rollout: no device is assigned or judged\n"
                  "until it is resumed."},
        {"resume", "Resumes a paused rollout; the current stage's soak and timeout start over."},
        {"promote", "Moves a running or paused rollout to its next stage now, without waiting\n"
                    "for the gate (after the last stage: to watching)."},
        {"abort", "Stops a live rollout for good. With --rollback every device that took the\n"
                  "candidate is sent back to the version it ran before; without it they stay."},
    };
    struct mf_remote_opts o = {0};
    struct mf_remote r;
    struct mf_client_resp resp = {0};
    char cmd[32];
    bool abort_ = strcmp(action, "abort") == 0, rollback = false;
    int c;
    snprintf(cmd, sizeof cmd, "rollout %s", action);
    optind = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        if (mf_remote_opt(c, &o))
            continue;
        if (c == O_ROLLBACK && abort_) {
            rollback = true;
        } else if (c == 'h') {
            const char *help = "";
            for (size_t i = 0; i < sizeof helps / sizeof helps[0]; i++)
                if (strcmp(helps[i].name, action) == 0)
                    help = helps[i].help;
            printf("usage: modelfleet rollout %s ID%s [--json]\n\n%s\n"
                   "Prints the rollout's new status; one that is not in a state that allows\n"
                   "it is refused (409 conflict, exit 1). Needs an operator token.\n"
                   "--json prints the server's rollout object.\n" REMOTE_HELP,
                   action, abort_ ? " [--rollback]" : "", help);
            return MF_EXIT_OK;
        } else {
            return bad_option(cmd, c, argv);
        }
    }
    if (argc - optind != 1)
        return mf_cli_usage_error(cmd, "expected one rollout ID");
    if (!parse_id(argv[optind]))
        return mf_cli_usage_error(cmd, "'%s' is not a rollout id", argv[optind]);
    int rc = mf_remote_open(&r, cmd, &o);
    if (rc != MF_EXIT_OK)
        return rc;
    char *path = mf_xasprintf("/rollouts/%s/%s", argv[optind], action);
    json_t *body = abort_ ? json_pack("{s:b}", "rollback", rollback) : json_object();
    rc = mf_remote_post(&r, path, body, "operator", &resp);
    if (rc == MF_EXIT_OK) {
        if (o.json) {
            mf_remote_print_json(stdout, resp.body);
        } else {
            char stage[48];
            const char *reason = json_string_value(json_object_get(resp.body, "reason"));
            stage_of(stage, sizeof stage, resp.body);
            printf("rollout %lld: %s, stage %s%s%s\n", mf_jll(resp.body, "id"),
                   mf_jstr(resp.body, "status"), stage, reason && *reason ? ": " : "",
                   reason ? reason : "");
        }
    }
    json_decref(body);
    free(path);
    mf_client_resp_free(&resp);
    mf_remote_close(&r);
    return rc;
}

/* ---- rollout devices ---- */

static int rollout_devices(int argc, char **argv)
{
    static const char cmd[] = "rollout devices";
    static const char *const outcomes[] = {"none",   "assigned",    "active", "refused",
                                           "failed", "rolled_back", NULL};
    enum { O_HW = 1100, O_OUTCOME };
    static const struct option opts[] = {MF_REMOTE_LONGOPTS,
                                         {"hw-class", required_argument, NULL, O_HW},
                                         {"outcome", required_argument, NULL, O_OUTCOME},
                                         {0}};
    struct mf_remote_opts o = {0};
    struct mf_remote r;
    const char *hw = NULL, *outcome = NULL;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        if (mf_remote_opt(c, &o))
            continue;
        switch (c) {
        case O_HW:
            hw = optarg;
            break;
        case O_OUTCOME: {
            if (!one_of(outcomes, optarg))
                return mf_cli_usage_error(cmd,
                                          "--outcome '%s': expected none, assigned, active, "
                                          "refused, failed or rolled_back",
                                          optarg);
            outcome = optarg;
            break;
        }
        case 'h':
            printf("usage: modelfleet rollout devices ID [--hw-class CLASS] [--outcome OUTCOME]"
                   " [--json]\n\n"
                   "Who runs what: every device the rollout assigned, with its class, online,\n"
                   "bucket, the stage that took it (from 1), its outcome (assigned, active,\n"
                   "refused, failed, rolled_back), the version it ran before, the version it\n"
                   "runs now, and when it was assigned and rolled back. Follows the pages to\n"
                   "the end. Needs a viewer token.\n" REMOTE_HELP);
            return MF_EXIT_OK;
        default:
            return bad_option(cmd, c, argv);
        }
    }
    if (argc - optind != 1)
        return mf_cli_usage_error(cmd, "expected one rollout ID");
    if (!parse_id(argv[optind]))
        return mf_cli_usage_error(cmd, "'%s' is not a rollout id", argv[optind]);
    int rc = mf_remote_open(&r, cmd, &o);
    if (rc != MF_EXIT_OK)
        return rc;
    struct mf_buf query;
    mf_buf_init(&query, SIZE_MAX);
    if (hw)
        mf_remote_query_add(&query, "hw_class", hw);
    if (outcome)
        mf_remote_query_add(&query, "outcome", outcome);
    char *path = mf_xasprintf("/rollouts/%s/devices", argv[optind]);
    rc = list_print(&r, path, &query, "devices", o.json, devices__table);
    free(path);
    mf_buf_free(&query);
    mf_remote_close(&r);
    return rc;
}

/* ---- dispatch ---- */

static void rollout__help(FILE *out)
{
    fputs("usage: modelfleet rollout <command> [options]\n\n"
          "commands:\n"
          "  start MODEL VERSION   start a staged rollout (plan from flags and/or --plan)\n"
          "  status ID             stages, gate evidence per class, device counts (--watch)\n"
          "  list                  rollouts, newest first (--model, --status)\n"
          "  pause ID              stop assigning and judging until resumed\n"
          "  resume ID             go on with a paused rollout\n"
          "  promote ID            move to the next stage now\n"
          "  abort ID              stop for good (--rollback: send devices back)\n"
          "  devices ID            who runs what in this rollout\n\n"
          "'modelfleet rollout <command> --help' shows a command's options.\n",
          out);
}

int mf_cli_rollout(int argc, char **argv)
{
    if (argc < 2) {
        rollout__help(stderr);
        return MF_EXIT_USAGE;
    }
    const char *sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0 || strcmp(sub, "help") == 0) {
        rollout__help(stdout);
        return MF_EXIT_OK;
    }
    if (strcmp(sub, "start") == 0)
        return rollout_start(argc - 1, argv + 1);
    if (strcmp(sub, "status") == 0)
        return rollout_status(argc - 1, argv + 1);
    if (strcmp(sub, "list") == 0)
        return rollout_list(argc - 1, argv + 1);
    if (strcmp(sub, "devices") == 0)
        return rollout_devices(argc - 1, argv + 1);
    if (strcmp(sub, "pause") == 0 || strcmp(sub, "resume") == 0 || strcmp(sub, "promote") == 0 ||
        strcmp(sub, "abort") == 0)
        return rollout_action(sub, argc - 1, argv + 1);
    fprintf(stderr, "modelfleet rollout: '%s' is not a rollout command\n", sub);
    rollout__help(stderr);
    return MF_EXIT_USAGE;
}
