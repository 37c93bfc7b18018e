/* devmsg.c — device -> server messages (state, event, report): builders that
 * write compact JSON in a fixed key order from borrowed structs, and the
 * strict checker the server runs on every payload. Invariant: whatever a
 * builder writes passes mf_devmsg_check (strings are sanitized, numbers
 * clamped to the ranges the checker accepts, lists cut to their caps). */
#include "telemetry/devmsg.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/hash.h"
#include "common/json.h"
#include "common/mem.h"
#include "common/semver.h"
#include "packaging/manifest.h"

#define DM_INT_MAX   ((uint64_t)1 << 53)   /* exact in every JSON reader */
#define DM_TIME_MAX  INT64_C(253402300799) /* 9999-12-31T23:59:59Z */
#define DM_RATIO_MAX 1e6                   /* latency ratios */
#define DM_ABS_MAX   1e18                  /* a gate failure's figures, any unit */
#define DM_SHORT_MAX 64                    /* runtime.version */
#define DM_DUMP      (JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15))

static const char *const dm__kinds[MF_DEVMSG__COUNT] = {"state", "event", "report", "desired",
                                                        "online"};

static const char *const dm__events[MF_EVENT__COUNT] = {
    "desired_accepted", "desired_refused", "download_failed", "install_failed", "benchmark_failed",
    "refused",          "activated",       "rolled_back",     "hook_failed",    "recovered"};

const char *mf_devmsg_kind_name(enum mf_devmsg_kind k)
{
    if ((unsigned)k >= MF_DEVMSG__COUNT)
        return "unknown";
    return dm__kinds[k];
}

const char *mf_event_kind_name(enum mf_event_kind k)
{
    if ((unsigned)k >= MF_EVENT__COUNT)
        return "unknown";
    return dm__events[k];
}

/* ---- topics ---- */

enum mf_err mf_topic(char out[MF_TOPIC_MAX], const char *device, enum mf_devmsg_kind kind)
{
    char t[MF_TOPIC_MAX];
    int n;

    if (!device || !mf_pkg_name_ok(device) || (unsigned)kind >= MF_DEVMSG__COUNT)
        return MF_ERR_USAGE;
    n = snprintf(t, sizeof t, MF_TOPIC_PREFIX "%s/%s", device, dm__kinds[kind]);
    if (n < 0 || (size_t)n >= sizeof t)
        return MF_ERR_USAGE;
    memcpy(out, t, (size_t)n + 1);
    return MF_OK;
}

enum mf_err mf_topic_parse(const char *topic, char device[MF_TOPIC_MAX], enum mf_devmsg_kind *kind)
{
    const size_t pl = strlen(MF_TOPIC_PREFIX);
    char id[MF_TOPIC_MAX];
    const char *rest, *slash;

    if (!topic || strncmp(topic, MF_TOPIC_PREFIX, pl) != 0)
        return MF_ERR_PARSE;
    rest = topic + pl;
    slash = strchr(rest, '/');
    if (!slash || (size_t)(slash - rest) >= sizeof id)
        return MF_ERR_PARSE;
    memcpy(id, rest, (size_t)(slash - rest));
    id[slash - rest] = '\0';
    if (!mf_pkg_name_ok(id))
        return MF_ERR_PARSE;
    for (unsigned k = 0; k < MF_DEVMSG__COUNT; k++)
        if (strcmp(slash + 1, dm__kinds[k]) == 0) {
            memcpy(device, id, strlen(id) + 1);
            *kind = (enum mf_devmsg_kind)k;
            return MF_OK;
        }
    return MF_ERR_PARSE;
}

/* ---- what both sides agree a string may be ---- */

static bool dm__is_hash(const char *s)
{
    return s && strlen(s) == 2 * MF_HASH_BYTES &&
           strspn(s, "0123456789abcdef") == 2 * MF_HASH_BYTES;
}

static bool dm__is_semver(const char *s)
{
    struct mf_semver sv;
    return s && mf_semver_parse(s, &sv, NULL) == MF_OK;
}

static bool dm__is_name(const char *s)
{
    return s && mf_pkg_name_ok(s);
}

static bool dm__token_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

static bool dm__is_token(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > MF_DEVMSG_TOKEN_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!dm__token_char((unsigned char)s[i]))
            return false;
    return true;
}

static bool dm__set(const char *s)
{
    return s && *s;
}

/* ---- builders ---- */

/* s as a JSON string: valid UTF-8, control characters as spaces, at most max
 * bytes, cut before a character that would not fit whole. */
