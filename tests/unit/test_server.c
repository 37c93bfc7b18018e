/* test_server.c — the pure parts of server/ (and common/json): Range header
 * parsing, secrets and Bearer headers, roles, the config table and its flags,
 * host:port splitting, capped JSON parsing, and the blob folder in a temp dir.
 * No database, no HTTP. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "unit_tmp.h"

#include "common/err.h"
#include "common/fs.h"
#include "common/hash.h"
#include "common/json.h"
#include "common/log.h"
#include "common/mem.h"
#include "server/auth.h"
#include "server/blobs.h"
#include "server/config.h"
#include "server/range.h"

/* ---- helpers ---------------------------------------------------------- */

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static char *read_text(const char *path)
{
    static char buf[256];
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static size_t count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t n = 0;
    assert_non_null(d);
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

/* ---- Range ------------------------------------------------------------ */

#define NO_RANGE UINT64_C(0xdeadbeef)

/* Expects a 206 of [start, start+len). */
static void range_ok(const char *h, uint64_t size, uint64_t start, uint64_t len)
{
    uint64_t s = NO_RANGE, l = NO_RANGE;
    enum mf_range r = mf_range_parse(h, size, &s, &l);
    if (r != MF_RANGE_PARTIAL || s != start || l != len)
        fail_msg("Range '%s' of %llu bytes: got %d [%llu +%llu], want partial [%llu +%llu]", h,
                 (unsigned long long)size, (int)r, (unsigned long long)s, (unsigned long long)l,
                 (unsigned long long)start, (unsigned long long)len);
}

/* Expects NONE or UNSATISFIABLE, with *start and *len untouched. */
static void range_is(const char *h, uint64_t size, enum mf_range want)
{
    uint64_t s = NO_RANGE, l = NO_RANGE;
    enum mf_range r = mf_range_parse(h, size, &s, &l);
    if (r != want || s != NO_RANGE || l != NO_RANGE)
        fail_msg("Range '%s' of %llu bytes: got %d, want %d (start/len must stay untouched)",
                 h ? h : "(null)", (unsigned long long)size, (int)r, (int)want);
}

static void test_range_satisfiable(void **state)
{
    (void)state;
    range_ok("bytes=0-", 100, 0, 100);
    range_ok("bytes=10-", 100, 10, 90);
    range_ok("bytes=99-", 100, 99, 1);
    range_ok("bytes=0-0", 100, 0, 1);
    range_ok("bytes=10-19", 100, 10, 10);
    range_ok("bytes=10-99", 100, 10, 90);
    range_ok("bytes=5-5", 6, 5, 1);
    range_ok("bytes=-1", 100, 99, 1);
    range_ok("bytes=-30", 100, 70, 30);
    range_ok("bytes=-100", 100, 0, 100);
    /* an end or a suffix past the size is clipped to the size */
    range_ok("bytes=10-1000", 100, 10, 90);
    range_ok("bytes=0-9999999999999999999", 100, 0, 100);
    range_ok("bytes=-500", 100, 0, 100);
    range_ok("bytes=-1", 1, 0, 1);
    /* spaces after '=' are skipped */
    range_ok("bytes= 3-4", 10, 3, 2);
    range_ok("bytes=  -2", 10, 8, 2);
    /* leading zeros are still decimal */
    range_ok("bytes=007-008", 10, 7, 2);
    /* the largest sizes */
    range_ok("bytes=18446744073709551609-", UINT64_MAX, UINT64_MAX - 6, 6);
    range_ok("bytes=18446744073709551609-18446744073709551609", UINT64_MAX, UINT64_MAX - 6, 1);
    range_ok("bytes=-18446744073709551609", UINT64_MAX, 6, UINT64_MAX - 6);
    range_ok("bytes=-18446744073709551609", 10, 0, 10);
    /* many leading zeros are no overflow */
    range_ok("bytes=00000000000000000000000000000000001-", 100, 1, 99);
}

static void test_range_unsatisfiable(void **state)
{
    (void)state;
    range_is("bytes=100-", 100, MF_RANGE_UNSATISFIABLE);
    range_is("bytes=101-", 100, MF_RANGE_UNSATISFIABLE);
    range_is("bytes=100-200", 100, MF_RANGE_UNSATISFIABLE);
    range_is("bytes=0-", 0, MF_RANGE_UNSATISFIABLE);
    range_is("bytes=0-0", 0, MF_RANGE_UNSATISFIABLE);
    range_is("bytes=-0", 100, MF_RANGE_UNSATISFIABLE);
    range_is("bytes=-000", 100, MF_RANGE_UNSATISFIABLE);
    range_is("bytes=-5", 0, MF_RANGE_UNSATISFIABLE);
}

static void test_range_ignored(void **state)
{
    (void)state;
    range_is(NULL, 100, MF_RANGE_NONE);
    range_is("", 100, MF_RANGE_NONE);
    range_is("bytes=", 100, MF_RANGE_NONE);
    range_is("bytes=-", 100, MF_RANGE_NONE);
    range_is("bytes=--5", 100, MF_RANGE_NONE);
    range_is("bytes=5", 100, MF_RANGE_NONE);
    range_is("0-5", 100, MF_RANGE_NONE);             /* no unit */
    range_is("=0-5", 100, MF_RANGE_NONE);            /* no unit */
    range_is("items=0-5", 100, MF_RANGE_NONE);       /* another unit */
    range_is("bytes 0-5", 100, MF_RANGE_NONE);       /* no '=' */
    range_is(" bytes=0-5", 100, MF_RANGE_NONE);      /* space before the unit */
    range_is("bytes=0-5,10-15", 100, MF_RANGE_NONE); /* several ranges */
    range_is("bytes=0-5, 10-15", 100, MF_RANGE_NONE);
    range_is("bytes=-5,-3", 100, MF_RANGE_NONE);
    range_is("bytes=0-5,", 100, MF_RANGE_NONE);
    range_is("bytes=5-3", 100, MF_RANGE_NONE);     /* last < first */
    range_is("bytes=500-300", 100, MF_RANGE_NONE); /* invalid before unsatisfiable */
    range_is("bytes=1-2-3", 100, MF_RANGE_NONE);
    range_is("bytes=0 -5", 100, MF_RANGE_NONE);
    range_is("bytes=0- 5", 100, MF_RANGE_NONE);
    range_is("bytes=0-5 ", 100, MF_RANGE_NONE);
    range_is("bytes=-5 ", 100, MF_RANGE_NONE);
    range_is("bytes=a-5", 100, MF_RANGE_NONE);
    range_is("bytes=0-b", 100, MF_RANGE_NONE);
    range_is("bytes=0x10-", 100, MF_RANGE_NONE);
    range_is("bytes=+5-", 100, MF_RANGE_NONE);
    range_is("bytes=-+5", 100, MF_RANGE_NONE);
    range_is("bytes=-5-", 100, MF_RANGE_NONE);
    range_is("bytes=1.5-", 100, MF_RANGE_NONE);
    /* more digits than a uint64_t holds: ignored, not wrapped around */
    range_is("bytes=18446744073709551616-", 100, MF_RANGE_NONE);
    range_is("bytes=99999999999999999999-", 100, MF_RANGE_NONE);
    range_is("bytes=0-99999999999999999999", 100, MF_RANGE_NONE);
    range_is("bytes=-99999999999999999999", 100, MF_RANGE_NONE);
    range_is("bytes=-123456789012345678901234567890", 100, MF_RANGE_NONE);
}

/* ---- JSON ------------------------------------------------------------- */

static enum mf_err json_try(const char *text, size_t max_depth, json_t **out, struct mf_diag *d)
{
    memset(d, 0, sizeof *d);
    *out = NULL;
    return mf_json_parse(text, strlen(text), max_depth, out, d);
}

/* Nesting of `depth` arrays around a 1. */
static char *json_nested(size_t depth, char open, char close)
{
    char *s = mf_xmalloc(2 * depth + 2);
    memset(s, open, depth);
    s[depth] = '1';
    memset(s + depth + 1, close, depth);
    s[2 * depth + 1] = '\0';
    return s;
}

static void test_json_valid(void **state)
{
    (void)state;
    struct mf_diag d;
    json_t *v;
    const char *text = "{\"name\": \"digits\", \"tags\": [1, 2, {\"x\": null}], \"ok\": true}";

    assert_int_equal(json_try(text, 32, &v, &d), MF_OK);
    assert_true(json_is_object(v));
    assert_string_equal(json_string_value(json_object_get(v, "name")), "digits");
    assert_int_equal(json_array_size(json_object_get(v, "tags")), 3);
    json_decref(v);

    assert_int_equal(json_try("[]", 32, &v, &d), MF_OK);
    assert_true(json_is_array(v));
    json_decref(v);

    /* whitespace around the one value is fine */
    assert_int_equal(json_try(" \n\t{}\r\n ", 32, &v, &d), MF_OK);
    json_decref(v);

    /* not NUL-terminated: only len bytes are read */
    char raw[] = {'{', '}', 'x', 'y'};
    v = NULL;
    assert_int_equal(mf_json_parse(raw, 2, 32, &v, &d), MF_OK);
    json_decref(v);
}

static void test_json_malformed(void **state)
{
    (void)state;
    struct mf_diag d;
    json_t *v;

    assert_int_equal(json_try("{\"a\": 1,}", 32, &v, &d), MF_ERR_PARSE);
    assert_null(v);
    assert_int_equal(d.err, MF_ERR_PARSE);
    assert_non_null(strstr(d.what, "line 1 column 9"));

    assert_int_equal(json_try("{\n  \"a\": tru\n}", 32, &v, &d), MF_ERR_PARSE);
    assert_non_null(strstr(d.what, "line 2 column "));
    assert_non_null(strstr(d.what, "invalid token"));

    /* exactly one value: trailing bytes are refused */
    assert_int_equal(json_try("{} {}", 32, &v, &d), MF_ERR_PARSE);
    assert_non_null(strstr(d.what, "line 1 column "));
    assert_int_equal(json_try("[1] x", 32, &v, &d), MF_ERR_PARSE);

    assert_int_equal(json_try("{\"a\": \"unterminated}", 32, &v, &d), MF_ERR_PARSE);
    assert_int_equal(json_try("{\"a\" 1}", 32, &v, &d), MF_ERR_PARSE);
    assert_int_equal(json_try("[1, 2", 32, &v, &d), MF_ERR_PARSE);
    assert_int_equal(json_try("{'a': 1}", 32, &v, &d), MF_ERR_PARSE);
    assert_int_equal(json_try("nope", 32, &v, &d), MF_ERR_PARSE);
    /* a scalar at the top is not a request body (jansson wants [ or {) */
    assert_int_equal(json_try("1", 32, &v, &d), MF_ERR_PARSE);
    assert_int_equal(json_try("\"s\"", 32, &v, &d), MF_ERR_PARSE);
    /* invalid UTF-8 and an escaped NUL */
    assert_int_equal(json_try("{\"a\": \"\xff\"}", 32, &v, &d), MF_ERR_PARSE);
    assert_int_equal(json_try("{\"a\": \"x\\u0000y\"}", 32, &v, &d), MF_ERR_PARSE);
    /* a raw NUL byte inside the body */
    const char nul[] = "{\"a\": 1}\0";
    v = NULL;
    assert_int_equal(mf_json_parse(nul, sizeof nul - 1, 32, &v, &d), MF_ERR_PARSE);
    assert_null(v);
}

static void test_json_empty(void **state)
{
    (void)state;
    struct mf_diag d;
    json_t *v;

    assert_int_equal(json_try("", 32, &v, &d), MF_ERR_PARSE);
    assert_null(v);
    assert_non_null(strstr(d.what, "empty"));
    /* only whitespace is malformed, not empty */
    assert_int_equal(json_try("   ", 32, &v, &d), MF_ERR_PARSE);
    assert_null(v);
}

static void test_json_depth_limit(void **state)
{
    (void)state;
    struct mf_diag d;
    json_t *v;
    char *s;

    for (size_t max = 1; max <= 40; max += 13) {
        s = json_nested(max, '[', ']');
        assert_int_equal(mf_json_depth(s, strlen(s), 1000), max);
        assert_int_equal(json_try(s, max, &v, &d), MF_OK);
        json_decref(v);
        free(s);

        s = json_nested(max + 1, '[', ']');
        assert_int_equal(json_try(s, max, &v, &d), MF_ERR_PARSE);
        assert_null(v);
        assert_non_null(strstr(d.what, "deeper"));
        free(s);
    }

    /* mixed objects and arrays, exactly 32 and 33 deep */
    char buf[512] = "";
    for (int i = 0; i < 16; i++)
        strcat(buf, "{\"k\":[");
    strcat(buf, "1");
    for (int i = 0; i < 16; i++)
        strcat(buf, "]}");
    assert_int_equal(mf_json_depth(buf, strlen(buf), 100), 32);
    assert_int_equal(json_try(buf, 32, &v, &d), MF_OK);
    json_decref(v);
    assert_int_equal(json_try(buf, 31, &v, &d), MF_ERR_PARSE);
    assert_null(v);

    /* siblings do not add up: depth is the deepest path */
    assert_int_equal(mf_json_depth("[[1],[2],[[3]]]", 15, 100), 3);
    assert_int_equal(json_try("[[1],[2],[[3]]]", 3, &v, &d), MF_OK);
    json_decref(v);

    /* the depth check runs before jansson, even on text that is not JSON */
    s = json_nested(20000, '[', '[');
    assert_int_equal(json_try(s, 32, &v, &d), MF_ERR_PARSE);
    assert_non_null(strstr(d.what, "deeper than 32"));
    free(s);
}

static void test_json_depth_strings(void **state)
{
    (void)state;
    struct mf_diag d;
    json_t *v;

    /* brackets inside strings do not count, nor do escaped quotes end them */
    const char *t1 = "{\"a\": \"[[[[{{{{\"}";
    assert_int_equal(mf_json_depth(t1, strlen(t1), 100), 1);
    assert_int_equal(json_try(t1, 1, &v, &d), MF_OK);
    json_decref(v);

    const char *t2 = "{\"a\": \"\\\"[[[[\\\"\", \"b\": [\"]]]]\"]}";
    assert_int_equal(mf_json_depth(t2, strlen(t2), 100), 2);
    assert_int_equal(json_try(t2, 2, &v, &d), MF_OK);
    assert_string_equal(json_string_value(json_object_get(v, "a")), "\"[[[[\"");
    json_decref(v);

    /* an escaped backslash before the closing quote does end the string */
    const char *t3 = "[\"\\\\\", [[1]]]";
    assert_int_equal(mf_json_depth(t3, strlen(t3), 100), 3);
    assert_int_equal(json_try(t3, 2, &v, &d), MF_ERR_PARSE);
    assert_int_equal(json_try(t3, 3, &v, &d), MF_OK);
    json_decref(v);

    /* keys are strings too */
    const char *t4 = "{\"[{[{\": {}}";
    assert_int_equal(mf_json_depth(t4, strlen(t4), 100), 2);

    /* closers without openers never go below zero */
    assert_int_equal(mf_json_depth("]]]][", 5, 100), 1);
    assert_int_equal(mf_json_depth("", 0, 100), 0);
    assert_int_equal(mf_json_depth("\"[[[", 4, 100), 0); /* unterminated string */

    /* it stops early once past `stop` and says so */
    char *s = json_nested(1000, '[', ']');
    size_t got = mf_json_depth(s, strlen(s), 10);
    assert_true(got > 10);
    assert_true(got <= 1000);
    free(s);
}

static void test_json_duplicates(void **state)
{
    (void)state;
    struct mf_diag d;
    json_t *v;

    assert_int_equal(json_try("{\"a\": 1, \"a\": 2}", 32, &v, &d), MF_ERR_PARSE);
    assert_null(v);
    assert_non_null(strstr(d.what, "duplicate"));
    assert_non_null(strstr(d.what, "line 1 column "));
    /* nested, and spelled differently but equal after unescaping */
    assert_int_equal(json_try("[{\"x\": {\"b\": 1, \"b\": 1}}]", 32, &v, &d), MF_ERR_PARSE);
    assert_int_equal(json_try("{\"a\": 1, \"\\u0061\": 2}", 32, &v, &d), MF_ERR_PARSE);
    /* the same key in sibling objects is fine */
    assert_int_equal(json_try("[{\"a\": 1}, {\"a\": 2}]", 32, &v, &d), MF_OK);
    json_decref(v);
}

static void test_json_only(void **state)
{
    (void)state;
    static const char *const allowed[] = {"name", "role", "max_uses", NULL};
    static const char *const none[] = {NULL};
    struct mf_diag d = {0};
    json_t *v;

    v = json_pack("{s:s, s:s}", "name", "ci", "role", "viewer");
    assert_int_equal(mf_json_only(v, allowed, &d), MF_OK);
    json_decref(v);

    v = json_object();
    assert_int_equal(mf_json_only(v, allowed, &d), MF_OK);
    assert_int_equal(mf_json_only(v, none, &d), MF_OK);
    json_decref(v);

    v = json_pack("{s:s, s:b}", "name", "ci", "admin", 1);
    assert_int_equal(mf_json_only(v, allowed, &d), MF_ERR_SCHEMA);
    assert_int_equal(d.err, MF_ERR_SCHEMA);
    assert_string_equal(d.where, "admin");
    assert_non_null(strstr(d.what, "unknown field \"admin\""));
    json_decref(v);

    /* prefixes and case are different keys */
    v = json_pack("{s:i}", "nam", 1);
    assert_int_equal(mf_json_only(v, allowed, &d), MF_ERR_SCHEMA);
    json_decref(v);
    v = json_pack("{s:i}", "Name", 1);
    assert_int_equal(mf_json_only(v, allowed, &d), MF_ERR_SCHEMA);
    json_decref(v);

    /* a long unknown key: the message stays bounded */
    char key[400];
    memset(key, 'k', sizeof key - 1);
    key[sizeof key - 1] = '\0';
    v = json_object();
    json_object_set_new(v, key, json_null());
    memset(&d, 0, sizeof d);
    assert_int_equal(mf_json_only(v, allowed, &d), MF_ERR_SCHEMA);
    assert_non_null(memchr(d.where, '\0', sizeof d.where));
    assert_non_null(memchr(d.what, '\0', sizeof d.what));
    assert_true(strlen(d.what) < 100);
    json_decref(v);

    /* not an object */
    v = json_array();
    assert_int_equal(mf_json_only(v, allowed, &d), MF_ERR_SCHEMA);
    assert_non_null(strstr(d.what, "object"));
    json_decref(v);
    v = json_string("name");
    assert_int_equal(mf_json_only(v, allowed, &d), MF_ERR_SCHEMA);
    json_decref(v);
    assert_int_equal(mf_json_only(NULL, allowed, &d), MF_ERR_SCHEMA);
}

/* ---- secrets, Bearer, roles ------------------------------------------- */

static bool b64url_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

static void test_secret_shape(void **state)
{
    (void)state;
    char a[MF_SECRET_LEN + 1], b[MF_SECRET_LEN + 1];
    uint8_t ha[MF_HASH_BYTES], hb[MF_HASH_BYTES], h[MF_HASH_BYTES];
    bool device = true;

    assert_int_equal(MF_SECRET_LEN, 47);
    mf_secret_new(MF_SECRET_API, a, ha);
    mf_secret_new(MF_SECRET_API, b, hb);
    assert_int_equal(strlen(a), 47);
    assert_memory_equal(a, "mft_", 4);
    for (size_t i = 4; i < MF_SECRET_LEN; i++)
        assert_true(b64url_char(a[i]));
    assert_string_not_equal(a, b);
    assert_memory_not_equal(ha, hb, MF_HASH_BYTES);

    /* the stored hash is BLAKE2b of the whole secret, and hashing it again agrees */
    mf_hash_bytes(h, a, MF_SECRET_LEN);
    assert_memory_equal(h, ha, MF_HASH_BYTES);
    memset(h, 0, sizeof h);
    assert_int_equal(mf_secret_hash(a, h, &device), MF_OK);
    assert_false(device);
    assert_memory_equal(h, ha, MF_HASH_BYTES);

    mf_secret_new(MF_SECRET_DEVICE, b, hb);
    assert_int_equal(strlen(b), 47);
    assert_memory_equal(b, "mfd_", 4);
    device = false;
    assert_int_equal(mf_secret_hash(b, h, &device), MF_OK);
    assert_true(device);
    assert_memory_equal(h, hb, MF_HASH_BYTES);

    /* many secrets: all distinct at least in their first bytes, all well-formed */
    for (int i = 0; i < 200; i++) {
        mf_secret_new(MF_SECRET_API, b, hb);
        assert_int_equal(strlen(b), MF_SECRET_LEN);
        assert_int_equal(mf_secret_hash(b, h, &device), MF_OK);
        assert_string_not_equal(a, b);
    }
}

static void test_secret_refused(void **state)
{
    (void)state;
    char good[MF_SECRET_LEN + 1], s[MF_SECRET_LEN + 8];
    uint8_t h[MF_HASH_BYTES], before[MF_HASH_BYTES];
    bool device = false;

    mf_secret_new(MF_SECRET_API, good, h);
    memset(h, 0x5a, sizeof h);
    memcpy(before, h, sizeof h);

    /* one character short and one long */
    snprintf(s, sizeof s, "%.*s", MF_SECRET_LEN - 1, good);
    assert_int_equal(mf_secret_hash(s, h, &device), MF_ERR_AUTH);
    snprintf(s, sizeof s, "%sA", good);
    assert_int_equal(mf_secret_hash(s, h, &device), MF_ERR_AUTH);
    assert_int_equal(mf_secret_hash("", h, &device), MF_ERR_AUTH);
    assert_int_equal(mf_secret_hash("mft_", h, &device), MF_ERR_AUTH);

    /* right length, wrong prefix */
    const char *prefixes[] = {"mfx_", "MFT_", "mft-", "xft_", "mfd-", "    "};
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
        memcpy(s, good, sizeof good);
        memcpy(s, prefixes[i], 4);
        assert_int_equal(mf_secret_hash(s, h, &device), MF_ERR_AUTH);
    }

    /* right length and prefix, a character outside base64url anywhere */
    const char bad[] = {'+', '/', '=', ' ', '.', '~', '\t', '\x80', '\xff'};
    for (size_t i = 0; i < sizeof bad; i++) {
        for (size_t at = 4; at < MF_SECRET_LEN; at += 21) {
            memcpy(s, good, sizeof good);
            s[at] = bad[i];
            assert_int_equal(mf_secret_hash(s, h, &device), MF_ERR_AUTH);
        }
    }
    memcpy(s, good, sizeof good);
    s[MF_SECRET_LEN - 1] = '=';
    assert_int_equal(mf_secret_hash(s, h, &device), MF_ERR_AUTH);

    /* nothing is written on refusal */
    assert_memory_equal(h, before, MF_HASH_BYTES);

    /* a hand-made secret of the right shape is accepted (the server only
     * checks shape; the store decides whether it exists) */
    memcpy(s, "mft_", 4);
    memset(s + 4, '_', MF_SECRET_LEN - 4);
    s[MF_SECRET_LEN] = '\0';
    assert_int_equal(mf_secret_hash(s, h, &device), MF_OK);
}

