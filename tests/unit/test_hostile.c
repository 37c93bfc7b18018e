/* test_hostile.c — every hostile package of the catalogue is refused with its
 * own error code and message, by verify and by extract, and extraction leaves
 * nothing behind: no staging directory, nothing else in the sandbox. */
#include <dirent.h>
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

#include "common/fs.h"
#include "common/mem.h"
#include "packaging/pkg.h"
#include "tests/support/hostile.h"

/* Names in dir, sorted and joined by spaces. */
static char *listing(const char *dir)
{
    struct dirent **names;
    int n = scandir(dir, &names, NULL, alphasort);
    assert_true(n >= 0);
    char *out = mf_xstrdup("");
    for (int i = 0; i < n; i++) {
        if (strcmp(names[i]->d_name, ".") && strcmp(names[i]->d_name, "..")) {
            char *next = mf_xasprintf("%s%s%s", out, *out ? " " : "", names[i]->d_name);
            free(out);
            out = next;
        }
        free(names[i]);
    }
    free(names);
    return out;
}

struct sandbox {
    char dir[64];
    char pkg[128];
    char staging[128];
    struct hostile_ctx ctx;
    struct mf_keyring trust;
};

static void sandbox_open(struct sandbox *s)
{
    snprintf(s->dir, sizeof s->dir, "/tmp/mf-hostile-XXXXXX");
    assert_non_null(mkdtemp(s->dir));
    snprintf(s->pkg, sizeof s->pkg, "%s/pkg.mfpkg", s->dir);
    snprintf(s->staging, sizeof s->staging, "%s/staging", s->dir);
    hostile_ctx_init(&s->ctx, s->dir, s->pkg);
    s->trust = (struct mf_keyring){0};
    mf_keyring_add(&s->trust, &s->ctx.trusted.pub);
}

static void sandbox_close(struct sandbox *s)
{
    mf_keyring_free(&s->trust);
    assert_int_equal(mf_fs_rmtree(s->dir), MF_OK);
}

static void assert_refused(const struct hostile_case *hc, enum mf_err err,
                           const struct mf_diag *diag)
{
    char line[MF_DIAG_STR_MAX];
    mf_diag_str(diag, line, sizeof line);
    if (err != hc->expect || !strstr(line, hc->message))
        fail_msg("%s: got %s (%s), want %s containing \"%s\"", hc->name, mf_errname(err), line,
                 mf_errname(hc->expect), hc->message);
}

static void test_case(void **state)
{
    const struct hostile_case *hc = *state;
    struct sandbox s;
    struct mf_pkg_result res = {0};
    struct mf_diag diag = {0};
    struct mf_pkg_opts opts = {.disk_budget = hc->disk_budget, .fsync = false};
    sandbox_open(&s);
    hc->build(&s.ctx);

    enum mf_err err = mf_pkg_verify(s.pkg, &s.trust, &opts, &res, &diag);
    assert_refused(hc, err, &diag);
    assert_null(res.manifest); /* out-params untouched on failure */

    memset(&diag, 0, sizeof diag);
    err = mf_pkg_extract(s.pkg, &s.trust, s.staging, &opts, &res, &diag);
    assert_refused(hc, err, &diag);
    assert_null(res.manifest);
    /* Nothing was left or written anywhere: only the package remains. */
    char *names = listing(s.dir);
    assert_string_equal(names, "pkg.mfpkg");
    free(names);
    sandbox_close(&s);
}

/* The control: the untouched package passes both ways, plain and zstd. */
static void test_valid_control(void **state)
{
    (void)state;
    struct sandbox s;
    struct mf_pkg_result res = {0};
    struct mf_diag diag = {0};
    struct mf_pkg_opts opts = {.fsync = true};
    sandbox_open(&s);
    hostile_build_valid(&s.ctx);
    assert_int_equal(mf_pkg_verify(s.pkg, &s.trust, &opts, &res, &diag), MF_OK);
    assert_string_equal(res.signer, s.ctx.trusted.pub.id);
    assert_int_equal(res.payload_bytes, 4096 + 640 + 80);
    mf_pkg_result_free(&res);
    assert_int_equal(mf_pkg_extract(s.pkg, &s.trust, s.staging, &opts, &res, &diag), MF_OK);
    mf_pkg_result_free(&res);
    char *eval = listing(s.staging);
    assert_string_equal(eval, "eval model");
    free(eval);
    char *sub = mf_xasprintf("%s/eval", s.staging);
    eval = listing(sub);
    assert_string_equal(eval, "inputs.npy labels.npy");
    free(eval);
    free(sub);
    /* A second extract into the same staging directory is refused. */
    assert_int_equal(mf_pkg_extract(s.pkg, &s.trust, s.staging, &opts, &res, &diag), MF_ERR_EXISTS);
    sandbox_close(&s);
}

int main(void)
{
    struct CMUnitTest *tests = mf_xcalloc(hostile_ncases + 1, sizeof *tests);
    tests[0] = (struct CMUnitTest)cmocka_unit_test(test_valid_control);
    for (size_t i = 0; i < hostile_ncases; i++) {
        tests[i + 1] = (struct CMUnitTest)cmocka_unit_test_prestate(test_case, NULL);
        tests[i + 1].name = hostile_cases[i].name;
        tests[i + 1].initial_state = (void *)&hostile_cases[i];
    }
    int rc = _cmocka_run_group_tests("hostile", tests, hostile_ncases + 1, NULL, NULL);
    free(tests);
    return rc;
}
