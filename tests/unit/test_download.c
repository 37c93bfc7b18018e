/* test_download.c — agent/download.c against a real loopback HTTP server
 * (tests/unit/range_server.py, started per case with its faults on the
 * command line): a clean fetch, cuts at several offsets (bytes fetched stay
 * within 1.1 × size, and the server's log agrees), resuming a .part, a
 * server ignoring Range, a wrong Content-Range, corrupt bytes, 5xx then
 * success, 401/403/404 not retried, a stall cut by the low-speed limit, the
 * disk budget and free-space check refusing before any request, a cached
 * .mfpkg / .part, a size disagreement, a body longer than the blob, a stop
 * flag set by a signal handler. The blob is 300 KiB of random bytes; its id
 * is computed here with common/hash.h (the server computes its own). */
#define _GNU_SOURCE /* pipe2 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "agent/download.h"
#include "common/encode.h"
#include "common/fs.h"
#include "common/hash.h"
#include "common/mem.h"

#ifndef MF_PYTHON
#define MF_PYTHON "/usr/bin/python3"
#endif

extern char **environ;

#define BLOB_SIZE (300u * 1024u + 17u)
#define TOKEN     "mfd_test-credential-0123456789"
#define MAX_ARGS  32

static uint8_t *blob;
static char blob_id[MF_HASH_HEX];

/* One case's world: a temp dir holding the blob, the server log and dl/. */
struct world {
    char *tmp;
    char *dl;
    char *blob_path;
    char *log_path;
    pid_t pid; /* the server, or 0 */
    int in_fd; /* its stdin: closing it stops it */
    int port;
};

/* What the server's log says. */
struct srv_log {
    unsigned requests;
    uint64_t sent;
    char ranges[8][64]; /* "Range" of the first requests by arrival, "-" when none */
    char if_ranges[8][80];
};

/* ---- helpers ---------------------------------------------------------- */

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static void assert_file_is_blob(const char *path)
{
    struct mf_buf b;
    assert_int_equal(mf_fs_read_file(path, 2 * BLOB_SIZE, &b, NULL), MF_OK);
    assert_int_equal(b.len, BLOB_SIZE);
    assert_memory_equal(b.data, blob, BLOB_SIZE);
    mf_buf_free(&b);
}

static char *dl_path(const struct world *w, const char *ext)
{
    return mf_xasprintf("%s/%s.%s", w->dl, blob_id, ext);
}

