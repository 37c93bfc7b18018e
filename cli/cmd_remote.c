/* cmd_remote.c — `modelfleet push | models | devices | fleet`: the commands
 * that talk to modelfleet-server's HTTP API (docs/api.md) through mf_client;
 * the server, the token and the failure hints are remote.h's. People get
 * aligned tables, scripts get the server's JSON with --json. The token is
 * never printed. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "cli/remote.h"
#include "common/buf.h"
#include "common/clock.h"
#include "common/mem.h"

#define REMOTE_HELP MF_REMOTE_HELP_WHERE MF_REMOTE_HELP_JSON MF_REMOTE_HELP_EXIT

/* Parses the shared options of a command that has none of its own; prints
 * `help` for -h/--help. Returns -1 to go on (optind at the first operand),
 * otherwise the exit code. */
static int remote__args(const char *cmd, int argc, char **argv, const char *help,
                        struct mf_remote_opts *o)
{
    static const struct option opts[] = {MF_REMOTE_LONGOPTS, {0}};
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (mf_remote_opt(c, o))
            continue;
        if (c == 'h') {
            fputs(help, stdout);
            return MF_EXIT_OK;
        }
        return mf_cli_usage_error(cmd, "unknown option");
    }
    return -1;
}

/* ---- JSON fields: a missing one prints as "-" ---- */

static char *human_size(json_int_t n)
{
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)n;
    size_t u = 0;
    while (v >= 1024 && u + 1 < sizeof units / sizeof units[0])
        v /= 1024, u++;
    return u == 0 ? mf_xasprintf("%lld B", (long long)n) : mf_xasprintf("%.1f %s", v, units[u]);
}

static char *jsize(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? human_size(json_integer_value(v)) : mf_xstrdup("-");
}

/* "a,b,c" from an array of strings. */
static char *jjoin(const json_t *arr, const char *sep)
{
    struct mf_buf b;
    mf_buf_init(&b, SIZE_MAX);
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) if (json_is_string(v) &&
                                      (mf_buf_append_str(&b, i ? sep : "") != MF_OK ||
                                       mf_buf_append_str(&b, json_string_value(v)) != MF_OK))
        abort();
    char *s = b.len ? (char *)mf_buf_steal(&b, NULL) : mf_xstrdup("-");
    mf_buf_free(&b);
    return s;
}

/* "onnx:rpi4,x86-cpu" from a package or variant object. */
static char *variant_name(const json_t *pkg)
{
    const char *v = json_string_value(json_object_get(pkg, "variant"));
    if (v)
        return mf_xstrdup(v);
    char *hw = jjoin(json_object_get(pkg, "hardware"), ",");
    char *out = mf_xasprintf("%s:%s", mf_jstr(pkg, "runtime"), hw);
    free(hw);
    return out;
}

/* ---- push ---- */

struct bar {
    const char *name;
    int64_t start_ns, last_ns;
    bool shown, uploaded;
};

