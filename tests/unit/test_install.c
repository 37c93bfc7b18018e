/* test_install.c — agent/install (slots, current/previous, prune, disk budget,
 * recovery) on real packages packed and signed from the fixture models, and
 * agent/state (strict parse, atomic save). The crash test forks a child that
 * installs and activates, kills it at each instrumented point, then recovers
 * and checks the invariants: current names a complete slot, nothing in flight
 * is left, the state file parses, and finishing the operation converges. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
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

#include "agent/install.h"
#include "agent/state.h"
#include "common/buf.h"
#include "common/fs.h"
#include "common/hash.h"
#include "common/mem.h"
#include "packaging/key.h"
#include "packaging/pack.h"
#include "unit_pack.h"

static char tmpdir[] = "/tmp/mf-installtest-XXXXXX";
static struct mf_key_secret key, stranger;
static struct mf_keyring trust;
static struct mf_strlist hw;

#define N_PKGS 5
static const char *const versions[N_PKGS] = {"1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0"};
static const char *const onnx[N_PKGS] = {"digits-fp32.onnx", "digits-int8.onnx", "digits-int2.onnx",
                                         "digits-fp32.onnx", "digits-int8.onnx"};
static char *pkgs[N_PKGS]; /* signed by key */
static char *unknown_pkg;  /* signed by stranger */
static uint64_t payload[N_PKGS];

static char *tpath(const char *fmt, ...) MF_PRINTF(1, 2);
static char *tpath(const char *fmt, ...)
{
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return mf_xasprintf("%s/%s", tmpdir, name);
}

/* A new empty state directory. */
static char *new_state_dir(void)
{
    static int n;
    char *d = tpath("state-%d", n++);
    assert_int_equal(mkdir(d, 0755), 0);
    return d;
}

static enum mf_err pack(const char *version, const char *model_file, const struct mf_key_secret *k,
                        const char *out, uint64_t *bytes)
{
    char *src = mf_xasprintf("%s/%s", MF_FIXTURES, model_file);
    enum mf_err err = unit_pack_digits(version, src, model_file, &hw, 0.9, k, out, bytes);
    free(src);
    return err;
}

static bool exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

/* Entries of dir whose name starts with prefix (0 when dir is missing). */
static int count_prefix(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    int n = 0;
    if (!d)
        return 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strncmp(de->d_name, prefix, strlen(prefix)) == 0 && strcmp(de->d_name, ".") != 0 &&
            strcmp(de->d_name, "..") != 0)
            n++;
    closedir(d);
    return n;
}

static char *model_dir(const char *sd)
{
    return mf_xasprintf("%s/models/digits", sd);
}

/* Reads models/digits/<link> directly (readlink), "" when absent. */
static void link_target(const char *sd, const char *link, char *buf, size_t size)
{
    char *p = mf_xasprintf("%s/models/digits/%s", sd, link);
    ssize_t n = readlink(p, buf, size - 1);
    buf[n < 0 ? 0 : n] = '\0';
    free(p);
}

static void unpack_ok(const char *sd, int i, struct mf_install_result *r)
{
    struct mf_diag d = {0};
    enum mf_err err = mf_install_unpack(pkgs[i], &trust, sd, 0, "0.1.0", r, &d);
    if (err != MF_OK)
        fail_msg("unpack %s: %s: %s", pkgs[i], d.where, d.what);
}

static void install_activate(const char *sd, int i, char slot[MF_INSTALL_SLOT_MAX])
{
    struct mf_install_result r;
    struct mf_diag d;
    unpack_ok(sd, i, &r);
    assert_int_equal(mf_install_activate(sd, "digits", r.slot, &d), MF_OK);
    if (slot)
        snprintf(slot, MF_INSTALL_SLOT_MAX, "%s", r.slot);
    mf_install_result_free(&r);
}

/* ---- slots ---- */

static void test_unpack_activate(void **state)
{
    (void)state;
    char *sd = new_state_dir();
    struct mf_install_result r;
    struct mf_diag d;
    char cur[MF_INSTALL_SLOT_MAX], buf[256];

    unpack_ok(sd, 0, &r);
    assert_string_equal(r.model, "digits");
    assert_string_equal(r.version, "1.0.0");
    assert_true(mf_install_slot_ok(r.slot));
    assert_int_equal(strncmp(r.slot, "1.0.0-", 6), 0);
    assert_int_equal(strncmp(r.slot + 6, r.manifest_hash, MF_INSTALL_HASH_LEN), 0);
    assert_string_equal(r.signer, key.pub.id);
    assert_false(r.reused);
    assert_false(r.rebuilt);
    assert_int_equal(r.payload_bytes, payload[0]);
    assert_non_null(r.manifest);
    assert_string_equal(r.manifest->entry, "model/digits-fp32.onnx");

    char *slot = mf_install_slot_path(sd, "digits", r.slot);
    char *f = mf_xasprintf("%s/model/digits-fp32.onnx", slot);
    char *mj = mf_xasprintf("%s/manifest.json", slot);
    char *ms = mf_xasprintf("%s/manifest.sig", slot);
    assert_true(exists(f));
    assert_true(exists(mj));
    assert_true(exists(ms));
    assert_int_equal(mf_install_check_slot(slot, true, &d), MF_OK);
    char *md = model_dir(sd);
    assert_int_equal(count_prefix(md, ".staging-"), 0);

    /* Nothing is active until activation. */
    assert_int_equal(mf_install_current(sd, "digits", cur, &d), MF_ERR_NOT_FOUND);
    assert_int_equal(mf_install_activate(sd, "digits", r.slot, &d), MF_OK);
    assert_int_equal(mf_install_current(sd, "digits", cur, &d), MF_OK);
    assert_string_equal(cur, r.slot);
    link_target(sd, "current", buf, sizeof buf);
    assert_string_equal(buf, r.slot); /* relative: just the slot name */
    assert_int_equal(mf_install_previous(sd, "digits", cur, &d), MF_ERR_NOT_FOUND);
    /* Activating the current slot again changes nothing (no previous appears). */
    assert_int_equal(mf_install_activate(sd, "digits", r.slot, &d), MF_OK);
    assert_int_equal(mf_install_previous(sd, "digits", cur, &d), MF_ERR_NOT_FOUND);
    /* No previous: no rollback. */
    assert_int_equal(mf_install_rollback(sd, "digits", NULL, &d), MF_ERR_NOT_FOUND);
    /* Bad arguments and unknown slots are refused. */
    assert_int_equal(mf_install_activate(sd, "digits", "../etc", &d), MF_ERR_USAGE);
    assert_int_equal(mf_install_activate(sd, "../x", r.slot, &d), MF_ERR_USAGE);
    assert_int_equal(mf_install_activate(sd, "digits", "9.9.9-0123456789abcdef", &d),
                     MF_ERR_MISSING);
    assert_int_equal(mf_install_current(sd, "other", cur, &d), MF_ERR_NOT_FOUND);

    mf_install_result_free(&r);
    free(md);
    free(ms);
    free(mj);
    free(f);
    free(slot);
    free(sd);
}

