/* pack.h — building a .mfpkg from files on disk. Hashes every file, derives
 * the evaluation set size from the labels .npy, writes manifest.json first,
 * manifest.sig second (signed when a key is given, else empty), then the
 * payload sorted by path. Identical inputs give byte-identical packages. */
#ifndef MF_PKG_PACK_H
#define MF_PKG_PACK_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/config.h"
#include "common/err.h"
#include "packaging/key.h"
#include "packaging/manifest.h"

#define MF_PACK_CREATED_UNSET INT64_MIN

struct mf_pack_file {
    const char *path;   /* path inside the package, e.g. "model/net.onnx" */
    const char *source; /* file on disk */
};

struct mf_pack_input {
    const char *model, *version, *runtime, *min_agent_version;
    const struct mf_strlist *hardware;
    const char *entry;       /* package path of the model file */
    const char *eval_inputs; /* package paths of the evaluation .npy files */
    const char *eval_labels;
    const char *metric; /* NULL = "top1" */
    int64_t created;    /* MF_PACK_CREATED_UNSET: newest mtime among the sources */
    double min_accuracy, max_accuracy_drop;
    double latency_p99_ms; /* 0 = none */
    uint64_t memory_bytes; /* 0 = none */
    json_t *metadata;      /* borrowed object, NULL = {} */
    const struct mf_pack_file *files;
    size_t n_files;
    bool zstd;
    const struct mf_key_secret *key; /* optional: sign while packing */
};

/* Writes the package to out_path atomically. The manifest it wrote is
 * returned in *manifest when not NULL (caller frees). */
MF_MUST_CHECK enum mf_err mf_pkg_pack(const struct mf_pack_input *in, const char *out_path,
                                      struct mf_manifest **manifest, struct mf_diag *diag);

#endif
