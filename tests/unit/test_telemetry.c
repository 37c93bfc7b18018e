/* test_telemetry.c — desired-state messages: canonical format, signing and
 * every refusal a device must make (forged, replayed, misaddressed, mangled,
 * oversized), each with its own code. Device messages (state, event, report):
 * topics, the builders' exact JSON, sanitizing and cutting, the round trip
 * (what a builder writes passes mf_devmsg_check) and every refusal of the
 * check, each with its code and field path. */
#include <math.h>
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
#include "common/json.h"
#include "common/mem.h"
#include "packaging/key.h"
#include "packaging/sig.h"
#include "telemetry/desired.h"
#include "telemetry/devmsg.h"

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

/* ---- device messages (telemetry/devmsg.h) ---- */

#define PKG_C "3333333333333333333333333333333333333333333333333333333333333333"

static void test_topics(void **state)
{
    char t[MF_TOPIC_MAX], dev[MF_TOPIC_MAX];
    enum mf_devmsg_kind k;
    (void)state;

    for (unsigned i = 0; i < MF_DEVMSG__COUNT; i++) {
        char *want = mf_xasprintf("mf/v1/d/pi-0042/%s", mf_devmsg_kind_name(i));
        assert_int_equal(mf_topic(t, "pi-0042", (enum mf_devmsg_kind)i), MF_OK);
        assert_string_equal(t, want);
        assert_int_equal(mf_topic_parse(t, dev, &k), MF_OK);
        assert_string_equal(dev, "pi-0042");
        assert_int_equal(k, i);
        free(want);
    }
    assert_string_equal(mf_devmsg_kind_name(MF_DEVMSG_STATE), "state");
    assert_string_equal(mf_devmsg_kind_name(MF_DEVMSG_ONLINE), "online");
    assert_string_equal(mf_devmsg_kind_name(MF_DEVMSG__COUNT), "unknown");
    assert_string_equal(mf_event_kind_name(MF_EVENT_ROLLED_BACK), "rolled_back");

    /* the longest device id (64) fits; 65 does not */
    char id[80];
    memset(id, 'd', 64);
    id[64] = '\0';
    assert_int_equal(mf_topic(t, id, MF_DEVMSG_DESIRED), MF_OK);
    assert_int_equal(mf_topic_parse(t, dev, &k), MF_OK);
    assert_string_equal(dev, id);
    assert_int_equal(k, MF_DEVMSG_DESIRED);
    id[64] = 'd';
    id[65] = '\0';

    /* ids that could widen or split a topic are refused; out is left alone */
    const char *bad[] = {"a/b", "a+b", "+", "#", "pi#1", "", "-pi", "pi 1", "pi\n", id};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(t, 'Z', sizeof t);
        assert_int_equal(mf_topic(t, bad[i], MF_DEVMSG_STATE), MF_ERR_USAGE);
        assert_int_equal(t[0], 'Z');
    }
    assert_int_equal(mf_topic(t, NULL, MF_DEVMSG_STATE), MF_ERR_USAGE);
    assert_int_equal(mf_topic(t, "pi-0042", MF_DEVMSG__COUNT), MF_ERR_USAGE);

    char *long_topic = mf_xasprintf("mf/v1/d/%s/state", id);
    const char *bad_topics[] = {"mf/v1/d/pi-0042/status",
                                "mf/v1/d/pi-0042/",
                                "mf/v1/d/pi-0042",
                                "mf/v1/d//state",
                                "mf/v1/d/+/state",
                                "mf/v1/d/#",
                                "mf/v1/d/a+b/state",
                                "mf/v1/d/pi-0042/state/x",
                                "mf/v1/d/a/b/state",
                                "mf/v2/d/pi-0042/state",
                                "/mf/v1/d/pi-0042/state",
                                "mf/v1/d/pi-0042/State",
                                "",
                                "mf/v1/d/pi-0042/state ",
                                "mf/v1/d/-pi/state",
                                long_topic};
    for (size_t i = 0; i < sizeof bad_topics / sizeof bad_topics[0]; i++) {
        strcpy(dev, "untouched");
        k = MF_DEVMSG__COUNT;
        if (mf_topic_parse(bad_topics[i], dev, &k) != MF_ERR_PARSE) {
            print_error("topic '%s' was not refused\n", bad_topics[i]);
            fail();
        }
        assert_string_equal(dev, "untouched");
        assert_int_equal(k, MF_DEVMSG__COUNT);
    }
    free(long_topic);
}

static const struct mf_event_failure gate_fail[] = {
    {.check = "min_accuracy",
     .measured = 0.5,
     .limit = 0.9,
     .excess = 0.4,
     .reason = "accuracy 0.5000 is below the minimum 0.9000 by 0.4000"},
};

static struct mf_event small_event(void)
{
    return (struct mf_event){.device = "pi-0042",
                             .msg = 7,
                             .time = 1795000000,
                             .kind = MF_EVENT_REFUSED,
                             .origin = "desired",
                             .model = "digits",
                             .version = "2.0.0",
                             .package = PKG_A,
                             .from_version = "1.1.0",
                             .desired_seq = 17,
                             .rollout = 3,
                             .reason = "gate",
                             .detail = "the gate refused 2.0.0",
                             .failures = gate_fail,
                             .n_failures = 1};
}

static const char *const report_warnings[] = {"runner wrote 3 lines to stderr",
                                              "first inference took 40x the median"};