static void test_auth_bearer(void **state)
{
    (void)state;
    const char *secret = NULL, *h;

    h = "Bearer mft_abc";
    assert_int_equal(mf_auth_bearer(h, &secret), MF_OK);
    assert_ptr_equal(secret, h + 7); /* borrowed, points into the header */
    assert_string_equal(secret, "mft_abc");

    assert_int_equal(mf_auth_bearer("bearer x", &secret), MF_OK);
    assert_string_equal(secret, "x");
    assert_int_equal(mf_auth_bearer("BEARER x", &secret), MF_OK);
    assert_string_equal(secret, "x");
    assert_int_equal(mf_auth_bearer("Bearer   x", &secret), MF_OK);
    assert_string_equal(secret, "x");

    secret = "untouched";
    assert_int_equal(mf_auth_bearer("Basic x", &secret), MF_ERR_AUTH);
    assert_int_equal(mf_auth_bearer("Bearer ", &secret), MF_ERR_AUTH);
    assert_int_equal(mf_auth_bearer("Bearer    ", &secret), MF_ERR_AUTH);
    assert_int_equal(mf_auth_bearer("Bearer", &secret), MF_ERR_AUTH);
    assert_int_equal(mf_auth_bearer("Bearerx", &secret), MF_ERR_AUTH);
    assert_int_equal(mf_auth_bearer(" Bearer x", &secret), MF_ERR_AUTH);
    assert_int_equal(mf_auth_bearer("mft_abc", &secret), MF_ERR_AUTH);
    assert_int_equal(mf_auth_bearer("", &secret), MF_ERR_AUTH);
    assert_int_equal(mf_auth_bearer(NULL, &secret), MF_ERR_AUTH);
    assert_string_equal(secret, "untouched");
}

