/* hash.h — BLAKE2b-256 (libsodium crypto_generichash), the content hash of
 * every payload file and of stored blobs. Streaming, so a file is hashed while
 * it is written. */
#ifndef MF_HASH_H
#define MF_HASH_H

#include <sodium.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define MF_HASH_BYTES 32
#define MF_HASH_HEX   (2 * MF_HASH_BYTES + 1)

struct mf_hash {
    crypto_generichash_state st;
};

void mf_hash_init(struct mf_hash *h);
void mf_hash_update(struct mf_hash *h, const void *p, size_t n);
void mf_hash_final(struct mf_hash *h, uint8_t out[MF_HASH_BYTES]);
/* One-shot. */
void mf_hash_bytes(uint8_t out[MF_HASH_BYTES], const void *p, size_t n);
/* Hashes a whole file; fills *size with its length when size is not NULL. */
MF_MUST_CHECK enum mf_err mf_hash_file(const char *path, uint8_t out[MF_HASH_BYTES], uint64_t *size,
                                       struct mf_diag *diag);

/* Calls sodium_init() once; aborts if libsodium cannot start. */
void mf_crypto_init(void);

#endif