static struct mf_report full_report(void)
{
    return (struct mf_report){.device = "pi-0042",
                              .hw_class = "pi4",
                              .model = "digits",
                              .agent_version = "0.4.0",
                              .runtime = "onnx",
                              .runtime_version = "opencv 4.6.0",
                              .msg = 8,
                              .time = 1795000100,
                              .desired_seq = 17,
                              .rollout = 3,
                              .warmup = 5,
                              .threads = 4,
                              .eval_hash = PKG_B,
                              .n = 1000,
                              .metric = "top1",
                              .model_bytes = 111616,
                              .candidate = {.version = "2.0.0",
                                            .package = PKG_A,
                                            .accuracy = 0.981,
                                            .correct = 981,
                                            .load_us = 120000,
                                            .first_us = 9000,
                                            .count = 1000,
                                            .mean_us = 1520.4,
                                            .stddev_us = 210.6,
                                            .p50_us = 1500,
                                            .p90_us = 1700,
                                            .p99_us = 2100,
                                            .max_us = 4000,
                                            .peak_rss_bytes = 90u << 20},
                              .has_incumbent = true,
                              .incumbent = {.version = "1.1.0",
                                            .package = PKG_C,
                                            .accuracy = 0.976,
                                            .correct = 976,
                                            .load_us = 200000,
                                            .first_us = 15000,
                                            .count = 1000,
                                            .mean_us = 3000,
                                            .stddev_us = 400,
                                            .p50_us = 3000,
                                            .p90_us = 3300,
                                            .p99_us = 3500,
                                            .max_us = 9000,
                                            .peak_rss_bytes = 120u << 20},
                              .both = 970,
                              .only_candidate = 11,
                              .only_incumbent = 6,
                              .neither = 13,
                              .p50_ratio = 0.5,
                              .p99_ratio = 0.6,
                              .pass = true,
                              .drop = -0.005,
                              .mcnemar_p = 0.85,
                              .valid = true,
                              .warnings = report_warnings,
                              .n_warnings = 2};
}

/* Only what a report must have: no incumbent, no rollout, all figures 0. */
static struct mf_report min_report(void)
{
    return (struct mf_report){.device = "pi-0042",
                              .hw_class = "pi4",
                              .model = "digits",
                              .agent_version = "0.4.0",
                              .runtime = "onnx",
                              .msg = 1,
                              .eval_hash = PKG_B,
                              .candidate = {.version = "1.0.0", .package = PKG_A}};
}

static const char *const state_runtimes[] = {"onnx", "tflite"};
static const struct mf_state_msg_model state_models[] = {
    {.name = "digits",
     .version = "2.0.0",
     .package = PKG_A,
     .previous_version = "1.1.0",
     .previous_package = PKG_C},
    {.name = "keyword", .version = "0.9.0", .package = PKG_B},
};

static struct mf_state_msg full_state(void)
{
    return (struct mf_state_msg){.device = "pi-0042",
                                 .hw_class = "pi4",
                                 .agent_version = "0.4.0",
                                 .msg = 8,
                                 .time = 1795000200,
                                 .desired_seq = 17,
                                 .runtimes = state_runtimes,
                                 .n_runtimes = 2,
                                 .models = state_models,
                                 .n_models = 2,
                                 .op_kind = "install",
                                 .op_model = "digits",
                                 .op_version = "2.1.0",
                                 .op_phase = "benchmark",
                                 .disk_free = 5000000000u,
                                 .mem_available = 1000000000u,
                                 .spool_dropped = 2};
}

static struct mf_state_msg min_state(void)
{
    return (struct mf_state_msg){.device = "pi-0042", .hw_class = "pi4", .agent_version = "0.4.0"};
}

/* text passes the check as `kind` for pi-0042; returns the parsed object. */
static json_t *checked(enum mf_devmsg_kind kind, const char *text, size_t len)
{
    json_t *out = NULL;
    struct mf_diag diag = {0};
    enum mf_err rc = mf_devmsg_check(kind, (const uint8_t *)text, len, "pi-0042", &out, &diag);
    if (rc != MF_OK) {
        print_error("%s refused: %s at '%s': %s\n%s\n", mf_devmsg_kind_name(kind), mf_errname(rc),
                    diag.where, diag.what, text);
        fail();
    }
    assert_true(json_is_object(out));
    assert_int_equal(len, strlen(text));
    assert_true(len <= MF_DEVMSG_MAX);
    return out;
}

/* The keys of o, comma-separated, in order. */
static char *keys_of(const json_t *o)
{
    char *s = mf_xstrdup(""), *t;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)o, key, v)
    {
        t = mf_xasprintf("%s%s%s", s, *s ? "," : "", key);
        free(s);
        s = t;
    }
    return s;
}

static json_t *at(json_t *o, const char *path)
{
    char *p = mf_xstrdup(path), *save = NULL;
    for (char *seg = strtok_r(p, ".", &save); seg && o; seg = strtok_r(NULL, ".", &save)) {
        char *br = strchr(seg, '[');
        if (br)
            *br = '\0';
        o = json_object_get(o, seg);
        if (br)
            o = json_array_get(o, strtoul(br + 1, NULL, 10));
    }
    free(p);
    return o;
}

static void test_event_format_exact(void **state)
{
    (void)state;
    struct mf_event e = small_event();
    size_t len;
    char *text = mf_devmsg_event_format(&e, &len);
    assert_string_equal(text, "{\"device\":\"pi-0042\",\"msg\":7,\"time\":\"2026-11-18T11:06:40Z\","
                              "\"kind\":\"refused\",\"origin\":\"desired\",\"model\":\"digits\","
                              "\"version\":\"2.0.0\",\"package\":\"" PKG_A "\",\"from_version\":"
                              "\"1.1.0\",\"desired_seq\":17,\"rollout\":3,\"reason\":\"gate\","
                              "\"detail\":\"the gate refused 2.0.0\",\"failures\":[{\"check\":"
                              "\"min_accuracy\",\"measured\":0.5,\"limit\":0.9,\"excess\":0.4,"
                              "\"reason\":\"accuracy 0.5000 is below the minimum 0.9000 by "
                              "0.4000\"}]}");
    assert_int_equal(len, strlen(text));
    json_decref(checked(MF_DEVMSG_EVENT, text, len));
    free(text);

    /* the least an event has: optional fields and "" strings are left out */
    e = (struct mf_event){.device = "pi-0042",
                          .msg = 1,
                          .kind = MF_EVENT_RECOVERED,
                          .origin = "",
                          .reason = "",
                          .detail = "",
                          .rollout = -1};
    text = mf_devmsg_event_format(&e, &len);
    assert_string_equal(text, "{\"device\":\"pi-0042\",\"msg\":1,\"time\":\"1970-01-01T00:00:00Z\","
                              "\"kind\":\"recovered\"}");
    json_decref(checked(MF_DEVMSG_EVENT, text, len));
    free(text);

    /* every kind has its stable name and passes */
    for (unsigned k = 0; k < MF_EVENT__COUNT; k++) {
        e.kind = (enum mf_event_kind)k;
        text = mf_devmsg_event_format(&e, &len);
        json_t *o = checked(MF_DEVMSG_EVENT, text, len);
        assert_string_equal(json_string_value(json_object_get(o, "kind")),
                            mf_event_kind_name(e.kind));
        json_decref(o);
        free(text);
    }
}

