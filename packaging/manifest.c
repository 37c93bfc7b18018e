/* manifest.c — manifest.json parse/validate/format. Every field is checked for
 * type and range here so that no later stage handles an unvalidated value. */
#include "manifest.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/encode.h"
#include "common/mem.h"

/* Largest integer a JSON number holds exactly (2^53). */
#define MANIFEST_INT_MAX ((json_int_t)1 << 53)

bool mf_pkg_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > MF_NAME_MAX || !isalnum((unsigned char)name[0]))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!isalnum(c) && c != '.' && c != '_' && c != '-')
            return false;
    }
    return true;
}

enum mf_err mf_pkg_path_check(const char *path, const char **why)
{
    size_t n = strlen(path);
    const char *reason = NULL;
    if (n == 0)
        reason = "is empty";
    else if (path[0] == '/')
        reason = "is an absolute path";
    else if (n > MF_PATH_MAX)
        reason = "is longer than 255 bytes";
    else if (strcmp(path, "manifest.json") == 0 || strcmp(path, "manifest.sig") == 0)
        reason = "is a reserved name";
    for (const char *c = path; !reason && *c;) {
        size_t len = strcspn(c, "/");
        if (len == 2 && c[0] == '.' && c[1] == '.')
            reason = "has a '..' component";
        else if (len == 0 || (len == 1 && c[0] == '.'))
            reason = "has an empty or '.' component";
        for (size_t i = 0; !reason && i < len; i++) {
            unsigned char ch = (unsigned char)c[i];
            if (!isalnum(ch) && ch != '.' && ch != '_' && ch != '-')
                reason = "has a character outside [A-Za-z0-9._-/]";
        }
        c += len;
        if (*c == '/') {
            c++;
            if (!*c && !reason)
                reason = "has an empty or '.' component";
        }
    }
    if (why)
        *why = reason;
    return reason ? MF_ERR_UNSAFE_PATH : MF_OK;
}

/* ---- parsing ---- */

struct mp {
    struct mf_diag *diag;
    bool strict; /* reject unknown fields (format minor <= ours) */
};

static const char *mp__type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "unknown";
}

static enum mf_err mp__type(struct mp *p, const char *path, const json_t *v, const char *want)
{
    return mf_diag_set(p->diag, MF_ERR_SCHEMA, path, "expected %s, got %s", want,
                       v ? mp__type_name(v) : "nothing (the field is missing)");
}

/* Unknown keys are an error in strict mode. `known` ends with NULL. */
static enum mf_err mp__keys(struct mp *p, const char *path, json_t *obj, const char *const *known)
{
    const char *key;
    json_t *v;
    if (!p->strict)
        return MF_OK;
    json_object_foreach(obj, key, v)
    {
        bool ok = false;
        for (const char *const *k = known; *k && !ok; k++)
            ok = strcmp(*k, key) == 0;
        if (!ok)
            return mf_diag_set(p->diag, MF_ERR_SCHEMA, path[0] ? path : NULL,
                               "unknown field '%s' in format %d.%d", key, MF_MANIFEST_MAJOR,
                               MF_MANIFEST_MINOR);
    }
    return MF_OK;
}

static enum mf_err mp__str(struct mp *p, json_t *obj, const char *prefix, const char *key,
                           char **out)
{
    char path[128];
    snprintf(path, sizeof path, "%s%s", prefix, key);
    json_t *v = json_object_get(obj, key);
    if (!json_is_string(v))
        return mp__type(p, path, v, "a string");
    *out = mf_xstrdup(json_string_value(v)); /* jansson refuses \u0000 without JSON_ALLOW_NUL */
    return MF_OK;
}

/* Non-negative integer up to 2^53; `optional` leaves *out untouched if absent. */
static enum mf_err mp__uint(struct mp *p, json_t *obj, const char *prefix, const char *key,
                            bool optional, uint64_t *out)
{
    char path[128];
    snprintf(path, sizeof path, "%s%s", prefix, key);
    json_t *v = json_object_get(obj, key);
    if (!v && optional)
        return MF_OK;
    if (!json_is_integer(v))
        return mp__type(p, path, v, "an integer");
    json_int_t i = json_integer_value(v);
    if (i < 0 || i > MANIFEST_INT_MAX)
        return mf_diag_set(p->diag, MF_ERR_SCHEMA, path, "%lld is out of range", (long long)i);
    *out = (uint64_t)i;
    return MF_OK;
}

