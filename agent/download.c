/* download.c — one blob, resumable, verified. A loop of HTTP attempts on one
 * libcurl easy handle; each attempt's headers are judged before a body byte
 * is written (callbacks fill `struct dl_try`), then the loop decides: verify,
 * retry, restart from 0, or give up.
 * Invariants: the .part only grows by bytes the server sent for the offset it
 * was asked (206 whose Content-Range starts at the .part's size, or a 200
 * after truncating it); it never exceeds spec->size; it becomes the .mfpkg
 * only after its hash equals the id; the credential goes to libcurl only. */
#include "download.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/encode.h"
#include "common/fs.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/mem.h"

#define DL_HEADER_LINE_MAX 1024
#define DL_SLEEP_SLICE_MS  20
#define DL_SNIPPET_MAX     160 /* characters of an error reply quoted in a diag */

/* How one attempt ended, as decided by the callbacks. */
enum dl_verdict {
    DL_NONE = 0, /* nothing special: look at the curl code and status */
    DL_FATAL,    /* headers say: give up now (err/what in dl_try) */
    DL_RESTART,  /* a 206 that does not fit: truncate and start over */
    DL_OVERFLOW, /* the server sent more than asked: transfer cut at the limit */
    DL_COMPLETE, /* 416 while the .part is already whole */
    DL_LOCAL_IO, /* writing the .part failed (errno in io_errno) */
    DL_ERRBODY,  /* an error reply longer than MF_DOWNLOAD_ERROR_BODY_CAP */
};

/* State of one request, shared with the callbacks. */
struct dl_try {
    const struct mf_download_spec *spec;
    int fd;           /* the .part, O_APPEND */
    uint64_t have;    /* bytes in the .part */
    uint64_t limit;   /* writes stop at this offset (end of the served range) */
    uint64_t written; /* bytes appended by this attempt */
    bool truncated;   /* a 200 restarted the .part from 0 */
    bool resumed;     /* a 206 from an offset > 0 was accepted */

    long status; /* of the final (non-1xx) reply */
    bool headers_done;
    bool to_file; /* body goes to the .part (else to errbody) */
    bool has_length;
    uint64_t length;
    bool has_crange;
    bool crange_star; /* "bytes * /T" */
    uint64_t cr_start, cr_end, cr_total;
    char crange_text[64]; /* for the diag */

    enum dl_verdict verdict;
    enum mf_err fatal;
    char what[MF_DIAG_WHAT];
    int io_errno;
    struct mf_buf errbody; /* first MF_DOWNLOAD_ERROR_BODY_MAX bytes of an error reply */
    uint64_t errbody_total;
};

/* ---- small parsers ------------------------------------------------------ */

/* "bytes A-B/T" or "bytes * /T" (without the space), nothing else. */
static bool parse_content_range(const char *s, struct dl_try *t)
{
    if (strncasecmp(s, "bytes", 5) != 0)
        return false;
    s += 5;
    if (*s != ' ')
        return false;
    while (*s == ' ')
        s++;
    if (*s == '*') {
        t->crange_star = true;
        s++;
    } else {
        if (!mf_dec_u64(&s, &t->cr_start) || *s++ != '-' || !mf_dec_u64(&s, &t->cr_end))
            return false;
        if (t->cr_end < t->cr_start)
            return false;
    }
    if (*s++ != '/' || !mf_dec_u64(&s, &t->cr_total))
        return false;
    return *s == '\0';
}

