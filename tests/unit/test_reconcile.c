/* test_reconcile.c — agent/reconcile: the whole install path on real packages
 * of the fixture models, benchmarked by the real OpenCV runner (skipped when
 * it is not built): fp32 first, int8 activates against it, the over-quantized
 * int2 is refused and int8 stays; desired states refused (forged, replayed,
 * other device) with their events; a rollback through the desired state
 * without a download; local rollback; broken runners (crash, hang, garbage)
 * and broken packages each with their event; and the kill test: a forked
 * agent SIGKILLed at every instrumented point of an install, then restarted,
 * must leave `current` on a complete, verified slot and reach the desired
 * state in the end. The fetch op is a fake that copies from the test's
 * packages (downloads have their own test, unit_download). */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/config.h"
#include "agent/install.h"
#include "agent/reconcile.h"
#include "agent/spool.h"
#include "agent/state.h"
#include "common/encode.h"
#include "common/fs.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/mem.h"
#include "packaging/key.h"
#include "packaging/pack.h"
#include "telemetry/desired.h"
#include "unit_pack.h"
#include "unit_tmp.h"

#ifndef MF_OPENCV_RUNNER
#define MF_OPENCV_RUNNER ""
#endif

/* P_FAKE's "model" is the text "360": what the fake runners read as n. */
enum { P_FP32, P_INT8, P_INT2, P_OTHER_HW, P_STRANGER, P_FAKE, N_PKGS };
static const char *const versions[N_PKGS] = {"1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0", "1.5.0"};
static const char *const onnx[N_PKGS] = {"digits-fp32.onnx", "digits-int8.onnx", "digits-int2.onnx",
                                         "digits-int8.onnx", "digits-int8.onnx", "fake-n360.onnx"};

static char *root;
static struct mf_key_secret pub_key, srv_key, stranger;
static char *pkgs[N_PKGS];
static char ids[N_PKGS][MF_HASH_HEX];
static uint64_t sizes[N_PKGS];
static char *trusted_pub;
static bool have_runner;
static unsigned fetches;

/* ---- fixtures ---- */

static void pack(int i, const char *hw_class, const struct mf_key_secret *k)
{
    struct mf_strlist hw = {0};
    mf_strlist_push(&hw, hw_class);
    char *src = i == P_FAKE ? mf_xasprintf("%s/%s", root, onnx[i])
                            : mf_xasprintf("%s/%s", MF_FIXTURES, onnx[i]);
    struct mf_diag d = {0};
    pkgs[i] = mf_xasprintf("%s/pkg-%d.mfpkg", root, i);
    assert_int_equal(unit_pack_digits(versions[i], src, onnx[i], &hw, 0.95, k, pkgs[i], NULL),
                     MF_OK);
    uint8_t h[MF_HASH_BYTES];
    assert_int_equal(mf_hash_file(pkgs[i], h, &sizes[i], &d), MF_OK);
    mf_hex_encode(ids[i], h, sizeof h);
    free(src);
    mf_strlist_free(&hw);
}

static int setup(void **state)
{
    (void)state;
    mf_crypto_init();
    mf_log_set_level(MF_LOG_ERROR);
    root = unit_tmpdir("reconcile");
    unit_seed_key(&pub_key, 7);
    unit_seed_key(&srv_key, 8);
    unit_seed_key(&stranger, 9);
    char *fake = mf_xasprintf("%s/%s", root, onnx[P_FAKE]);
    FILE *f = fopen(fake, "w");
    fputs("360\n", f);
    fclose(f);
    free(fake);
    for (int i = 0; i < N_PKGS; i++)
        pack(i, i == P_OTHER_HW ? "jetson-orin" : "rpi5", i == P_STRANGER ? &stranger : &pub_key);
    /* The device trusts the publisher (packages) and the server (desired). */
    struct mf_diag d = {0};
    char *prefix = mf_xasprintf("%s/publisher", root);
    assert_int_equal(mf_key_write_pair(&pub_key, prefix, &d), MF_OK);
    trusted_pub = mf_xasprintf("%s.pub", prefix);
    free(prefix);
    prefix = mf_xasprintf("%s/server", root);
    assert_int_equal(mf_key_write_pair(&srv_key, prefix, &d), MF_OK);
    free(prefix);
    have_runner = MF_OPENCV_RUNNER[0] && access(MF_OPENCV_RUNNER, X_OK) == 0;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < N_PKGS; i++)
        free(pkgs[i]);
    free(trusted_pub);
    unit_tmpdir_free(root);
    return 0;
}