static json_t *dm__text(const char *s, size_t max)
{
    size_t n = strnlen(s ? s : "", max + 4);
    char *t = mf_xstrndup(s ? s : "", n);
    json_t *v;

    mf_utf8_sanitize(t);
    for (unsigned char *p = (unsigned char *)t; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            *p = ' ';
    n = strlen(t);
    if (n > max) {
        n = max;
        while (n > 0 && ((unsigned char)t[n] & 0xc0) == 0x80)
            n--;
        t[n] = '\0';
    }
    v = json_string(t);
    free(t);
    MF_ASSERT(v);
    return v;
}

/* A token: [A-Za-z0-9._-], any other byte as '_', cut to the cap; `dflt`
 * stands in for NULL or "". */
static json_t *dm__token(const char *s, const char *dflt)
{
    char t[MF_DEVMSG_TOKEN_MAX + 1];
    size_t n = 0;

    if (!dm__set(s))
        s = dflt;
    for (; s[n] && n < MF_DEVMSG_TOKEN_MAX; n++)
        t[n] = dm__token_char((unsigned char)s[n]) ? s[n] : '_';
    t[n] = '\0';
    return json_string(t);
}

static json_int_t dm__uint(uint64_t v)
{
    return (json_int_t)(v > DM_INT_MAX ? DM_INT_MAX : v);
}

/* A duration in microseconds given as a double: rounded, within [0, 2^53]. */
static json_int_t dm__us(double v)
{
    if (!(v > 0)) /* also NaN */
        return 0;
    if (v >= (double)DM_INT_MAX)
        return (json_int_t)DM_INT_MAX;
    return (json_int_t)(v + 0.5);
}

static json_t *dm__real(double v, double lo, double hi)
{
    if (isnan(v))
        v = 0;
    if (v < lo)
        v = lo;
    if (v > hi)
        v = hi;
    return json_real(v);
}

static json_t *dm__time(int64_t t)
{
    char s[MF_RFC3339_LEN];
    mf_time_format(t < 0 ? 0 : t > DM_TIME_MAX ? DM_TIME_MAX : t, s);
    return json_string(s);
}

static char *dm__dump(json_t *root, size_t *len)
{
    char *text = json_dumps(root, DM_DUMP);
    json_decref(root);
    MF_ASSERT(text); /* only fails without memory */
    if (len)
        *len = strlen(text);
    return text;
}

/* device, msg, time: the head of every message. */
static json_t *dm__head(const char *device, uint64_t msg, int64_t time)
{
    json_t *o = json_object();
    MF_ASSERT(dm__is_name(device));
    json_object_set_new(o, "device", json_string(device));
    json_object_set_new(o, "msg", json_integer(dm__uint(msg)));
    json_object_set_new(o, "time", dm__time(time));
    return o;
}

static void dm__opt_int(json_t *o, const char *key, uint64_t v)
{
    if (v > 0)
        json_object_set_new(o, key, json_integer(dm__uint(v)));
}

static json_t *dm__failures(const struct mf_event_failure *f, size_t n)
{
    json_t *a = json_array();
    MF_ASSERT(f || n == 0);
    for (size_t i = 0; i < n && i < MF_DEVMSG_ITEMS_MAX; i++) {
        json_t *o = json_object();
        json_object_set_new(o, "check", dm__token(f[i].check, "unknown"));
        json_object_set_new(o, "measured", dm__real(f[i].measured, -DM_ABS_MAX, DM_ABS_MAX));
        json_object_set_new(o, "limit", dm__real(f[i].limit, -DM_ABS_MAX, DM_ABS_MAX));
        json_object_set_new(o, "excess", dm__real(f[i].excess, -DM_ABS_MAX, DM_ABS_MAX));
        json_object_set_new(o, "reason", dm__text(f[i].reason, MF_DEVMSG_TEXT_MAX));
        json_array_append_new(a, o);
    }
    return a;
}

char *mf_devmsg_event_format(const struct mf_event *e, size_t *len)
{
    json_t *o;

    MF_ASSERT(e && e->msg >= 1 && (unsigned)e->kind < MF_EVENT__COUNT);
    o = dm__head(e->device, e->msg, e->time);
    json_object_set_new(o, "kind", json_string(dm__events[e->kind]));
    if (dm__set(e->origin))
        json_object_set_new(o, "origin", dm__token(e->origin, ""));
    if (dm__is_name(e->model))
        json_object_set_new(o, "model", json_string(e->model));
    if (dm__is_semver(e->version))
        json_object_set_new(o, "version", json_string(e->version));
    if (dm__is_hash(e->package))
        json_object_set_new(o, "package", json_string(e->package));
    if (dm__is_semver(e->from_version))
        json_object_set_new(o, "from_version", json_string(e->from_version));
    dm__opt_int(o, "desired_seq", e->desired_seq);
    dm__opt_int(o, "rollout", e->rollout > 0 ? (uint64_t)e->rollout : 0);
    if (dm__set(e->reason))
        json_object_set_new(o, "reason", dm__token(e->reason, ""));
    if (dm__set(e->detail))
        json_object_set_new(o, "detail", dm__text(e->detail, MF_DEVMSG_TEXT_MAX));
    if (e->n_failures > 0)
        json_object_set_new(o, "failures", dm__failures(e->failures, e->n_failures));
    return dm__dump(o, len);
}

static json_t *dm__model(const struct mf_report_model *m)
{
    json_t *lat, *o;

    MF_ASSERT(dm__is_semver(m->version) && dm__is_hash(m->package));
    lat = json_object();
    json_object_set_new(lat, "count", json_integer(dm__uint(m->count)));
    json_object_set_new(lat, "mean_us", json_integer(dm__us(m->mean_us)));
    json_object_set_new(lat, "stddev_us", json_integer(dm__us(m->stddev_us)));
    json_object_set_new(lat, "p50_us", json_integer(dm__uint(m->p50_us)));
    json_object_set_new(lat, "p90_us", json_integer(dm__uint(m->p90_us)));
    json_object_set_new(lat, "p99_us", json_integer(dm__uint(m->p99_us)));
    json_object_set_new(lat, "max_us", json_integer(dm__uint(m->max_us)));
    o = json_object();
    json_object_set_new(o, "version", json_string(m->version));
    json_object_set_new(o, "package", json_string(m->package));
    json_object_set_new(o, "accuracy", dm__real(m->accuracy, 0, 1));
    json_object_set_new(o, "correct", json_integer(dm__uint(m->correct)));
    json_object_set_new(o, "load_us", json_integer(dm__uint(m->load_us)));
    json_object_set_new(o, "first_us", json_integer(dm__uint(m->first_us)));
    json_object_set_new(o, "latency", lat);
    json_object_set_new(o, "peak_rss_bytes", json_integer(dm__uint(m->peak_rss_bytes)));
    return o;
}

char *mf_devmsg_report_format(const struct mf_report *r, size_t *len)
{
    json_t *o, *x, *a;

    MF_ASSERT(r && r->msg >= 1);
    MF_ASSERT(dm__is_name(r->hw_class) && dm__is_name(r->model) && dm__is_name(r->runtime));
    MF_ASSERT(dm__is_semver(r->agent_version) && dm__is_hash(r->eval_hash));
    o = dm__head(r->device, r->msg, r->time);
    json_object_set_new(o, "model", json_string(r->model));
    json_object_set_new(o, "hw_class", json_string(r->hw_class));
    json_object_set_new(o, "agent_version", json_string(r->agent_version));
    x = json_object();
    json_object_set_new(x, "name", json_string(r->runtime));
    if (dm__set(r->runtime_version))
        json_object_set_new(x, "version", dm__text(r->runtime_version, DM_SHORT_MAX));
    json_object_set_new(o, "runtime", x);
    dm__opt_int(o, "desired_seq", r->desired_seq);
    dm__opt_int(o, "rollout", r->rollout > 0 ? (uint64_t)r->rollout : 0);
    json_object_set_new(o, "run",
                        json_pack("{s:I, s:I}", "warmup", (json_int_t)r->warmup, "threads",
                                  (json_int_t)r->threads));
    x = json_object();
    json_object_set_new(x, "hash", json_string(r->eval_hash));
    json_object_set_new(x, "n", json_integer(dm__uint(r->n)));
    json_object_set_new(x, "metric", dm__token(r->metric, "top1"));
    json_object_set_new(o, "eval", x);
    json_object_set_new(o, "model_bytes", json_integer(dm__uint(r->model_bytes)));
    json_object_set_new(o, "candidate", dm__model(&r->candidate));
    if (r->has_incumbent) {
        json_object_set_new(o, "incumbent", dm__model(&r->incumbent));
        json_object_set_new(o, "paired",
                            json_pack("{s:I, s:I, s:I, s:I}", "both", dm__uint(r->both),
                                      "only_candidate", dm__uint(r->only_candidate),
                                      "only_incumbent", dm__uint(r->only_incumbent), "neither",
                                      dm__uint(r->neither)));
        x = json_object();
        if (r->p50_ratio >= 0 && r->p50_ratio <= DM_RATIO_MAX)
            json_object_set_new(x, "p50", json_real(r->p50_ratio));
        if (r->p99_ratio >= 0 && r->p99_ratio <= DM_RATIO_MAX)
            json_object_set_new(x, "p99", json_real(r->p99_ratio));
        json_object_set_new(o, "latency_ratio", x);
    }
    x = json_object();
    json_object_set_new(x, "pass", json_boolean(r->pass));
    if (r->has_incumbent) {
        if (!isnan(r->drop))
            json_object_set_new(x, "drop", dm__real(r->drop, -1, 1));
        if (!isnan(r->mcnemar_p))
            json_object_set_new(x, "mcnemar_p", dm__real(r->mcnemar_p, 0, 1));
    }
    json_object_set_new(x, "failures", dm__failures(r->failures, r->n_failures));
    json_object_set_new(o, "gate", x);
    a = json_array();
    MF_ASSERT(r->warnings || r->n_warnings == 0);
    for (size_t i = 0; i < r->n_warnings && i < MF_DEVMSG_ITEMS_MAX; i++)
        json_array_append_new(a, dm__text(r->warnings[i], MF_DEVMSG_TEXT_MAX));
    json_object_set_new(o, "validity",
                        json_pack("{s:b, s:o}", "valid", (int)r->valid, "warnings", a));
    return dm__dump(o, len);
}

char *mf_devmsg_state_format(const struct mf_state_msg *s, size_t *len)
{
    json_t *o, *a;

    MF_ASSERT(s && dm__is_name(s->hw_class) && dm__is_semver(s->agent_version));
    MF_ASSERT(s->runtimes || s->n_runtimes == 0);
    MF_ASSERT(s->models || s->n_models == 0);
    o = dm__head(s->device, s->msg, s->time);
    json_object_set_new(o, "hw_class", json_string(s->hw_class));
    json_object_set_new(o, "agent_version", json_string(s->agent_version));
    json_object_set_new(o, "desired_seq", json_integer(dm__uint(s->desired_seq)));
    a = json_array();
    for (size_t i = 0; i < s->n_runtimes && i < MF_DEVMSG_ITEMS_MAX; i++) {
        MF_ASSERT(dm__is_name(s->runtimes[i]));
        json_array_append_new(a, json_string(s->runtimes[i]));
    }
    json_object_set_new(o, "runtimes", a);
    a = json_array();
    for (size_t i = 0; i < s->n_models && i < MF_DEVMSG_MODELS_MAX; i++) {
        const struct mf_state_msg_model *m = &s->models[i];
        json_t *prev = json_null();
        MF_ASSERT(dm__is_name(m->name) && dm__is_semver(m->version) && dm__is_hash(m->package));
        if (dm__set(m->previous_version) && dm__set(m->previous_package)) {
            MF_ASSERT(dm__is_semver(m->previous_version) && dm__is_hash(m->previous_package));
            prev = json_pack("{s:s, s:s}", "version", m->previous_version, "package",
                             m->previous_package);
        }
        json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:o}", "name", m->name, "version",
                                           m->version, "package", m->package, "previous", prev));
    }
    json_object_set_new(o, "models", a);
    if (dm__set(s->op_kind)) {
        json_t *op = json_object();
        json_object_set_new(op, "kind", dm__token(s->op_kind, ""));
        if (dm__is_name(s->op_model))
            json_object_set_new(op, "model", json_string(s->op_model));
        if (dm__is_semver(s->op_version))
            json_object_set_new(op, "version", json_string(s->op_version));
        if (dm__set(s->op_phase))
            json_object_set_new(op, "phase", dm__token(s->op_phase, ""));
        json_object_set_new(o, "op", op);
    } else {
        json_object_set_new(o, "op", json_null());
    }
    json_object_set_new(o, "disk_free", json_integer(dm__uint(s->disk_free)));
    json_object_set_new(o, "mem_available", json_integer(dm__uint(s->mem_available)));
    json_object_set_new(o, "spool_dropped", json_integer(dm__uint(s->spool_dropped)));
    return dm__dump(o, len);
}

