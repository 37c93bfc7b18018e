/* fuzz_devmsg.c — libFuzzer target for the device -> server messages
 * (telemetry/devmsg.h). The input is read three ways:
 *  1. as a received payload, checked as a state, an event and a report for
 *     device pi-0042: a refusal names its code and hands nothing out; at most
 *     one kind accepts it; what is accepted is an object for pi-0042, is
 *     refused for pi-0043 (wrong_target), and its compact re-dump passes again;
 *  2. as strings and numbers fed to the three builders (split at NUL bytes;
 *     numbers are the input's bytes, so NaN, infinities and huge values come
 *     up): whatever a builder writes must pass mf_devmsg_check;
 *  3. as a topic (mf_topic_parse, which must agree with mf_topic) and as a
 *     device id (mf_topic accepts exactly the valid names). */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_TARGET "fuzz_devmsg"
#include "common/mem.h"
#include "fuzz_check.h"
#include "packaging/manifest.h"
#include "telemetry/devmsg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define DEVICE "pi-0042"
#define PKG_A  "1111111111111111111111111111111111111111111111111111111111111111"
#define PKG_B  "2222222222222222222222222222222222222222222222222222222222222222"
#define PIECES 24

static const enum mf_devmsg_kind kinds[] = {MF_DEVMSG_STATE, MF_DEVMSG_EVENT, MF_DEVMSG_REPORT};

/* The input's bytes as a cyclic source of numbers. */
struct src {
    const uint8_t *d;
    size_t n, off;
};

static uint64_t src_u64(struct src *s)
{
    uint64_t v = 0;
    for (int i = 0; i < 8 && s->n; i++)
        v = (v << 8) | s->d[s->off++ % s->n];
    return v;
}

static double src_double(struct src *s)
{
    uint64_t bits = src_u64(s);
    double v;
    /* one in four a plain fraction, so ordinary values come up too */
    if ((bits & 3) == 0)
        return (double)(bits >> 11) / (double)(UINT64_C(1) << 53);
    memcpy(&v, &bits, sizeof v);
    return v;
}

static void must_pass(enum mf_devmsg_kind kind, const char *text, size_t len, const char *who)
{
    json_t *out = NULL;
    struct mf_diag diag = {0};
    enum mf_err rc;

    if (len != strlen(text))
        fail("%s: length %zu for a text of %zu bytes", who, len, strlen(text));
    rc = mf_devmsg_check(kind, (const uint8_t *)text, len, DEVICE, &out, &diag);
    if (rc != MF_OK)
        fail("%s wrote what the check refuses: %s at %s: %s\n%s", who, mf_errname(rc), diag.where,
             diag.what, text);
    json_decref(out);
}

static void check_payload(const uint8_t *data, size_t size)
{
    const char *accepted = NULL;

    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        json_t *out = NULL, *other = NULL;
        struct mf_diag diag = {0};
        enum mf_err rc = mf_devmsg_check(kinds[i], data, size, DEVICE, &out, &diag);
        check_diag("mf_devmsg_check", rc, &diag);
        if (rc != MF_OK) {
            if (out)
                fail("a refused %s handed out a value", mf_devmsg_kind_name(kinds[i]));
            if (rc != MF_ERR_TOO_LARGE && rc != MF_ERR_PARSE && rc != MF_ERR_SCHEMA &&
                rc != MF_ERR_WRONG_TARGET)
                fail("%s refused with %s", mf_devmsg_kind_name(kinds[i]), mf_errname(rc));
            if (rc == MF_ERR_TOO_LARGE && size <= MF_DEVMSG_MAX)
                fail("too_large for %zu bytes", size);
            continue;
        }
        if (size > MF_DEVMSG_MAX)
            fail("accepted %zu bytes", size);
        if (accepted)
            fail("accepted both as %s and as %s", accepted, mf_devmsg_kind_name(kinds[i]));
        accepted = mf_devmsg_kind_name(kinds[i]);
        if (!json_is_object(out) ||
            strcmp(json_string_value(json_object_get(out, "device")), DEVICE) != 0)
            fail("accepted a %s that is not an object for " DEVICE, accepted);
        rc = mf_devmsg_check(kinds[i], data, size, "pi-0043", &other, &diag);
        if (rc != MF_ERR_WRONG_TARGET || other)
            fail("a %s for " DEVICE " gave %s on pi-0043's topic", accepted, mf_errname(rc));

        char *again = json_dumps(out, JSON_COMPACT);
        if (!again)
            fail("an accepted %s does not dump", accepted);
        json_decref(out);
        out = NULL;
        size_t alen = strlen(again);
        rc = mf_devmsg_check(kinds[i], (const uint8_t *)again, alen, DEVICE, &out, &diag);
        if (rc != (alen > MF_DEVMSG_MAX ? MF_ERR_TOO_LARGE : MF_OK))
            fail("the re-dump of an accepted %s is refused: %s at %s: %s", accepted, mf_errname(rc),
                 diag.where, diag.what);
        json_decref(out);
        free(again);
    }
}