/* The fake fetch: the package whose id is asked for, copied from pkgs[]. */
static enum mf_err fake_fetch(void *ctx, const struct mf_desired_model *m, const char *dir,
                              char **path, struct mf_diag *diag)
{
    (void)ctx;
    fetches++;
    for (int i = 0; i < N_PKGS; i++) {
        if (strcmp(m->package, ids[i]) != 0)
            continue;
        struct mf_buf b;
        enum mf_err err = mf_fs_read_file(pkgs[i], 1 << 26, &b, diag);
        if (err != MF_OK)
            return err;
        char *p = mf_xasprintf("%s/%s.mfpkg", dir, ids[i]);
        err = mf_fs_write_file(p, b.data, b.len, 0600, diag);
        mf_buf_free(&b);
        if (err != MF_OK) {
            free(p);
            return err;
        }
        *path = p;
        return MF_OK;
    }
    return mf_diag_set(diag, MF_ERR_NOT_FOUND, m->package, "no such package");
}

static const struct mf_agent_ops ops = {.fetch = fake_fetch};

/* A config for a fresh state directory; runner as given. */
static void config(struct mf_agent_config *c, const char *runner)
{
    static int n;
    mf_cfg_defaults(mf_agent_config_table, c);
    free(c->device_id);
    c->device_id = mf_xstrdup("pi-0042");
    free(c->hw_class);
    c->hw_class = mf_xstrdup("rpi5");
    free(c->state_dir);
    c->state_dir = mf_xasprintf("%s/state-%d", root, n++);
    char *line = mf_xasprintf("onnx=%s", runner);
    mf_strlist_push(&c->runners, line);
    free(line);
    char *srv = mf_xasprintf("%s/server.pub", root);
    mf_strlist_push(&c->trusted_keys, trusted_pub);
    mf_strlist_push(&c->trusted_keys, srv);
    free(srv);
    c->runner_timeout = 60;
    c->runner_memory = 0;
    c->benchmark_warmup = 1;
}

static struct mf_agent *open_agent(const struct mf_agent_config *c)
{
    struct mf_agent *ag = NULL;
    struct mf_diag d = {0};
    enum mf_err err = mf_agent_open(c, &ops, NULL, &ag, &d);
    if (err != MF_OK)
        fail_msg("mf_agent_open: %s: %s", d.where, d.what);
    return ag;
}

static char *desired_msg(const struct mf_key_secret *k, const char *device, uint64_t seq, int pkg,
                         size_t *len)
{
    struct mf_desired_model m = {
        .name = "digits", .version = (char *)versions[pkg], .size = sizes[pkg]};
    memcpy(m.package, ids[pkg], MF_HASH_HEX);
    struct mf_desired d = {.device = (char *)device,
                           .seq = seq,
                           .issued = 1767225600,
                           .rollout = 3,
                           .models = &m,
                           .n_models = 1};
    return mf_desired_sign(&d, k, len);
}

static enum mf_err apply(struct mf_agent *ag, const struct mf_key_secret *k, const char *device,
                         uint64_t seq, int pkg, bool *quiet)
{
    size_t len;
    char *msg = desired_msg(k, device, seq, pkg, &len);
    struct mf_diag d = {0};
    enum mf_err err = mf_agent_desired(ag, (const uint8_t *)msg, len, quiet, &d);
    free(msg);
    return err;
}

/* Pending spool messages of a kind as parsed JSON, oldest first (caller
 * decrefs the array). */