static void test_versions_rollback(void **state)
{
    (void)state;
    char *sd = new_state_dir();
    char v1[MF_INSTALL_SLOT_MAX], v2[MF_INSTALL_SLOT_MAX], cur[MF_INSTALL_SLOT_MAX],
        prev[MF_INSTALL_SLOT_MAX], nc[MF_INSTALL_SLOT_MAX];
    struct mf_diag d;

    install_activate(sd, 0, v1);
    install_activate(sd, 1, v2);
    assert_string_not_equal(v1, v2);
    assert_int_equal(mf_install_current(sd, "digits", cur, &d), MF_OK);
    assert_int_equal(mf_install_previous(sd, "digits", prev, &d), MF_OK);
    assert_string_equal(cur, v2);
    assert_string_equal(prev, v1);

    assert_int_equal(mf_install_rollback(sd, "digits", nc, &d), MF_OK);
    assert_string_equal(nc, v1);
    assert_int_equal(mf_install_current(sd, "digits", cur, &d), MF_OK);
    assert_int_equal(mf_install_previous(sd, "digits", prev, &d), MF_OK);
    assert_string_equal(cur, v1);
    assert_string_equal(prev, v2);
    /* Again: back to v2. */
    assert_int_equal(mf_install_rollback(sd, "digits", NULL, &d), MF_OK);
    assert_int_equal(mf_install_current(sd, "digits", cur, &d), MF_OK);
    assert_string_equal(cur, v2);

    /* A previous slot that is incomplete is not rolled back to. */
    char *p1 = mf_install_slot_path(sd, "digits", v1);
    char *marker = mf_xasprintf("%s/manifest.json", p1);
    assert_int_equal(unlink(marker), 0);
    assert_int_equal(mf_install_rollback(sd, "digits", NULL, &d), MF_ERR_MISSING);
    assert_non_null(strstr(d.what, "incomplete"));
    assert_int_equal(mf_install_current(sd, "digits", cur, &d), MF_OK);
    assert_string_equal(cur, v2);
    /* Nor activated. */
    assert_int_equal(mf_install_activate(sd, "digits", v1, &d), MF_ERR_MISSING);
    free(marker);
    free(p1);
    free(sd);
}

static void set_install_time(const char *sd, const char *slot, time_t t)
{
    char *p = mf_xasprintf("%s/models/digits/%s/manifest.json", sd, slot);
    struct timespec ts[2] = {{t, 0}, {t, 0}};
    assert_int_equal(utimensat(AT_FDCWD, p, ts, AT_SYMLINK_NOFOLLOW), 0);
    free(p);
}

static void test_prune(void **state)
{
    (void)state;
    char *sd = new_state_dir();
    char *md = model_dir(sd);
    char slot[N_PKGS][MF_INSTALL_SLOT_MAX];
    struct mf_diag d;
    unsigned removed = 99;

    for (int i = 0; i < N_PKGS; i++) {
        struct mf_install_result r;
        unpack_ok(sd, i, &r);
        snprintf(slot[i], sizeof slot[i], "%s", r.slot);
        mf_install_result_free(&r);
        set_install_time(sd, slot[i], 1000 + i); /* A oldest ... E newest */
    }
    /* current = E, previous = A (the oldest). */
    assert_int_equal(mf_install_activate(sd, "digits", slot[0], &d), MF_OK);
    assert_int_equal(mf_install_activate(sd, "digits", slot[4], &d), MF_OK);

    assert_int_equal(mf_install_prune(sd, "digits", 0, &removed, &d), MF_ERR_USAGE);
    assert_int_equal(mf_install_prune(sd, "digits", 3, &removed, &d), MF_OK);
    assert_int_equal(removed, 2); /* B and C, the oldest that are neither */
    char *p[N_PKGS];
    for (int i = 0; i < N_PKGS; i++)
        p[i] = mf_install_slot_path(sd, "digits", slot[i]);
    assert_true(exists(p[0]));
    assert_false(exists(p[1]));
    assert_false(exists(p[2]));
    assert_true(exists(p[3]));
    assert_true(exists(p[4]));
    /* keep 1: only D can go; current and previous stay even beyond N. */
    assert_int_equal(mf_install_prune(sd, "digits", 1, &removed, &d), MF_OK);
    assert_int_equal(removed, 1);
    assert_true(exists(p[0]));
    assert_false(exists(p[3]));
    assert_true(exists(p[4]));
    assert_int_equal(mf_install_prune(sd, "digits", 1, &removed, &d), MF_OK);
    assert_int_equal(removed, 0);
    assert_int_equal(count_prefix(md, ".staging-"), 0);
    assert_int_equal(mf_install_check_slot(p[0], true, &d), MF_OK);
    assert_int_equal(mf_install_check_slot(p[4], true, &d), MF_OK);
    for (int i = 0; i < N_PKGS; i++)
        free(p[i]);
    free(md);
    free(sd);
}