static int push__progress(void *arg, uint64_t sent, uint64_t total)
{
    struct bar *b = arg;
    int64_t now = mf_clock_mono_ns();
    if (!b->start_ns)
        b->start_ns = now;
    if (total == 0 || b->uploaded || (sent < total && now - b->last_ns < 100000000))
        return 0;
    if (sent == 0 && !b->shown)
        return 0;
    b->last_ns = now;
    b->shown = true;
    b->uploaded = sent >= total;
    enum { WIDTH = 30 };
    int fill = (int)((double)sent / (double)total * WIDTH);
    char bar[WIDTH + 1];
    for (int i = 0; i < WIDTH; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[WIDTH] = '\0';
    double secs = (double)(now - b->start_ns) / 1e9;
    double rate = secs > 0 ? (double)sent / secs / (1 << 20) : 0;
    fprintf(stderr, "\r%s [%s] %3d%% %8.1f/%.1f MiB %7.1f MiB/s%s", b->name, bar,
            (int)((double)sent * 100 / (double)total), (double)sent / (1 << 20),
            (double)total / (1 << 20), rate, b->uploaded ? "  verifying..." : "");
    return 0;
}

int mf_cli_push(int argc, char **argv)
{
    struct mf_remote_opts o = {0};
    struct mf_remote r;
    struct mf_client_resp resp = {0};
    struct mf_diag diag = {0};
    int rc =
        remote__args("push", argc, argv,
                     "usage: modelfleet push [--json] [--url URL] [--token TOKEN] PKG\n\n"
                     "Uploads PKG to the server, which verifies it, signs it with its key and\n"
                     "stores it (needs an operator or admin token). Prints\n"
                     "  pushed MODEL VERSION (RUNTIME:HARDWARE) ID\n"
                     "or 'already stored: ...' when these exact bytes were pushed before.\n"
                     "A progress bar goes to stderr when stderr is a terminal.\n" REMOTE_HELP,
                     &o);
    if (rc >= 0)
        return rc;
    if (optind != argc - 1)
        return mf_cli_usage_error("push", "expected one package");
    const char *path = argv[optind];
    /* The file first: no point connecting for a package that is not there. */
    struct stat st;
    if (access(path, R_OK) != 0 || stat(path, &st) != 0) {
        mf_diag_errno(&diag, errno, path, "cannot read");
        return mf_cli_fail("push", &diag);
    }
    if (!S_ISREG(st.st_mode)) {
        mf_diag_set(&diag, MF_ERR_IO, path, "not a regular file");
        return mf_cli_fail("push", &diag);
    }
    rc = mf_remote_open(&r, "push", &o);
    if (rc != MF_EXIT_OK)
        return rc;
    const char *base = strrchr(path, '/');
    struct bar bar = {.name = base ? base + 1 : path};
    bool tty = isatty(STDERR_FILENO);
    enum mf_err err = mf_client_post_file(&r.client, "/packages", path, tty ? push__progress : NULL,
                                          &bar, &resp, &diag);
    if (bar.shown)
        fputc('\n', stderr);
    if (err != MF_OK && resp.status == 0 && diag.where[0]) {
        rc = mf_cli_fail("push", &diag); /* the file, not the server */
        goto out;
    }
    if (err != MF_OK) {
        rc = mf_remote_failed(&r, &resp, &diag, "operator or admin");
        goto out;
    }
    if (o.json) {
        mf_remote_print_json(stdout, resp.body);
    } else {
        char *variant = variant_name(resp.body);
        printf("%s %s %s (%s) %s\n",
               resp.status == 201 ? "pushed" : "already stored:", mf_jstr(resp.body, "model"),
               mf_jstr(resp.body, "version"), variant, mf_jstr(resp.body, "id"));
        free(variant);
    }
    rc = MF_EXIT_OK;
out:
    mf_client_resp_free(&resp);
    mf_remote_close(&r);
    return rc;
}

/* ---- models ---- */

static void models__list(const json_t *body)
{
    struct mf_table t = {.ncol = 4};
    mf_table_row(&t, "NAME", "VERSIONS", "LATEST", "UPDATED");
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(body, "models"), i, m)
    {
        char n[32];
        mf_table_row(&t, mf_jstr(m, "name"), mf_jint(n, sizeof n, m, "versions"),
                     mf_jstr(m, "latest"), mf_jstr(m, "updated_at"));
    }
    if (t.nrow == 1)
        fprintf(stderr, "no models\n");
    else
        mf_table_print(stdout, &t, "");
    mf_table_free(&t);
}

/* One row per variant of every version. */
static void models__one(const json_t *body)
{
    struct mf_table t = {.ncol = 6};
    mf_table_row(&t, "VERSION", "VARIANT", "SIZE", "PUSHED", "BY", "ID");
    size_t i, k;
    json_t *v, *p;
    json_array_foreach(json_object_get(body, "versions"), i, v)
    {
        json_array_foreach(json_object_get(v, "variants"), k, p)
        {
            char *variant = variant_name(p), *size = jsize(p, "size");
            char id[13];
            snprintf(id, sizeof id, "%s", mf_jstr(p, "id"));
            mf_table_row(&t, mf_jstr(v, "version"), variant, size, mf_jstr(v, "pushed_at"),
                         mf_jstr(v, "pushed_by"), id);
            free(variant);
            free(size);
        }
    }
    mf_table_print(stdout, &t, "");
    mf_table_free(&t);
}

static char *accept_line(const json_t *p)
{
    json_t *th = json_object_get(p, "thresholds"), *ev = json_object_get(p, "eval");
    struct mf_buf b;
    mf_buf_init(&b, SIZE_MAX);
    if (mf_buf_printf(&b, "accuracy >= %.4g, drop <= %.4g",
                      json_number_value(json_object_get(th, "min_accuracy")),
                      json_number_value(json_object_get(th, "max_accuracy_drop"))) != MF_OK)
        abort();
    double p99 = json_number_value(json_object_get(th, "latency_p99_ms"));
    json_int_t mem = json_integer_value(json_object_get(th, "memory_bytes"));
    if (p99 > 0 && mf_buf_printf(&b, ", p99 <= %.4g ms", p99) != MF_OK)
        abort();
    if (mem > 0) {
        char *s = human_size(mem);
        if (mf_buf_printf(&b, ", memory <= %s", s) != MF_OK)
            abort();
        free(s);
    }
    if (ev && mf_buf_printf(&b, " (eval %s, n=%lld)", mf_jstr(ev, "metric"),
                            (long long)json_integer_value(json_object_get(ev, "n"))) != MF_OK)
        abort();
    char *s = (char *)mf_buf_steal(&b, NULL);
    mf_buf_free(&b);
    return s;
}

