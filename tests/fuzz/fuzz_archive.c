/* fuzz_archive.c — libFuzzer target for the package reader: each input is
 * verified and extracted from memory, trusting the fuzz key and trusting no
 * key. Aborts when the readers disagree, when a failed extraction leaves
 * anything behind, or when a good one leaves more than the listed files. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FUZZ_TARGET "fuzz_archive"
#include "common/err.h"
#include "fuzz_check.h"
#include "common/fs.h"
#include "common/mem.h"
#include "fuzz_key.h"
#include "packaging/pkg.h"

#define STAGING_NAME "staging"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct {
    bool ready;
    struct mf_keyring trust; /* the fuzz key only */
    char key_id[MF_KEY_ID_LEN + 1];
    char *tmp;     /* per-process temp dir; holds only the staging dir, if anything */
    char *staging; /* tmp/staging, absent between calls */
} F;

static void cleanup(void)
{
    if (F.tmp) {
        mf_fs_rmtree(F.tmp);
        free(F.tmp);
        free(F.staging);
        F.tmp = F.staging = NULL;
    }
    mf_keyring_free(&F.trust);
}

static void setup(void)
{
    struct mf_key_secret k;
    const char *base = getenv("TMPDIR");
    fuzz_key_derive(&k);
    mf_keyring_add(&F.trust, &k.pub);
    memcpy(F.key_id, k.pub.id, sizeof F.key_id);
    F.tmp = mf_xasprintf("%s/mf-fuzz-archive.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(F.tmp))
        fail("cannot create a temp dir %s: %s", F.tmp, strerror(errno));
    F.staging = mf_xasprintf("%s/%s", F.tmp, STAGING_NAME);
    atexit(cleanup);
    F.ready = true;
}

static bool is_sig_err(enum mf_err err)
{
    return err == MF_ERR_UNSIGNED || err == MF_ERR_UNKNOWN_KEY || err == MF_ERR_BAD_SIGNATURE;
}

/* What a successful read must report. */
static void check_result(const char *who, const struct mf_pkg_result *res, bool trusted)
{
    const struct mf_manifest *m = res->manifest;
    if (!m || !res->manifest_bytes || !res->manifest_len)
        fail("%s succeeded without a manifest", who);
    if (res->payload_bytes != mf_manifest_payload_bytes(m))
        fail("%s verified %llu payload bytes; the manifest lists %llu", who,
             (unsigned long long)res->payload_bytes,
             (unsigned long long)mf_manifest_payload_bytes(m));
    if (strcmp(res->signer, trusted ? F.key_id : "") != 0)
        fail("%s reports signer '%s'", who, res->signer);
}

/* Names in the temp dir other than the staging dir; the count of all names. */
static size_t tmp_entries(bool *other)
{
    DIR *d = opendir(F.tmp);
    struct dirent *de;
    size_t n = 0;
    if (!d)
        fail("cannot list %s: %s", F.tmp, strerror(errno));
    *other = false;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        n++;
        if (strcmp(de->d_name, STAGING_NAME) != 0) {
            fprintf(stderr, "fuzz_archive: unexpected '%s' in %s\n", de->d_name, F.tmp);
            *other = true;
        }
    }
    closedir(d);
    return n;
}

/* Walks an extracted tree: only directories and listed regular files of the
 * listed size. Returns the number of regular files. */
static size_t walk(int dirfd, const char *rel, const struct mf_manifest *m)
{
    int dup_fd = dup(dirfd);
    DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
    struct dirent *de;
    size_t files = 0;
    if (!d)
        fail("cannot list staging/%s: %s", rel, strerror(errno));
    while ((de = readdir(d)) != NULL) {
        struct stat st;
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char *path = rel[0] ? mf_xasprintf("%s/%s", rel, de->d_name) : mf_xstrdup(de->d_name);
        if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            fail("cannot stat staging/%s: %s", path, strerror(errno));
        if (S_ISDIR(st.st_mode)) {
            int sub = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0)
                fail("cannot open staging/%s: %s", path, strerror(errno));
            files += walk(sub, path, m);
            close(sub);
        } else if (S_ISREG(st.st_mode)) {
            const struct mf_manifest_file *f = mf_manifest_find(m, path);
            if (!f)
                fail("extracted staging/%s, which the manifest does not list", path);
            if ((uint64_t)st.st_size != f->size || st.st_nlink != 1)
                fail("extracted staging/%s has %lld bytes and %lu links; the manifest says %llu",
                     path, (long long)st.st_size, (unsigned long)st.st_nlink,
                     (unsigned long long)f->size);
            files++;
        } else {
            fail("extraction left staging/%s of mode %o: not a regular file or directory", path,
                 (unsigned)st.st_mode);
        }
        free(path);
    }
    closedir(d);
    return files;
}