/* ---- the checker ---- */

/* Field paths: `at` is the path of the object in hand ("" at the top,
 * "candidate.latency", "gate.failures[0]"); a field's path is at.key. */
static void dm__path(char out[MF_DIAG_WHERE], const char *at, const char *key)
{
    snprintf(out, MF_DIAG_WHERE, "%.127s%s%.126s", at, *at && *key ? "." : "", key);
}

static enum mf_err dm__bad(struct mf_diag *diag, const char *at, const char *key, const char *fmt,
                           ...) MF_PRINTF(4, 5);

static enum mf_err dm__bad(struct mf_diag *diag, const char *at, const char *key, const char *fmt,
                           ...)
{
    char where[MF_DIAG_WHERE], what[MF_DIAG_WHAT];
    va_list ap;

    dm__path(where, at, key);
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return mf_diag_set(diag, MF_ERR_SCHEMA, where, "%s", what);
}

/* `v` is an object with only the allowed fields. */
static enum mf_err dm__obj(const json_t *v, const char *at, const char *const *allowed,
                           struct mf_diag *diag)
{
    char key[MF_DIAG_WHERE];

    if (!json_is_object(v))
        return dm__bad(diag, at, "", "must be an object");
    if (mf_json_only(v, allowed, diag) != MF_OK) {
        snprintf(key, sizeof key, "%s", diag->where);
        return dm__bad(diag, at, key, "is not a field of this message (v1)");
    }
    return MF_OK;
}