static void test_roles(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        enum mf_role role;
    } ok[] = {
        {"viewer", MF_ROLE_VIEWER},
        {"operator", MF_ROLE_OPERATOR},
        {"admin", MF_ROLE_ADMIN},
        {"enroll", MF_ROLE_ENROLL},
    };
    enum mf_role r;

    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        r = MF_ROLE_NONE;
        assert_int_equal(mf_role_parse(ok[i].name, &r), MF_OK);
        assert_int_equal(r, ok[i].role);
        assert_string_equal(mf_role_name(ok[i].role), ok[i].name);
    }
    assert_string_equal(mf_role_name(MF_ROLE_DEVICE), "device");
    assert_string_equal(mf_role_name(MF_ROLE_NONE), "none");
    assert_string_equal(mf_role_name(MF_ROLE_ADMIN | MF_ROLE_VIEWER), "none");

    /* a device is not a token role; names are exact */
    r = MF_ROLE_NONE;
    const char *bad[] = {"device", "none", "", "Admin", "admin ", "root", "view"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(mf_role_parse(bad[i], &r), MF_ERR_USAGE);
    assert_int_equal(r, MF_ROLE_NONE);

    /* the route sets: viewer < operator < admin; enroll and device stand apart */
    assert_true(MF_ALLOW_VIEWER & MF_ROLE_ADMIN);
    assert_true(MF_ALLOW_OPERATOR & MF_ROLE_ADMIN);
    assert_false(MF_ALLOW_OPERATOR & MF_ROLE_VIEWER);
    assert_false(MF_ALLOW_ADMIN & MF_ROLE_OPERATOR);
    assert_false((MF_ALLOW_VIEWER | MF_ALLOW_OPERATOR | MF_ALLOW_ADMIN) &
                 (MF_ROLE_ENROLL | MF_ROLE_DEVICE));
}

