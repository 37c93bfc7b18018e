/* sig.c — manifest signatures. The signed message is context || manifest, so a
 * manifest signature can never be confused with another signed object. */
#include "sig.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/encode.h"
#include "common/hash.h"
#include "common/mem.h"

enum mf_err mf_sigset_parse(const uint8_t *text, size_t len, struct mf_sigset *out,
                            struct mf_diag *diag)
{
    struct mf_sigset s = {.n = 0};
    const char *p = (const char *)text, *end = p + len;
    char line[256];
    int lineno = 0;
    if (len > MF_SIG_FILE_MAX)
        return mf_diag_set(diag, MF_ERR_TOO_LARGE, "manifest.sig", "is %zu bytes; the cap is %d",
                           len, MF_SIG_FILE_MAX);
    if (memchr(text, '\0', len))
        return mf_diag_set(diag, MF_ERR_PARSE, "manifest.sig", "contains a NUL byte");
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        lineno++;
        if (n >= sizeof line)
            return mf_diag_set(diag, MF_ERR_PARSE, "manifest.sig", "line %d is too long", lineno);
        memcpy(line, p, n);
        line[n] = '\0';
        p += n + (nl != NULL);
        if (n && line[n - 1] == '\r')
            return mf_diag_set(diag, MF_ERR_PARSE, "manifest.sig",
                               "line %d ends with a carriage return (use LF line endings)", lineno);
        if (lineno == 1) {
            if (strcmp(line, MF_SIG_MAGIC) == 0)
                continue;
            if (strncmp(line, "modelfleet-signature v", 22) == 0)
                return mf_diag_set(diag, MF_ERR_VERSION, "manifest.sig",
                                   "signature format '%s' is not supported (expected '%s')", line,
                                   MF_SIG_MAGIC);
            return mf_diag_set(diag, MF_ERR_PARSE, "manifest.sig", "first line must be '%s'",
                               MF_SIG_MAGIC);
        }
        if (n == 0)
            continue;
        if (s.n == MF_SIG_MAX_COUNT)
            return mf_diag_set(diag, MF_ERR_PARSE, "manifest.sig", "more than %d signatures",
                               MF_SIG_MAX_COUNT);
        char id[64], b64[160];
        size_t got = 0;
        struct mf_sig *sig = &s.v[s.n];
        if (strncmp(line, "ed25519 ", 8) != 0 || sscanf(line + 8, "%63s %159s", id, b64) != 2)
            return mf_diag_set(diag, MF_ERR_PARSE, "manifest.sig",
                               "line %d: expected 'ed25519 <key-id> <base64>'", lineno);
        char canon[256];
        snprintf(canon, sizeof canon, "ed25519 %s %s", id, b64);
        uint8_t raw[MF_KEY_ID_LEN / 2];
        if (strcmp(canon, line) != 0 || strlen(id) != MF_KEY_ID_LEN ||
            mf_hex_decode(raw, sizeof raw, id) != MF_OK)
            return mf_diag_set(diag, MF_ERR_PARSE, "manifest.sig",
                               "line %d: malformed key id or spacing", lineno);
        for (size_t i = 0; i < MF_KEY_ID_LEN; i++)
            if (isupper((unsigned char)id[i]))
                return mf_diag_set(diag, MF_ERR_PARSE, "manifest.sig",
                                   "line %d: key id must be lower-case hex", lineno);
        if (mf_base64_decode(sig->sig, sizeof sig->sig, &got, b64) != MF_OK ||
            got != sizeof sig->sig)
            return mf_diag_set(diag, MF_ERR_PARSE, "manifest.sig",
                               "line %d: signature is not 64 bytes of base64", lineno);
        memcpy(sig->key_id, id, MF_KEY_ID_LEN + 1);
        s.n++;
    }
    *out = s;
    return MF_OK;
}

char *mf_sigset_format(const struct mf_sigset *s)
{
    struct mf_buf b;
    mf_buf_init(&b, MF_SIG_FILE_MAX);
    if (s->n == 0)
        return (char *)mf_buf_steal(&b, NULL);
    enum mf_err err = mf_buf_printf(&b, "%s\n", MF_SIG_MAGIC);
    for (size_t i = 0; i < s->n && err == MF_OK; i++) {
        char b64[128];
        mf_base64_encode(b64, sizeof b64, s->v[i].sig, sizeof s->v[i].sig);
        err = mf_buf_printf(&b, "ed25519 %s %s\n", s->v[i].key_id, b64);
    }
    /* MF_SIG_MAX_COUNT lines of ~113 bytes always fit the cap. */
    if (err != MF_OK)
        abort();
    return (char *)mf_buf_steal(&b, NULL);
}

static uint8_t *sig__message(const uint8_t *manifest, size_t len, size_t *mlen)
{
    size_t clen = strlen(MF_SIG_CONTEXT);
    uint8_t *m = mf_xmalloc(clen + len);
    memcpy(m, MF_SIG_CONTEXT, clen);
    if (len)
        memcpy(m + clen, manifest, len);
    *mlen = clen + len;
    return m;
}

void mf_sigset_sign(struct mf_sigset *s, const uint8_t *manifest, size_t len,
                    const struct mf_key_secret *k)
{
    size_t i, mlen;
    for (i = 0; i < s->n; i++)
        if (strcmp(s->v[i].key_id, k->pub.id) == 0)
            break;
    if (i == s->n) {
        if (s->n == MF_SIG_MAX_COUNT) { /* drop the oldest to make room */
            memmove(&s->v[0], &s->v[1], sizeof s->v[0] * (s->n - 1));
            s->n--;
        }
        i = s->n++;
    }
    mf_crypto_init();
    uint8_t *m = sig__message(manifest, len, &mlen);
    crypto_sign_detached(s->v[i].sig, NULL, m, mlen, k->sk);
    memcpy(s->v[i].key_id, k->pub.id, sizeof s->v[i].key_id);
    free(m);
}

enum mf_err mf_sigset_check(const struct mf_sigset *s, const uint8_t *manifest, size_t len,
                            const struct mf_keyring *trust, char signer[MF_KEY_ID_LEN + 1],
                            struct mf_diag *diag)
{
    size_t mlen;
    const char *good = NULL;
    if (s->n == 0)
        return mf_diag_set(diag, MF_ERR_UNSIGNED, "manifest.sig",
                           "has no signature (sign the package with 'modelfleet sign')");
    mf_crypto_init();
    uint8_t *m = sig__message(manifest, len, &mlen);
    for (size_t i = 0; i < s->n; i++) {
        const struct mf_key_pub *k = mf_keyring_find(trust, s->v[i].key_id);
        if (!k)
            continue;
        if (crypto_sign_verify_detached(s->v[i].sig, m, mlen, k->pk) != 0) {
            free(m);
            return mf_diag_set(diag, MF_ERR_BAD_SIGNATURE, "manifest.sig",
                               "signature by key %s does not match manifest.json "
                               "(the manifest or the signature was altered)",
                               k->id);
        }
        good = k->id;
    }
    free(m);
    if (!good) {
        char ids[MF_SIG_MAX_COUNT * (MF_KEY_ID_LEN + 2) + 1] = "";
        for (size_t i = 0; i < s->n; i++) {
            strcat(ids, i ? ", " : "");
            strcat(ids, s->v[i].key_id);
        }
        return mf_diag_set(diag, MF_ERR_UNKNOWN_KEY, "manifest.sig",
                           "signed by key %s, which is not trusted here", ids);
    }
    if (signer)
        memcpy(signer, good, MF_KEY_ID_LEN + 1);
    return MF_OK;
}
