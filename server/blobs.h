/* blobs.h — the content-addressed package store under data_dir:
 *   blobs/<h[0:2]>/<h>.mfpkg   immutable, named by BLAKE2b-256 of the bytes
 *   tmp/                       uploads in flight; emptied at start
 * A blob appears by rename() after fsync, so a reader never sees a partial
 * file and a crash leaves at most a temp file that the next start removes. */
#ifndef MF_SERVER_BLOBS_H
#define MF_SERVER_BLOBS_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "common/hash.h"

struct mf_blobs {
    char *dir; /* data_dir/blobs */
    char *tmp; /* data_dir/tmp */
};

/* Creates the folders if needed. With `sweep`, removes leftovers in tmp/:
 * files no live process holds (uploads keep an flock on their temp file)
 * and untouched for an hour (signing a large upload rewrites it unlocked), so a second server
 * sharing data_dir, or a
 * --check-config, never deletes an upload in flight. */
MF_MUST_CHECK enum mf_err mf_blobs_open(struct mf_blobs *b, const char *data_dir, bool sweep,
                                        struct mf_diag *diag);
void mf_blobs_close(struct mf_blobs *b);

/* A new empty temp file (mode 0600) in tmp/, flock'ed while *fd stays open;
 * *path is malloc'd. */
MF_MUST_CHECK enum mf_err mf_blobs_temp(const struct mf_blobs *b, char **path, int *fd,
                                        struct mf_diag *diag);

/* The path a blob with this hex id has (malloc'd); id must be 64 lowercase hex. */
char *mf_blobs_path(const struct mf_blobs *b, const char *id);

/* fsyncs tmp_path and renames it to the blob path of id (replacing nothing:
 * if the blob already exists tmp_path is just removed and *created is false). */
MF_MUST_CHECK enum mf_err mf_blobs_commit(const struct mf_blobs *b, const char *tmp_path,
                                          const char *id, bool *created, struct mf_diag *diag);

/* Removes the blob of id (a push whose record failed). */
void mf_blobs_remove(const struct mf_blobs *b, const char *id);

/* true when s is 64 lowercase hex characters. */
int mf_blobs_id_ok(const char *s);

#endif