static enum mf_err mp__num(struct mp *p, json_t *obj, const char *prefix, const char *key,
                           bool optional, double lo, double hi, double *out)
{
    char path[128];
    snprintf(path, sizeof path, "%s%s", prefix, key);
    json_t *v = json_object_get(obj, key);
    if (!v && optional)
        return MF_OK;
    if (!json_is_number(v))
        return mp__type(p, path, v, "a number");
    double d = json_number_value(v);
    if (!isfinite(d) || d < lo || d > hi)
        return mf_diag_set(p->diag, MF_ERR_SCHEMA, path, "%g is outside [%g, %g]", d, lo, hi);
    *out = d;
    return MF_OK;
}

static enum mf_err mp__obj(struct mp *p, json_t *root, const char *key, json_t **out)
{
    json_t *v = json_object_get(root, key);
    if (!json_is_object(v))
        return mp__type(p, key, v, "an object");
    *out = v;
    return MF_OK;
}

static enum mf_err mp__name(struct mp *p, const char *path, const char *s)
{
    if (!mf_pkg_name_ok(s))
        return mf_diag_set(p->diag, MF_ERR_SCHEMA, path,
                           "'%s' is not a valid name (1-64 of [A-Za-z0-9._-], starting with a "
                           "letter or digit)",
                           s);
    return MF_OK;
}

/* A decimal number without sign, spaces or leading zeros, at most 9 digits. */
static bool mp__decimal(const char **p, unsigned *out)
{
    const char *s = *p;
    unsigned v = 0;
    int n = 0;
    if (!isdigit((unsigned char)*s) || (s[0] == '0' && isdigit((unsigned char)s[1])))
        return false;
    for (; isdigit((unsigned char)*s) && n < 9; s++, n++)
        v = v * 10 + (unsigned)(*s - '0');
    if (isdigit((unsigned char)*s))
        return false;
    *p = s;
    *out = v;
    return true;
}

static enum mf_err mp__format(struct mp *p, json_t *root, struct mf_manifest *m)
{
    json_t *v = json_object_get(root, "format_version");
    unsigned major, minor;
    if (!json_is_string(v))
        return mp__type(p, "format_version", v, "a string such as \"1.0\"");
    const char *s = json_string_value(v), *c = s;
    if (!mp__decimal(&c, &major) || *c++ != '.' || !mp__decimal(&c, &minor) || *c)
        return mf_diag_set(p->diag, MF_ERR_SCHEMA, "format_version", "'%s' is not MAJOR.MINOR", s);
    if (major != MF_MANIFEST_MAJOR)
        return mf_diag_set(p->diag, MF_ERR_VERSION, "format_version",
                           "manifest format %u.%u is not supported by this modelfleet (it reads "
                           "%d.x); upgrade modelfleet to install this package",
                           major, minor, MF_MANIFEST_MAJOR);
    m->format_major = major;
    m->format_minor = minor;
    p->strict = minor <= MF_MANIFEST_MINOR;
    return MF_OK;
}

static int mp__file_cmp(const void *a, const void *b)
{
    return strcmp(((const struct mf_manifest_file *)a)->path,
                  ((const struct mf_manifest_file *)b)->path);
}