static void models__version(const json_t *body)
{
    json_t *variants = json_object_get(body, "variants");
    size_t n = json_array_size(variants), i;
    json_t *p;
    printf("%s %s: %zu variant%s\n\n", mf_jstr(body, "name"), mf_jstr(body, "version"), n,
           n == 1 ? "" : "s");
    struct mf_table t = {.ncol = 7};
    mf_table_row(&t, "VARIANT", "SIZE", "PUSHED", "BY", "SERVER-KEY", "PUBLISHER-KEY", "ID");
    json_array_foreach(variants, i, p)
    {
        char *variant = variant_name(p), *size = jsize(p, "size");
        mf_table_row(&t, variant, size, mf_jstr(p, "pushed_at"), mf_jstr(p, "pushed_by"),
                     mf_jstr(p, "server_key"), mf_jstr(p, "publisher_key"), mf_jstr(p, "id"));
        free(variant);
        free(size);
    }
    mf_table_print(stdout, &t, "");
    mf_table_free(&t);
    putchar('\n');
    t.ncol = 2;
    mf_table_row(&t, "VARIANT", "ACCEPTS WHEN");
    json_array_foreach(variants, i, p)
    {
        char *variant = variant_name(p), *acc = accept_line(p);
        mf_table_row(&t, variant, acc);
        free(variant);
        free(acc);
    }
    mf_table_print(stdout, &t, "");
    mf_table_free(&t);
}

int mf_cli_models(int argc, char **argv)
{
    struct mf_remote_opts o = {0};
    struct mf_remote r;
    struct mf_client_resp resp = {0};
    int rc = remote__args(
        "models", argc, argv,
        "usage: modelfleet models [--json] [--url URL] [--token TOKEN] [NAME [VERSION]]\n"
        "\n"
        "Without NAME: every model with its number of versions and the latest one.\n"
        "With NAME: each version and its variants (one package per runtime and\n"
        "hardware classes). With NAME VERSION: the variants in full, with their\n"
        "ids, keys and acceptance thresholds. Needs a viewer token.\n" REMOTE_HELP,
        &o);
    if (rc >= 0)
        return rc;
    int nargs = argc - optind;
    if (nargs > 2)
        return mf_cli_usage_error("models", "expected at most NAME and VERSION");
    rc = mf_remote_open(&r, "models", &o);
    if (rc != MF_EXIT_OK)
        return rc;
    char *path;
    if (nargs == 0) {
        path = mf_xstrdup("/models");
    } else {
        char *name = mf_client_escape(argv[optind]);
        if (nargs == 1) {
            path = mf_xasprintf("/models/%s", name);
        } else {
            char *ver = mf_client_escape(argv[optind + 1]);
            path = mf_xasprintf("/models/%s/versions/%s", name, ver);
            free(ver);
        }
        free(name);
    }
    rc = mf_remote_get(&r, path, "viewer", &resp);
    free(path);
    if (rc != MF_EXIT_OK)
        goto out;
    if (o.json)
        mf_remote_print_json(stdout, resp.body);
    else if (nargs == 0)
        models__list(resp.body);
    else if (nargs == 1)
        models__one(resp.body);
    else
        models__version(resp.body);
out:
    mf_client_resp_free(&resp);
    mf_remote_close(&r);
    return rc;
}

/* ---- devices ---- */

static void devices__rows(struct mf_table *t, const json_t *devices)
{
    size_t i, k;
    json_t *d, *m;
    json_array_foreach(devices, i, d)
    {
        struct mf_buf models;
        mf_buf_init(&models, SIZE_MAX);
        json_array_foreach(json_object_get(d, "models"), k,
                           m) if (mf_buf_printf(&models, "%s%s@%s", k ? "," : "",
                                                mf_jstr(m, "name"), mf_jstr(m, "version")) != MF_OK)
            abort();
        json_t *online = json_object_get(d, "online");
        mf_table_row(t, mf_jstr(d, "id"), mf_jstr(d, "hw_class"),
                     json_is_boolean(online) ? (json_is_true(online) ? "yes" : "no") : "-",
                     models.len ? (char *)models.data : "-", mf_jstr(d, "last_seen"));
        mf_buf_free(&models);
    }
}

