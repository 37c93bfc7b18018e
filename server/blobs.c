/* blobs.c — the content-addressed blob folder. */
#include "server/blobs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/fs.h"
#include "common/log.h"
#include "common/mem.h"

static enum mf_err blobs__mkdir(const char *path, struct mf_diag *diag)
{
    if (mkdir(path, 0750) != 0 && errno != EEXIST)
        return mf_diag_errno(diag, errno, path, "cannot create directory");
    return MF_OK;
}

/* True when tmp/name is an abandoned leftover. */
static bool blobs__stale(int dir, const char *name)
{
    struct stat st;
    bool stale = false;
    int fd = openat(dir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);

    if (fd < 0)
        return errno == ELOOP; /* a symlink has no business here */
    if (fstat(fd, &st) == 0 && time(NULL) - st.st_mtime > 3600 && flock(fd, LOCK_EX | LOCK_NB) == 0)
        stale = true;
    close(fd);
    return stale;
}

enum mf_err mf_blobs_open(struct mf_blobs *b, const char *data_dir, bool sweep,
                          struct mf_diag *diag)
{
    enum mf_err rc;
    DIR *d;
    struct dirent *e;
    int n = 0;

    b->dir = mf_xasprintf("%s/blobs", data_dir);
    b->tmp = mf_xasprintf("%s/tmp", data_dir);
    if ((rc = blobs__mkdir(b->dir, diag)) != MF_OK || (rc = blobs__mkdir(b->tmp, diag)) != MF_OK) {
        mf_blobs_close(b);
        return rc;
    }
    if (!sweep)
        return MF_OK;
    d = opendir(b->tmp);
    if (!d) {
        rc = mf_diag_errno(diag, errno, b->tmp, "cannot open");
        mf_blobs_close(b);
        return rc;
    }
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (blobs__stale(dirfd(d), e->d_name) && mf_fs_rmtree_at(dirfd(d), e->d_name) == MF_OK)
            n++;
    }
    closedir(d);
    if (n)
        mf_log(MF_LOG_INFO, "removed %d unfinished upload(s) from %s", n, b->tmp);
    return MF_OK;
}

void mf_blobs_close(struct mf_blobs *b)
{
    free(b->dir);
    free(b->tmp);
    b->dir = b->tmp = NULL;
}

enum mf_err mf_blobs_temp(const struct mf_blobs *b, char **path, int *fd, struct mf_diag *diag)
{
    char *p = mf_xasprintf("%s/upload-XXXXXX", b->tmp);
    int f = mkstemp(p);
    if (f >= 0 && (fcntl(f, F_SETFD, FD_CLOEXEC) != 0 || flock(f, LOCK_EX | LOCK_NB) != 0)) {
        close(f);
        unlink(p);
        f = -1;
    }
    if (f < 0) {
        enum mf_err rc = mf_diag_errno(diag, errno, b->tmp, "cannot create a temp file");
        free(p);
        return rc;
    }
    *path = p;
    *fd = f;
    return MF_OK;
}

int mf_blobs_id_ok(const char *s)
{
    size_t i;
    for (i = 0; s[i]; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return i == 2 * MF_HASH_BYTES;
}

char *mf_blobs_path(const struct mf_blobs *b, const char *id)
{
    return mf_xasprintf("%s/%.2s/%s.mfpkg", b->dir, id, id);
}

enum mf_err mf_blobs_commit(const struct mf_blobs *b, const char *tmp_path, const char *id,
                            bool *created, struct mf_diag *diag)
{
    char *sub = mf_xasprintf("%s/%.2s", b->dir, id);
    char *dst = mf_blobs_path(b, id);
    enum mf_err rc = MF_OK;
    struct stat st;
    int fd;

    *created = false;
    if ((rc = blobs__mkdir(sub, diag)) != MF_OK)
        goto out;
    if (stat(dst, &st) == 0) { /* same bytes already stored */
        unlink(tmp_path);
        goto out;
    }
    fd = open(tmp_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        rc = mf_diag_errno(diag, errno, tmp_path, "cannot sync");
        if (fd >= 0)
            close(fd);
        goto out;
    }
    close(fd);
    if (chmod(tmp_path, 0640) != 0 || rename(tmp_path, dst) != 0) {
        rc = mf_diag_errno(diag, errno, dst, "cannot store blob");
        goto out;
    }
    (void)mf_fs_fsync_dir(sub);
    *created = true;
out:
    free(sub);
    free(dst);
    return rc;
}

void mf_blobs_remove(const struct mf_blobs *b, const char *id)
{
    char *path = mf_blobs_path(b, id);
    unlink(path);
    free(path);
}