static enum mf_err mp__files(struct mp *p, json_t *root, struct mf_manifest *m)
{
    static const char *const known[] = {"path", "size", "blake2b", NULL};
    json_t *arr = json_object_get(root, "files");
    char prefix[64];
    enum mf_err err;
    if (!json_is_array(arr))
        return mp__type(p, "files", arr, "an array");
    size_t n = json_array_size(arr);
    if (n == 0)
        return mf_diag_set(p->diag, MF_ERR_SCHEMA, "files", "lists no files");
    if (n > MF_FILES_MAX)
        return mf_diag_set(p->diag, MF_ERR_TOO_LARGE, "files", "lists %zu files; the cap is %d", n,
                           MF_FILES_MAX);
    m->files = mf_xcalloc(n, sizeof *m->files);
    for (size_t i = 0; i < n; i++) {
        json_t *f = json_array_get(arr, i);
        struct mf_manifest_file *mf = &m->files[i];
        char *hex = NULL;
        const char *why;
        snprintf(prefix, sizeof prefix, "files[%zu].", i);
        m->n_files = i + 1;
        if (!json_is_object(f)) {
            prefix[strlen(prefix) - 1] = '\0';
            return mp__type(p, prefix, f, "an object");
        }
        if ((err = mp__keys(p, prefix, f, known)) != MF_OK ||
            (err = mp__str(p, f, prefix, "path", &mf->path)) != MF_OK ||
            (err = mp__uint(p, f, prefix, "size", false, &mf->size)) != MF_OK ||
            (err = mp__str(p, f, prefix, "blake2b", &hex)) != MF_OK)
            return err;
        err = strspn(hex, "0123456789abcdef") == strlen(hex)
                  ? mf_hex_decode(mf->hash, sizeof mf->hash, hex)
                  : MF_ERR_PARSE;
        free(hex);
        if (err != MF_OK)
            return mf_diag_set(p->diag, MF_ERR_SCHEMA, prefix,
                               "blake2b must be 64 lower-case hex digits");
        if (mf_pkg_path_check(mf->path, &why) != MF_OK)
            return mf_diag_set(p->diag, MF_ERR_UNSAFE_PATH, prefix, "path '%s' %s", mf->path, why);
    }
    qsort(m->files, m->n_files, sizeof *m->files, mp__file_cmp);
    for (size_t i = 1; i < m->n_files; i++)
        if (strcmp(m->files[i - 1].path, m->files[i].path) == 0)
            return mf_diag_set(p->diag, MF_ERR_DUPLICATE, "files", "lists '%s' twice",
                               m->files[i].path);
    /* No file may also be a directory of another ("a" and "a/b"). */
    for (size_t i = 0; i < m->n_files; i++) {
        char dir[MF_PATH_MAX + 1];
        const char *path = m->files[i].path;
        for (const char *slash = strchr(path, '/'); slash; slash = strchr(slash + 1, '/')) {
            memcpy(dir, path, (size_t)(slash - path));
            dir[slash - path] = '\0';
            if (mf_manifest_find(m, dir))
                return mf_diag_set(p->diag, MF_ERR_UNSAFE_PATH, "files",
                                   "'%s' is listed as a file and is also a directory of '%s'", dir,
                                   path);
        }
    }
    return MF_OK;
}

static enum mf_err mp__listed(struct mp *p, const struct mf_manifest *m, const char *field,
                              const char *path)
{
    if (!mf_manifest_find(m, path))
        return mf_diag_set(p->diag, MF_ERR_SCHEMA, field, "'%s' is not listed in files", path);
    return MF_OK;
}

static enum mf_err mp__manifest(struct mp *p, json_t *root, struct mf_manifest *m)
{
    static const char *const known_root[] = {
        "format_version", "model", "version",    "created",           "variant",  "entry",
        "files",          "eval",  "thresholds", "min_agent_version", "metadata", NULL};
    static const char *const known_variant[] = {"hardware", "runtime", NULL};
    static const char *const known_eval[] = {"inputs", "labels", "metric", "n", NULL};
    static const char *const known_thr[] = {"min_accuracy", "max_accuracy_drop", "latency_p99_ms",
                                            "memory_bytes", NULL};
    enum mf_err err;
    char *created = NULL;
    json_t *variant = NULL, *eval = NULL, *thr = NULL, *hw, *meta;
    struct mf_semver agent;

    if (!json_is_object(root))
        return mp__type(p, NULL, root, "a JSON object");
    if ((err = mp__format(p, root, m)) != MF_OK || (err = mp__keys(p, "", root, known_root)))
        return err;
    if ((err = mp__str(p, root, "", "model", &m->model)) ||
        (err = mp__name(p, "model", m->model)) ||
        (err = mp__str(p, root, "", "version", &m->version)))
        return err;
    if ((err = mf_semver_parse(m->version, &m->semver, p->diag)) != MF_OK) {
        mf_diag_prefix(p->diag, "version");
        return p->diag ? (p->diag->err = MF_ERR_SCHEMA) : MF_ERR_SCHEMA;
    }
    if ((err = mp__str(p, root, "", "created", &created)))
        return err;
    err = mf_time_parse(created, &m->created);
    free(created);
    if (err != MF_OK)
        return mf_diag_set(p->diag, MF_ERR_SCHEMA, "created",
                           "expected an RFC 3339 UTC time such as 2026-01-31T12:00:00Z");