static void test_report_roundtrip(void **state)
{
    (void)state;
    struct mf_report r = full_report();
    size_t len;
    char *text = mf_devmsg_report_format(&r, &len);
    json_t *o = checked(MF_DEVMSG_REPORT, text, len);
    char *keys = keys_of(o);
    assert_string_equal(keys, "device,msg,time,model,hw_class,agent_version,runtime,desired_seq,"
                              "rollout,run,eval,model_bytes,candidate,incumbent,paired,"
                              "latency_ratio,gate,validity");
    free(keys);
    keys = keys_of(json_object_get(o, "candidate"));
    assert_string_equal(keys, "version,package,accuracy,correct,load_us,first_us,latency,"
                              "peak_rss_bytes");
    free(keys);
    keys = keys_of(at(o, "candidate.latency"));
    assert_string_equal(keys, "count,mean_us,stddev_us,p50_us,p90_us,p99_us,max_us");
    free(keys);
    /* latencies are integer microseconds (rounded); accuracy and ratios are reals */
    assert_true(json_is_integer(at(o, "candidate.latency.mean_us")));
    assert_int_equal(json_integer_value(at(o, "candidate.latency.mean_us")), 1520);
    assert_int_equal(json_integer_value(at(o, "candidate.latency.stddev_us")), 211);
    assert_int_equal(json_integer_value(at(o, "incumbent.latency.p99_us")), 3500);
    assert_true(json_is_real(at(o, "candidate.accuracy")));
    assert_true(json_real_value(at(o, "candidate.accuracy")) == 0.981);
    assert_true(json_real_value(at(o, "latency_ratio.p99")) == 0.6);
    assert_true(json_real_value(at(o, "gate.drop")) == -0.005);
    assert_true(json_is_true(at(o, "gate.pass")));
    assert_int_equal(json_array_size(at(o, "gate.failures")), 0);
    assert_int_equal(json_integer_value(at(o, "paired.only_candidate")), 11);
    assert_int_equal(json_integer_value(at(o, "run.threads")), 4);
    assert_string_equal(json_string_value(at(o, "runtime.version")), "opencv 4.6.0");
    assert_string_equal(json_string_value(at(o, "validity.warnings[1]")),
                        "first inference took 40x the median");
    assert_string_equal(json_string_value(at(o, "time")), "2026-11-18T11:08:20Z");
    json_decref(o);
    free(text);

    /* a refusal: the gate's failures travel with the report */
    r.pass = false;
    r.failures = gate_fail;
    r.n_failures = 1;
    text = mf_devmsg_report_format(&r, &len);
    o = checked(MF_DEVMSG_REPORT, text, len);
    assert_true(json_is_false(at(o, "gate.pass")));
    assert_string_equal(json_string_value(at(o, "gate.failures[0].check")), "min_accuracy");
    assert_true(json_real_value(at(o, "gate.failures[0].limit")) == 0.9);
    json_decref(o);
    free(text);

    /* minimal: no incumbent, so no paired table, ratios, drop or p-value */
    r = min_report();
    text = mf_devmsg_report_format(&r, &len);
    o = checked(MF_DEVMSG_REPORT, text, len);
    keys = keys_of(o);
    assert_string_equal(keys, "device,msg,time,model,hw_class,agent_version,runtime,run,eval,"
                              "model_bytes,candidate,gate,validity");
    free(keys);
    keys = keys_of(json_object_get(o, "gate"));
    assert_string_equal(keys, "pass,failures");
    free(keys);
    assert_null(at(o, "runtime.version"));
    assert_string_equal(json_string_value(at(o, "eval.metric")), "top1");
    assert_true(json_is_false(at(o, "validity.valid")));
    json_decref(o);
    free(text);
}

static void test_state_roundtrip(void **state)
{
    (void)state;
    struct mf_state_msg s = full_state();
    size_t len;
    char *text = mf_devmsg_state_format(&s, &len);
    json_t *o = checked(MF_DEVMSG_STATE, text, len);
    char *keys = keys_of(o);
    assert_string_equal(keys, "device,msg,time,hw_class,agent_version,desired_seq,runtimes,models,"
                              "op,disk_free,mem_available,spool_dropped");
    free(keys);
    assert_string_equal(json_string_value(at(o, "models[0].previous.package")), PKG_C);
    assert_true(json_is_null(at(o, "models[1].previous")));
    assert_string_equal(json_string_value(at(o, "op.phase")), "benchmark");
    assert_int_equal(json_integer_value(at(o, "disk_free")), 5000000000);
    assert_string_equal(json_string_value(at(o, "runtimes[1]")), "tflite");
    json_decref(o);
    free(text);

    /* an op with only its kind */
    s.op_model = NULL;
    s.op_version = "";
    s.op_phase = NULL;
    text = mf_devmsg_state_format(&s, &len);
    o = checked(MF_DEVMSG_STATE, text, len);
    keys = keys_of(json_object_get(o, "op"));
    assert_string_equal(keys, "kind");
    free(keys);
    json_decref(o);
    free(text);

    s = min_state();
    text = mf_devmsg_state_format(&s, &len);
    assert_string_equal(text, "{\"device\":\"pi-0042\",\"msg\":0,\"time\":\"1970-01-01T00:00:00Z\","
                              "\"hw_class\":\"pi4\",\"agent_version\":\"0.4.0\",\"desired_seq\":0,"
                              "\"runtimes\":[],\"models\":[],\"op\":null,\"disk_free\":0,"
                              "\"mem_available\":0,\"spool_dropped\":0}");
    json_decref(checked(MF_DEVMSG_STATE, text, len));
    free(text);
}

