/* state.c — the agent's state file: strict format-1 parse, deterministic
 * format, atomic save. Invariant: mf_state_save never writes text that
 * mf_state_parse would refuse (it parses its own output first). */
#include "state.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/install.h"
#include "common/buf.h"
#include "common/fs.h"
#include "common/json.h"
#include "common/mem.h"

#define STATE_DEPTH 6

static const char *const op_kinds[] = {"none", "install", "activate", "rollback"};
static const char *const phases[] = {"download", "extract", "benchmark", "activate"};

/* Counters, by name: adding one is one line here and a field in state.h. */
static const struct {
    const char *name;
    size_t offset;
} counters[] = {
    {"spool_dropped", offsetof(struct mf_state_counters, spool_dropped)},
    {"events_sent", offsetof(struct mf_state_counters, events_sent)},
};
#define N_COUNTERS (sizeof counters / sizeof counters[0])

const char *mf_state_op_kind_name(enum mf_state_op_kind k)
{
    return (unsigned)k < sizeof op_kinds / sizeof op_kinds[0] ? op_kinds[k] : "unknown";
}

const char *mf_state_phase_name(enum mf_state_phase p)
{
    return (unsigned)p < sizeof phases / sizeof phases[0] ? phases[p] : "unknown";
}

/* Defined here, not in install.c, so that what only reads and writes the
 * state file (the daemon) links none of the installer. */
void (*mf_install_crash_hook)(const char *point) = NULL;

static bool st__hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

bool mf_install_slot_ok(const char *slot)
{
    size_t n = strlen(slot);
    if (n < MF_INSTALL_HASH_LEN + 2 || n >= MF_INSTALL_SLOT_MAX)
        return false;
    const char *hash = slot + n - MF_INSTALL_HASH_LEN;
    if (hash[-1] != '-' || !st__hex(hash, MF_INSTALL_HASH_LEN))
        return false;
    size_t vlen = n - MF_INSTALL_HASH_LEN - 1;
    char version[MF_SEMVER_MAX];
    struct mf_semver v;
    if (vlen >= sizeof version)
        return false;
    memcpy(version, slot, vlen);
    version[vlen] = '\0';
    return mf_semver_parse(version, &v, NULL) == MF_OK;
}

struct mf_state *mf_state_new(void)
{
    struct mf_state *s = mf_xcalloc(1, sizeof(struct mf_state));
    s->desired_done = true;
    return s;
}

void mf_state_free(struct mf_state *s)
{
    if (!s)
        return;
    free(s->models);
    free(s);
}

struct mf_state_model *mf_state_model(struct mf_state *s, const char *name, bool create)
{
    size_t i = 0;
    while (i < s->n_models && strcmp(s->models[i].name, name) < 0)
        i++;
    if (i < s->n_models && strcmp(s->models[i].name, name) == 0)
        return &s->models[i];
    if (!create)
        return NULL;
    if (!mf_pkg_name_ok(name))
        abort(); /* programmer error: names come from validated manifests */
    s->models = mf_xreallocarray(s->models, s->n_models + 1, sizeof *s->models);
    memmove(&s->models[i + 1], &s->models[i], (s->n_models - i) * sizeof *s->models);
    s->n_models++;
    memset(&s->models[i], 0, sizeof s->models[i]);
    memcpy(s->models[i].name, name, strlen(name) + 1);
    return &s->models[i];
}

void mf_state_model_remove(struct mf_state *s, const char *name)
{
    struct mf_state_model *m = mf_state_model(s, name, false);
    if (!m)
        return;
    size_t i = (size_t)(m - s->models);
    memmove(&s->models[i], &s->models[i + 1], (s->n_models - i - 1) * sizeof *s->models);
    s->n_models--;
}

/* ---- parse ---- */

static enum mf_err st__bad(struct mf_diag *diag, const char *where, const char *fmt, ...)
    MF_PRINTF(3, 4);
static enum mf_err st__bad(struct mf_diag *diag, const char *where, const char *fmt, ...)
{
    char what[MF_DIAG_WHAT];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return mf_diag_set(diag, MF_ERR_PARSE, where, "%s", what);
}