static void test_disk_budget(void **state)
{
    (void)state;
    char *sd = new_state_dir();
    char *models = mf_xasprintf("%s/models", sd);
    char *md = model_dir(sd);
    struct mf_install_result r;
    struct mf_diag d;

    /* Too small for the payload: refused before anything is written. */
    assert_int_equal(mf_install_unpack(pkgs[0], &trust, sd, payload[0] - 1, NULL, &r, &d),
                     MF_ERR_DISK_BUDGET);
    assert_non_null(strstr(d.what, "disk budget"));
    assert_false(exists(models));

    /* Exactly enough for the first; the second must fit beside it. */
    assert_int_equal(mf_install_unpack(pkgs[0], &trust, sd, payload[0], NULL, &r, &d), MF_OK);
    /* A slot's size is what it holds on disk: payload plus manifest.json and .sig. */
    char *sp = mf_install_slot_path(sd, "digits", r.slot);
    char *mj = mf_xasprintf("%s/manifest.json", sp), *ms = mf_xasprintf("%s/manifest.sig", sp);
    struct stat a, b;
    assert_int_equal(stat(mj, &a), 0);
    assert_int_equal(stat(ms, &b), 0);
    free(mj);
    free(ms);
    free(sp);
    mf_install_result_free(&r);
    uint64_t budget = payload[0] + (uint64_t)a.st_size + (uint64_t)b.st_size + payload[1];
    assert_int_equal(mf_install_unpack(pkgs[1], &trust, sd, budget - 1, NULL, &r, &d),
                     MF_ERR_DISK_BUDGET);
    assert_int_equal(count_prefix(md, "1.1.0-"), 0);
    assert_int_equal(count_prefix(md, ".staging-"), 0);
    assert_int_equal(mf_install_unpack(pkgs[1], &trust, sd, budget, NULL, &r, &d), MF_OK);
    mf_install_result_free(&r);
    assert_int_equal(count_prefix(md, "1.1.0-"), 1);
    /* Reusing a complete slot needs no room. */
    assert_int_equal(mf_install_unpack(pkgs[1], &trust, sd, budget, NULL, &r, &d), MF_OK);
    assert_true(r.reused);
    mf_install_result_free(&r);
    free(md);
    free(models);
    free(sd);
}

static void test_refusals(void **state)
{
    (void)state;
    char *sd = new_state_dir();
    char *md = model_dir(sd);
    char *models = mf_xasprintf("%s/models", sd);
    struct mf_install_result r;
    struct mf_diag d;

    /* Signed by a key the device does not trust. */
    assert_int_equal(mf_install_unpack(unknown_pkg, &trust, sd, 0, NULL, &r, &d),
                     MF_ERR_UNKNOWN_KEY);
    assert_false(exists(models));
    /* Too new for this agent. */
    assert_int_equal(mf_install_unpack(pkgs[0], &trust, sd, 0, "0.0.1", &r, &d), MF_ERR_VERSION);
    assert_false(exists(models));

    /* One payload byte flipped (the model file is last in the archive). */
    char *bad = tpath("tampered.mfpkg");
    struct mf_buf b;
    assert_int_equal(mf_fs_read_file(pkgs[0], 1u << 26, &b, &d), MF_OK);
    struct mf_buf model;
    assert_int_equal(mf_fs_read_file(MF_FIXTURES "/digits-fp32.onnx", 1u << 20, &model, &d), MF_OK);
    size_t at = 0; /* a byte inside the model file's data in the archive */
    for (size_t i = 0; i + 64 <= b.len && !at; i++)
        if (memcmp(b.data + i, model.data + 2000, 64) == 0)
            at = i + 10;
    assert_true(at > 0);
    mf_buf_free(&model);
    b.data[at] ^= 0x01;
    assert_int_equal(mf_fs_write_file(bad, b.data, b.len, 0644, &d), MF_OK);
    mf_buf_free(&b);
    enum mf_err err = mf_install_unpack(bad, &trust, sd, 0, NULL, &r, &d);
    assert_int_equal(err, MF_ERR_HASH_MISMATCH);
    assert_false(exists(md)); /* no slot, no staging, not even the model directory */

    /* With an installed model the directory stays, with nothing new in it. */
    install_activate(sd, 1, NULL);
    assert_int_equal(mf_install_unpack(bad, &trust, sd, 0, NULL, &r, &d), MF_ERR_HASH_MISMATCH);
    assert_int_equal(count_prefix(md, "1.0.0-"), 0);
    assert_int_equal(count_prefix(md, ".staging-"), 0);
    assert_int_equal(count_prefix(md, "1.1.0-"), 1);
    free(bad);
    free(models);
    free(md);
    free(sd);
}