static char *repeat(const char *unit, size_t n)
{
    size_t ul = strlen(unit);
    char *s = mf_xmalloc(ul * n + 1);
    for (size_t i = 0; i < n; i++)
        memcpy(s + i * ul, unit, ul);
    s[ul * n] = '\0';
    return s;
}

/* The worst a builder can be given still makes a message under the cap that
 * passes: every list at and over its cap, every string long and all escapes. */
static void test_largest_messages(void **state)
{
    (void)state;
    char *quotes = repeat("\"", 3000), *slashes = repeat("\\", 3000), *ctl = repeat("\x01", 3000);
    char *tok = repeat("x", 200);
    struct mf_event_failure fails[20];
    const char *warns[20];
    size_t len;

    for (size_t i = 0; i < 20; i++) {
        fails[i] = (struct mf_event_failure){
            .check = tok, .measured = 1e300, .limit = -1e300, .excess = 0, .reason = slashes};
        warns[i] = i % 2 ? quotes : ctl;
    }
    struct mf_event e = small_event();
    e.detail = quotes;
    e.reason = tok;
    e.origin = tok;
    e.failures = fails;
    e.n_failures = 20;
    char *text = mf_devmsg_event_format(&e, &len);
    json_t *o = checked(MF_DEVMSG_EVENT, text, len);
    assert_int_equal(json_array_size(json_object_get(o, "failures")), MF_DEVMSG_ITEMS_MAX);
    assert_int_equal(json_string_length(json_object_get(o, "detail")), MF_DEVMSG_TEXT_MAX);
    assert_int_equal(json_string_length(json_object_get(o, "reason")), MF_DEVMSG_TOKEN_MAX);
    assert_int_equal(json_string_length(at(o, "failures[15].reason")), MF_DEVMSG_TEXT_MAX);
    assert_true(json_real_value(at(o, "failures[0].measured")) == 1e18);
    assert_true(json_real_value(at(o, "failures[0].limit")) == -1e18);
    json_decref(o);
    free(text);

    struct mf_report r = full_report();
    r.failures = fails;
    r.n_failures = 20;
    r.warnings = warns;
    r.n_warnings = 20;
    r.runtime_version = quotes;
    r.metric = tok;
    text = mf_devmsg_report_format(&r, &len);
    o = checked(MF_DEVMSG_REPORT, text, len);
    assert_int_equal(json_array_size(at(o, "validity.warnings")), MF_DEVMSG_ITEMS_MAX);
    assert_int_equal(json_array_size(at(o, "gate.failures")), MF_DEVMSG_ITEMS_MAX);
    assert_int_equal(json_string_length(at(o, "validity.warnings[0]")), MF_DEVMSG_TEXT_MAX);
    /* control characters went out as spaces */
    assert_int_equal(strspn(json_string_value(at(o, "validity.warnings[0]")), " "),
                     MF_DEVMSG_TEXT_MAX);
    json_decref(o);
    free(text);

    /* 70 models (64 kept), names of 64, versions of 127 bytes, previous each */
    char names[70][65], *version = mf_xasprintf("1.0.0-%s", tok);
    version[127] = '\0';
    struct mf_state_msg_model models[70];
    const char *runtimes[20];
    for (size_t i = 0; i < 70; i++) {
        memset(names[i], 'm', 64);
        snprintf(names[i] + 60, 5, "%04zu", i);
        models[i] = (struct mf_state_msg_model){.name = names[i],
                                                .version = version,
                                                .package = PKG_A,
                                                .previous_version = version,
                                                .previous_package = PKG_B};
    }
    for (size_t i = 0; i < 20; i++)
        runtimes[i] = names[i];
    struct mf_state_msg s = full_state();
    s.models = models;
    s.n_models = 70;
    s.runtimes = runtimes;
    s.n_runtimes = 20;
    s.op_kind = tok;
    s.op_phase = quotes;
    s.op_version = version;
    s.disk_free = UINT64_MAX;
    text = mf_devmsg_state_format(&s, &len);
    o = checked(MF_DEVMSG_STATE, text, len);
    assert_int_equal(json_array_size(json_object_get(o, "models")), MF_DEVMSG_MODELS_MAX);
    assert_int_equal(json_array_size(json_object_get(o, "runtimes")), MF_DEVMSG_ITEMS_MAX);
    assert_int_equal(json_integer_value(json_object_get(o, "disk_free")), (json_int_t)1 << 53);
    assert_string_equal(json_string_value(at(o, "op.phase")), "_______________________________"
                                                              "_________________________________");
    json_decref(o);
    free(text);
    free(version);
    free(quotes);
    free(slashes);
    free(ctl);
    free(tok);
}

/* Text from outside becomes valid UTF-8, control characters spaces, cut on a
 * character boundary; tokens keep only [A-Za-z0-9._-]. */