static json_t *spooled(struct mf_agent *ag, enum mf_devmsg_kind want)
{
    struct mf_spool *sp = mf_agent_spool(ag);
    json_t *arr = json_array();
    for (size_t i = 0; i < mf_spool_count(sp); i++) {
        uint64_t msg;
        enum mf_devmsg_kind kind;
        uint8_t *p = NULL;
        size_t len;
        struct mf_diag d = {0};
        assert_int_equal(mf_spool_get(sp, i, &msg, &kind, &p, &len, &d), MF_OK);
        json_t *o = NULL;
        /* every message the agent spools passes the server's check */
        assert_int_equal(mf_devmsg_check(kind, p, len, "pi-0042", &o, &d), MF_OK);
        if (kind == want)
            json_array_append(arr, o);
        json_decref(o);
        free(p);
    }
    return arr;
}

/* The kinds (and reasons) of the events spooled after the first `skip`. */
static char *event_trail(struct mf_agent *ag, size_t skip)
{
    json_t *ev = spooled(ag, MF_DEVMSG_EVENT);
    struct mf_buf b;
    mf_buf_init(&b, 1 << 20);
    for (size_t i = skip; i < json_array_size(ev); i++) {
        json_t *e = json_array_get(ev, i);
        const char *reason = json_string_value(json_object_get(e, "reason"));
        assert_int_equal(mf_buf_printf(&b, "%s%s%s%s", b.len ? " " : "",
                                       json_string_value(json_object_get(e, "kind")),
                                       reason ? ":" : "", reason ? reason : ""),
                         MF_OK);
    }
    json_decref(ev);
    assert_int_equal(mf_buf_append(&b, "", 1), MF_OK);
    return (char *)mf_buf_steal(&b, NULL);
}

static size_t n_events(struct mf_agent *ag)
{
    json_t *ev = spooled(ag, MF_DEVMSG_EVENT);
    size_t n = json_array_size(ev);
    json_decref(ev);
    return n;
}

static void expect_trail(struct mf_agent *ag, size_t skip, const char *want)
{
    char *got = event_trail(ag, skip);
    if (strcmp(got, want) != 0)
        fail_msg("events: got \"%s\", want \"%s\"", got, want);
    free(got);
}

static const char *current_package(struct mf_agent *ag)
{
    const struct mf_state *s = mf_agent_state(ag);
    return s->n_models ? s->models[0].current.package : "";
}

/* `current` on disk names a complete slot whose files all hash right, and
 * the state agrees with it. */
static void expect_current_ok(const struct mf_agent_config *c, const char *want_pkg_id)
{
    char slot[MF_INSTALL_SLOT_MAX];
    struct mf_diag d = {0};
    struct mf_state *s = NULL;
    assert_int_equal(mf_install_current(c->state_dir, "digits", slot, &d), MF_OK);
    char *path = mf_install_slot_path(c->state_dir, "digits", slot);
    if (mf_install_check_slot(path, true, &d) != MF_OK)
        fail_msg("current %s is not complete: %s", slot, d.what);
    free(path);
    assert_int_equal(mf_state_load(c->state_dir, &s, &d), MF_OK);
    assert_int_equal(s->n_models, 1);
    assert_string_equal(s->models[0].current.slot, slot);
    if (want_pkg_id)
        assert_string_equal(s->models[0].current.package, want_pkg_id);
    mf_state_free(s);
}

