/* hostile.h — the catalogue of broken and malicious packages. Each case
 * builds one .mfpkg file from scratch (raw libarchive, so it can write what
 * `pack` never would) and states the exact refusal expected from the
 * verifier. The same table drives tests/unit/test_hostile.c and the
 * `mf-hostile-gen DIR` tool that writes the fixtures out for people and
 * fuzzers. Keys come from fixed seeds: HOSTILE_TRUSTED is the verifier's. */
#ifndef MF_TEST_HOSTILE_H
#define MF_TEST_HOSTILE_H

#include <stdint.h>

#include "common/err.h"
#include "packaging/key.h"

struct hostile_ctx {
    const char *path;    /* where the case writes its package */
    const char *sandbox; /* the directory holding path and staging */
    struct mf_key_secret trusted, stranger;
};

struct hostile_case {
    const char *name;
    void (*build)(const struct hostile_ctx *c);
    enum mf_err expect;
    const char *message;  /* a substring the diagnostic must contain */
    uint64_t disk_budget; /* verifier option for this case, 0 = none */
};

extern const struct hostile_case hostile_cases[];
extern const size_t hostile_ncases;

void hostile_ctx_init(struct hostile_ctx *c, const char *sandbox, const char *path);
/* A valid package signed by the trusted key (the control case). */
void hostile_build_valid(const struct hostile_ctx *c);

#endif