/* Refuses any key of obj not in allowed (NULL-terminated). */
static enum mf_err st__only(json_t *obj, const char *where, const char *const *allowed,
                            struct mf_diag *diag)
{
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val)
    {
        size_t i = 0;
        while (allowed[i] && strcmp(allowed[i], key) != 0)
            i++;
        if (!allowed[i])
            return st__bad(diag, where, "unknown field \"%.64s\"", key);
    }
    return MF_OK;
}

static bool st__hex64(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f')))
            return false;
    return n == 2 * MF_HASH_BYTES;
}

static bool st__version_ok(const char *s)
{
    struct mf_semver v;
    return strlen(s) < MF_SEMVER_MAX && mf_semver_parse(s, &v, NULL) == MF_OK;
}

enum str_kind { STR_NAME, STR_VERSION, STR_PACKAGE, STR_SLOT, STR_SLOT_OR_EMPTY };

/* Copies the required string field `key` of obj into dst after checking it. */
static enum mf_err st__str(json_t *obj, const char *where, const char *key, enum str_kind kind,
                           char *dst, size_t cap, struct mf_diag *diag)
{
    char w[MF_DIAG_WHERE];
    snprintf(w, sizeof w, "%s%s%s", where, *where ? "." : "", key);
    json_t *v = json_object_get(obj, key);
    if (!v)
        return st__bad(diag, w, "is missing");
    if (!json_is_string(v))
        return st__bad(diag, w, "must be a string");
    const char *s = json_string_value(v);
    bool ok = strlen(s) == json_string_length(v) && strlen(s) < cap;
    const char *want = "";
    switch (kind) {
    case STR_NAME:
        ok = ok && mf_pkg_name_ok(s);
        want = "a name (1-64 of [A-Za-z0-9._-], starting with a letter or digit)";
        break;
    case STR_VERSION:
        ok = ok && st__version_ok(s);
        want = "a semantic version";
        break;
    case STR_PACKAGE:
        ok = ok && st__hex64(s);
        want = "a package id (64 lowercase hex digits)";
        break;
    case STR_SLOT_OR_EMPTY:
        if (ok && !*s)
            break;
        /* fall through */
    case STR_SLOT:
        ok = ok && mf_install_slot_ok(s);
        want = "a slot name (<version>-<16 hex>)";
        break;
    }
    if (!ok)
        return st__bad(diag, w, "must be %s", want);
    memcpy(dst, s, strlen(s) + 1);
    return MF_OK;
}

/* A non-negative integer field; optional ones default to 0. */
static enum mf_err st__uint(json_t *obj, const char *where, const char *key, bool required,
                            uint64_t *dst, struct mf_diag *diag)
{
    char w[MF_DIAG_WHERE];
    snprintf(w, sizeof w, "%s%s%s", where, *where ? "." : "", key);
    json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required)
            return st__bad(diag, w, "is missing");
        *dst = 0;
        return MF_OK;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return st__bad(diag, w, "must be a non-negative integer");
    *dst = (uint64_t)json_integer_value(v);
    return MF_OK;
}

static enum mf_err st__token(json_t *obj, const char *where, const char *key,
                             const char *const *names, size_t n, size_t first, unsigned *dst,
                             struct mf_diag *diag)
{
    char w[MF_DIAG_WHERE];
    snprintf(w, sizeof w, "%s.%s", where, key);
    json_t *v = json_object_get(obj, key);
    if (!v)
        return st__bad(diag, w, "is missing");
    if (json_is_string(v))
        for (size_t i = first; i < n; i++)
            if (strcmp(json_string_value(v), names[i]) == 0) {
                *dst = (unsigned)i;
                return MF_OK;
            }
    char list[128] = "";
    for (size_t i = first; i < n; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i > first ? "|" : "",
                 names[i]);
    return st__bad(diag, w, "must be one of %s", list);
}

static enum mf_err st__version_obj(json_t *v, const char *where, struct mf_state_version *dst,
                                   struct mf_diag *diag)
{
    static const char *const fields[] = {"slot", "package", "version", NULL};
    enum mf_err err;
    if (!json_is_object(v))
        return st__bad(diag, where, "must be an object");
    if ((err = st__only(v, where, fields, diag)) != MF_OK ||
        (err = st__str(v, where, "slot", STR_SLOT, dst->slot, sizeof dst->slot, diag)) != MF_OK ||
        (err = st__str(v, where, "package", STR_PACKAGE, dst->package, sizeof dst->package,
                       diag)) != MF_OK ||
        (err = st__str(v, where, "version", STR_VERSION, dst->version, sizeof dst->version,
                       diag)) != MF_OK)
        return err;
    return MF_OK;
}

