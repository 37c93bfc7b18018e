/* state.h — the agent's state file, <state_dir>/state.json: which package each
 * model runs (current) and ran before (previous), the last desired-state seq
 * applied, the operation in flight and a few counters. The agent saves it
 * before every side effect (mf_state_save: temp file, fsync, rename, fsync the
 * directory), so after a power cut it reads either the old or the new state,
 * never a mix. Loading is strict: a file that does not parse as format 1
 * exactly is MF_ERR_PARSE with the reason, never half-read.
 *
 *   {"format": 1, "device": "pi-0042", "desired_seq": 17, "desired_done": true,
 *    "models": [{"name": "digits",
 *                "current":  {"slot": "1.1.0-3f2a...", "package": "<64 hex>", "version": "1.1.0"},
 *                "previous": {...} | null}],
 *    "op": null | {"kind": "install", "model": "digits", "package": "<64 hex>",
 *                  "version": "1.2.0", "slot": "" | "<slot>", "phase": "extract",
 *                  "started": 1767225600},
 *    "counters": {"spool_dropped": 0, "events_sent": 0}}
 *
 * Extending format 1: a new field is optional with a default (so older files
 * still load); an older agent refuses a newer file's unknown field. A change
 * an older agent must not misread raises the format number. */
#ifndef MF_AGENT_STATE_H
#define MF_AGENT_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "common/err.h"
#include "common/hash.h"
#include "common/semver.h"
#include "packaging/manifest.h"

#define MF_STATE_FILE       "state.json"
#define MF_STATE_FORMAT     1
#define MF_STATE_MAX        (1u << 20) /* cap on the file, bytes */
#define MF_STATE_MODELS_MAX 1024
/* A slot name: "<version>-<16 lowercase hex>" (see install.h). */
#define MF_STATE_SLOT_MAX (MF_SEMVER_MAX + 1 + 16 + 1)

/* One installed package of a model. slot[0] == '\0' means "none". */
struct mf_state_version {
    char slot[MF_STATE_SLOT_MAX];
    char package[MF_HASH_HEX]; /* package id: BLAKE2b-256 of the signed blob, 64 hex */
    char version[MF_SEMVER_MAX];
};

struct mf_state_model {
    char name[MF_NAME_MAX + 1];
    struct mf_state_version current; /* always set in a saved model */
    struct mf_state_version previous;
};

enum mf_state_op_kind {
    MF_STATE_OP_NONE = 0,
    MF_STATE_OP_INSTALL,  /* "install": download, extract, benchmark, activate */
    MF_STATE_OP_ACTIVATE, /* "activate": switch to an installed slot */
    MF_STATE_OP_ROLLBACK, /* "rollback": swap current and previous */
};

enum mf_state_phase {
    MF_STATE_PHASE_DOWNLOAD = 0, /* "download" */
    MF_STATE_PHASE_EXTRACT,      /* "extract" */
    MF_STATE_PHASE_BENCHMARK,    /* "benchmark" */
    MF_STATE_PHASE_ACTIVATE,     /* "activate" */
};

/* The operation in flight; kind == MF_STATE_OP_NONE when idle. */
struct mf_state_op {
    enum mf_state_op_kind kind;
    char model[MF_NAME_MAX + 1];
    char package[MF_HASH_HEX];
    char version[MF_SEMVER_MAX];
    char slot[MF_STATE_SLOT_MAX]; /* the target slot once known, else "" */
    enum mf_state_phase phase;
    int64_t started; /* informational: wall-clock seconds or a counter, >= 0 */
};

struct mf_state_counters {
    uint64_t spool_dropped; /* events dropped because the spool was full */
    uint64_t events_sent;
};

struct mf_state {
    bool fresh; /* not stored: true when mf_state_load found no file */
    char device[MF_NAME_MAX + 1];
    uint64_t desired_seq;          /* last desired-state seq accepted, 0 = none */
    bool desired_done;             /* every model of that desired state was tried (activated or
                                      refused); false: re-apply <state_dir>/desired.msg on start.
                                      Optional in the file, default true. */
    struct mf_state_model *models; /* owned, sorted by name, unique */
    size_t n_models;
    struct mf_state_op op;
    struct mf_state_counters counters;
};

/* An empty state (no device, no models, no op). Caller frees. */
struct mf_state *mf_state_new(void);
void mf_state_free(struct mf_state *s);

/* Parses state.json bytes. On success *out is the caller's (mf_state_free).
 * MF_ERR_PARSE for anything that is not a valid format-1 state (malformed or
 * truncated JSON, a missing, unknown or ill-typed field), with diag->where
 * naming the field; MF_ERR_VERSION for another format number. */
MF_MUST_CHECK enum mf_err mf_state_parse(const uint8_t *bytes, size_t len, struct mf_state **out,
                                         struct mf_diag *diag);
/* The file text for s (caller frees); deterministic. */
char *mf_state_format(const struct mf_state *s, size_t *len);

/* Reads <state_dir>/state.json (at most MF_STATE_MAX bytes). A missing file
 * gives MF_OK and a fresh empty state with s->fresh set. Errors as for
 * mf_state_parse, diag->where prefixed with the path; MF_ERR_TOO_LARGE, IO. */
MF_MUST_CHECK enum mf_err mf_state_load(const char *state_dir, struct mf_state **out,
                                        struct mf_diag *diag);
/* Writes s atomically (temp in state_dir, fsync, rename, fsync state_dir).
 * The text is checked to parse back first: a state that would not load is
 * MF_ERR_USAGE and nothing is written (e.g. an empty device id). */
MF_MUST_CHECK enum mf_err mf_state_save(const char *state_dir, const struct mf_state *s,
                                        struct mf_diag *diag);
/* Removes temp files an interrupted save left in state_dir; each removed name
 * is appended to `removed` when not NULL. */
enum mf_err mf_state_recover(const char *state_dir, struct mf_strlist *removed);

/* The entry for `name` (borrowed, valid until the next change of s->models),
 * or NULL. With create, a missing entry is added (zeroed, name set); name
 * must then pass mf_pkg_name_ok (programmer error: abort otherwise). */
struct mf_state_model *mf_state_model(struct mf_state *s, const char *name, bool create);
/* Removes the entry for name; no-op when absent. */
void mf_state_model_remove(struct mf_state *s, const char *name);

/* Stable tokens ("install", "extract"); never NULL. */
const char *mf_state_op_kind_name(enum mf_state_op_kind k);
const char *mf_state_phase_name(enum mf_state_phase p);

#endif