/* Extracts into the (absent) staging dir and checks what is left behind
 * against the verify outcome `verified` of the same input and trust. */
static void fuzz_extract(const uint8_t *data, size_t size, const struct mf_keyring *trust,
                         const struct mf_pkg_opts *opts, enum mf_err verified)
{
    const char *who = trust ? "mf_pkg_extract_buffer(trusted)" : "mf_pkg_extract_buffer(NULL)";
    struct mf_pkg_result res;
    struct mf_diag diag = {0};
    bool other;
    enum mf_err err = mf_pkg_extract_buffer(data, size, trust, F.staging, opts, &res, &diag);
    check_diag(who, err, &diag);
    /* Same checks in the same order as verify, and a manifest that parses
     * names no path that cannot be created (no "a" next to "a/b"): a package
     * that verifies extracts. Only a full or broken temp dir excuses an I/O
     * error here. */
    if (err != verified)
        fail("%s returned %s, verify returned %s (%s: %s)", who, mf_errname(err),
             mf_errname(verified), diag.where, diag.what);
    size_t n = tmp_entries(&other);
    if (other)
        fail("%s left files next to the staging dir", who);
    if (err != MF_OK) {
        if (n != 0)
            fail("%s failed (%s) but left the staging dir behind", who, mf_errname(err));
        return;
    }
    if (n != 1)
        fail("%s succeeded without creating the staging dir", who);
    check_result(who, &res, trust != NULL);
    int root = open(F.staging, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (root < 0)
        fail("staging is not a directory: %s", strerror(errno));
    size_t files = walk(root, "", res.manifest);
    close(root);
    if (files != res.manifest->n_files)
        fail("%s extracted %zu files; the manifest lists %zu", who, files, res.manifest->n_files);
    mf_pkg_result_free(&res);
    if (mf_fs_rmtree(F.staging) != MF_OK || tmp_entries(&other) != 0)
        fail("cannot remove %s", F.staging);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A budget well above any input, so only lying manifests reach it; an
     * agent that takes the seeds' min_agent_version (0.1.0, 0.2.0-rc.1); fsync
     * as the agent does (free on tmpfs). */
    const struct mf_pkg_opts opts = {
        .disk_budget = 64u << 20, .agent_version = "0.2.0", .fsync = true};
    struct mf_pkg_result res;
    struct mf_diag diag = {0};
    if (!F.ready)
        setup();

    enum mf_err trusted = mf_pkg_verify_buffer(data, size, &F.trust, &opts, &res, &diag);
    check_diag("mf_pkg_verify_buffer(trusted)", trusted, &diag);
    if (trusted == MF_OK) {
        check_result("mf_pkg_verify_buffer(trusted)", &res, true);
        mf_pkg_result_free(&res);
    }
    memset(&diag, 0, sizeof diag);
    enum mf_err untrusted = mf_pkg_verify_buffer(data, size, NULL, &opts, &res, &diag);
    check_diag("mf_pkg_verify_buffer(NULL)", untrusted, &diag);
    if (untrusted == MF_OK) {
        check_result("mf_pkg_verify_buffer(NULL)", &res, false);
        mf_pkg_result_free(&res);
    }
    /* Trust only adds the signature check, which comes before everything
     * but the layout and manifest.sig syntax. */
    if (trusted != untrusted && !is_sig_err(trusted))
        fail("verify returned %s trusting the fuzz key but %s trusting nobody", mf_errname(trusted),
             mf_errname(untrusted));

    fuzz_extract(data, size, &F.trust, &opts, trusted);
    fuzz_extract(data, size, NULL, &opts, untrusted);
    return 0;
}