/* ---- config ------------------------------------------------------------ */

struct cfg_fixture {
    char *dir;
    char *file;
};

static int cfg_setup(void **state)
{
    struct cfg_fixture *f = mf_xcalloc(1, sizeof *f);
    f->dir = unit_tmpdir("server");
    f->file = mf_xasprintf("%s/server.conf", f->dir);
    *state = f;
    return 0;
}

static int cfg_teardown(void **state)
{
    struct cfg_fixture *f = *state;
    unit_tmpdir_free(f->dir);
    free(f->file);
    free(f);
    return 0;
}

static enum mf_err cfg_load(struct mf_server_config *c, struct mf_diag *d, int argc, char **argv)
{
    memset(c, 0, sizeof *c);
    memset(d, 0, sizeof *d);
    return mf_server_config_load(c, argc, argv, 1, d);
}

static void test_config_defaults(void **state)
{
    (void)state;
    struct mf_server_config c;
    struct mf_diag d;
    char *argv[] = {"serve", NULL};

    assert_int_equal(cfg_load(&c, &d, 1, argv), MF_OK);
    assert_string_equal(c.listen, "127.0.0.1:8080");
    assert_string_equal(c.mqtt_broker, "127.0.0.1:1883");
    assert_string_equal(c.log_level, "info");
    assert_int_equal(c.max_upload, UINT64_C(4) << 30);
    assert_int_equal(c.max_json_body, 64 * 1024);
    assert_int_equal(c.max_json_depth, 32);
    assert_int_equal(c.http_threads, 0);
    assert_true(mf_server_http_threads(&c) >= 1);
    assert_false(c.require_publisher_signature);
    assert_int_equal(c.publisher_keys.n, 0);
    mf_server_config_free(&c);
    mf_server_config_free(&c); /* freeing twice is harmless */
}