static enum mf_err st__models(json_t *arr, struct mf_state *s, struct mf_diag *diag)
{
    static const char *const fields[] = {"name", "current", "previous", NULL};
    enum mf_err err;
    if (!json_is_array(arr))
        return st__bad(diag, "models", "must be an array");
    size_t n = json_array_size(arr);
    if (n > MF_STATE_MODELS_MAX)
        return st__bad(diag, "models", "has %zu entries; at most %d", n, MF_STATE_MODELS_MAX);
    s->models = n ? mf_xcalloc(n, sizeof *s->models) : NULL;
    for (size_t i = 0; i < n; i++) {
        char w[64], w2[80];
        json_t *m = json_array_get(arr, i);
        struct mf_state_model *dst = &s->models[i];
        snprintf(w, sizeof w, "models[%zu]", i);
        if (!json_is_object(m))
            return st__bad(diag, w, "must be an object");
        if ((err = st__only(m, w, fields, diag)) != MF_OK ||
            (err = st__str(m, w, "name", STR_NAME, dst->name, sizeof dst->name, diag)) != MF_OK)
            return err;
        if (i > 0 && strcmp(s->models[i - 1].name, dst->name) >= 0)
            return st__bad(diag, w, "models must be sorted by name, without duplicates");
        s->n_models = i + 1;
        json_t *cur = json_object_get(m, "current"), *prev = json_object_get(m, "previous");
        snprintf(w2, sizeof w2, "%s.current", w);
        if (!cur)
            return st__bad(diag, w2, "is missing");
        if ((err = st__version_obj(cur, w2, &dst->current, diag)) != MF_OK)
            return err;
        snprintf(w2, sizeof w2, "%s.previous", w);
        if (!prev)
            return st__bad(diag, w2, "is missing (null for none)");
        if (!json_is_null(prev) && (err = st__version_obj(prev, w2, &dst->previous, diag)) != MF_OK)
            return err;
    }
    return MF_OK;
}

static enum mf_err st__op(json_t *v, struct mf_state_op *op, struct mf_diag *diag)
{
    static const char *const fields[] = {"kind", "model", "package", "version",
                                         "slot", "phase", "started", NULL};
    enum mf_err err;
    unsigned kind, phase;
    uint64_t started;
    memset(op, 0, sizeof *op);
    if (!v)
        return st__bad(diag, "op", "is missing (null for none)");
    if (json_is_null(v))
        return MF_OK;
    if (!json_is_object(v))
        return st__bad(diag, "op", "must be an object or null");
    if ((err = st__only(v, "op", fields, diag)) != MF_OK ||
        (err = st__token(v, "op", "kind", op_kinds, sizeof op_kinds / sizeof op_kinds[0], 1, &kind,
                         diag)) != MF_OK ||
        (err = st__str(v, "op", "model", STR_NAME, op->model, sizeof op->model, diag)) != MF_OK ||
        (err = st__str(v, "op", "package", STR_PACKAGE, op->package, sizeof op->package, diag)) !=
            MF_OK ||
        (err = st__str(v, "op", "version", STR_VERSION, op->version, sizeof op->version, diag)) !=
            MF_OK ||
        (err = st__token(v, "op", "phase", phases, sizeof phases / sizeof phases[0], 0, &phase,
                         diag)) != MF_OK ||
        (err = st__uint(v, "op", "started", true, &started, diag)) != MF_OK)
        return err;
    if (json_object_get(v, "slot") && (err = st__str(v, "op", "slot", STR_SLOT_OR_EMPTY, op->slot,
                                                     sizeof op->slot, diag)) != MF_OK)
        return err;
    if (started > INT64_MAX)
        return st__bad(diag, "op.started", "is too large");
    op->kind = (enum mf_state_op_kind)kind;
    op->phase = (enum mf_state_phase)phase;
    op->started = (int64_t)started;
    return MF_OK;
}