/* The field, or NULL: refused when required and missing. */
static enum mf_err dm__get(const json_t *o, const char *at, const char *key, bool required,
                           json_t **out, struct mf_diag *diag)
{
    *out = json_object_get(o, key);
    if (!*out && required)
        return dm__bad(diag, at, key, "is missing");
    return MF_OK;
}

static enum mf_err dm__uint_at(const json_t *o, const char *at, const char *key, uint64_t min,
                               uint64_t max, bool required, struct mf_diag *diag)
{
    json_t *v;
    enum mf_err rc = dm__get(o, at, key, required, &v, diag);
    if (rc || !v)
        return rc;
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) < min ||
        (uint64_t)json_integer_value(v) > max)
        return dm__bad(diag, at, key, "must be an integer from %llu to %llu",
                       (unsigned long long)min, (unsigned long long)max);
    return MF_OK;
}

/* A number (integer or real) within [lo, hi]. */
static enum mf_err dm__real_at(const json_t *o, const char *at, const char *key, double lo,
                               double hi, bool required, struct mf_diag *diag)
{
    json_t *v;
    enum mf_err rc = dm__get(o, at, key, required, &v, diag);
    if (rc || !v)
        return rc;
    if (!json_is_number(v) || !isfinite(json_number_value(v)) || json_number_value(v) < lo ||
        json_number_value(v) > hi)
        return dm__bad(diag, at, key, "must be a number from %g to %g", lo, hi);
    return MF_OK;
}

