/* test_common.c — common/: errors, buffers, codecs, hashes, semver, time,
 * config tables, file helpers, and the binomial tail and normal quantile. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/config.h"
#include "common/encode.h"
#include "common/err.h"
#include "common/fs.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/semver.h"
#include "common/stats.h"

static void test_err_names(void **state)
{
    (void)state;
    for (int i = 0; i < MF_ERR__COUNT; i++) {
        assert_true(strlen(mf_strerror((enum mf_err)i)) > 0);
        for (int j = 0; j < i; j++)
            assert_string_not_equal(mf_errname((enum mf_err)i), mf_errname((enum mf_err)j));
    }
    assert_string_equal(mf_strerror((enum mf_err)999), "unknown error");
}

static void test_log_levels(void **state)
{
    (void)state;
    enum mf_log_level l;
    assert_int_equal(mf_log_parse_level("warn", &l), MF_OK);
    assert_int_equal(l, MF_LOG_WARN);
    assert_int_equal(mf_log_parse_level("loud", &l), MF_ERR_USAGE);
    mf_log_set_level(MF_LOG_ERROR);
    assert_int_equal(mf_log_get_level(), MF_LOG_ERROR);
    mf_log(MF_LOG_INFO, "dropped below the level");
    mf_log_set_level(MF_LOG_INFO);
}

static void test_diag(void **state)
{
    (void)state;
    struct mf_diag d = {0};
    char line[MF_DIAG_STR_MAX];
    assert_int_equal(mf_diag_set(&d, MF_ERR_PARSE, "files[2]", "expected %s", "a string"),
                     MF_ERR_PARSE);
    mf_diag_prefix(&d, "manifest.json");
    assert_string_equal(mf_diag_str(&d, line, sizeof line),
                        "manifest.json: files[2]: expected a string");
    assert_int_equal(mf_diag_set(NULL, MF_ERR_IO, NULL, "x"), MF_ERR_IO);
}

static void test_buf_cap(void **state)
{
    (void)state;
    struct mf_buf b;
    mf_buf_init(&b, 8);
    assert_int_equal(mf_buf_append(&b, "12345", 5), MF_OK);
    assert_int_equal(mf_buf_append(&b, "6789", 4), MF_ERR_TOO_LARGE);
    assert_int_equal(b.len, 5);
    assert_string_equal((char *)b.data, "12345");
    assert_int_equal(mf_buf_printf(&b, "%d", 678), MF_OK);
    assert_string_equal((char *)b.data, "12345678");
    assert_int_equal(mf_buf_printf(&b, "x"), MF_ERR_TOO_LARGE);
    mf_buf_free(&b);
    mf_buf_init(&b, 4);
    size_t n = 99;
    uint8_t *p = mf_buf_steal(&b, &n);
    assert_non_null(p);
    assert_int_equal(n, 0);
    free(p);
}

static void test_codecs(void **state)
{
    (void)state;
    const uint8_t bin[] = {0x00, 0xff, 0x10, 0xab};
    char hex[9], b64[16];
    uint8_t back[4];
    size_t n;
    mf_hex_encode(hex, bin, 4);
    assert_string_equal(hex, "00ff10ab");
    assert_int_equal(mf_hex_decode(back, 4, hex), MF_OK);
    assert_memory_equal(back, bin, 4);
    assert_int_equal(mf_hex_decode(back, 4, "00ff10a"), MF_ERR_PARSE);
    assert_int_equal(mf_hex_decode(back, 4, "00ff10ag"), MF_ERR_PARSE);
    assert_int_equal(mf_hex_decode(back, 4, "00ff10ab00"), MF_ERR_PARSE);
    mf_base64_encode(b64, sizeof b64, bin, 4);
    assert_string_equal(b64, "AP8Qqw==");
    assert_int_equal(mf_base64_decode(back, sizeof back, &n, b64), MF_OK);
    assert_int_equal(n, 4);
    assert_memory_equal(back, bin, 4);
    assert_int_equal(mf_base64_decode(back, sizeof back, &n, "AP8Q qw=="), MF_ERR_PARSE);
    assert_int_equal(mf_base64_decode(back, sizeof back, &n, "AP8Qqw==x"), MF_ERR_PARSE);
}

static void test_hash_vector(void **state)
{
    (void)state;
    uint8_t h[MF_HASH_BYTES];
    char hex[MF_HASH_HEX];
    struct mf_hash st;
    mf_hash_bytes(h, "abc", 3);
    mf_hex_encode(hex, h, sizeof h);
    /* BLAKE2b-256("abc"), RFC 7693 parameters with a 32-byte digest. */
    assert_string_equal(hex, "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319");
    mf_hash_init(&st);
    mf_hash_update(&st, "a", 1);
    mf_hash_update(&st, "bc", 2);
    uint8_t h2[MF_HASH_BYTES];
    mf_hash_final(&st, h2);
    assert_memory_equal(h, h2, sizeof h);
}