static bool valid_id(const char *id)
{
    size_t i;
    for (i = 0; id[i]; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
            return false;
    return i == 2 * MF_HASH_BYTES;
}

static bool has_ctl(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

/* ---- libcurl callbacks -------------------------------------------------- */

static void try_fatal(struct dl_try *t, enum mf_err err, const char *fmt, ...) MF_PRINTF(3, 4);
static void try_fatal(struct dl_try *t, enum mf_err err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->what, sizeof t->what, fmt, ap);
    va_end(ap);
    t->verdict = DL_FATAL;
    t->fatal = err;
}

/* Judges the reply once its headers are complete. Returns false to abort the
 * transfer before any body byte is taken. */
static bool headers_end(struct dl_try *t)
{
    uint64_t size = t->spec->size;
    t->headers_done = true;
    switch (t->status) {
    case 200:
        if (t->has_length && t->length != size) {
            try_fatal(t, MF_ERR_SIZE_MISMATCH,
                      "the server's blob is %" PRIu64 " bytes, expected %" PRIu64, t->length, size);
            return false;
        }
        if (t->have > 0) { /* Range ignored (or If-Range failed): start over */
            if (ftruncate(t->fd, 0) != 0) {
                t->io_errno = errno;
                t->verdict = DL_LOCAL_IO;
                return false;
            }
            t->have = 0;
            t->truncated = true;
        }
        t->limit = size;
        t->to_file = true;
        return true;
    case 206:
        if (!t->has_crange || t->crange_star || t->cr_start != t->have || t->cr_total != size ||
            t->cr_end >= size || (t->has_length && t->length != t->cr_end - t->cr_start + 1)) {
            t->verdict = DL_RESTART;
            return false;
        }
        t->limit = t->cr_end + 1;
        t->to_file = true;
        if (t->have > 0)
            t->resumed = true;
        return true;
    case 416:
        if (t->has_crange && t->crange_star && t->cr_total != size) {
            try_fatal(t, MF_ERR_SIZE_MISMATCH,
                      "the server's blob is %" PRIu64 " bytes, expected %" PRIu64, t->cr_total,
                      size);
            return false;
        }
        t->verdict = t->have == size ? DL_COMPLETE : DL_RESTART;
        return t->verdict == DL_COMPLETE; /* read the (short) error body */
    default:
        return true; /* an error reply: its body is kept, capped */
    }
}

static size_t on_header(char *ptr, size_t size, size_t nitems, void *userdata)
{
    struct dl_try *t = userdata;
    size_t n = size * nitems;
    char line[DL_HEADER_LINE_MAX];
    size_t len = n < sizeof line - 1 ? n : sizeof line - 1;
    memcpy(line, ptr, len);
    line[len] = '\0';
    while (len && (line[len - 1] == '\r' || line[len - 1] == '\n'))
        line[--len] = '\0';

    if (strncmp(line, "HTTP/", 5) == 0) { /* a new reply (after a 1xx, say) */
        const char *sp = strchr(line, ' ');
        t->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        t->has_length = t->has_crange = t->crange_star = false;
        t->crange_text[0] = '\0';
        return n;
    }
    if (len == 0) { /* end of this reply's headers */
        if (t->status >= 100 && t->status < 200)
            return n;
        return headers_end(t) ? n : 0;
    }
    if (strncasecmp(line, "content-length:", 15) == 0) {
        const char *v = line + 15;
        while (*v == ' ' || *v == '\t')
            v++;
        uint64_t x;
        if (mf_dec_u64(&v, &x)) {
            t->has_length = true;
            t->length = x;
        }
    } else if (strncasecmp(line, "content-range:", 14) == 0) {
        const char *v = line + 14;
        while (*v == ' ' || *v == '\t')
            v++;
        size_t i;
        for (i = 0; v[i] && i + 1 < sizeof t->crange_text; i++)
            t->crange_text[i] = (v[i] >= 0x20 && v[i] < 0x7f) ? v[i] : '?';
        t->crange_text[i] = '\0';
        t->crange_star = false;
        t->has_crange = parse_content_range(v, t);
    }
    return n;
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct dl_try *t = userdata;
    size_t n = size * nmemb;
    if (!t->to_file) {
        size_t room = MF_DOWNLOAD_ERROR_BODY_MAX - t->errbody.len;
        if (room && mf_buf_append(&t->errbody, ptr, n < room ? n : room) != MF_OK)
            abort(); /* cannot happen: room respects the cap */
        t->errbody_total += n;
        if (t->errbody_total > MF_DOWNLOAD_ERROR_BODY_CAP) {
            if (t->verdict == DL_NONE)
                t->verdict = DL_ERRBODY;
            return 0;
        }
        return n;
    }
    uint64_t room = t->limit > t->have ? t->limit - t->have : 0;
    size_t w = (uint64_t)n > room ? (size_t)room : n;
    if (w && mf_fs_write_all(t->fd, ptr, w) != MF_OK) {
        t->io_errno = errno ? errno : EIO;
        t->verdict = DL_LOCAL_IO;
        return 0;
    }
    t->have += w;
    t->written += w;
    if (w < n) {
        t->verdict = DL_OVERFLOW;
        return 0;
    }
    return n;
}

static int on_progress(void *clientp, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    const struct mf_download_spec *spec = clientp;
    return spec->stop && *spec->stop ? 1 : 0;
}

/* ---- helpers ------------------------------------------------------------ */

static bool stopped(const struct mf_download_spec *spec)
{
    return spec->stop && *spec->stop;
}

/* Sleeps ms milliseconds, waking early when spec->stop is set. */
static void sleep_ms(const struct mf_download_spec *spec, uint64_t ms)
{
    int64_t end = mf_clock_mono_ns() + (int64_t)ms * 1000000;
    while (!stopped(spec)) {
        int64_t left = end - mf_clock_mono_ns();
        if (left <= 0)
            break;
        if (left > (int64_t)DL_SLEEP_SLICE_MS * 1000000)
            left = (int64_t)DL_SLEEP_SLICE_MS * 1000000;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)left};
        nanosleep(&ts, NULL);
    }
}

