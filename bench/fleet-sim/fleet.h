/* fleet.h — what the fleet simulator (mf-fleet-sim) draws for its devices:
 * the configuration (hardware classes with their share of the fleet and the
 * distributions of their benchmark figures, the incumbent model version, an
 * injected regression, the reaction delay) and the outcome of one install:
 * download failure, refusal by the device's own gate or activation, with the
 * benchmark report the device sends. Pure: the random stream is passed in. */
#ifndef MF_BENCH_FLEET_H
#define MF_BENCH_FLEET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/hash.h"
#include "telemetry/devmsg.h"

#define FLEET_CLASSES_MAX 32

struct fleet_class {
    char name[65];
    double share;          /* relative weight in the fleet */
    double accuracy;       /* mean incumbent accuracy on the evaluation set */
    double accuracy_sd;    /* device-to-device spread of that accuracy */
    double disagree;       /* share of items where a good candidate and the incumbent disagree */
    double p50_us, p99_us; /* incumbent latency */
    double latency_sd;     /* log-normal spread of the incumbent latency between devices */
    double ratio_sd;       /* log-normal noise of candidate / incumbent on one device */
    double download_failed, refused; /* probabilities per install */
    uint64_t rss_bytes;
};

struct fleet_config {
    char model[65];
    char agent_version[33];
    char runtime[65], runtime_version[65];
    char eval_hash[MF_HASH_HEX];
    uint64_t eval_n;
    char incumbent_version[65]; /* what every device runs at start ("" = nothing) */
    char incumbent_package[MF_HASH_HEX];
    uint64_t model_bytes;
    double device_max_drop; /* the device's own gate: refuse a drop above this */
    unsigned delay_ms;      /* from a desired state to its events and report */
    double delay_jitter;    /* the delay is uniform in delay * [1 - j, 1 + j] */
    /* the injected regression */
    char regress_version[65]; /* "" = none */
    double regress_points;    /* accuracy points lost (2 = 0.02) */
    double regress_latency;   /* latency factor (1.5 = 50% slower) */
    struct fleet_class classes[FLEET_CLASSES_MAX];
    size_t n_classes;
};

/* Loads the JSON configuration at path (NULL: the built-in defaults). Unknown
 * keys are errors. */
MF_MUST_CHECK enum mf_err fleet_config_load(const char *path, struct fleet_config *out,
                                            struct mf_diag *diag);

/* The class of device number i (deterministic: a hash of i against the
 * shares), so the enrollment and the simulator agree. */
size_t fleet_class_of(const struct fleet_config *c, uint64_t i);

/* A small, fast, seeded random stream (splitmix64). */
struct fleet_rng {
    uint64_t s;
};
uint64_t fleet_rng_next(struct fleet_rng *r);
double fleet_rng_uniform(struct fleet_rng *r); /* [0, 1) */
double fleet_rng_normal(struct fleet_rng *r);  /* N(0, 1) */

enum fleet_outcome { FLEET_DOWNLOAD_FAILED, FLEET_REFUSED, FLEET_ACTIVATED };

/* One install of `version` on a device of class cls that runs the incumbent:
 * the outcome and, unless the download failed, the report figures. The
 * caller fills the report's identity (device, msg, time, seq, rollout) and
 * the package ids. failure (for a refusal) points into *out. */
struct fleet_install {
    enum fleet_outcome outcome;
    struct mf_report report;
    struct mf_event_failure failure;
    char reason[160];
};
void fleet_install_draw(const struct fleet_config *c, size_t cls, const char *version,
                        bool has_incumbent, struct fleet_rng *rng, struct fleet_install *out);

/* A flood report: the same shape, figures drawn as above (gate passed). */
void fleet_report_draw(const struct fleet_config *c, size_t cls, struct fleet_rng *rng,
                       struct fleet_install *out);

#endif