static void check_builders(const uint8_t *data, size_t size)
{
    char *buf = mf_xmalloc(size + 1);
    const char *p[PIECES] = {0};
    size_t np = 0, len;
    struct src s = {data, size, 0};

    memcpy(buf, data, size);
    buf[size] = '\0';
    for (size_t i = 0; i <= size && np < PIECES;) {
        p[np++] = buf + i;
        i += strlen(buf + i) + 1;
    }

    struct mf_event_failure fails[MF_DEVMSG_ITEMS_MAX + 2];
    for (size_t i = 0; i < sizeof fails / sizeof fails[0]; i++)
        fails[i] = (struct mf_event_failure){.check = p[(i + 3) % PIECES],
                                             .measured = src_double(&s),
                                             .limit = src_double(&s),
                                             .excess = src_double(&s),
                                             .reason = p[(i + 4) % PIECES]};
    size_t nf = size ? data[0] % (sizeof fails / sizeof fails[0] + 1) : 0;

    /* an event: every string from the input (invalid identifiers are left out) */
    struct mf_event e = {.device = DEVICE,
                         .msg = src_u64(&s) | 1,
                         .time = (int64_t)src_u64(&s),
                         .kind = (enum mf_event_kind)(src_u64(&s) % MF_EVENT__COUNT),
                         .origin = p[1],
                         .model = p[2],
                         .version = p[3],
                         .package = p[4],
                         .from_version = p[5],
                         .desired_seq = src_u64(&s),
                         .rollout = (int64_t)src_u64(&s),
                         .reason = p[6],
                         .detail = p[0],
                         .failures = fails,
                         .n_failures = nf};
    char *text = mf_devmsg_event_format(&e, &len);
    must_pass(MF_DEVMSG_EVENT, text, len, "mf_devmsg_event_format");
    free(text);

    /* a report: valid identifiers, text and numbers from the input */
    const char *warnings[MF_DEVMSG_ITEMS_MAX + 2];
    for (size_t i = 0; i < sizeof warnings / sizeof warnings[0]; i++)
        warnings[i] = p[(i + 7) % PIECES] ? p[(i + 7) % PIECES] : "";
    struct mf_report_model models[2];
    for (size_t i = 0; i < 2; i++)
        models[i] = (struct mf_report_model){.version = i ? "1.0.0" : "2.0.0-rc.1+b",
                                             .package = i ? PKG_B : PKG_A,
                                             .accuracy = src_double(&s),
                                             .correct = src_u64(&s),
                                             .load_us = src_u64(&s),
                                             .first_us = src_u64(&s),
                                             .count = src_u64(&s),
                                             .mean_us = src_double(&s),
                                             .stddev_us = src_double(&s),
                                             .p50_us = src_u64(&s),
                                             .p90_us = src_u64(&s),
                                             .p99_us = src_u64(&s),
                                             .max_us = src_u64(&s),
                                             .peak_rss_bytes = src_u64(&s)};
    struct mf_report r = {.device = DEVICE,
                          .hw_class = "pi4",
                          .model = "digits",
                          .agent_version = "0.4.0",
                          .runtime = "onnx",
                          .runtime_version = p[8],
                          .msg = src_u64(&s) | 1,
                          .time = (int64_t)src_u64(&s),
                          .desired_seq = src_u64(&s),
                          .rollout = (int64_t)src_u64(&s),
                          .warmup = (unsigned)src_u64(&s),
                          .threads = (unsigned)src_u64(&s),
                          .eval_hash = PKG_B,
                          .n = src_u64(&s),
                          .metric = p[9],
                          .model_bytes = src_u64(&s),
                          .candidate = models[0],
                          .has_incumbent = src_u64(&s) & 1,
                          .incumbent = models[1],
                          .both = src_u64(&s),
                          .only_candidate = src_u64(&s),
                          .only_incumbent = src_u64(&s),
                          .neither = src_u64(&s),
                          .p50_ratio = src_double(&s),
                          .p99_ratio = src_double(&s),
                          .pass = src_u64(&s) & 1,
                          .drop = src_double(&s),
                          .mcnemar_p = src_double(&s),
                          .failures = fails,
                          .n_failures = nf,
                          .valid = src_u64(&s) & 1,
                          .warnings = warnings,
                          .n_warnings = size ? data[size - 1] % (MF_DEVMSG_ITEMS_MAX + 3) : 0};
    text = mf_devmsg_report_format(&r, &len);
    must_pass(MF_DEVMSG_REPORT, text, len, "mf_devmsg_report_format");
    free(text);

    /* a state: the op in flight from the input */
    static const char *const runtimes[] = {"onnx", "tflite"};
    static const struct mf_state_msg_model sm[] = {
        {.name = "digits",
         .version = "2.0.0",
         .package = PKG_A,
         .previous_version = "1.0.0",
         .previous_package = PKG_B},
        {.name = "keyword", .version = "0.9.0", .package = PKG_B},
    };
    struct mf_state_msg st = {.device = DEVICE,
                              .hw_class = "jetson-orin",
                              .agent_version = "0.4.0",
                              .msg = src_u64(&s),
                              .time = (int64_t)src_u64(&s),
                              .desired_seq = src_u64(&s),
                              .runtimes = runtimes,
                              .n_runtimes = src_u64(&s) % 3,
                              .models = sm,
                              .n_models = src_u64(&s) % 3,
                              .op_kind = p[10],
                              .op_model = p[11],
                              .op_version = p[12],
                              .op_phase = p[13],
                              .disk_free = src_u64(&s),
                              .mem_available = src_u64(&s),
                              .spool_dropped = src_u64(&s)};
    text = mf_devmsg_state_format(&st, &len);
    must_pass(MF_DEVMSG_STATE, text, len, "mf_devmsg_state_format");
    free(text);

    /* the first piece as a topic and as a device id */
    char dev[MF_TOPIC_MAX], t[MF_TOPIC_MAX];
    enum mf_devmsg_kind k;
    if (mf_topic_parse(buf, dev, &k) == MF_OK) {
        if (mf_topic(t, dev, k) != MF_OK || strcmp(t, buf) != 0)
            fail("topic '%s' parsed to (%s, %s), which makes another topic", buf, dev,
                 mf_devmsg_kind_name(k));
    }
    enum mf_err trc = mf_topic(t, buf, MF_DEVMSG_EVENT);
    if ((trc == MF_OK) != mf_pkg_name_ok(buf))
        fail("mf_topic on '%s' gave %s", buf, mf_errname(trc));
    if (trc == MF_OK &&
        (mf_topic_parse(t, dev, &k) != MF_OK || strcmp(dev, buf) != 0 || k != MF_DEVMSG_EVENT))
        fail("topic '%s' does not parse back", t);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_payload(data, size);
    if (size <= 2 * MF_DEVMSG_MAX)
        check_builders(data, size);
    return 0;
}
