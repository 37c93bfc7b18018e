/* devmsg.h — the messages a device sends (docs/protocol.md): its state
 * (retained), events and benchmark reports, plus the MQTT topic names.
 * The agent writes them with the mf_devmsg_*_format builders; the server
 * checks each one it receives with mf_devmsg_check (size cap, strict schema,
 * device id equal to the topic's) before it uses any field.
 *
 * Every message is one compact JSON object carrying "device" and "msg": a
 * number that grows by one with every event or report the device ever
 * produces (kept in its spool, so it survives restarts). Delivery is at least
 * once (MQTT QoS 1, resent from the spool after a cut), so a receiver drops a
 * (device, msg) it has already stored. The state message carries the "msg" of
 * the last event produced before it, so state and events can be ordered. */
#ifndef MF_TELEMETRY_DEVMSG_H
#define MF_TELEMETRY_DEVMSG_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define MF_DEVMSG_MAX        (64u * 1024) /* any device message, bytes */
#define MF_DEVMSG_DEPTH      8            /* JSON nesting */
#define MF_DEVMSG_TEXT_MAX   512 /* "detail", warnings, failure reasons: longer text is cut */
#define MF_DEVMSG_TOKEN_MAX  64  /* "reason", "origin", "check", op kind/phase, metric */
#define MF_DEVMSG_ITEMS_MAX  16  /* failures, warnings, runtimes: more are left out */
#define MF_DEVMSG_MODELS_MAX 64  /* models in a state message: more are left out */
#define MF_TOPIC_MAX         160 /* "mf/v1/d/<device>/<kind>" + NUL */
#define MF_TOPIC_PREFIX      "mf/v1/d/"

enum mf_devmsg_kind {
    MF_DEVMSG_STATE = 0, /* "state"   device->server, QoS 1, retained */
    MF_DEVMSG_EVENT,     /* "event"   device->server, QoS 1 */
    MF_DEVMSG_REPORT,    /* "report"  device->server, QoS 1 */
    MF_DEVMSG_DESIRED,   /* "desired" server->device, QoS 1, retained (desired.h) */
    MF_DEVMSG_ONLINE,    /* "online"  "1" / "0" (last will), QoS 1, retained */
    MF_DEVMSG__COUNT
};

/* "state", "event", ...; never NULL. */
const char *mf_devmsg_kind_name(enum mf_devmsg_kind k);

/* Writes "mf/v1/d/<device>/<kind>" into out. MF_ERR_USAGE when the device id
 * is not a valid name (mf_pkg_name_ok) — so no '+', '#' or '/' can reach a
 * topic — or the result would not fit. */
MF_MUST_CHECK enum mf_err mf_topic(char out[MF_TOPIC_MAX], const char *device,
                                   enum mf_devmsg_kind kind);
/* Splits a topic of that shape; device gets the id. MF_ERR_PARSE otherwise. */
MF_MUST_CHECK enum mf_err mf_topic_parse(const char *topic, char device[MF_TOPIC_MAX],
                                         enum mf_devmsg_kind *kind);

/* ---- events ---- */

/* Stable names: the "kind" field (docs/agent.md says what each means). */
enum mf_event_kind {
    MF_EVENT_DESIRED_ACCEPTED = 0, /* "desired_accepted": a desired state passed every check */
    MF_EVENT_DESIRED_REFUSED,      /* "desired_refused": reason = the failed check */
    MF_EVENT_DOWNLOAD_FAILED,      /* "download_failed": reason = mf_errname() */
    MF_EVENT_INSTALL_FAILED,       /* "install_failed": verify / unpack refused the package */
    MF_EVENT_BENCHMARK_FAILED,     /* "benchmark_failed": reason = runner failure name */
    MF_EVENT_REFUSED,              /* "refused": the gate said no; failures[] says why */
    MF_EVENT_ACTIVATED,            /* "activated": version now current (from = old one) */
    MF_EVENT_ROLLED_BACK,          /* "rolled_back": previous made current again */
    MF_EVENT_HOOK_FAILED,          /* "hook_failed": the post-activation hook failed */
    MF_EVENT_RECOVERED,            /* "recovered": an operation cut by a crash, resolved */
    MF_EVENT__COUNT
};
const char *mf_event_kind_name(enum mf_event_kind k);

/* One failed gate threshold (agent/gate.h's failure, restated here so the
 * telemetry library does not depend on the agent). */
struct mf_event_failure {
    const char *check; /* "min_accuracy", "max_accuracy_drop", "latency_p99_ms", "memory_bytes" */
    double measured, limit, excess;
    const char *reason; /* the sentence */
};

/* An event. Pointers are borrowed; NULL or "" strings and zero numbers marked
 * "optional" are left out of the JSON, and so are a model, version or package
 * that is not valid (a name, a semantic version, 64 lowercase hex). Tokens
 * (origin, reason, check) keep [A-Za-z0-9._-] and get '_' for any other byte,
 * cut to MF_DEVMSG_TOKEN_MAX; text is made valid UTF-8, control characters
 * become spaces, cut to MF_DEVMSG_TEXT_MAX bytes on a character boundary. */
