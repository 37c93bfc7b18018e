/* install.c — slots, the current/previous links, pruning and start-up
 * recovery (layout and invariants in install.h). Every step that changes the
 * tree is one rename (or symlink creation under a temp name) followed by an
 * fsync of the directory, so a power cut leaves the old or the new tree.
 * Anything named ".staging-*" or ".<link>.tmp" is in flight and removed on
 * sight by the next unpack or by mf_install_recover. */
#define _GNU_SOURCE /* renameat2, RENAME_EXCHANGE */
#include "install.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/fs.h"
#include "common/mem.h"
#include "common/semver.h"
#include "packaging/pkg.h"
#include "packaging/sig.h"

#define STAGING_PREFIX ".staging-" /* extraction, or a slot being deleted */
#define TEMP_SUFFIX    ".tmp"      /* ".current.tmp", ".previous.tmp" */
#define MARKER         "manifest.json"
#define SIG_FILE       "manifest.sig"

static void crash_point(const char *point)
{
    if (mf_install_crash_hook)
        mf_install_crash_hook(point);
}

void mf_install_result_free(struct mf_install_result *r)
{
    if (!r)
        return;
    mf_manifest_free(r->manifest);
    memset(r, 0, sizeof *r);
}

void mf_install_recovery_free(struct mf_install_recovery *r)
{
    if (!r)
        return;
    mf_strlist_free(&r->cleaned);
    mf_strlist_free(&r->broken);
}

static char *ins__model_dir(const char *state_dir, const char *name)
{
    return mf_xasprintf("%s/" MF_INSTALL_MODELS_DIR "/%s", state_dir, name);
}

char *mf_install_slot_path(const char *state_dir, const char *name, const char *slot)
{
    return mf_xasprintf("%s/" MF_INSTALL_MODELS_DIR "/%s/%s", state_dir, name, slot);
}

static enum mf_err ins__args(const char *name, const char *slot, struct mf_diag *diag)
{
    if (!mf_pkg_name_ok(name))
        return mf_diag_set(diag, MF_ERR_USAGE, name, "not a model name");
    if (slot && !mf_install_slot_ok(slot))
        return mf_diag_set(diag, MF_ERR_USAGE, slot, "not a slot name (<version>-<16 hex>)");
    return MF_OK;
}

/* Opens models/<name> of state_dir; MF_ERR_NOT_FOUND when it does not exist. */
static enum mf_err ins__open_model(const char *state_dir, const char *name, int *fd,
                                   struct mf_diag *diag)
{
    char *dir = ins__model_dir(state_dir, name);
    enum mf_err err = MF_OK;
    *fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (*fd < 0)
        err = errno == ENOENT ? mf_diag_set(diag, MF_ERR_NOT_FOUND, dir, "no such model installed")
                              : mf_diag_errno(diag, errno, dir, "cannot open");
    free(dir);
    return err;
}

/* Reads the link `link` in dirfd into slot; MF_ERR_NOT_FOUND when absent. */
static enum mf_err ins__readlink(int dirfd, const char *link, char slot[MF_INSTALL_SLOT_MAX],
                                 struct mf_diag *diag)
{
    char buf[MF_INSTALL_SLOT_MAX + 1];
    ssize_t n = readlinkat(dirfd, link, buf, sizeof buf);
    if (n < 0) {
        if (errno == ENOENT)
            return mf_diag_set(diag, MF_ERR_NOT_FOUND, link, "no %s version", link);
        if (errno == EINVAL)
            return mf_diag_set(diag, MF_ERR_PARSE, link, "is not a symbolic link");
        return mf_diag_errno(diag, errno, link, "cannot read the link");
    }
    if ((size_t)n >= MF_INSTALL_SLOT_MAX)
        return mf_diag_set(diag, MF_ERR_PARSE, link, "points at something that is not a slot");
    buf[n] = '\0';
    if (!mf_install_slot_ok(buf))
        return mf_diag_set(diag, MF_ERR_PARSE, link, "points at \"%.64s\", not a slot", buf);
    memcpy(slot, buf, (size_t)n + 1);
    return MF_OK;
}

