/* fuzz_manifest.c — libFuzzer target for the small parsers of the package
 * format: manifest.json, manifest.sig and .npy headers all get every input.
 * What parses must format, re-parse and format again to the same text; any
 * broken invariant (or a diag that disagrees with the error) aborts. */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_TARGET "fuzz_manifest"
#include "common/err.h"
#include "fuzz_check.h"
#include "packaging/key.h"
#include "packaging/manifest.h"
#include "packaging/npy.h"
#include "packaging/sig.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_manifest(const uint8_t *data, size_t size)
{
    struct mf_manifest *m = NULL, *again = NULL;
    struct mf_diag diag = {0};
    size_t len1 = 0, len2 = 0;
    enum mf_err err = mf_manifest_parse(data, size, &m, &diag);
    check_diag("mf_manifest_parse", err, &diag);
    if (err != MF_OK) {
        if (m)
            fail("mf_manifest_parse failed but wrote its out-parameter");
        return;
    }
    /* What the parser promises a verifier. */
    if (!mf_manifest_find(m, m->entry) || !mf_manifest_find(m, m->eval.inputs) ||
        !mf_manifest_find(m, m->eval.labels))
        fail("entry or evaluation file not listed in a parsed manifest");
    for (size_t i = 0; i < m->n_files; i++)
        if (mf_pkg_path_check(m->files[i].path, NULL) != MF_OK ||
            mf_manifest_find(m, m->files[i].path) != &m->files[i] ||
            (i && strcmp(m->files[i - 1].path, m->files[i].path) >= 0))
            fail("files[%zu] '%s' unsafe, unsorted or not found", i, m->files[i].path);

    char *text = mf_manifest_format(m, &len1);
    if (strlen(text) != len1)
        fail("mf_manifest_format: length %zu but the text has %zu bytes", len1, strlen(text));
    memset(&diag, 0, sizeof diag);
    err = mf_manifest_parse((const uint8_t *)text, len1, &again, &diag);
    if (err != MF_OK)
        fail("formatted manifest does not parse (%s: %s: %s):\n%s", mf_errname(err), diag.where,
             diag.what, text);
    char *text2 = mf_manifest_format(again, &len2);
    if (len1 != len2 || memcmp(text, text2, len1) != 0)
        fail("format -> parse -> format changed the text:\n%s\n--- became ---\n%s", text, text2);
    if (m->created != again->created || m->n_files != again->n_files ||
        m->eval.n != again->eval.n || m->hardware.n != again->hardware.n)
        fail("re-parsed manifest differs from the original");
    free(text);
    free(text2);
    mf_manifest_free(again);
    mf_manifest_free(m);
}

static void fuzz_sig(const uint8_t *data, size_t size)
{
    struct mf_sigset s, again;
    struct mf_keyring none = {0};
    struct mf_diag diag = {0};
    char signer[MF_KEY_ID_LEN + 1] = "";
    memset(&s, 0xa5, sizeof s);
    enum mf_err err = mf_sigset_parse(data, size, &s, &diag);
    check_diag("mf_sigset_parse", err, &diag);
    if (err != MF_OK)
        return;
    if (s.n > MF_SIG_MAX_COUNT)
        fail("mf_sigset_parse: %zu signatures", s.n);
    char *text = mf_sigset_format(&s);
    memset(&diag, 0, sizeof diag);
    err = mf_sigset_parse((const uint8_t *)text, strlen(text), &again, &diag);
    if (err != MF_OK)
        fail("formatted manifest.sig does not parse (%s):\n%s", diag.what, text);
    if (again.n != s.n)
        fail("manifest.sig round trip: %zu signatures became %zu", s.n, again.n);
    for (size_t i = 0; i < s.n; i++)
        if (strcmp(s.v[i].key_id, again.v[i].key_id) != 0 ||
            memcmp(s.v[i].sig, again.v[i].sig, sizeof s.v[i].sig) != 0)
            fail("manifest.sig round trip changed signature %zu", i);
    char *text2 = mf_sigset_format(&again);
    if (strcmp(text, text2) != 0)
        fail("manifest.sig format -> parse -> format changed the text");
    free(text);
    free(text2);
    /* Nobody is trusted: unsigned, or signed by an unknown key — never valid. */
    memset(&diag, 0, sizeof diag);
    err = mf_sigset_check(&s, data, size, &none, signer, &diag);
    check_diag("mf_sigset_check", err, &diag);
    if (err != (s.n ? MF_ERR_UNKNOWN_KEY : MF_ERR_UNSIGNED))
        fail("mf_sigset_check with no trusted key returned %s", mf_errname(err));
}

static void fuzz_npy(const uint8_t *data, size_t size)
{
    struct mf_npy h;
    struct mf_diag diag = {0};
    enum mf_err err = mf_npy_parse(data, size, &h, &diag);
    check_diag("mf_npy_parse", err, &diag);
    if (err != MF_OK)
        return;
    if (!memchr(h.descr, '\0', sizeof h.descr) || !strchr("fiub", h.kind) || h.kind == '\0' ||
        (h.itemsize != 1 && h.itemsize != 2 && h.itemsize != 4 && h.itemsize != 8) ||
        h.ndim > MF_NPY_MAX_DIMS || h.data_offset > size)
        fail("mf_npy_parse accepted an impossible header");
    uint64_t bytes = h.itemsize;
    bool empty = false;
    for (unsigned i = 0; i < h.ndim; i++)
        empty |= h.shape[i] == 0;
    for (unsigned i = 0; i < h.ndim && !empty; i++) {
        if (bytes > UINT64_MAX / h.shape[i])
            fail("mf_npy_parse accepted a shape whose size overflows");
        bytes *= h.shape[i];
    }
    if (empty)
        bytes = 0;
    if (bytes != h.data_bytes)
        fail("mf_npy_parse: data_bytes %llu, shape says %llu", (unsigned long long)h.data_bytes,
             (unsigned long long)bytes);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_manifest(data, size);
    fuzz_sig(data, size);
    fuzz_npy(data, size);
    return 0;
}
