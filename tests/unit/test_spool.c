/* test_spool.c — agent/spool (the outbox): push/get/ack order, numbers that
 * survive restarts, the byte and message caps with their dropped counter,
 * files that must not be there at open (temp, foreign, damaged), a lost or
 * corrupt meta file, I/O failures that must leave nothing stored, and crash
 * points (a forked child that _exit()s mid-push or mid-ack) after which the
 * spool opens with every message either intact or counted. Prints the time
 * of 10,000 push+ack pairs (informational, not asserted). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/spool.h"
#include "common/buf.h"
#include "common/fs.h"
#include "common/mem.h"
#include "unit_tmp.h"

static const struct mf_spool_limits roomy = {.max_bytes = 1u << 20, .max_messages = 1000};

static char *spath(const char *dir, const char *fmt, ...) MF_PRINTF(2, 3);
static char *spath(const char *dir, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return mf_xasprintf("%s/%s", dir, name);
}

static char *msg_path(const char *dir, uint64_t num, const char *suffix)
{
    return spath(dir, "%020" PRIu64 ".%s", num, suffix);
}

/* The payload of message `num` in these tests: "m<num>:" then filler up to len. */
static size_t payload_of(uint64_t num, size_t len, char *out)
{
    int n = snprintf(out, len + 1, "m%" PRIu64 ":", num);
    for (size_t i = (size_t)n; i < len; i++)
        out[i] = (char)('a' + (num + i) % 26);
    return len;
}

static enum mf_devmsg_kind kind_of(uint64_t num)
{
    return num % 3 == 0 ? MF_DEVMSG_REPORT : MF_DEVMSG_EVENT;
}

static void write_raw(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(mf_fs_write_all(fd, data, len), MF_OK);
    close(fd);
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* Entries of dir other than "." and "..". */
static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static int count_temp(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strstr(de->d_name, ".tmp."))
            n++;
    closedir(d);
    return n;
}

static char *read_meta(const char *dir)
{
    char *path = spath(dir, "meta");
    struct mf_buf b;
    struct mf_diag d;
    assert_int_equal(mf_fs_read_file(path, 4096, &b, &d), MF_OK);
    free(path);
    size_t len;
    return (char *)mf_buf_steal(&b, &len);
}

static void assert_meta(const char *dir, uint64_t next, uint64_t dropped, uint64_t floor)
{
    char want[128];
    snprintf(want, sizeof want, "next %" PRIu64 "\ndropped %" PRIu64 "\nfloor %" PRIu64 "\n", next,
             dropped, floor);
    char *got = read_meta(dir);
    assert_string_equal(got, want);
    free(got);
}

static struct mf_spool *open_ok(const char *dir, const struct mf_spool_limits *lim)
{
    struct mf_spool *sp = NULL;
    struct mf_diag d;
    assert_int_equal(mf_spool_open(dir, lim, &sp, &d), MF_OK);
    assert_non_null(sp);
    return sp;
}

/* Pushes the test payload of the next number; returns that number. */
static uint64_t push_ok(struct mf_spool *sp, size_t len)
{
    char buf[MF_DEVMSG_MAX + 1];
    struct mf_diag d;
    uint64_t num = mf_spool_next(sp);
    payload_of(num, len, buf);
    assert_int_equal(mf_spool_push(sp, num, kind_of(num), buf, len, &d), MF_OK);
    assert_int_equal(mf_spool_next(sp), num + 1);
    return num;
}

/* Pending message i is test message `num` of length len, intact. */
static void assert_pending(const struct mf_spool *sp, size_t i, uint64_t num, size_t len)
{
    char want[MF_DEVMSG_MAX + 1];
    uint64_t got;
    enum mf_devmsg_kind kind;
    uint8_t *data = NULL;
    size_t n;
    struct mf_diag d;
    assert_int_equal(mf_spool_get(sp, i, &got, &kind, &data, &n, &d), MF_OK);
    assert_int_equal(got, num);
    assert_int_equal(kind, kind_of(num));
    assert_int_equal(n, len);
    payload_of(num, len, want);
    assert_memory_equal(data, want, len);
    free(data);
}

static void ack_ok(struct mf_spool *sp, uint64_t num)
{
    struct mf_diag d;
    assert_int_equal(mf_spool_ack(sp, num, &d), MF_OK);
}

/* ---- order and numbering ---- */