static void test_config_file_and_flags(void **state)
{
    struct cfg_fixture *f = *state;
    struct mf_server_config c;
    struct mf_diag d;

    write_text(f->file, "# a comment\n"
                        "listen = 0.0.0.0:9000\n"
                        "database_url = postgresql://postgres@127.0.0.1:5432/mf\n"
                        "\n"
                        "max_upload = 2G\n"
                        "http_threads = 8\n"
                        "publisher_keys = a.pub, b.pub\n"
                        "require_publisher_signature = yes\n"
                        "log_level = warn\n");

    /* the file alone */
    char *a1[] = {"serve", "--config", f->file, NULL};
    assert_int_equal(cfg_load(&c, &d, 3, a1), MF_OK);
    assert_string_equal(c.listen, "0.0.0.0:9000");
    assert_string_equal(c.database_url, "postgresql://postgres@127.0.0.1:5432/mf");
    assert_int_equal(c.max_upload, UINT64_C(2) << 30);
    assert_int_equal(c.http_threads, 8);
    assert_int_equal(c.publisher_keys.n, 2);
    assert_string_equal(c.publisher_keys.v[0], "a.pub");
    assert_string_equal(c.publisher_keys.v[1], "b.pub");
    assert_true(c.require_publisher_signature);
    assert_string_equal(c.log_level, "warn");
    assert_int_equal(c.max_json_depth, 32); /* untouched keys keep their default */
    mf_server_config_free(&c);

    /* flags override the file wherever they stand; '-' and '_' both work;
     * `--key value` and `--key=value` both work */
    char *a2[] = {"serve",
                  "--max-upload",
                  "1M",
                  "--config",
                  f->file,
                  "--http-threads=2",
                  "--max_json_depth",
                  "5",
                  "--log-level=debug",
                  "--listen",
                  "[::1]:0",
                  "--require-publisher-signature",
                  "off",
                  NULL};
    assert_int_equal(cfg_load(&c, &d, 13, a2), MF_OK);
    assert_int_equal(c.max_upload, 1024 * 1024);
    assert_int_equal(c.http_threads, 2);
    assert_int_equal(c.max_json_depth, 5);
    assert_string_equal(c.log_level, "debug");
    assert_string_equal(c.listen, "[::1]:0");
    assert_false(c.require_publisher_signature);
    assert_string_equal(c.database_url, "postgresql://postgres@127.0.0.1:5432/mf");
    mf_server_config_free(&c);

    /* a value that contains '=' after --key=: everything after the first '=' */
    char *a3[] = {"serve", "--database-url=host=/tmp dbname=mf", NULL};
    assert_int_equal(cfg_load(&c, &d, 2, a3), MF_OK);
    assert_string_equal(c.database_url, "host=/tmp dbname=mf");
    mf_server_config_free(&c);

    /* flags without any file */
    char *a4[] = {"serve", "--max-json-body", "1K", NULL};
    assert_int_equal(cfg_load(&c, &d, 3, a4), MF_OK);
    assert_int_equal(c.max_json_body, 1024);
    mf_server_config_free(&c);
}