#define NEED_RUNNER()                                                                              \
    do {                                                                                           \
        if (!have_runner) {                                                                        \
            print_message("the OpenCV runner is not built: skipped\n");                            \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

/* ---- the happy path and the gate ---- */

static void test_fp32_int8_int2(void **state)
{
    (void)state;
    NEED_RUNNER();
    struct mf_agent_config c;
    config(&c, MF_OPENCV_RUNNER);
    struct mf_agent *ag = open_agent(&c);

    assert_int_equal(apply(ag, &srv_key, "pi-0042", 1, P_FP32, NULL), MF_OK);
    expect_trail(ag, 0, "desired_accepted activated");
    assert_string_equal(current_package(ag), ids[P_FP32]);
    expect_current_ok(&c, ids[P_FP32]);

    assert_int_equal(apply(ag, &srv_key, "pi-0042", 2, P_INT8, NULL), MF_OK);
    expect_trail(ag, 2, "desired_accepted activated");
    expect_current_ok(&c, ids[P_INT8]);
    const struct mf_state *s = mf_agent_state(ag);
    assert_string_equal(s->models[0].previous.package, ids[P_FP32]);

    /* int8 vs fp32: the report carries the paired table */
    json_t *reports = spooled(ag, MF_DEVMSG_REPORT);
    assert_int_equal(json_array_size(reports), 2);
    json_t *r = json_array_get(reports, 1);
    assert_true(json_is_object(json_object_get(r, "incumbent")));
    json_t *paired = json_object_get(r, "paired");
    assert_int_equal(json_integer_value(json_object_get(paired, "both")) +
                         json_integer_value(json_object_get(paired, "only_candidate")) +
                         json_integer_value(json_object_get(paired, "only_incumbent")) +
                         json_integer_value(json_object_get(paired, "neither")),
                     360);
    assert_true(json_is_true(json_object_get(json_object_get(r, "gate"), "pass")));
    json_decref(reports);

    /* int2: refused by both the floor and the paired drop; int8 stays */
    assert_int_equal(apply(ag, &srv_key, "pi-0042", 3, P_INT2, NULL), MF_OK);
    expect_trail(ag, 4, "desired_accepted refused:min_accuracy");
    expect_current_ok(&c, ids[P_INT8]);
    json_t *ev = spooled(ag, MF_DEVMSG_EVENT);
    json_t *refused = json_array_get(ev, 5);
    json_t *fails = json_object_get(refused, "failures");
    assert_int_equal(json_array_size(fails), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(fails, 1), "check")),
                        "max_accuracy_drop");
    assert_non_null(strstr(json_string_value(json_object_get(refused, "detail")), "below"));
    json_decref(ev);
    reports = spooled(ag, MF_DEVMSG_REPORT);
    r = json_array_get(reports, 2);
    assert_false(json_is_true(json_object_get(json_object_get(r, "gate"), "pass")));
    assert_true(
        json_integer_value(json_object_get(json_object_get(r, "paired"), "only_incumbent")) > 90);
    json_decref(reports);
    /* the refused slot is gone; int8 and fp32 remain */
    char *mdir = mf_xasprintf("%s/models/digits", c.state_dir);
    DIR *dir = opendir(mdir);
    int slots = 0;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL)
        slots += strncmp(de->d_name, "1.2.0-", 6) == 0 ? 100 : mf_install_slot_ok(de->d_name);
    closedir(dir);
    free(mdir);
    assert_int_equal(slots, 2);

    /* back to fp32 through the desired state: previous, no download */
    unsigned before = fetches;
    assert_int_equal(apply(ag, &srv_key, "pi-0042", 4, P_FP32, NULL), MF_OK);
    assert_int_equal(fetches, before);
    expect_trail(ag, 6, "desired_accepted activated");
    expect_current_ok(&c, ids[P_FP32]);

    /* local rollback: int8 again */
    struct mf_diag d = {0};
    assert_int_equal(mf_agent_rollback(ag, "digits", &d), MF_OK);
    expect_trail(ag, 8, "rolled_back");
    expect_current_ok(&c, ids[P_INT8]);

    mf_agent_close(ag);
    /* a second agent on the same directory is refused while one runs */
    ag = open_agent(&c);
    struct mf_agent *ag2 = NULL;
    assert_int_equal(mf_agent_open(&c, &ops, NULL, &ag2, &d), MF_ERR_CONFLICT);
    assert_non_null(strstr(d.what, "another modelfleet-agent"));
    mf_agent_close(ag);
    mf_agent_config_free(&c);
}