static void test_reuse_and_rebuild(void **state)
{
    (void)state;
    char *sd = new_state_dir();
    struct mf_install_result r;
    struct mf_diag d;
    char slot[MF_INSTALL_SLOT_MAX], cur[MF_INSTALL_SLOT_MAX];

    install_activate(sd, 0, slot);
    char *sp = mf_install_slot_path(sd, "digits", slot);
    char *model = mf_xasprintf("%s/model/digits-fp32.onnx", sp);
    char *marker = mf_xasprintf("%s/manifest.json", sp);
    struct stat st0, st1;
    assert_int_equal(stat(model, &st0), 0);

    /* Complete: reused, nothing rewritten. */
    unpack_ok(sd, 0, &r);
    assert_true(r.reused);
    assert_false(r.rebuilt);
    assert_string_equal(r.slot, slot);
    assert_non_null(r.manifest);
    mf_install_result_free(&r);
    assert_int_equal(stat(model, &st1), 0);
    assert_int_equal(st0.st_ino, st1.st_ino);

    /* A payload byte changed in place (same size): caught by the re-hash. */
    int fd = open(model, O_RDWR);
    assert_true(fd >= 0);
    char c;
    assert_int_equal(pread(fd, &c, 1, 100), 1);
    c ^= 0x20;
    assert_int_equal(pwrite(fd, &c, 1, 100), 1);
    close(fd);
    assert_int_equal(mf_install_check_slot(sp, false, &d), MF_OK); /* sizes still match */
    assert_int_equal(mf_install_check_slot(sp, true, &d), MF_ERR_HASH_MISMATCH);
    unpack_ok(sd, 0, &r);
    assert_false(r.reused);
    assert_true(r.rebuilt);
    mf_install_result_free(&r);
    assert_int_equal(mf_install_check_slot(sp, true, &d), MF_OK);

    /* The marker missing: incomplete, rebuilt; current still names it. */
    assert_int_equal(unlink(marker), 0);
    assert_int_equal(mf_install_check_slot(sp, false, &d), MF_ERR_MISSING);
    assert_non_null(strstr(d.what, "incomplete"));
    unpack_ok(sd, 0, &r);
    assert_true(r.rebuilt);
    mf_install_result_free(&r);
    assert_true(exists(marker));
    assert_int_equal(mf_install_check_slot(sp, true, &d), MF_OK);
    assert_int_equal(mf_install_current(sd, "digits", cur, &d), MF_OK);
    assert_string_equal(cur, slot);

    /* A file missing: the quick check sees it. */
    assert_int_equal(unlink(model), 0);
    assert_int_equal(mf_install_check_slot(sp, false, &d), MF_ERR_MISSING);
    unpack_ok(sd, 0, &r);
    assert_true(r.rebuilt);
    mf_install_result_free(&r);
    assert_int_equal(mf_install_check_slot(sp, true, &d), MF_OK);

    /* A leftover staging directory is removed by the next unpack. */
    char *md = model_dir(sd);
    char *stale = mf_xasprintf("%s/.staging-0123456789abcdef", md);
    assert_int_equal(mkdir(stale, 0755), 0);
    unpack_ok(sd, 1, &r);
    mf_install_result_free(&r);
    assert_false(exists(stale));

    /* A slot whose manifest does not hash to its name is not complete. */
    char *fake = mf_install_slot_path(sd, "digits", "1.0.0-0000000000000000");
    char *cmd = mf_xasprintf("cp -r '%s' '%s'", sp, fake);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(mf_install_check_slot(fake, false, &d), MF_ERR_HASH_MISMATCH);
    assert_int_equal(mf_install_activate(sd, "digits", "1.0.0-0000000000000000", &d),
                     MF_ERR_HASH_MISMATCH);
    free(cmd);
    free(fake);
    free(stale);
    free(md);
    free(marker);
    free(model);
    free(sp);
    free(sd);
}

static void test_recover(void **state)
{
    (void)state;
    char *sd = new_state_dir();
    char *md = model_dir(sd);
    struct mf_install_recovery rec;
    struct mf_diag d;
    char slot[MF_INSTALL_SLOT_MAX];

    /* Nothing installed: nothing to do. */
    assert_int_equal(mf_install_recover(sd, &rec, &d), MF_OK);
    assert_int_equal(rec.cleaned.n, 0);
    assert_int_equal(rec.broken.n, 0);
    mf_install_recovery_free(&rec);

    install_activate(sd, 0, slot);
    char *staging = mf_xasprintf("%s/.staging-0123456789abcdef", md);
    char *inner = mf_xasprintf("%s/model", staging);
    char *tmplink = mf_xasprintf("%s/.current.tmp", md);
    char *tmpstate = mf_xasprintf("%s/.state.json.tmp.AbC123", sd);
    assert_int_equal(mkdir(staging, 0755), 0);
    assert_int_equal(mkdir(inner, 0755), 0);
    assert_int_equal(symlink("1.1.0-0123456789abcdef", tmplink), 0);
    assert_int_equal(mf_fs_write_file(tmpstate, "{", 1, 0600, &d), MF_OK);

    assert_int_equal(mf_install_recover(sd, &rec, &d), MF_OK);
    assert_int_equal(rec.cleaned.n, 3);
    assert_int_equal(rec.broken.n, 0);
    mf_install_recovery_free(&rec);
    assert_false(exists(staging));
    assert_false(exists(tmplink));
    assert_false(exists(tmpstate));
    assert_int_equal(count_prefix(sd, ".state.json.tmp"), 0);

    /* current names an incomplete slot: reported, not hidden. */
    char *marker = mf_xasprintf("%s/%s/manifest.json", md, slot);
    assert_int_equal(unlink(marker), 0);
    assert_int_equal(mf_install_recover(sd, &rec, &d), MF_OK);
    assert_int_equal(rec.broken.n, 1);
    assert_non_null(strstr(rec.broken.v[0], "digits: "));
    assert_non_null(strstr(rec.broken.v[0], "incomplete"));
    mf_install_recovery_free(&rec);
    free(marker);
    free(tmpstate);
    free(tmplink);
    free(inner);
    free(staging);
    free(md);
    free(sd);
}

/* ---- state file ---- */

static const char *const hex_a = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
static const char *const hex_b = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

