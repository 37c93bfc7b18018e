/* writer.h — (internal to packaging/) the one place that writes .mfpkg
 * archives, so `pack` and `sign` produce identical bytes for identical
 * content: pax-restricted tar (plain ustar headers for our paths), every entry
 * a regular file with mode 0644, uid/gid 0, no owner names, and the same
 * mtime (the manifest's `created`); optional zstd. The file appears at its
 * path only on commit (atomic rename). */
#ifndef MF_PKG_WRITER_H
#define MF_PKG_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

struct mf_pkgw;

MF_MUST_CHECK enum mf_err mf_pkgw_open(struct mf_pkgw **out, const char *path, bool zstd,
                                       int64_t mtime, struct mf_diag *diag);
/* Starts an entry of exactly `size` bytes; feed it with mf_pkgw_data. */
MF_MUST_CHECK enum mf_err mf_pkgw_begin(struct mf_pkgw *w, const char *name, uint64_t size,
                                        struct mf_diag *diag);
MF_MUST_CHECK enum mf_err mf_pkgw_data(struct mf_pkgw *w, const void *p, size_t n,
                                       struct mf_diag *diag);
/* begin + data for a small in-memory entry. */
MF_MUST_CHECK enum mf_err mf_pkgw_add(struct mf_pkgw *w, const char *name, const void *p, size_t n,
                                      struct mf_diag *diag);
/* Closes the archive and renames it into place; frees w either way. */
MF_MUST_CHECK enum mf_err mf_pkgw_commit(struct mf_pkgw *w, struct mf_diag *diag);
/* Discards the temporary file; frees w. Takes NULL. */
void mf_pkgw_abort(struct mf_pkgw *w);

#endif