/* ---- desired states that must be refused ---- */

static void test_desired_refused(void **state)
{
    (void)state;
    NEED_RUNNER();
    struct mf_agent_config c;
    config(&c, MF_OPENCV_RUNNER);
    struct mf_agent *ag = open_agent(&c);
    bool quiet = false;

    assert_int_equal(apply(ag, &srv_key, "pi-0042", 5, P_FP32, &quiet), MF_OK);
    assert_false(quiet);
    size_t n = n_events(ag);
    /* the same retained message again (a reconnect): quiet, no event */
    assert_int_equal(apply(ag, &srv_key, "pi-0042", 5, P_FP32, &quiet), MF_OK);
    assert_true(quiet);
    assert_int_equal(n_events(ag), n);
    /* a different message with an old seq: a replay */
    assert_int_equal(apply(ag, &srv_key, "pi-0042", 4, P_INT8, &quiet), MF_ERR_STALE);
    assert_int_equal(apply(ag, &srv_key, "pi-0042", 5, P_INT8, &quiet), MF_ERR_STALE);
    /* signed by a key the device does not trust */
    assert_int_equal(apply(ag, &stranger, "pi-0042", 6, P_INT8, &quiet), MF_ERR_UNKNOWN_KEY);
    /* for another device */
    assert_int_equal(apply(ag, &srv_key, "pi-0043", 7, P_INT8, &quiet), MF_ERR_WRONG_TARGET);
    /* a flipped byte in the JSON */
    size_t len;
    char *msg = desired_msg(&srv_key, "pi-0042", 8, P_INT8, &len);
    char *seq = strstr(msg, "\"seq\":8");
    seq[6] = '9';
    struct mf_diag d = {0};
    assert_int_equal(mf_agent_desired(ag, (uint8_t *)msg, len, &quiet, &d), MF_ERR_BAD_SIGNATURE);
    free(msg);
    expect_trail(ag, n,
                 "desired_refused:stale desired_refused:stale desired_refused:unknown_key "
                 "desired_refused:wrong_target desired_refused:bad_signature");
    expect_current_ok(&c, ids[P_FP32]);
    assert_int_equal(mf_agent_state(ag)->desired_seq, 5);
    mf_agent_close(ag);
    mf_agent_config_free(&c);
}

/* A desired package that cannot fit is refused before any byte is fetched. */
static void test_budget_before_download(void **state)
{
    (void)state;
    struct mf_agent_config c;
    config(&c, MF_OPENCV_RUNNER[0] ? MF_OPENCV_RUNNER : "/bin/false");
    c.disk_budget = sizes[P_FP32] + sizes[P_FP32] / 2;
    struct mf_agent *ag = open_agent(&c);
    unsigned before = fetches;
    assert_int_equal(apply(ag, &srv_key, "pi-0042", 1, P_FP32, NULL), MF_OK);
    assert_int_equal(fetches, before);
    expect_trail(ag, 0, "desired_accepted download_failed:disk_budget");
    json_t *ev = spooled(ag, MF_DEVMSG_EVENT);
    assert_non_null(
        strstr(json_string_value(json_object_get(json_array_get(ev, 1), "detail")), "budget"));
    json_decref(ev);
    assert_int_equal(mf_agent_state(ag)->n_models, 0);
    assert_int_equal(mf_agent_state(ag)->op.kind, MF_STATE_OP_NONE);
    mf_agent_close(ag);
    mf_agent_config_free(&c);
}

/* ---- broken packages and runners ---- */

