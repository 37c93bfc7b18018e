/* test_packaging.c — packaging/: keys and key files, signatures, manifest
 * validation and versioning, .npy headers, and pack/sign/verify/extract on the
 * real fixture models (determinism, re-signing, tamper refusal). */
#include <fcntl.h>
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
#include "common/fs.h"
#include "common/hash.h"
#include "common/mem.h"
#include "packaging/key.h"
#include "packaging/manifest.h"
#include "packaging/npy.h"
#include "packaging/pack.h"
#include "packaging/pkg.h"
#include "packaging/sig.h"

static char tmpdir[] = "/tmp/mf-pkgtest-XXXXXX";

static char *tpath(const char *name)
{
    return mf_xasprintf("%s/%s", tmpdir, name);
}

static void seed_key(struct mf_key_secret *k, uint8_t b)
{
    uint8_t seed[crypto_sign_SEEDBYTES];
    memset(seed, b, sizeof seed);
    mf_key_from_seed(k, seed);
}

static struct mf_buf slurp(const char *path)
{
    struct mf_buf b;
    struct mf_diag d;
    assert_int_equal(mf_fs_read_file(path, 1u << 26, &b, &d), MF_OK);
    return b;
}

/* ---- keys ---- */

static void test_key_roundtrip(void **state)
{
    (void)state;
    struct mf_key_secret k, k2;
    struct mf_key_pub p;
    struct mf_diag d;
    mf_key_generate(&k);
    assert_int_equal(strlen(k.pub.id), MF_KEY_ID_LEN);
    char *st = mf_key_secret_format(&k), *pt = mf_key_pub_format(&k.pub);
    assert_int_equal(mf_key_secret_parse(st, &k2, &d), MF_OK);
    assert_memory_equal(k.sk, k2.sk, sizeof k.sk);
    assert_int_equal(mf_key_pub_parse(pt, &p, &d), MF_OK);
    assert_memory_equal(p.pk, k.pub.pk, sizeof p.pk);
    assert_string_equal(p.id, k.pub.id);
    /* A wrong key id, magic, version or encoding is refused. */
    char *bad = mf_xstrdup(pt);
    char *id = strstr(bad, "key-id: ") + 8;
    id[0] = id[0] == '0' ? '1' : '0';
    assert_int_equal(mf_key_pub_parse(bad, &p, &d), MF_ERR_KEY);
    assert_non_null(strstr(d.what, "does not match the key"));
    free(bad);
    bad = mf_xstrdup(pt);
    bad[strlen("modelfleet-public-key v")] = '2';
    assert_int_equal(mf_key_pub_parse(bad, &p, &d), MF_ERR_VERSION);
    assert_int_equal(mf_key_pub_parse(st, &p, &d), MF_ERR_KEY); /* a secret is not a public */
    assert_int_equal(mf_key_secret_parse(pt, &k2, &d), MF_ERR_KEY);
    assert_int_equal(mf_key_pub_parse("", &p, &d), MF_ERR_KEY);
    free(bad);
    free(st);
    free(pt);
}