static enum mf_err dm__bool_at(const json_t *o, const char *at, const char *key,
                               struct mf_diag *diag)
{
    json_t *v;
    enum mf_err rc = dm__get(o, at, key, true, &v, diag);
    if (rc)
        return rc;
    if (!json_is_boolean(v))
        return dm__bad(diag, at, key, "must be true or false");
    return MF_OK;
}

enum dm_str { DM_NAME, DM_SEMVER, DM_HASH, DM_TOKEN, DM_TEXT, DM_SHORT, DM_TIME };

static enum mf_err dm__str_value(const json_t *v, enum dm_str type, const char *at, const char *key,
                                 struct mf_diag *diag)
{
    const char *s = json_string_value(v);
    int64_t t;

    if (!s)
        return dm__bad(diag, at, key, "must be a string");
    switch (type) {
    case DM_NAME:
        if (!mf_pkg_name_ok(s))
            return dm__bad(diag, at, key,
                           "must be a name (1-64 of [A-Za-z0-9._-], starting with a letter or "
                           "digit)");
        break;
    case DM_SEMVER:
        if (!dm__is_semver(s))
            return dm__bad(diag, at, key, "must be a semantic version");
        break;
    case DM_HASH:
        if (!dm__is_hash(s))
            return dm__bad(diag, at, key, "must be 64 lowercase hex digits");
        break;
    case DM_TOKEN:
        if (!dm__is_token(s))
            return dm__bad(diag, at, key, "must be 1-%d of [A-Za-z0-9._-]", MF_DEVMSG_TOKEN_MAX);
        break;
    case DM_TEXT:
    case DM_SHORT: {
        size_t max = type == DM_TEXT ? MF_DEVMSG_TEXT_MAX : DM_SHORT_MAX;
        if (json_string_length(v) > max)
            return dm__bad(diag, at, key, "must be at most %zu bytes", max);
        break;
    }
    case DM_TIME:
        if (mf_time_parse(s, &t) != MF_OK)
            return dm__bad(diag, at, key, "must be an RFC 3339 UTC time");
        break;
    }
    return MF_OK;
}

static enum mf_err dm__str_at(const json_t *o, const char *at, const char *key, enum dm_str type,
                              bool required, struct mf_diag *diag)
{
    json_t *v;
    enum mf_err rc = dm__get(o, at, key, required, &v, diag);
    if (rc || !v)
        return rc;
    return dm__str_value(v, type, at, key, diag);
}

/* An array of at most max elements; *out NULL when optional and missing. */
static enum mf_err dm__array_at(const json_t *o, const char *at, const char *key, size_t max,
                                bool required, json_t **out, struct mf_diag *diag)
{
    enum mf_err rc = dm__get(o, at, key, required, out, diag);
    if (rc || !*out)
        return rc;
    if (!json_is_array(*out) || json_array_size(*out) > max)
        return dm__bad(diag, at, key, "must be an array of at most %zu elements", max);
    return MF_OK;
}

/* The head every message starts with. */
static enum mf_err dm__check_head(const json_t *o, uint64_t msg_min, struct mf_diag *diag)
{
    enum mf_err rc;
    if ((rc = dm__str_at(o, "", "device", DM_NAME, true, diag)) ||
        (rc = dm__uint_at(o, "", "msg", msg_min, DM_INT_MAX, true, diag)) ||
        (rc = dm__str_at(o, "", "time", DM_TIME, true, diag)))
        return rc;
    return MF_OK;
}

static enum mf_err dm__check_failures(const json_t *o, const char *at, bool required,
                                      struct mf_diag *diag)
{
    static const char *const fields[] = {"check", "measured", "limit", "excess", "reason", NULL};
    char path[MF_DIAG_WHERE], item[MF_DIAG_WHERE];
    json_t *a, *f;
    size_t i;
    enum mf_err rc;

    if ((rc = dm__array_at(o, at, "failures", MF_DEVMSG_ITEMS_MAX, required, &a, diag)) || !a)
        return rc;
    dm__path(path, at, "failures");
    json_array_foreach(a, i, f)
    {
        snprintf(item, sizeof item, "%.200s[%zu]", path, i);
        if ((rc = dm__obj(f, item, fields, diag)) ||
            (rc = dm__str_at(f, item, "check", DM_TOKEN, true, diag)) ||
            (rc = dm__real_at(f, item, "measured", -DM_ABS_MAX, DM_ABS_MAX, true, diag)) ||
            (rc = dm__real_at(f, item, "limit", -DM_ABS_MAX, DM_ABS_MAX, true, diag)) ||
            (rc = dm__real_at(f, item, "excess", -DM_ABS_MAX, DM_ABS_MAX, true, diag)) ||
            (rc = dm__str_at(f, item, "reason", DM_TEXT, true, diag)))
            return rc;
    }
    return MF_OK;
}