static void test_bad_packages(void **state)
{
    (void)state;
    NEED_RUNNER();
    struct mf_agent_config c;
    config(&c, MF_OPENCV_RUNNER);
    struct mf_agent *ag = open_agent(&c);
    struct mf_diag d = {0};

    assert_int_equal(mf_agent_install_file(ag, pkgs[P_FP32], &d), MF_OK);
    size_t n = n_events(ag);
    /* signed by a stranger, built for other hardware, corrupted */
    assert_int_equal(mf_agent_install_file(ag, pkgs[P_STRANGER], &d), MF_ERR_UNKNOWN_KEY);
    assert_int_equal(mf_agent_install_file(ag, pkgs[P_OTHER_HW], &d), MF_ERR_CONFLICT);
    char *bad = mf_xasprintf("%s/corrupt.mfpkg", root);
    struct mf_buf b;
    assert_int_equal(mf_fs_read_file(pkgs[P_INT8], 1 << 26, &b, &d), MF_OK);
    b.data[b.len - 3000] ^= 0x55;
    assert_int_equal(mf_fs_write_file(bad, b.data, b.len, 0600, &d), MF_OK);
    mf_buf_free(&b);
    assert_int_not_equal(mf_agent_install_file(ag, bad, &d), MF_OK);
    /* the same for the package that is current: its slot exists and is
     * whole, but a tampered file is refused all the same */
    assert_int_equal(mf_fs_read_file(pkgs[P_FP32], 1 << 26, &b, &d), MF_OK);
    b.data[b.len - 3000] ^= 0x55;
    assert_int_equal(mf_fs_write_file(bad, b.data, b.len, 0600, &d), MF_OK);
    mf_buf_free(&b);
    assert_int_equal(mf_agent_install_file(ag, bad, &d), MF_ERR_HASH_MISMATCH);
    free(bad);
    /* a disk budget too small for another slot */
    c.disk_budget = 20000;
    assert_int_equal(mf_agent_install_file(ag, pkgs[P_INT8], &d), MF_ERR_DISK_BUDGET);
    c.disk_budget = 0;
    char *trail = event_trail(ag, n);
    assert_non_null(strstr(trail, "install_failed:unknown_key install_failed:wrong_hardware "
                                  "install_failed:"));
    assert_non_null(strstr(trail, "install_failed:hash_mismatch install_failed:disk_budget"));
    free(trail);
    expect_current_ok(&c, ids[P_FP32]);
    assert_int_equal(mf_agent_state(ag)->op.kind, MF_STATE_OP_NONE);
    mf_agent_close(ag);
    mf_agent_config_free(&c);
}

static void check_runner(const char *script, const char *reason)
{
    struct mf_agent_config c;
    char *runner = mf_xasprintf("%s/%s", MF_FAKE_RUNNERS, script);
    config(&c, runner);
    c.runner_timeout = 2;
    struct mf_agent *ag = open_agent(&c);
    struct mf_diag d = {0};
    enum mf_err err = mf_agent_install_file(ag, pkgs[P_FAKE], &d);
    assert_int_not_equal(err, MF_OK);
    char *want = mf_xasprintf("benchmark_failed:%s", reason);
    expect_trail(ag, 0, want);
    free(want);
    /* nothing was activated, no slot left behind */
    char slot[MF_INSTALL_SLOT_MAX];
    assert_int_equal(mf_install_current(c.state_dir, "digits", slot, &d), MF_ERR_NOT_FOUND);
    assert_int_equal(mf_agent_state(ag)->n_models, 0);
    mf_agent_close(ag);
    mf_agent_config_free(&c);
    free(runner);
}

static void test_broken_runners(void **state)
{
    (void)state;
    check_runner("crash.sh", "runner_failed");
    check_runner("hang.sh", "runner_timeout");
    check_runner("garbage.sh", "runner_output");
    check_runner("flood.sh", "runner_output_cap");
    /* a runner that works but predicts badly: refused by the gate */
    struct mf_agent_config c;
    char *runner = mf_xasprintf("%s/good.sh", MF_FAKE_RUNNERS);
    config(&c, runner);
    struct mf_agent *ag = open_agent(&c);
    struct mf_diag d = {0};
    assert_int_equal(mf_agent_install_file(ag, pkgs[P_FAKE], &d), MF_ERR_REFUSED);
    expect_trail(ag, 0, "refused:min_accuracy");
    mf_agent_close(ag);
    mf_agent_config_free(&c);
    free(runner);
}