static enum mf_err ins__link(const char *state_dir, const char *name, const char *link,
                             char slot[MF_INSTALL_SLOT_MAX], struct mf_diag *diag)
{
    int fd;
    enum mf_err err = ins__args(name, NULL, diag);
    if (err == MF_OK && (err = ins__open_model(state_dir, name, &fd, diag)) == MF_OK) {
        err = ins__readlink(fd, link, slot, diag);
        close(fd);
    }
    return err;
}

enum mf_err mf_install_current(const char *state_dir, const char *name,
                               char slot[MF_INSTALL_SLOT_MAX], struct mf_diag *diag)
{
    return ins__link(state_dir, name, "current", slot, diag);
}

enum mf_err mf_install_previous(const char *state_dir, const char *name,
                                char slot[MF_INSTALL_SLOT_MAX], struct mf_diag *diag)
{
    return ins__link(state_dir, name, "previous", slot, diag);
}

/* Points `link` at target: symlink under ".<link>.tmp", rename over, fsync. */
static enum mf_err ins__set_link(int dirfd, const char *link, const char *target,
                                 struct mf_diag *diag)
{
    char tmp[32];
    snprintf(tmp, sizeof tmp, ".%s" TEMP_SUFFIX, link);
    if (unlinkat(dirfd, tmp, 0) != 0 && errno != ENOENT)
        return mf_diag_errno(diag, errno, tmp, "cannot remove a stale temporary link");
    if (symlinkat(target, dirfd, tmp) != 0)
        return mf_diag_errno(diag, errno, tmp, "cannot create the link");
    crash_point("link:temp");
    if (renameat(dirfd, tmp, dirfd, link) != 0) {
        enum mf_err err = mf_diag_errno(diag, errno, link, "cannot replace the link");
        unlinkat(dirfd, tmp, 0);
        return err;
    }
    if (fsync(dirfd) != 0)
        return mf_diag_errno(diag, errno, link, "cannot fsync the model directory");
    return MF_OK;
}

/* ---- slot check ---- */

/* Checks the slot at path; when expect is not NULL its manifest.json must be
 * exactly those bytes. */
static enum mf_err ins__check(const char *slot_path, bool rehash, const uint8_t *expect,
                              size_t expect_len, struct mf_diag *diag)
{
    char *copy = mf_xstrdup(slot_path);
    char *slot = strrchr(copy, '/') ? strrchr(copy, '/') + 1 : copy;
    char *marker = mf_xasprintf("%s/" MARKER, slot_path);
    struct mf_buf b = {0};
    struct mf_manifest *m = NULL;
    struct stat st;
    enum mf_err err = MF_OK;
    uint8_t h[MF_HASH_BYTES];
    char hex[MF_HASH_HEX];

    if (!mf_install_slot_ok(slot)) {
        err = mf_diag_set(diag, MF_ERR_USAGE, slot_path, "not a slot (<version>-<16 hex>)");
        goto out;
    }
    if (lstat(slot_path, &st) != 0 || !S_ISDIR(st.st_mode)) {
        err = mf_diag_set(diag, MF_ERR_MISSING, slot_path, "the slot directory does not exist");
        goto out;
    }
    if (lstat(marker, &st) != 0) {
        err = mf_diag_set(diag, MF_ERR_MISSING, slot_path,
                          MARKER " is missing: the slot is incomplete");
        goto out;
    }
    if ((err = mf_fs_read_file(marker, MF_MANIFEST_MAX, &b, diag)) != MF_OK)
        goto out;
    if (expect && (b.len != expect_len || memcmp(b.data, expect, b.len) != 0)) {
        err = mf_diag_set(diag, MF_ERR_CONFLICT, slot_path,
                          "holds another manifest than the package's");
        goto out;
    }
    mf_hash_bytes(h, b.data, b.len);
    sodium_bin2hex(hex, sizeof hex, h, sizeof h);
    if (memcmp(hex, slot + strlen(slot) - MF_INSTALL_HASH_LEN, MF_INSTALL_HASH_LEN) != 0) {
        err = mf_diag_set(diag, MF_ERR_HASH_MISMATCH, slot_path,
                          MARKER " hashes to %.16s..., not the slot's hash", hex);
        goto out;
    }
    if ((err = mf_manifest_parse(b.data, b.len, &m, diag)) != MF_OK) {
        mf_diag_prefix(diag, slot_path);
        goto out;
    }
    if (strncmp(slot, m->version, strlen(m->version)) != 0 ||
        strlen(m->version) + 1 + MF_INSTALL_HASH_LEN != strlen(slot)) {
        err = mf_diag_set(diag, MF_ERR_CONFLICT, slot_path, "holds version %s", m->version);
        goto out;
    }
    for (size_t i = 0; i < m->n_files; i++) {
        const struct mf_manifest_file *f = &m->files[i];
        char *p = mf_xasprintf("%s/%s", slot_path, f->path);
        if (lstat(p, &st) != 0)
            err = mf_diag_set(diag, MF_ERR_MISSING, p, "is missing: the slot is incomplete");
        else if (!S_ISREG(st.st_mode))
            err = mf_diag_set(diag, MF_ERR_ENTRY_TYPE, p, "is not a regular file");
        else if ((uint64_t)st.st_size != f->size)
            err =
                mf_diag_set(diag, MF_ERR_SIZE_MISMATCH, p, "is %lld bytes; the manifest says %llu",
                            (long long)st.st_size, (unsigned long long)f->size);
        else if (rehash) {
            uint8_t fh[MF_HASH_BYTES];
            if ((err = mf_hash_file(p, fh, NULL, diag)) == MF_OK &&
                sodium_memcmp(fh, f->hash, sizeof fh) != 0)
                err = mf_diag_set(diag, MF_ERR_HASH_MISMATCH, p,
                                  "content differs from the manifest (altered or corrupted)");
        }
        free(p);
        if (err != MF_OK)
            goto out;
    }
out:
    mf_manifest_free(m);
    mf_buf_free(&b);
    free(marker);
    free(copy);
    return err;
}