/* Printable ASCII of the error reply, for a diag (never secrets: the server
 * does not echo the credential). */
static void snippet(const struct mf_buf *b, char *out, size_t size)
{
    size_t j = 0;
    for (size_t i = 0; i < b->len && j + 1 < size && j < DL_SNIPPET_MAX; i++) {
        unsigned char c = b->data[i];
        out[j++] = (c >= 0x20 && c < 0x7f) ? (char)c : ' ';
    }
    out[j] = '\0';
}

static enum mf_err free_space_statvfs(void *ctx, const char *dir, uint64_t *free_bytes)
{
    struct statvfs vfs;
    if (statvfs(dir, &vfs) != 0)
        return MF_ERR_IO;
    *free_bytes = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
    return MF_OK;
}

/* Does `path` hold exactly `size` bytes hashing to `want`? */
static bool file_matches(const char *path, uint64_t size, const uint8_t want[MF_HASH_BYTES])
{
    struct stat st;
    uint8_t got[MF_HASH_BYTES];
    uint64_t n = 0;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != size)
        return false;
    if (mf_hash_file(path, got, &n, NULL) != MF_OK || n != size)
        return false;
    return sodium_memcmp(got, want, MF_HASH_BYTES) == 0;
}

static int open_part(const char *part)
{
    return open(part, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

/* Sets the options that do not change between attempts. */
static void easy_setup(CURL *c, const struct mf_download_spec *spec, const char *url, char *errbuf)
{
    long connect_ms = spec->connect_timeout_ms > 0 ? spec->connect_timeout_ms : 10000;
    long ls_limit = spec->low_speed_limit > 0 ? spec->low_speed_limit : 1;
    long ls_time = spec->low_speed_time_s > 0 ? spec->low_speed_time_s : 30;

    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(c, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, ls_limit);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, ls_time);
    if (spec->max_bytes_per_sec)
        curl_easy_setopt(c, CURLOPT_MAX_RECV_SPEED_LARGE, (curl_off_t)spec->max_bytes_per_sec);
    if (spec->credential) {
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BEARER);
        curl_easy_setopt(c, CURLOPT_XOAUTH2_BEARER, spec->credential);
    }
    curl_easy_setopt(c, CURLOPT_USERAGENT, "modelfleet-agent/" MF_VERSION);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, (void *)spec);
}

/* ---- the loop ----------------------------------------------------------- */

/* What the loop makes of one attempt. */
enum dl_next {
    NEXT_CHECK, /* look at the .part again (verify when whole, else ask for the rest) */
    NEXT_RETRY, /* a transient failure: back off, count it unless it made progress */
    NEXT_FAIL,  /* give up with the error in diag */
};