static void test_semver(void **state)
{
    (void)state;
    static const char *const ordered[] = {"1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta",
                                          "1.0.0-beta",  "1.0.0-beta.2",  "1.0.0-beta.11",
                                          "1.0.0-rc.1",  "1.0.0",         "1.9.0",
                                          "1.10.0",      "2.0.0"};
    struct mf_semver a, b;
    for (size_t i = 0; i + 1 < sizeof ordered / sizeof ordered[0]; i++) {
        assert_int_equal(mf_semver_parse(ordered[i], &a, NULL), MF_OK);
        assert_int_equal(mf_semver_parse(ordered[i + 1], &b, NULL), MF_OK);
        assert_true(mf_semver_cmp(&a, &b) < 0);
        assert_true(mf_semver_cmp(&b, &a) > 0);
        assert_int_equal(mf_semver_cmp(&a, &a), 0);
    }
    assert_int_equal(mf_semver_parse("1.2.3+build.7", &a, NULL), MF_OK);
    assert_int_equal(mf_semver_parse("1.2.3+other", &b, NULL), MF_OK);
    assert_int_equal(mf_semver_cmp(&a, &b), 0);
    static const char *const bad[] = {"1.2",    "01.2.3", "1.2.3-", "1.2.3-01", "1.2.3.4",
                                      "v1.2.3", "1.2.x",  "1..3",   "",         "1.2.3-a..b",
                                      "1.2.3+", " 1.2.3", "1.2.3 ", "1.2.3-ä"};
    struct mf_diag d;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (mf_semver_parse(bad[i], &a, &d) != MF_ERR_PARSE)
            fail_msg("'%s' parsed as a semantic version", bad[i]);
    }
    assert_non_null(strstr(d.what, "is not a semantic version"));
}

