/* cmd_remote.c — `modelfleet push | models | devices | fleet`: the commands
 * that talk to modelfleet-server's HTTP API (docs/api.md) through mf_client.
 * Server URL and token come from --url/--token, else MODELFLEET_URL /
 * MODELFLEET_TOKEN, else the config file ($XDG_CONFIG_HOME/modelfleet/config,
 * keys `url` and `token`). People get aligned tables, scripts get the server's
 * JSON with --json. The token is never printed. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/client.h"
#include "common/buf.h"
#include "common/clock.h"
#include "common/config.h"
#include "common/mem.h"

#define DEFAULT_URL "http://127.0.0.1:8080"

/* ---- where the server and the token come from ---- */

struct remote_file {
    char *url;
    char *token;
};

#define RF(f) offsetof(struct remote_file, f)
static const struct mf_cfg_key remote_keys[] = {
    {"url", MF_CFG_STR, RF(url), NULL, 0, 0, "server base URL, e.g. http://127.0.0.1:8080"},
    {"token", MF_CFG_STR, RF(token), NULL, 0, 0, "API token (mft_...)"},
    {NULL, 0, 0, NULL, 0, 0, NULL},
};

/* Options every remote command takes. */
struct remote_opts {
    const char *url;   /* --url */
    const char *token; /* --token */
    bool json;
};

/* What was resolved, for messages (never the token itself). */
struct remote {
    struct mf_client client;
    const char *cmd;
    char *config_path;      /* owned; NULL when no home directory is known */
    const char *token_from; /* "--token", "MODELFLEET_TOKEN", the config path, or NULL */
    const char *url_from;
};

enum { OPT_URL = 1000, OPT_TOKEN, OPT_JSON, OPT_HELP };
#define REMOTE_LONGOPTS                                                                            \
    {"url", required_argument, NULL, OPT_URL}, {"token", required_argument, NULL, OPT_TOKEN},      \
        {"json", no_argument, NULL, OPT_JSON},                                                     \
    {                                                                                              \
        "help", no_argument, NULL, 'h'                                                             \
    }

#define REMOTE_HELP                                                                                \
    "\nserver: --url URL, else $MODELFLEET_URL, else 'url = ...' in the config file,\n"            \
    "        else " DEFAULT_URL "\n"                                                               \
    "token:  --token TOKEN, else $MODELFLEET_TOKEN, else 'token = ...' in the config file\n"       \
    "config: $XDG_CONFIG_HOME/modelfleet/config (default ~/.config/modelfleet/config)\n"           \
    "--json prints the server's JSON instead of a table.\n"                                        \
    "exit codes: 0 success, 1 failed (server unreachable or refused), 2 usage error\n"

/* Handles an option common to all remote commands; false if c is not one. */
static bool remote__opt(int c, struct remote_opts *o)
{
    switch (c) {
    case OPT_URL:
        o->url = optarg;
        return true;
    case OPT_TOKEN:
        o->token = optarg;
        return true;
    case OPT_JSON:
        o->json = true;
        return true;
    default:
        return false;
    }
}

/* Parses the shared options of a command that has none of its own; prints
 * `help` for -h/--help. Returns -1 to go on (optind at the first operand),
 * otherwise the exit code. */
static int remote__args(const char *cmd, int argc, char **argv, const char *help,
                        struct remote_opts *o)
{
    static const struct option opts[] = {REMOTE_LONGOPTS, {0}};
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (remote__opt(c, o))
            continue;
        if (c == 'h') {
            fputs(help, stdout);
            return MF_EXIT_OK;
        }
        return mf_cli_usage_error(cmd, "unknown option");
    }
    return -1;
}

static char *remote__config_path(void)
{
    const char *xdg = getenv("XDG_CONFIG_HOME");
    if (xdg && *xdg == '/')
        return mf_xasprintf("%s/modelfleet/config", xdg);
    const char *home = getenv("HOME");
    if (home && *home)
        return mf_xasprintf("%s/.config/modelfleet/config", home);
    return NULL;
}

static const char *remote__env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* One line on stderr: "modelfleet <cmd>: <what>[; <hint>]". */
static int remote__fail(const struct remote *r, const struct mf_diag *diag, const char *hint_fmt,
                        ...) MF_PRINTF(3, 4);