static void test_sanitize_and_cut(void **state)
{
    (void)state;
    struct mf_event e = {.device = "pi-0042", .msg = 2, .kind = MF_EVENT_INSTALL_FAILED};
    const struct {
        const char *in, *want;
    } texts[] = {
        {"plain", "plain"},
        {"ok \xff\xfe"
         " bad \x01\x1f\x7f"
         " tab\tend",
         "ok ?? bad     tab end"},
        {"cut \xe2\x82", "cut ??"},                               /* a sequence cut short */
        {"\xc0\xaf over", "?? over"},                             /* overlong '/' */
        {"\xed\xa0\x80 sur", "??? sur"},                          /* a UTF-16 surrogate */
        {"caf\xc3\xa9 \xe2\x82\xac", "caf\xc3\xa9 \xe2\x82\xac"}, /* valid stays */
    };
    size_t len;
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        e.detail = texts[i].in;
        char *text = mf_devmsg_event_format(&e, &len);
        json_t *o = checked(MF_DEVMSG_EVENT, text, len);
        assert_string_equal(json_string_value(json_object_get(o, "detail")), texts[i].want);
        json_decref(o);
        free(text);
    }
    /* cutting: 3-byte characters stop at 510, 4-byte at exactly 512, ASCII at 512 */
    const struct {
        const char *unit;
        size_t n, want;
    } cuts[] = {{"\xe2\x82\xac", 200, 510},
                {"\xf0\x9f\x98\x80", 200, 512},
                {"a", 512, 512},
                {"a", 513, 512},
                {"\xc3\xa9", 300, 512},
                {"ab\xc3\xa9", 1, 4}};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        char *in = repeat(cuts[i].unit, cuts[i].n);
        e.detail = in;
        char *text = mf_devmsg_event_format(&e, &len);
        json_t *o = checked(MF_DEVMSG_EVENT, text, len);
        const char *got = json_string_value(json_object_get(o, "detail"));
        assert_int_equal(strlen(got), cuts[i].want);
        assert_memory_equal(got, in, cuts[i].want);
        json_decref(o);
        free(text);
        free(in);
    }
    /* tokens: other bytes become '_' (each byte of a multi-byte character) */
    e.detail = NULL;
    e.reason = "Not found/\xc3\xa9 x";
    e.origin = "local";
    /* identifiers that are not valid are left out rather than sent */
    e.model = "../x";
    e.version = "1.0";
    e.package = "ABC";
    e.from_version = "1.0.0";
    char *text = mf_devmsg_event_format(&e, &len);
    assert_string_equal(text, "{\"device\":\"pi-0042\",\"msg\":2,\"time\":\"1970-01-01T00:00:00Z\","
                              "\"kind\":\"install_failed\",\"origin\":\"local\",\"from_version\":"
                              "\"1.0.0\",\"reason\":\"Not_found____x\"}");
    json_decref(checked(MF_DEVMSG_EVENT, text, len));
    free(text);

    /* a report's warnings and runtime version get the same treatment */
    const char *warns[] = {"bad \xff byte", "line\nbreak"};
    struct mf_report r = min_report();
    r.warnings = warns;
    r.n_warnings = 2;
    r.runtime_version = "4.6\x80";
    text = mf_devmsg_report_format(&r, &len);
    json_t *o = checked(MF_DEVMSG_REPORT, text, len);
    assert_string_equal(json_string_value(at(o, "validity.warnings[0]")), "bad ? byte");
    assert_string_equal(json_string_value(at(o, "validity.warnings[1]")), "line break");
    assert_string_equal(json_string_value(at(o, "runtime.version")), "4.6?");
    json_decref(o);
    free(text);
}

/* Numbers the checker would refuse are clamped (or left out) by the builder. */
static void test_numbers_clamped(void **state)
{
    (void)state;
    struct mf_report r = full_report();
    r.msg = UINT64_MAX;
    r.time = -5;
    r.candidate.accuracy = NAN;
    r.incumbent.accuracy = 1.5;
    r.candidate.mean_us = -3;
    r.candidate.stddev_us = NAN;
    r.incumbent.mean_us = 1e300;
    r.candidate.p99_us = UINT64_MAX;
    r.p50_ratio = INFINITY;
    r.p99_ratio = NAN;
    r.drop = NAN;
    r.mcnemar_p = 2;
    size_t len;
    char *text = mf_devmsg_report_format(&r, &len);
    json_t *o = checked(MF_DEVMSG_REPORT, text, len);
    assert_int_equal(json_integer_value(at(o, "msg")), (json_int_t)1 << 53);
    assert_string_equal(json_string_value(at(o, "time")), "1970-01-01T00:00:00Z");
    assert_true(json_real_value(at(o, "candidate.accuracy")) == 0);
    assert_true(json_real_value(at(o, "incumbent.accuracy")) == 1);
    assert_int_equal(json_integer_value(at(o, "candidate.latency.mean_us")), 0);
    assert_int_equal(json_integer_value(at(o, "candidate.latency.stddev_us")), 0);
    assert_int_equal(json_integer_value(at(o, "incumbent.latency.mean_us")), (json_int_t)1 << 53);
    assert_int_equal(json_integer_value(at(o, "candidate.latency.p99_us")), (json_int_t)1 << 53);
    assert_int_equal(json_object_size(at(o, "latency_ratio")), 0);
    assert_null(at(o, "gate.drop"));
    assert_true(json_real_value(at(o, "gate.mcnemar_p")) == 1);
    json_decref(o);
    free(text);

    struct mf_event e = small_event();
    e.time = INT64_MAX;
    text = mf_devmsg_event_format(&e, &len);
    o = checked(MF_DEVMSG_EVENT, text, len);
    assert_string_equal(json_string_value(at(o, "time")), "9999-12-31T23:59:59Z");
    json_decref(o);
    free(text);
}

static void expect_devmsg(enum mf_devmsg_kind kind, const char *text, size_t len,
                          const char *device, enum mf_err want, const char *where)
{
    json_t *out = NULL;
    struct mf_diag diag = {0};
    enum mf_err rc = mf_devmsg_check(kind, (const uint8_t *)text, len, device, &out, &diag);
    if (rc != want || (rc != MF_OK && strcmp(diag.where, where) != 0)) {
        print_error("%s: got %s at '%s' (%s), want %s at '%s'\n%.300s\n", mf_devmsg_kind_name(kind),
                    mf_errname(rc), diag.where, diag.what, mf_errname(want), where, text);
        fail();
    }
    if (rc == MF_OK) {
        assert_non_null(out);
        json_decref(out);
        return;
    }
    assert_null(out);
    assert_int_equal(diag.err, want);
    assert_true(diag.what[0] != '\0');
}