enum mf_err mf_download(const struct mf_download_spec *spec, struct mf_download_result *out,
                        struct mf_diag *diag)
{
    enum mf_err err = MF_OK;
    char *url = NULL, *part = NULL, *final = NULL, *range = NULL, *ifrange = NULL;
    CURL *curl = NULL;
    struct curl_slist *hdrs = NULL;
    int fd = -1;
    uint8_t want[MF_HASH_BYTES];
    char errbuf[CURL_ERROR_SIZE];
    struct mf_diag last = {0}; /* the latest transient failure */

    memset(out, 0, sizeof *out);
    if (!spec || !spec->base_url || !spec->package_id || !spec->dir || spec->size == 0)
        return mf_diag_set(diag, MF_ERR_USAGE, "download", "incomplete download spec");
    if (!valid_id(spec->package_id) || mf_hex_decode(want, sizeof want, spec->package_id) != MF_OK)
        return mf_diag_set(diag, MF_ERR_USAGE, "download",
                           "package id is not 64 lowercase hex characters");
    if (spec->credential && has_ctl(spec->credential))
        return mf_diag_set(diag, MF_ERR_USAGE, "download", "credential has control characters");
    if (has_ctl(spec->base_url))
        return mf_diag_set(diag, MF_ERR_USAGE, "download", "base URL has control characters");
    mf_crypto_init();

    const char *id = spec->package_id;
    if (spec->budget && spec->size > spec->budget)
        return mf_diag_set(diag, MF_ERR_DISK_BUDGET, id,
                           "package is %" PRIu64 " bytes, over the disk budget of %" PRIu64,
                           spec->size, spec->budget);

    size_t blen = strlen(spec->base_url);
    while (blen && spec->base_url[blen - 1] == '/')
        blen--;
    url = mf_xasprintf("%.*s/api/v1/packages/%s/blob", (int)blen, spec->base_url, id);
    part = mf_xasprintf("%s/%s.part", spec->dir, id);
    final = mf_xasprintf("%s/%s.mfpkg", spec->dir, id);

    /* Already here? */
    if (file_matches(final, spec->size, want)) {
        out->cached = true;
        out->path = final;
        final = NULL;
        goto out;
    }
    if (unlink(final) == 0)
        mf_log(MF_LOG_WARN, "download id=%.12s: removed a %s.mfpkg that did not verify", id, id);

    fd = open_part(part);
    if (fd < 0) {
        err = mf_diag_errno(diag, errno, part, "cannot open");
        goto out;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        err = mf_diag_errno(diag, errno, part, "cannot stat");
        goto out;
    }
    uint64_t have = (uint64_t)st.st_size;
    if (have > spec->size) { /* cannot be ours: start over */
        if (ftruncate(fd, 0) != 0) {
            err = mf_diag_errno(diag, errno, part, "cannot truncate");
            goto out;
        }
        have = 0;
    }
    if (have == spec->size)
        out->cached = true;

    uint64_t avail = 0;
    mf_download_free_fn free_fn = spec->free_space ? spec->free_space : free_space_statvfs;
    enum mf_err ferr = free_fn(spec->free_space_ctx, spec->dir, &avail);
    if (ferr != MF_OK) {
        err = mf_diag_set(diag, ferr, spec->dir, "cannot read the free disk space");
        goto out;
    }
    if (spec->size - have > avail) {
        err = mf_diag_set(diag, MF_ERR_DISK_BUDGET, id,
                          "%" PRIu64 " bytes still to fetch, only %" PRIu64 " free in %s",
                          spec->size - have, avail, spec->dir);
        goto out;
    }

    curl = curl_easy_init();
    if (!curl) {
        err = mf_diag_set(diag, MF_ERR_IO, "download", "libcurl cannot create a handle");
        goto out;
    }
    errbuf[0] = '\0';
    easy_setup(curl, spec, url, errbuf);