int mf_cli_devices(int argc, char **argv)
{
    enum {
        OPT_HW = 1100,
        OPT_MODEL,
        OPT_VERSION,
        OPT_ONLINE,
        OPT_OFFLINE,
        OPT_LIMIT,
        OPT_AFTER,
        OPT_ALL
    };
    static const struct option opts[] = {MF_REMOTE_LONGOPTS,
                                         {"hw-class", required_argument, NULL, OPT_HW},
                                         {"model", required_argument, NULL, OPT_MODEL},
                                         {"version", required_argument, NULL, OPT_VERSION},
                                         {"online", no_argument, NULL, OPT_ONLINE},
                                         {"offline", no_argument, NULL, OPT_OFFLINE},
                                         {"limit", required_argument, NULL, OPT_LIMIT},
                                         {"after", required_argument, NULL, OPT_AFTER},
                                         {"all", no_argument, NULL, OPT_ALL},
                                         {0}};
    struct mf_remote_opts o = {0};
    struct mf_remote r;
    struct mf_client_resp resp = {0};
    const char *hw = NULL, *model = NULL, *version = NULL, *after = NULL, *online = NULL;
    long limit = 0;
    bool all = false;
    char *end;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (mf_remote_opt(c, &o))
            continue;
        switch (c) {
        case OPT_HW:
            hw = optarg;
            break;
        case OPT_MODEL:
            model = optarg;
            break;
        case OPT_VERSION:
            version = optarg;
            break;
        case OPT_ONLINE:
        case OPT_OFFLINE:
            if (online)
                return mf_cli_usage_error("devices", "give at most one of --online, --offline");
            online = c == OPT_ONLINE ? "true" : "false";
            break;
        case OPT_LIMIT:
            errno = 0;
            limit = strtol(optarg, &end, 10);
            if (errno || *end || end == optarg || limit < 1 || limit > 1000)
                return mf_cli_usage_error("devices", "--limit '%s' is not a number in 1..1000",
                                          optarg);
            break;
        case OPT_AFTER:
            after = optarg;
            break;
        case OPT_ALL:
            all = true;
            break;
        case 'h':
            printf("usage: modelfleet devices [--hw-class CLASS] [--model NAME [--version V]]\n"
                   "                          [--online | --offline] [--limit N] [--after ID]\n"
                   "                          [--all] [--json] [--url URL] [--token TOKEN]\n\n"
                   "Lists enrolled devices ordered by id: hardware class, online, the models\n"
                   "each runs (name@version) and when it was last seen. One page (--limit,\n"
                   "default 100, at most 1000) starting after --after ID; --all follows the\n"
                   "pages to the end (with --json: one object holding every device).\n"
                   "Needs a viewer token.\n" REMOTE_HELP);
            return MF_EXIT_OK;
        default:
            return mf_cli_usage_error("devices", "unknown option");
        }
    }
    if (optind != argc)
        return mf_cli_usage_error("devices", "unexpected argument '%s'", argv[optind]);
    if (version && !model)
        return mf_cli_usage_error("devices", "--version needs --model");
    int rc = mf_remote_open(&r, "devices", &o);
    if (rc != MF_EXIT_OK)
        return rc;
    struct mf_buf query;
    mf_buf_init(&query, SIZE_MAX);
    if (hw)
        mf_remote_query_add(&query, "hw_class", hw);
    if (model)
        mf_remote_query_add(&query, "model", model);
    if (version)
        mf_remote_query_add(&query, "version", version);
    if (online)
        mf_remote_query_add(&query, "online", online);
    if (limit) {
        char n[24];
        snprintf(n, sizeof n, "%ld", limit);
        mf_remote_query_add(&query, "limit", n);
    }
    struct mf_table t = {.ncol = 5};
    mf_table_row(&t, "ID", "HW-CLASS", "ONLINE", "MODELS", "LAST-SEEN");
    if (all) {
        json_t *devices = json_array();
        rc = mf_remote_get_all(&r, "/devices", &query, after, "devices", "viewer", devices);
        if (rc == MF_EXIT_OK && o.json) {
            json_t *j = json_pack("{s:O, s:n}", "devices", devices, "next");
            mf_remote_print_json(stdout, j);
            json_decref(j);
        } else if (rc == MF_EXIT_OK) {
            devices__rows(&t, devices);
        }
        json_decref(devices);
    } else {
        rc = mf_remote_get_page(&r, "/devices", &query, after, "devices", "viewer", &resp);
        const char *next = json_string_value(json_object_get(resp.body, "next"));
        if (rc == MF_EXIT_OK && o.json)
            mf_remote_print_json(stdout, resp.body);
        else if (rc == MF_EXIT_OK)
            devices__rows(&t, json_object_get(resp.body, "devices"));
        if (rc == MF_EXIT_OK && next)
            fprintf(stderr, "more devices: use --after %s, or --all\n", next);
    }
    if (rc == MF_EXIT_OK && !o.json) {
        if (t.nrow == 1)
            fprintf(stderr, "no devices\n");
        else
            mf_table_print(stdout, &t, "");
    }
    mf_table_free(&t);
    mf_buf_free(&query);
    mf_client_resp_free(&resp);
    mf_remote_close(&r);
    return rc;
}

