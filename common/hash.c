/* hash.c — BLAKE2b-256 helpers. */
#include "hash.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "mem.h"

void mf_crypto_init(void)
{
    if (sodium_init() < 0) {
        fprintf(stderr, "modelfleet: libsodium failed to initialise\n");
        abort();
    }
}

void mf_hash_init(struct mf_hash *h)
{
    crypto_generichash_init(&h->st, NULL, 0, MF_HASH_BYTES);
}

void mf_hash_update(struct mf_hash *h, const void *p, size_t n)
{
    crypto_generichash_update(&h->st, p, n);
}

void mf_hash_final(struct mf_hash *h, uint8_t out[MF_HASH_BYTES])
{
    crypto_generichash_final(&h->st, out, MF_HASH_BYTES);
}

void mf_hash_bytes(uint8_t out[MF_HASH_BYTES], const void *p, size_t n)
{
    crypto_generichash(out, MF_HASH_BYTES, p, n, NULL, 0);
}

enum mf_err mf_hash_file(const char *path, uint8_t out[MF_HASH_BYTES], uint64_t *size,
                         struct mf_diag *diag)
{
    enum mf_err err = MF_OK;
    size_t cap = 1u << 20;
    uint8_t *buf = NULL;
    uint64_t total = 0;
    struct mf_hash h;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return mf_diag_errno(diag, errno, path, "cannot open");
    buf = mf_xmalloc(cap);
    mf_hash_init(&h);
    for (;;) {
        ssize_t n = read(fd, buf, cap);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err = mf_diag_errno(diag, errno, path, "cannot read");
            goto out;
        }
        if (n == 0)
            break;
        mf_hash_update(&h, buf, (size_t)n);
        total += (uint64_t)n;
    }
    mf_hash_final(&h, out);
    if (size)
        *size = total;
out:
    free(buf);
    close(fd);
    return err;
}