enum mf_err mf_install_check_slot(const char *slot_path, bool rehash, struct mf_diag *diag)
{
    return ins__check(slot_path, rehash, NULL, 0, diag);
}

/* ---- sizes and cleanup ---- */

/* Bytes of the regular files below parent/name; symlinks are not followed. */
static uint64_t ins__tree_bytes(int parent, const char *name)
{
    struct stat st;
    if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return 0;
    if (S_ISREG(st.st_mode))
        return (uint64_t)st.st_size;
    if (!S_ISDIR(st.st_mode))
        return 0;
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return 0;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return 0;
    }
    uint64_t sum = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            sum += ins__tree_bytes(dirfd(d), de->d_name);
    closedir(d);
    return sum;
}

/* Bytes of every slot of every model, except skip_model/skip_slot. */
static uint64_t ins__slots_bytes(const char *state_dir, const char *skip_model,
                                 const char *skip_slot)
{
    char *models = mf_xasprintf("%s/" MF_INSTALL_MODELS_DIR, state_dir);
    DIR *d = opendir(models);
    uint64_t sum = 0;
    free(models);
    if (!d)
        return 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        int fd = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            continue;
        DIR *md = fdopendir(fd);
        if (!md) {
            close(fd);
            continue;
        }
        struct dirent *se;
        while ((se = readdir(md)) != NULL) {
            if (se->d_name[0] == '.')
                continue; /* ".", "..", staging: removed before extracting */
            if (skip_model && strcmp(de->d_name, skip_model) == 0 &&
                strcmp(se->d_name, skip_slot) == 0)
                continue;
            struct stat st;
            if (fstatat(dirfd(md), se->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                S_ISDIR(st.st_mode))
                sum += ins__tree_bytes(dirfd(md), se->d_name);
        }
        closedir(md);
    }
    closedir(d);
    return sum;
}

uint64_t mf_install_usage(const char *state_dir)
{
    return ins__slots_bytes(state_dir, NULL, NULL);
}

/* Removes staging directories and temp links in the model directory dirfd;
 * names are added to cleaned (as "<prefix>/<entry>") when not NULL. */
