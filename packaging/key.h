/* key.h — Ed25519 signing keys (libsodium) and their text files.
 *
 *   PREFIX.key (mode 0600)          PREFIX.pub
 *   modelfleet-secret-key v1        modelfleet-public-key v1
 *   key-id: <16 hex>                key-id: <16 hex>
 *   secret-key: <base64, 64 B>      public-key: <base64, 32 B>
 *
 * The key id is the hex of the first 8 bytes of BLAKE2b-256(public key); a
 * loader recomputes it and refuses a file whose id does not match. */
#ifndef MF_PKG_KEY_H
#define MF_PKG_KEY_H

#include <sodium.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define MF_KEY_ID_LEN 16 /* hex characters */

struct mf_key_pub {
    uint8_t pk[crypto_sign_PUBLICKEYBYTES];
    char id[MF_KEY_ID_LEN + 1];
};

struct mf_key_secret {
    uint8_t sk[crypto_sign_SECRETKEYBYTES]; /* libsodium layout: seed || pk */
    struct mf_key_pub pub;
};

/* Trusted public keys, e.g. the server's current and next signing key. */
struct mf_keyring {
    struct mf_key_pub *keys; /* owned */
    size_t n;
};

void mf_key_generate(struct mf_key_secret *out);
/* Deterministic key from a 32-byte seed (tests and fixtures only). */
void mf_key_from_seed(struct mf_key_secret *out, const uint8_t seed[crypto_sign_SEEDBYTES]);
/* Computes the key id of a public key. */
void mf_key_id(const uint8_t pk[crypto_sign_PUBLICKEYBYTES], char id[MF_KEY_ID_LEN + 1]);

/* Text of the key files (caller frees). */
char *mf_key_secret_format(const struct mf_key_secret *k);
char *mf_key_pub_format(const struct mf_key_pub *k);
/* Parse key file text; MF_ERR_KEY with the reason on any deviation. */
MF_MUST_CHECK enum mf_err mf_key_secret_parse(const char *text, struct mf_key_secret *out,
                                              struct mf_diag *diag);
MF_MUST_CHECK enum mf_err mf_key_pub_parse(const char *text, struct mf_key_pub *out,
                                           struct mf_diag *diag);
/* Writes PREFIX.key (0600, refuses to overwrite) and PREFIX.pub. */
MF_MUST_CHECK enum mf_err mf_key_write_pair(const struct mf_key_secret *k, const char *prefix,
                                            struct mf_diag *diag);
MF_MUST_CHECK enum mf_err mf_key_secret_load(const char *path, struct mf_key_secret *out,
                                             struct mf_diag *diag);
MF_MUST_CHECK enum mf_err mf_key_pub_load(const char *path, struct mf_key_pub *out,
                                          struct mf_diag *diag);

/* Adds a key (a duplicate id is ignored). */
void mf_keyring_add(struct mf_keyring *r, const struct mf_key_pub *k);
/* Loads a public key file into the ring. */
MF_MUST_CHECK enum mf_err mf_keyring_load(struct mf_keyring *r, const char *path,
                                          struct mf_diag *diag);
/* Borrowed pointer to the key with this id, or NULL. */
const struct mf_key_pub *mf_keyring_find(const struct mf_keyring *r, const char *id);
void mf_keyring_free(struct mf_keyring *r);

#endif
