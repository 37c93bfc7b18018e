/* test_telemetry.c — desired-state messages: canonical format, signing and
 * every refusal a device must make (forged, replayed, misaddressed, mangled,
 * oversized), each with its own code. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/err.h"
#include "common/encode.h"
#include "common/mem.h"
#include "packaging/key.h"
#include "packaging/sig.h"
#include "telemetry/desired.h"

#define PKG_A "1111111111111111111111111111111111111111111111111111111111111111"
#define PKG_B "2222222222222222222222222222222222222222222222222222222222222222"

struct fx {
    struct mf_key_secret server, stranger;
    struct mf_keyring trust;
    struct mf_desired d;
    struct mf_desired_model models[2];
};

static int fx_setup(void **state)
{
    struct fx *f = mf_xcalloc(1, sizeof *f);
    uint8_t seed[crypto_sign_SEEDBYTES];
    memset(seed, 7, sizeof seed);
    mf_key_from_seed(&f->server, seed);
    memset(seed, 9, sizeof seed);
    mf_key_from_seed(&f->stranger, seed);
    mf_keyring_add(&f->trust, &f->server.pub);
    /* given out of order: the format sorts by name */
    f->models[0] = (struct mf_desired_model){.name = "keyword", .version = "0.9.0", .size = 5000};
    memcpy(f->models[0].package, PKG_B, sizeof PKG_B);
    f->models[1] = (struct mf_desired_model){.name = "digits", .version = "1.1.0", .size = 111616};
    memcpy(f->models[1].package, PKG_A, sizeof PKG_A);
    f->d = (struct mf_desired){.device = "pi-0042",
                               .seq = 17,
                               .issued = 1795000000,
                               .rollout = 3,
                               .models = f->models,
                               .n_models = 2};
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    struct fx *f = *state;
    mf_keyring_free(&f->trust);
    free(f);
    return 0;
}

static void test_format_is_canonical(void **state)
{
    struct fx *f = *state;
    size_t len;
    char *json = mf_desired_format(&f->d, &len);
    assert_string_equal(json, "{\"device\":\"pi-0042\",\"seq\":17,\"issued\":\"2026-11-18T"
                              "11:06:40Z\",\"models\":[{\"name\":\"digits\",\"version\":\"1.1.0\","
                              "\"package\":\"" PKG_A "\",\"size\":111616},{\"name\":\"keyword\","
                              "\"version\":\"0.9.0\",\"package\":\"" PKG_B
                              "\",\"size\":5000}],\"rollout\":3}");
    struct mf_desired *back = NULL;
    struct mf_diag diag = {0};
    assert_int_equal(mf_desired_parse((const uint8_t *)json, len, &back, &diag), MF_OK);
    size_t len2;
    char *again = mf_desired_format(back, &len2);
    assert_string_equal(again, json);
    assert_int_equal(back->n_models, 2);
    assert_string_equal(back->models[0].name, "digits");
    assert_int_equal(back->seq, 17);
    mf_desired_free(back);
    free(again);
    free(json);
}

static void test_sign_and_open(void **state)
{
    struct fx *f = *state;
    struct mf_desired *got = NULL;
    struct mf_diag diag = {0};
    char signer[MF_KEY_ID_LEN + 1] = "";
    size_t len;
    char *msg = mf_desired_sign(&f->d, &f->server, &len);

    assert_int_equal(strncmp(msg, MF_DESIRED_MAGIC "\ned25519 ", strlen(MF_DESIRED_MAGIC) + 9), 0);
    assert_int_equal(
        mf_desired_open((uint8_t *)msg, len, &f->trust, "pi-0042", 16, &got, signer, &diag), MF_OK);
    assert_string_equal(signer, f->server.pub.id);
    assert_int_equal(got->seq, 17);
    assert_int_equal(got->rollout, 3);
    assert_string_equal(got->models[1].package, PKG_B);
    mf_desired_free(got);
    free(msg);
}

/* Each refusal: the code, and nothing handed out. */
static void expect_refused(struct fx *f, const char *msg, size_t len, const char *device,
                           uint64_t last, enum mf_err want, const char *what_has)
{
    struct mf_desired *got = NULL;
    struct mf_diag diag = {0};
    assert_int_equal(
        mf_desired_open((const uint8_t *)msg, len, &f->trust, device, last, &got, NULL, &diag),
        want);
    assert_null(got);
    if (what_has && !strstr(diag.what, what_has)) {
        print_error("diag '%s' lacks '%s'\n", diag.what, what_has);
        fail();
    }
}