static enum mf_err ins__clean_model(int dirfd_, const char *prefix, struct mf_strlist *cleaned)
{
    int fd = dup(dirfd_);
    enum mf_err err = MF_OK;
    bool any = false;
    if (fd < 0)
        return MF_ERR_IO;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return MF_ERR_IO;
    }
    rewinddir(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *n = de->d_name;
        size_t len = strlen(n);
        bool staging = strncmp(n, STAGING_PREFIX, strlen(STAGING_PREFIX)) == 0;
        bool temp = n[0] == '.' && len > strlen(TEMP_SUFFIX) + 1 &&
                    strcmp(n + len - strlen(TEMP_SUFFIX), TEMP_SUFFIX) == 0;
        if (!staging && !temp)
            continue;
        if (mf_fs_rmtree_at(dirfd(d), n) != MF_OK) {
            err = MF_ERR_IO;
            continue;
        }
        any = true;
        if (cleaned) {
            char *p = mf_xasprintf("%s/%s", prefix, n);
            mf_strlist_push(cleaned, p);
            free(p);
        }
    }
    if (any && fsync(dirfd_) != 0)
        err = MF_ERR_IO;
    closedir(d);
    return err;
}

/* mkdir that tolerates an existing directory, then fsyncs the parent. */
static enum mf_err ins__mkdir(const char *path, struct mf_diag *diag)
{
    if (mkdir(path, 0755) != 0) {
        if (errno == EEXIST)
            return MF_OK;
        return mf_diag_errno(diag, errno, path, "cannot create the directory");
    }
    char *parent = mf_xstrdup(path);
    *strrchr(parent, '/') = '\0';
    enum mf_err err = mf_fs_fsync_dir(parent);
    if (err != MF_OK)
        mf_diag_errno(diag, errno, parent, "cannot fsync");
    free(parent);
    return err;
}

/* Replaces the directory at `to` with the one at `from` atomically when the
 * file system can exchange names (the old `to` ends up at `from`, deleted
 * after), else by delete-then-rename. */
static enum mf_err ins__replace_dir(const char *from, const char *to, struct mf_diag *diag)
{
    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_EXCHANGE) == 0)
        return mf_fs_rmtree(from) == MF_OK ? MF_OK
                                           : mf_diag_set(diag, MF_ERR_IO, from, "cannot remove");
    if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
        return mf_diag_errno(diag, errno, to, "cannot exchange the rebuilt slot");
    if (mf_fs_rmtree(to) != MF_OK)
        return mf_diag_set(diag, MF_ERR_IO, to, "cannot remove the incomplete slot");
    if (rename(from, to) != 0)
        return mf_diag_errno(diag, errno, to, "cannot rename the staging directory");
    return MF_OK;
}

/* ---- unpack ---- */

static enum mf_err ins__agent_version(const struct mf_manifest *m, const char *agent_version,
                                      struct mf_diag *diag)
{
    struct mf_semver have, need;
    if (!agent_version)
        return MF_OK;
    if (mf_semver_parse(agent_version, &have, NULL) != MF_OK)
        return mf_diag_set(diag, MF_ERR_USAGE, "agent_version", "\"%s\" is not a version",
                           agent_version);
    if (mf_semver_parse(m->min_agent_version, &need, NULL) != MF_OK ||
        mf_semver_cmp(&have, &need) < 0)
        return mf_diag_set(diag, MF_ERR_VERSION, "min_agent_version",
                           "the package needs agent %s or newer; this is %s", m->min_agent_version,
                           agent_version);
    return MF_OK;
}

enum mf_err mf_install_unpack(const char *pkg_path, const struct mf_keyring *trust,
                              const char *state_dir, uint64_t disk_budget,
                              const char *agent_version, struct mf_install_result *out,
                              struct mf_diag *diag)
{
    struct mf_pkg_result head = {0}, full = {0};
    struct mf_install_result r = {0};
    char *models = NULL, *model_dir = NULL, *slot_path = NULL, *staging = NULL, *tmp = NULL;
    int mfd = -1;
    bool rebuild = false, made_model_dir = false;
    uint8_t h[MF_HASH_BYTES];
    struct stat st;
    enum mf_err err;