static struct mf_state *sample_state(void)
{
    struct mf_state *s = mf_state_new();
    snprintf(s->device, sizeof s->device, "pi-0042");
    s->desired_seq = 17;
    struct mf_state_model *m = mf_state_model(s, "zeta", true);
    snprintf(m->current.slot, sizeof m->current.slot, "2.0.0-0123456789abcdef");
    snprintf(m->current.package, sizeof m->current.package, "%s", hex_a);
    snprintf(m->current.version, sizeof m->current.version, "2.0.0");
    m = mf_state_model(s, "digits", true); /* inserted before zeta */
    snprintf(m->current.slot, sizeof m->current.slot, "1.1.0-rc.1-fedcba9876543210");
    snprintf(m->current.package, sizeof m->current.package, "%s", hex_b);
    snprintf(m->current.version, sizeof m->current.version, "1.1.0-rc.1");
    snprintf(m->previous.slot, sizeof m->previous.slot, "1.0.0-0123456789abcdef");
    snprintf(m->previous.package, sizeof m->previous.package, "%s", hex_a);
    snprintf(m->previous.version, sizeof m->previous.version, "1.0.0");
    s->op.kind = MF_STATE_OP_INSTALL;
    snprintf(s->op.model, sizeof s->op.model, "digits");
    snprintf(s->op.package, sizeof s->op.package, "%s", hex_a);
    snprintf(s->op.version, sizeof s->op.version, "1.2.0");
    s->op.phase = MF_STATE_PHASE_BENCHMARK;
    s->op.started = 1767225600;
    s->counters.spool_dropped = 3;
    s->counters.events_sent = 12345;
    return s;
}

static void test_state_roundtrip(void **state)
{
    (void)state;
    char *sd = new_state_dir();
    struct mf_state *s = sample_state(), *t = NULL;
    struct mf_diag d;

    /* No file yet: a fresh state, and that is visible. */
    assert_int_equal(mf_state_load(sd, &t, &d), MF_OK);
    assert_true(t->fresh);
    assert_int_equal(t->n_models, 0);
    assert_int_equal(t->op.kind, MF_STATE_OP_NONE);
    mf_state_free(t);

    assert_int_equal(mf_state_save(sd, s, &d), MF_OK);
    assert_int_equal(mf_state_load(sd, &t, &d), MF_OK);
    assert_false(t->fresh);
    assert_string_equal(t->device, "pi-0042");
    assert_int_equal(t->desired_seq, 17);
    assert_int_equal(t->n_models, 2);
    assert_string_equal(t->models[0].name, "digits");
    assert_string_equal(t->models[1].name, "zeta");
    struct mf_state_model *m = mf_state_model(t, "digits", false);
    assert_non_null(m);
    assert_string_equal(m->current.slot, "1.1.0-rc.1-fedcba9876543210");
    assert_string_equal(m->current.version, "1.1.0-rc.1");
    assert_string_equal(m->previous.package, hex_a);
    assert_string_equal(t->models[1].previous.slot, ""); /* null: none */
    assert_int_equal(t->op.kind, MF_STATE_OP_INSTALL);
    assert_int_equal(t->op.phase, MF_STATE_PHASE_BENCHMARK);
    assert_string_equal(t->op.version, "1.2.0");
    assert_string_equal(t->op.slot, "");
    assert_int_equal(t->op.started, 1767225600);
    assert_int_equal(t->counters.spool_dropped, 3);
    assert_int_equal(t->counters.events_sent, 12345);
    /* Same text again: the format is deterministic. */
    size_t l1, l2;
    char *a = mf_state_format(s, &l1), *b = mf_state_format(t, &l2);
    assert_string_equal(a, b);
    free(a);
    free(b);
    mf_state_free(t);

    /* Idle op, removed model, saved again: the old file is replaced. */
    s->op.kind = MF_STATE_OP_NONE;
    mf_state_model_remove(s, "zeta");
    assert_null(mf_state_model(s, "zeta", false));
    assert_int_equal(mf_state_save(sd, s, &d), MF_OK);
    assert_int_equal(mf_state_load(sd, &t, &d), MF_OK);
    assert_int_equal(t->n_models, 1);
    assert_int_equal(t->op.kind, MF_STATE_OP_NONE);
    mf_state_free(t);

    /* Atomic save leaves exactly state.json behind: no temp files. */
    assert_int_equal(count_prefix(sd, "."), 0);
    assert_int_equal(count_prefix(sd, ""), 1);

    /* A state that would not load is not written. */
    s->device[0] = '\0';
    assert_int_equal(mf_state_save(sd, s, &d), MF_ERR_USAGE);
    assert_non_null(strstr(d.what, "would not load"));
    assert_int_equal(count_prefix(sd, ""), 1);
    assert_int_equal(mf_state_load(sd, &t, &d), MF_OK); /* the old file is intact */
    assert_string_equal(t->device, "pi-0042");
    mf_state_free(t);
    mf_state_free(s);
    free(sd);
}

/* Writes text as state.json and loads it; returns the error, d filled. */
static enum mf_err load_text(const char *sd, const char *text, size_t len, struct mf_diag *d)
{
    char *p = mf_xasprintf("%s/state.json", sd);
    struct mf_state *t = NULL;
    assert_int_equal(mf_fs_write_file(p, text, len, 0600, d), MF_OK);
    memset(d, 0, sizeof *d);
    enum mf_err err = mf_state_load(sd, &t, d);
    mf_state_free(t);
    free(p);
    return err;
}

static void expect_refused(const char *sd, const char *text, enum mf_err want, const char *where,
                           const char *what)
{
    struct mf_diag d;
    enum mf_err err = load_text(sd, text, strlen(text), &d);
    if (err != want || (where && !strstr(d.where, where)) || (what && !strstr(d.what, what)))
        fail_msg("%s\n-> %s: %s: %s (wanted %s, where ~ %s, what ~ %s)", text, mf_errname(err),
                 d.where, d.what, mf_errname(want), where ? where : "-", what ? what : "-");
}

#define GOOD_HEAD "{\"format\": 1, \"device\": \"pi-1\", \"desired_seq\": 3, "
#define GOOD_CUR                                                                                   \
    "{\"slot\": \"1.0.0-0123456789abcdef\", \"package\": "                                         \
    "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\", \"version\": "          \
    "\"1.0.0\"}"

