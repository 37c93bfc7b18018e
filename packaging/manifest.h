/* manifest.h — manifest.json, format 1.x (see docs/package-format.md).
 * Parsing validates everything a verifier relies on: types, names, paths,
 * sizes, hashes, thresholds; a manifest that parses is safe to act on.
 * A higher major format version is refused; a higher minor version is read
 * with its unknown fields ignored (within 1.0 an unknown field is an error). */
#ifndef MF_PKG_MANIFEST_H
#define MF_PKG_MANIFEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "common/err.h"
#include "common/hash.h"
#include "common/semver.h"

#define MF_MANIFEST_MAJOR 1
#define MF_MANIFEST_MINOR 0
#define MF_MANIFEST_MAX   (1u << 20) /* default cap on manifest.json, bytes */
#define MF_NAME_MAX       64         /* model names, hardware classes, runtimes */
#define MF_PATH_MAX       255        /* payload paths */
#define MF_FILES_MAX      4096       /* payload files in one package */

struct mf_manifest_file {
    char *path; /* owned, validated by mf_pkg_path_check */
    uint64_t size;
    uint8_t hash[MF_HASH_BYTES]; /* BLAKE2b-256 of the content */
};

struct mf_manifest {
    unsigned format_major, format_minor;
    char *model;   /* [A-Za-z0-9][A-Za-z0-9._-]*, at most MF_NAME_MAX */
    char *version; /* semantic version text */
    struct mf_semver semver;
    int64_t created;                /* seconds since the epoch */
    struct mf_strlist hardware;     /* hardware classes, at least one */
    char *runtime;                  /* "onnx", "tensorrt", "tflite", ... */
    char *entry;                    /* the model file the runner loads; listed in files */
    struct mf_manifest_file *files; /* sorted by path (bytewise), unique */
    size_t n_files;
    struct {
        char *inputs; /* .npy, listed in files */
        char *labels; /* .npy, listed in files */
        char *metric; /* "top1" */
        uint64_t n;   /* number of evaluation items */
    } eval;
    struct {
        double min_accuracy;      /* [0, 1] */
        double max_accuracy_drop; /* [0, 1], vs the incumbent model */
        double latency_p99_ms;    /* 0 = no budget */
        uint64_t memory_bytes;    /* 0 = no budget */
    } thresholds;
    char *min_agent_version; /* semantic version */
    json_t *metadata;        /* owned JSON object, free-form */
};

/* Parses and validates manifest bytes. On success *out is owned by the caller
 * (mf_manifest_free). diag->where names the field ("files[2].size"). */
MF_MUST_CHECK enum mf_err mf_manifest_parse(const uint8_t *bytes, size_t len,
                                            struct mf_manifest **out, struct mf_diag *diag);
/* Canonical JSON text of a manifest (caller frees); deterministic. */
char *mf_manifest_format(const struct mf_manifest *m, size_t *len);
/* The manifest as a JSON object (caller decrefs). */
json_t *mf_manifest_to_json(const struct mf_manifest *m);
/* Borrowed pointer to the file entry for path, or NULL. */
const struct mf_manifest_file *mf_manifest_find(const struct mf_manifest *m, const char *path);
/* Sum of the declared file sizes. */
uint64_t mf_manifest_payload_bytes(const struct mf_manifest *m);
void mf_manifest_free(struct mf_manifest *m);

/* Checks a payload path: relative, '/'-separated components of [A-Za-z0-9._-],
 * none empty, "." or "..", at most MF_PATH_MAX bytes, not a reserved name.
 * Returns MF_OK or MF_ERR_UNSAFE_PATH with *why set to a static reason. */
enum mf_err mf_pkg_path_check(const char *path, const char **why);
/* Checks a model / hardware-class / runtime name. */
bool mf_pkg_name_ok(const char *name);

#endif