    if (!trust)
        abort(); /* programmer error: the agent always verifies */
    /* The manifest and signatures only: what would be installed, and where. */
    if ((err = mf_pkg_inspect(pkg_path, &head, diag)) != MF_OK)
        goto out;
    if ((err = mf_sigset_check(&head.sigs, head.manifest_bytes, head.manifest_len, trust, r.signer,
                               diag)) != MF_OK) {
        mf_diag_prefix(diag, pkg_path);
        goto out;
    }
    if ((err = ins__agent_version(head.manifest, agent_version, diag)) != MF_OK)
        goto out;
    mf_hash_bytes(h, head.manifest_bytes, head.manifest_len);
    sodium_bin2hex(r.manifest_hash, sizeof r.manifest_hash, h, sizeof h);
    if (strlen(head.manifest->version) + 1 + MF_INSTALL_HASH_LEN >= sizeof r.slot) {
        err = mf_diag_set(diag, MF_ERR_TOO_LARGE, "version", "too long for a slot name");
        goto out;
    }
    snprintf(r.slot, sizeof r.slot, "%s-%.*s", head.manifest->version, MF_INSTALL_HASH_LEN,
             r.manifest_hash);
    snprintf(r.model, sizeof r.model, "%s", head.manifest->model);
    snprintf(r.version, sizeof r.version, "%s", head.manifest->version);

    models = mf_xasprintf("%s/" MF_INSTALL_MODELS_DIR, state_dir);
    model_dir = ins__model_dir(state_dir, r.model);
    slot_path = mf_install_slot_path(state_dir, r.model, r.slot);
    staging = mf_xasprintf("%s/" STAGING_PREFIX "%s", model_dir, r.slot + strlen(r.version) + 1);

    mfd = open(model_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (mfd >= 0 && ins__clean_model(mfd, model_dir, NULL) != MF_OK) {
        err = mf_diag_set(diag, MF_ERR_IO, model_dir, "cannot remove leftover staging directories");
        goto out;
    }
    if (lstat(slot_path, &st) == 0) {
        struct mf_diag why;
        if (ins__check(slot_path, true, head.manifest_bytes, head.manifest_len, &why) == MF_OK) {
            /* The slot is whole, but this package file must verify too:
             * its id is what the state will record. */
            struct mf_pkg_opts vopts = {.agent_version = agent_version};
            if ((err = mf_pkg_verify(pkg_path, trust, &vopts, &full, diag)) != MF_OK)
                goto out;
            if (full.manifest_len != head.manifest_len ||
                memcmp(full.manifest_bytes, head.manifest_bytes, full.manifest_len) != 0) {
                err = mf_diag_set(diag, MF_ERR_IO, pkg_path, "the package changed while read");
                goto out;
            }
            r.reused = true;
            r.payload_bytes = mf_manifest_payload_bytes(head.manifest);
            r.manifest = head.manifest;
            head.manifest = NULL;
            goto out;
        }
        rebuild = true; /* incomplete or damaged: extract again and swap it in */
    }

    /* The budget, before anything is written. */
    uint64_t used = ins__slots_bytes(state_dir, rebuild ? r.model : NULL, r.slot);
    uint64_t need = mf_manifest_payload_bytes(head.manifest);
    if (disk_budget && (need > disk_budget || used > disk_budget - need)) {
        err = mf_diag_set(diag, MF_ERR_DISK_BUDGET, pkg_path,
                          "installed slots use %llu bytes and the package needs %llu; the disk "
                          "budget is %llu",
                          (unsigned long long)used, (unsigned long long)need,
                          (unsigned long long)disk_budget);
        goto out;
    }

    if ((err = ins__mkdir(models, diag)) != MF_OK)
        goto out;
    if (mfd < 0) {
        if ((err = ins__mkdir(model_dir, diag)) != MF_OK)
            goto out;
        made_model_dir = true;
    }
    crash_point("unpack:before-extract");
    struct mf_pkg_opts opts = {
        .disk_budget = disk_budget ? disk_budget - used : 0,
        .fsync = true,
        .agent_version = agent_version,
    };
    if ((err = mf_pkg_extract(pkg_path, trust, staging, &opts, &full, diag)) != MF_OK)
        goto out;
    if (full.manifest_len != head.manifest_len ||
        memcmp(full.manifest_bytes, head.manifest_bytes, full.manifest_len) != 0) {
        err = mf_diag_set(diag, MF_ERR_CONFLICT, pkg_path, "the package changed while installing");
        goto out;
    }
    crash_point("unpack:extracted");

    /* The signatures, then the manifest last: its presence marks the slot complete. */
    tmp = mf_xasprintf("%s/" SIG_FILE, staging);
    char *sigtext = mf_sigset_format(&full.sigs);
    err = mf_fs_write_file(tmp, sigtext, strlen(sigtext), 0644, diag);
    free(sigtext);
    free(tmp);
    tmp = mf_xasprintf("%s/" MARKER, staging);
    if (err != MF_OK ||
        (err = mf_fs_write_file(tmp, full.manifest_bytes, full.manifest_len, 0644, diag)) != MF_OK)
        goto out;
    crash_point("unpack:marker");

    if (rebuild) {
        if ((err = ins__replace_dir(staging, slot_path, diag)) != MF_OK)
            goto out;
    } else if (rename(staging, slot_path) != 0) {
        err = mf_diag_errno(diag, errno, slot_path, "cannot rename the staging directory");
        goto out;
    }
    if (mf_fs_fsync_dir(model_dir) != MF_OK) {
        err = mf_diag_errno(diag, errno, model_dir, "cannot fsync");
        goto out;
    }
    crash_point("unpack:renamed");
    r.rebuilt = rebuild;
    r.payload_bytes = full.payload_bytes;
    snprintf(r.signer, sizeof r.signer, "%s", full.signer);
    r.manifest = full.manifest;
    full.manifest = NULL;
out:
    if (err != MF_OK && staging) {
        mf_fs_rmtree(staging);
        if (made_model_dir && rmdir(model_dir) == 0)
            mf_fs_fsync_dir(models);
    }
    if (mfd >= 0)
        close(mfd);
    mf_pkg_result_free(&head);
    mf_pkg_result_free(&full);
    free(tmp);
    free(staging);
    free(slot_path);
    free(model_dir);
    free(models);
    if (err != MF_OK) {
        mf_install_result_free(&r);
        return err;
    }
    *out = r;
    return MF_OK;
}

/* ---- activate, rollback ---- */

enum mf_err mf_install_activate(const char *state_dir, const char *name, const char *slot,
                                struct mf_diag *diag)
{
    char cur[MF_INSTALL_SLOT_MAX];
    char *slot_path = NULL;
    int fd = -1;
    enum mf_err err;