static int remote__fail(const struct remote *r, const struct mf_diag *diag, const char *hint_fmt,
                        ...)
{
    char line[MF_DIAG_STR_MAX];
    fprintf(stderr, "modelfleet %s: %s", r->cmd, mf_diag_str(diag, line, sizeof line));
    if (hint_fmt) {
        va_list ap;
        fputs("; ", stderr);
        va_start(ap, hint_fmt);
        vfprintf(stderr, hint_fmt, ap);
        va_end(ap);
    }
    fputc('\n', stderr);
    return MF_EXIT_FAIL;
}

/* Resolves URL and token (flags > environment > config file) and prepares the
 * client. Returns MF_EXIT_OK or the exit code to return. */
static int remote__open(struct remote *r, const char *cmd, const struct remote_opts *o)
{
    struct remote_file file;
    struct mf_diag diag = {0};
    struct stat st;
    int rc = MF_EXIT_FAIL;
    memset(r, 0, sizeof *r);
    r->cmd = cmd;
    r->config_path = remote__config_path();
    mf_cfg_defaults(remote_keys, &file);
    if (r->config_path && stat(r->config_path, &st) == 0) {
        if (mf_cfg_load(remote_keys, &file, r->config_path, &diag) != MF_OK) {
            rc = mf_cli_fail(cmd, &diag);
            goto out;
        }
    } else if (r->config_path && errno != ENOENT && errno != ENOTDIR) {
        mf_diag_errno(&diag, errno, r->config_path, "cannot read the config file");
        rc = mf_cli_fail(cmd, &diag);
        goto out;
    }
    const char *url = DEFAULT_URL, *token = NULL;
    r->url_from = "the default";
    if (o->url)
        url = o->url, r->url_from = "--url";
    else if (remote__env("MODELFLEET_URL"))
        url = remote__env("MODELFLEET_URL"), r->url_from = "MODELFLEET_URL";
    else if (file.url && *file.url)
        url = file.url, r->url_from = r->config_path;
    if (o->token)
        token = o->token, r->token_from = "--token";
    else if (remote__env("MODELFLEET_TOKEN"))
        token = remote__env("MODELFLEET_TOKEN"), r->token_from = "MODELFLEET_TOKEN";
    else if (file.token && *file.token)
        token = file.token, r->token_from = r->config_path;
    if (token && strpbrk(token, "\r\n")) {
        rc = mf_cli_usage_error(cmd, "the token from %s contains a line break", r->token_from);
        goto out;
    }
    if (mf_client_init(&r->client, url, token, &diag) != MF_OK) {
        rc = diag.err == MF_ERR_USAGE
                 ? mf_cli_usage_error(cmd, "%s (from %s)", diag.what, r->url_from)
                 : mf_cli_fail(cmd, &diag);
        goto out;
    }
    rc = MF_EXIT_OK;
out:
    if (file.token)
        sodium_memzero(file.token, strlen(file.token));
    mf_cfg_free(remote_keys, &file);
    if (rc != MF_EXIT_OK) {
        mf_client_free(&r->client);
        free(r->config_path);
        r->config_path = NULL;
    }
    return rc;
}

static void remote__close(struct remote *r)
{
    mf_client_free(&r->client);
    free(r->config_path);
    r->config_path = NULL;
}

/* Reports a failed request with a hint for the usual causes. */
static int remote__failed(const struct remote *r, const struct mf_client_resp *resp,
                          const struct mf_diag *diag, const char *role)
{
    const char *cfg = r->config_path ? r->config_path : "~/.config/modelfleet/config";
    if (resp->status == 0 && diag->err == MF_ERR_IO)
        return remote__fail(r, diag,
                            "is modelfleet-server running there? (server URL from %s; set it "
                            "with --url, MODELFLEET_URL or 'url = ...' in %s)",
                            r->url_from, cfg);
    if (resp->status == 401 && !r->token_from)
        return remote__fail(r, diag,
                            "no API token given: use --token, MODELFLEET_TOKEN or 'token = ...' "
                            "in %s",
                            cfg);
    if (resp->status == 401)
        return remote__fail(r, diag, "the token from %s is unknown, revoked or expired",
                            r->token_from);
    if (resp->status == 403)
        return remote__fail(r, diag, "this needs a token with role %s (token from %s)", role,
                            r->token_from ? r->token_from : "nowhere");
    return remote__fail(r, diag, NULL);
}

