/* fuzz_key.h — the fuzzers' signing key: Ed25519 from a fixed, public seed, so
 * the seed packages that make_corpus.sh signs with it verify in fuzz_archive.
 * Public test material: never trust this key anywhere but in a fuzzer. */
#ifndef MF_FUZZ_KEY_H
#define MF_FUZZ_KEY_H

#include "packaging/key.h"

#define FUZZ_KEY_SEED "modelfleet-fuzz-seed-key-v1-0000"

_Static_assert(sizeof FUZZ_KEY_SEED - 1 == crypto_sign_SEEDBYTES, "the seed is 32 bytes");

static inline void fuzz_key_derive(struct mf_key_secret *k)
{
    mf_key_from_seed(k, (const uint8_t *)FUZZ_KEY_SEED);
}

#endif
