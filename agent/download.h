/* download.h — fetches one package blob (GET /api/v1/packages/<id>/blob) into
 * `<dir>/<id>.part` with libcurl, resuming with `Range: bytes=<have>-` and
 * `If-Range: "<id>"` after any cut, and renames it to `<dir>/<id>.mfpkg` only
 * once its size is the expected one and its BLAKE2b-256 equals the id.
 * Invariants: nothing is ever written past `size`; a `.mfpkg` in `dir` always
 * hashes to its name; the credential never appears in a log or a diag. */
#ifndef MF_AGENT_DOWNLOAD_H
#define MF_AGENT_DOWNLOAD_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

#define MF_DOWNLOAD_ERROR_BODY_MAX 4096  /* bytes of an error reply kept for the diag */
#define MF_DOWNLOAD_ERROR_BODY_CAP 65536 /* an error reply longer than this is cut off */

/* Free bytes available under `dir` (for the disk check). Returns MF_OK or an
 * error that makes the download fail before any request. */
typedef enum mf_err (*mf_download_free_fn)(void *ctx, const char *dir, uint64_t *free_bytes);

/* What to fetch and how. Every pointer is borrowed for the duration of the
 * call. Zero in a numeric field means the default shown. */
struct mf_download_spec {
    const char *base_url;   /* "http://127.0.0.1:8080" (a trailing '/' is fine) */
    const char *package_id; /* 64 lowercase hex: BLAKE2b-256 of the blob */
    uint64_t size;          /* expected blob size in bytes, > 0 */
    const char *credential; /* bearer secret (mfd_...); NULL = no Authorization */
    const char *dir;        /* downloads directory; must exist */

    long connect_timeout_ms;    /* default 10000 */
    long low_speed_limit;       /* a transfer below this many bytes/s ...  (default 1) */
    long low_speed_time_s;      /* ... for this many seconds is cut (default 30) */
    uint64_t max_bytes_per_sec; /* receive cap; 0 = unlimited */

    /* Retries: after a failed attempt that added no byte to the .part, wait
     * (jittered exponential backoff: a uniform draw in [d/2, d], d doubling
     * from backoff_ms up to backoff_max_ms) and try again, at most `retries`
     * times in a row. An attempt that adds bytes resets the count and the
     * delay, so a link that keeps cutting still finishes. 401/403/404, a
     * size disagreement and local I/O errors are never retried. */
    unsigned retries;        /* default 0: a single attempt */
    uint64_t backoff_ms;     /* default 1000 */
    uint64_t backoff_max_ms; /* default 60000 */

    /* Checked between attempts, during backoff and while transferring; when
     * it becomes non-zero the call returns MF_ERR_UNAVAILABLE with
     * result.stopped set, keeping the .part for a later resume. NULL = none. */
    volatile sig_atomic_t *stop;

    /* Disk: a package bigger than `budget` is refused (MF_ERR_DISK_BUDGET)
     * before anything else (0 = no budget). Then, before the first request,
     * the bytes still missing must fit in the free space reported by
     * `free_space` (statvfs f_bavail of dir when NULL). */
    uint64_t budget;
    mf_download_free_fn free_space;
    void *free_space_ctx;
};

/* What happened. Filled on success and failure alike (path only on success). */
struct mf_download_result {
    char *path;             /* "<dir>/<id>.mfpkg"; owned, see mf_download_result_free */
    uint64_t bytes_fetched; /* body bytes received in this call, over all attempts */
    unsigned attempts;      /* HTTP requests made (0 when nothing was fetched) */
    bool resumed;           /* some request was answered 206 from an offset > 0 */
    bool cached;            /* the .mfpkg (or a complete .part) was already there */
    bool stopped;           /* ended by spec.stop */
    long last_status;       /* HTTP status of the last reply, 0 when none */
};

/* Downloads and verifies the blob. Errors: MF_ERR_USAGE (bad spec),
 * MF_ERR_DISK_BUDGET, MF_ERR_AUTH (401), MF_ERR_FORBIDDEN (403),
 * MF_ERR_NOT_FOUND (404), MF_ERR_SIZE_MISMATCH (the server's size is not
 * `size`; the .part is removed), MF_ERR_HASH_MISMATCH (twice the wrong bytes:
 * a mismatch removes the .part and downloads once more from scratch; the
 * .part is removed again), MF_ERR_IO (local file error, unexpected reply),
 * MF_ERR_UNAVAILABLE (retries exhausted on 5xx, timeouts, cuts; or stopped),
 * each with a sentence in diag. `out` is always written (counters included,
 * so a failure can be reported); out->path only on success, freed with
 * mf_download_result_free(). An empty .part is removed on failure, a
 * non-empty one kept for the next call to resume. The program initialises
 * libcurl (curl_global_init) before the first call. */
MF_MUST_CHECK enum mf_err mf_download(const struct mf_download_spec *spec,
                                      struct mf_download_result *out, struct mf_diag *diag);

/* Frees out->path; takes a zeroed result too. */
void mf_download_result_free(struct mf_download_result *out);

#endif
