/* desired_sign.c — mf-desired-sign: writes a signed desired-state message on
 * stdout, as the server will publish it (issue 5), so agent tests can drive a
 * real agent through a real broker before the server publishes on its own.
 *
 *   mf-desired-sign --key SERVER.key --device ID --seq N [--rollout R]
 *                   [NAME=VERSION:PACKAGE:SIZE ...]
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/encode.h"
#include "common/hash.h"
#include "common/mem.h"
#include "packaging/key.h"
#include "telemetry/desired.h"

/* A whole decimal string. */
static bool num(const char *s, uint64_t *v)
{
    return mf_dec_u64(&s, v) && *s == '\0';
}

static int usage(void)
{
    fprintf(stderr, "usage: mf-desired-sign --key KEY --device ID --seq N [--rollout R] "
                    "[NAME=VERSION:PACKAGE:SIZE ...]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *key = NULL;
    struct mf_desired d = {0};
    struct mf_desired_model models[MF_DESIRED_MODELS];
    struct mf_key_secret k;
    struct mf_diag diag = {0};
    uint64_t v;

    mf_crypto_init();
    d.issued = mf_clock_now();
    d.models = models;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--key") == 0 && i + 1 < argc) {
            key = argv[++i];
        } else if (strcmp(a, "--device") == 0 && i + 1 < argc) {
            d.device = argv[++i];
        } else if ((strcmp(a, "--seq") == 0 || strcmp(a, "--rollout") == 0) && i + 1 < argc) {
            if (!num(argv[i + 1], &v))
                return usage();
            if (strcmp(a, "--seq") == 0)
                d.seq = v;
            else
                d.rollout = (int64_t)v;
            i++;
        } else if (a[0] != '-' && d.n_models < MF_DESIRED_MODELS) {
            /* NAME=VERSION:PACKAGE:SIZE */
            char *s = mf_xstrdup(a), *eq = strchr(s, '='), *c1 = eq ? strchr(eq, ':') : NULL,
                 *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
            if (!c2 || strlen(c1 + 1) != (size_t)(c2 - c1 - 1) + strlen(c2) ||
                (size_t)(c2 - c1 - 1) != MF_HASH_HEX - 1 || !num(c2 + 1, &v))
                return usage();
            *eq = *c1 = *c2 = '\0';
            struct mf_desired_model *m = &models[d.n_models++];
            m->name = s;
            m->version = eq + 1;
            memcpy(m->package, c1 + 1, MF_HASH_HEX);
            m->size = v;
        } else {
            return usage();
        }
    }
    if (!key || !d.device || !d.seq)
        return usage();
    if (mf_key_secret_load(key, &k, &diag) != MF_OK) {
        fprintf(stderr, "mf-desired-sign: %s: %s\n", diag.where, diag.what);
        return 1;
    }
    size_t len;
    char *msg = mf_desired_sign(&d, &k, &len);
    fwrite(msg, 1, len, stdout);
    free(msg);
    for (size_t i = 0; i < d.n_models; i++)
        free(models[i].name);
    return 0;
}