static enum mf_err st__counters(json_t *v, struct mf_state_counters *c, struct mf_diag *diag)
{
    const char *fields[N_COUNTERS + 1];
    enum mf_err err;
    memset(c, 0, sizeof *c);
    if (!v)
        return MF_OK; /* optional: all zero */
    if (!json_is_object(v))
        return st__bad(diag, "counters", "must be an object");
    for (size_t i = 0; i < N_COUNTERS; i++)
        fields[i] = counters[i].name;
    fields[N_COUNTERS] = NULL;
    if ((err = st__only(v, "counters", fields, diag)) != MF_OK)
        return err;
    for (size_t i = 0; i < N_COUNTERS; i++)
        if ((err = st__uint(v, "counters", counters[i].name, false,
                            (uint64_t *)((char *)c + counters[i].offset), diag)) != MF_OK)
            return err;
    return MF_OK;
}

enum mf_err mf_state_parse(const uint8_t *bytes, size_t len, struct mf_state **out,
                           struct mf_diag *diag)
{
    static const char *const fields[] = {"format", "device", "desired_seq", "desired_done",
                                         "models", "op",     "counters",    NULL};
    json_t *root = NULL;
    struct mf_state *s = NULL;
    enum mf_err err;
    uint64_t format;

    if (len > MF_STATE_MAX) {
        err =
            mf_diag_set(diag, MF_ERR_TOO_LARGE, "", "%zu bytes; the cap is %u", len, MF_STATE_MAX);
        goto out;
    }
    if ((err = mf_json_parse(bytes, len, STATE_DEPTH, &root, diag)) != MF_OK) {
        if (len == 0)
            err = st__bad(diag, "", "the file is empty");
        goto out;
    }
    if (!json_is_object(root)) {
        err = st__bad(diag, "", "must be a JSON object");
        goto out;
    }
    /* The format first, so a newer file is MF_ERR_VERSION, not "unknown field". */
    if ((err = st__uint(root, "", "format", true, &format, diag)) != MF_OK)
        goto out;
    if (format != MF_STATE_FORMAT) {
        err = mf_diag_set(diag, MF_ERR_VERSION, "format",
                          "state file format %llu; this agent reads format %d",
                          (unsigned long long)format, MF_STATE_FORMAT);
        goto out;
    }
    s = mf_state_new();
    if ((err = st__only(root, "", fields, diag)) != MF_OK ||
        (err = st__str(root, "", "device", STR_NAME, s->device, sizeof s->device, diag)) != MF_OK ||
        (err = st__uint(root, "", "desired_seq", true, &s->desired_seq, diag)) != MF_OK)
        goto out;
    json_t *done = json_object_get(root, "desired_done");
    if (done && !json_is_boolean(done)) {
        err = st__bad(diag, "desired_done", "must be true or false");
        goto out;
    }
    s->desired_done = !done || json_is_true(done);
    if (!json_object_get(root, "models")) {
        err = st__bad(diag, "models", "is missing");
        goto out;
    }
    if ((err = st__models(json_object_get(root, "models"), s, diag)) != MF_OK ||
        (err = st__op(json_object_get(root, "op"), &s->op, diag)) != MF_OK ||
        (err = st__counters(json_object_get(root, "counters"), &s->counters, diag)) != MF_OK)
        goto out;
out:
    json_decref(root);
    if (err != MF_OK) {
        mf_state_free(s);
        return err;
    }
    *out = s;
    return MF_OK;
}

/* ---- format ---- */

static json_t *st__version_json(const struct mf_state_version *v)
{
    if (!v->slot[0])
        return json_null();
    return json_pack("{s:s, s:s, s:s}", "slot", v->slot, "package", v->package, "version",
                     v->version);
}