    if ((err = mp__obj(p, root, "variant", &variant)) ||
        (err = mp__keys(p, "variant", variant, known_variant)))
        return err;
    hw = json_object_get(variant, "hardware");
    if (!json_is_array(hw) || json_array_size(hw) == 0)
        return json_is_array(hw) ? mf_diag_set(p->diag, MF_ERR_SCHEMA, "variant.hardware",
                                               "names no hardware class")
                                 : mp__type(p, "variant.hardware", hw, "an array of strings");
    for (size_t i = 0; i < json_array_size(hw); i++) {
        json_t *h = json_array_get(hw, i);
        char path[64];
        snprintf(path, sizeof path, "variant.hardware[%zu]", i);
        if (!json_is_string(h))
            return mp__type(p, path, h, "a string");
        if ((err = mp__name(p, path, json_string_value(h))))
            return err;
        for (size_t j = 0; j < m->hardware.n; j++)
            if (strcmp(m->hardware.v[j], json_string_value(h)) == 0)
                return mf_diag_set(p->diag, MF_ERR_DUPLICATE, "variant.hardware",
                                   "names '%s' twice", json_string_value(h));
        mf_strlist_push(&m->hardware, json_string_value(h));
    }
    if ((err = mp__str(p, variant, "variant.", "runtime", &m->runtime)) ||
        (err = mp__name(p, "variant.runtime", m->runtime)))
        return err;

    if ((err = mp__files(p, root, m)) || (err = mp__str(p, root, "", "entry", &m->entry)) ||
        (err = mp__listed(p, m, "entry", m->entry)))
        return err;

    if ((err = mp__obj(p, root, "eval", &eval)) || (err = mp__keys(p, "eval", eval, known_eval)) ||
        (err = mp__str(p, eval, "eval.", "inputs", &m->eval.inputs)) ||
        (err = mp__listed(p, m, "eval.inputs", m->eval.inputs)) ||
        (err = mp__str(p, eval, "eval.", "labels", &m->eval.labels)) ||
        (err = mp__listed(p, m, "eval.labels", m->eval.labels)) ||
        (err = mp__str(p, eval, "eval.", "metric", &m->eval.metric)) ||
        (err = mp__uint(p, eval, "eval.", "n", false, &m->eval.n)))
        return err;
    if (strcmp(m->eval.metric, "top1") != 0)
        return mf_diag_set(p->diag, MF_ERR_SCHEMA, "eval.metric",
                           "'%s' is not a supported metric (supported: top1)", m->eval.metric);
    if (m->eval.n == 0)
        return mf_diag_set(p->diag, MF_ERR_SCHEMA, "eval.n", "must be at least 1");

    if ((err = mp__obj(p, root, "thresholds", &thr)) ||
        (err = mp__keys(p, "thresholds", thr, known_thr)) ||
        (err = mp__num(p, thr, "thresholds.", "min_accuracy", false, 0, 1,
                       &m->thresholds.min_accuracy)) ||
        (err = mp__num(p, thr, "thresholds.", "max_accuracy_drop", false, 0, 1,
                       &m->thresholds.max_accuracy_drop)) ||
        (err = mp__num(p, thr, "thresholds.", "latency_p99_ms", true, 1e-6, 3.6e6,
                       &m->thresholds.latency_p99_ms)) ||
        (err = mp__uint(p, thr, "thresholds.", "memory_bytes", true, &m->thresholds.memory_bytes)))
        return err;
    if (json_object_get(thr, "memory_bytes") && m->thresholds.memory_bytes == 0)
        return mf_diag_set(p->diag, MF_ERR_SCHEMA, "thresholds.memory_bytes",
                           "must be positive (omit it for no budget)");

    if ((err = mp__str(p, root, "", "min_agent_version", &m->min_agent_version)))
        return err;
    if (mf_semver_parse(m->min_agent_version, &agent, p->diag) != MF_OK) {
        mf_diag_prefix(p->diag, "min_agent_version");
        return p->diag ? (p->diag->err = MF_ERR_SCHEMA) : MF_ERR_SCHEMA;
    }
    meta = json_object_get(root, "metadata");
    if (meta && !json_is_object(meta))
        return mp__type(p, "metadata", meta, "an object");
    m->metadata = meta ? json_incref(meta) : json_object();
    return MF_OK;
}