static void test_config_refused(void **state)
{
    struct cfg_fixture *f = *state;
    struct mf_server_config c;
    struct mf_diag d;

    /* an unknown key in the file is a defect of the file, named with its line */
    write_text(f->file, "listen = 127.0.0.1:1\nlisten_port = 80\n");
    char *a1[] = {"serve", "--config", f->file, NULL};
    assert_int_equal(cfg_load(&c, &d, 3, a1), MF_ERR_SCHEMA);
    assert_int_equal(d.err, MF_ERR_SCHEMA);
    assert_non_null(strstr(d.where, ":2"));
    assert_non_null(strstr(d.what, "listen_port"));
    assert_null(c.listen); /* freed on error */

    /* out of range in the file */
    write_text(f->file, "http_threads = 257\n");
    assert_int_equal(cfg_load(&c, &d, 3, a1), MF_ERR_PARSE);
    assert_non_null(strstr(d.what, "http_threads"));
    write_text(f->file, "max_upload = 1\n");
    assert_int_equal(cfg_load(&c, &d, 3, a1), MF_ERR_PARSE);
    write_text(f->file, "max_json_depth = lots\n");
    assert_int_equal(cfg_load(&c, &d, 3, a1), MF_ERR_PARSE);
    write_text(f->file, "not a key value line\n");
    assert_int_equal(cfg_load(&c, &d, 3, a1), MF_ERR_PARSE);

    /* the file is missing */
    char *missing = mf_xasprintf("%s/nope.conf", f->dir);
    char *a2[] = {"serve", "--config", missing, NULL};
    assert_int_not_equal(cfg_load(&c, &d, 3, a2), MF_OK);
    assert_null(c.listen);
    free(missing);

    /* an unknown flag is a usage error */
    char *a3[] = {"serve", "--listen-port", "80", NULL};
    assert_int_equal(cfg_load(&c, &d, 3, a3), MF_ERR_USAGE);
    assert_non_null(strstr(d.what, "listen_port"));
    assert_null(c.listen);
    char *a4[] = {"serve", "--max-upload", "1M", "--bogus=1", NULL};
    assert_int_equal(cfg_load(&c, &d, 4, a4), MF_ERR_USAGE);
    assert_null(c.listen);

    /* out of range and malformed as flags */
    char *a5[] = {"serve", "--http-threads", "-1", NULL};
    assert_int_equal(cfg_load(&c, &d, 3, a5), MF_ERR_PARSE);
    char *a6[] = {"serve", "--http-threads=257", NULL};
    assert_int_equal(cfg_load(&c, &d, 2, a6), MF_ERR_PARSE);
    char *a7[] = {"serve", "--max-json-depth", "1", NULL};
    assert_int_equal(cfg_load(&c, &d, 3, a7), MF_ERR_PARSE);
    char *a8[] = {"serve", "--max-upload", "2T", NULL};
    assert_int_equal(cfg_load(&c, &d, 3, a8), MF_ERR_PARSE);
    char *a9[] = {"serve", "--require-publisher-signature", "maybe", NULL};
    assert_int_equal(cfg_load(&c, &d, 3, a9), MF_ERR_PARSE);
    char *a10[] = {"serve", "--http-threads", "4x", NULL};
    assert_int_equal(cfg_load(&c, &d, 3, a10), MF_ERR_PARSE);

    /* shapes of arguments that are not flags */
    char *b1[] = {"serve", "stray", NULL};
    assert_int_equal(cfg_load(&c, &d, 2, b1), MF_ERR_USAGE);
    char *b2[] = {"serve", "-listen", "x:1", NULL};
    assert_int_equal(cfg_load(&c, &d, 3, b2), MF_ERR_USAGE);
    char *b3[] = {"serve", "--", NULL};
    assert_int_equal(cfg_load(&c, &d, 2, b3), MF_ERR_USAGE);
    char *b4[] = {"serve", "--=x", NULL};
    assert_int_equal(cfg_load(&c, &d, 2, b4), MF_ERR_USAGE);
    char *b5[] = {"serve", "--listen", NULL}; /* no value */
    assert_int_equal(cfg_load(&c, &d, 2, b5), MF_ERR_USAGE);
    char *b6[] = {"serve", "--config", NULL}; /* no file name */
    assert_int_equal(cfg_load(&c, &d, 2, b6), MF_ERR_USAGE);
    char long_flag[200];
    memset(long_flag, 'x', sizeof long_flag - 1);
    long_flag[0] = long_flag[1] = '-';
    long_flag[sizeof long_flag - 1] = '\0';
    char *b7[] = {"serve", long_flag, "1", NULL};
    assert_int_equal(cfg_load(&c, &d, 3, b7), MF_ERR_USAGE);
    assert_null(c.listen);
}