static void test_state_refusals(void **state)
{
    (void)state;
    char *sd = new_state_dir();
    struct mf_diag d;
    struct mf_state *s = sample_state();

    /* The baseline parses (so each refusal below is about its one defect). */
    expect_refused(sd,
                   GOOD_HEAD "\"models\": [{\"name\": \"digits\", \"current\": " GOOD_CUR
                             ", \"previous\": null}], \"op\": null}",
                   MF_OK, NULL, NULL);

    /* Truncated: a real file cut in half. */
    size_t len;
    char *text = mf_state_format(s, &len);
    assert_int_equal(load_text(sd, text, len / 2, &d), MF_ERR_PARSE);
    assert_non_null(strstr(d.where, "state.json"));
    assert_non_null(strstr(d.what, "line"));
    free(text);
    /* Empty and garbage. */
    assert_int_equal(load_text(sd, "", 0, &d), MF_ERR_PARSE);
    assert_non_null(strstr(d.what, "empty"));
    expect_refused(sd, "\x01\x02garbage", MF_ERR_PARSE, "state.json", NULL);
    expect_refused(sd, "[1, 2]", MF_ERR_PARSE, NULL, "object");
    /* Unknown fields, anywhere. */
    expect_refused(sd, GOOD_HEAD "\"models\": [], \"op\": null, \"extra\": 1}", MF_ERR_PARSE, NULL,
                   "unknown field \"extra\"");
    expect_refused(sd,
                   GOOD_HEAD
                   "\"models\": [{\"name\": \"digits\", \"current\": "
                   "{\"slot\": \"1.0.0-0123456789abcdef\", \"package\": "
                   "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\", "
                   "\"version\": \"1.0.0\", \"colour\": \"red\"}, \"previous\": null}], "
                   "\"op\": null}",
                   MF_ERR_PARSE, "models[0].current", "unknown field \"colour\"");
    expect_refused(sd, GOOD_HEAD "\"models\": [], \"op\": null, \"counters\": {\"bogus\": 1}}",
                   MF_ERR_PARSE, "counters", "unknown field \"bogus\"");
    /* Missing, mistyped, invalid values. */
    expect_refused(sd, GOOD_HEAD "\"op\": null}", MF_ERR_PARSE, "models", "missing");
    expect_refused(sd, GOOD_HEAD "\"models\": []}", MF_ERR_PARSE, "op", "missing");
    expect_refused(sd, "{\"device\": \"pi-1\"}", MF_ERR_PARSE, "format", "missing");
    expect_refused(sd, GOOD_HEAD "\"models\": {}, \"op\": null}", MF_ERR_PARSE, "models", "array");
    expect_refused(sd,
                   "{\"format\": 1, \"device\": \"pi-1\", \"desired_seq\": -1, \"models\": [], "
                   "\"op\": null}",
                   MF_ERR_PARSE, "desired_seq", "non-negative");
    expect_refused(sd,
                   "{\"format\": 1, \"device\": \"../x\", \"desired_seq\": 1, \"models\": [], "
                   "\"op\": null}",
                   MF_ERR_PARSE, "device", NULL);
    expect_refused(sd,
                   GOOD_HEAD
                   "\"models\": [{\"name\": \"digits\", \"current\": "
                   "{\"slot\": \"../../etc\", \"package\": "
                   "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\", "
                   "\"version\": \"1.0.0\"}, \"previous\": null}], \"op\": null}",
                   MF_ERR_PARSE, "models[0].current.slot", "slot name");
    expect_refused(sd,
                   GOOD_HEAD "\"models\": [{\"name\": \"b\", \"current\": " GOOD_CUR
                             ", \"previous\": null}, {\"name\": \"a\", \"current\": " GOOD_CUR
                             ", \"previous\": null}], \"op\": null}",
                   MF_ERR_PARSE, "models[1]", "sorted");
    expect_refused(sd,
                   GOOD_HEAD
                   "\"models\": [], \"op\": {\"kind\": \"explode\", \"model\": \"d\", "
                   "\"package\": "
                   "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\", "
                   "\"version\": \"1.0.0\", \"phase\": \"extract\", \"started\": 1}}",
                   MF_ERR_PARSE, "op.kind", "install|activate|rollback");
    expect_refused(sd,
                   GOOD_HEAD "\"models\": [], \"op\": {\"kind\": \"install\", \"model\": \"d\", "
                             "\"package\": \"AAAA\", \"version\": \"1.0.0\", \"phase\": "
                             "\"extract\", \"started\": 1}}",
                   MF_ERR_PARSE, "op.package", "64 lowercase hex");
    expect_refused(sd,
                   GOOD_HEAD
                   "\"models\": [], \"op\": {\"kind\": \"install\", \"model\": \"d\", "
                   "\"package\": "
                   "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\", "
                   "\"version\": \"1.0.0\", \"phase\": \"extract\"}}",
                   MF_ERR_PARSE, "op.started", "missing");
    expect_refused(sd, "{\"format\": 1, \"format\": 1}", MF_ERR_PARSE, NULL, "duplicate");
    /* Another format number: a version error, not a parse error. */
    expect_refused(sd, "{\"format\": 2, \"future\": true}", MF_ERR_VERSION, "format", "format 2");
    /* Over the size cap. */
    char *big = mf_xmalloc(MF_STATE_MAX + 2);
    memset(big, ' ', MF_STATE_MAX + 1);
    big[MF_STATE_MAX + 1] = '\0';
    expect_refused(sd, big, MF_ERR_TOO_LARGE, NULL, NULL);
    free(big);
    mf_state_free(s);
    free(sd);
}

/* ---- crash points ---- */

enum { CRASHED = 77 };
static const char *crash_at;
static int crash_nth, crash_seen;
static bool crash_kill;

static void crash_hook(const char *point)
{
    if (strcmp(point, crash_at) == 0 && ++crash_seen == crash_nth) {
        if (crash_kill)
            kill(getpid(), SIGKILL);
        _exit(CRASHED);
    }
}

