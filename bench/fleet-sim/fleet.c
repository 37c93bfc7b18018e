/* fleet.c — the simulator's configuration and its per-install draws (see
 * fleet.h). */
#include "fleet.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/stats.h"

/* ---- random ---- */

uint64_t fleet_rng_next(struct fleet_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double fleet_rng_uniform(struct fleet_rng *r)
{
    return (double)(fleet_rng_next(r) >> 11) / 9007199254740992.0;
}

double fleet_rng_normal(struct fleet_rng *r)
{
    double u = fleet_rng_uniform(r), v = fleet_rng_uniform(r);
    if (u < 1e-300)
        u = 1e-300;
    return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

static uint64_t fleet__binomial(struct fleet_rng *r, uint64_t n, double p)
{
    uint64_t k = 0;
    if (p <= 0)
        return 0;
    if (p >= 1)
        return n;
    for (uint64_t i = 0; i < n; i++)
        k += fleet_rng_uniform(r) < p;
    return k;
}

static double fleet__clamp(double x, double lo, double hi)
{
    return x < lo ? lo : x > hi ? hi : x;
}

/* ---- configuration ---- */

static const struct fleet_class fleet_default_classes[] = {
    /* name, share, accuracy, sd, disagree, p50, p99, lat_sd, ratio_sd, dl_fail, refused, rss */
    {"rpi4", 35, 0.975, 0.004, 0.015, 1500, 2100, 0.10, 0.03, 0.005, 0.005, 94371840},
    {"rpi5", 20, 0.978, 0.004, 0.015, 800, 1100, 0.10, 0.03, 0.005, 0.005, 94371840},
    {"x86-cpu", 15, 0.980, 0.003, 0.012, 300, 450, 0.08, 0.02, 0.002, 0.002, 125829120},
    {"jetson-orin", 12, 0.981, 0.003, 0.012, 200, 320, 0.08, 0.02, 0.004, 0.003, 157286400},
    {"jetson-nano", 10, 0.979, 0.004, 0.015, 600, 900, 0.12, 0.04, 0.008, 0.005, 157286400},
    {"x86-gpu", 8, 0.981, 0.003, 0.012, 150, 260, 0.08, 0.02, 0.003, 0.002, 209715200},
};

static void fleet__defaults(struct fleet_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->model, sizeof c->model, "digits");
    snprintf(c->agent_version, sizeof c->agent_version, "0.4.0");
    snprintf(c->runtime, sizeof c->runtime, "opencv-dnn");
    snprintf(c->runtime_version, sizeof c->runtime_version, "4.6.0");
    memset(c->eval_hash, 'e', MF_HASH_HEX - 1);
    c->eval_n = 360;
    snprintf(c->incumbent_version, sizeof c->incumbent_version, "1.0.0");
    memset(c->incumbent_package, 'a', MF_HASH_HEX - 1);
    c->model_bytes = 10322;
    c->device_max_drop = 0.05;
    c->delay_ms = 3000;
    c->delay_jitter = 0.5;
    c->regress_latency = 1.0;
    memcpy(c->classes, fleet_default_classes, sizeof fleet_default_classes);
    c->n_classes = sizeof fleet_default_classes / sizeof *fleet_default_classes;
}

static enum mf_err fleet__str(json_t *v, const char *key, char *out, size_t cap,
                              struct mf_diag *diag)
{
    const char *s = json_string_value(v);
    if (!s || !*s || strlen(s) >= cap)
        return mf_diag_set(diag, MF_ERR_SCHEMA, key, "must be a string of 1..%zu bytes", cap - 1);
    snprintf(out, cap, "%s", s);
    return MF_OK;
}

static enum mf_err fleet__num(json_t *v, const char *key, double lo, double hi, double *out,
                              struct mf_diag *diag)
{
    if (!json_is_number(v) || json_number_value(v) < lo || json_number_value(v) > hi)
        return mf_diag_set(diag, MF_ERR_SCHEMA, key, "must be a number in [%g, %g]", lo, hi);
    *out = json_number_value(v);
    return MF_OK;
}

static enum mf_err fleet__class(json_t *o, size_t i, struct fleet_class *k, struct mf_diag *diag)
{
    char where[64];
    const char *key;
    json_t *v;
    static const struct fleet_class base = {"",   1,   0.975, 0.004, 0.015, 1000,
                                            1500, 0.1, 0.03,  0.005, 0.005, 94371840};
    *k = base;
    if (!json_is_object(o))
        return mf_diag_set(diag, MF_ERR_SCHEMA, "classes", "[%zu] must be an object", i);
    json_object_foreach(o, key, v)
    {
        snprintf(where, sizeof where, "classes[%zu].%s", i, key);
        double d = 0;
        enum mf_err rc = MF_OK;
        if (strcmp(key, "name") == 0)
            rc = fleet__str(v, where, k->name, sizeof k->name, diag);
        else if (strcmp(key, "share") == 0)
            rc = fleet__num(v, where, 0, 1e9, &k->share, diag);
        else if (strcmp(key, "accuracy") == 0)
            rc = fleet__num(v, where, 0, 1, &k->accuracy, diag);
        else if (strcmp(key, "accuracy_sd") == 0)
            rc = fleet__num(v, where, 0, 1, &k->accuracy_sd, diag);
        else if (strcmp(key, "disagree") == 0)
            rc = fleet__num(v, where, 0, 1, &k->disagree, diag);
        else if (strcmp(key, "p50_us") == 0)
            rc = fleet__num(v, where, 1, 1e9, &k->p50_us, diag);
        else if (strcmp(key, "p99_us") == 0)
            rc = fleet__num(v, where, 1, 1e9, &k->p99_us, diag);
        else if (strcmp(key, "latency_sd") == 0)
            rc = fleet__num(v, where, 0, 5, &k->latency_sd, diag);
        else if (strcmp(key, "ratio_sd") == 0)
            rc = fleet__num(v, where, 0, 5, &k->ratio_sd, diag);
        else if (strcmp(key, "download_failed") == 0)
            rc = fleet__num(v, where, 0, 1, &k->download_failed, diag);
        else if (strcmp(key, "refused") == 0)
            rc = fleet__num(v, where, 0, 1, &k->refused, diag);
        else if (strcmp(key, "rss_bytes") == 0) {
            rc = fleet__num(v, where, 0, 1e15, &d, diag);
            k->rss_bytes = (uint64_t)d;
        } else
            rc = mf_diag_set(diag, MF_ERR_SCHEMA, where, "unknown key");
        if (rc != MF_OK)
            return rc;
    }
    if (!k->name[0])
        return mf_diag_set(diag, MF_ERR_SCHEMA, "classes", "[%zu].name is required", i);
    if (k->p99_us < k->p50_us)
        k->p99_us = k->p50_us;
    return MF_OK;
}

enum mf_err fleet_config_load(const char *path, struct fleet_config *out, struct mf_diag *diag)
{
    json_error_t je;
    json_t *root, *v;
    const char *key;
    enum mf_err rc = MF_OK;
    struct fleet_config c;

    fleet__defaults(&c);
    if (!path) {
        *out = c;
        return MF_OK;
    }
    root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return mf_diag_set(diag, MF_ERR_PARSE, path, "line %d: %s", je.line, je.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return mf_diag_set(diag, MF_ERR_SCHEMA, path, "must be a JSON object");
    }
    json_object_foreach(root, key, v)
    {
        double d = 0;
        if (strcmp(key, "model") == 0)
            rc = fleet__str(v, key, c.model, sizeof c.model, diag);
        else if (strcmp(key, "agent_version") == 0)
            rc = fleet__str(v, key, c.agent_version, sizeof c.agent_version, diag);
        else if (strcmp(key, "runtime") == 0)
            rc = fleet__str(v, key, c.runtime, sizeof c.runtime, diag);
        else if (strcmp(key, "runtime_version") == 0)
            rc = fleet__str(v, key, c.runtime_version, sizeof c.runtime_version, diag);
        else if (strcmp(key, "eval_hash") == 0)
            rc = fleet__str(v, key, c.eval_hash, sizeof c.eval_hash, diag);
        else if (strcmp(key, "eval_n") == 0) {
            rc = fleet__num(v, key, 1, 1e7, &d, diag);
            c.eval_n = (uint64_t)d;
        } else if (strcmp(key, "incumbent_version") == 0) {
            rc = json_is_string(v) && strlen(json_string_value(v)) < sizeof c.incumbent_version
                     ? MF_OK
                     : mf_diag_set(diag, MF_ERR_SCHEMA, key, "must be a version or \"\"");
            if (rc == MF_OK)
                snprintf(c.incumbent_version, sizeof c.incumbent_version, "%s",
                         json_string_value(v));
        } else if (strcmp(key, "incumbent_package") == 0)
            rc = fleet__str(v, key, c.incumbent_package, sizeof c.incumbent_package, diag);
        else if (strcmp(key, "model_bytes") == 0) {
            rc = fleet__num(v, key, 1, 1e15, &d, diag);
            c.model_bytes = (uint64_t)d;
        } else if (strcmp(key, "device_max_drop") == 0)
            rc = fleet__num(v, key, 0, 1, &c.device_max_drop, diag);
        else if (strcmp(key, "delay_ms") == 0) {
            rc = fleet__num(v, key, 0, 3600000, &d, diag);
            c.delay_ms = (unsigned)d;
        } else if (strcmp(key, "delay_jitter") == 0)
            rc = fleet__num(v, key, 0, 1, &c.delay_jitter, diag);
        else if (strcmp(key, "regression") == 0) {
            const char *rk;
            json_t *rv;
            if (!json_is_object(v))
                rc = mf_diag_set(diag, MF_ERR_SCHEMA, key, "must be an object");
            json_object_foreach(v, rk, rv)
            {
                if (rc != MF_OK)
                    break;
                if (strcmp(rk, "version") == 0)
                    rc = fleet__str(rv, "regression.version", c.regress_version,
                                    sizeof c.regress_version, diag);
                else if (strcmp(rk, "accuracy_points") == 0)
                    rc = fleet__num(rv, "regression.accuracy_points", -100, 100, &c.regress_points,
                                    diag);
                else if (strcmp(rk, "latency_factor") == 0)
                    rc = fleet__num(rv, "regression.latency_factor", 0.01, 1000, &c.regress_latency,
                                    diag);
                else
                    rc = mf_diag_set(diag, MF_ERR_SCHEMA, "regression", "unknown key %s", rk);
            }
        } else if (strcmp(key, "classes") == 0) {
            if (!json_is_array(v) || json_array_size(v) == 0 ||
                json_array_size(v) > FLEET_CLASSES_MAX)
                rc = mf_diag_set(diag, MF_ERR_SCHEMA, key, "must be an array of 1..%d classes",
                                 FLEET_CLASSES_MAX);
            c.n_classes = 0;
            for (size_t i = 0; rc == MF_OK && i < json_array_size(v); i++)
                if ((rc = fleet__class(json_array_get(v, i), i, &c.classes[i], diag)) == MF_OK)
                    c.n_classes++;
        } else
            rc = mf_diag_set(diag, MF_ERR_SCHEMA, key, "unknown key");
        if (rc != MF_OK)
            break;
    }
    json_decref(root);
    if (rc != MF_OK) {
        mf_diag_prefix(diag, path);
        return rc;
    }
    *out = c;
    return MF_OK;
}

size_t fleet_class_of(const struct fleet_config *c, uint64_t i)
{
    struct fleet_rng r = {i * 0x2545f4914f6cdd1dull + 17};
    double total = 0, u;
    for (size_t k = 0; k < c->n_classes; k++)
        total += c->classes[k].share;
    u = fleet_rng_uniform(&r) * total;
    for (size_t k = 0; k < c->n_classes; k++) {
        if (u < c->classes[k].share)
            return k;
        u -= c->classes[k].share;
    }
    return c->n_classes - 1;
}

/* ---- one install ---- */

static void fleet__latency(double p50, double p99, uint64_t n, struct mf_report_model *m)
{
    m->p50_us = (uint64_t)llround(p50);
    m->p99_us = (uint64_t)llround(p99);
    m->p90_us = (uint64_t)llround(p50 + (p99 - p50) * 0.6);
    m->mean_us = p50 * 1.04;
    m->stddev_us = (p99 - p50) / 2.33;
    m->max_us = (uint64_t)llround(p99 * 1.6);
    m->count = n;
    m->load_us = (uint64_t)llround(p50 * 80);
    m->first_us = (uint64_t)llround(p50 * 6);
}

static void fleet__figures(const struct fleet_config *c, size_t cls, const char *version,
                           bool has_incumbent, struct fleet_rng *rng, struct fleet_install *out)
{
    const struct fleet_class *k = &c->classes[cls];
    struct mf_report *r = &out->report;
    const uint64_t n = c->eval_n;
    bool regressed = version && c->regress_version[0] && strcmp(version, c->regress_version) == 0;
    double d = regressed ? c->regress_points / 100.0 : 0.0; /* expected drop */
    double lat = regressed ? c->regress_latency : 1.0;

    memset(r, 0, sizeof *r);
    r->model = c->model;
    r->hw_class = k->name;
    r->agent_version = c->agent_version;
    r->runtime = c->runtime;
    r->runtime_version = c->runtime_version;
    r->warmup = 5;
    r->threads = 0;
    r->eval_hash = c->eval_hash;
    r->n = n;
    r->metric = "top1";
    r->model_bytes = c->model_bytes;
    r->valid = true;

    /* incumbent: its accuracy on this device, and how many items it gets right */
    double a_inc = fleet__clamp(k->accuracy + k->accuracy_sd * fleet_rng_normal(rng), 0.0, 1.0);
    uint64_t inc_right = (uint64_t)llround(a_inc * (double)n);
    /* disagreements: each goes the incumbent's way with a probability that
     * makes the expected (c - b) / n equal to the drop d */
    double q = fleet__clamp(k->disagree + fabs(d), 0.0, 1.0);
    uint64_t dis = fleet__binomial(rng, n, q);
    double pc = q > 0 ? fleet__clamp((q + d) / (2 * q), 0.0, 1.0) : 0.5;
    uint64_t only_inc = fleet__binomial(rng, dis, pc), only_cand = dis - only_inc;
    if (only_inc > inc_right)
        only_inc = inc_right;
    if (only_cand > n - inc_right)
        only_cand = n - inc_right;
    uint64_t both = inc_right - only_inc;
    uint64_t neither = n - both - only_inc - only_cand;
    uint64_t cand_right = both + only_cand;

    double p50 = k->p50_us * exp(k->latency_sd * fleet_rng_normal(rng));
    double p99 = p50 * (k->p99_us / k->p50_us) * exp(k->latency_sd / 2 * fleet_rng_normal(rng));
    double f50 = lat * exp(k->ratio_sd * fleet_rng_normal(rng));
    double f99 = lat * exp(k->ratio_sd * fleet_rng_normal(rng));

    r->candidate.accuracy = (double)cand_right / (double)n;
    r->candidate.correct = cand_right;
    fleet__latency(p50 * f50, p99 * f99, n, &r->candidate);
    r->candidate.peak_rss_bytes = k->rss_bytes;
    r->has_incumbent = has_incumbent;
    if (has_incumbent) {
        r->incumbent.accuracy = (double)inc_right / (double)n;
        r->incumbent.correct = inc_right;
        fleet__latency(p50, p99, n, &r->incumbent);
        r->incumbent.peak_rss_bytes = k->rss_bytes;
        r->both = both;
        r->only_candidate = only_cand;
        r->only_incumbent = only_inc;
        r->neither = neither;
        r->p50_ratio = (double)r->candidate.p50_us / (double)r->incumbent.p50_us;
        r->p99_ratio = (double)r->candidate.p99_us / (double)r->incumbent.p99_us;
        r->drop = ((double)only_inc - (double)only_cand) / (double)n;
        r->mcnemar_p = mf_stats_binom_tail_half(only_inc + only_cand, only_inc);
    }
    r->pass = true;
}

void fleet_install_draw(const struct fleet_config *c, size_t cls, const char *version,
                        bool has_incumbent, struct fleet_rng *rng, struct fleet_install *out)
{
    const struct fleet_class *k = &c->classes[cls];
    double u = fleet_rng_uniform(rng);

    memset(out, 0, sizeof *out);
    if (u < k->download_failed) {
        out->outcome = FLEET_DOWNLOAD_FAILED;
        return;
    }
    fleet__figures(c, cls, version, has_incumbent, rng, out);
    struct mf_report *r = &out->report;
    struct mf_event_failure *f = &out->failure;
    if (has_incumbent && r->drop > c->device_max_drop) {
        f->check = "max_accuracy_drop";
        f->measured = r->drop;
        f->limit = c->device_max_drop;
        f->excess = r->drop - c->device_max_drop;
        snprintf(out->reason, sizeof out->reason,
                 "accuracy drop %.4f against the incumbent is above the limit %.4f by %.4f",
                 f->measured, f->limit, f->excess);
    } else if (u < k->download_failed + k->refused) {
        /* a refusal by the device's latency budget (noise, not the version) */
        f->check = "latency_p99_ms";
        f->measured = (double)r->candidate.p99_us / 1000.0;
        f->limit = f->measured * 0.9;
        f->excess = f->measured - f->limit;
        snprintf(out->reason, sizeof out->reason,
                 "p99 latency %.3f ms is above the budget %.3f ms by %.3f ms", f->measured,
                 f->limit, f->excess);
    } else {
        out->outcome = FLEET_ACTIVATED;
        return;
    }
    f->reason = out->reason;
    r->pass = false;
    r->failures = f;
    r->n_failures = 1;
    out->outcome = FLEET_REFUSED;
}

void fleet_report_draw(const struct fleet_config *c, size_t cls, struct fleet_rng *rng,
                       struct fleet_install *out)
{
    memset(out, 0, sizeof *out);
    fleet__figures(c, cls, NULL, true, rng, out);
    out->outcome = FLEET_ACTIVATED;
}
