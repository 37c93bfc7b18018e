/* fs.h — file-system helpers with crash-safe semantics: atomic replacement
 * (temp file in the same directory, fsync, rename, fsync the directory) and a
 * recursive delete that never follows a symbolic link. */
#ifndef MF_FS_H
#define MF_FS_H

#include <stddef.h>
#include <sys/types.h>

#include "buf.h"
#include "err.h"

/* An output file that appears at `path` only when committed. */
struct mf_fs_atomic {
    int fd;
    char *tmp;  /* owned: "<dir>/.<name>.tmp.XXXXXX" */
    char *path; /* owned */
};

/* Creates the temp file with `mode`. On success the caller must call
 * mf_fs_atomic_commit() or mf_fs_atomic_abort(). */
MF_MUST_CHECK enum mf_err mf_fs_atomic_open(struct mf_fs_atomic *a, const char *path, mode_t mode,
                                            struct mf_diag *diag);
/* fsync, rename over path, fsync the directory; frees a. On error the temp
 * file is removed and path is untouched. */
MF_MUST_CHECK enum mf_err mf_fs_atomic_commit(struct mf_fs_atomic *a, struct mf_diag *diag);
/* Removes the temp file; frees a. Takes a zeroed/aborted a too. */
void mf_fs_atomic_abort(struct mf_fs_atomic *a);

/* Writes all of buf to path atomically. */
MF_MUST_CHECK enum mf_err mf_fs_write_file(const char *path, const void *data, size_t len,
                                           mode_t mode, struct mf_diag *diag);
/* Writes all n bytes to fd (retrying short writes and EINTR). */
MF_MUST_CHECK enum mf_err mf_fs_write_all(int fd, const void *data, size_t n);
/* Reads a whole regular file of at most `max` bytes into out (initialised here;
 * caller frees with mf_buf_free). MF_ERR_TOO_LARGE past the cap. */
MF_MUST_CHECK enum mf_err mf_fs_read_file(const char *path, size_t max, struct mf_buf *out,
                                          struct mf_diag *diag);
/* Removes path and everything below it; symlinks are removed, not followed.
 * A missing path is success. */
enum mf_err mf_fs_rmtree(const char *path);
/* Same, for the entry `name` in the directory open as `parent`. */
enum mf_err mf_fs_rmtree_at(int parent, const char *name);
/* fsync the directory containing path (or path itself when it is a dir). */
enum mf_err mf_fs_fsync_dir(const char *dir);

#endif