/* base with the field at path set to the JSON text value (NULL: removed). */
static char *mutate(const char *base, const char *path, const char *value)
{
    json_t *root = json_loads(base, 0, NULL), *parent = root;
    char *p = mf_xstrdup(path), *last = strrchr(p, '.'), *key = p;
    assert_non_null(root);
    if (last) {
        *last = '\0';
        parent = at(root, p);
        key = last + 1;
    }
    assert_non_null(parent);
    json_t *v = value ? json_loads(value, JSON_DECODE_ANY, NULL) : NULL;
    assert_true(!value || v);
    char *br = strchr(key, '[');
    if (br) {
        *br = '\0';
        json_t *a = json_object_get(parent, key);
        size_t i = strtoul(br + 1, NULL, 10);
        assert_true(json_is_array(a) && i < json_array_size(a));
        if (v)
            json_array_set_new(a, i, v);
        else
            json_array_remove(a, i);
    } else if (v) {
        json_object_set_new(parent, key, v);
    } else {
        assert_int_equal(json_object_del(parent, key), 0);
    }
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    free(p);
    return text;
}

static void test_check_refusals(void **state)
{
    (void)state;
    struct mf_event e = small_event();
    struct mf_report r = full_report(), rm = min_report();
    struct mf_state_msg s = full_state();
    char *ev = mf_devmsg_event_format(&e, NULL), *rep = mf_devmsg_report_format(&r, NULL),
         *repmin = mf_devmsg_report_format(&rm, NULL), *st = mf_devmsg_state_format(&s, NULL);
    char *x513 = repeat("x", 513), *long_detail = mf_xasprintf("\"%s\"", x513);
    char *many =
        repeat("{\"check\":\"c\",\"measured\":0,\"limit\":0,\"excess\":0,\"reason\":\"\"},", 17);
    many[strlen(many) - 1] = '\0';
    char *many_failures = mf_xasprintf("[%s]", many);
    enum { E, R, RMIN, S };
    const char *bases[] = {ev, rep, repmin, st};
    const enum mf_devmsg_kind kinds[] = {MF_DEVMSG_EVENT, MF_DEVMSG_REPORT, MF_DEVMSG_REPORT,
                                         MF_DEVMSG_STATE};
    const struct {
        int base;
        const char *path, *value; /* value: JSON text, NULL = remove the field */
        enum mf_err err;
        const char *where;
    } cases[] = {
        /* event: unknown, missing, wrong type, range, names, hashes, versions */
        {E, "extra", "1", MF_ERR_SCHEMA, "extra"},
        {E, "time", NULL, MF_ERR_SCHEMA, "time"},
        {E, "device", NULL, MF_ERR_SCHEMA, "device"},
        {E, "kind", NULL, MF_ERR_SCHEMA, "kind"},
        {E, "msg", "\"7\"", MF_ERR_SCHEMA, "msg"},
        {E, "msg", "0", MF_ERR_SCHEMA, "msg"},
        {E, "msg", "-1", MF_ERR_SCHEMA, "msg"},
        {E, "msg", "7.0", MF_ERR_SCHEMA, "msg"},
        {E, "msg", "9007199254740993", MF_ERR_SCHEMA, "msg"},
        {E, "msg", "9007199254740992", MF_OK, ""},
        {E, "time", "\"2026-13-01T00:00:00Z\"", MF_ERR_SCHEMA, "time"},
        {E, "time", "\"2026-11-18 11:06:40\"", MF_ERR_SCHEMA, "time"},
        {E, "time", "1795000000", MF_ERR_SCHEMA, "time"},
        {E, "kind", "\"exploded\"", MF_ERR_SCHEMA, "kind"},
        {E, "kind", "null", MF_ERR_SCHEMA, "kind"},
        {E, "kind", "3", MF_ERR_SCHEMA, "kind"},
        {E, "device", "\"pi/0042\"", MF_ERR_SCHEMA, "device"},
        {E, "device", "\"\"", MF_ERR_SCHEMA, "device"},
        {E, "model", "\"a b\"", MF_ERR_SCHEMA, "model"},
        {E, "model", "null", MF_ERR_SCHEMA, "model"},
        {E, "version", "\"1.0\"", MF_ERR_SCHEMA, "version"},
        {E, "from_version", "\"01.0.0\"", MF_ERR_SCHEMA, "from_version"},
        {E, "package", "\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"",
         MF_ERR_SCHEMA, "package"},
        {E, "package", "\"1111\"", MF_ERR_SCHEMA, "package"},
        {E, "origin", "\"\"", MF_ERR_SCHEMA, "origin"},
        {E, "reason", "\"two words\"", MF_ERR_SCHEMA, "reason"},
        {E, "detail", long_detail, MF_ERR_SCHEMA, "detail"},
        {E, "detail", "[]", MF_ERR_SCHEMA, "detail"},
        {E, "desired_seq", "0", MF_ERR_SCHEMA, "desired_seq"},
        {E, "rollout", "-3", MF_ERR_SCHEMA, "rollout"},
        {E, "failures", "{}", MF_ERR_SCHEMA, "failures"},
        {E, "failures", many_failures, MF_ERR_SCHEMA, "failures"},
        {E, "failures", "[]", MF_OK, ""},
        {E, "failures[0]", "\"x\"", MF_ERR_SCHEMA, "failures[0]"},
        {E, "failures[0].extra", "1", MF_ERR_SCHEMA, "failures[0].extra"},
        {E, "failures[0].check", NULL, MF_ERR_SCHEMA, "failures[0].check"},
        {E, "failures[0].limit", "\"0.9\"", MF_ERR_SCHEMA, "failures[0].limit"},
        {E, "failures[0].measured", "1e300", MF_ERR_SCHEMA, "failures[0].measured"},
        {E, "failures[0].excess", "3", MF_OK, ""},
        /* report: nested unknown fields and every level's types and ranges */
        {R, "extra", "true", MF_ERR_SCHEMA, "extra"},
        {R, "candidate.latency.p95_us", "1", MF_ERR_SCHEMA, "candidate.latency.p95_us"},
        {R, "candidate.latency.p99_us", "-1", MF_ERR_SCHEMA, "candidate.latency.p99_us"},
        {R, "candidate.latency.p99_us", "1.5", MF_ERR_SCHEMA, "candidate.latency.p99_us"},
        {R, "candidate.latency.count", NULL, MF_ERR_SCHEMA, "candidate.latency.count"},
        {R, "candidate.latency", "[]", MF_ERR_SCHEMA, "candidate.latency"},
        {R, "candidate.accuracy", "1.5", MF_ERR_SCHEMA, "candidate.accuracy"},
        {R, "candidate.accuracy", "-0.1", MF_ERR_SCHEMA, "candidate.accuracy"},
        {R, "candidate.accuracy", "\"0.9\"", MF_ERR_SCHEMA, "candidate.accuracy"},
        {R, "candidate.accuracy", "1", MF_OK, ""},
        {R, "candidate.load_us", "1.5", MF_ERR_SCHEMA, "candidate.load_us"},
        {R, "candidate.peak_rss_bytes", "-1", MF_ERR_SCHEMA, "candidate.peak_rss_bytes"},
        {R, "candidate", NULL, MF_ERR_SCHEMA, "candidate"},
        {R, "candidate", "null", MF_ERR_SCHEMA, "candidate"},
        {R, "incumbent.package", "\"abc\"", MF_ERR_SCHEMA, "incumbent.package"},
        {R, "incumbent.version", NULL, MF_ERR_SCHEMA, "incumbent.version"},
        {R, "eval.hash", "\"" PKG_A "0\"", MF_ERR_SCHEMA, "eval.hash"},
        {R, "eval.metric", "\"\"", MF_ERR_SCHEMA, "eval.metric"},
        {R, "eval.n", "-1", MF_ERR_SCHEMA, "eval.n"},
        {R, "run.threads", "-1", MF_ERR_SCHEMA, "run.threads"},
        {R, "run.warmup", "4294967296", MF_ERR_SCHEMA, "run.warmup"},
        {R, "run.n", "1000", MF_ERR_SCHEMA, "run.n"},
        {R, "runtime.name", "\"on nx\"", MF_ERR_SCHEMA, "runtime.name"},
        {R, "runtime.version", NULL, MF_OK, ""},
        {R, "runtime", "\"onnx\"", MF_ERR_SCHEMA, "runtime"},
        {R, "agent_version", "\"v1\"", MF_ERR_SCHEMA, "agent_version"},
        {R, "hw_class", "\"pi 4\"", MF_ERR_SCHEMA, "hw_class"},
        {R, "model_bytes", "-1", MF_ERR_SCHEMA, "model_bytes"},
        {R, "gate.pass", "1", MF_ERR_SCHEMA, "gate.pass"},
        {R, "gate.pass", NULL, MF_ERR_SCHEMA, "gate.pass"},
        {R, "gate.mcnemar_p", "-0.1", MF_ERR_SCHEMA, "gate.mcnemar_p"},
        {R, "gate.drop", "2", MF_ERR_SCHEMA, "gate.drop"},
        {R, "gate.failures", NULL, MF_ERR_SCHEMA, "gate.failures"},
        {R, "gate.why", "1", MF_ERR_SCHEMA, "gate.why"},
        {R, "gate.failures", "[{\"check\":\"x\"}]", MF_ERR_SCHEMA, "gate.failures[0].measured"},
        {R, "latency_ratio.p99", "1e300", MF_ERR_SCHEMA, "latency_ratio.p99"},
        {R, "latency_ratio.p50", "-1", MF_ERR_SCHEMA, "latency_ratio.p50"},
        {R, "latency_ratio", NULL, MF_OK, ""},
        {R, "paired", NULL, MF_ERR_SCHEMA, "paired"},
        {R, "paired.both", "-5", MF_ERR_SCHEMA, "paired.both"},
        {R, "paired.neither", NULL, MF_ERR_SCHEMA, "paired.neither"},
        {R, "validity.warnings[0]", "3", MF_ERR_SCHEMA, "validity.warnings[0]"},
        {R, "validity.warnings[1]", long_detail, MF_ERR_SCHEMA, "validity.warnings[1]"},
        {R, "validity.valid", "null", MF_ERR_SCHEMA, "validity.valid"},
        {R, "validity.warnings", NULL, MF_ERR_SCHEMA, "validity.warnings"},
        {R, "desired_seq", "0", MF_ERR_SCHEMA, "desired_seq"},
        /* what only comes with an incumbent */
        {RMIN, "gate.drop", "0.1", MF_ERR_SCHEMA, "gate.drop"},
        {RMIN, "gate.mcnemar_p", "0.1", MF_ERR_SCHEMA, "gate.mcnemar_p"},
        {RMIN, "latency_ratio", "{}", MF_ERR_SCHEMA, "latency_ratio"},
        {RMIN, "paired", "{\"both\":0,\"only_candidate\":0,\"only_incumbent\":0,\"neither\":0}",
         MF_ERR_SCHEMA, "incumbent"},
        /* state */
        {S, "models[0].previous.size", "1", MF_ERR_SCHEMA, "models[0].previous.size"},
        {S, "models[0].previous.version", "\"1\"", MF_ERR_SCHEMA, "models[0].previous.version"},
        {S, "models[0].previous", "\"1.1.0\"", MF_ERR_SCHEMA, "models[0].previous"},
        {S, "models[0].previous", NULL, MF_ERR_SCHEMA, "models[0].previous"},
        {S, "models[1].name", "\"digits\"", MF_ERR_SCHEMA, "models[1].name"},
        {S, "models[1].package", "7", MF_ERR_SCHEMA, "models[1].package"},
        {S, "models[1]", "[]", MF_ERR_SCHEMA, "models[1]"},
        {S, "runtimes[1]", "\"a/b\"", MF_ERR_SCHEMA, "runtimes[1]"},
        {S, "runtimes", "\"onnx\"", MF_ERR_SCHEMA, "runtimes"},
        {S, "op", "5", MF_ERR_SCHEMA, "op"},
        {S, "op", NULL, MF_ERR_SCHEMA, "op"},
        {S, "op.kind", NULL, MF_ERR_SCHEMA, "op.kind"},
        {S, "op.version", "\"x\"", MF_ERR_SCHEMA, "op.version"},
        {S, "op.pid", "1", MF_ERR_SCHEMA, "op.pid"},
        {S, "op", "null", MF_OK, ""},
        {S, "disk_free", "-1", MF_ERR_SCHEMA, "disk_free"},
        {S, "spool_dropped", "1e3", MF_ERR_SCHEMA, "spool_dropped"},
        {S, "mem_available", NULL, MF_ERR_SCHEMA, "mem_available"},
        {S, "msg", "-1", MF_ERR_SCHEMA, "msg"},
        {S, "msg", "0", MF_OK, ""},
        {S, "desired_seq", NULL, MF_ERR_SCHEMA, "desired_seq"},
        {S, "extra", "{}", MF_ERR_SCHEMA, "extra"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *text = mutate(bases[cases[i].base], cases[i].path, cases[i].value);
        expect_devmsg(kinds[cases[i].base], text, strlen(text), "pi-0042", cases[i].err,
                      cases[i].where);
        free(text);
    }

    /* whole-message refusals */
    char *big = mf_xmalloc(MF_DEVMSG_MAX + 2);
    memset(big, ' ', MF_DEVMSG_MAX + 1);
    memcpy(big, ev, strlen(ev)); /* valid JSON, then too much white space */
    big[MF_DEVMSG_MAX + 1] = '\0';
    expect_devmsg(MF_DEVMSG_EVENT, big, MF_DEVMSG_MAX + 1, "pi-0042", MF_ERR_TOO_LARGE, "");
    expect_devmsg(MF_DEVMSG_EVENT, big, MF_DEVMSG_MAX, "pi-0042", MF_OK, "");
    free(big);
    static const char *const broken[] = {
        "",
        "{\"device\":",
        "{\"device\":\"pi-0042\"}}",
        "{\"device\":\"pi-0042\",\"device\":\"pi-0042\"}",
        "{\"device\":\"pi\\u0000\"}",
        "{\"device\":\"pi-0042\",\"x\":[[[[[[[[]]]]]]]]}",
        "\"pi-0042\"",
        "{'device':1}",
    };
    for (size_t i = 0; i < sizeof broken / sizeof broken[0]; i++)
        expect_devmsg(MF_DEVMSG_STATE, broken[i], strlen(broken[i]), "pi-0042", MF_ERR_PARSE, "");
    /* depth 8 parses (and is then refused for its content) */
    const char *deep8 = "{\"device\":\"pi-0042\",\"x\":[[[[[[[]]]]]]]}";
    expect_devmsg(MF_DEVMSG_STATE, deep8, strlen(deep8), "pi-0042", MF_ERR_SCHEMA, "x");
    expect_devmsg(MF_DEVMSG_EVENT, "[]", 2, "pi-0042", MF_ERR_SCHEMA, "");
    expect_devmsg(MF_DEVMSG_REPORT, "{}", 2, "pi-0042", MF_ERR_SCHEMA, "device");

    /* another device's message on this topic */
    expect_devmsg(MF_DEVMSG_EVENT, ev, strlen(ev), "pi-0043", MF_ERR_WRONG_TARGET, "device");
    expect_devmsg(MF_DEVMSG_REPORT, rep, strlen(rep), "pi-004", MF_ERR_WRONG_TARGET, "device");
    expect_devmsg(MF_DEVMSG_STATE, st, strlen(st), "PI-0042", MF_ERR_WRONG_TARGET, "device");

    /* the wrong kind: a message of another kind, or a kind that is not JSON */
    expect_devmsg(MF_DEVMSG_REPORT, ev, strlen(ev), "pi-0042", MF_ERR_SCHEMA, "kind");
    expect_devmsg(MF_DEVMSG_STATE, rep, strlen(rep), "pi-0042", MF_ERR_SCHEMA, "model");
    expect_devmsg(MF_DEVMSG_EVENT, st, strlen(st), "pi-0042", MF_ERR_SCHEMA, "hw_class");
    expect_devmsg(MF_DEVMSG_DESIRED, ev, strlen(ev), "pi-0042", MF_ERR_USAGE, "");
    expect_devmsg(MF_DEVMSG_ONLINE, "1", 1, "pi-0042", MF_ERR_USAGE, "");
    expect_devmsg(MF_DEVMSG__COUNT, ev, strlen(ev), "pi-0042", MF_ERR_USAGE, "");

    /* diag may be NULL */
    json_t *out = NULL;
    assert_int_equal(
        mf_devmsg_check(MF_DEVMSG_EVENT, (const uint8_t *)"x", 1, "pi-0042", &out, NULL),
        MF_ERR_PARSE);
    assert_null(out);

    free(many);
    free(many_failures);
    free(x513);
    free(long_detail);
    free(ev);
    free(rep);
    free(repmin);
    free(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_format_is_canonical, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_sign_and_open, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_refusals, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_signed_but_malformed, fx_setup, fx_teardown),
        cmocka_unit_test(test_topics),
        cmocka_unit_test(test_event_format_exact),
        cmocka_unit_test(test_report_roundtrip),
        cmocka_unit_test(test_state_roundtrip),
        cmocka_unit_test(test_largest_messages),
        cmocka_unit_test(test_sanitize_and_cut),
        cmocka_unit_test(test_numbers_clamped),
        cmocka_unit_test(test_check_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