static void test_time(void **state)
{
    (void)state;
    int64_t t;
    char s[MF_RFC3339_LEN];
    assert_int_equal(mf_time_parse("1970-01-01T00:00:00Z", &t), MF_OK);
    assert_int_equal(t, 0);
    assert_int_equal(mf_time_parse("2024-02-29T12:34:56Z", &t), MF_OK);
    assert_int_equal(t, 1709210096);
    mf_time_format(t, s);
    assert_string_equal(s, "2024-02-29T12:34:56Z");
    static const char *const bad[] = {"2023-02-29T00:00:00Z", "2026-13-01T00:00:00Z",
                                      "2026-04-31T00:00:00Z", "2026-01-01 00:00:00Z",
                                      "2026-01-01T00:00:00",  "2026-01-01T00:00:00+01:00",
                                      "2026-1-01T00:00:00Z",  "2026-01-01T24:00:00Z",
                                      "2026-01-01T23:59:60Z", "1969-12-31T23:59:59Z"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (mf_time_parse(bad[i], &t) != MF_ERR_PARSE)
            fail_msg("'%s' parsed as a time", bad[i]);
}

struct cfg_test {
    char *name;
    int64_t count;
    double ratio;
    bool on;
    uint64_t budget;
    struct mf_strlist tags;
    struct mf_strlist notes;
};

#define CO(f) offsetof(struct cfg_test, f)
static const struct mf_cfg_key cfg_keys[] = {
    {"name", MF_CFG_STR, CO(name), "default", 0, 0, ""},
    {"count", MF_CFG_INT, CO(count), "3", 1, 10, ""},
    {"ratio", MF_CFG_DOUBLE, CO(ratio), NULL, 0, 1, ""},
    {"on", MF_CFG_BOOL, CO(on), "false", 0, 0, ""},
    {"budget", MF_CFG_SIZE, CO(budget), "1M", 0, 0, ""},
    {"tag", MF_CFG_LIST, CO(tags), NULL, 0, 0, ""},
    {"note", MF_CFG_MULTI, CO(notes), NULL, 0, 0, ""},
    {NULL, 0, 0, NULL, 0, 0, NULL},
};

static char *write_temp(const char *text)
{
    char *path = mf_xstrdup("/tmp/mf-cfg-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(mf_fs_write_all(fd, text, strlen(text)), MF_OK);
    close(fd);
    return path;
}

static void test_config(void **state)
{
    (void)state;
    struct cfg_test c;
    struct mf_diag d = {0};
    mf_cfg_defaults(cfg_keys, &c);
    assert_string_equal(c.name, "default");
    assert_int_equal(c.count, 3);
    assert_int_equal(c.budget, 1 << 20);
    char *path = write_temp("# comment\n\nname = edge # not a comment\ncount=7\non = yes\n"
                            "budget = 2G\ntag = a, b\ntag = c\nratio = 0.25\n"
                            "note = one, two\nnote = three\n");
    assert_int_equal(mf_cfg_load(cfg_keys, &c, path, &d), MF_OK);
    assert_string_equal(c.name, "edge # not a comment");
    assert_int_equal(c.count, 7);
    assert_true(c.on);
    assert_int_equal(c.budget, 2ull << 30);
    assert_int_equal(c.tags.n, 3);
    assert_string_equal(c.tags.v[2], "c");
    assert_true(c.ratio == 0.25);
    assert_int_equal(c.notes.n, 2); /* MULTI keeps commas */
    assert_string_equal(c.notes.v[0], "one, two");
    unlink(path);
    free(path);

    path = write_temp("name = x\n\ncolour = blue\n");
    assert_int_equal(mf_cfg_load(cfg_keys, &c, path, &d), MF_ERR_SCHEMA);
    assert_non_null(strstr(d.where, ":3"));
    assert_string_equal(d.what, "unknown key 'colour'");
    assert_int_equal(mf_cfg_set(cfg_keys, &c, "colour", "x", &d), MF_ERR_USAGE);
    unlink(path);
    free(path);

    assert_int_equal(mf_cfg_set(cfg_keys, &c, "count", "11", &d), MF_ERR_PARSE);
    assert_non_null(strstr(d.what, "in [1, 10]"));
    assert_int_equal(c.count, 7); /* unchanged on error */
    assert_int_equal(mf_cfg_set(cfg_keys, &c, "count", "5x", &d), MF_ERR_PARSE);
    assert_int_equal(mf_cfg_set(cfg_keys, &c, "on", "maybe", &d), MF_ERR_PARSE);
    assert_int_equal(mf_cfg_set(cfg_keys, &c, "budget", "12Q", &d), MF_ERR_PARSE);
    assert_int_equal(mf_cfg_set(cfg_keys, &c, "ratio", "nan", &d), MF_ERR_PARSE);
    path = write_temp("just words\n");
    assert_int_equal(mf_cfg_load(cfg_keys, &c, path, &d), MF_ERR_PARSE);
    assert_string_equal(d.what, "expected 'key = value'");
    unlink(path);
    free(path);
    /* a NUL byte would hide the rest of the file: refused, naming the line */
    static const char nul[] = "count = 3\nname = a\0b\n";
    assert_int_equal(mf_cfg_parse(cfg_keys, &c, nul, sizeof nul - 1, "x.conf", &d), MF_ERR_PARSE);
    assert_string_equal(d.what, "line 2: a NUL byte");
    assert_int_equal(mf_cfg_parse(cfg_keys, &c, "name = a\rb\n", 11, "x.conf", &d), MF_ERR_PARSE);
    assert_non_null(strstr(d.what, "0x0d"));
    assert_int_equal(mf_cfg_set(cfg_keys, &c, "name", "a\x1b[2Jb", &d), MF_ERR_PARSE);
    assert_int_equal(mf_cfg_parse(cfg_keys, &c, "count = 4\r\n", 11, "x.conf", &d), MF_OK);
    assert_int_equal(c.count, 4);
    mf_cfg_free(cfg_keys, &c);
}

static void test_config_args(void **state)
{
    (void)state;
    struct cfg_test c;
    struct mf_diag d = {0};
    int rest = -1;
    char *file = write_temp("name = file\ncount = 4\ntag = f\n");
    char *other = write_temp("count = 6\n");
    char *eq = mf_xasprintf("--config=%s", file);
    char *missing = mf_xstrdup("/tmp/mf-cfg-missing-XXXXXX");
    int fd = mkstemp(missing);
    assert_true(fd >= 0);
    close(fd);
    unlink(missing);

    /* --config=FILE; flags win over the file wherever they stand */
    char *a1[] = {"prog", "--count", "9", eq, "--tag=x", "--on", "yes", NULL};
    assert_int_equal(mf_cfg_load_args(cfg_keys, &c, 7, a1, 1, NULL, NULL, &d), MF_OK);
    assert_string_equal(c.name, "file");
    assert_int_equal(c.count, 9);
    assert_true(c.on);
    assert_int_equal(c.tags.n, 2); /* file, then flag */
    assert_string_equal(c.tags.v[1], "x");
    mf_cfg_free(cfg_keys, &c);

    /* several --config files load in order; `first` skips leading words */
    char *a2[] = {"prog", "serve", "--config", file, "--config", other, NULL};
    assert_int_equal(mf_cfg_load_args(cfg_keys, &c, 6, a2, 2, NULL, NULL, &d), MF_OK);
    assert_int_equal(c.count, 6);
    assert_string_equal(c.name, "file");
    mf_cfg_free(cfg_keys, &c);

    /* missing values, unknown flags, stray words: usage errors, obj freed */
    char *b1[] = {"prog", "--count", NULL};
    assert_int_equal(mf_cfg_load_args(cfg_keys, &c, 2, b1, 1, NULL, NULL, &d), MF_ERR_USAGE);
    assert_string_equal(d.what, "needs a value");
    assert_null(c.name);
    char *b2[] = {"prog", "--config", NULL};
    assert_int_equal(mf_cfg_load_args(cfg_keys, &c, 2, b2, 1, NULL, NULL, &d), MF_ERR_USAGE);
    assert_string_equal(d.where, "--config");
    char *b3[] = {"prog", "--colour=blue", NULL};
    assert_int_equal(mf_cfg_load_args(cfg_keys, &c, 2, b3, 1, NULL, NULL, &d), MF_ERR_USAGE);
    assert_string_equal(d.what, "unknown key 'colour'");
    assert_null(c.name);
    char *b4[] = {"prog", "--count", "1", "stray", NULL};
    assert_int_equal(mf_cfg_load_args(cfg_keys, &c, 4, b4, 1, NULL, NULL, &d), MF_ERR_USAGE);
    assert_string_equal(d.what, "unexpected argument");
    assert_string_equal(d.where, "stray");
    char *b5[] = {"prog", "--count=12", NULL};
    assert_int_equal(mf_cfg_load_args(cfg_keys, &c, 2, b5, 1, NULL, NULL, &d), MF_ERR_PARSE);
    assert_int_equal(strncmp(d.where, "option", 6), 0);
    char *b6[] = {"prog", "--", "x", NULL};
    assert_int_equal(mf_cfg_load_args(cfg_keys, &c, 3, b6, 1, NULL, NULL, &d), MF_ERR_USAGE);
    char *b7[] = {"prog", "--config", missing, NULL};
    assert_int_equal(mf_cfg_load_args(cfg_keys, &c, 3, b7, 1, NULL, NULL, &d), MF_ERR_IO);
    assert_null(c.name);

    /* rest: the flags end at the first word; a flag's value is not a word */
    char *r1[] = {"prog", "--name", "status", "status", "--json", NULL};
    assert_int_equal(mf_cfg_load_args(cfg_keys, &c, 5, r1, 1, NULL, &rest, &d), MF_OK);
    assert_int_equal(rest, 3);
    assert_string_equal(c.name, "status");
    mf_cfg_free(cfg_keys, &c);
    char *r2[] = {"prog", "--count=2", NULL};
    assert_int_equal(mf_cfg_load_args(cfg_keys, &c, 2, r2, 1, NULL, &rest, &d), MF_OK);
    assert_int_equal(rest, 2);
    mf_cfg_free(cfg_keys, &c);
    char *r3[] = {"prog", "-v", "--count=2", NULL}; /* "-v" is a word, not a flag */
    assert_int_equal(mf_cfg_load_args(cfg_keys, &c, 3, r3, 1, NULL, &rest, &d), MF_OK);
    assert_int_equal(rest, 1);
    assert_int_equal(c.count, 3); /* nothing after the word is read */
    mf_cfg_free(cfg_keys, &c);
    rest = -1;
    char *r4[] = {"prog", "--count=99", "cmd", NULL};
    assert_int_equal(mf_cfg_load_args(cfg_keys, &c, 3, r4, 1, NULL, &rest, &d), MF_ERR_PARSE);
    assert_int_equal(rest, -1); /* not written on error */

    /* default_file: read when it exists and no --config is given */
    char *p1[] = {"prog", "--count=8", NULL};
    assert_int_equal(mf_cfg_load_args(cfg_keys, &c, 2, p1, 1, file, NULL, &d), MF_OK);
    assert_string_equal(c.name, "file");
    assert_int_equal(c.count, 8);
    mf_cfg_free(cfg_keys, &c);
    char *p2[] = {"prog", "--config", other, NULL};
    assert_int_equal(mf_cfg_load_args(cfg_keys, &c, 3, p2, 1, file, NULL, &d), MF_OK);
    assert_string_equal(c.name, "default"); /* --config replaces the default file */
    assert_int_equal(c.count, 6);
    mf_cfg_free(cfg_keys, &c);
    assert_int_equal(mf_cfg_load_args(cfg_keys, &c, 1, p1, 1, missing, &rest, &d), MF_OK);
    assert_string_equal(c.name, "default"); /* a missing default file is no error */
    assert_int_equal(rest, 1);
    mf_cfg_free(cfg_keys, &c);
    char *bad = write_temp("count = many\n"); /* a broken default file is one */
    assert_int_equal(mf_cfg_load_args(cfg_keys, &c, 1, p1, 1, bad, NULL, &d), MF_ERR_PARSE);
    assert_null(c.name);

    unlink(bad);
    unlink(file);
    unlink(other);
    free(bad);
    free(file);
    free(other);
    free(eq);
    free(missing);
}

static void test_fs(void **state)
{
    (void)state;
    char dir[] = "/tmp/mf-fs-XXXXXX";
    struct mf_diag d;
    struct mf_buf b;
    assert_non_null(mkdtemp(dir));
    char *f = mf_xasprintf("%s/file", dir);
    assert_int_equal(mf_fs_write_file(f, "hello", 5, 0600, &d), MF_OK);
    struct stat st;
    assert_int_equal(stat(f, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(mf_fs_read_file(f, 5, &b, &d), MF_OK);
    assert_string_equal((char *)b.data, "hello");
    mf_buf_free(&b);
    assert_int_equal(mf_fs_read_file(f, 4, &b, &d), MF_ERR_TOO_LARGE);

    /* rmtree removes a symlink, never what it points to. */
    char *outside = mf_xstrdup("/tmp/mf-fs-outside-XXXXXX");
    int fd = mkstemp(outside);
    close(fd);
    char *sub = mf_xasprintf("%s/sub", dir);
    char *link = mf_xasprintf("%s/sub/link", dir);
    char *dlink = mf_xasprintf("%s/dirlink", dir);
    assert_int_equal(mkdir(sub, 0755), 0);
    assert_int_equal(symlink(outside, link), 0);
    assert_int_equal(symlink("/tmp", dlink), 0);
    assert_int_equal(mf_fs_rmtree(dir), MF_OK);
    assert_int_equal(access(outside, F_OK), 0);
    assert_int_equal(access("/tmp", F_OK), 0);
    assert_int_not_equal(access(dir, F_OK), 0);
    assert_int_equal(mf_fs_rmtree(dir), MF_OK); /* missing is fine */
    unlink(outside);
    free(outside);
    free(sub);
    free(link);
    free(dlink);
    free(f);
}

/* mf_dec_u64: the one decimal reader (semver, Range, Content-Range). */
static void test_dec_u64(void **state)
{
    (void)state;
    uint64_t v = 7;
    const char *p = "18446744073709551615-", *q;
    assert_true(mf_dec_u64(&p, &v));
    assert_true(v == UINT64_MAX);
    assert_string_equal(p, "-");
    q = p = "18446744073709551616";
    assert_false(mf_dec_u64(&p, &v)); /* overflow: nothing read */
    assert_ptr_equal(p, q);
    assert_true(v == UINT64_MAX);
    const char *bad[] = {"", "-1", " 1", "x", "+3"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        p = bad[i];
        assert_false(mf_dec_u64(&p, &v));
        assert_ptr_equal(p, bad[i]);
    }
    p = "007x";
    assert_true(mf_dec_u64(&p, &v));
    assert_true(v == 7);
    assert_string_equal(p, "x");
}

/* The exact binomial tail at 1/2: small cases by hand (C(10, k) / 1024),
 * symmetry, and the far tails kept rather than rounded away. */
static void test_stats_binom_tail(void **state)
{
    (void)state;
    assert_float_equal(mf_stats_binom_tail_half(0, 0), 1.0, 0);
    assert_float_equal(mf_stats_binom_tail_half(10, 0), 1.0, 0);
    assert_float_equal(mf_stats_binom_tail_half(10, 11), 0.0, 0);
    assert_float_equal(mf_stats_binom_tail_half(10, 10), 1.0 / 1024, 1e-15);
    assert_float_equal(mf_stats_binom_tail_half(10, 8), 56.0 / 1024, 1e-13);
    assert_float_equal(mf_stats_binom_tail_half(10, 5), 638.0 / 1024, 1e-13);
    assert_float_equal(mf_stats_binom_tail_half(9, 8), 10.0 / 512, 1e-13);
    assert_float_equal(mf_stats_binom_tail_half(11, 3), 1981.0 / 2048, 1e-13);
    assert_float_equal(mf_stats_binom_tail_half(1, 1), 0.5, 1e-15);
    /* P[X >= 990] + P[X >= 1011] = 1 for m = 2000 (the tails mirror). */
    assert_float_equal(mf_stats_binom_tail_half(2000, 990) + mf_stats_binom_tail_half(2000, 1011),
                       1.0, 1e-10);
    double far = mf_stats_binom_tail_half(1000, 900); /* ~1e-150: not 0 */
    assert_true(far > 0 && far < 1e-100);
    assert_true(mf_stats_binom_tail_half(1000, 100) > 1 - 1e-12);
    /* Monotone in k (strictly, once the tail is off 1 in double precision). */
    for (uint64_t k = 1; k <= 60; k++) {
        assert_true(mf_stats_binom_tail_half(60, k) <= mf_stats_binom_tail_half(60, k - 1));
        if (k >= 12)
            assert_true(mf_stats_binom_tail_half(60, k) < mf_stats_binom_tail_half(60, k - 1));
    }
}

/* The normal quantile against published values, its symmetry, and the round
 * trip through the CDF (erfc) across both tails and the centre. */
static void test_stats_normal_quantile(void **state)
{
    (void)state;
    assert_float_equal(mf_stats_normal_quantile(0.5), 0.0, 1e-12);
    assert_float_equal(mf_stats_normal_quantile(0.95), 1.6448536270, 1e-9);
    assert_float_equal(mf_stats_normal_quantile(0.975), 1.9599639845, 1e-9);
    assert_float_equal(mf_stats_normal_quantile(0.99), 2.3263478740, 1e-9);
    assert_float_equal(mf_stats_normal_quantile(0.9), 1.2815515655, 1e-9);
    assert_float_equal(mf_stats_normal_quantile(0.05), -1.6448536270, 1e-9);
    assert_float_equal(mf_stats_normal_quantile(0.001), -3.0902323062, 1e-9);
    assert_float_equal(mf_stats_normal_quantile(1e-10), -6.3613409024, 1e-8);
    const double ps[] = {1e-12, 1e-6, 0.001, 0.02,    0.02425, 0.1,     0.3,
                         0.5,   0.7,  0.9,   0.97575, 0.99,    0.999999};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) {
        double z = mf_stats_normal_quantile(ps[i]);
        double back = 0.5 * erfc(-z / sqrt(2.0));
        assert_float_equal(back, ps[i], ps[i] * 1e-9 + 1e-15);
        if (ps[i] >= 1e-6) /* 1 - p loses the digits of smaller p */
            assert_float_equal(mf_stats_normal_quantile(1 - ps[i]), -z, 1e-8);
    }
}

int main(void)
{
    mf_crypto_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_err_names),
        cmocka_unit_test(test_log_levels),
        cmocka_unit_test(test_diag),
        cmocka_unit_test(test_buf_cap),
        cmocka_unit_test(test_codecs),
        cmocka_unit_test(test_dec_u64),
        cmocka_unit_test(test_hash_vector),
        cmocka_unit_test(test_semver),
        cmocka_unit_test(test_time),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_config_args),
        cmocka_unit_test(test_fs),
        cmocka_unit_test(test_stats_binom_tail),
        cmocka_unit_test(test_stats_normal_quantile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
