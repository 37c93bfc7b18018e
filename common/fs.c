/* fs.c — atomic files and safe recursive removal. */
#include "fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mem.h"

static char *fs__dirname(const char *path)
{
    char *copy = mf_xstrdup(path);
    char *dir = mf_xstrdup(dirname(copy));
    free(copy);
    return dir;
}

enum mf_err mf_fs_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return MF_ERR_IO;
    int rc = fsync(fd);
    close(fd);
    return rc == 0 ? MF_OK : MF_ERR_IO;
}

enum mf_err mf_fs_atomic_open(struct mf_fs_atomic *a, const char *path, mode_t mode,
                              struct mf_diag *diag)
{
    char *copy = mf_xstrdup(path);
    char *dir = fs__dirname(path);
    char *tmp = mf_xasprintf("%s/.%s.tmp.XXXXXX", dir, basename(copy));
    free(copy);
    free(dir);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        enum mf_err err = mf_diag_errno(diag, errno, path, "cannot create a temporary file");
        free(tmp);
        return err;
    }
    if (fchmod(fd, mode) != 0) {
        enum mf_err err = mf_diag_errno(diag, errno, path, "cannot set mode");
        close(fd);
        unlink(tmp);
        free(tmp);
        return err;
    }
    a->fd = fd;
    a->tmp = tmp;
    a->path = mf_xstrdup(path);
    return MF_OK;
}

enum mf_err mf_fs_atomic_commit(struct mf_fs_atomic *a, struct mf_diag *diag)
{
    enum mf_err err = MF_OK;
    if (fsync(a->fd) != 0) {
        err = mf_diag_errno(diag, errno, a->path, "fsync failed");
        goto fail;
    }
    if (close(a->fd) != 0) {
        a->fd = -1;
        err = mf_diag_errno(diag, errno, a->path, "close failed");
        goto fail;
    }
    a->fd = -1;
    if (rename(a->tmp, a->path) != 0) {
        err = mf_diag_errno(diag, errno, a->path, "rename failed");
        goto fail;
    }
    char *dir = fs__dirname(a->path);
    if (mf_fs_fsync_dir(dir) != MF_OK)
        err = mf_diag_errno(diag, errno, dir, "cannot fsync directory");
    free(dir);
    free(a->tmp);
    free(a->path);
    a->tmp = a->path = NULL;
    return err;
fail:
    mf_fs_atomic_abort(a);
    return err;
}

void mf_fs_atomic_abort(struct mf_fs_atomic *a)
{
    if (!a)
        return;
    if (a->fd >= 0 && a->tmp)
        close(a->fd);
    if (a->tmp)
        unlink(a->tmp);
    free(a->tmp);
    free(a->path);
    a->fd = -1;
    a->tmp = a->path = NULL;
}

enum mf_err mf_fs_write_all(int fd, const void *data, size_t n)
{
    const char *p = data;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return MF_ERR_IO;
        p += w;
        n -= (size_t)w;
    }
    return MF_OK;
}

enum mf_err mf_fs_write_file(const char *path, const void *data, size_t len, mode_t mode,
                             struct mf_diag *diag)
{
    struct mf_fs_atomic a;
    enum mf_err err = mf_fs_atomic_open(&a, path, mode, diag);
    if (err != MF_OK)
        return err;
    if (mf_fs_write_all(a.fd, data, len) != MF_OK) {
        err = mf_diag_errno(diag, errno, path, "write failed");
        mf_fs_atomic_abort(&a);
        return err;
    }
    return mf_fs_atomic_commit(&a, diag);
}

enum mf_err mf_fs_read_file(const char *path, size_t max, struct mf_buf *out, struct mf_diag *diag)
{
    enum mf_err err = MF_OK;
    struct mf_buf b;
    struct stat st;
    char chunk[65536];
    mf_buf_init(&b, max);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return mf_diag_errno(diag, errno, path, "cannot open");
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        err = mf_diag_set(diag, MF_ERR_IO, path, "not a regular file");
        goto out;
    }
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err = mf_diag_errno(diag, errno, path, "cannot read");
            goto out;
        }
        if (n == 0)
            break;
        if (mf_buf_append(&b, chunk, (size_t)n) != MF_OK) {
            err = mf_diag_set(diag, MF_ERR_TOO_LARGE, path, "file is larger than %zu bytes", max);
            goto out;
        }
    }
    if (!b.data && mf_buf_append(&b, "", 0) != MF_OK) /* empty file: a valid "" */
        abort();
out:
    close(fd);
    if (err != MF_OK) {
        mf_buf_free(&b);
        return err;
    }
    *out = b;
    return MF_OK;
}

enum mf_err mf_fs_rmtree_at(int parent, const char *name)
{
    struct stat st;
    if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return errno == ENOENT ? MF_OK : MF_ERR_IO;
    if (!S_ISDIR(st.st_mode))
        return unlinkat(parent, name, 0) == 0 || errno == ENOENT ? MF_OK : MF_ERR_IO;
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return MF_ERR_IO;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return MF_ERR_IO;
    }
    enum mf_err err = MF_OK;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (mf_fs_rmtree_at(dirfd(d), de->d_name) != MF_OK)
            err = MF_ERR_IO;
    }
    closedir(d);
    if (unlinkat(parent, name, AT_REMOVEDIR) != 0 && errno != ENOENT)
        err = MF_ERR_IO;
    return err;
}

enum mf_err mf_fs_rmtree(const char *path)
{
    return mf_fs_rmtree_at(AT_FDCWD, path);
}
