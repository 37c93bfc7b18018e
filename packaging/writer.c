/* writer.c — deterministic .mfpkg writer over libarchive. */
#include "writer.h"

#include <archive.h>
#include <archive_entry.h>
#include <stdlib.h>

#include "common/fs.h"
#include "common/mem.h"

struct mf_pkgw {
    struct archive *a;
    struct archive_entry *e;
    struct mf_fs_atomic out;
    int64_t mtime;
};

static enum mf_err pkgw__err(struct mf_pkgw *w, struct mf_diag *diag, const char *what)
{
    return mf_diag_set(diag, MF_ERR_IO, w->out.path, "%s: %s", what,
                       archive_error_string(w->a) ? archive_error_string(w->a) : "unknown");
}

enum mf_err mf_pkgw_open(struct mf_pkgw **out, const char *path, bool zstd, int64_t mtime,
                         struct mf_diag *diag)
{
    struct mf_pkgw *w = mf_xcalloc(1, sizeof *w);
    enum mf_err err = mf_fs_atomic_open(&w->out, path, 0644, diag);
    if (err != MF_OK) {
        free(w);
        return err;
    }
    w->mtime = mtime;
    w->a = archive_write_new();
    w->e = archive_entry_new();
    if (archive_write_set_format_pax_restricted(w->a) != ARCHIVE_OK ||
        (zstd && archive_write_add_filter_zstd(w->a) != ARCHIVE_OK) ||
        archive_write_set_bytes_in_last_block(w->a, 1) != ARCHIVE_OK ||
        archive_write_open_fd(w->a, w->out.fd) != ARCHIVE_OK) {
        err = pkgw__err(w, diag, "cannot start the archive");
        mf_pkgw_abort(w);
        return err;
    }
    *out = w;
    return MF_OK;
}

enum mf_err mf_pkgw_begin(struct mf_pkgw *w, const char *name, uint64_t size, struct mf_diag *diag)
{
    archive_entry_clear(w->e);
    archive_entry_set_pathname(w->e, name);
    archive_entry_set_filetype(w->e, AE_IFREG);
    archive_entry_set_perm(w->e, 0644);
    archive_entry_set_size(w->e, (la_int64_t)size);
    archive_entry_set_mtime(w->e, (time_t)w->mtime, 0);
    archive_entry_set_uid(w->e, 0);
    archive_entry_set_gid(w->e, 0);
    if (archive_write_header(w->a, w->e) != ARCHIVE_OK)
        return pkgw__err(w, diag, name);
    return MF_OK;
}

enum mf_err mf_pkgw_data(struct mf_pkgw *w, const void *p, size_t n, struct mf_diag *diag)
{
    if (n && archive_write_data(w->a, p, n) != (la_ssize_t)n)
        return pkgw__err(w, diag, "write failed");
    return MF_OK;
}

enum mf_err mf_pkgw_add(struct mf_pkgw *w, const char *name, const void *p, size_t n,
                        struct mf_diag *diag)
{
    enum mf_err err = mf_pkgw_begin(w, name, n, diag);
    return err != MF_OK ? err : mf_pkgw_data(w, p, n, diag);
}

enum mf_err mf_pkgw_commit(struct mf_pkgw *w, struct mf_diag *diag)
{
    enum mf_err err = MF_OK;
    if (archive_write_close(w->a) != ARCHIVE_OK) {
        err = pkgw__err(w, diag, "cannot finish the archive");
        mf_pkgw_abort(w);
        return err;
    }
    err = mf_fs_atomic_commit(&w->out, diag);
    archive_write_free(w->a);
    archive_entry_free(w->e);
    free(w);
    return err;
}

void mf_pkgw_abort(struct mf_pkgw *w)
{
    if (!w)
        return;
    archive_write_free(w->a); /* closes the archive; the fd stays ours */
    archive_entry_free(w->e);
    mf_fs_atomic_abort(&w->out);
    free(w);
}