/* ---- the hook ---- */

static void test_hook(void **state)
{
    (void)state;
    NEED_RUNNER();
    struct mf_agent_config c;
    config(&c, MF_OPENCV_RUNNER);
    char *out = mf_xasprintf("%s/hook.out", root);
    char *hook = mf_xasprintf("%s/hook.sh", root);
    FILE *f = fopen(hook, "w");
    fprintf(f, "#!/bin/sh\necho \"$1 $3 $(basename \"$2\")\" >>%s\n[ \"$3\" != 1.1.0 ]\n", out);
    fclose(f);
    chmod(hook, 0755);
    free(c.hook);
    c.hook = hook;
    struct mf_agent *ag = open_agent(&c);
    struct mf_diag d = {0};
    assert_int_equal(mf_agent_install_file(ag, pkgs[P_FP32], &d), MF_OK);
    assert_int_equal(mf_agent_install_file(ag, pkgs[P_INT8], &d), MF_OK);
    /* the hook failed for 1.1.0 (exit 1): reported, the model stays active */
    expect_trail(ag, 0, "activated activated hook_failed:runner_failed");
    expect_current_ok(&c, ids[P_INT8]);
    struct mf_buf b;
    assert_int_equal(mf_fs_read_file(out, 4096, &b, &d), MF_OK);
    assert_int_equal(mf_buf_append(&b, "", 1), MF_OK);
    assert_string_equal((char *)b.data,
                        "digits 1.0.0 digits-fp32.onnx\ndigits 1.1.0 digits-int8.onnx\n");
    mf_buf_free(&b);
    free(out);
    mf_agent_close(ag);
    mf_agent_config_free(&c);
}

/* ---- kill -9 at every point ---- */

static int kill_at, kill_count;
static char kill_point[64];

static void crash_hook(const char *point)
{
    if (++kill_count == kill_at) {
        FILE *f = fopen("kill-point", "w");
        if (f) {
            fputs(point, f);
            fclose(f);
        }
        kill(getpid(), SIGKILL);
    }
}

