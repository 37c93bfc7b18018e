/* remote.c — the server connection, failure hints, tables and JSON field
 * helpers of the remote commands (remote.h). The token read from the config
 * file is wiped once the client holds its copy. */
#include "remote.h"

#include <errno.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "common/config.h"
#include "common/mem.h"

/* ---- where the server and the token come from ---- */

struct remote_file {
    char *url;
    char *token;
};

#define RF(f) offsetof(struct remote_file, f)
static const struct mf_cfg_key remote_keys[] = {
    {"url", MF_CFG_STR, RF(url), NULL, 0, 0, "server base URL, e.g. " MF_REMOTE_DEFAULT_URL},
    {"token", MF_CFG_STR, RF(token), NULL, 0, 0, "API token (mft_...)"},
    {NULL, 0, 0, NULL, 0, 0, NULL},
};

bool mf_remote_opt(int c, struct mf_remote_opts *o)
{
    switch (c) {
    case MF_REMOTE_OPT_URL:
        o->url = optarg;
        return true;
    case MF_REMOTE_OPT_TOKEN:
        o->token = optarg;
        return true;
    case MF_REMOTE_OPT_JSON:
        o->json = true;
        return true;
    default:
        return false;
    }
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

int mf_remote_open(struct mf_remote *r, const char *cmd, const struct mf_remote_opts *o)
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
    const char *url = MF_REMOTE_DEFAULT_URL, *token = NULL;
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
    if (rc != MF_EXIT_OK)
        mf_remote_close(r);
    return rc;
}

void mf_remote_close(struct mf_remote *r)
{
    mf_client_free(&r->client);
    free(r->config_path);
    r->config_path = NULL;
}

/* ---- failures ---- */

/* One line on stderr: "modelfleet <cmd>: <what>[; <hint>]". */
static int remote__fail(const struct mf_remote *r, const struct mf_diag *diag, const char *hint_fmt,
                        ...) MF_PRINTF(3, 4);
static int remote__fail(const struct mf_remote *r, const struct mf_diag *diag, const char *hint_fmt,
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

int mf_remote_failed(const struct mf_remote *r, const struct mf_client_resp *resp,
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

/* ---- requests ---- */

/* The end of mf_remote_get/post: err as an exit code. */
static int remote__done(struct mf_remote *r, enum mf_err err, const struct mf_diag *diag,
                        const char *role, struct mf_client_resp *resp)
{
    if (err == MF_OK)
        return MF_EXIT_OK;
    int rc = mf_remote_failed(r, resp, diag, role);
    mf_client_resp_free(resp);
    return rc;
}

int mf_remote_get(struct mf_remote *r, const char *path, const char *role,
                  struct mf_client_resp *resp)
{
    struct mf_diag diag = {0};
    enum mf_err err = mf_client_get(&r->client, path, resp, &diag);
    return remote__done(r, err, &diag, role, resp);
}

int mf_remote_post(struct mf_remote *r, const char *path, const json_t *body, const char *role,
                   struct mf_client_resp *resp)
{
    struct mf_diag diag = {0};
    enum mf_err err = mf_client_post_json(&r->client, path, body, resp, &diag);
    return remote__done(r, err, &diag, role, resp);
}

void mf_remote_query_add(struct mf_buf *q, const char *key, const char *value)
{
    char *e = mf_client_escape(value);
    if (mf_buf_printf(q, "%s%s=%s", q->len ? "&" : "?", key, e) != MF_OK)
        abort();
    free(e);
}

int mf_remote_get_page(struct mf_remote *r, const char *path, struct mf_buf *query,
                       const char *after, const char *key, const char *role,
                       struct mf_client_resp *resp)
{
    size_t fixed = query->len;
    if (after)
        mf_remote_query_add(query, "after", after);
    char *url = mf_xasprintf("%s%s", path, query->len ? (char *)query->data : "");
    query->len = fixed;
    if (query->data)
        query->data[fixed] = '\0';
    int rc = mf_remote_get(r, url, role, resp);
    free(url);
    if (rc != MF_EXIT_OK)
        return rc;
    if (!json_is_array(json_object_get(resp->body, key))) {
        fprintf(stderr, "modelfleet %s: the server's answer has no '%s' list\n", r->cmd, key);
        mf_client_resp_free(resp);
        return MF_EXIT_FAIL;
    }
    return MF_EXIT_OK;
}

/* The cursor of a page: "next" as text (an id or a string), or NULL. */
static char *remote__next(const json_t *body)
{
    json_t *n = json_object_get(body, "next");
    if (json_is_integer(n))
        return mf_xasprintf("%lld", (long long)json_integer_value(n));
    if (json_is_string(n))
        return mf_xstrdup(json_string_value(n));
    return NULL;
}

int mf_remote_get_all(struct mf_remote *r, const char *path, struct mf_buf *query,
                      const char *after, const char *key, const char *role, json_t *all)
{
    struct mf_client_resp resp = {0};
    char *cursor = after ? mf_xstrdup(after) : NULL;
    int rc;
    for (;;) {
        rc = mf_remote_get_page(r, path, query, cursor, key, role, &resp);
        if (rc != MF_EXIT_OK)
            break;
        json_t *page = json_object_get(resp.body, key);
        size_t got = json_array_size(page);
        json_array_extend(all, page);
        char *next = remote__next(resp.body);
        mf_client_resp_free(&resp);
        if (!next)
            break;
        if (!got || (cursor && strcmp(cursor, next) == 0)) {
            fprintf(stderr, "modelfleet %s: the server's pages do not advance (next = %s)\n",
                    r->cmd, next);
            free(next);
            rc = MF_EXIT_FAIL;
            break;
        }
        free(cursor);
        cursor = next;
    }
    free(cursor);
    return rc;
}

void mf_remote_print_json(FILE *out, const json_t *j)
{
    json_dumpf(j, out, JSON_INDENT(2) | JSON_REAL_PRECISION(12));
    fputc('\n', out);
}

/* ---- JSON fields ---- */

const char *mf_jstr(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s && *s ? s : "-";
}

long long mf_jll(const json_t *o, const char *key)
{
    return (long long)json_integer_value(json_object_get(o, key));
}

const char *mf_jint(char *buf, size_t size, const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v))
        return "-";
    snprintf(buf, size, "%lld", (long long)json_integer_value(v));
    return buf;
}

/* ---- tables ---- */

void mf_table_row(struct mf_table *t, ...)
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
static size_t table__width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        w += ((unsigned char)*s & 0xC0) != 0x80;
    return w;
}

void mf_table_print(FILE *out, const struct mf_table *t, const char *indent)
{
    size_t *w = mf_xcalloc(t->ncol, sizeof *w);
    for (size_t r = 0; r < t->nrow; r++)
        for (size_t c = 0; c < t->ncol; c++) {
            size_t n = table__width(t->cell[r * t->ncol + c]);
            w[c] = n > w[c] ? n : w[c];
        }
    for (size_t r = 0; r < t->nrow; r++) {
        fputs(indent, out);
        for (size_t c = 0; c < t->ncol; c++) {
            const char *s = t->cell[r * t->ncol + c];
            fputs(s, out);
            if (c + 1 < t->ncol)
                fprintf(out, "%*s", (int)(w[c] - table__width(s) + 3), "");
        }
        fputc('\n', out);
    }
    free(w);
}

void mf_table_free(struct mf_table *t)
{
    for (size_t i = 0; i < t->nrow * t->ncol; i++)
        free(t->cell[i]);
    free(t->cell);
    t->cell = NULL;
    t->nrow = 0;
}