/* What the agent does for "install package i": save, unpack, save, activate,
 * save. Returns 0 or a line number (no cmocka in a forked child). */
static int agent_install(const char *sd, int i)
{
    struct mf_state *s = NULL;
    struct mf_install_result r = {0};
    struct mf_diag d;
    uint8_t h[MF_HASH_BYTES];
    char id[MF_HASH_HEX];
    int rc = 0;

    if (mf_hash_file(pkgs[i], h, NULL, &d) != MF_OK)
        return __LINE__;
    sodium_bin2hex(id, sizeof id, h, sizeof h);
    if (mf_state_load(sd, &s, &d) != MF_OK)
        return __LINE__;
    snprintf(s->device, sizeof s->device, "pi-0042");
    s->op = (struct mf_state_op){.kind = MF_STATE_OP_INSTALL, .phase = MF_STATE_PHASE_EXTRACT};
    snprintf(s->op.model, sizeof s->op.model, "digits");
    snprintf(s->op.package, sizeof s->op.package, "%s", id);
    snprintf(s->op.version, sizeof s->op.version, "%s", versions[i]);
    s->op.started = 1;
    if (mf_state_save(sd, s, &d) != MF_OK) {
        rc = __LINE__;
        goto out;
    }
    if (mf_install_unpack(pkgs[i], &trust, sd, 0, NULL, &r, &d) != MF_OK) {
        rc = __LINE__;
        goto out;
    }
    s->op.phase = MF_STATE_PHASE_ACTIVATE;
    snprintf(s->op.slot, sizeof s->op.slot, "%s", r.slot);
    if (mf_state_save(sd, s, &d) != MF_OK ||
        mf_install_activate(sd, "digits", r.slot, &d) != MF_OK) {
        rc = __LINE__;
        goto out;
    }
    struct mf_state_model *m = mf_state_model(s, "digits", true);
    if (strcmp(m->current.slot, r.slot) != 0) {
        m->previous = m->current;
        snprintf(m->current.slot, sizeof m->current.slot, "%s", r.slot);
        snprintf(m->current.package, sizeof m->current.package, "%s", id);
        snprintf(m->current.version, sizeof m->current.version, "%s", versions[i]);
    }
    s->op = (struct mf_state_op){.kind = MF_STATE_OP_NONE};
    if (mf_state_save(sd, s, &d) != MF_OK)
        rc = __LINE__;
out:
    mf_install_result_free(&r);
    mf_state_free(s);
    return rc;
}

struct crash_case {
    const char *point;
    int nth;
};

static void crash_scenario(bool with_v1, const struct crash_case *cases, size_t n)
{
    char v1[MF_INSTALL_SLOT_MAX] = "", v2[MF_INSTALL_SLOT_MAX];
    struct mf_diag d;
    {
        /* The slot name of package 1, for the checks below. */
        char *sd = new_state_dir();
        struct mf_install_result r;
        unpack_ok(sd, 1, &r);
        snprintf(v2, sizeof v2, "%s", r.slot);
        mf_install_result_free(&r);
        mf_fs_rmtree(sd);
        free(sd);
    }
    for (size_t k = 0; k < n; k++) {
        char *sd = new_state_dir();
        char *md = model_dir(sd);
        if (with_v1) {
            assert_int_equal(agent_install(sd, 0), 0);
            assert_int_equal(mf_install_current(sd, "digits", v1, &d), MF_OK);
        }
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            crash_at = cases[k].point ? cases[k].point : "";
            crash_nth = cases[k].nth;
            crash_seen = 0;
            crash_kill = k % 2 == 1;
            mf_install_crash_hook = crash_hook;
            _exit(agent_install(sd, 1) == 0 ? 0 : 1);
        }
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        bool crashed = (WIFEXITED(status) && WEXITSTATUS(status) == CRASHED) ||
                       (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        if (cases[k].point && !crashed)
            fail_msg("crash point %s#%d was never reached (status %d)", cases[k].point,
                     cases[k].nth, status);
        if (!cases[k].point)
            assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

        /* Start-up: recover, then the invariants. */
        struct mf_install_recovery rec;
        assert_int_equal(mf_install_recover(sd, &rec, &d), MF_OK);
        assert_int_equal(rec.broken.n, 0);
        mf_install_recovery_free(&rec);
        assert_int_equal(count_prefix(md, ".staging-"), 0);
        assert_int_equal(count_prefix(md, ".current"), 0);
        assert_int_equal(count_prefix(md, ".previous"), 0);
        assert_int_equal(count_prefix(sd, ".state.json"), 0);
        char cur[MF_INSTALL_SLOT_MAX];
        enum mf_err e = mf_install_current(sd, "digits", cur, &d);
        if (with_v1 || e != MF_ERR_NOT_FOUND) {
            assert_int_equal(e, MF_OK);
            char *p = mf_install_slot_path(sd, "digits", cur);
            if (mf_install_check_slot(p, true, &d) != MF_OK)
                fail_msg("%s#%d: current %s: %s", cases[k].point, cases[k].nth, cur, d.what);
            free(p);
            assert_true(strcmp(cur, v1) == 0 || strcmp(cur, v2) == 0);
        }
        struct mf_state *s = NULL;
        assert_int_equal(mf_state_load(sd, &s, &d), MF_OK);
        struct mf_state_model *m = mf_state_model(s, "digits", false);
        if (s->op.kind == MF_STATE_OP_NONE && !s->fresh) {
            /* Idle state must describe the links exactly. */
            assert_non_null(m);
            assert_string_equal(m->current.slot, cur);
        }
        mf_state_free(s);
        /* Doing it again (the in-flight op, or the desired state still asking
         * for package 1) converges to the same end whatever the cut was. */
        assert_int_equal(agent_install(sd, 1), 0);
        char prev[MF_INSTALL_SLOT_MAX];
        assert_int_equal(mf_install_current(sd, "digits", cur, &d), MF_OK);
        assert_string_equal(cur, v2);
        if (with_v1) {
            assert_int_equal(mf_install_previous(sd, "digits", prev, &d), MF_OK);
            assert_string_equal(prev, v1);
        }
        assert_int_equal(mf_state_load(sd, &s, &d), MF_OK);
        m = mf_state_model(s, "digits", false);
        assert_non_null(m);
        assert_int_equal(s->op.kind, MF_STATE_OP_NONE);
        assert_string_equal(m->current.slot, v2);
        assert_string_equal(m->previous.slot, v1);
        mf_state_free(s);
        mf_fs_rmtree(sd);
        free(md);
        free(sd);
    }
}