/* GET path; on failure reports and returns nonzero (the exit code). */
static int remote__get(struct remote *r, const char *path, const char *role,
                       struct mf_client_resp *resp)
{
    struct mf_diag diag = {0};
    if (mf_client_get(&r->client, path, resp, &diag) == MF_OK)
        return MF_EXIT_OK;
    int rc = remote__failed(r, resp, &diag, role);
    mf_client_resp_free(resp);
    return rc;
}

static void print_json(const json_t *j)
{
    json_dumpf(j, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(12));
    putchar('\n');
}

/* ---- JSON field helpers: a missing field prints as "-" ---- */

static const char *jstr(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s && *s ? s : "-";
}

static char *jint(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? mf_xasprintf("%lld", (long long)json_integer_value(v))
                              : mf_xstrdup("-");
}

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
    char *out = mf_xasprintf("%s:%s", jstr(pkg, "runtime"), hw);
    free(hw);
    return out;
}

/* ---- aligned tables, kubectl style ---- */

struct table {
    size_t ncol, nrow; /* nrow counts the header */
    char **cell;       /* owned, nrow * ncol */
};

static void table_row(struct table *t, ...)
{
    va_list ap;
    t->cell = mf_xreallocarray(t->cell, (t->nrow + 1) * t->ncol, sizeof *t->cell);
    va_start(ap, t);
    for (size_t i = 0; i < t->ncol; i++) {
        const char *s = va_arg(ap, const char *);
        t->cell[t->nrow * t->ncol + i] = mf_xstrdup(s ? s : "-");
    }
    va_end(ap);
    t->nrow++;
}

/* Display width of UTF-8 text (continuation bytes do not count). */
static size_t text_width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        w += ((unsigned char)*s & 0xC0) != 0x80;
    return w;
}

static void table_print(struct table *t)
{
    size_t *w = mf_xcalloc(t->ncol, sizeof *w);
    for (size_t r = 0; r < t->nrow; r++)
        for (size_t c = 0; c < t->ncol; c++) {
            size_t n = text_width(t->cell[r * t->ncol + c]);
            w[c] = n > w[c] ? n : w[c];
        }
    for (size_t r = 0; r < t->nrow; r++) {
        for (size_t c = 0; c < t->ncol; c++) {
            const char *s = t->cell[r * t->ncol + c];
            fputs(s, stdout);
            if (c + 1 < t->ncol)
                printf("%*s", (int)(w[c] - text_width(s) + 3), "");
        }
        putchar('\n');
    }
    free(w);
}

static void table_free(struct table *t)
{
    for (size_t i = 0; i < t->nrow * t->ncol; i++)
        free(t->cell[i]);
    free(t->cell);
    t->cell = NULL;
    t->nrow = 0;
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
    struct remote_opts o = {0};
    struct remote r;
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
    rc = remote__open(&r, "push", &o);
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
        rc = remote__failed(&r, &resp, &diag, "operator or admin");
        goto out;
    }
    if (o.json) {
        print_json(resp.body);
    } else {
        char *variant = variant_name(resp.body);
        printf("%s %s %s (%s) %s\n",
               resp.status == 201 ? "pushed" : "already stored:", jstr(resp.body, "model"),
               jstr(resp.body, "version"), variant, jstr(resp.body, "id"));
        free(variant);
    }
    rc = MF_EXIT_OK;
out:
    mf_client_resp_free(&resp);
    remote__close(&r);
    return rc;
}

/* ---- models ---- */

static void models__list(const json_t *body)
{
    struct table t = {.ncol = 4};
    table_row(&t, "NAME", "VERSIONS", "LATEST", "UPDATED");
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(body, "models"), i, m)
    {
        char *n = jint(m, "versions");
        table_row(&t, jstr(m, "name"), n, jstr(m, "latest"), jstr(m, "updated_at"));
        free(n);
    }
    if (t.nrow == 1)
        fprintf(stderr, "no models\n");
    else
        table_print(&t);
    table_free(&t);
}

