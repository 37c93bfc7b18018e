/* fuzz_signer.c — the fuzz key (fuzz_key.h) as a tool for make_corpus.sh:
 * `keys PREFIX` writes PREFIX.key and PREFIX.pub for `modelfleet`, and
 * `sign FILE` prints a manifest.sig signing FILE's exact bytes, so seed
 * packages with hand-made manifests still pass the signature check. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/fs.h"
#include "fuzz_key.h"
#include "packaging/manifest.h"
#include "packaging/sig.h"

int main(int argc, char **argv)
{
    struct mf_key_secret k;
    struct mf_diag diag = {0};
    char msg[MF_DIAG_STR_MAX];
    if (argc != 3 || (strcmp(argv[1], "keys") != 0 && strcmp(argv[1], "sign") != 0)) {
        fprintf(stderr, "usage: fuzz_signer keys PREFIX | fuzz_signer sign MANIFEST\n");
        return 2;
    }
    fuzz_key_derive(&k);
    if (strcmp(argv[1], "keys") == 0) {
        if (mf_key_write_pair(&k, argv[2], &diag) != MF_OK)
            goto fail;
        printf("%s\n", k.pub.id);
        return 0;
    }
    struct mf_buf b;
    struct mf_sigset s = {.n = 0};
    if (mf_fs_read_file(argv[2], MF_MANIFEST_MAX, &b, &diag) != MF_OK)
        goto fail;
    mf_sigset_sign(&s, b.data, b.len, &k);
    char *text = mf_sigset_format(&s);
    fputs(text, stdout);
    free(text);
    mf_buf_free(&b);
    return 0;
fail:
    fprintf(stderr, "fuzz_signer: %s\n", mf_diag_str(&diag, msg, sizeof msg));
    return 1;
}