static enum mf_err dm__check_event(const json_t *o, struct mf_diag *diag)
{
    static const char *const fields[] = {"device",       "msg",         "time",    "kind",
                                         "origin",       "model",       "version", "package",
                                         "from_version", "desired_seq", "rollout", "reason",
                                         "detail",       "failures",    NULL};
    const char *kind;
    enum mf_err rc;
    unsigned k;

    if ((rc = dm__obj(o, "", fields, diag)) || (rc = dm__check_head(o, 1, diag)) ||
        (rc = dm__str_at(o, "", "kind", DM_TOKEN, true, diag)))
        return rc;
    kind = json_string_value(json_object_get(o, "kind"));
    for (k = 0; k < MF_EVENT__COUNT && strcmp(kind, dm__events[k]) != 0; k++)
        ;
    if (k == MF_EVENT__COUNT)
        return dm__bad(diag, "", "kind", "\"%s\" is not an event kind", kind);
    if ((rc = dm__str_at(o, "", "origin", DM_TOKEN, false, diag)) ||
        (rc = dm__str_at(o, "", "model", DM_NAME, false, diag)) ||
        (rc = dm__str_at(o, "", "version", DM_SEMVER, false, diag)) ||
        (rc = dm__str_at(o, "", "package", DM_HASH, false, diag)) ||
        (rc = dm__str_at(o, "", "from_version", DM_SEMVER, false, diag)) ||
        (rc = dm__uint_at(o, "", "desired_seq", 1, DM_INT_MAX, false, diag)) ||
        (rc = dm__uint_at(o, "", "rollout", 1, DM_INT_MAX, false, diag)) ||
        (rc = dm__str_at(o, "", "reason", DM_TOKEN, false, diag)) ||
        (rc = dm__str_at(o, "", "detail", DM_TEXT, false, diag)) ||
        (rc = dm__check_failures(o, "", false, diag)))
        return rc;
    return MF_OK;
}

static enum mf_err dm__check_model(const json_t *o, const char *at, struct mf_diag *diag)
{
    static const char *const fields[] = {"version", "package",        "accuracy",
                                         "correct", "load_us",        "first_us",
                                         "latency", "peak_rss_bytes", NULL};
    static const char *const lat_fields[] = {"count",  "mean_us", "stddev_us", "p50_us",
                                             "p90_us", "p99_us",  "max_us",    NULL};
    char lat_at[MF_DIAG_WHERE];
    json_t *lat;
    enum mf_err rc;

    if ((rc = dm__obj(o, at, fields, diag)) ||
        (rc = dm__str_at(o, at, "version", DM_SEMVER, true, diag)) ||
        (rc = dm__str_at(o, at, "package", DM_HASH, true, diag)) ||
        (rc = dm__real_at(o, at, "accuracy", 0, 1, true, diag)) ||
        (rc = dm__uint_at(o, at, "correct", 0, DM_INT_MAX, true, diag)) ||
        (rc = dm__uint_at(o, at, "load_us", 0, DM_INT_MAX, true, diag)) ||
        (rc = dm__uint_at(o, at, "first_us", 0, DM_INT_MAX, true, diag)) ||
        (rc = dm__get(o, at, "latency", true, &lat, diag)))
        return rc;
    dm__path(lat_at, at, "latency");
    if ((rc = dm__obj(lat, lat_at, lat_fields, diag)))
        return rc;
    for (size_t i = 0; lat_fields[i]; i++)
        if ((rc = dm__uint_at(lat, lat_at, lat_fields[i], 0, DM_INT_MAX, true, diag)))
            return rc;
    return dm__uint_at(o, at, "peak_rss_bytes", 0, DM_INT_MAX, true, diag);
}

static enum mf_err dm__check_report(const json_t *o, struct mf_diag *diag)
{
    static const char *const fields[] = {"device",    "msg",           "time",    "model",
                                         "hw_class",  "agent_version", "runtime", "desired_seq",
                                         "rollout",   "run",           "eval",    "model_bytes",
                                         "candidate", "incumbent",     "paired",  "latency_ratio",
                                         "gate",      "validity",      NULL};
    static const char *const runtime_fields[] = {"name", "version", NULL};
    static const char *const run_fields[] = {"warmup", "threads", NULL};
    static const char *const eval_fields[] = {"hash", "n", "metric", NULL};
    static const char *const paired_fields[] = {"both", "only_candidate", "only_incumbent",
                                                "neither", NULL};
    static const char *const ratio_fields[] = {"p50", "p99", NULL};
    static const char *const gate_fields[] = {"pass", "drop", "mcnemar_p", "failures", NULL};
    static const char *const validity_fields[] = {"valid", "warnings", NULL};
    json_t *v, *inc, *w;
    enum mf_err rc;
    size_t i;