enum mf_err mf_manifest_parse(const uint8_t *bytes, size_t len, struct mf_manifest **out,
                              struct mf_diag *diag)
{
    json_error_t jerr;
    struct mp p = {.diag = diag, .strict = true};
    if (len > MF_MANIFEST_MAX)
        return mf_diag_set(diag, MF_ERR_TOO_LARGE, "manifest.json", "is %zu bytes; the cap is %u",
                           len, MF_MANIFEST_MAX);
    json_t *root = json_loadb((const char *)bytes, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return mf_diag_set(diag, MF_ERR_PARSE, "manifest.json",
                           "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
                           jerr.text);
    struct mf_manifest *m = mf_xcalloc(1, sizeof *m);
    enum mf_err err = mp__manifest(&p, root, m);
    json_decref(root);
    if (err != MF_OK) {
        mf_diag_prefix(diag, "manifest.json");
        mf_manifest_free(m);
        return err;
    }
    *out = m;
    return MF_OK;
}

/* ---- formatting ---- */

json_t *mf_manifest_to_json(const struct mf_manifest *m)
{
    char created[MF_RFC3339_LEN], fmt[32];
    json_t *hw = json_array(), *files = json_array(), *thr;
    mf_time_format(m->created, created);
    snprintf(fmt, sizeof fmt, "%u.%u", m->format_major, m->format_minor);
    for (size_t i = 0; i < m->hardware.n; i++)
        json_array_append_new(hw, json_string(m->hardware.v[i]));
    for (size_t i = 0; i < m->n_files; i++) {
        char hex[MF_HASH_HEX];
        mf_hex_encode(hex, m->files[i].hash, sizeof m->files[i].hash);
        json_array_append_new(files, json_pack("{s:s, s:I, s:s}", "path", m->files[i].path, "size",
                                               (json_int_t)m->files[i].size, "blake2b", hex));
    }
    thr = json_pack("{s:f, s:f}", "min_accuracy", m->thresholds.min_accuracy, "max_accuracy_drop",
                    m->thresholds.max_accuracy_drop);
    if (m->thresholds.latency_p99_ms > 0)
        json_object_set_new(thr, "latency_p99_ms", json_real(m->thresholds.latency_p99_ms));
    if (m->thresholds.memory_bytes > 0)
        json_object_set_new(thr, "memory_bytes",
                            json_integer((json_int_t)m->thresholds.memory_bytes));
    return json_pack("{s:s, s:s, s:s, s:s, s:{s:o, s:s}, s:s, s:o, s:{s:s, s:s, s:s, s:I}, "
                     "s:o, s:s, s:O}",
                     "format_version", fmt, "model", m->model, "version", m->version, "created",
                     created, "variant", "hardware", hw, "runtime", m->runtime, "entry", m->entry,
                     "files", files, "eval", "inputs", m->eval.inputs, "labels", m->eval.labels,
                     "metric", m->eval.metric, "n", (json_int_t)m->eval.n, "thresholds", thr,
                     "min_agent_version", m->min_agent_version, "metadata",
                     m->metadata ? m->metadata : json_object());
}

char *mf_manifest_format(const struct mf_manifest *m, size_t *len)
{
    json_t *j = mf_manifest_to_json(m);
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_REAL_PRECISION(12) | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (!text)
        abort();
    char *withnl = mf_xasprintf("%s\n", text);
    free(text);
    if (len)
        *len = strlen(withnl);
    return withnl;
}

/* ---- queries ---- */

const struct mf_manifest_file *mf_manifest_find(const struct mf_manifest *m, const char *path)
{
    struct mf_manifest_file key = {.path = (char *)path};
    return bsearch(&key, m->files, m->n_files, sizeof *m->files, mp__file_cmp);
}

uint64_t mf_manifest_payload_bytes(const struct mf_manifest *m)
{
    uint64_t total = 0;
    for (size_t i = 0; i < m->n_files; i++)
        total = m->files[i].size > UINT64_MAX - total ? UINT64_MAX : total + m->files[i].size;
    return total;
}

void mf_manifest_free(struct mf_manifest *m)
{
    if (!m)
        return;
    free(m->model);
    free(m->version);
    mf_strlist_free(&m->hardware);
    free(m->runtime);
    free(m->entry);
    for (size_t i = 0; i < m->n_files; i++)
        free(m->files[i].path);
    free(m->files);
    free(m->eval.inputs);
    free(m->eval.labels);
    free(m->eval.metric);
    free(m->min_agent_version);
    json_decref(m->metadata);
    free(m);
}