    uint64_t backoff0 = spec->backoff_ms ? spec->backoff_ms : 1000;
    uint64_t backoff_max = spec->backoff_max_ms ? spec->backoff_max_ms : 60000;
    if (backoff_max < backoff0)
        backoff_max = backoff0;
    uint64_t delay = backoff0;
    uint64_t high_water = have; /* progress means passing this */
    unsigned streak = 0;        /* failed attempts in a row without progress */
    bool scratch_used = false;

    for (;;) {
        if (have == spec->size) {
            uint8_t got[MF_HASH_BYTES];
            uint64_t n = 0;
            if (fsync(fd) != 0) {
                err = mf_diag_errno(diag, errno, part, "cannot fsync");
                goto out;
            }
            err = mf_hash_file(part, got, &n, diag);
            if (err != MF_OK)
                goto out;
            if (n == spec->size && sodium_memcmp(got, want, sizeof got) == 0) {
                close(fd);
                fd = -1;
                if (rename(part, final) != 0) {
                    err = mf_diag_errno(diag, errno, final, "cannot rename the .part to");
                    goto out;
                }
                if (mf_fs_fsync_dir(spec->dir) != MF_OK) {
                    err = mf_diag_errno(diag, errno, spec->dir, "cannot fsync directory");
                    goto out;
                }
                out->path = final;
                final = NULL;
                err = MF_OK;
                goto out;
            }
            /* Wrong bytes: throw them away; one more go from scratch. */
            out->cached = false;
            close(fd);
            fd = -1;
            unlink(part);
            if (scratch_used) {
                err = mf_diag_set(diag, MF_ERR_HASH_MISMATCH, id,
                                  "the downloaded blob does not hash to its id, twice; removed");
                goto out;
            }
            mf_log(MF_LOG_WARN, "download id=%.12s: hash mismatch, fetching again from scratch",
                   id);
            scratch_used = true;
            fd = open_part(part);
            if (fd < 0) {
                err = mf_diag_errno(diag, errno, part, "cannot open");
                goto out;
            }
            if (ftruncate(fd, 0) != 0) {
                err = mf_diag_errno(diag, errno, part, "cannot truncate");
                goto out;
            }
            have = high_water = 0;
            streak = 0;
            delay = backoff0;
        }
        if (stopped(spec))
            break;

        /* One request. */
        struct dl_try t = {.spec = spec, .fd = fd, .have = have, .limit = spec->size};
        mf_buf_init(&t.errbody, MF_DOWNLOAD_ERROR_BODY_MAX);
        free(range);
        free(ifrange);
        range = ifrange = NULL;
        curl_slist_free_all(hdrs);
        hdrs = NULL;
        if (have > 0) {
            range = mf_xasprintf("%" PRIu64 "-", have);
            ifrange = mf_xasprintf("If-Range: \"%s\"", id);
            hdrs = curl_slist_append(NULL, ifrange);
            if (!hdrs)
                abort();
        }
        curl_easy_setopt(curl, CURLOPT_RANGE, range);
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(curl, CURLOPT_HEADERDATA, &t);
        curl_easy_setopt(curl, CURLOPT_WRITEDATA, &t);
        errbuf[0] = '\0';
        out->attempts++;
        CURLcode rc = curl_easy_perform(curl);

        curl_off_t got_bytes = 0;
        if (curl_easy_getinfo(curl, CURLINFO_SIZE_DOWNLOAD_T, &got_bytes) == CURLE_OK &&
            got_bytes > 0)
            out->bytes_fetched += (uint64_t)got_bytes;
        out->last_status = t.status;
        if (t.resumed)
            out->resumed = true;
        have = t.have;
        if (t.truncated)
            out->cached = false;

        char said[DL_SNIPPET_MAX + 1];
        snippet(&t.errbody, said, sizeof said);
        mf_buf_free(&t.errbody);

        enum dl_next next = NEXT_CHECK;
        if (t.verdict == DL_LOCAL_IO) {
            err = mf_diag_errno(diag, t.io_errno, part, "cannot write");
            next = NEXT_FAIL;
        } else if (t.verdict == DL_FATAL) {
            err = mf_diag_set(diag, t.fatal, id, "%s", t.what);
            next = NEXT_FAIL;
        } else if (stopped(spec)) {
            break;
        } else if (t.verdict == DL_RESTART) {
            if (ftruncate(fd, 0) != 0) {
                err = mf_diag_errno(diag, errno, part, "cannot truncate");
                goto out;
            }
            mf_diag_set(&last, MF_ERR_UNAVAILABLE, id,
                        "HTTP %ld with Content-Range '%s' does not fit a request from byte %" PRIu64
                        ": starting over",
                        t.status, t.crange_text, have);
            have = 0;
            next = NEXT_RETRY;
        } else if (t.verdict == DL_COMPLETE || t.verdict == DL_OVERFLOW) {
            next = NEXT_CHECK;
        } else if (t.headers_done && (t.status == 200 || t.status == 206)) {
            if (rc != CURLE_OK || have < t.limit) { /* cut, stalled, timed out */
                mf_diag_set(&last, MF_ERR_UNAVAILABLE, id,
                            "transfer interrupted at byte %" PRIu64 ": %s", have,
                            errbuf[0] ? errbuf : curl_easy_strerror(rc));
                next = NEXT_RETRY;
            }
        } else if (t.headers_done) {
            long s = t.status;
            const char *tail = said[0] ? ": server said: " : "";
            if (s == 401 || s == 403 || s == 404) {
                enum mf_err e = s == 401   ? MF_ERR_AUTH
                                : s == 403 ? MF_ERR_FORBIDDEN
                                           : MF_ERR_NOT_FOUND;
                err = mf_diag_set(diag, e, id, "HTTP %ld%s%s", s, tail, said);
                next = NEXT_FAIL;
            } else if (s >= 500 || s == 408 || s == 429) {
                mf_diag_set(&last, MF_ERR_UNAVAILABLE, id, "HTTP %ld%s%s", s, tail, said);
                next = NEXT_RETRY;
            } else {
                err = mf_diag_set(diag, MF_ERR_IO, id, "unexpected HTTP %ld%s%s", s, tail, said);
                next = NEXT_FAIL;
            }
        } else {
            mf_diag_set(&last, MF_ERR_UNAVAILABLE, id, "%s",
                        errbuf[0] ? errbuf : curl_easy_strerror(rc));
            next = NEXT_RETRY;
        }

        if (next == NEXT_FAIL) {
            if (err == MF_ERR_SIZE_MISMATCH) {
                close(fd);
                fd = -1;
                unlink(part);
            }
            goto out;
        }
        if (have > high_water) { /* progress: a fresh set of retries */
            high_water = have;
            streak = 0;
            delay = backoff0;
        } else if (next == NEXT_RETRY) {
            streak++;
        }
        if (next == NEXT_CHECK)
            continue;
        if (streak > spec->retries) {
            err = mf_diag_set(diag, MF_ERR_UNAVAILABLE, id, "gave up after %u attempts: %s",
                              out->attempts, last.what);
            goto out;
        }
        mf_log(MF_LOG_WARN, "download id=%.12s attempt=%u have=%" PRIu64 " retry: %s", id,
               out->attempts, have, last.what);
        sleep_ms(spec, mf_clock_jitter(delay));
        delay = delay > backoff_max / 2 ? backoff_max : delay * 2;
    }
    /* Only a stop request leaves the loop by break. */
    out->stopped = true;
    err = mf_diag_set(diag, MF_ERR_UNAVAILABLE, id, "download stopped at byte %" PRIu64, have);

out:
    if (fd >= 0) {
        struct stat left;
        if (err != MF_OK && fstat(fd, &left) == 0 && left.st_size == 0)
            unlink(part); /* an empty .part helps no later resume */
        else if (fsync(fd) != 0 && err == MF_OK)
            err = mf_diag_errno(diag, errno, part, "cannot fsync");
        close(fd);
    }
    curl_slist_free_all(hdrs);
    if (curl)
        curl_easy_cleanup(curl);
    free(range);
    free(ifrange);
    free(url);
    free(part);
    free(final);
    return err;
}

void mf_download_result_free(struct mf_download_result *out)
{
    if (!out)
        return;
    free(out->path);
    out->path = NULL;
}