static int setup(void **state)
{
    struct world *w = mf_xcalloc(1, sizeof *w);
    const char *base = getenv("TMPDIR");
    w->tmp = mf_xasprintf("%s/mf-test-download.XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(w->tmp))
        return -1;
    w->dl = mf_xasprintf("%s/dl", w->tmp);
    w->blob_path = mf_xasprintf("%s/blob", w->tmp);
    w->log_path = mf_xasprintf("%s/server.log", w->tmp);
    w->in_fd = -1;
    if (mkdir(w->dl, 0755) != 0)
        return -1;
    write_file(w->blob_path, blob, BLOB_SIZE);
    write_file(w->log_path, "", 0);
    *state = w;
    return 0;
}

/* Closes the server's stdin and reaps it; returns its exit status. */
static int srv_stop(struct world *w)
{
    int status = -1;
    if (w->in_fd >= 0)
        close(w->in_fd);
    w->in_fd = -1;
    if (w->pid > 0) {
        while (waitpid(w->pid, &status, 0) < 0 && errno == EINTR)
            ;
        w->pid = 0;
    }
    return status;
}

static int teardown(void **state)
{
    struct world *w = *state;
    srv_stop(w);
    int rc = mf_fs_rmtree(w->tmp) == MF_OK ? 0 : -1;
    free(w->tmp);
    free(w->dl);
    free(w->blob_path);
    free(w->log_path);
    free(w);
    return rc;
}

/* Starts range_server.py with the fault options (NULL-terminated list). */
static void srv_start(struct world *w, ...)
{
    const char *argv[MAX_ARGS];
    int argc = 0;
    argv[argc++] = MF_PYTHON;
    argv[argc++] = MF_RANGE_SERVER;
    argv[argc++] = "--blob";
    argv[argc++] = w->blob_path;
    argv[argc++] = "--token";
    argv[argc++] = TOKEN;
    argv[argc++] = "--log";
    argv[argc++] = w->log_path;
    va_list ap;
    va_start(ap, w);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL) {
        assert_true(argc < MAX_ARGS - 1);
        argv[argc++] = a;
    }
    va_end(ap);
    argv[argc] = NULL;

    int in[2], out[2];
    assert_int_equal(pipe2(in, O_CLOEXEC), 0);
    assert_int_equal(pipe2(out, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    pid_t pid;
    int rc = posix_spawn(&pid, MF_PYTHON, &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(out[1]);
    assert_int_equal(rc, 0);
    w->pid = pid;
    w->in_fd = in[1];

    char line[32];
    size_t len = 0;
    while (len < sizeof line - 1) {
        struct pollfd p = {.fd = out[0], .events = POLLIN};
        int pr = poll(&p, 1, 15000);
        if (pr < 0 && errno == EINTR)
            continue;
        assert_true(pr == 1);
        ssize_t n = read(out[0], line + len, 1);
        if (n < 0 && errno == EINTR)
            continue;
        assert_true(n == 1);
        if (line[len] == '\n')
            break;
        len++;
    }
    line[len] = '\0';
    close(out[0]);
    w->port = atoi(line);
    assert_true(w->port > 0 && w->port < 65536);
}

/* Stops the server and reads its log. */
static struct srv_log srv_finish(struct world *w)
{
    struct srv_log l;
    memset(&l, 0, sizeof l);
    int status = srv_stop(w);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    FILE *f = fopen(w->log_path, "r");
    assert_non_null(f);
    char line[2048];
    while (fgets(line, sizeof line, f)) {
        const char *s = strstr(line, "\"sent\": ");
        assert_non_null(s);
        l.sent += strtoull(s + 8, NULL, 10);
        const char *ns = strstr(line, "\"n\": "); /* lines come in completion order */
        assert_non_null(ns);
        unsigned long i = strtoul(ns + 5, NULL, 10);
        if (i < 8) {
            char *r = strstr(line, "\"range\": ");
            assert_non_null(r);
            r += 9;
            if (*r == '"') {
                size_t n = strcspn(r + 1, "\"");
                snprintf(l.ranges[i], sizeof l.ranges[0], "%.*s", (int)n, r + 1);
            } else {
                snprintf(l.ranges[i], sizeof l.ranges[0], "-");
            }
            char *ir = strstr(line, "\"if_range\": ");
            assert_non_null(ir);
            ir += 12;
            if (*ir == '"') { /* a JSON string holding "\"<id>\"" */
                size_t n = strcspn(ir, ",}");
                snprintf(l.if_ranges[i], sizeof l.if_ranges[0], "%.*s", (int)n, ir);
            } else {
                snprintf(l.if_ranges[i], sizeof l.if_ranges[0], "-");
            }
        }
        l.requests++;
    }
    fclose(f);
    return l;
}

/* A spec for this world's server with small, test-sized timings. */
static struct mf_download_spec spec_for(struct world *w, char *url, size_t url_size)
{
    snprintf(url, url_size, "http://127.0.0.1:%d/", w->port);
    struct mf_download_spec s = {
        .base_url = url,
        .package_id = blob_id,
        .size = BLOB_SIZE,
        .credential = TOKEN,
        .dir = w->dl,
        .connect_timeout_ms = 5000,
        .low_speed_limit = 1000,
        .low_speed_time_s = 10,
        .retries = 5,
        .backoff_ms = 5,
        .backoff_max_ms = 40,
    };
    return s;
}

static void make_part(struct world *w, size_t have)
{
    char *part = dl_path(w, "part");
    write_file(part, blob, have);
    free(part);
}

static void assert_nothing_left(struct world *w)
{
    char *part = dl_path(w, "part"), *pkg = dl_path(w, "mfpkg");
    assert_false(exists(part));
    assert_false(exists(pkg));
    free(part);
    free(pkg);
}

/* Success: the .mfpkg is the blob and no .part is left. */
static void assert_done(struct world *w, const struct mf_download_result *r)
{
    char *pkg = dl_path(w, "mfpkg"), *part = dl_path(w, "part");
    assert_non_null(r->path);
    assert_string_equal(r->path, pkg);
    assert_file_is_blob(pkg);
    assert_false(exists(part));
    uint8_t h[MF_HASH_BYTES];
    char hex[MF_HASH_HEX];
    assert_int_equal(mf_hash_file(pkg, h, NULL, NULL), MF_OK);
    mf_hex_encode(hex, h, sizeof h);
    assert_string_equal(hex, blob_id);
    free(pkg);
    free(part);
}

/* ---- cases ------------------------------------------------------------ */

static void test_clean(void **state)
{
    struct world *w = *state;
    char url[64];
    srv_start(w, NULL);
    struct mf_download_spec s = spec_for(w, url, sizeof url);
    s.max_bytes_per_sec = 64u << 20; /* the cap is set; a timing is no pass/fail matter */
    struct mf_download_result r;
    struct mf_diag d = {0};
    assert_int_equal(mf_download(&s, &r, &d), MF_OK);
    assert_done(w, &r);
    assert_int_equal(r.attempts, 1);
    assert_int_equal(r.bytes_fetched, BLOB_SIZE);
    assert_false(r.resumed);
    assert_false(r.cached);
    assert_int_equal(r.last_status, 200);
    mf_download_result_free(&r);
    struct srv_log l = srv_finish(w);
    assert_int_equal(l.requests, 1);
    assert_int_equal(l.sent, BLOB_SIZE);
    assert_string_equal(l.ranges[0], "-");
}

static void test_cuts(void **state)
{
    struct world *w = *state;
    char url[64], cuts[64];
    snprintf(cuts, sizeof cuts, "1,1000,%u,%u", BLOB_SIZE / 2, BLOB_SIZE - 1);
    srv_start(w, "--cut-at", cuts, NULL);
    struct mf_download_spec s = spec_for(w, url, sizeof url);
    s.retries = 1; /* every cut adds bytes, so each resets the count */
    struct mf_download_result r;
    struct mf_diag d = {0};
    assert_int_equal(mf_download(&s, &r, &d), MF_OK);
    assert_done(w, &r);
    assert_int_equal(r.attempts, 5);
    assert_true(r.resumed);
    assert_true(r.bytes_fetched * 10 <= (uint64_t)BLOB_SIZE * 11);
    struct srv_log l = srv_finish(w);
    assert_int_equal(l.requests, 5);
    assert_int_equal(l.sent, r.bytes_fetched);
    assert_string_equal(l.ranges[0], "-");
    assert_string_equal(l.ranges[1], "bytes=1-");
    assert_string_equal(l.ranges[2], "bytes=1000-");
    char want[96];
    snprintf(want, sizeof want, "bytes=%u-", BLOB_SIZE / 2);
    assert_string_equal(l.ranges[3], want);
    snprintf(want, sizeof want, "bytes=%u-", BLOB_SIZE - 1);
    assert_string_equal(l.ranges[4], want);
    snprintf(want, sizeof want, "\"\\\"%s\\\"\"", blob_id);
    assert_string_equal(l.if_ranges[1], want);
    print_message("cut test: %u bytes fetched for a %u-byte blob in %u attempts (ratio %.4f)\n",
                  (unsigned)r.bytes_fetched, BLOB_SIZE, r.attempts,
                  (double)r.bytes_fetched / BLOB_SIZE);
    mf_download_result_free(&r);
}

static void test_resume_part(void **state)
{
    struct world *w = *state;
    char url[64];
    const size_t have = 123457;
    make_part(w, have);
    srv_start(w, NULL);
    struct mf_download_spec s = spec_for(w, url, sizeof url);
    struct mf_download_result r;
    struct mf_diag d = {0};
    assert_int_equal(mf_download(&s, &r, &d), MF_OK);
    assert_done(w, &r);
    assert_int_equal(r.attempts, 1);
    assert_int_equal(r.bytes_fetched, BLOB_SIZE - have);
    assert_true(r.resumed);
    assert_int_equal(r.last_status, 206);
    mf_download_result_free(&r);
    struct srv_log l = srv_finish(w);
    assert_int_equal(l.requests, 1);
    assert_int_equal(l.sent, BLOB_SIZE - have);
    assert_string_equal(l.ranges[0], "bytes=123457-");
}

static void test_ignore_range(void **state)
{
    struct world *w = *state;
    char url[64];
    make_part(w, 5000);
    srv_start(w, "--ignore-range", NULL);
    struct mf_download_spec s = spec_for(w, url, sizeof url);
    struct mf_download_result r;
    struct mf_diag d = {0};
    assert_int_equal(mf_download(&s, &r, &d), MF_OK);
    assert_done(w, &r);
    assert_int_equal(r.attempts, 1);
    assert_int_equal(r.bytes_fetched, BLOB_SIZE);
    assert_false(r.resumed);
    assert_int_equal(r.last_status, 200);
    mf_download_result_free(&r);
    struct srv_log l = srv_finish(w);
    assert_int_equal(l.requests, 1);
    assert_string_equal(l.ranges[0], "bytes=5000-");
}

/* A Range ignored on a link that keeps cutting: each 200 starts over, so no
 * attempt passes the high-water mark and the retry count runs out. */
static void test_ignore_range_with_cuts(void **state)
{
    struct world *w = *state;
    char url[64];
    srv_start(w, "--ignore-range", "--cut-at", "4000,4000,4000,4000,4000,4000", NULL);
    struct mf_download_spec s = spec_for(w, url, sizeof url);
    s.retries = 2;
    struct mf_download_result r;
    struct mf_diag d = {0};
    assert_int_equal(mf_download(&s, &r, &d), MF_ERR_UNAVAILABLE);
    assert_null(r.path);
    assert_int_equal(r.attempts, 4); /* 1 with progress + 3 without (the 3rd is over) */
    assert_false(r.stopped);
    assert_non_null(strstr(d.what, "gave up after 4 attempts"));
    struct srv_log l = srv_finish(w);
    assert_int_equal(l.requests, 4);
}

static void test_wrong_content_range(void **state)
{
    struct world *w = *state;
    char url[64];
    make_part(w, 70000);
    srv_start(w, "--wrong-range", "1", NULL);
    struct mf_download_spec s = spec_for(w, url, sizeof url);
    struct mf_download_result r;
    struct mf_diag d = {0};
    assert_int_equal(mf_download(&s, &r, &d), MF_OK);
    assert_done(w, &r);
    assert_int_equal(r.attempts, 2);
    assert_false(r.resumed);
    mf_download_result_free(&r);
    struct srv_log l = srv_finish(w);
    assert_int_equal(l.requests, 2);
    assert_string_equal(l.ranges[0], "bytes=70000-");
    assert_string_equal(l.ranges[1], "-"); /* started over */
}

static void test_corrupt(void **state)
{
    struct world *w = *state;
    char url[64];
    srv_start(w, "--corrupt", NULL);
    struct mf_download_spec s = spec_for(w, url, sizeof url);
    struct mf_download_result r;
    struct mf_diag d = {0};
    assert_int_equal(mf_download(&s, &r, &d), MF_ERR_HASH_MISMATCH);
    assert_null(r.path);
    assert_int_equal(r.attempts, 2); /* one more from scratch, no more */
    assert_int_equal(r.bytes_fetched, 2 * (uint64_t)BLOB_SIZE);
    assert_nothing_left(w);
    struct srv_log l = srv_finish(w);
    assert_int_equal(l.requests, 2);
    assert_string_equal(l.ranges[1], "-");
}

static void test_5xx_then_ok(void **state)
{
    struct world *w = *state;
    char url[64];
    srv_start(w, "--error-status", "503", "--error-count", "3", NULL);
    struct mf_download_spec s = spec_for(w, url, sizeof url);
    s.retries = 3;
    struct mf_download_result r;
    struct mf_diag d = {0};
    assert_int_equal(mf_download(&s, &r, &d), MF_OK);
    assert_done(w, &r);
    assert_int_equal(r.attempts, 4);
    mf_download_result_free(&r);
    assert_int_equal(srv_finish(w).requests, 4);
}

static void test_5xx_exhausted(void **state)
{
    struct world *w = *state;
    char url[64];
    srv_start(w, "--error-count", "100", NULL);
    struct mf_download_spec s = spec_for(w, url, sizeof url);
    s.retries = 2;
    struct mf_download_result r;
    struct mf_diag d = {0};
    assert_int_equal(mf_download(&s, &r, &d), MF_ERR_UNAVAILABLE);
    assert_int_equal(r.attempts, 3);
    assert_int_equal(r.last_status, 500);
    assert_non_null(strstr(d.what, "HTTP 500"));
    assert_non_null(strstr(d.what, "internal")); /* the server's JSON, quoted */
    assert_nothing_left(w);                      /* an empty .part is not there either? */
    assert_int_equal(srv_finish(w).requests, 3);
}

static void test_401_not_retried(void **state)
{
    struct world *w = *state;
    char url[64];
    srv_start(w, NULL);
    struct mf_download_spec s = spec_for(w, url, sizeof url);
    s.credential = "mfd_wrong";
    struct mf_download_result r;
    struct mf_diag d = {0};
    assert_int_equal(mf_download(&s, &r, &d), MF_ERR_AUTH);
    assert_int_equal(r.attempts, 1);
    assert_int_equal(r.last_status, 401);
    assert_null(strstr(d.what, "mfd_wrong")); /* never a secret in a diag */
    struct srv_log l = srv_finish(w);
    assert_int_equal(l.requests, 1);
}

static void test_403_404_not_retried(void **state)
{
    struct world *w = *state;
    char url[64];
    srv_start(w, "--error-status", "403", "--error-count", "1", NULL);
    struct mf_download_spec s = spec_for(w, url, sizeof url);
    struct mf_download_result r;
    struct mf_diag d = {0};
    assert_int_equal(mf_download(&s, &r, &d), MF_ERR_FORBIDDEN);
    assert_int_equal(r.attempts, 1);

    char other[MF_HASH_HEX];
    memcpy(other, blob_id, sizeof other);
    other[0] = other[0] == '0' ? '1' : '0';
    s.package_id = other;
    assert_int_equal(mf_download(&s, &r, &d), MF_ERR_NOT_FOUND);
    assert_int_equal(r.attempts, 1);
    assert_int_equal(r.last_status, 404);
    assert_int_equal(srv_finish(w).requests, 2);
}

static void test_stall(void **state)
{
    struct world *w = *state;
    char url[64];
    /* libcurl averages the speed over the last seconds: a short head start
     * (1000 bytes) keeps that average under the limit once the stall begins. */
    srv_start(w, "--stall", "4", "--stall-count", "1", "--stall-after", "1000", NULL);
    struct mf_download_spec s = spec_for(w, url, sizeof url);
    s.low_speed_limit = 2000;
    s.low_speed_time_s = 1;
    struct mf_download_result r;
    struct mf_diag d = {0};
    assert_int_equal(mf_download(&s, &r, &d), MF_OK);
    assert_done(w, &r);
    assert_int_equal(r.attempts, 2);
    assert_true(r.resumed);
    assert_int_equal(r.bytes_fetched, BLOB_SIZE);
    mf_download_result_free(&r);
    struct srv_log l = srv_finish(w);
    assert_int_equal(l.requests, 2);
    assert_string_equal(l.ranges[1], "bytes=1000-");
}

static enum mf_err tiny_disk(void *ctx, const char *dir, uint64_t *free_bytes)
{
    (*(int *)ctx)++;
    *free_bytes = BLOB_SIZE / 2;
    return MF_OK;
}

static void test_budget(void **state)
{
    struct world *w = *state;
    char url[64];
    srv_start(w, NULL);
    struct mf_download_spec s = spec_for(w, url, sizeof url);
    s.budget = BLOB_SIZE - 1;
    struct mf_download_result r;
    struct mf_diag d = {0};
    assert_int_equal(mf_download(&s, &r, &d), MF_ERR_DISK_BUDGET);
    assert_int_equal(r.attempts, 0);
    assert_nothing_left(w);

    /* Within budget, but the disk has room for half of it. */
    int calls = 0;
    s.budget = BLOB_SIZE;
    s.free_space = tiny_disk;
    s.free_space_ctx = &calls;
    assert_int_equal(mf_download(&s, &r, &d), MF_ERR_DISK_BUDGET);
    assert_int_equal(calls, 1);
    assert_int_equal(r.attempts, 0);

    /* With 3/4 of it already in the .part, the rest fits. */
    make_part(w, BLOB_SIZE / 4 * 3);
    assert_int_equal(mf_download(&s, &r, &d), MF_OK);
    assert_int_equal(r.attempts, 1);
    assert_done(w, &r);
    mf_download_result_free(&r);
    struct srv_log l = srv_finish(w);
    assert_int_equal(l.requests, 1); /* only the last one asked */
}

static void test_cached(void **state)
{
    struct world *w = *state;
    char url[64];
    srv_start(w, NULL);
    struct mf_download_spec s = spec_for(w, url, sizeof url);
    struct mf_download_result r;
    struct mf_diag d = {0};

    char *pkg = dl_path(w, "mfpkg");
    write_file(pkg, blob, BLOB_SIZE);
    assert_int_equal(mf_download(&s, &r, &d), MF_OK);
    assert_true(r.cached);
    assert_int_equal(r.attempts, 0);
    assert_done(w, &r);
    mf_download_result_free(&r);

    /* A complete .part is verified and renamed, no request either. */
    assert_int_equal(unlink(pkg), 0);
    make_part(w, BLOB_SIZE);
    assert_int_equal(mf_download(&s, &r, &d), MF_OK);
    assert_true(r.cached);
    assert_int_equal(r.attempts, 0);
    assert_done(w, &r);
    mf_download_result_free(&r);
    free(pkg);
    assert_int_equal(srv_finish(w).requests, 0);
}

/* A .mfpkg that does not hash right is replaced by a fresh download. */
static void test_bad_cached(void **state)
{
    struct world *w = *state;
    char url[64];
    srv_start(w, NULL);
    struct mf_download_spec s = spec_for(w, url, sizeof url);
    struct mf_download_result r;
    struct mf_diag d = {0};
    char *pkg = dl_path(w, "mfpkg");
    uint8_t *bad = mf_xmalloc(BLOB_SIZE);
    memcpy(bad, blob, BLOB_SIZE);
    bad[1234] ^= 1;
    write_file(pkg, bad, BLOB_SIZE);
    free(bad);
    free(pkg);
    assert_int_equal(mf_download(&s, &r, &d), MF_OK);
    assert_false(r.cached);
    assert_int_equal(r.attempts, 1);
    assert_done(w, &r);
    mf_download_result_free(&r);
    assert_int_equal(srv_finish(w).requests, 1);
}

static void test_size_mismatch(void **state)
{
    struct world *w = *state;
    char url[64];
    srv_start(w, NULL);
    struct mf_download_spec s = spec_for(w, url, sizeof url);
    s.size = BLOB_SIZE + 10;
    struct mf_download_result r;
    struct mf_diag d = {0};
    /* 200 whose Content-Length is not the size: refused before the body. */
    assert_int_equal(mf_download(&s, &r, &d), MF_ERR_SIZE_MISMATCH);
    assert_int_equal(r.attempts, 1);
    assert_true(r.bytes_fetched < BLOB_SIZE / 2);
    assert_nothing_left(w);
    /* A .part as long as the server's blob: 416 bytes * /SIZE says the same. */
    make_part(w, BLOB_SIZE);
    assert_int_equal(mf_download(&s, &r, &d), MF_ERR_SIZE_MISMATCH);
    assert_int_equal(r.attempts, 1);
    assert_int_equal(r.last_status, 416);
    assert_nothing_left(w);
    struct srv_log l = srv_finish(w);
    assert_int_equal(l.requests, 2);
    assert_string_equal(l.ranges[1], "bytes=307217-");
}

/* No Content-Length and 5000 bytes past the blob: nothing past size is
 * written, and what was written verifies. */
static void test_overlong_body(void **state)
{
    struct world *w = *state;
    char url[64];
    srv_start(w, "--no-length", "--extra", "5000", NULL);
    struct mf_download_spec s = spec_for(w, url, sizeof url);
    struct mf_download_result r;
    struct mf_diag d = {0};
    assert_int_equal(mf_download(&s, &r, &d), MF_OK);
    assert_done(w, &r);
    assert_int_equal(r.attempts, 1);
    mf_download_result_free(&r);
    srv_finish(w);
}

static volatile sig_atomic_t stop_flag;

static void on_alarm(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void test_stop(void **state)
{
    struct world *w = *state;
    char url[64];
    srv_start(w, "--stall", "3", "--stall-count", "1", "--stall-after", "10000", NULL);
    struct mf_download_spec s = spec_for(w, url, sizeof url);
    s.low_speed_time_s = 30;
    s.stop = &stop_flag;
    struct mf_download_result r;
    struct mf_diag d = {0};

    stop_flag = 1; /* already set: no request at all */
    assert_int_equal(mf_download(&s, &r, &d), MF_ERR_UNAVAILABLE);
    assert_true(r.stopped);
    assert_int_equal(r.attempts, 0);

    /* Set by a signal handler while the server stalls. */
    stop_flag = 0;
    struct sigaction sa = {.sa_handler = on_alarm}, old;
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGALRM, &sa, &old), 0);
    struct itimerval it = {.it_value = {.tv_sec = 0, .tv_usec = 300000}};
    assert_int_equal(setitimer(ITIMER_REAL, &it, NULL), 0);
    assert_int_equal(mf_download(&s, &r, &d), MF_ERR_UNAVAILABLE);
    assert_int_equal(sigaction(SIGALRM, &old, NULL), 0);
    assert_true(r.stopped);
    assert_int_equal(r.attempts, 1);
    char *part = dl_path(w, "part");
    struct stat st;
    assert_int_equal(stat(part, &st), 0); /* kept for a later resume */
    assert_int_equal(st.st_size, 10000);
    free(part);
    srv_finish(w);
}

static void test_bad_spec(void **state)
{
    struct world *w = *state;
    struct mf_download_spec s = {
        .base_url = "http://127.0.0.1:1", .package_id = "ABC", .size = 1, .dir = w->dl};
    struct mf_download_result r;
    struct mf_diag d = {0};
    assert_int_equal(mf_download(&s, &r, &d), MF_ERR_USAGE);
    s.package_id = blob_id;
    s.credential = "mfd_x\r\nX-Evil: 1";
    assert_int_equal(mf_download(&s, &r, &d), MF_ERR_USAGE);
    s.credential = NULL;
    s.size = 0;
    assert_int_equal(mf_download(&s, &r, &d), MF_ERR_USAGE);
    /* Nothing listening: retried, then unavailable. */
    s.size = BLOB_SIZE;
    s.retries = 1;
    s.backoff_ms = 1;
    assert_int_equal(mf_download(&s, &r, &d), MF_ERR_UNAVAILABLE);
    assert_int_equal(r.attempts, 2);
}

int main(void)
{
    mf_crypto_init();
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;
    blob = mf_xmalloc(BLOB_SIZE);
    randombytes_buf(blob, BLOB_SIZE);
    uint8_t h[MF_HASH_BYTES];
    mf_hash_bytes(h, blob, BLOB_SIZE);
    mf_hex_encode(blob_id, h, sizeof h);

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_clean),
        T(test_cuts),
        T(test_resume_part),
        T(test_ignore_range),
        T(test_ignore_range_with_cuts),
        T(test_wrong_content_range),
        T(test_corrupt),
        T(test_5xx_then_ok),
        T(test_5xx_exhausted),
        T(test_401_not_retried),
        T(test_403_404_not_retried),
        T(test_stall),
        T(test_budget),
        T(test_cached),
        T(test_bad_cached),
        T(test_size_mismatch),
        T(test_overlong_body),
        T(test_stop),
        T(test_bad_spec),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    free(blob);
    curl_global_cleanup();
    return rc;
}