char *mf_state_format(const struct mf_state *s, size_t *len)
{
    json_t *root = json_object(), *models = json_array(), *cnt = json_object();
    json_object_set_new(root, "format", json_integer(MF_STATE_FORMAT));
    json_object_set_new(root, "device", json_string(s->device));
    json_object_set_new(root, "desired_seq", json_integer((json_int_t)s->desired_seq));
    json_object_set_new(root, "desired_done", json_boolean(s->desired_done));
    for (size_t i = 0; i < s->n_models; i++) {
        const struct mf_state_model *m = &s->models[i];
        json_array_append_new(models, json_pack("{s:s, s:o, s:o}", "name", m->name, "current",
                                                st__version_json(&m->current), "previous",
                                                st__version_json(&m->previous)));
    }
    json_object_set_new(root, "models", models);
    if (s->op.kind == MF_STATE_OP_NONE) {
        json_object_set_new(root, "op", json_null());
    } else {
        const struct mf_state_op *op = &s->op;
        json_object_set_new(root, "op",
                            json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I}", "kind",
                                      mf_state_op_kind_name(op->kind), "model", op->model,
                                      "package", op->package, "version", op->version, "slot",
                                      op->slot, "phase", mf_state_phase_name(op->phase), "started",
                                      (json_int_t)op->started));
    }
    for (size_t i = 0; i < N_COUNTERS; i++)
        json_object_set_new(
            cnt, counters[i].name,
            json_integer((json_int_t) *
                         (const uint64_t *)((const char *)&s->counters + counters[i].offset)));
    json_object_set_new(root, "counters", cnt);
    char *text = json_dumps(root, JSON_PRESERVE_ORDER | JSON_INDENT(2));
    json_decref(root);
    if (!text)
        abort(); /* only on allocation failure (strings are valid UTF-8 names) */
    char *withnl = mf_xasprintf("%s\n", text);
    free(text);
    if (len)
        *len = strlen(withnl);
    return withnl;
}

/* ---- files ---- */

enum mf_err mf_state_load(const char *state_dir, struct mf_state **out, struct mf_diag *diag)
{
    char *path = mf_xasprintf("%s/%s", state_dir, MF_STATE_FILE);
    struct mf_buf b = {0};
    enum mf_err err;
    if (access(path, F_OK) != 0 && errno == ENOENT) {
        struct mf_state *s = mf_state_new();
        s->fresh = true;
        *out = s;
        free(path);
        return MF_OK;
    }
    err = mf_fs_read_file(path, MF_STATE_MAX, &b, diag);
    if (err == MF_OK) {
        err = mf_state_parse(b.data, b.len, out, diag);
        if (err != MF_OK)
            mf_diag_prefix(diag, path);
    }
    mf_buf_free(&b);
    free(path);
    return err;
}

enum mf_err mf_state_save(const char *state_dir, const struct mf_state *s, struct mf_diag *diag)
{
    char *path = mf_xasprintf("%s/%s", state_dir, MF_STATE_FILE);
    size_t len;
    char *text = mf_state_format(s, &len);
    struct mf_state *check = NULL;
    struct mf_fs_atomic a = {.fd = -1};
    struct mf_diag why = {0};
    enum mf_err err = mf_state_parse((const uint8_t *)text, len, &check, &why);
    mf_state_free(check);
    if (err != MF_OK) {
        err = mf_diag_set(diag, MF_ERR_USAGE, why.where,
                          "refusing to save a state that would not load: %s", why.what);
        goto out;
    }
    if ((err = mf_fs_atomic_open(&a, path, 0600, diag)) != MF_OK)
        goto out;
    if (mf_fs_write_all(a.fd, text, len) != MF_OK) {
        err = mf_diag_errno(diag, errno, path, "write failed");
        mf_fs_atomic_abort(&a);
        goto out;
    }
    if (mf_install_crash_hook)
        mf_install_crash_hook("state:temp-written");
    err = mf_fs_atomic_commit(&a, diag);
out:
    free(text);
    free(path);
    return err;
}

enum mf_err mf_state_recover(const char *state_dir, struct mf_strlist *removed)
{
    /* mf_fs_atomic_open names its temp files ".<name>.tmp.XXXXXX". */
    static const char prefix[] = "." MF_STATE_FILE ".tmp.";
    enum mf_err err = MF_OK;
    DIR *d = opendir(state_dir);
    if (!d)
        return errno == ENOENT ? MF_OK : MF_ERR_IO;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, prefix, sizeof prefix - 1) != 0)
            continue;
        if (unlinkat(dirfd(d), de->d_name, 0) != 0 && errno != ENOENT) {
            err = MF_ERR_IO;
            continue;
        }
        if (removed)
            mf_strlist_push(removed, de->d_name);
    }
    closedir(d);
    return err;
}
