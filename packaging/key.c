/* key.c — Ed25519 key generation and key files. Secret material is wiped
 * from temporary buffers with sodium_memzero. */
#include "key.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/encode.h"
#include "common/fs.h"
#include "common/hash.h"
#include "common/mem.h"

#define KEY_SECRET_MAGIC "modelfleet-secret-key v1"
#define KEY_PUBLIC_MAGIC "modelfleet-public-key v1"
#define KEY_FILE_MAX     4096

void mf_key_id(const uint8_t pk[crypto_sign_PUBLICKEYBYTES], char id[MF_KEY_ID_LEN + 1])
{
    uint8_t h[MF_HASH_BYTES];
    mf_hash_bytes(h, pk, crypto_sign_PUBLICKEYBYTES);
    mf_hex_encode(id, h, MF_KEY_ID_LEN / 2);
}

void mf_key_generate(struct mf_key_secret *out)
{
    mf_crypto_init();
    crypto_sign_keypair(out->pub.pk, out->sk);
    mf_key_id(out->pub.pk, out->pub.id);
}

void mf_key_from_seed(struct mf_key_secret *out, const uint8_t seed[crypto_sign_SEEDBYTES])
{
    mf_crypto_init();
    crypto_sign_seed_keypair(out->pub.pk, out->sk, seed);
    mf_key_id(out->pub.pk, out->pub.id);
}

static char *key__format(const char *magic, const char *id, const char *field, const uint8_t *b,
                         size_t n)
{
    char b64[128];
    mf_base64_encode(b64, sizeof b64, b, n);
    char *text = mf_xasprintf("%s\nkey-id: %s\n%s: %s\n", magic, id, field, b64);
    sodium_memzero(b64, sizeof b64);
    return text;
}

char *mf_key_secret_format(const struct mf_key_secret *k)
{
    return key__format(KEY_SECRET_MAGIC, k->pub.id, "secret-key", k->sk, sizeof k->sk);
}

char *mf_key_pub_format(const struct mf_key_pub *k)
{
    return key__format(KEY_PUBLIC_MAGIC, k->id, "public-key", k->pk, sizeof k->pk);
}

/* Splits "magic\nkey-id: X\nFIELD: Y\n" and decodes Y into out (exactly n bytes). */
static enum mf_err key__parse(const char *text, const char *magic, const char *field, uint8_t *out,
                              size_t n, char id[MF_KEY_ID_LEN + 1], struct mf_diag *diag)
{
    char line[3][256];
    const char *p = text;
    for (int i = 0; i < 3; i++) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len >= sizeof line[i])
            return mf_diag_set(diag, MF_ERR_KEY, NULL, "line %d is too long", i + 1);
        memcpy(line[i], p, len);
        line[i][len] = '\0';
        p = nl ? nl + 1 : p + len;
    }
    if (*p != '\0')
        return mf_diag_set(diag, MF_ERR_KEY, NULL, "unexpected text after line 3");
    if (strcmp(line[0], magic) != 0) {
        if (strncmp(line[0], magic, strlen(magic) - 1) == 0)
            return mf_diag_set(diag, MF_ERR_VERSION, NULL,
                               "key file version '%s' is not supported (expected '%s')", line[0],
                               magic);
        return mf_diag_set(diag, MF_ERR_KEY, NULL, "first line must be '%s'", magic);
    }
    if (strncmp(line[1], "key-id: ", 8) != 0 || strlen(line[1] + 8) != MF_KEY_ID_LEN)
        return mf_diag_set(diag, MF_ERR_KEY, NULL, "second line must be 'key-id: <16 hex>'");
    memcpy(id, line[1] + 8, MF_KEY_ID_LEN + 1);
    size_t flen = strlen(field);
    if (strncmp(line[2], field, flen) != 0 || strncmp(line[2] + flen, ": ", 2) != 0)
        return mf_diag_set(diag, MF_ERR_KEY, NULL, "third line must be '%s: <base64>'", field);
    size_t got = 0;
    uint8_t tmp[crypto_sign_SECRETKEYBYTES];
    if (mf_base64_decode(tmp, sizeof tmp, &got, line[2] + flen + 2) != MF_OK || got != n) {
        sodium_memzero(line, sizeof line);
        return mf_diag_set(diag, MF_ERR_KEY, NULL, "%s is not %zu bytes of base64", field, n);
    }
    memcpy(out, tmp, n);
    sodium_memzero(tmp, sizeof tmp);
    sodium_memzero(line, sizeof line);
    return MF_OK;
}

enum mf_err mf_key_secret_parse(const char *text, struct mf_key_secret *out, struct mf_diag *diag)
{
    struct mf_key_secret k;
    char id[MF_KEY_ID_LEN + 1];
    mf_crypto_init();
    enum mf_err err = key__parse(text, KEY_SECRET_MAGIC, "secret-key", k.sk, sizeof k.sk, id, diag);
    if (err != MF_OK)
        return err;
    /* Re-derive the public half from the seed; the stored half and the id
     * must both match it. */
    uint8_t seed[crypto_sign_SEEDBYTES], stored[crypto_sign_PUBLICKEYBYTES];
    crypto_sign_ed25519_sk_to_pk(stored, k.sk);
    crypto_sign_ed25519_sk_to_seed(seed, k.sk);
    mf_key_from_seed(&k, seed);
    sodium_memzero(seed, sizeof seed);
    if (sodium_memcmp(stored, k.pub.pk, sizeof stored) != 0) {
        sodium_memzero(&k, sizeof k);
        return mf_diag_set(diag, MF_ERR_KEY, NULL,
                           "the public half of the secret key does not match its seed");
    }
    if (strcmp(id, k.pub.id) != 0) {
        sodium_memzero(&k, sizeof k);
        return mf_diag_set(diag, MF_ERR_KEY, NULL, "key-id %s does not match the key (%s)", id,
                           k.pub.id);
    }
    *out = k;
    sodium_memzero(&k, sizeof k);
    return MF_OK;
}