static void test_kill_everywhere(void **state)
{
    (void)state;
    NEED_RUNNER();
    /* The baseline: fp32 active, desired seq 1 applied. */
    struct mf_agent_config c;
    config(&c, MF_OPENCV_RUNNER);
    char *hook_path = mf_xasprintf("%s/kill-hook.sh", root);
    FILE *f = fopen(hook_path, "w");
    fprintf(f, "#!/bin/sh\nexit 0\n");
    fclose(f);
    chmod(hook_path, 0755);
    free(c.hook);
    c.hook = hook_path;
    char *base_dir = mf_xstrdup(c.state_dir);
    struct mf_agent *ag = open_agent(&c);
    assert_int_equal(apply(ag, &srv_key, "pi-0042", 1, P_FP32, NULL), MF_OK);
    mf_agent_close(ag);

    char cwd[4096];
    assert_non_null(getcwd(cwd, sizeof cwd));
    unsigned points = 0, last_ok = 0;
    for (int k = 1; k < 200; k++) {
        /* a fresh copy of the baseline for each kill point */
        char *dir = mf_xasprintf("%s/kill-%d", root, k);
        char *cmd = mf_xasprintf("cp -a '%s' '%s'", base_dir, dir);
        assert_int_equal(system(cmd), 0);
        free(cmd);
        free(c.state_dir);
        c.state_dir = dir;

        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            if (chdir(dir) != 0)
                _exit(90);
            kill_at = k;
            kill_count = 0;
            mf_install_crash_hook = crash_hook;
            mf_agent_crash_hook = crash_hook;
            struct mf_agent *child = NULL;
            struct mf_diag d = {0};
            if (mf_agent_open(&c, &ops, NULL, &child, &d) != MF_OK)
                _exit(91);
            size_t len;
            char *msg = desired_msg(&srv_key, "pi-0042", 2, P_INT8, &len);
            enum mf_err err = mf_agent_desired(child, (uint8_t *)msg, len, NULL, &d);
            _exit(err == MF_OK ? 0 : 92);
        }
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        bool killed = WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
        if (!killed)
            assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        char *kp = mf_xasprintf("%s/kill-point", dir);
        kill_point[0] = '\0';
        FILE *kf = fopen(kp, "r");
        if (kf) {
            if (!fgets(kill_point, sizeof kill_point, kf))
                kill_point[0] = '\0';
            fclose(kf);
            unlink(kp);
        }
        free(kp);

        /* Invariants right after the kill: the state file parses, current is
         * a complete verified slot (fp32 or int8, nothing else). */
        struct mf_state *s = NULL;
        struct mf_diag d = {0};
        if (mf_state_load(dir, &s, &d) != MF_OK)
            fail_msg("kill %d at %s: state does not load: %s", k, kill_point, d.what);
        mf_state_free(s);
        char slot[MF_INSTALL_SLOT_MAX];
        assert_int_equal(mf_install_current(dir, "digits", slot, &d), MF_OK);
        char *sp = mf_install_slot_path(dir, "digits", slot);
        if (mf_install_check_slot(sp, true, &d) != MF_OK)
            fail_msg("kill %d at %s: current %s incomplete: %s", k, kill_point, slot, d.what);
        free(sp);
        assert_true(strncmp(slot, "1.0.0-", 6) == 0 || strncmp(slot, "1.1.0-", 6) == 0);

        /* Restart: recovery, then the pending desired state; int8 in the end. */
        struct mf_agent *again = open_agent(&c);
        assert_int_equal(mf_agent_resume(again, &d), MF_OK);
        /* ... and the broker delivers the retained desired state again on
         * connect: applied if the kill came before it was accepted, quiet
         * otherwise. */
        size_t len;
        char *msg = desired_msg(&srv_key, "pi-0042", 2, P_INT8, &len);
        assert_int_equal(mf_agent_desired(again, (uint8_t *)msg, len, NULL, &d), MF_OK);
        free(msg);
        if (strcmp(current_package(again), ids[P_INT8]) != 0) {
            char *trail = event_trail(again, 0);
            fail_msg("kill %d at %s: int8 not current after restart; events: %s", k, kill_point,
                     trail);
        }
        assert_int_equal(mf_agent_state(again)->op.kind, MF_STATE_OP_NONE);
        assert_true(mf_agent_state(again)->desired_done);
        if (killed) {
            char *trail = event_trail(again, 0);
            if (!strstr(trail, "activated"))
                fail_msg("kill %d at %s: no activation reported: %s", k, kill_point, trail);
            free(trail);
        }
        mf_agent_close(again);
        expect_current_ok(&c, ids[P_INT8]);
        /* nothing half-done is left in the model directory */
        char *mdir = mf_xasprintf("%s/models/digits", dir);
        DIR *dd = opendir(mdir);
        struct dirent *de;
        while ((de = readdir(dd)) != NULL)
            if (strncmp(de->d_name, ".staging", 8) == 0 || strstr(de->d_name, ".tmp"))
                fail_msg("kill %d at %s: %s left behind", k, kill_point, de->d_name);
        closedir(dd);
        free(mdir);
        assert_int_equal(mf_fs_rmtree(dir), MF_OK);
        if (!killed) {
            last_ok = (unsigned)k;
            break;
        }
        points++;
    }
    assert_int_equal(chdir(cwd), 0);
    print_message("killed at %u points of one install; run %u completed\n", points, last_ok);
    assert_true(points >= 15);
    assert_true(last_ok > 0);
    mf_agent_config_free(&c);
    free(base_dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp32_int8_int2),         cmocka_unit_test(test_desired_refused),
        cmocka_unit_test(test_budget_before_download), cmocka_unit_test(test_bad_packages),
        cmocka_unit_test(test_broken_runners),         cmocka_unit_test(test_hook),
        cmocka_unit_test(test_kill_everywhere),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