struct mf_event {
    const char *device;
    uint64_t msg; /* message number, >= 1 */
    int64_t time; /* device clock, seconds (informational: clocks are not trusted) */
    enum mf_event_kind kind;
    const char *origin;       /* optional: "desired", "local", "recovery" */
    const char *model;        /* optional */
    const char *version;      /* optional: the version the event is about */
    const char *package;      /* optional: its package id */
    const char *from_version; /* optional: what was current before (activated, rolled_back) */
    uint64_t desired_seq;     /* optional */
    int64_t rollout;          /* optional */
    const char *reason; /* optional: stable token ("stale", "hash_mismatch", "runner_timeout") */
    const char *detail; /* optional: one sentence for people, cut to MF_DEVMSG_TEXT_MAX */
    const struct mf_event_failure *failures; /* refused: what failed */
    size_t n_failures;
};

/* Compact JSON of e (caller frees); what it writes always passes
 * mf_devmsg_check. NULL e, an invalid device id, msg 0 or an unknown kind are
 * programmer errors (MF_ASSERT). */
char *mf_devmsg_event_format(const struct mf_event *e, size_t *len);

/* ---- benchmark reports (DESIGN.md "Benchmark report") ---- */

struct mf_report_model { /* one model's run on the evaluation set */
    const char *version;
    const char *package;
    double accuracy; /* top-1, correct / n */
    uint64_t correct;
    uint64_t load_us, first_us;
    uint64_t count; /* timed samples */
    double mean_us, stddev_us;
    uint64_t p50_us, p90_us, p99_us, max_us;
    uint64_t peak_rss_bytes;
};

struct mf_report {
    /* identity */
    const char *device, *hw_class, *model, *agent_version;
    const char *runtime, *runtime_version;
    uint64_t msg;
    int64_t time;
    uint64_t desired_seq; /* optional */
    int64_t rollout;      /* optional */
    /* run config */
    unsigned warmup, threads; /* threads 0 = the runner's choice */
    /* accuracy */
    const char *eval_hash; /* BLAKE2b-256 hex of the eval inputs file */
    uint64_t n;
    const char *metric; /* "top1" */
    uint64_t model_bytes;
    struct mf_report_model candidate;
    bool has_incumbent; /* then incumbent, paired and ratios are set */
    struct mf_report_model incumbent;
    uint64_t both, only_candidate, only_incumbent, neither;
    double p50_ratio, p99_ratio; /* candidate / incumbent */
    /* the gate */
    bool pass;
    double drop, mcnemar_p;
    const struct mf_event_failure *failures;
    size_t n_failures;
    /* validity */
    bool valid;                  /* false: the figures must not be used (e.g. a runner failed) */
    const char *const *warnings; /* each cut to MF_DEVMSG_TEXT_MAX */
    size_t n_warnings;
};

/* Compact JSON of r (caller frees), always passing mf_devmsg_check. The
 * identifiers (device, hw_class, model, runtime: names; agent_version and the
 * versions: semver; packages and eval_hash: 64 lowercase hex) come from
 * validated config and manifests: an invalid one, or msg 0, is a programmer
 * error (MF_ASSERT). Latencies go out as integer microseconds (the doubles
 * rounded); accuracy, drop, p-value and ratios as JSON reals, clamped to their
 * ranges; ratios that are not finite are left out. desired_seq / rollout are
 * left out when 0; drop and mcnemar_p are written only with an incumbent. */
char *mf_devmsg_report_format(const struct mf_report *r, size_t *len);

/* ---- state (retained) ---- */

struct mf_state_msg_model {
    const char *name, *version, *package;
    const char *previous_version, *previous_package; /* optional (NULL: no previous) */
};

struct mf_state_msg {
    const char *device, *hw_class, *agent_version;
    uint64_t msg; /* the last event/report number produced so far (0: none yet) */
    int64_t time;
    uint64_t desired_seq;
    const char *const *runtimes; /* the runtimes this device runs */
    size_t n_runtimes;
    const struct mf_state_msg_model *models;
    size_t n_models;
    const char *op_kind, *op_model, *op_version, *op_phase; /* optional: the op in flight */
    uint64_t disk_free, mem_available;                      /* bytes */
    uint64_t spool_dropped; /* events/reports dropped because the spool was full */
};

/* Compact JSON of s (caller frees), always passing mf_devmsg_check. An
 * invalid device, hw_class, agent_version, runtime or model identifier is a
 * programmer error (MF_ASSERT). "previous" is null unless both previous_*
 * are set; "op" is null unless op_kind is set (its model, version and phase
 * are each left out when NULL or ""). */
char *mf_devmsg_state_format(const struct mf_state_msg *s, size_t *len);

/* ---- checking what arrives (the server's side) ---- */

/* Checks a received state, event or report payload: at most MF_DEVMSG_MAX
 * bytes, JSON within MF_DEVMSG_DEPTH, every required field present with its
 * type and range, no unknown field (v1), strings valid names / hashes where
 * the schema says so, and "device" equal to topic_device. On success *out
 * (caller json_decref's) is the parsed object. Errors: MF_ERR_TOO_LARGE,
 * MF_ERR_PARSE, MF_ERR_SCHEMA (diag->where is the field's path, e.g.
 * "candidate.latency.p99_us", "gate.failures[0].limit"; "" for the whole
 * message), MF_ERR_WRONG_TARGET (where "device"); MF_ERR_USAGE for another
 * kind (desired, online). Fields are checked one by one, not against each
 * other (correct <= n is the aggregator's business). *out is written and diag
 * (may be NULL) filled only as the result says; topic_device must not be NULL. */
MF_MUST_CHECK enum mf_err mf_devmsg_check(enum mf_devmsg_kind kind, const uint8_t *payload,
                                          size_t len, const char *topic_device, json_t **out,
                                          struct mf_diag *diag);

#endif
