/* unit_pack.h — fixture packages for the agent's unit tests: a seeded key,
 * and a "digits" package of one model file plus the fixture evaluation set
 * (tests/fixtures/models), packed and signed with packaging/pack.h.
 * Header-only, like unit_tmp.h; the includer defines MF_FIXTURES. */
#ifndef MF_UNIT_PACK_H
#define MF_UNIT_PACK_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/mem.h"
#include "packaging/key.h"
#include "packaging/pack.h"

/* A key from a seed of 32 bytes `b`. */
static void unit_seed_key(struct mf_key_secret *k, uint8_t b)
{
    uint8_t seed[crypto_sign_SEEDBYTES];
    memset(seed, b, sizeof seed);
    mf_key_from_seed(k, seed);
}

/* Packs digits `version` for the hardware classes `hw` from model_src (stored
 * as model/<model_name>), min_accuracy as given, max drop 0.01, into out.
 * *payload_bytes (may be NULL) gets the payload size. */
static enum mf_err unit_pack_digits(const char *version, const char *model_src,
                                    const char *model_name, const struct mf_strlist *hw,
                                    double min_accuracy, const struct mf_key_secret *k,
                                    const char *out, uint64_t *payload_bytes)
{
    char *model_pkg = mf_xasprintf("model/%s", model_name);
    struct mf_pack_file files[] = {
        {model_pkg, model_src},
        {"eval/inputs.npy", MF_FIXTURES "/eval-inputs.npy"},
        {"eval/labels.npy", MF_FIXTURES "/eval-labels.npy"},
    };
    struct mf_pack_input in = {.model = "digits",
                               .version = version,
                               .runtime = "onnx",
                               .hardware = hw,
                               .entry = model_pkg,
                               .eval_inputs = "eval/inputs.npy",
                               .eval_labels = "eval/labels.npy",
                               .created = 1767225600,
                               .min_accuracy = min_accuracy,
                               .max_accuracy_drop = 0.01,
                               .files = files,
                               .n_files = 3,
                               .key = k};
    struct mf_manifest *m = NULL;
    struct mf_diag d = {0};
    enum mf_err err = mf_pkg_pack(&in, out, &m, &d);
    if (err == MF_OK && payload_bytes)
        *payload_bytes = mf_manifest_payload_bytes(m);
    mf_manifest_free(m);
    free(model_pkg);
    return err;
}

#endif