static void test_refusals(void **state)
{
    struct fx *f = *state;
    size_t len;
    char *msg = mf_desired_sign(&f->d, &f->server, &len);

    /* replayed: the same seq, and an older one */
    expect_refused(f, msg, len, "pi-0042", 17, MF_ERR_STALE, "not above the last one applied");
    expect_refused(f, msg, len, "pi-0042", 99, MF_ERR_STALE, NULL);
    /* addressed to another device */
    expect_refused(f, msg, len, "pi-0043", 0, MF_ERR_WRONG_TARGET, "pi-0042");
    /* one byte of the JSON changed: the signature no longer holds */
    char *t = mf_xstrdup(msg);
    char *seq = strstr(t, "\"seq\":17");
    seq[7] = '9';
    expect_refused(f, t, len, "pi-0042", 0, MF_ERR_BAD_SIGNATURE, NULL);
    free(t);
    /* signed by a key this device does not trust */
    size_t slen;
    char *s = mf_desired_sign(&f->d, &f->stranger, &slen);
    expect_refused(f, s, slen, "pi-0042", 0, MF_ERR_UNKNOWN_KEY, f->stranger.pub.id);
    free(s);
    /* a manifest signature over the same bytes (another context) does not pass */
    size_t jlen;
    char *json = mf_desired_format(&f->d, &jlen);
    struct mf_sigset set = {0};
    mf_sigset_sign(&set, (uint8_t *)json, jlen, &f->server);
    char b64[128];
    mf_base64_encode(b64, sizeof b64, set.v[0].sig, sizeof set.v[0].sig);
    char *cross =
        mf_xasprintf("%s\ned25519 %s %s\n%s", MF_DESIRED_MAGIC, f->server.pub.id, b64, json);
    expect_refused(f, cross, strlen(cross), "pi-0042", 0, MF_ERR_BAD_SIGNATURE, NULL);
    free(cross);
    free(json);
    /* layout */
    expect_refused(f, "", 0, "pi-0042", 0, MF_ERR_LAYOUT, NULL);
    expect_refused(f, msg + 1, len - 1, "pi-0042", 0, MF_ERR_LAYOUT, NULL);
    char *noline = mf_xasprintf("%s\n{}", MF_DESIRED_MAGIC);
    expect_refused(f, noline, strlen(noline), "pi-0042", 0, MF_ERR_LAYOUT, NULL);
    free(noline);
    char *badsig = mf_xasprintf("%s\ned25519 %s AAAA\n{}", MF_DESIRED_MAGIC, f->server.pub.id);
    expect_refused(f, badsig, strlen(badsig), "pi-0042", 0, MF_ERR_LAYOUT, NULL);
    free(badsig);
    /* oversized: refused before anything else is looked at */
    char *big = mf_xcalloc(MF_DESIRED_MAX + 2, 1);
    memset(big, 'x', MF_DESIRED_MAX + 1);
    expect_refused(f, big, MF_DESIRED_MAX + 1, "pi-0042", 0, MF_ERR_TOO_LARGE, NULL);
    free(big);
    free(msg);
}

/* Signed but malformed bodies: the signature holds, the JSON is refused. */
static void test_signed_but_malformed(void **state)
{
    struct fx *f = *state;
    static const struct {
        const char *json;
        enum mf_err err;
        const char *where;
    } cases[] = {
        {"{\"device\":\"pi-0042\",\"seq\":1,\"issued\":\"2026-11-22T00:00:00Z\",\"models\":[],"
         "\"extra\":1}",
         MF_ERR_SCHEMA, "extra"},
        {"{\"device\":\"pi-0042\",\"seq\":0,\"issued\":\"2026-11-22T00:00:00Z\",\"models\":[]}",
         MF_ERR_SCHEMA, "seq"},
        {"{\"device\":\"pi-0042\",\"seq\":1,\"models\":[]}", MF_ERR_SCHEMA, "issued"},
        {"{\"device\":\"../x\",\"seq\":1,\"issued\":\"2026-11-22T00:00:00Z\",\"models\":[]}",
         MF_ERR_SCHEMA, "device"},
        {"{\"device\":\"pi-0042\",\"seq\":1,\"issued\":\"2026-11-22T00:00:00Z\",\"models\":[{"
         "\"name\":\"d\",\"version\":\"1.0.0\",\"package\":\"ABC\",\"size\":1}]}",
         MF_ERR_SCHEMA, "models[0]."},
        {"{\"device\":\"pi-0042\",\"seq\":1,\"issued\":\"2026-11-22T00:00:00Z\",\"models\":[{"
         "\"name\":\"d\",\"version\":\"1.0.0\",\"package\":\"" PKG_A "\",\"size\":1},{"
         "\"name\":\"d\",\"version\":\"2.0.0\",\"package\":\"" PKG_B "\",\"size\":1}]}",
         MF_ERR_SCHEMA, "models"},
        {"{\"device\":\"pi-0042\",\"seq\":1,\"issued\":\"2026-11-22T00:00:00Z\",\"models\":[{"
         "\"name\":\"d\",\"version\":\"x\",\"package\":\"" PKG_A "\",\"size\":1}]}",
         MF_ERR_SCHEMA, "models[0]."},
        {"{\"device\":", MF_ERR_PARSE, ""},
        {"[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]", MF_ERR_PARSE, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* sign the raw bytes as the server would */
        const char *json = cases[i].json;
        size_t jlen = strlen(json), clen = strlen(MF_DESIRED_CONTEXT);
        uint8_t *m = mf_xmalloc(clen + jlen);
        memcpy(m, MF_DESIRED_CONTEXT, clen);
        memcpy(m + clen, json, jlen);
        uint8_t sig[crypto_sign_BYTES];
        crypto_sign_detached(sig, NULL, m, clen + jlen, f->server.sk);
        free(m);
        char b64[128];
        mf_base64_encode(b64, sizeof b64, sig, sizeof sig);
        char *msg =
            mf_xasprintf("%s\ned25519 %s %s\n%s", MF_DESIRED_MAGIC, f->server.pub.id, b64, json);
        struct mf_desired *got = NULL;
        struct mf_diag diag = {0};
        enum mf_err rc = mf_desired_open((uint8_t *)msg, strlen(msg), &f->trust, "pi-0042", 0, &got,
                                         NULL, &diag);
        if (rc != cases[i].err || !strstr(diag.where, cases[i].where)) {
            print_error("case %zu: got %s at '%s' (%s), want %s at '%s'\n", i, mf_errname(rc),
                        diag.where, diag.what, mf_errname(cases[i].err), cases[i].where);
            fail();
        }
        assert_null(got);
        free(msg);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_format_is_canonical, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sign_and_open, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_refusals, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_signed_but_malformed, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