/* ---- fleet ---- */

struct group {
    const char *hw, *model, *version; /* borrowed from the response */
    long long online, offline;
};

static int str_null_last(const char *a, const char *b)
{
    if (!a || !b)
        return (a == NULL) - (b == NULL);
    return strcmp(a, b);
}

static int group_cmp(const void *pa, const void *pb)
{
    const struct group *a = pa, *b = pb;
    int d = str_null_last(a->hw, b->hw);
    if (!d)
        d = str_null_last(a->model, b->model);
    if (!d)
        d = str_null_last(a->version, b->version);
    return d;
}

static void fleet__print(const json_t *body)
{
    json_int_t total = json_integer_value(json_object_get(body, "devices"));
    json_int_t online = json_integer_value(json_object_get(body, "online"));
    printf("devices  %lld\nonline   %lld", (long long)total, (long long)online);
    if (total > 0)
        printf(" (%.1f%%)", 100.0 * (double)online / (double)total);
    printf("\noffline  %lld\n", (long long)(total - online));
    json_t *groups = json_object_get(body, "groups"), *g;
    struct group *v = mf_xcalloc(json_array_size(groups) + 1, sizeof *v);
    size_t n = 0, i;
    /* One row per hw class x model x version; the server splits online/offline. */
    json_array_foreach(groups, i, g)
    {
        struct group key = {json_string_value(json_object_get(g, "hw_class")),
                            json_string_value(json_object_get(g, "model")),
                            json_string_value(json_object_get(g, "version")), 0, 0};
        size_t k;
        for (k = 0; k < n && group_cmp(&v[k], &key) != 0; k++)
            ;
        if (k == n)
            v[n++] = key;
        long long cnt = (long long)json_integer_value(json_object_get(g, "devices"));
        if (json_is_true(json_object_get(g, "online")))
            v[k].online += cnt;
        else
            v[k].offline += cnt;
    }
    qsort(v, n, sizeof *v, group_cmp);
    if (n) {
        struct mf_table t = {.ncol = 6};
        mf_table_row(&t, "HW-CLASS", "MODEL", "VERSION", "ONLINE", "OFFLINE", "DEVICES");
        for (i = 0; i < n; i++) {
            char on[24], off[24], all[24];
            snprintf(on, sizeof on, "%lld", v[i].online);
            snprintf(off, sizeof off, "%lld", v[i].offline);
            snprintf(all, sizeof all, "%lld", v[i].online + v[i].offline);
            mf_table_row(&t, v[i].hw, v[i].model ? v[i].model : "(none)", v[i].version, on, off,
                         all);
        }
        putchar('\n');
        mf_table_print(stdout, &t, "");
        mf_table_free(&t);
    }
    free(v);
}

int mf_cli_fleet(int argc, char **argv)
{
    struct mf_remote_opts o = {0};
    struct mf_remote r;
    struct mf_client_resp resp = {0};
    int rc =
        remote__args("fleet", argc, argv,
                     "usage: modelfleet fleet [--json] [--url URL] [--token TOKEN]\n\n"
                     "The fleet at a glance: how many devices, how many online, and a table of\n"
                     "hardware class x model x version with online and offline counts (a device\n"
                     "running two models counts in two rows; '(none)' runs no model).\n"
                     "Needs a viewer token.\n" REMOTE_HELP,
                     &o);
    if (rc >= 0)
        return rc;
    if (optind != argc)
        return mf_cli_usage_error("fleet", "unexpected argument '%s'", argv[optind]);
    rc = mf_remote_open(&r, "fleet", &o);
    if (rc != MF_EXIT_OK)
        return rc;
    rc = mf_remote_get(&r, "/fleet/summary", "viewer", &resp);
    if (rc == MF_EXIT_OK) {
        if (o.json)
            mf_remote_print_json(stdout, resp.body);
        else
            fleet__print(resp.body);
    }
    mf_client_resp_free(&resp);
    mf_remote_close(&r);
    return rc;
}