static void test_split_hostport(void **state)
{
    (void)state;
    static const struct {
        const char *in, *host;
        int port;
    } ok[] = {
        {"127.0.0.1:8080", "127.0.0.1", 8080},
        {"[::1]:80", "::1", 80},
        {"[fe80::1%eth0]:443", "fe80::1%eth0", 443},
        {"localhost:0", "localhost", 0},
        {"h:65535", "h", 65535},
        {"example.org:1883", "example.org", 1883},
    };
    static const char *const bad[] = {
        "host",  ":80", "h:99999", "h:65536", "h:",        "h:-1",    "h:80x",
        "h:x80", "",    "[]:80",   "[::1]",   "[::1]x:80", "[::1:80", "h:8 0",
    };
    char *host;
    int port;

    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        host = NULL;
        port = -1;
        if (mf_split_hostport(ok[i].in, &host, &port) != MF_OK)
            fail_msg("'%s' was refused", ok[i].in);
        assert_string_equal(host, ok[i].host);
        assert_int_equal(port, ok[i].port);
        free(host);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        host = NULL;
        port = -1;
        if (mf_split_hostport(bad[i], &host, &port) != MF_ERR_USAGE)
            fail_msg("'%s' was accepted as host '%s' port %d", bad[i], host ? host : "", port);
        assert_null(host);
        assert_int_equal(port, -1);
    }
}

/* ---- blobs ------------------------------------------------------------- */

#define ID_A                                                                                       \
    "ab"                                                                                           \
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd"
#define ID_B                                                                                       \
    "00"                                                                                           \
    "fedcba9876543210fedcba9876543210fedcba9876543210fedcba98765432"

static void test_blobs_id(void **state)
{
    (void)state;
    char s[80];

    assert_int_equal(strlen(ID_A), 64);
    assert_true(mf_blobs_id_ok(ID_A));
    assert_true(mf_blobs_id_ok(ID_B));
    memset(s, '0', 64);
    s[64] = '\0';
    assert_true(mf_blobs_id_ok(s));
    assert_false(mf_blobs_id_ok(""));
    s[63] = '\0';
    assert_false(mf_blobs_id_ok(s)); /* 63 */
    s[63] = '0';
    s[64] = '0';
    s[65] = '\0';
    assert_false(mf_blobs_id_ok(s)); /* 65 */
    const char *bad[] = {"A", "g", "G", "/", ".", " ", "-", "\xc3"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        for (size_t at = 0; at < 64; at += 31) {
            memcpy(s, ID_A, 65);
            s[at] = bad[i][0];
            assert_false(mf_blobs_id_ok(s));
        }
    }
    assert_false(mf_blobs_id_ok("../../../../etc/passwd"));
}