static void test_crash_points_upgrade(void **state)
{
    (void)state;
    static const struct crash_case cases[] = {
        {"state:temp-written", 1}, {"unpack:before-extract", 1}, {"unpack:extracted", 1},
        {"unpack:marker", 1},      {"unpack:renamed", 1},        {"state:temp-written", 2},
        {"link:temp", 1},          {"activate:previous", 1},     {"link:temp", 2},
        {"activate:current", 1},   {"state:temp-written", 3},    {NULL, 0},
    };
    crash_scenario(true, cases, sizeof cases / sizeof cases[0]);
}

static void test_crash_points_first_install(void **state)
{
    (void)state;
    static const struct crash_case cases[] = {
        {"state:temp-written", 1}, {"unpack:extracted", 1},   {"unpack:marker", 1},
        {"unpack:renamed", 1},     {"state:temp-written", 2}, {"link:temp", 1},
        {"activate:current", 1},   {"state:temp-written", 3}, {NULL, 0},
    };
    crash_scenario(false, cases, sizeof cases / sizeof cases[0]);
}

/* A cut while pruning or rolling back leaves current and previous whole. */
static void test_crash_prune_rollback(void **state)
{
    (void)state;
    static const char *const points[] = {"prune:renamed", "rollback:swapped"};
    for (size_t k = 0; k < 2; k++) {
        char *sd = new_state_dir();
        char *md = model_dir(sd);
        char a[MF_INSTALL_SLOT_MAX], b[MF_INSTALL_SLOT_MAX], c[MF_INSTALL_SLOT_MAX];
        struct mf_diag d;
        install_activate(sd, 0, a);
        install_activate(sd, 1, b);
        install_activate(sd, 2, c); /* current c, previous b; a is prunable */
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            crash_at = points[k];
            crash_nth = 1;
            crash_seen = 0;
            crash_kill = true;
            mf_install_crash_hook = crash_hook;
            unsigned removed;
            if (k == 0)
                _exit(mf_install_prune(sd, "digits", 1, &removed, &d) == MF_OK ? 0 : 1);
            _exit(mf_install_rollback(sd, "digits", NULL, &d) == MF_OK ? 0 : 1);
        }
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        struct mf_install_recovery rec;
        assert_int_equal(mf_install_recover(sd, &rec, &d), MF_OK);
        assert_int_equal(rec.broken.n, 0);
        if (k == 0)
            assert_int_equal(rec.cleaned.n, 1); /* the half-deleted slot, renamed away */
        mf_install_recovery_free(&rec);
        assert_int_equal(count_prefix(md, ".staging-"), 0);
        char cur[MF_INSTALL_SLOT_MAX], prev[MF_INSTALL_SLOT_MAX];
        assert_int_equal(mf_install_current(sd, "digits", cur, &d), MF_OK);
        assert_int_equal(mf_install_previous(sd, "digits", prev, &d), MF_OK);
        assert_string_equal(cur, k == 0 ? c : b);
        assert_string_equal(prev, k == 0 ? b : c);
        char *pc = mf_install_slot_path(sd, "digits", cur),
             *pp = mf_install_slot_path(sd, "digits", prev);
        assert_int_equal(mf_install_check_slot(pc, true, &d), MF_OK);
        assert_int_equal(mf_install_check_slot(pp, true, &d), MF_OK);
        free(pc);
        free(pp);
        mf_fs_rmtree(sd);
        free(md);
        free(sd);
    }
}

int main(void)
{
    mf_crypto_init();
    if (!mkdtemp(tmpdir))
        return 1;
    unit_seed_key(&key, 7);
    unit_seed_key(&stranger, 8);
    mf_keyring_add(&trust, &key.pub);
    mf_strlist_push(&hw, "rpi5");
    for (int i = 0; i < N_PKGS; i++) {
        pkgs[i] = tpath("digits-%s.mfpkg", versions[i]);
        if (pack(versions[i], onnx[i], &key, pkgs[i], &payload[i]) != MF_OK) {
            fprintf(stderr, "cannot pack %s\n", pkgs[i]);
            return 1;
        }
    }
    unknown_pkg = tpath("stranger.mfpkg");
    if (pack("1.0.0", onnx[0], &stranger, unknown_pkg, NULL) != MF_OK)
        return 1;

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unpack_activate),
        cmocka_unit_test(test_versions_rollback),
        cmocka_unit_test(test_prune),
        cmocka_unit_test(test_disk_budget),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_reuse_and_rebuild),
        cmocka_unit_test(test_recover),
        cmocka_unit_test(test_state_roundtrip),
        cmocka_unit_test(test_state_refusals),
        cmocka_unit_test(test_crash_points_upgrade),
        cmocka_unit_test(test_crash_points_first_install),
        cmocka_unit_test(test_crash_prune_rollback),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    for (int i = 0; i < N_PKGS; i++)
        free(pkgs[i]);
    free(unknown_pkg);
    mf_keyring_free(&trust);
    mf_strlist_free(&hw);
    mf_fs_rmtree(tmpdir);
    return rc;
}
