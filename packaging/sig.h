/* sig.h — manifest.sig: the signatures over manifest.json.
 *
 *   modelfleet-signature v1
 *   ed25519 <key-id> <base64 of the 64-byte detached signature>
 *   ...                                   (at most MF_SIG_MAX_COUNT lines)
 *
 * Each signature is Ed25519 over MF_SIG_CONTEXT followed by the exact bytes of
 * manifest.json. An empty file means "not signed yet". A package may carry
 * several signatures (the publisher's, the server's); it verifies when one
 * signature by a trusted key holds and no signature by a trusted key fails. */
#ifndef MF_PKG_SIG_H
#define MF_PKG_SIG_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "packaging/key.h"

#define MF_SIG_CONTEXT   "modelfleet-manifest-v1\n"
#define MF_SIG_MAGIC     "modelfleet-signature v1"
#define MF_SIG_MAX_COUNT 16
#define MF_SIG_FILE_MAX  4096

struct mf_sig {
    char key_id[MF_KEY_ID_LEN + 1];
    uint8_t sig[crypto_sign_BYTES];
};

struct mf_sigset {
    struct mf_sig v[MF_SIG_MAX_COUNT];
    size_t n;
};

/* Parses manifest.sig; empty text gives an empty set. */
MF_MUST_CHECK enum mf_err mf_sigset_parse(const uint8_t *text, size_t len, struct mf_sigset *out,
                                          struct mf_diag *diag);
/* Text of a set (caller frees); "" for an empty set. */
char *mf_sigset_format(const struct mf_sigset *s);
/* Signs manifest bytes with k, replacing an earlier signature by the same key. */
void mf_sigset_sign(struct mf_sigset *s, const uint8_t *manifest, size_t len,
                    const struct mf_key_secret *k);
/* Checks the set against the manifest bytes and the trusted keys.
 * MF_ERR_UNSIGNED: no signature; MF_ERR_UNKNOWN_KEY: none by a trusted key;
 * MF_ERR_BAD_SIGNATURE: a trusted key's signature does not verify.
 * On success signer (may be NULL) receives the verifying key id. */
MF_MUST_CHECK enum mf_err mf_sigset_check(const struct mf_sigset *s, const uint8_t *manifest,
                                          size_t len, const struct mf_keyring *trust,
                                          char signer[MF_KEY_ID_LEN + 1], struct mf_diag *diag);

#endif