    if ((rc = dm__obj(o, "", fields, diag)) || (rc = dm__check_head(o, 1, diag)) ||
        (rc = dm__str_at(o, "", "model", DM_NAME, true, diag)) ||
        (rc = dm__str_at(o, "", "hw_class", DM_NAME, true, diag)) ||
        (rc = dm__str_at(o, "", "agent_version", DM_SEMVER, true, diag)) ||
        (rc = dm__get(o, "", "runtime", true, &v, diag)) ||
        (rc = dm__obj(v, "runtime", runtime_fields, diag)) ||
        (rc = dm__str_at(v, "runtime", "name", DM_NAME, true, diag)) ||
        (rc = dm__str_at(v, "runtime", "version", DM_SHORT, false, diag)) ||
        (rc = dm__uint_at(o, "", "desired_seq", 1, DM_INT_MAX, false, diag)) ||
        (rc = dm__uint_at(o, "", "rollout", 1, DM_INT_MAX, false, diag)) ||
        (rc = dm__get(o, "", "run", true, &v, diag)) ||
        (rc = dm__obj(v, "run", run_fields, diag)) ||
        (rc = dm__uint_at(v, "run", "warmup", 0, UINT32_MAX, true, diag)) ||
        (rc = dm__uint_at(v, "run", "threads", 0, UINT32_MAX, true, diag)) ||
        (rc = dm__get(o, "", "eval", true, &v, diag)) ||
        (rc = dm__obj(v, "eval", eval_fields, diag)) ||
        (rc = dm__str_at(v, "eval", "hash", DM_HASH, true, diag)) ||
        (rc = dm__uint_at(v, "eval", "n", 0, DM_INT_MAX, true, diag)) ||
        (rc = dm__str_at(v, "eval", "metric", DM_TOKEN, true, diag)) ||
        (rc = dm__uint_at(o, "", "model_bytes", 0, DM_INT_MAX, true, diag)) ||
        (rc = dm__get(o, "", "candidate", true, &v, diag)) ||
        (rc = dm__check_model(v, "candidate", diag)) ||
        (rc = dm__get(o, "", "incumbent", false, &inc, diag)) ||
        (inc && (rc = dm__check_model(inc, "incumbent", diag))))
        return rc;
    /* incumbent, paired and latency_ratio come together (latency_ratio may be empty) */
    if ((rc = dm__get(o, "", "paired", false, &v, diag)))
        return rc;
    if (!inc != !v)
        return dm__bad(diag, "", inc ? "paired" : "incumbent",
                       "\"incumbent\" and \"paired\" come together");
    if (v) {
        if ((rc = dm__obj(v, "paired", paired_fields, diag)))
            return rc;
        for (i = 0; paired_fields[i]; i++)
            if ((rc = dm__uint_at(v, "paired", paired_fields[i], 0, DM_INT_MAX, true, diag)))
                return rc;
    }
    if ((rc = dm__get(o, "", "latency_ratio", false, &v, diag)))
        return rc;
    if (v && !inc)
        return dm__bad(diag, "", "latency_ratio", "is only sent with an \"incumbent\"");
    if (v && ((rc = dm__obj(v, "latency_ratio", ratio_fields, diag)) ||
              (rc = dm__real_at(v, "latency_ratio", "p50", 0, DM_RATIO_MAX, false, diag)) ||
              (rc = dm__real_at(v, "latency_ratio", "p99", 0, DM_RATIO_MAX, false, diag))))
        return rc;
    if ((rc = dm__get(o, "", "gate", true, &v, diag)) ||
        (rc = dm__obj(v, "gate", gate_fields, diag)) ||
        (rc = dm__bool_at(v, "gate", "pass", diag)) ||
        (rc = dm__real_at(v, "gate", "drop", -1, 1, false, diag)) ||
        (rc = dm__real_at(v, "gate", "mcnemar_p", 0, 1, false, diag)) ||
        (rc = dm__check_failures(v, "gate", true, diag)))
        return rc;
    if (!inc && json_object_get(v, "drop"))
        return dm__bad(diag, "gate", "drop", "is only sent with an \"incumbent\"");
    if (!inc && json_object_get(v, "mcnemar_p"))
        return dm__bad(diag, "gate", "mcnemar_p", "is only sent with an \"incumbent\"");
    if ((rc = dm__get(o, "", "validity", true, &v, diag)) ||
        (rc = dm__obj(v, "validity", validity_fields, diag)) ||
        (rc = dm__bool_at(v, "validity", "valid", diag)) ||
        (rc = dm__array_at(v, "validity", "warnings", MF_DEVMSG_ITEMS_MAX, true, &v, diag)))
        return rc;
    json_array_foreach(v, i, w)
    {
        char key[32];
        snprintf(key, sizeof key, "warnings[%zu]", i);
        if ((rc = dm__str_value(w, DM_TEXT, "validity", key, diag)))
            return rc;
    }
    return MF_OK;
}

static enum mf_err dm__check_state(const json_t *o, struct mf_diag *diag)
{
    static const char *const fields[] = {
        "device", "msg", "time",      "hw_class",      "agent_version", "desired_seq", "runtimes",
        "models", "op",  "disk_free", "mem_available", "spool_dropped", NULL};
    static const char *const model_fields[] = {"name", "version", "package", "previous", NULL};
    static const char *const prev_fields[] = {"version", "package", NULL};
    static const char *const op_fields[] = {"kind", "model", "version", "phase", NULL};
    char at[MF_DIAG_WHERE], prev_at[MF_DIAG_WHERE], key[32];
    json_t *a, *m, *p;
    enum mf_err rc;
    size_t i;