    if ((err = ins__args(name, slot, diag)) != MF_OK)
        return err;
    slot_path = mf_install_slot_path(state_dir, name, slot);
    if ((err = mf_install_check_slot(slot_path, false, diag)) != MF_OK ||
        (err = ins__open_model(state_dir, name, &fd, diag)) != MF_OK)
        goto out;
    err = ins__readlink(fd, "current", cur, diag);
    if (err == MF_OK && strcmp(cur, slot) == 0)
        goto out; /* already current */
    if (err == MF_OK) {
        /* previous first: re-running after a cut here converges. */
        if ((err = ins__set_link(fd, "previous", cur, diag)) != MF_OK)
            goto out;
        crash_point("activate:previous");
    } else if (err != MF_ERR_NOT_FOUND) {
        goto out;
    }
    if ((err = ins__set_link(fd, "current", slot, diag)) != MF_OK)
        goto out;
    crash_point("activate:current");
out:
    if (fd >= 0)
        close(fd);
    free(slot_path);
    return err;
}

enum mf_err mf_install_rollback(const char *state_dir, const char *name,
                                char new_current[MF_INSTALL_SLOT_MAX], struct mf_diag *diag)
{
    char cur[MF_INSTALL_SLOT_MAX], prev[MF_INSTALL_SLOT_MAX];
    char *prev_path = NULL;
    int fd = -1;
    enum mf_err err;

    if ((err = ins__args(name, NULL, diag)) != MF_OK ||
        (err = ins__open_model(state_dir, name, &fd, diag)) != MF_OK)
        return err;
    if ((err = ins__readlink(fd, "current", cur, diag)) != MF_OK ||
        (err = ins__readlink(fd, "previous", prev, diag)) != MF_OK)
        goto out;
    if (strcmp(cur, prev) == 0) {
        err = mf_diag_set(diag, MF_ERR_NOT_FOUND, name,
                          "previous is the current slot %s: nothing to roll back to", cur);
        goto out;
    }
    prev_path = mf_install_slot_path(state_dir, name, prev);
    if ((err = mf_install_check_slot(prev_path, false, diag)) != MF_OK)
        goto out;
    if (renameat2(fd, "current", fd, "previous", RENAME_EXCHANGE) != 0) {
        if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP) {
            err = mf_diag_errno(diag, errno, name, "cannot swap current and previous");
            goto out;
        }
        /* No atomic exchange here: current first, so it always names a slot. */
        if ((err = ins__set_link(fd, "current", prev, diag)) != MF_OK ||
            (err = ins__set_link(fd, "previous", cur, diag)) != MF_OK)
            goto out;
    }
    if (fsync(fd) != 0) {
        err = mf_diag_errno(diag, errno, name, "cannot fsync the model directory");
        goto out;
    }
    crash_point("rollback:swapped");
    if (new_current)
        memcpy(new_current, prev, strlen(prev) + 1);
out:
    if (fd >= 0)
        close(fd);
    free(prev_path);
    return err;
}