static void test_blobs_open_cleans_tmp(void **state)
{
    (void)state;
    char *dir = unit_tmpdir("server");
    char *tmp = mf_xasprintf("%s/tmp", dir);
    char *blobs = mf_xasprintf("%s/blobs", dir);
    char *p;
    struct mf_blobs b = {0};
    struct mf_diag d = {0};
    struct stat st;

    /* first open creates both folders */
    assert_int_equal(mf_blobs_open(&b, dir, true, &d), MF_OK);
    assert_int_equal(stat(blobs, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(stat(tmp, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    mf_blobs_close(&b);
    assert_null(b.dir);
    assert_null(b.tmp);

    /* leftovers: files, a dotfile, a folder with contents, a symlink out */
    p = mf_xasprintf("%s/upload-abc123", tmp);
    write_text(p, "half an upload");
    free(p);
    p = mf_xasprintf("%s/.hidden", tmp);
    write_text(p, "x");
    free(p);
    p = mf_xasprintf("%s/sub", tmp);
    assert_int_equal(mkdir(p, 0700), 0);
    free(p);
    p = mf_xasprintf("%s/sub/inner", tmp);
    write_text(p, "y");
    free(p);
    char *outside = mf_xasprintf("%s/keep-me", dir);
    write_text(outside, "outside tmp");
    p = mf_xasprintf("%s/link", tmp);
    assert_int_equal(symlink(outside, p), 0);
    free(p);
    /* a committed blob must survive the restart */
    char *blob_sub = mf_xasprintf("%s/ab", blobs);
    assert_int_equal(mkdir(blob_sub, 0750), 0);
    char *blob = mf_xasprintf("%s/%s.mfpkg", blob_sub, ID_A);
    write_text(blob, "stored");
    assert_int_equal(count_entries(tmp), 4);
    /* leftovers are old; an upload written just now (another server's) is not */
    const char *old_names[] = {"upload-abc123", ".hidden", "sub", "link"};
    for (size_t i = 0; i < 4; i++) {
        struct timespec ts[2] = {{time(NULL) - 7200, 0}, {time(NULL) - 7200, 0}};
        p = mf_xasprintf("%s/%s", tmp, old_names[i]);
        assert_int_equal(utimensat(AT_FDCWD, p, ts, AT_SYMLINK_NOFOLLOW), 0);
        free(p);
    }
    p = mf_xasprintf("%s/upload-fresh", tmp);
    write_text(p, "in flight");
    free(p);
    assert_int_equal(mf_blobs_open(&b, dir, false, &d), MF_OK); /* --check-config: no sweep */
    mf_blobs_close(&b);
    assert_int_equal(count_entries(tmp), 5);

    mf_log_set_level(MF_LOG_ERROR); /* the "removed N" line is noise here */
    assert_int_equal(mf_blobs_open(&b, dir, true, &d), MF_OK);
    mf_log_set_level(MF_LOG_INFO);
    assert_int_equal(count_entries(tmp), 1);
    assert_string_equal(read_text(outside), "outside tmp");
    assert_string_equal(read_text(blob), "stored");
    char *path = mf_blobs_path(&b, ID_A);
    assert_string_equal(path, blob);
    free(path);
    mf_blobs_close(&b);

    /* data_dir that does not exist: an I/O error, nothing leaked */
    char *gone = mf_xasprintf("%s/missing/deeper", dir);
    assert_int_equal(mf_blobs_open(&b, gone, true, &d), MF_ERR_IO);
    assert_null(b.dir);
    free(gone);

    free(blob);
    free(blob_sub);
    free(outside);
    free(blobs);
    free(tmp);
    unit_tmpdir_free(dir);
}

static char *blobs_upload(const struct mf_blobs *b, const char *content)
{
    struct mf_diag d = {0};
    struct stat st;
    char *path = NULL;
    int fd = -1;

    assert_int_equal(mf_blobs_temp(b, &path, &fd, &d), MF_OK);
    assert_non_null(path);
    assert_true(fd >= 0);
    assert_int_equal(strncmp(path, b->tmp, strlen(b->tmp)), 0);
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, 0);
    assert_int_equal(mf_fs_write_all(fd, content, strlen(content)), MF_OK);
    assert_int_equal(close(fd), 0);
    return path;
}

static void test_blobs_commit(void **state)
{
    (void)state;
    char *dir = unit_tmpdir("server");
    struct mf_blobs b = {0};
    struct mf_diag d = {0};
    struct stat st;
    bool created = false;
    char *t1, *t2, *t3, *dst;

    assert_int_equal(mf_blobs_open(&b, dir, true, &d), MF_OK);
    dst = mf_blobs_path(&b, ID_A);

    /* two temp files at once have different names */
    t1 = blobs_upload(&b, "first bytes");
    t2 = blobs_upload(&b, "other bytes");
    assert_string_not_equal(t1, t2);

    assert_int_equal(mf_blobs_commit(&b, t1, ID_A, &created, &d), MF_OK);
    assert_true(created);
    assert_int_not_equal(access(t1, F_OK), 0); /* renamed away */
    assert_int_equal(stat(dst, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0640);
    assert_string_equal(read_text(dst), "first bytes");

    /* the same id again: nothing replaced, the temp file removed */
    created = true;
    assert_int_equal(mf_blobs_commit(&b, t2, ID_A, &created, &d), MF_OK);
    assert_false(created);
    assert_int_not_equal(access(t2, F_OK), 0);
    assert_string_equal(read_text(dst), "first bytes");

    /* another id in another folder */
    t3 = blobs_upload(&b, "");
    assert_int_equal(mf_blobs_commit(&b, t3, ID_B, &created, &d), MF_OK);
    assert_true(created);
    char *dst_b = mf_blobs_path(&b, ID_B);
    assert_int_equal(stat(dst_b, &st), 0);
    assert_int_equal(st.st_size, 0);
    assert_int_equal(count_entries(b.tmp), 0);

    /* a temp file that is gone: an error, and nothing stored */
    char *ghost = mf_xasprintf("%s/upload-gone", b.tmp);
    mf_blobs_remove(&b, ID_B);
    assert_int_not_equal(mf_blobs_commit(&b, ghost, ID_B, &created, &d), MF_OK);
    assert_false(created);
    assert_int_not_equal(access(dst_b, F_OK), 0);
    free(ghost);

    /* remove: gone, the other blob stays; removing twice is harmless */
    mf_blobs_remove(&b, ID_A);
    assert_int_not_equal(access(dst, F_OK), 0);
    mf_blobs_remove(&b, ID_A);

    /* committing after a remove creates it again */
    free(t1);
    t1 = blobs_upload(&b, "again");
    assert_int_equal(mf_blobs_commit(&b, t1, ID_A, &created, &d), MF_OK);
    assert_true(created);
    assert_string_equal(read_text(dst), "again");

    free(dst_b);
    free(t1);
    free(t2);
    free(t3);
    free(dst);
    mf_blobs_close(&b);
    unit_tmpdir_free(dir);
}

/* --check-config refuses what serve would refuse: a host name for listen. */
static void test_config_check_listen(void **state)
{
    struct mf_server_config c;
    struct mf_diag d = {0};
    (void)state;
    mf_cfg_defaults(mf_server_config_table, &c);
    assert_int_equal(mf_cfg_set(mf_server_config_table, &c, "listen", "localhost:8080", &d), MF_OK);
    assert_int_equal(mf_server_config_check(&c, &d), MF_ERR_SCHEMA);
    assert_string_equal(d.where, "listen");
    assert_non_null(strstr(d.what, "numeric"));
    assert_int_equal(mf_cfg_set(mf_server_config_table, &c, "listen", "127.0.0.1:x", &d), MF_OK);
    assert_int_equal(mf_server_config_check(&c, &d), MF_ERR_SCHEMA);
    mf_server_config_free(&c);
}

int main(void)
{
    mf_crypto_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_range_satisfiable),
        cmocka_unit_test(test_range_unsatisfiable),
        cmocka_unit_test(test_range_ignored),
        cmocka_unit_test(test_json_valid),
        cmocka_unit_test(test_json_malformed),
        cmocka_unit_test(test_json_empty),
        cmocka_unit_test(test_json_depth_limit),
        cmocka_unit_test(test_json_depth_strings),
        cmocka_unit_test(test_json_duplicates),
        cmocka_unit_test(test_json_only),
        cmocka_unit_test(test_secret_shape),
        cmocka_unit_test(test_secret_refused),
        cmocka_unit_test(test_auth_bearer),
        cmocka_unit_test(test_roles),
        cmocka_unit_test(test_config_defaults),
        cmocka_unit_test_setup_teardown(test_config_file_and_flags, cfg_setup, cfg_teardown),
        cmocka_unit_test_setup_teardown(test_config_refused, cfg_setup, cfg_teardown),
        cmocka_unit_test(test_split_hostport),
        cmocka_unit_test(test_config_check_listen),
        cmocka_unit_test(test_blobs_id),
        cmocka_unit_test(test_blobs_open_cleans_tmp),
        cmocka_unit_test(test_blobs_commit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