    if ((rc = dm__obj(o, "", fields, diag)) || (rc = dm__check_head(o, 0, diag)) ||
        (rc = dm__str_at(o, "", "hw_class", DM_NAME, true, diag)) ||
        (rc = dm__str_at(o, "", "agent_version", DM_SEMVER, true, diag)) ||
        (rc = dm__uint_at(o, "", "desired_seq", 0, DM_INT_MAX, true, diag)) ||
        (rc = dm__array_at(o, "", "runtimes", MF_DEVMSG_ITEMS_MAX, true, &a, diag)))
        return rc;
    json_array_foreach(a, i, m)
    {
        snprintf(key, sizeof key, "runtimes[%zu]", i);
        if ((rc = dm__str_value(m, DM_NAME, "", key, diag)))
            return rc;
    }
    if ((rc = dm__array_at(o, "", "models", MF_DEVMSG_MODELS_MAX, true, &a, diag)))
        return rc;
    json_array_foreach(a, i, m)
    {
        snprintf(at, sizeof at, "models[%zu]", i);
        if ((rc = dm__obj(m, at, model_fields, diag)) ||
            (rc = dm__str_at(m, at, "name", DM_NAME, true, diag)) ||
            (rc = dm__str_at(m, at, "version", DM_SEMVER, true, diag)) ||
            (rc = dm__str_at(m, at, "package", DM_HASH, true, diag)) ||
            (rc = dm__get(m, at, "previous", true, &p, diag)))
            return rc;
        dm__path(prev_at, at, "previous");
        if (!json_is_null(p) && ((rc = dm__obj(p, prev_at, prev_fields, diag)) ||
                                 (rc = dm__str_at(p, prev_at, "version", DM_SEMVER, true, diag)) ||
                                 (rc = dm__str_at(p, prev_at, "package", DM_HASH, true, diag))))
            return rc;
        for (size_t j = 0; j < i; j++)
            if (strcmp(json_string_value(json_object_get(json_array_get(a, j), "name")),
                       json_string_value(json_object_get(m, "name"))) == 0)
                return dm__bad(diag, at, "name", "model %s is listed twice",
                               json_string_value(json_object_get(m, "name")));
    }
    if ((rc = dm__get(o, "", "op", true, &p, diag)))
        return rc;
    if (!json_is_null(p) && ((rc = dm__obj(p, "op", op_fields, diag)) ||
                             (rc = dm__str_at(p, "op", "kind", DM_TOKEN, true, diag)) ||
                             (rc = dm__str_at(p, "op", "model", DM_NAME, false, diag)) ||
                             (rc = dm__str_at(p, "op", "version", DM_SEMVER, false, diag)) ||
                             (rc = dm__str_at(p, "op", "phase", DM_TOKEN, false, diag))))
        return rc;
    if ((rc = dm__uint_at(o, "", "disk_free", 0, DM_INT_MAX, true, diag)) ||
        (rc = dm__uint_at(o, "", "mem_available", 0, DM_INT_MAX, true, diag)) ||
        (rc = dm__uint_at(o, "", "spool_dropped", 0, DM_INT_MAX, true, diag)))
        return rc;
    return MF_OK;
}

enum mf_err mf_devmsg_check(enum mf_devmsg_kind kind, const uint8_t *payload, size_t len,
                            const char *topic_device, json_t **out, struct mf_diag *diag)
{
    struct mf_diag d = {0};
    json_t *root = NULL;
    const char *device;
    enum mf_err rc;

    MF_ASSERT(topic_device && out && (payload || len == 0));
    if (kind != MF_DEVMSG_STATE && kind != MF_DEVMSG_EVENT && kind != MF_DEVMSG_REPORT) {
        rc = mf_diag_set(&d, MF_ERR_USAGE, "", "%s is not a JSON device message",
                         mf_devmsg_kind_name(kind));
        goto out;
    }
    if (len > MF_DEVMSG_MAX) {
        rc = mf_diag_set(&d, MF_ERR_TOO_LARGE, "", "%s of %zu bytes (cap %u)",
                         mf_devmsg_kind_name(kind), len, MF_DEVMSG_MAX);
        goto out;
    }
    if ((rc = mf_json_parse(payload, len, MF_DEVMSG_DEPTH, &root, &d)))
        goto out;
    rc = kind == MF_DEVMSG_STATE   ? dm__check_state(root, &d)
         : kind == MF_DEVMSG_EVENT ? dm__check_event(root, &d)
                                   : dm__check_report(root, &d);
    if (rc)
        goto out;
    device = json_string_value(json_object_get(root, "device"));
    if (strcmp(device, topic_device) != 0) {
        rc = mf_diag_set(&d, MF_ERR_WRONG_TARGET, "device", "%s sent on the topic of device %.64s",
                         device, topic_device);
        goto out;
    }
    *out = root;
    root = NULL;
out:
    json_decref(root);
    if (rc && diag)
        *diag = d;
    return rc;
}