enum mf_err mf_key_pub_parse(const char *text, struct mf_key_pub *out, struct mf_diag *diag)
{
    struct mf_key_pub k;
    char id[MF_KEY_ID_LEN + 1];
    enum mf_err err = key__parse(text, KEY_PUBLIC_MAGIC, "public-key", k.pk, sizeof k.pk, id, diag);
    if (err != MF_OK)
        return err;
    mf_key_id(k.pk, k.id);
    if (strcmp(id, k.id) != 0)
        return mf_diag_set(diag, MF_ERR_KEY, NULL, "key-id %s does not match the key (%s)", id,
                           k.id);
    *out = k;
    return MF_OK;
}

enum mf_err mf_key_write_pair(const struct mf_key_secret *k, const char *prefix,
                              struct mf_diag *diag)
{
    enum mf_err err = MF_OK;
    char *skpath = mf_xasprintf("%s.key", prefix);
    char *pkpath = mf_xasprintf("%s.pub", prefix);
    char *sktext = mf_key_secret_format(k);
    char *pktext = mf_key_pub_format(&k->pub);
    /* O_EXCL: never overwrite an existing secret key. */
    int fd = open(skpath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        err = errno == EEXIST
                  ? mf_diag_set(diag, MF_ERR_EXISTS, skpath, "refusing to overwrite a key file")
                  : mf_diag_errno(diag, errno, skpath, "cannot create");
        goto out;
    }
    if (fchmod(fd, 0600) != 0 || mf_fs_write_all(fd, sktext, strlen(sktext)) != MF_OK ||
        fsync(fd) != 0) {
        err = mf_diag_errno(diag, errno, skpath, "cannot write");
        close(fd);
        unlink(skpath);
        goto out;
    }
    close(fd);
    err = mf_fs_write_file(pkpath, pktext, strlen(pktext), 0644, diag);
    if (err != MF_OK)
        unlink(skpath);
out:
    sodium_memzero(sktext, strlen(sktext));
    free(sktext);
    free(pktext);
    free(skpath);
    free(pkpath);
    return err;
}

static enum mf_err key__load(const char *path, struct mf_buf *text, struct mf_diag *diag)
{
    enum mf_err err = mf_fs_read_file(path, KEY_FILE_MAX, text, diag);
    if (err == MF_ERR_TOO_LARGE)
        return mf_diag_set(diag, MF_ERR_KEY, path, "not a modelfleet key file (too large)");
    return err;
}

enum mf_err mf_key_secret_load(const char *path, struct mf_key_secret *out, struct mf_diag *diag)
{
    struct mf_buf text;
    struct stat st;
    struct mf_key_secret k;
    enum mf_err err = key__load(path, &text, diag);
    if (err != MF_OK)
        return err;
    err = mf_key_secret_parse((const char *)text.data, &k, diag);
    if (err != MF_OK)
        mf_diag_prefix(diag, path);
    /* Like ssh: a secret key others can read is refused, not used. */
    else if (stat(path, &st) != 0)
        err = mf_diag_errno(diag, errno, path, "cannot stat");
    else if (st.st_mode & 077)
        err = mf_diag_set(diag, MF_ERR_KEY, path,
                          "secret key is accessible by others (mode %04o); run chmod 600",
                          (unsigned)(st.st_mode & 07777));
    else
        *out = k;
    sodium_memzero(&k, sizeof k);
    sodium_memzero(text.data, text.len);
    mf_buf_free(&text);
    return err;
}

enum mf_err mf_key_pub_load(const char *path, struct mf_key_pub *out, struct mf_diag *diag)
{
    struct mf_buf text;
    enum mf_err err = key__load(path, &text, diag);
    if (err != MF_OK)
        return err;
    err = mf_key_pub_parse((const char *)text.data, out, diag);
    if (err != MF_OK)
        mf_diag_prefix(diag, path);
    mf_buf_free(&text);
    return err;
}

void mf_keyring_add(struct mf_keyring *r, const struct mf_key_pub *k)
{
    if (mf_keyring_find(r, k->id))
        return;
    r->keys = mf_xreallocarray(r->keys, r->n + 1, sizeof *r->keys);
    r->keys[r->n++] = *k;
}

enum mf_err mf_keyring_load(struct mf_keyring *r, const char *path, struct mf_diag *diag)
{
    struct mf_key_pub k;
    enum mf_err err = mf_key_pub_load(path, &k, diag);
    if (err == MF_OK)
        mf_keyring_add(r, &k);
    return err;
}

const struct mf_key_pub *mf_keyring_find(const struct mf_keyring *r, const char *id)
{
    for (size_t i = 0; r && i < r->n; i++)
        if (strcmp(r->keys[i].id, id) == 0)
            return &r->keys[i];
    return NULL;
}

void mf_keyring_free(struct mf_keyring *r)
{
    if (!r)
        return;
    free(r->keys);
    r->keys = NULL;
    r->n = 0;
}