/* One row per variant of every version. */
static void models__one(const json_t *body)
{
    struct table t = {.ncol = 6};
    table_row(&t, "VERSION", "VARIANT", "SIZE", "PUSHED", "BY", "ID");
    size_t i, k;
    json_t *v, *p;
    json_array_foreach(json_object_get(body, "versions"), i, v)
    {
        json_array_foreach(json_object_get(v, "variants"), k, p)
        {
            char *variant = variant_name(p), *size = jsize(p, "size");
            char id[13];
            snprintf(id, sizeof id, "%s", jstr(p, "id"));
            table_row(&t, jstr(v, "version"), variant, size, jstr(v, "pushed_at"),
                      jstr(v, "pushed_by"), id);
            free(variant);
            free(size);
        }
    }
    table_print(&t);
    table_free(&t);
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
    if (ev && mf_buf_printf(&b, " (eval %s, n=%lld)", jstr(ev, "metric"),
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
    printf("%s %s: %zu variant%s\n\n", jstr(body, "name"), jstr(body, "version"), n,
           n == 1 ? "" : "s");
    struct table t = {.ncol = 7};
    table_row(&t, "VARIANT", "SIZE", "PUSHED", "BY", "SERVER-KEY", "PUBLISHER-KEY", "ID");
    json_array_foreach(variants, i, p)
    {
        char *variant = variant_name(p), *size = jsize(p, "size");
        table_row(&t, variant, size, jstr(p, "pushed_at"), jstr(p, "pushed_by"),
                  jstr(p, "server_key"), jstr(p, "publisher_key"), jstr(p, "id"));
        free(variant);
        free(size);
    }
    table_print(&t);
    table_free(&t);
    putchar('\n');
    t.ncol = 2;
    table_row(&t, "VARIANT", "ACCEPTS WHEN");
    json_array_foreach(variants, i, p)
    {
        char *variant = variant_name(p), *acc = accept_line(p);
        table_row(&t, variant, acc);
        free(variant);
        free(acc);
    }
    table_print(&t);
    table_free(&t);
}

int mf_cli_models(int argc, char **argv)
{
    struct remote_opts o = {0};
    struct remote r;
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
    rc = remote__open(&r, "models", &o);
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
    rc = remote__get(&r, path, "viewer", &resp);
    free(path);
    if (rc != MF_EXIT_OK)
        goto out;
    if (o.json)
        print_json(resp.body);
    else if (nargs == 0)
        models__list(resp.body);
    else if (nargs == 1)
        models__one(resp.body);
    else
        models__version(resp.body);
out:
    mf_client_resp_free(&resp);
    remote__close(&r);
    return rc;
}

/* ---- devices ---- */

static void devices__rows(struct table *t, const json_t *devices)
{
    size_t i, k;
    json_t *d, *m;
    json_array_foreach(devices, i, d)
    {
        struct mf_buf models;
        mf_buf_init(&models, SIZE_MAX);
        json_array_foreach(json_object_get(d, "models"), k,
                           m) if (mf_buf_printf(&models, "%s%s@%s", k ? "," : "", jstr(m, "name"),
                                                jstr(m, "version")) != MF_OK) abort();
        json_t *online = json_object_get(d, "online");
        table_row(t, jstr(d, "id"), jstr(d, "hw_class"),
                  json_is_boolean(online) ? (json_is_true(online) ? "yes" : "no") : "-",
                  models.len ? (char *)models.data : "-", jstr(d, "last_seen"));
        mf_buf_free(&models);
    }
}

/* Appends "&key=escaped(value)" (or "?..." for the first). */
static void query_add(struct mf_buf *q, const char *key, const char *value)
{
    char *e = mf_client_escape(value);
    if (mf_buf_printf(q, "%s%s=%s", q->len ? "&" : "?", key, e) != MF_OK)
        abort();
    free(e);
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
    static const struct option opts[] = {REMOTE_LONGOPTS,
                                         {"hw-class", required_argument, NULL, OPT_HW},
                                         {"model", required_argument, NULL, OPT_MODEL},
                                         {"version", required_argument, NULL, OPT_VERSION},
                                         {"online", no_argument, NULL, OPT_ONLINE},
                                         {"offline", no_argument, NULL, OPT_OFFLINE},
                                         {"limit", required_argument, NULL, OPT_LIMIT},
                                         {"after", required_argument, NULL, OPT_AFTER},
                                         {"all", no_argument, NULL, OPT_ALL},
                                         {0}};
    struct remote_opts o = {0};
    struct remote r;
    struct mf_client_resp resp = {0};
    const char *hw = NULL, *model = NULL, *version = NULL, *after = NULL, *online = NULL;
    long limit = 0;
    bool all = false;
    char *end;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (remote__opt(c, &o))
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
    int rc = remote__open(&r, "devices", &o);
    if (rc != MF_EXIT_OK)
        return rc;
    struct mf_buf query;
    mf_buf_init(&query, SIZE_MAX);
    if (hw)
        query_add(&query, "hw_class", hw);
    if (model)
        query_add(&query, "model", model);
    if (version)
        query_add(&query, "version", version);
    if (online)
        query_add(&query, "online", online);
    if (limit) {
        char n[24];
        snprintf(n, sizeof n, "%ld", limit);
        query_add(&query, "limit", n);
    }
    size_t fixed = query.len; /* everything but "after" */
    json_t *devices = json_array();
    char *cursor = after ? mf_xstrdup(after) : NULL;
    struct table t = {.ncol = 5};
    table_row(&t, "ID", "HW-CLASS", "ONLINE", "MODELS", "LAST-SEEN");
    for (;;) {
        query.len = fixed;
        if (query.data)
            query.data[fixed] = '\0';
        if (cursor)
            query_add(&query, "after", cursor);
        char *path = mf_xasprintf("/devices%s", query.len ? (char *)query.data : "");
        rc = remote__get(&r, path, "viewer", &resp);
        free(path);
        if (rc != MF_EXIT_OK)
            goto out;
        json_t *page = json_object_get(resp.body, "devices");
        const char *next = json_string_value(json_object_get(resp.body, "next"));
        if (!json_is_array(page)) {
            fprintf(stderr, "modelfleet devices: the server's answer has no 'devices' list\n");
            rc = MF_EXIT_FAIL;
            goto out;
        }
        if (!all) {
            if (o.json)
                print_json(resp.body);
            else
                devices__rows(&t, page);
            if (next)
                fprintf(stderr, "more devices: use --after %s, or --all\n", next);
            break;
        }
        json_array_extend(devices, page);
        if (!next)
            break;
        if (cursor && strcmp(cursor, next) == 0) {
            fprintf(stderr,
                    "modelfleet devices: the server returned the same page twice "
                    "(next = %s)\n",
                    next);
            rc = MF_EXIT_FAIL;
            goto out;
        }
        free(cursor);
        cursor = mf_xstrdup(next);
        mf_client_resp_free(&resp);
    }
    if (all) {
        if (o.json) {
            json_t *j = json_pack("{s:O, s:n}", "devices", devices, "next");
            print_json(j);
            json_decref(j);
        } else {
            devices__rows(&t, devices);
        }
    }
    if (!o.json) {
        if (t.nrow == 1)
            fprintf(stderr, "no devices\n");
        else
            table_print(&t);
    }
    rc = MF_EXIT_OK;
out:
    table_free(&t);
    free(cursor);
    json_decref(devices);
    mf_buf_free(&query);
    mf_client_resp_free(&resp);
    remote__close(&r);
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
        struct table t = {.ncol = 6};
        table_row(&t, "HW-CLASS", "MODEL", "VERSION", "ONLINE", "OFFLINE", "DEVICES");
        for (i = 0; i < n; i++) {
            char on[24], off[24], all[24];
            snprintf(on, sizeof on, "%lld", v[i].online);
            snprintf(off, sizeof off, "%lld", v[i].offline);
            snprintf(all, sizeof all, "%lld", v[i].online + v[i].offline);
            table_row(&t, v[i].hw, v[i].model ? v[i].model : "(none)", v[i].version, on, off, all);
        }
        putchar('\n');
        table_print(&t);
        table_free(&t);
    }
    free(v);
}

int mf_cli_fleet(int argc, char **argv)
{
    struct remote_opts o = {0};
    struct remote r;
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
    rc = remote__open(&r, "fleet", &o);
    if (rc != MF_EXIT_OK)
        return rc;
    rc = remote__get(&r, "/fleet/summary", "viewer", &resp);
    if (rc == MF_EXIT_OK) {
        if (o.json)
            print_json(resp.body);
        else
            fleet__print(resp.body);
    }
    mf_client_resp_free(&resp);
    remote__close(&r);
    return rc;
}