/* ---- prune ---- */

struct slot_age {
    char name[MF_INSTALL_SLOT_MAX];
    struct timespec t;
};

static int slot_age_cmp(const void *a, const void *b)
{
    const struct slot_age *x = a, *y = b;
    if (x->t.tv_sec != y->t.tv_sec)
        return x->t.tv_sec < y->t.tv_sec ? -1 : 1;
    if (x->t.tv_nsec != y->t.tv_nsec)
        return x->t.tv_nsec < y->t.tv_nsec ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* Out of the way in one rename, then deleted: a cut mid-delete leaves a
 * staging directory (removed by recovery), never a half slot under a slot's
 * name. */
static enum mf_err ins__remove_slot(int fd, const char *slot, struct mf_diag *diag)
{
    char trash[sizeof STAGING_PREFIX + 3 + MF_INSTALL_SLOT_MAX];
    snprintf(trash, sizeof trash, STAGING_PREFIX "rm-%s", slot);
    if (renameat(fd, slot, fd, trash) != 0)
        return mf_diag_errno(diag, errno, slot, "cannot remove the slot");
    crash_point("prune:renamed");
    if (mf_fs_rmtree_at(fd, trash) != MF_OK)
        return mf_diag_set(diag, MF_ERR_IO, trash, "cannot remove");
    return MF_OK;
}

enum mf_err mf_install_discard(const char *state_dir, const char *name, const char *slot,
                               struct mf_diag *diag)
{
    char cur[MF_INSTALL_SLOT_MAX] = "", prev[MF_INSTALL_SLOT_MAX] = "";
    int fd = -1;
    enum mf_err err;

    if ((err = ins__args(name, slot, diag)) != MF_OK ||
        (err = ins__open_model(state_dir, name, &fd, diag)) != MF_OK)
        return err;
    if (((err = ins__readlink(fd, "current", cur, diag)) != MF_OK && err != MF_ERR_NOT_FOUND) ||
        ((err = ins__readlink(fd, "previous", prev, diag)) != MF_OK && err != MF_ERR_NOT_FOUND))
        goto out;
    if (strcmp(slot, cur) == 0 || strcmp(slot, prev) == 0) {
        err = mf_diag_set(diag, MF_ERR_CONFLICT, slot, "is %s: never discarded",
                          strcmp(slot, cur) == 0 ? "current" : "previous");
        goto out;
    }
    struct stat st;
    if (fstatat(fd, slot, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        err = errno == ENOENT ? MF_OK : mf_diag_errno(diag, errno, slot, "cannot stat the slot");
        goto out;
    }
    if ((err = ins__remove_slot(fd, slot, diag)) == MF_OK && fsync(fd) != 0)
        err = mf_diag_errno(diag, errno, name, "cannot fsync the model directory");
out:
    close(fd);
    return err;
}

enum mf_err mf_install_prune(const char *state_dir, const char *name, unsigned keep,
                             unsigned *removed, struct mf_diag *diag)
{
    char cur[MF_INSTALL_SLOT_MAX] = "", prev[MF_INSTALL_SLOT_MAX] = "";
    struct slot_age *slots = NULL;
    size_t n = 0;
    unsigned gone = 0;
    int fd = -1;
    DIR *d = NULL;
    enum mf_err err;

    if (keep < 1)
        return mf_diag_set(diag, MF_ERR_USAGE, "keep", "must be at least 1");
    if ((err = ins__args(name, NULL, diag)) != MF_OK ||
        (err = ins__open_model(state_dir, name, &fd, diag)) != MF_OK)
        return err;
    if (((err = ins__readlink(fd, "current", cur, diag)) != MF_OK && err != MF_ERR_NOT_FOUND) ||
        ((err = ins__readlink(fd, "previous", prev, diag)) != MF_OK && err != MF_ERR_NOT_FOUND))
        goto out;
    err = MF_OK;
    int dfd = dup(fd);
    if (dfd < 0 || !(d = fdopendir(dfd))) {
        if (dfd >= 0)
            close(dfd);
        err = mf_diag_errno(diag, errno, name, "cannot list the model directory");
        goto out;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        struct stat st, ms;
        char marker[256 + sizeof MARKER + 1]; /* d_name is at most 255 */
        if (de->d_name[0] == '.' || !mf_install_slot_ok(de->d_name) ||
            fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode))
            continue;
        snprintf(marker, sizeof marker, "%s/" MARKER, de->d_name);
        slots = mf_xreallocarray(slots, n + 1, sizeof *slots);
        memcpy(slots[n].name, de->d_name, strlen(de->d_name) + 1);
        /* Install time: when the marker was written (the directory's own mtime
         * for an incomplete slot). */
        slots[n].t = fstatat(fd, marker, &ms, AT_SYMLINK_NOFOLLOW) == 0 ? ms.st_mtim : st.st_mtim;
        n++;
    }
    if (n)
        qsort(slots, n, sizeof *slots, slot_age_cmp);
    size_t left = n;
    for (size_t i = 0; i < n && left > keep; i++) {
        if (strcmp(slots[i].name, cur) == 0 || strcmp(slots[i].name, prev) == 0)
            continue;
        if ((err = ins__remove_slot(fd, slots[i].name, diag)) != MF_OK)
            goto out;
        gone++;
        left--;
    }
    if (gone && fsync(fd) != 0)
        err = mf_diag_errno(diag, errno, name, "cannot fsync the model directory");
out:
    if (d)
        closedir(d);
    if (fd >= 0)
        close(fd);
    free(slots);
    if (err == MF_OK && removed)
        *removed = gone;
    return err;
}

/* ---- recover ---- */

enum mf_err mf_install_recover(const char *state_dir, struct mf_install_recovery *out,
                               struct mf_diag *diag)
{
    char *models = mf_xasprintf("%s/" MF_INSTALL_MODELS_DIR, state_dir);
    enum mf_err err = MF_OK;
    DIR *d = NULL;

    memset(out, 0, sizeof *out);
    if (mf_state_recover(state_dir, &out->cleaned) != MF_OK)
        err = mf_diag_set(diag, MF_ERR_IO, state_dir, "cannot remove temporary state files");
    d = opendir(models);
    if (!d) {
        if (errno != ENOENT)
            err = mf_diag_errno(diag, errno, models, "cannot list");
        goto out;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' || !mf_pkg_name_ok(de->d_name))
            continue;
        int fd = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            continue;
        char *prefix = mf_xasprintf(MF_INSTALL_MODELS_DIR "/%s", de->d_name);
        if (ins__clean_model(fd, prefix, &out->cleaned) != MF_OK && err == MF_OK)
            err = mf_diag_set(diag, MF_ERR_IO, prefix, "cannot remove staging directories");
        free(prefix);

        char cur[MF_INSTALL_SLOT_MAX], prev[MF_INSTALL_SLOT_MAX];
        char line[MF_DIAG_STR_MAX + MF_NAME_MAX + 2];
        struct mf_diag why = {0};
        enum mf_err e = ins__readlink(fd, "current", cur, &why);
        if (e == MF_OK) {
            char *path = mf_install_slot_path(state_dir, de->d_name, cur);
            e = mf_install_check_slot(path, false, &why);
            free(path);
        } else if (e == MF_ERR_NOT_FOUND) {
            /* No current is fine for a model never activated, not when a
             * previous exists (activation writes previous first, then current). */
            e = ins__readlink(fd, "previous", prev, NULL) == MF_OK
                    ? mf_diag_set(&why, MF_ERR_MISSING, "current", "is missing; previous is %s",
                                  prev)
                    : MF_OK;
        }
        if (e != MF_OK) {
            char buf[MF_DIAG_STR_MAX];
            snprintf(line, sizeof line, "%s: %s", de->d_name, mf_diag_str(&why, buf, sizeof buf));
            mf_strlist_push(&out->broken, line);
        }
        close(fd);
    }
out:
    if (d)
        closedir(d);
    free(models);
    return err;
}
