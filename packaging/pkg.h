/* pkg.h — reading .mfpkg packages: verify, verify + extract, inspect, sign.
 *
 * Every reader makes one streaming pass and checks, in this order: the tar
 * layout (manifest.json first, manifest.sig second, size caps), the signature
 * over the exact manifest bytes (before the manifest is parsed), the manifest
 * itself, the disk budget and the agent version, then each payload entry: a regular file, a safe
 * path, listed, not seen before, the listed size, hashed while it streams and
 * compared with the listed BLAKE2b-256; at the end, every listed file present.
 * Extraction writes only below a staging directory it creates itself and
 * removes that directory on any failure. */
#ifndef MF_PKG_PKG_H
#define MF_PKG_PKG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "packaging/key.h"
#include "packaging/manifest.h"
#include "packaging/sig.h"

#define MF_PKG_EXT ".mfpkg"

struct mf_pkg_opts {
    uint64_t disk_budget; /* refuse when the declared sizes exceed it; 0 = no limit */
    size_t manifest_max;  /* cap on manifest.json, at most MF_MANIFEST_MAX; 0 = that */
    bool fsync;           /* extract: fsync files and directories before returning */
    /* The installing agent's version: a package whose min_agent_version is
     * newer is refused (MF_ERR_VERSION) before any payload byte. NULL = skip. */
    const char *agent_version;
};

struct mf_pkg_result {
    struct mf_manifest *manifest; /* owned */
    uint8_t *manifest_bytes;      /* owned: the exact signed bytes */
    size_t manifest_len;
    struct mf_sigset sigs;          /* every signature found */
    char signer[MF_KEY_ID_LEN + 1]; /* the trusted key that verified, or "" */
    bool zstd;                      /* the archive was zstd-compressed */
    uint64_t payload_bytes;         /* bytes of payload verified */
};

/* Checks signature (when trust is not NULL) and every payload byte.
 * trust == NULL checks structure and hashes only (e.g. a server receiving an
 * unsigned upload it will sign itself). On success *out is filled and owned by
 * the caller (mf_pkg_result_free); on failure it is untouched. */
MF_MUST_CHECK enum mf_err mf_pkg_verify(const char *path, const struct mf_keyring *trust,
                                        const struct mf_pkg_opts *opts, struct mf_pkg_result *out,
                                        struct mf_diag *diag);
/* Same, from memory (fuzzing, small uploads). */
MF_MUST_CHECK enum mf_err mf_pkg_verify_buffer(const void *data, size_t len,
                                               const struct mf_keyring *trust,
                                               const struct mf_pkg_opts *opts,
                                               struct mf_pkg_result *out, struct mf_diag *diag);
/* Verifies and extracts in one pass into `staging`, which must not exist (its
 * parent must). On failure staging is removed and the reason returned. */
MF_MUST_CHECK enum mf_err mf_pkg_extract(const char *path, const struct mf_keyring *trust,
                                         const char *staging, const struct mf_pkg_opts *opts,
                                         struct mf_pkg_result *out, struct mf_diag *diag);
MF_MUST_CHECK enum mf_err mf_pkg_extract_buffer(const void *data, size_t len,
                                                const struct mf_keyring *trust, const char *staging,
                                                const struct mf_pkg_opts *opts,
                                                struct mf_pkg_result *out, struct mf_diag *diag);
/* Reads only the manifest and signatures (no payload, no signature check) —
 * for showing what a package claims to be. */
MF_MUST_CHECK enum mf_err mf_pkg_inspect(const char *path, struct mf_pkg_result *out,
                                         struct mf_diag *diag);
/* Adds or replaces k's signature, rewriting the package atomically in one
 * verifying pass (a package whose payload does not match its manifest is not
 * signed). Other keys' signatures are kept. */
MF_MUST_CHECK enum mf_err mf_pkg_sign(const char *path, const struct mf_key_secret *k,
                                      struct mf_pkg_result *out, struct mf_diag *diag);
void mf_pkg_result_free(struct mf_pkg_result *r);

#endif