static void test_push_get_ack_order(void **state)
{
    (void)state;
    char *dir = unit_tmpdir("spool");
    char *sd = spath(dir, "spool"); /* open creates it */
    struct mf_spool *sp = open_ok(sd, &roomy);
    struct stat st;
    assert_int_equal(stat(sd, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    assert_int_equal(mf_spool_next(sp), 1);
    assert_int_equal(mf_spool_count(sp), 0);
    assert_int_equal(mf_spool_bytes(sp), 0);
    assert_int_equal(mf_spool_dropped(sp), 0);

    for (uint64_t i = 1; i <= 5; i++)
        assert_int_equal(push_ok(sp, 10 + i), i);
    assert_int_equal(mf_spool_count(sp), 5);
    assert_int_equal(mf_spool_bytes(sp), 11 + 12 + 13 + 14 + 15);
    for (size_t i = 0; i < 5; i++)
        assert_pending(sp, i, i + 1, 11 + i);
    char *f3 = msg_path(sd, 3, "report"), *f4 = msg_path(sd, 4, "event");
    assert_true(exists(f3) && exists(f4));
    assert_int_equal(stat(f4, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    /* Oldest first, then one from the middle, then the newest. */
    ack_ok(sp, 1);
    assert_int_equal(mf_spool_count(sp), 4);
    assert_pending(sp, 0, 2, 12);
    ack_ok(sp, 3);
    assert_false(exists(f3));
    assert_int_equal(mf_spool_count(sp), 3);
    assert_int_equal(mf_spool_bytes(sp), 12 + 14 + 15);
    assert_pending(sp, 0, 2, 12);
    assert_pending(sp, 1, 4, 14);
    assert_pending(sp, 2, 5, 15);
    ack_ok(sp, 5);
    assert_int_equal(mf_spool_count(sp), 2);
    assert_pending(sp, 1, 4, 14);
    assert_int_equal(push_ok(sp, 20), 6);
    assert_pending(sp, 2, 6, 20);

    /* Bad calls. */
    char buf[64] = "x";
    struct mf_diag d;
    uint64_t num;
    enum mf_devmsg_kind kind;
    uint8_t *data = NULL;
    size_t len;
    assert_int_equal(mf_spool_push(sp, 6, MF_DEVMSG_EVENT, buf, 1, &d), MF_ERR_USAGE);
    assert_int_equal(mf_spool_push(sp, 8, MF_DEVMSG_EVENT, buf, 1, &d), MF_ERR_USAGE);
    assert_int_equal(mf_spool_push(sp, 7, MF_DEVMSG_STATE, buf, 1, &d), MF_ERR_USAGE);
    assert_int_equal(mf_spool_push(sp, 7, MF_DEVMSG_DESIRED, buf, 1, &d), MF_ERR_USAGE);
    assert_int_equal(mf_spool_push(sp, 7, MF_DEVMSG_EVENT, buf, 0, &d), MF_ERR_USAGE);
    assert_int_equal(mf_spool_next(sp), 7);
    assert_int_equal(mf_spool_count(sp), 3);
    assert_int_equal(mf_spool_get(sp, 3, &num, &kind, &data, &len, &d), MF_ERR_NOT_FOUND);
    assert_null(data);

    /* A file that vanished, and one that changed under the spool. */
    assert_int_equal(unlink(f4), 0);
    assert_int_equal(mf_spool_get(sp, 1, &num, &kind, &data, &len, &d), MF_ERR_NOT_FOUND);
    char *f2 = msg_path(sd, 2, "event");
    write_raw(f2, "short", 5);
    assert_int_equal(mf_spool_get(sp, 0, &num, &kind, &data, &len, &d), MF_ERR_IO);
    assert_null(data);
    ack_ok(sp, 4); /* its file is gone already: fine */
    assert_int_equal(mf_spool_count(sp), 2);

    mf_spool_close(sp);
    mf_spool_close(NULL);
    free(f2);
    free(f3);
    free(f4);
    free(sd);
    unit_tmpdir_free(dir);
}

static void test_ack_unknown_and_twice(void **state)
{
    (void)state;
    char *dir = unit_tmpdir("spool");
    struct mf_spool *sp = open_ok(dir, &roomy);
    for (int i = 0; i < 3; i++)
        push_ok(sp, 50);
    ack_ok(sp, 0);
    ack_ok(sp, 99);
    ack_ok(sp, UINT64_MAX);
    assert_int_equal(mf_spool_count(sp), 3);
    assert_int_equal(mf_spool_bytes(sp), 150);
    ack_ok(sp, 2);
    ack_ok(sp, 2);
    assert_int_equal(mf_spool_count(sp), 2);
    assert_int_equal(mf_spool_bytes(sp), 100);
    ack_ok(sp, 1);
    ack_ok(sp, 1);
    ack_ok(sp, 3);
    ack_ok(sp, 3);
    assert_int_equal(mf_spool_count(sp), 0);
    assert_int_equal(mf_spool_bytes(sp), 0);
    assert_int_equal(mf_spool_next(sp), 4);
    assert_int_equal(mf_spool_dropped(sp), 0);
    mf_spool_close(sp);
    unit_tmpdir_free(dir);
}

static void test_numbers_survive_restarts(void **state)
{
    (void)state;
    char *dir = unit_tmpdir("spool");
    struct mf_spool *sp = open_ok(dir, &roomy);
    for (int i = 0; i < 3; i++)
        push_ok(sp, 40);
    ack_ok(sp, 1);
    ack_ok(sp, 2);
    ack_ok(sp, 3);
    mf_spool_close(sp);
    assert_int_equal(count_entries(dir), 1); /* only meta: the numbers live there */
    assert_meta(dir, 4, 0, 0);

    sp = open_ok(dir, &roomy);
    assert_int_equal(mf_spool_next(sp), 4);
    assert_int_equal(mf_spool_count(sp), 0);
    assert_int_equal(push_ok(sp, 40), 4);
    assert_int_equal(push_ok(sp, 41), 5);
    assert_int_equal(push_ok(sp, 42), 6);
    mf_spool_close(sp); /* meta still says 4: the files carry the rest */

    sp = open_ok(dir, &roomy);
    assert_int_equal(mf_spool_next(sp), 7);
    assert_int_equal(mf_spool_count(sp), 3);
    assert_int_equal(mf_spool_bytes(sp), 40 + 41 + 42);
    assert_pending(sp, 0, 4, 40);
    assert_pending(sp, 1, 5, 41);
    assert_pending(sp, 2, 6, 42);
    /* Acking the newest writes next first: the older ones stay. */
    ack_ok(sp, 6);
    assert_meta(dir, 7, 0, 0);
    mf_spool_close(sp);
    sp = open_ok(dir, &roomy);
    assert_int_equal(mf_spool_next(sp), 7);
    assert_int_equal(mf_spool_count(sp), 2);
    ack_ok(sp, 4);
    ack_ok(sp, 5);
    mf_spool_close(sp);
    sp = open_ok(dir, &roomy);
    assert_int_equal(mf_spool_next(sp), 7);
    mf_spool_close(sp);
    unit_tmpdir_free(dir);
}

/* The index against a model: the oldest acked most of the time, others now
 * and then, across the compaction and growth of the in-memory array. */
static void test_index_against_model(void **state)
{
    (void)state;
    char *dir = unit_tmpdir("spool");
    struct mf_spool *sp = open_ok(dir, &roomy);
    uint64_t model[512];
    size_t n = 0;
    uint32_t rnd = 12345;
    for (int step = 0; step < 600; step++) {
        rnd = rnd * 1103515245u + 12345u;
        uint32_t r = (rnd >> 16) % 100;
        if (n < 60 || (r < 55 && n < 500)) {
            model[n++] = push_ok(sp, 8 + (size_t)(mf_spool_next(sp) % 7));
        } else {
            size_t i = r < 90 ? 0 : (size_t)(rnd >> 8) % n; /* mostly the oldest */
            ack_ok(sp, model[i]);
            memmove(model + i, model + i + 1, (n - i - 1) * sizeof *model);
            n--;
        }
        assert_int_equal(mf_spool_count(sp), n);
    }
    uint64_t bytes = 0;
    for (size_t i = 0; i < n; i++) {
        assert_pending(sp, i, model[i], 8 + (size_t)(model[i] % 7));
        bytes += 8 + model[i] % 7;
    }
    assert_int_equal(mf_spool_bytes(sp), bytes);
    mf_spool_close(sp);
    sp = open_ok(dir, &roomy); /* the files say the same */
    assert_int_equal(mf_spool_count(sp), n);
    for (size_t i = 0; i < n; i++)
        assert_pending(sp, i, model[i], 8 + (size_t)(model[i] % 7));
    mf_spool_close(sp);
    unit_tmpdir_free(dir);
}

/* ---- caps ---- */

static void test_message_cap(void **state)
{
    (void)state;
    char *dir = unit_tmpdir("spool");
    struct mf_spool_limits lim = {.max_bytes = 1u << 20, .max_messages = 3};
    struct mf_spool *sp = open_ok(dir, &lim);
    for (int i = 0; i < 3; i++)
        push_ok(sp, 30);
    assert_int_equal(mf_spool_dropped(sp), 0);
    push_ok(sp, 30);
    push_ok(sp, 31);
    assert_int_equal(mf_spool_count(sp), 3);
    assert_int_equal(mf_spool_dropped(sp), 2);
    assert_int_equal(mf_spool_bytes(sp), 91);
    assert_pending(sp, 0, 3, 30);
    assert_pending(sp, 2, 5, 31);
    char *f1 = msg_path(dir, 1, "event"), *f2 = msg_path(dir, 2, "event");
    assert_false(exists(f1) || exists(f2));
    assert_meta(dir, 6, 2, 3);
    mf_spool_close(sp);

    /* The count survives a restart; a smaller cap drops more at open. */
    sp = open_ok(dir, &lim);
    assert_int_equal(mf_spool_dropped(sp), 2);
    assert_int_equal(mf_spool_count(sp), 3);
    mf_spool_close(sp);
    lim.max_messages = 1;
    sp = open_ok(dir, &lim);
    assert_int_equal(mf_spool_dropped(sp), 4);
    assert_int_equal(mf_spool_count(sp), 1);
    assert_pending(sp, 0, 5, 31);
    assert_int_equal(mf_spool_next(sp), 6);
    assert_int_equal(count_entries(dir), 2);
    assert_meta(dir, 6, 4, 5);
    mf_spool_close(sp);
    free(f1);
    free(f2);
    unit_tmpdir_free(dir);
}

static void test_byte_cap(void **state)
{
    (void)state;
    char *dir = unit_tmpdir("spool");
    struct mf_spool_limits lim = {.max_bytes = 1000, .max_messages = 100};
    struct mf_spool *sp = open_ok(dir, &lim);
    push_ok(sp, 400);
    push_ok(sp, 400);
    push_ok(sp, 200); /* exactly 1000: fits */
    assert_int_equal(mf_spool_bytes(sp), 1000);
    assert_int_equal(mf_spool_dropped(sp), 0);
    push_ok(sp, 1); /* one byte over: the oldest 400 go */
    assert_int_equal(mf_spool_count(sp), 3);
    assert_int_equal(mf_spool_bytes(sp), 601);
    assert_int_equal(mf_spool_dropped(sp), 1);
    push_ok(sp, 1000); /* needs everything else gone */
    assert_int_equal(mf_spool_count(sp), 1);
    assert_int_equal(mf_spool_bytes(sp), 1000);
    assert_int_equal(mf_spool_dropped(sp), 4);
    assert_pending(sp, 0, 5, 1000);
    assert_int_equal(count_entries(dir), 2);
    mf_spool_close(sp);

    sp = open_ok(dir, &lim);
    assert_int_equal(mf_spool_dropped(sp), 4);
    assert_int_equal(mf_spool_bytes(sp), 1000);
    mf_spool_close(sp);
    lim.max_bytes = 999; /* the one message no longer fits at all */
    sp = open_ok(dir, &lim);
    assert_int_equal(mf_spool_dropped(sp), 5);
    assert_int_equal(mf_spool_count(sp), 0);
    assert_int_equal(mf_spool_next(sp), 6);
    assert_int_equal(count_entries(dir), 1);
    mf_spool_close(sp);
    unit_tmpdir_free(dir);
}

static void test_too_large(void **state)
{
    (void)state;
    char *dir = unit_tmpdir("spool");
    struct mf_spool_limits lim = {.max_bytes = 100, .max_messages = 10};
    struct mf_spool *sp = open_ok(dir, &lim);
    static char big[MF_DEVMSG_MAX + 2];
    memset(big, 'x', sizeof big);
    struct mf_diag d;
    push_ok(sp, 60);
    assert_int_equal(mf_spool_push(sp, 2, MF_DEVMSG_REPORT, big, 101, &d), MF_ERR_TOO_LARGE);
    assert_int_equal(mf_spool_next(sp), 3); /* used up */
    assert_int_equal(mf_spool_dropped(sp), 1);
    assert_int_equal(mf_spool_count(sp), 1); /* and nothing else went */
    assert_int_equal(mf_spool_bytes(sp), 60);
    assert_int_equal(count_entries(dir), 2);
    push_ok(sp, 40);
    mf_spool_close(sp);

    sp = open_ok(dir, &lim);
    assert_int_equal(mf_spool_dropped(sp), 1);
    assert_int_equal(mf_spool_next(sp), 4);
    assert_pending(sp, 0, 1, 60);
    assert_pending(sp, 1, 3, 40);
    mf_spool_close(sp);

    /* Over MF_DEVMSG_MAX, even with a larger byte cap. */
    struct mf_spool_limits wide = {.max_bytes = 10u * MF_DEVMSG_MAX, .max_messages = 10};
    sp = open_ok(dir, &wide);
    assert_int_equal(mf_spool_push(sp, 4, MF_DEVMSG_EVENT, big, MF_DEVMSG_MAX + 1, &d),
                     MF_ERR_TOO_LARGE);
    assert_int_equal(mf_spool_dropped(sp), 2);
    assert_int_equal(push_ok(sp, MF_DEVMSG_MAX), 5); /* exactly the max is fine */
    mf_spool_close(sp);
    unit_tmpdir_free(dir);
}

/* ---- what open finds ---- */

static void test_open_refusals(void **state)
{
    (void)state;
    char *dir = unit_tmpdir("spool");
    struct mf_spool *sp = NULL;
    struct mf_diag d;
    struct mf_spool_limits zero_b = {.max_bytes = 0, .max_messages = 5};
    struct mf_spool_limits zero_m = {.max_bytes = 5, .max_messages = 0};
    assert_int_equal(mf_spool_open(dir, &zero_b, &sp, &d), MF_ERR_USAGE);
    assert_int_equal(mf_spool_open(dir, &zero_m, &sp, &d), MF_ERR_USAGE);
    char *deep = spath(dir, "missing/spool");
    assert_int_equal(mf_spool_open(deep, &roomy, &sp, &d), MF_ERR_IO);
    char *file = spath(dir, "a-file");
    write_raw(file, "x", 1);
    assert_int_equal(mf_spool_open(file, &roomy, &sp, &d), MF_ERR_IO);
    assert_null(sp);
    free(deep);
    free(file);
    unit_tmpdir_free(dir);
}

static void test_junk_cleaned(void **state)
{
    (void)state;
    char *dir = unit_tmpdir("spool");
    char *sd = spath(dir, "spool");
    struct mf_spool *sp = open_ok(sd, &roomy);
    push_ok(sp, 20); /* 1 event */
    push_ok(sp, 21); /* 2 event */
    mf_spool_close(sp);

    /* Outside the spool: a symlink's target must survive. */
    char *outside = spath(dir, "outside");
    write_raw(outside, "keep me", 7);

    static const char *const junk_files[] = {
        ".00000000000000000003.event.tmp.AbC123", /* an interrupted push */
        ".meta.tmp.XyZ789",                       /* an interrupted meta write */
        "README",
        "0000000000000000003.event",   /* 19 digits */
        "000000000000000000003.event", /* 21 digits */
        "00000000000000000003.events",
        "00000000000000000003.state",
        "00000000000000000003.",
        "00000000000000000003",
        "0000000000000000000x.event",
        "+0000000000000000003.event",
        "00000000000000000000.event", /* number 0 */
        "99999999999999999999.event", /* past uint64 */
        "18446744073709551615.report",
        "09223372036854775807.report", /* INT64_MAX: no room for next in JSON */
        "00000000000000000001.report", /* 1 is an event already */
    };
    for (size_t i = 0; i < sizeof junk_files / sizeof junk_files[0]; i++) {
        char *p = spath(sd, "%s", junk_files[i]);
        write_raw(p, "junk", 4);
        free(p);
    }
    char *sub = spath(sd, "subdir"), *subf = spath(sd, "subdir/file");
    assert_int_equal(mkdir(sub, 0700), 0);
    write_raw(subf, "x", 1);
    /* Damaged messages (valid names): empty, a directory, a symlink, too big. */
    char *empty = msg_path(sd, 5, "event");
    write_raw(empty, "", 0);
    char *dirmsg = msg_path(sd, 6, "report");
    assert_int_equal(mkdir(dirmsg, 0700), 0);
    char *link = msg_path(sd, 7, "event");
    assert_int_equal(symlink(outside, link), 0);
    char *huge = msg_path(sd, 8, "event");
    static char big[MF_DEVMSG_MAX + 1];
    memset(big, 'y', sizeof big);
    write_raw(huge, big, sizeof big);

    sp = open_ok(sd, &roomy);
    assert_int_equal(mf_spool_count(sp), 2);
    assert_pending(sp, 0, 1, 20);
    assert_pending(sp, 1, 2, 21);
    assert_int_equal(mf_spool_dropped(sp), 4); /* 5..8: lost messages */
    assert_int_equal(mf_spool_next(sp), 9);
    assert_int_equal(count_entries(sd), 3); /* meta + two messages */
    assert_true(exists(outside));
    assert_meta(sd, 9, 4, 0);
    mf_spool_close(sp);

    /* Nothing is counted twice. */
    sp = open_ok(sd, &roomy);
    assert_int_equal(mf_spool_dropped(sp), 4);
    assert_int_equal(mf_spool_count(sp), 2);
    mf_spool_close(sp);

    free(sub);
    free(subf);
    free(empty);
    free(dirmsg);
    free(link);
    free(huge);
    free(outside);
    free(sd);
    unit_tmpdir_free(dir);
}

static void test_meta_rebuilt(void **state)
{
    (void)state;
#define T(s)                                                                                       \
    {                                                                                              \
        s, sizeof(s) - 1                                                                           \
    }
    static const struct {
        const char *text; /* NULL: missing; "dir": a directory */
        size_t len;
    } bad[] = {
        T(""),
        T("garbage"),
        T("next 9\ndropped 2\n"), /* no floor */
        T("next 9\ndropped 2\nfloor 0"),
        T("next 9\ndropped 2\nfloor 0\nextra 1\n"),
        T("next 0\ndropped 2\nfloor 0\n"),
        T("next 09\ndropped 2\nfloor 0\n"),
        T("next +9\ndropped 2\nfloor 0\n"),
        T("next -9\ndropped 2\nfloor 0\n"),
        T("next  9\ndropped 2\nfloor 0\n"),
        T("next 9\r\ndropped 2\nfloor 0\n"),
        T("next 9\ndropped 2\nfloor 10\n"), /* floor past next */
        T("next 18446744073709551616\ndropped 2\nfloor 0\n"),
        T("next 9223372036854775808\ndropped 2\nfloor 0\n"), /* past INT64_MAX */
        T("dropped 2\nnext 9\nfloor 0\n"),
        T("NEXT 9\ndropped 2\nfloor 0\n"),
        T("next 9\ndropped 2\nfloor 0\n\n"),
        T("next 9\0\ndropped 2\nfloor 0\n"),
        {NULL, 0},
        T("dir"),
    };
#undef T
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *dir = unit_tmpdir("spool");
        struct mf_spool *sp = open_ok(dir, &roomy);
        for (int k = 0; k < 4; k++)
            push_ok(sp, 25);
        ack_ok(sp, 1);
        ack_ok(sp, 2);
        mf_spool_close(sp);
        char *meta = spath(dir, "meta");
        assert_int_equal(unlink(meta), 0);
        if (bad[i].text && strcmp(bad[i].text, "dir") == 0) {
            char *inner = spath(dir, "meta/x");
            assert_int_equal(mkdir(meta, 0700), 0);
            write_raw(inner, "x", 1);
            free(inner);
        } else if (bad[i].text) {
            write_raw(meta, bad[i].text, bad[i].len);
        }
        sp = open_ok(dir, &roomy);
        assert_int_equal(mf_spool_next(sp), 5); /* highest file + 1 */
        assert_int_equal(mf_spool_dropped(sp), 0);
        assert_int_equal(mf_spool_count(sp), 2);
        assert_pending(sp, 0, 3, 25);
        assert_pending(sp, 1, 4, 25);
        mf_spool_close(sp);
        assert_meta(dir, 5, 0, 0);
        free(meta);
        unit_tmpdir_free(dir);
    }

    /* A good meta is taken as it is, and floor deletes leftovers below it. */
    char *dir = unit_tmpdir("spool");
    struct mf_spool *sp = open_ok(dir, &roomy);
    for (int k = 0; k < 4; k++)
        push_ok(sp, 25);
    mf_spool_close(sp);
    char *meta = spath(dir, "meta");
    write_raw(meta, "next 40\ndropped 7\nfloor 3\n", 26);
    sp = open_ok(dir, &roomy);
    assert_int_equal(mf_spool_next(sp), 40);
    assert_int_equal(mf_spool_dropped(sp), 7); /* 1 and 2 were counted already */
    assert_int_equal(mf_spool_count(sp), 2);
    assert_pending(sp, 0, 3, 25);
    assert_int_equal(count_entries(dir), 3);
    mf_spool_close(sp);
    free(meta);
    unit_tmpdir_free(dir);
}

/* ---- I/O failures leave nothing stored ---- */

static void test_io_failures(void **state)
{
    (void)state;
    char *dir = unit_tmpdir("spool");
    struct mf_spool_limits lim = {.max_bytes = 100, .max_messages = 2};
    struct mf_spool *sp = open_ok(dir, &lim);
    struct mf_diag d;
    char buf[200];
    push_ok(sp, 10);
    push_ok(sp, 10);

    /* The message file cannot be renamed into place. */
    char *blocker = msg_path(dir, 3, "report"), *inner = spath(dir, "%020d.report/x", 3);
    assert_int_equal(mkdir(blocker, 0700), 0);
    write_raw(inner, "x", 1);
    payload_of(3, 10, buf);
    assert_int_equal(mf_spool_push(sp, 3, MF_DEVMSG_REPORT, buf, 10, &d), MF_ERR_IO);
    assert_int_equal(mf_spool_next(sp), 3);
    assert_int_equal(mf_spool_count(sp), 2);
    assert_int_equal(mf_spool_dropped(sp), 0);
    assert_int_equal(count_temp(dir), 0);
    assert_int_equal(unlink(inner), 0);
    assert_int_equal(rmdir(blocker), 0);

    /* Meta cannot be written: a push that must drop stores nothing. */
    char *meta = spath(dir, "meta"), *meta_inner = spath(dir, "meta/x");
    assert_int_equal(unlink(meta), 0);
    assert_int_equal(mkdir(meta, 0700), 0);
    write_raw(meta_inner, "x", 1);
    assert_int_equal(mf_spool_push(sp, 3, MF_DEVMSG_REPORT, buf, 10, &d), MF_ERR_IO);
    assert_int_equal(mf_spool_next(sp), 3);
    assert_int_equal(mf_spool_count(sp), 2);
    assert_int_equal(mf_spool_dropped(sp), 0);
    assert_false(exists(blocker));
    assert_int_equal(count_temp(dir), 0);
    assert_pending(sp, 0, 1, 10);
    /* ... a too-large one does not use its number up ... */
    assert_int_equal(mf_spool_push(sp, 3, MF_DEVMSG_REPORT, buf, 101, &d), MF_ERR_IO);
    assert_int_equal(mf_spool_next(sp), 3);
    assert_int_equal(mf_spool_dropped(sp), 0);
    /* ... and the newest is not acked before meta holds next. */
    assert_int_equal(mf_spool_ack(sp, 2, &d), MF_ERR_IO);
    assert_int_equal(mf_spool_count(sp), 2);
    ack_ok(sp, 1); /* not the newest: no meta needed */
    assert_int_equal(mf_spool_count(sp), 1);
    assert_int_equal(unlink(meta_inner), 0);
    assert_int_equal(rmdir(meta), 0);

    /* Back to normal. */
    assert_int_equal(push_ok(sp, 10), 3);
    ack_ok(sp, 2);
    ack_ok(sp, 3);
    assert_meta(dir, 4, 0, 0);
    mf_spool_close(sp);
    free(blocker);
    free(inner);
    free(meta);
    free(meta_inner);
    unit_tmpdir_free(dir);
}

/* ---- crash points ---- */

enum { CRASHED = 77 };
static const char *crash_at;
static int crash_nth, crash_seen;

static void crash_hook(const char *point)
{
    if (strcmp(point, crash_at) == 0 && ++crash_seen == crash_nth)
        _exit(CRASHED);
}

#define CHILD_FIRST 4 /* the parent pushed 1..3 */
#define CHILD_LAST  9
#define MSG_LEN(n)  (100 + (size_t)(n))

/* The child: pushes CHILD_FIRST..CHILD_LAST, then acks the newest. Returns
 * 0 or a line number (no cmocka in a forked child). */
static int child_run(const char *dir, const struct mf_spool_limits *lim)
{
    struct mf_spool *sp = NULL;
    struct mf_diag d;
    char buf[512];
    if (mf_spool_open(dir, lim, &sp, &d) != MF_OK)
        return __LINE__;
    for (uint64_t n = CHILD_FIRST; n <= CHILD_LAST; n++) {
        if (mf_spool_next(sp) != n)
            return __LINE__;
        payload_of(n, MSG_LEN(n), buf);
        if (mf_spool_push(sp, n, kind_of(n), buf, MSG_LEN(n), &d) != MF_OK)
            return __LINE__;
    }
    if (mf_spool_ack(sp, CHILD_LAST, &d) != MF_OK)
        return __LINE__;
    mf_spool_close(sp);
    return 0;
}

/* After the crash: every number below next is pending (intact), acked or
 * counted, exactly once; a second open changes nothing. */
static void check_after_crash(const char *dir, const struct mf_spool_limits *lim, bool finished,
                              const char *what)
{
    struct mf_spool *sp = open_ok(dir, lim);
    uint64_t next = mf_spool_next(sp), dropped = mf_spool_dropped(sp);
    size_t n = mf_spool_count(sp);
    uint64_t acked = finished ? 1 : 0;
    if (next - 1 != n + acked + dropped)
        fail_msg("%s: next %" PRIu64 ", %zu pending, %" PRIu64 " acked, %" PRIu64 " dropped", what,
                 next, n, acked, dropped);
    assert_true(next >= CHILD_FIRST && next <= CHILD_LAST + 1);
    assert_true(n <= lim->max_messages);
    uint64_t prev = 0, bytes = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t num;
        enum mf_devmsg_kind kind;
        uint8_t *data = NULL;
        size_t len;
        struct mf_diag d;
        assert_int_equal(mf_spool_get(sp, i, &num, &kind, &data, &len, &d), MF_OK);
        free(data);
        assert_true(num > prev && num < next);
        assert_pending(sp, i, num, MSG_LEN(num));
        bytes += MSG_LEN(num);
        prev = num;
    }
    assert_int_equal(mf_spool_bytes(sp), bytes);
    /* What was dropped is the oldest: pending is the newest, with no gap
     * except the acked CHILD_LAST. */
    if (n > 0) {
        uint64_t newest = finished ? CHILD_LAST - 1 : next - 1;
        uint64_t first;
        enum mf_devmsg_kind kind;
        uint8_t *data = NULL;
        size_t len;
        struct mf_diag d;
        assert_int_equal(mf_spool_get(sp, 0, &first, &kind, &data, &len, &d), MF_OK);
        free(data);
        assert_int_equal(newest - first + 1, n);
    }
    assert_int_equal(count_temp(dir), 0);
    mf_spool_close(sp);

    sp = open_ok(dir, lim);
    assert_int_equal(mf_spool_next(sp), next);
    assert_int_equal(mf_spool_dropped(sp), dropped);
    assert_int_equal(mf_spool_count(sp), n);
    mf_spool_close(sp);
}

static void test_crash_points(void **state)
{
    (void)state;
    static const char *const points[] = {"push:temp-written", "push:committed",
                                         "push:meta-written", "push:dropping",
                                         "ack:meta-written",  NULL};
    static const struct mf_spool_limits caps[] = {
        {.max_bytes = 1u << 20, .max_messages = 100}, /* nothing dropped */
        {.max_bytes = 1u << 20, .max_messages = 4},   /* the message cap drops */
        {.max_bytes = 330, .max_messages = 100},      /* the byte cap drops (3 fit) */
    };
    bool reached[6] = {false};
    for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++)
        for (size_t p = 0; p < sizeof points / sizeof points[0]; p++)
            for (int nth = 1; nth <= (points[p] ? 6 : 1); nth++) {
                char *dir = unit_tmpdir("spool");
                struct mf_spool *sp = open_ok(dir, &caps[c]);
                for (uint64_t k = 1; k < CHILD_FIRST; k++) {
                    char buf[512];
                    struct mf_diag d;
                    payload_of(k, MSG_LEN(k), buf);
                    assert_int_equal(mf_spool_push(sp, k, kind_of(k), buf, MSG_LEN(k), &d), MF_OK);
                }
                mf_spool_close(sp);
                fflush(NULL);
                pid_t pid = fork();
                assert_true(pid >= 0);
                if (pid == 0) {
                    crash_at = points[p] ? points[p] : "";
                    crash_nth = nth;
                    crash_seen = 0;
                    mf_spool_crash_hook = crash_hook;
                    _exit(child_run(dir, &caps[c]));
                }
                int status;
                assert_int_equal(waitpid(pid, &status, 0), pid);
                assert_true(WIFEXITED(status));
                int rc = WEXITSTATUS(status);
                if (rc != 0 && rc != CRASHED)
                    fail_msg("child failed at line %d", rc);
                reached[p] |= rc == CRASHED;
                char what[96];
                snprintf(what, sizeof what, "caps %zu, %s #%d", c, points[p] ? points[p] : "none",
                         nth);
                if (!points[p])
                    assert_int_equal(rc, 0);
                check_after_crash(dir, &caps[c], rc == 0, what);

                /* Without drops, every message pushed before the crash is there. */
                if (c == 0) {
                    sp = open_ok(dir, &caps[c]);
                    uint64_t next = mf_spool_next(sp);
                    assert_int_equal(mf_spool_dropped(sp), 0);
                    for (uint64_t k = 1; k < next && k < CHILD_LAST; k++)
                        assert_pending(sp, k - 1, k, MSG_LEN(k));
                    mf_spool_close(sp);
                }
                unit_tmpdir_free(dir);
            }
    /* Every point was reached in some configuration. */
    for (size_t p = 0; points[p]; p++)
        if (!reached[p])
            fail_msg("crash point %s never reached", points[p]);
}

/* ---- throughput (informational) ---- */

static void test_throughput(void **state)
{
    (void)state;
    enum { N = 10000, LEN = 300 };
    char *dir = unit_tmpdir("spool");
    struct mf_spool *sp = open_ok(dir, &roomy);
    char buf[LEN];
    struct mf_diag d;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < N; i++) {
        uint64_t n = mf_spool_next(sp);
        payload_of(n, LEN, buf);
        assert_int_equal(mf_spool_push(sp, n, MF_DEVMSG_EVENT, buf, LEN, &d), MF_OK);
        assert_int_equal(mf_spool_ack(sp, n, &d), MF_OK);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("spool throughput: %d push+ack of %d bytes in %.2f s (%.0f pairs/s, %.3f ms each)\n", N,
           LEN, s, N / s, 1e3 * s / N);
    assert_int_equal(mf_spool_count(sp), 0);
    assert_int_equal(mf_spool_next(sp), N + 1);
    mf_spool_close(sp);
    unit_tmpdir_free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_push_get_ack_order),
        cmocka_unit_test(test_ack_unknown_and_twice),
        cmocka_unit_test(test_numbers_survive_restarts),
        cmocka_unit_test(test_index_against_model),
        cmocka_unit_test(test_message_cap),
        cmocka_unit_test(test_byte_cap),
        cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_open_refusals),
        cmocka_unit_test(test_junk_cleaned),
        cmocka_unit_test(test_meta_rebuilt),
        cmocka_unit_test(test_io_failures),
        cmocka_unit_test(test_crash_points),
        cmocka_unit_test(test_throughput),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