static void test_key_files(void **state)
{
    (void)state;
    struct mf_key_secret k, k2;
    struct mf_key_pub p;
    struct mf_diag d;
    struct stat sb;
    char *prefix = tpath("signer");
    char *skp = tpath("signer.key"), *pkp = tpath("signer.pub");
    mf_key_generate(&k);
    assert_int_equal(mf_key_write_pair(&k, prefix, &d), MF_OK);
    assert_int_equal(stat(skp, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_equal(mf_key_secret_load(skp, &k2, &d), MF_OK);
    assert_int_equal(mf_key_pub_load(pkp, &p, &d), MF_OK);
    assert_string_equal(k2.pub.id, p.id);
    /* Never overwrites an existing secret key. */
    assert_int_equal(mf_key_write_pair(&k, prefix, &d), MF_ERR_EXISTS);
    /* A secret key others can read is refused. */
    assert_int_equal(chmod(skp, 0644), 0);
    assert_int_equal(mf_key_secret_load(skp, &k2, &d), MF_ERR_KEY);
    assert_non_null(strstr(d.what, "accessible by others (mode 0644)"));
    /* A secret key whose stored public half was altered is refused. */
    char *text = mf_key_secret_format(&k);
    struct mf_key_secret k3 = k;
    k3.sk[40] ^= 1;
    char *bad = mf_key_secret_format(&k3);
    assert_int_equal(mf_key_secret_parse(bad, &k2, &d), MF_ERR_KEY);
    assert_non_null(strstr(d.what, "public half"));
    assert_int_equal(mf_key_secret_parse(text, &k2, &d), MF_OK);
    free(text);
    free(bad);
    free(prefix);
    free(skp);
    free(pkp);
}

/* ---- signatures ---- */

static void test_sigset(void **state)
{
    (void)state;
    struct mf_key_secret a, b;
    struct mf_sigset s = {.n = 0}, back;
    struct mf_keyring ring = {0};
    struct mf_diag d;
    char signer[MF_KEY_ID_LEN + 1];
    const uint8_t *msg = (const uint8_t *)"{\"manifest\": 1}";
    size_t len = strlen((const char *)msg);
    seed_key(&a, 1);
    seed_key(&b, 2);

    assert_int_equal(mf_sigset_parse((const uint8_t *)"", 0, &back, &d), MF_OK);
    assert_int_equal(back.n, 0);
    assert_int_equal(mf_sigset_check(&back, msg, len, &ring, signer, &d), MF_ERR_UNSIGNED);

    mf_sigset_sign(&s, msg, len, &a);
    mf_sigset_sign(&s, msg, len, &a); /* re-sign replaces */
    assert_int_equal(s.n, 1);
    mf_sigset_sign(&s, msg, len, &b);
    assert_int_equal(s.n, 2);
    char *text = mf_sigset_format(&s);
    assert_int_equal(mf_sigset_parse((const uint8_t *)text, strlen(text), &back, &d), MF_OK);
    assert_int_equal(back.n, 2);
    assert_int_equal(mf_sigset_check(&back, msg, len, &ring, signer, &d), MF_ERR_UNKNOWN_KEY);
    assert_non_null(strstr(d.what, a.pub.id));
    mf_keyring_add(&ring, &b.pub);
    assert_int_equal(mf_sigset_check(&back, msg, len, &ring, signer, &d), MF_OK);
    assert_string_equal(signer, b.pub.id);
    /* One altered byte of the message: a trusted key's signature fails. */
    assert_int_equal(
        mf_sigset_check(&back, (const uint8_t *)"{\"manifest\": 2}", len, &ring, signer, &d),
        MF_ERR_BAD_SIGNATURE);
    /* Without the context string the same signature does not verify. */
    assert_int_not_equal(crypto_sign_verify_detached(back.v[1].sig, msg, len, b.pub.pk), 0);
    free(text);

    static const char *const bad[] = {
        "modelfleet-signature v1\ned25519 0011223344556677\n",
        "modelfleet-signature v1\nrsa 0011223344556677 AAAA\n",
        "modelfleet-signature v1\ned25519 00112233 AAAA\n",
        "modelfleet-signature v1\ned25519  0011223344556677 AAAA\n",
        "signature\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(mf_sigset_parse((const uint8_t *)bad[i], strlen(bad[i]), &back, &d),
                         MF_ERR_PARSE);
    static const char crlf[] = "modelfleet-signature v1\r\n";
    assert_int_equal(mf_sigset_parse((const uint8_t *)crlf, strlen(crlf), &back, &d), MF_ERR_PARSE);
    assert_non_null(strstr(d.what, "carriage return"));
    static const char v2[] = "modelfleet-signature v2\n";
    assert_int_equal(mf_sigset_parse((const uint8_t *)v2, strlen(v2), &back, &d), MF_ERR_VERSION);
    mf_keyring_free(&ring);
}

/* ---- manifest ---- */

static const char *const good_manifest =
    "{\"format_version\": \"1.0\", \"model\": \"digits\", \"version\": \"1.2.0-rc.1\","
    " \"created\": \"2026-01-01T00:00:00Z\","
    " \"variant\": {\"hardware\": [\"rpi5\", \"jetson-orin\"], \"runtime\": \"onnx\"},"
    " \"entry\": \"model/net.onnx\","
    " \"files\": ["
    "  {\"path\": \"model/net.onnx\", \"size\": 10, \"blake2b\": "
    "\"0000000000000000000000000000000000000000000000000000000000000000\"},"
    "  {\"path\": \"eval/x.npy\", \"size\": 20, \"blake2b\": "
    "\"1111111111111111111111111111111111111111111111111111111111111111\"},"
    "  {\"path\": \"eval/y.npy\", \"size\": 30, \"blake2b\": "
    "\"2222222222222222222222222222222222222222222222222222222222222222\"}],"
    " \"eval\": {\"inputs\": \"eval/x.npy\", \"labels\": \"eval/y.npy\", \"metric\": \"top1\","
    " \"n\": 5},"
    " \"thresholds\": {\"min_accuracy\": 0.95, \"max_accuracy_drop\": 0.01,"
    " \"latency_p99_ms\": 12.5, \"memory_bytes\": 268435456},"
    " \"min_agent_version\": \"0.1.0\", \"metadata\": {\"run\": \"abc\", \"epochs\": 30}}";

/* good_manifest with `from` replaced by `to`, parsed; returns the error. */
static enum mf_err parse_edit(const char *from, const char *to, struct mf_diag *d)
{
    const char *at = strstr(good_manifest, from);
    assert_non_null(at);
    char *text =
        mf_xasprintf("%.*s%s%s", (int)(at - good_manifest), good_manifest, to, at + strlen(from));
    struct mf_manifest *m = NULL;
    memset(d, 0, sizeof *d);
    enum mf_err err = mf_manifest_parse((const uint8_t *)text, strlen(text), &m, d);
    mf_manifest_free(m);
    free(text);
    return err;
}

static void test_manifest_valid(void **state)
{
    (void)state;
    struct mf_manifest *m = NULL, *m2 = NULL;
    struct mf_diag d;
    assert_int_equal(
        mf_manifest_parse((const uint8_t *)good_manifest, strlen(good_manifest), &m, &d), MF_OK);
    assert_string_equal(m->model, "digits");
    assert_int_equal(m->semver.minor, 2);
    assert_int_equal(m->hardware.n, 2);
    assert_int_equal(m->n_files, 3);
    assert_string_equal(m->files[0].path, "eval/x.npy"); /* sorted */
    assert_int_equal(m->eval.n, 5);
    assert_true(m->thresholds.latency_p99_ms == 12.5);
    assert_int_equal(m->thresholds.memory_bytes, 268435456);
    assert_int_equal(mf_manifest_payload_bytes(m), 60);
    assert_non_null(mf_manifest_find(m, "eval/y.npy"));
    assert_null(mf_manifest_find(m, "eval/z.npy"));
    /* format -> parse -> format is stable. */
    size_t n1, n2;
    char *t1 = mf_manifest_format(m, &n1);
    assert_int_equal(mf_manifest_parse((const uint8_t *)t1, n1, &m2, &d), MF_OK);
    char *t2 = mf_manifest_format(m2, &n2);
    assert_string_equal(t1, t2);
    assert_non_null(strstr(t1, "\"min_accuracy\": 0.95,"));
    free(t1);
    free(t2);
    mf_manifest_free(m);
    mf_manifest_free(m2);
}

static void test_manifest_versions(void **state)
{
    (void)state;
    struct mf_diag d;
    /* A future minor version: unknown fields are ignored. */
    assert_int_equal(parse_edit("\"format_version\": \"1.0\",",
                                "\"format_version\": \"1.3\", \"shards\": [1,2],", &d),
                     MF_OK);
    assert_int_equal(
        parse_edit("\"min_accuracy\": 0.95,", "\"min_accuracy\": 0.95, \"min_f1\": 0.9,", &d),
        MF_ERR_SCHEMA); /* in 1.0 an unknown field is an error */
    assert_string_equal(d.what, "unknown field 'min_f1' in format 1.0");
    assert_int_equal(parse_edit("\"1.0\"", "\"2.0\"", &d), MF_ERR_VERSION);
    assert_non_null(strstr(d.what, "manifest format 2.0 is not supported"));
    assert_int_equal(parse_edit("\"1.0\"", "\"0.9\"", &d), MF_ERR_VERSION);
    assert_int_equal(parse_edit("\"1.0\"", "\"1\"", &d), MF_ERR_SCHEMA);
    assert_int_equal(parse_edit("\"1.0\"", "1.0", &d), MF_ERR_SCHEMA);
}

static void test_manifest_refusals(void **state)
{
    (void)state;
    struct mf_diag d;
    static const struct {
        const char *from, *to;
        enum mf_err err;
        const char *msg;
    } cases[] = {
        {"\"model\": \"digits\"", "\"model\": \"../digits\"", MF_ERR_SCHEMA, "not a valid name"},
        {"\"model\": \"digits\",", "", MF_ERR_SCHEMA, "model: expected a string, got nothing"},
        {"\"1.2.0-rc.1\"", "\"1.2\"", MF_ERR_SCHEMA, "not a semantic version"},
        {"\"2026-01-01T00:00:00Z\"", "\"yesterday\"", MF_ERR_SCHEMA, "RFC 3339"},
        {"[\"rpi5\", \"jetson-orin\"]", "[]", MF_ERR_SCHEMA, "names no hardware class"},
        {"[\"rpi5\", \"jetson-orin\"]", "\"rpi5\"", MF_ERR_SCHEMA, "expected an array"},
        {"\"runtime\": \"onnx\"", "\"runtime\": \"on nx\"", MF_ERR_SCHEMA, "not a valid name"},
        {"\"entry\": \"model/net.onnx\"", "\"entry\": \"model/other.onnx\"", MF_ERR_SCHEMA,
         "is not listed in files"},
        {"\"eval/x.npy\", \"size\"", "\"model/net.onnx\", \"size\"", MF_ERR_DUPLICATE,
         "lists 'model/net.onnx' twice"},
        {"\"eval/x.npy\", \"size\"", "\"/etc/x.npy\", \"size\"", MF_ERR_UNSAFE_PATH,
         "is an absolute path"},
        {"\"eval/x.npy\", \"size\"", "\"eval//x.npy\", \"size\"", MF_ERR_UNSAFE_PATH,
         "empty or '.' component"},
        {"\"eval/x.npy\", \"size\"", "\"eval/x y.npy\", \"size\"", MF_ERR_UNSAFE_PATH,
         "character outside"},
        {"\"size\": 10", "\"size\": 10.5", MF_ERR_SCHEMA, "expected an integer"},
        {"\"size\": 10", "\"size\": \"10\"", MF_ERR_SCHEMA, "expected an integer, got a string"},
        {"\"size\": 10", "\"size\": 9007199254740993", MF_ERR_SCHEMA, "out of range"},
        {"\"0000000000000000000000000000000000000000000000000000000000000000\"", "\"00\"",
         MF_ERR_SCHEMA, "64 lower-case hex"},
        {"\"metric\": \"top1\"", "\"metric\": \"map50\"", MF_ERR_SCHEMA, "not a supported metric"},
        {"\"n\": 5", "\"n\": 0", MF_ERR_SCHEMA, "at least 1"},
        {"\"min_accuracy\": 0.95", "\"min_accuracy\": 95", MF_ERR_SCHEMA, "outside [0, 1]"},
        {"\"max_accuracy_drop\": 0.01", "\"max_accuracy_drop\": null", MF_ERR_SCHEMA,
         "expected a number, got null"},
        {"\"latency_p99_ms\": 12.5", "\"latency_p99_ms\": 0", MF_ERR_SCHEMA, "outside"},
        {"\"memory_bytes\": 268435456", "\"memory_bytes\": 0", MF_ERR_SCHEMA, "must be positive"},
        {"\"min_agent_version\": \"0.1.0\"", "\"min_agent_version\": \"latest\"", MF_ERR_SCHEMA,
         "not a semantic version"},
        {"\"metadata\": {", "\"metadata\": [{", MF_ERR_PARSE, "invalid JSON"},
        {"\"model\": \"digits\",", "\"model\": \"digits\", \"model\": \"x\",", MF_ERR_PARSE,
         "duplicate object key"},
        {"\"variant\": {", "\"variant\": {\"os\": \"linux\", ", MF_ERR_SCHEMA,
         "unknown field 'os'"},
        {"\"1.0\"", "\"01.0\"", MF_ERR_SCHEMA, "is not MAJOR.MINOR"},
        {"\"1.0\"", "\"1.-1\"", MF_ERR_SCHEMA, "is not MAJOR.MINOR"},
        {"\"1.0\"", "\"1. 0\"", MF_ERR_SCHEMA, "is not MAJOR.MINOR"},
        {"\"1111111111111111111111111111111111111111111111111111111111111111\"",
         "\"111111111111111111111111111111111111111111111111111111111111111A\"", MF_ERR_SCHEMA,
         "64 lower-case hex"},
        {"\"eval/x.npy\", \"size\"", "\"model\", \"size\"", MF_ERR_UNSAFE_PATH,
         "'model' is listed as a file and is also a directory of 'model/net.onnx'"},
        {"[\"rpi5\", \"jetson-orin\"]", "[\"rpi5\", \"rpi5\"]", MF_ERR_DUPLICATE,
         "names 'rpi5' twice"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        enum mf_err err = parse_edit(cases[i].from, cases[i].to, &d);
        char line[MF_DIAG_STR_MAX];
        mf_diag_str(&d, line, sizeof line);
        if (err != cases[i].err || !strstr(line, cases[i].msg))
            fail_msg("case %zu (%s): got %s '%s', want %s '%s'", i, cases[i].to, mf_errname(err),
                     line, mf_errname(cases[i].err), cases[i].msg);
    }
    struct mf_manifest *m = NULL;
    assert_int_equal(mf_manifest_parse((const uint8_t *)"[]", 2, &m, &d), MF_ERR_SCHEMA);
    assert_int_equal(mf_manifest_parse((const uint8_t *)"", 0, &m, &d), MF_ERR_PARSE);
    assert_null(m);
}

static void test_path_check(void **state)
{
    (void)state;
    static const char *const ok[] = {
        "model/net.onnx", "a", "eval/x-1_2.npy", "a/b/c/d", "..a", "a..", ".hidden"};
    static const char *const bad[] = {
        "",  "/abs", "../x", "a/../b", "a/./b",         "a//b",         "a/",
        ".", "a/..", "a b",  "a\\b",   "manifest.json", "manifest.sig", "ä"};
    const char *why;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (mf_pkg_path_check(ok[i], &why) != MF_OK)
            fail_msg("'%s' refused: %s", ok[i], why);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (mf_pkg_path_check(bad[i], &why) != MF_ERR_UNSAFE_PATH)
            fail_msg("'%s' accepted", bad[i]);
    char longp[300];
    memset(longp, 'a', sizeof longp - 1);
    longp[sizeof longp - 1] = '\0';
    assert_int_equal(mf_pkg_path_check(longp, &why), MF_ERR_UNSAFE_PATH);
}

/* ---- npy ---- */

static void test_npy(void **state)
{
    (void)state;
    struct mf_npy h;
    struct mf_diag d;
    assert_int_equal(mf_npy_load_header(MF_FIXTURES "/eval-inputs.npy", &h, &d), MF_OK);
    assert_string_equal(h.descr, "<f4");
    assert_int_equal(h.ndim, 2);
    assert_int_equal(h.shape[1], 64);
    uint64_t n = h.shape[0];
    assert_int_equal(mf_npy_load_header(MF_FIXTURES "/eval-labels.npy", &h, &d), MF_OK);
    assert_int_equal(h.kind, 'i');
    assert_int_equal(h.ndim, 1);
    assert_int_equal(h.shape[0], n);
    /* A big-endian dtype, header length filled in below. */
    char hdr[128];
    int hl = snprintf(hdr + 10, sizeof hdr - 10,
                      "{'descr': '>f8', 'fortran_order': False, 'shape': (3,), }\n");
    memcpy(hdr, "\x93NUMPY\x01\x00", 8);
    hdr[8] = (char)hl;
    hdr[9] = 0;
    assert_int_equal(mf_npy_parse((const uint8_t *)hdr, 10 + (size_t)hl, &h, &d), MF_ERR_SCHEMA);
    assert_non_null(strstr(d.what, "little-endian"));
    assert_int_equal(mf_npy_parse((const uint8_t *)"PK\x03\x04xxxxxxxxxx", 14, &h, &d),
                     MF_ERR_PARSE);
    static const char trunc[] = "\x93NUMPY\x01\x00\x76\x00{'descr': '<f4'";
    assert_int_equal(mf_npy_parse((const uint8_t *)trunc, sizeof trunc - 1, &h, &d), MF_ERR_PARSE);
}

/* ---- pack / sign / verify / extract on the real models ---- */

static const struct mf_pack_file fixture_files[] = {
    {"model/digits-fp32.onnx", MF_FIXTURES "/digits-fp32.onnx"},
    {"eval/inputs.npy", MF_FIXTURES "/eval-inputs.npy"},
    {"eval/labels.npy", MF_FIXTURES "/eval-labels.npy"},
};

static struct mf_strlist hw;

static struct mf_pack_input fixture_input(void)
{
    if (!hw.n) {
        mf_strlist_push(&hw, "rpi5");
        mf_strlist_push(&hw, "jetson-orin");
    }
    return (struct mf_pack_input){
        .model = "digits",
        .version = "1.0.0",
        .runtime = "onnx",
        .hardware = &hw,
        .entry = "model/digits-fp32.onnx",
        .eval_inputs = "eval/inputs.npy",
        .eval_labels = "eval/labels.npy",
        .created = 1767225600,
        .min_accuracy = 0.95,
        .max_accuracy_drop = 0.01,
        .files = fixture_files,
        .n_files = 3,
    };
}

static void test_pack_deterministic(void **state)
{
    (void)state;
    struct mf_pack_input in = fixture_input();
    struct mf_diag d;
    struct mf_manifest *m = NULL;
    char *a = tpath("a.mfpkg"), *b = tpath("b.mfpkg");
    assert_int_equal(mf_pkg_pack(&in, a, &m, &d), MF_OK);
    assert_int_equal(m->eval.n, 360);
    mf_manifest_free(m);
    assert_int_equal(mf_pkg_pack(&in, b, NULL, &d), MF_OK);
    /* The order the files are given in does not matter. */
    struct mf_pack_file reversed[] = {fixture_files[2], fixture_files[1], fixture_files[0]};
    in.files = reversed;
    assert_int_equal(mf_pkg_pack(&in, b, NULL, &d), MF_OK);
    struct mf_buf ba = slurp(a), bb = slurp(b);
    assert_int_equal(ba.len, bb.len);
    assert_memory_equal(ba.data, bb.data, ba.len);
    /* Tar layout: manifest.json first, manifest.sig second, payload sorted. */
    static const char *const order[] = {"manifest.json", "manifest.sig", "eval/inputs.npy",
                                        "eval/labels.npy", "model/digits-fp32.onnx"};
    size_t next = 0;
    for (size_t off = 0; off + 512 <= ba.len && next < 5; off += 512)
        if (strcmp((char *)ba.data + off, order[next]) == 0)
            next++;
    assert_int_equal(next, 5);
    mf_buf_free(&ba);
    mf_buf_free(&bb);
    free(a);
    free(b);
}

static void test_pack_sign_equals_pack_with_key(void **state)
{
    (void)state;
    struct mf_pack_input in = fixture_input();
    struct mf_key_secret k;
    struct mf_diag d;
    struct mf_pkg_result res;
    seed_key(&k, 7);
    char *a = tpath("signed-later.mfpkg"), *b = tpath("signed-at-pack.mfpkg");
    assert_int_equal(mf_pkg_pack(&in, a, NULL, &d), MF_OK);
    assert_int_equal(mf_pkg_sign(a, &k, &res, &d), MF_OK);
    assert_int_equal(res.sigs.n, 1);
    mf_pkg_result_free(&res);
    in.key = &k;
    assert_int_equal(mf_pkg_pack(&in, b, NULL, &d), MF_OK);
    struct mf_buf ba = slurp(a), bb = slurp(b);
    assert_int_equal(ba.len, bb.len);
    assert_memory_equal(ba.data, bb.data, ba.len);
    mf_buf_free(&ba);
    mf_buf_free(&bb);
    free(a);
    free(b);
}

static void test_sign_verify_extract(void **state)
{
    (void)state;
    struct mf_pack_input in = fixture_input();
    struct mf_key_secret pub, srv;
    struct mf_keyring ring = {0};
    struct mf_diag d;
    struct mf_pkg_result res;
    struct mf_pkg_opts opts = {.fsync = true};
    seed_key(&pub, 8);
    seed_key(&srv, 9);
    in.zstd = true;
    char *p = tpath("z.mfpkg"), *stage = tpath("stage");
    assert_int_equal(mf_pkg_pack(&in, p, NULL, &d), MF_OK);
    assert_int_equal(mf_pkg_sign(p, &pub, NULL, &d), MF_OK);
    assert_int_equal(mf_pkg_sign(p, &srv, &res, &d), MF_OK); /* publisher + server */
    assert_int_equal(res.sigs.n, 2);
    assert_true(res.zstd);
    mf_pkg_result_free(&res);

    mf_keyring_add(&ring, &srv.pub);
    assert_int_equal(mf_pkg_extract(p, &ring, stage, &opts, &res, &d), MF_OK);
    assert_string_equal(res.signer, srv.pub.id);
    assert_true(res.zstd);
    for (size_t i = 0; i < 3; i++) {
        uint8_t want[MF_HASH_BYTES], got[MF_HASH_BYTES];
        char *out = mf_xasprintf("%s/%s", stage, fixture_files[i].path);
        assert_int_equal(mf_hash_file(fixture_files[i].source, want, NULL, &d), MF_OK);
        assert_int_equal(mf_hash_file(out, got, NULL, &d), MF_OK);
        assert_memory_equal(want, got, sizeof want);
        free(out);
    }
    mf_pkg_result_free(&res);
    mf_fs_rmtree(stage);
    /* An agent older than min_agent_version (0.1.0 here) refuses it; a newer one takes it. */
    opts.agent_version = "0.1.0-rc.1";
    assert_int_equal(mf_pkg_extract(p, &ring, stage, &opts, &res, &d), MF_ERR_VERSION);
    assert_non_null(strstr(d.what, "needs agent 0.1.0 or newer; this agent is 0.1.0-rc.1"));
    assert_int_equal(access(stage, F_OK), -1);
    opts.agent_version = "0.2.0";
    assert_int_equal(mf_pkg_verify(p, &ring, &opts, &res, &d), MF_OK);
    mf_pkg_result_free(&res);
    /* inspect reads the claims without any key. */
    assert_int_equal(mf_pkg_inspect(p, &res, &d), MF_OK);
    assert_int_equal(res.sigs.n, 2);
    assert_int_equal(res.payload_bytes, 0);
    mf_pkg_result_free(&res);
    mf_keyring_free(&ring);
    mf_fs_rmtree(stage);
    free(p);
    free(stage);
}

static void test_sign_refuses_corrupt_package(void **state)
{
    (void)state;
    struct mf_pack_input in = fixture_input();
    struct mf_key_secret k;
    struct mf_diag d;
    seed_key(&k, 10);
    char *p = tpath("corrupt.mfpkg");
    assert_int_equal(mf_pkg_pack(&in, p, NULL, &d), MF_OK);
    struct mf_buf orig = slurp(p);
    /* Flip one byte near the end of the payload (the model file is last). */
    int fd = open(p, O_RDWR);
    off_t at = (off_t)orig.len - 2048;
    uint8_t byte = orig.data[at] ^ 0x40;
    assert_int_equal(pwrite(fd, &byte, 1, at), 1);
    close(fd);
    assert_int_equal(mf_pkg_sign(p, &k, NULL, &d), MF_ERR_HASH_MISMATCH);
    /* The package is untouched (still the corrupted bytes, no signature added). */
    struct mf_buf now = slurp(p);
    assert_int_equal(now.len, orig.len);
    assert_int_equal(now.data[at], byte);
    assert_memory_equal(now.data, orig.data, (size_t)at);
    /* And no temporary file was left next to it. */
    char *tmpl = tpath(".corrupt.mfpkg.tmp.");
    assert_int_equal(access(tmpl, F_OK), -1);
    free(tmpl);
    mf_buf_free(&orig);
    mf_buf_free(&now);
    free(p);
}

static void test_pack_refusals(void **state)
{
    (void)state;
    struct mf_pack_input in = fixture_input();
    struct mf_diag d;
    char *p = tpath("refused.mfpkg");
    /* Labels swapped for inputs: not a 1-D integer array. */
    struct mf_pack_file swapped[] = {
        {"model/digits-fp32.onnx", MF_FIXTURES "/digits-fp32.onnx"},
        {"eval/inputs.npy", MF_FIXTURES "/eval-labels.npy"},
        {"eval/labels.npy", MF_FIXTURES "/eval-inputs.npy"},
    };
    in.files = swapped;
    assert_int_equal(mf_pkg_pack(&in, p, NULL, &d), MF_ERR_SCHEMA);
    assert_non_null(strstr(d.what, "labels must be a 1-D integer array"));
    in = fixture_input();
    in.version = "one";
    assert_int_equal(mf_pkg_pack(&in, p, NULL, &d), MF_ERR_SCHEMA);
    in = fixture_input();
    in.min_accuracy = 1.5;
    assert_int_equal(mf_pkg_pack(&in, p, NULL, &d), MF_ERR_SCHEMA);
    struct mf_pack_file missing[] = {
        {"model/digits-fp32.onnx", MF_FIXTURES "/no-such-file.onnx"},
    };
    in = fixture_input();
    in.files = missing;
    in.n_files = 1;
    assert_int_equal(mf_pkg_pack(&in, p, NULL, &d), MF_ERR_IO);
    assert_int_equal(access(p, F_OK), -1); /* nothing written */
    free(p);
}

int main(void)
{
    mf_crypto_init();
    if (!mkdtemp(tmpdir))
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_roundtrip),
        cmocka_unit_test(test_key_files),
        cmocka_unit_test(test_sigset),
        cmocka_unit_test(test_manifest_valid),
        cmocka_unit_test(test_manifest_versions),
        cmocka_unit_test(test_manifest_refusals),
        cmocka_unit_test(test_path_check),
        cmocka_unit_test(test_npy),
        cmocka_unit_test(test_pack_deterministic),
        cmocka_unit_test(test_pack_sign_equals_pack_with_key),
        cmocka_unit_test(test_sign_verify_extract),
        cmocka_unit_test(test_sign_refuses_corrupt_package),
        cmocka_unit_test(test_pack_refusals),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    mf_strlist_free(&hw);
    mf_fs_rmtree(tmpdir);
    return rc;
}
