/* test_agent.c — the agent's benchmark core: the runner protocol parser, real
 * child processes (fake runners in tests/unit/fake_runners/: good, crash,
 * signal, hang, garbage, out of order, too few, flood, memory hog, stderr
 * chatter, a lingering child), benchmark statistics, the labels loader and
 * the activation gate; and, when the OpenCV runner is built, a real run of
 * the fp32 and int2 fixture models through the whole chain. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "unit_tmp.h"

#include "agent/bench.h"
#include "agent/gate.h"
#include "agent/runner.h"
#include "common/err.h"
#include "common/fs.h"
#include "common/mem.h"

#define FAKE_N 25
#define INPUTS MF_FIXTURES "/eval-inputs.npy"
#define LABELS MF_FIXTURES "/eval-labels.npy"
#ifndef MF_OPENCV_RUNNER /* set by CMake when the target exists */
#define MF_OPENCV_RUNNER MF_BUILD_DIR "/runners/opencv/modelfleet-runner-opencv"
#endif
#define OPENCV_PATH MF_OPENCV_RUNNER

/* ---- helpers ---------------------------------------------------------- */

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static char *read_small(const char *path)
{
    static char buf[1024];
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void assert_contains(const char *hay, const char *needle)
{
    if (!strstr(hay, needle))
        fail_msg("'%s' does not contain '%s'", hay, needle);
}

/* A fake run: the "model" file holds n; the scratch dir is a new temp dir
 * (kept in *scratch for the caller to inspect and free). */
struct fake {
    char *scratch;
    char *model;
    char *runner;
    struct mf_runner_spec spec;
    struct mf_runner_result res;
    struct mf_diag diag;
    char msg[MF_DIAG_STR_MAX];
    enum mf_err err;
};

static void fake_prepare(struct fake *f, const char *script, uint64_t n)
{
    memset(f, 0, sizeof *f);
    f->scratch = unit_tmpdir("agent");
    f->model = mf_xasprintf("%s/model.txt", f->scratch);
    char *num = mf_xasprintf("%llu\n", (unsigned long long)n);
    write_file(f->model, num, strlen(num));
    free(num);
    f->runner = mf_xasprintf("%s/%s", MF_FAKE_RUNNERS, script);
    f->spec = (struct mf_runner_spec){.runner = f->runner,
                                      .model = f->model,
                                      .inputs = INPUTS,
                                      .scratch_dir = f->scratch,
                                      .n = n,
                                      .warmup = 3,
                                      .threads = 0,
                                      .timeout_ms = 20000,
                                      .memory_bytes = 0};
}

static void fake_go(struct fake *f)
{
    f->err = mf_runner_run(&f->spec, &f->res, &f->diag);
    if (f->err != MF_OK)
        mf_diag_str(&f->diag, f->msg, sizeof f->msg);
}

static void fake_run(struct fake *f, const char *script, uint64_t n)
{
    fake_prepare(f, script, n);
    fake_go(f);
}

static void fake_done(struct fake *f)
{
    mf_runner_result_free(&f->res);
    unit_tmpdir_free(f->scratch);
    free(f->model);
    free(f->runner);
}

/* True once pid is gone (or a zombie waiting for init): checks for up to 5 s,
 * since SIGKILL delivery to another process is asynchronous. */
static bool pid_gone(pid_t pid)
{
    for (int i = 0; i < 500; i++) {
        if (kill(pid, 0) != 0 && errno == ESRCH)
            return true;
        char path[64], buf[256];
        snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
        FILE *f = fopen(path, "r");
        if (f) {
            size_t n = fread(buf, 1, sizeof buf - 1, f);
            fclose(f);
            buf[n] = '\0';
            const char *rp = strrchr(buf, ')');
            if (rp && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X'))
                return true;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return false;
}

/* The pid a fake runner left in ./sleep.pid, or 0 when there is none. */
static pid_t read_pid(const char *scratch)
{
    char *path = mf_xasprintf("%s/sleep.pid", scratch);
    pid_t pid = access(path, R_OK) == 0 ? (pid_t)atoi(read_small(path)) : 0;
    free(path);
    return pid > 1 ? pid : 0;
}

/* ---- the protocol parser ---------------------------------------------- */

static void test_parse_ok(void **state)
{
    (void)state;
    const char *text = "modelfleet-runner 1 opencv-dnn 4.6.0\n"
                       "load 1500\n"
                       "first 321\n"
                       "0 7 40\n"
                       "1 0 41\n"
                       "2 4294967295 000000000000000042\n"
                       "end 3\n";
    struct mf_runner_result r;
    struct mf_diag d;
    memset(&r, 0, sizeof r);
    assert_int_equal(mf_runner_parse(text, strlen(text), 3, &r, &d), MF_OK);
    assert_string_equal(r.runtime, "opencv-dnn");
    assert_string_equal(r.runtime_version, "4.6.0");
    assert_int_equal(r.load_us, 1500);
    assert_int_equal(r.first_us, 321);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.classes[0], 7);
    assert_int_equal(r.classes[1], 0);
    assert_int_equal(r.classes[2], UINT32_MAX);
    assert_int_equal(r.latencies_us[0], 40);
    assert_int_equal(r.latencies_us[2], 42);
    /* Parsing again into the same result replaces the arrays (no leak). */
    assert_int_equal(mf_runner_parse(text, strlen(text), 3, &r, &d), MF_OK);
    mf_runner_result_free(&r);
    mf_runner_result_free(&r); /* idempotent */
    mf_runner_result_free(NULL);

    /* 18 digits is the most the protocol allows. */
    const char *big = "modelfleet-runner 1 x y\nload 999999999999999999\nfirst 0\n0 0 0\nend 1\n";
    memset(&r, 0, sizeof r);
    assert_int_equal(mf_runner_parse(big, strlen(big), 1, &r, &d), MF_OK);
    assert_int_equal(r.load_us, 999999999999999999ULL);
    mf_runner_result_free(&r);
}

static void test_parse_invalid(void **state)
{
    (void)state;
#define H "modelfleet-runner 1 rt 1.0\nload 10\nfirst 5\n"
    static const struct {
        const char *text;
        const char *why; /* a piece of the diagnostic */
    } cases[] = {
        {"", "line 1: output ends before the header"},
        {"modelfleet-runner 1 rt 1.0\n", "line 2: output ends before the load line"},
        {"modelfleet-runner 1 rt 1.0", "line 1: no newline"},
        {"hello\n", "line 1: expected 'modelfleet-runner 1 RUNTIME VERSION'"},
        {"modelfleet-runner 2 rt 1.0\nload 1\n", "protocol version '2' is not supported"},
        {"modelfleet-runner 1 r/t 1.0\n", "line 1: runtime name and version"},
        {"modelfleet-runner 1 rt\n", "line 1: expected"},
        {"modelfleet-runner 1 rt 1.0 extra\n", "line 1: expected"},
        {"modelfleet-runner  1 rt 1.0\n", "exactly one space"},
        {"modelfleet-runner 1 rt 1.0\r\n", "line 1: runtime name"},
        {"modelfleet-runner 1 rt 1.0\nload x\n", "line 2: expected 'load MICROSECONDS'"},
        {"modelfleet-runner 1 rt 1.0\nload -1\n", "line 2: expected 'load"},
        {"modelfleet-runner 1 rt 1.0\nload +1\n", "line 2: expected 'load"},
        {"modelfleet-runner 1 rt 1.0\nload 1000000000000000000\n", "at most 18 digits"},
        {"modelfleet-runner 1 rt 1.0\nload 1 \n", "exactly one space"},
        {"modelfleet-runner 1 rt 1.0\nfirst 1\n", "line 2: expected 'load"},
        {"modelfleet-runner 1 rt 1.0\nload 1\nload 1\n", "line 3: expected 'first"},
        {H, "line 4: output ends before all samples"},
        {H "1 0 10\n", "line 4: expected sample 0, got sample 1"},
        {H "0 0 10\n0 0 10\n", "line 5: expected sample 1, got sample 0"},
        {H "0 0 10\n2 0 10\n", "expected sample 1, got sample 2"},
        {H "0 0\n", "line 4: expected sample 0 as 'INDEX CLASS MICROSECONDS'"},
        {H "0 0 10 5\n", "line 4: expected sample 0 as"},
        {H "0 1.5 10\n", "line 4: expected sample 0 as"},
        {H "0 4294967296 10\n", "class 4294967296 is out of range"},
        {H "0 0 10\n1 1 11\nend 2\n", "line 6: expected sample 2"},
        {H "0 0 10\n1 1 11\n2 2 12\n", "line 7: output ends before the end line"},
        {H "0 0 10\n1 1 11\n2 2 12\nend 4\n",
         "line 7: the runner reports 4 samples, the inputs hold 3"},
        {H "0 0 10\n1 1 11\n2 2 12\nend\n", "line 7: expected 'end 3'"},
        {H "0 0 10\n1 1 11\n2 2 12\nend 3", "line 7: no newline"},
        {H "0 0 10\n1 1 11\n2 2 12\nend 3\n\n", "line 8: output after the end line"},
        {H "0 0 10\n1 1 11\n2 2 12\nend 3\n3 3 13\n", "line 8: output after the end line"},
        {H "0 0 10\n\n", "line 5: fields must be separated"},
    };
#undef H
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct mf_runner_result r;
        struct mf_diag d;
        memset(&r, 0, sizeof r);
        memset(&d, 0, sizeof d);
        enum mf_err err = mf_runner_parse(cases[i].text, strlen(cases[i].text), 3, &r, &d);
        if (err != MF_ERR_PARSE)
            fail_msg("case %zu: got %d, want a parse error", i, (int)err);
        if (!strstr(d.what, cases[i].why))
            fail_msg("case %zu: '%s' does not contain '%s'", i, d.what, cases[i].why);
        assert_null(r.classes); /* untouched on failure */
    }
    /* A NUL byte inside a line is not part of any valid line. */
    const char nul[] = "modelfleet-runner 1 rt 1.0\nload 1\0\n";
    struct mf_runner_result r;
    struct mf_diag d;
    memset(&r, 0, sizeof r);
    assert_int_equal(mf_runner_parse(nul, sizeof nul - 1, 1, &r, &d), MF_ERR_PARSE);
    assert_contains(d.what, "line 2");
}

static void test_parse_cap_and_names(void **state)
{
    (void)state;
    assert_int_equal(mf_runner_output_cap(10), 10 * 64 + 4096);
    assert_int_equal(mf_runner_output_cap(360), 360 * 64 + 4096);
    assert_string_equal(mf_runner_fail_name(MF_RUNNER_OK), "ok");
    assert_string_equal(mf_runner_fail_name(MF_RUNNER_START), "runner_start");
    assert_string_equal(mf_runner_fail_name(MF_RUNNER_FAILED), "runner_failed");
    assert_string_equal(mf_runner_fail_name(MF_RUNNER_TIMEOUT), "runner_timeout");
    assert_string_equal(mf_runner_fail_name(MF_RUNNER_OUTPUT), "runner_output");
    assert_string_equal(mf_runner_fail_name(MF_RUNNER_OUTPUT_CAP), "runner_output_cap");
    assert_string_equal(mf_runner_fail_name((enum mf_runner_fail)99), "unknown");
}

/* ---- running fake runners --------------------------------------------- */

static void test_run_good(void **state)
{
    (void)state;
    struct fake f;
    fake_run(&f, "good.sh", FAKE_N);
    if (f.err != MF_OK)
        fail_msg("%s", f.msg);
    assert_int_equal(f.res.fail, MF_RUNNER_OK);
    assert_int_equal(f.res.exit_status, 0);
    assert_int_equal(f.res.term_signal, 0);
    assert_string_equal(f.res.runtime, "fake-rt");
    assert_string_equal(f.res.runtime_version, "0.1.0+test");
    assert_int_equal(f.res.load_us, 1234);
    assert_int_equal(f.res.first_us, 567);
    assert_int_equal(f.res.n, FAKE_N);
    for (unsigned i = 0; i < FAKE_N; i++) {
        assert_int_equal(f.res.classes[i], i % 10);
        assert_int_equal(f.res.latencies_us[i], 100 + i);
    }
    assert_true(f.res.peak_rss_bytes > 0);
    assert_true(f.res.wall_us > 0);
    assert_string_equal(f.res.stderr_tail, "");
    /* It ran in the scratch directory with the documented options, without
     * --threads when threads is 0 (the args file is written relative to the
     * working directory). */
    char *args = mf_xasprintf("%s/args", f.scratch);
    char *want = mf_xasprintf("--model %s --inputs %s --warmup 3\n", f.model, INPUTS);
    assert_string_equal(read_small(args), want);
    free(want);
    fake_done(&f);

    /* With threads, under a generous memory limit. */
    fake_prepare(&f, "good.sh", 1);
    f.spec.threads = 2;
    f.spec.warmup = 0;
    f.spec.memory_bytes = 1ULL << 30;
    fake_go(&f);
    if (f.err != MF_OK)
        fail_msg("%s", f.msg);
    free(args);
    args = mf_xasprintf("%s/args", f.scratch);
    want = mf_xasprintf("--model %s --inputs %s --warmup 0 --threads 2\n", f.model, INPUTS);
    assert_string_equal(read_small(args), want);
    free(want);
    free(args);
    fake_done(&f);
}

static void test_run_relative_paths(void **state)
{
    (void)state;
    /* Relative paths are resolved against the caller's directory even though
     * the child runs in the scratch directory. */
    struct fake f;
    char *cwd = getcwd(NULL, 0);
    assert_non_null(cwd);
    fake_prepare(&f, "good.sh", 4);
    assert_int_equal(chdir(MF_FIXTURES), 0);
    f.spec.inputs = "eval-inputs.npy";
    fake_go(&f);
    assert_int_equal(chdir(cwd), 0);
    free(cwd);
    if (f.err != MF_OK)
        fail_msg("%s", f.msg);
    char *args = mf_xasprintf("%s/args", f.scratch);
    assert_contains(read_small(args), "--inputs " INPUTS " ");
    free(args);
    fake_done(&f);
}

static void test_run_crash(void **state)
{
    (void)state;
    struct fake f;
    fake_run(&f, "crash.sh", FAKE_N);
    assert_int_equal(f.err, MF_ERR_IO);
    assert_int_equal(f.res.fail, MF_RUNNER_FAILED);
    assert_int_equal(f.res.exit_status, 3);
    assert_int_equal(f.res.term_signal, 0);
    assert_null(f.res.classes);
    assert_contains(f.res.stderr_tail, "out of cheese");
    assert_contains(f.msg, "exited with status 3");
    assert_contains(f.msg, "stderr: fake runner: out of cheese");
    fake_done(&f);
}

static void test_run_signal(void **state)
{
    (void)state;
    struct fake f;
    fake_run(&f, "signal.sh", FAKE_N);
    assert_int_equal(f.err, MF_ERR_IO);
    assert_int_equal(f.res.fail, MF_RUNNER_FAILED);
    assert_int_equal(f.res.term_signal, SIGUSR1);
    assert_int_equal(f.res.exit_status, -1);
    char want[64];
    snprintf(want, sizeof want, "killed by signal %d", SIGUSR1);
    assert_contains(f.msg, want);
    assert_contains(f.msg, "about to be killed");
    fake_done(&f);
}

static void test_run_hang(void **state)
{
    (void)state;
    struct fake f;
    fake_prepare(&f, "hang.sh", FAKE_N);
    f.spec.timeout_ms = 300;
    fake_go(&f);
    assert_int_equal(f.err, MF_ERR_IO);
    assert_int_equal(f.res.fail, MF_RUNNER_TIMEOUT);
    assert_int_equal(f.res.term_signal, SIGKILL);
    assert_true(f.res.wall_us >= 300000);
    assert_true(f.res.wall_us < 20 * 1000000ULL); /* not the 100 s of the sleep */
    assert_contains(f.msg, "timed out after");
    assert_contains(f.msg, "(limit 300 ms)");
    /* The runner's own child died with it: the whole group was killed.
     * (Only a machine too loaded to start sh within 300 ms gets no pid.) */
    pid_t pid = read_pid(f.scratch);
    if (pid) {
        assert_contains(f.res.stderr_tail, "thinking");
        assert_true(pid_gone(pid));
    } else {
        print_message("hang.sh was killed before it started its child\n");
    }
    fake_done(&f);
}

static void test_run_linger(void **state)
{
    (void)state;
    struct fake f;
    fake_run(&f, "linger.sh", FAKE_N);
    if (f.err != MF_OK)
        fail_msg("%s", f.msg);
    assert_int_equal(f.res.n, FAKE_N);
    assert_true(f.res.wall_us < 20 * 1000000ULL);
    pid_t pid = read_pid(f.scratch);
    assert_true(pid > 0);
    assert_true(pid_gone(pid));
    fake_done(&f);
}

static void test_run_invalid_output(void **state)
{
    (void)state;
    static const struct {
        const char *script;
        const char *why;
    } cases[] = {
        {"garbage.sh", "line 5: expected sample 1 as 'INDEX CLASS MICROSECONDS', got 'hello"},
        {"out_of_order.sh", "line 5: expected sample 1, got sample 2"},
        {"too_few.sh", "line 28: expected sample 24 as 'INDEX CLASS MICROSECONDS', got 'end 24'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct fake f;
        fake_run(&f, cases[i].script, FAKE_N);
        assert_int_equal(f.err, MF_ERR_PARSE);
        assert_int_equal(f.res.fail, MF_RUNNER_OUTPUT);
        assert_int_equal(f.res.exit_status, 0);
        assert_null(f.res.classes);
        assert_contains(f.msg, cases[i].why);
        assert_contains(f.msg, cases[i].script); /* where: the runner */
        fake_done(&f);
    }
}

static void test_run_flood(void **state)
{
    (void)state;
    struct fake f;
    fake_run(&f, "flood.sh", FAKE_N);
    assert_int_equal(f.err, MF_ERR_TOO_LARGE);
    assert_int_equal(f.res.fail, MF_RUNNER_OUTPUT_CAP);
    assert_int_equal(f.res.term_signal, SIGKILL);
    char want[64];
    snprintf(want, sizeof want, "more than %zu bytes", mf_runner_output_cap(FAKE_N));
    assert_contains(f.msg, want);
    fake_done(&f);
}

static void test_run_memory_limit(void **state)
{
    (void)state;
    struct fake f;
    /* 64 MiB of address space: the 100 MiB buffer cannot be had. */
    fake_prepare(&f, "memhog.sh", FAKE_N);
    f.spec.memory_bytes = 64ULL << 20;
    fake_go(&f);
    assert_int_equal(f.err, MF_ERR_IO);
    assert_int_equal(f.res.fail, MF_RUNNER_FAILED);
    assert_int_equal(f.res.exit_status, 1);
    assert_contains(f.res.stderr_tail, "memory");
    fake_done(&f);

    /* Without the limit it runs, and wait4 sees the 100 MiB it touched
     * (ru_maxrss covers the runner's waited-for children too). */
    fake_run(&f, "memhog.sh", FAKE_N);
    if (f.err != MF_OK)
        fail_msg("%s", f.msg);
    assert_true(f.res.peak_rss_bytes >= 100ULL << 20);
    fake_done(&f);
}

static void test_run_stderr_tail(void **state)
{
    (void)state;
    struct fake f;
    fake_run(&f, "chatter.sh", FAKE_N);
    if (f.err != MF_OK)
        fail_msg("%s", f.msg);
    size_t len = strlen(f.res.stderr_tail);
    assert_int_equal(len, MF_RUNNER_STDERR_TAIL);
    const char *end = "fake runner: last words\n";
    assert_string_equal(f.res.stderr_tail + len - strlen(end), end);
    assert_contains(f.res.stderr_tail, "chatter line 299,");
    assert_null(strstr(f.res.stderr_tail, "chatter line 0,")); /* the head was dropped */
    fake_done(&f);
}

static void test_run_start_failures(void **state)
{
    (void)state;
    struct fake f;
    fake_run(&f, "no-such-runner", FAKE_N);
    assert_int_equal(f.err, MF_ERR_IO);
    assert_int_equal(f.res.fail, MF_RUNNER_START);
    assert_contains(f.msg, "cannot execute the runner");
    assert_contains(f.msg, strerror(ENOENT));
    fake_done(&f);

    fake_run(&f, "lib.sh", FAKE_N); /* not executable */
    assert_int_equal(f.err, MF_ERR_IO);
    assert_int_equal(f.res.fail, MF_RUNNER_START);
    assert_contains(f.msg, strerror(EACCES));
    fake_done(&f);

    fake_prepare(&f, "good.sh", FAKE_N);
    char *gone = mf_xasprintf("%s/missing", f.scratch);
    f.spec.scratch_dir = gone;
    fake_go(&f);
    assert_int_equal(f.err, MF_ERR_IO);
    assert_int_equal(f.res.fail, MF_RUNNER_START);
    assert_contains(f.msg, "cannot enter the scratch directory");
    free(gone);
    fake_done(&f);
}

/* ---- benchmark statistics --------------------------------------------- */

static void test_latency_stats(void **state)
{
    (void)state;
    uint64_t ten[10] = {7, 3, 10, 1, 9, 2, 8, 4, 6, 5}; /* 1..10, shuffled */
    struct mf_latency_stats s;
    mf_latency_stats_compute(ten, 10, &s);
    assert_int_equal(s.count, 10);
    assert_int_equal(s.p50_us, 5);
    assert_int_equal(s.p90_us, 9);
    assert_int_equal(s.p99_us, 10);
    assert_int_equal(s.max_us, 10);
    assert_float_equal(s.mean_us, 5.5, 1e-12);
    assert_float_equal(s.stddev_us, sqrt(82.5 / 9.0), 1e-12);
    assert_int_equal(ten[0], 7); /* the input order is left alone */

    uint64_t hundred[100];
    for (unsigned i = 0; i < 100; i++)
        hundred[i] = 100 - i; /* 100..1 */
    mf_latency_stats_compute(hundred, 100, &s);
    assert_int_equal(s.p50_us, 50);
    assert_int_equal(s.p90_us, 90);
    assert_int_equal(s.p99_us, 99);
    assert_int_equal(s.max_us, 100);

    /* 360 samples (the fixture's n): ranks ceil(180)=180, ceil(324)=324,
     * ceil(356.4)=357. */
    uint64_t big[360];
    for (unsigned i = 0; i < 360; i++)
        big[i] = 1000 + i;
    mf_latency_stats_compute(big, 360, &s);
    assert_int_equal(s.p50_us, 1179);
    assert_int_equal(s.p90_us, 1323);
    assert_int_equal(s.p99_us, 1356);
    assert_int_equal(s.max_us, 1359);

    uint64_t one = 42;
    mf_latency_stats_compute(&one, 1, &s);
    assert_int_equal(s.p50_us, 42);
    assert_int_equal(s.p99_us, 42);
    assert_float_equal(s.stddev_us, 0, 0);

    uint64_t same[4] = {8, 8, 8, 8};
    mf_latency_stats_compute(same, 4, &s);
    assert_float_equal(s.mean_us, 8, 0);
    assert_float_equal(s.stddev_us, 0, 0);

    mf_latency_stats_compute(NULL, 0, &s);
    assert_int_equal(s.count, 0);
    assert_int_equal(s.max_us, 0);

    uint64_t sorted[3] = {1, 2, 3};
    assert_int_equal(mf_latency_percentile(sorted, 3, 1), 1);
    assert_int_equal(mf_latency_percentile(sorted, 3, 34), 2);
    assert_int_equal(mf_latency_percentile(sorted, 3, 67), 3);
    assert_int_equal(mf_latency_percentile(sorted, 3, 100), 3);
}

static struct mf_runner_result fake_result(size_t n, const uint32_t *classes, uint64_t latency)
{
    struct mf_runner_result r;
    memset(&r, 0, sizeof r);
    r.n = n;
    r.classes = mf_xcalloc(n, sizeof *r.classes);
    r.latencies_us = mf_xcalloc(n, sizeof *r.latencies_us);
    memcpy(r.classes, classes, n * sizeof *classes);
    for (size_t i = 0; i < n; i++)
        r.latencies_us[i] = latency + i;
    r.load_us = 11;
    r.first_us = 22;
    r.peak_rss_bytes = 33;
    return r;
}

static void test_bench_compute(void **state)
{
    (void)state;
    /* 8 items: both right on 0-3, only the candidate on 4, only the
     * incumbent on 5 and 6, both wrong on 7. */
    const int64_t labels[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    const uint32_t cand[8] = {0, 1, 2, 3, 4, 0, 0, 0};
    const uint32_t inc[8] = {0, 1, 2, 3, 9, 5, 6, 9};
    struct mf_runner_result c = fake_result(8, cand, 200), k = fake_result(8, inc, 100);
    struct mf_bench b;
    struct mf_diag d;
    assert_int_equal(mf_bench_compute(labels, 8, &c, &k, &b, &d), MF_OK);
    assert_int_equal(b.n, 8);
    assert_true(b.has_incumbent);
    assert_int_equal(b.candidate.correct, 5);
    assert_int_equal(b.incumbent.correct, 6);
    assert_float_equal(b.candidate.accuracy, 5.0 / 8, 1e-12);
    assert_int_equal(b.paired.both, 4);
    assert_int_equal(b.paired.only_candidate, 1);
    assert_int_equal(b.paired.only_incumbent, 2);
    assert_int_equal(b.paired.neither, 1);
    assert_int_equal(b.candidate.latency.p50_us, 203);
    assert_int_equal(b.incumbent.latency.p50_us, 103);
    assert_float_equal(b.p50_ratio, 203.0 / 103.0, 1e-12);
    assert_float_equal(b.p99_ratio, 207.0 / 107.0, 1e-12);
    assert_int_equal(b.candidate.load_us, 11);
    assert_int_equal(b.candidate.peak_rss_bytes, 33);

    /* Without an incumbent: no table, no ratios. */
    assert_int_equal(mf_bench_compute(labels, 8, &c, NULL, &b, &d), MF_OK);
    assert_false(b.has_incumbent);
    assert_int_equal(b.paired.both + b.paired.only_candidate, 0);
    assert_float_equal(b.p50_ratio, 0, 0);

    /* Zero latencies count as 1 us: the ratio stays finite. */
    struct mf_runner_result z = fake_result(8, cand, 0);
    for (size_t i = 0; i < 8; i++)
        z.latencies_us[i] = 0;
    assert_int_equal(mf_bench_compute(labels, 8, &c, &z, &b, &d), MF_OK);
    assert_float_equal(b.p50_ratio, 203.0, 1e-12);

    /* A run of another length is refused. */
    assert_int_equal(mf_bench_compute(labels, 7, &c, NULL, &b, &d), MF_ERR_SCHEMA);
    assert_contains(d.what, "8 samples, the labels hold 7");
    mf_runner_result_free(&c);
    mf_runner_result_free(&k);
    mf_runner_result_free(&z);
}

/* A .npy v1.0 file with the given header dict and data. */
static void write_npy(const char *path, const char *dict, const void *data, size_t len)
{
    char head[256];
    size_t dl = strlen(dict), total = 10 + dl + 1;
    size_t pad = (64 - total % 64) % 64;
    size_t hlen = dl + pad + 1;
    memcpy(head, "\x93NUMPY\x01\x00", 8);
    head[8] = (char)(hlen & 0xff);
    head[9] = (char)(hlen >> 8);
    memcpy(head + 10, dict, dl);
    memset(head + 10 + dl, ' ', pad);
    head[10 + dl + pad] = '\n';
    uint8_t *all = mf_xmalloc(10 + hlen + len);
    memcpy(all, head, 10 + hlen);
    if (len)
        memcpy(all + 10 + hlen, data, len);
    write_file(path, all, 10 + hlen + len);
    free(all);
}

static void test_labels_load(void **state)
{
    (void)state;
    int64_t *labels = NULL;
    size_t n = 0;
    struct mf_diag d;
    assert_int_equal(mf_bench_load_labels(LABELS, 360, &labels, &n, &d), MF_OK);
    assert_int_equal(n, 360);
    for (size_t i = 0; i < n; i++)
        assert_true(labels[i] >= 0 && labels[i] <= 9);
    free(labels);

    labels = NULL;
    assert_int_equal(mf_bench_load_labels(LABELS, 359, &labels, &n, &d), MF_ERR_SCHEMA);
    assert_contains(d.what, "360 labels for 359 evaluation inputs");
    assert_null(labels);
    assert_int_equal(mf_bench_load_labels(INPUTS, 360, &labels, &n, &d), MF_ERR_SCHEMA);
    assert_contains(d.what, "'<f4' with 2 dimensions");

    char *dir = unit_tmpdir("agent"), *p = mf_xasprintf("%s/l.npy", dir);
    const int64_t neg[3] = {1, -1, 2};
    write_npy(p, "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", neg, sizeof neg);
    assert_int_equal(mf_bench_load_labels(p, 3, &labels, &n, &d), MF_ERR_SCHEMA);
    assert_contains(d.what, "label 1 is negative");
    const int32_t small[3] = {1, 2, 3};
    write_npy(p, "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }", small, sizeof small);
    assert_int_equal(mf_bench_load_labels(p, 3, &labels, &n, &d), MF_ERR_SCHEMA);
    assert_contains(d.what, "'<i4'");
    const int64_t ok[3] = {3, 1, 2};
    write_npy(p, "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", ok, sizeof ok);
    assert_int_equal(mf_bench_load_labels(p, 3, &labels, &n, &d), MF_OK);
    assert_int_equal(labels[0], 3);
    assert_int_equal(labels[2], 2);
    free(labels);
    labels = NULL;
    /* The header announces more data than the file holds. */
    write_npy(p, "{'descr': '<i8', 'fortran_order': False, 'shape': (4,), }", ok, sizeof ok);
    assert_int_equal(mf_bench_load_labels(p, 4, &labels, &n, &d), MF_ERR_SCHEMA);
    write_file(p, "not a npy file", 14);
    assert_int_equal(mf_bench_load_labels(p, 3, &labels, &n, &d), MF_ERR_PARSE);
    assert_null(labels);
    free(p);
    unit_tmpdir_free(dir);
}

/* ---- the gate --------------------------------------------------------- */

/* The gate's p-value is common/stats' tail (tested in unit_common). */
static void test_binom_tail(void **state)
{
    (void)state;
    assert_float_equal(mf_gate_binom_tail(10, 8), 56.0 / 1024, 1e-13);
    assert_float_equal(mf_gate_binom_tail(0, 0), 1.0, 0);
}

struct gate_case {
    const char *name;
    struct mf_gate_input in;
    bool pass;
    unsigned n_failures;
    enum mf_gate_check checks[MF_GATE__COUNT];
    const char *reasons[MF_GATE__COUNT]; /* a piece of each failure's reason */
};

#define TH(acc, drop, p99, mem)                                                                    \
    {                                                                                              \
        .min_accuracy = (acc), .max_accuracy_drop = (drop), .latency_p99_ms = (p99),               \
        .memory_bytes = (mem)                                                                      \
    }

static void test_gate_table(void **state)
{
    (void)state;
    const struct gate_case cases[] = {
        {"pass, all budgets met",
         {TH(0.95, 0.01, 10, 100 << 20), 1000, 980, true, {975, 5, 3, 17}, 9000, 50 << 20},
         true,
         0,
         {0},
         {NULL}},
        {"pass on the limits exactly (>= floor, <= budgets)",
         {TH(0.95, 0.01, 9, 50 << 20), 100, 95, true, {94, 1, 2, 3}, 9000, 50 << 20},
         true,
         0,
         {0},
         {NULL}},
        {"accuracy floor",
         {TH(0.95, 0.5, 0, 0), 360, 254, true, {254, 0, 0, 106}, 9000, 1},
         false,
         1,
         {MF_GATE_ACCURACY},
         {"accuracy 0.7056 is below the minimum 0.9500 by 0.2444 (254 of 360 right)"}},
        {"drop beyond the maximum, numbers in the reason",
         {TH(0.5, 0.01, 0, 0), 1000, 910, true, {900, 10, 40, 50}, 9000, 1},
         false,
         1,
         {MF_GATE_DROP},
         {"accuracy drop 0.0300 against the incumbent exceeds the maximum 0.0100 by 0.0200 "
          "(paired: only the incumbent right on 40 items, only the candidate on 10, of 1000; "
          "one-sided McNemar p = 1.19e-05)"}},
        {"p99 over budget",
         {TH(0.5, 0.01, 10, 0), 100, 99, true, {99, 0, 0, 1}, 12345, 1},
         false,
         1,
         {MF_GATE_LATENCY},
         {"latency p99 12.345 ms exceeds the budget 10.000 ms by 2.345 ms"}},
        {"memory over budget",
         {TH(0.5, 0.01, 0, 100 << 20), 100, 99, false, {0}, 5, (100 << 20) + 4096},
         false,
         1,
         {MF_GATE_MEMORY},
         {"peak memory 104861696 bytes (100.0 MiB) exceeds the budget 104857600 bytes (100.0 "
          "MiB) by 4096 bytes"}},
        {"several failures at once",
         {TH(0.95, 0.01, 1, 1 << 20), 360, 254, true, {250, 4, 103, 3}, 1500, 2 << 20},
         false,
         4,
         {MF_GATE_ACCURACY, MF_GATE_DROP, MF_GATE_LATENCY, MF_GATE_MEMORY},
         {"below the minimum 0.9500 by 0.2444", "drop 0.2750", "by 0.500 ms", "by 1048576 bytes"}},
        {"no incumbent: only the absolute checks",
         {TH(0.6, 0.0, 0, 0), 360, 254, false, {0}, 100, 1},
         true,
         0,
         {0},
         {NULL}},
        {"no incumbent, below the floor",
         {TH(0.75, 0.0, 0, 0), 360, 254, false, {0}, 100, 1},
         false,
         1,
         {MF_GATE_ACCURACY},
         {"accuracy 0.7056 is below the minimum 0.7500 by 0.0444"}},
        {"better than the incumbent: negative drop passes a zero margin",
         {TH(0.5, 0.0, 0, 0), 100, 90, true, {80, 10, 2, 8}, 100, 1},
         true,
         0,
         {0},
         {NULL}},
        {"small worsening within the margin passes even if McNemar is small",
         {TH(0.5, 0.02, 0, 0), 1000, 890, true, {890, 0, 10, 100}, 100, 1},
         true,
         0,
         {0},
         {NULL}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct gate_case *c = &cases[i];
        struct mf_gate_verdict v;
        mf_gate_judge(&c->in, &v);
        if (v.pass != c->pass || v.n_failures != c->n_failures)
            fail_msg("%s: pass=%d failures=%u (%s)", c->name, v.pass, v.n_failures,
                     v.n_failures ? v.failures[0].reason : "");
        for (unsigned k = 0; k < c->n_failures; k++) {
            if (v.failures[k].check != c->checks[k])
                fail_msg("%s: failure %u is %s", c->name, k,
                         mf_gate_check_name(v.failures[k].check));
            if (!strstr(v.failures[k].reason, c->reasons[k]))
                fail_msg("%s: '%s' does not contain '%s'", c->name, v.failures[k].reason,
                         c->reasons[k]);
            assert_true(v.failures[k].excess > 0);
        }
        assert_float_equal(v.accuracy, (double)c->in.correct / (double)c->in.n, 1e-15);
        assert_int_equal(v.has_incumbent, c->in.has_incumbent);
        if (!c->in.has_incumbent) {
            assert_float_equal(v.drop, 0, 0);
            assert_float_equal(v.mcnemar_p, 1, 0);
        }
    }
}

static void test_gate_verdict_fields(void **state)
{
    (void)state;
    struct mf_gate_input in = {TH(0.5, 0.01, 0, 0), 1000, 910, true, {900, 10, 40, 50}, 1, 1};
    struct mf_gate_verdict v;
    mf_gate_judge(&in, &v);
    assert_false(v.pass);
    assert_float_equal(v.drop, 0.03, 1e-15);
    assert_float_equal(v.mcnemar_p, mf_gate_binom_tail(50, 40), 0);
    assert_true(v.mcnemar_p > 1e-5 && v.mcnemar_p < 2e-5);
    assert_float_equal(v.failures[0].measured, 0.03, 1e-15);
    assert_float_equal(v.failures[0].limit, 0.01, 0);
    assert_float_equal(v.failures[0].excess, 0.02, 1e-15);
    assert_string_equal(mf_gate_check_name(MF_GATE_ACCURACY), "min_accuracy");
    assert_string_equal(mf_gate_check_name(MF_GATE_DROP), "max_accuracy_drop");
    assert_string_equal(mf_gate_check_name(MF_GATE_LATENCY), "latency_p99_ms");
    assert_string_equal(mf_gate_check_name(MF_GATE_MEMORY), "memory_bytes");

    /* From a bench: the same figures travel. */
    struct mf_bench b;
    memset(&b, 0, sizeof b);
    b.n = 10;
    b.candidate.correct = 9;
    b.has_incumbent = true;
    b.paired =
        (struct mf_paired){.both = 8, .only_candidate = 1, .only_incumbent = 1, .neither = 0};
    b.candidate.latency.p99_us = 777;
    b.candidate.peak_rss_bytes = 888;
    struct mf_gate_thresholds th = TH(0.9, 0.05, 1, 1000);
    mf_gate_input_from_bench(&b, &th, &in);
    assert_int_equal(in.n, 10);
    assert_int_equal(in.correct, 9);
    assert_int_equal(in.paired.only_incumbent, 1);
    assert_int_equal(in.p99_us, 777);
    assert_int_equal(in.peak_rss_bytes, 888);
    mf_gate_judge(&in, &v);
    assert_true(v.pass);
    assert_float_equal(v.drop, 0.0, 0); /* (1 - 1) / 10 */
}

/* ---- the whole chain with fake runners -------------------------------- */

static void test_chain_fake(void **state)
{
    (void)state;
    /* Labels i % 10 for the first half and 9 for the rest: the good fake
     * runner (class i % 10) gets the first half plus every 10th-from-9. */
    int64_t labels[FAKE_N];
    for (int i = 0; i < FAKE_N; i++)
        labels[i] = i < 13 ? i % 10 : 9;
    struct fake c, k;
    fake_run(&c, "good.sh", FAKE_N);
    fake_run(&k, "chatter.sh", FAKE_N);
    assert_int_equal(c.err, MF_OK);
    assert_int_equal(k.err, MF_OK);
    struct mf_bench b;
    struct mf_diag d;
    assert_int_equal(mf_bench_compute(labels, FAKE_N, &c.res, &k.res, &b, &d), MF_OK);
    assert_int_equal(b.candidate.correct, 13 + 1); /* 0..12, and 19 */
    assert_int_equal(b.paired.both, 14);
    assert_int_equal(b.paired.only_candidate + b.paired.only_incumbent, 0);
    assert_float_equal(b.p50_ratio, 1.0, 0);
    struct mf_gate_thresholds th = TH(0.5, 0.0, 0.2, 0);
    struct mf_gate_input in;
    struct mf_gate_verdict v;
    mf_gate_input_from_bench(&b, &th, &in);
    mf_gate_judge(&in, &v);
    assert_true(v.pass); /* p99 = 124 us <= 0.2 ms */
    th.latency_p99_ms = 0.1;
    mf_gate_input_from_bench(&b, &th, &in);
    mf_gate_judge(&in, &v);
    assert_false(v.pass);
    assert_string_equal(v.failures[0].reason,
                        "latency p99 0.124 ms exceeds the budget 0.100 ms by 0.024 ms");
    fake_done(&c);
    fake_done(&k);
}

/* ---- a real run: OpenCV runner, fixture models ------------------------ */

static void real_run(const char *model, const char *scratch, struct mf_runner_result *r)
{
    struct mf_runner_spec spec = {.runner = OPENCV_PATH,
                                  .model = model,
                                  .inputs = INPUTS,
                                  .scratch_dir = scratch,
                                  .n = 360,
                                  .warmup = 2,
                                  .threads = 1,
                                  .timeout_ms = 120000,
                                  .memory_bytes = 0};
    struct mf_diag d;
    char msg[MF_DIAG_STR_MAX];
    if (mf_runner_run(&spec, r, &d) != MF_OK)
        fail_msg("%s: %s\nstderr: %s", model, mf_diag_str(&d, msg, sizeof msg), r->stderr_tail);
}

static void test_real_opencv(void **state)
{
    (void)state;
    if (access(OPENCV_PATH, X_OK) != 0) {
        print_message("skipping: %s is not built\n", OPENCV_PATH);
        skip();
        return;
    }
    int64_t *labels = NULL;
    size_t n = 0;
    struct mf_diag d;
    assert_int_equal(mf_bench_load_labels(LABELS, 360, &labels, &n, &d), MF_OK);
    char *scratch = unit_tmpdir("agent");
    struct mf_runner_result fp32, int2;
    real_run(MF_FIXTURES "/digits-fp32.onnx", scratch, &fp32);
    real_run(MF_FIXTURES "/digits-int2.onnx", scratch, &int2);
    assert_true(fp32.peak_rss_bytes > 0);
    assert_true(fp32.runtime[0] != '\0');

    /* int2 is the candidate, fp32 the running model. */
    struct mf_bench b;
    assert_int_equal(mf_bench_compute(labels, n, &int2, &fp32, &b, &d), MF_OK);
    assert_int_equal(b.incumbent.correct, 353); /* models.json: correct_opencv */
    assert_int_equal(b.candidate.correct, 254);
    assert_int_equal(b.paired.both + b.paired.only_candidate, 254);
    assert_int_equal(b.paired.both + b.paired.only_incumbent, 353);
    assert_true(b.paired.only_incumbent > b.paired.only_candidate);

    struct mf_gate_thresholds th = TH(0.95, 0.01, 0, 0);
    struct mf_gate_input in;
    struct mf_gate_verdict v;
    mf_gate_input_from_bench(&b, &th, &in);
    mf_gate_judge(&in, &v);
    assert_false(v.pass);
    assert_int_equal(v.n_failures, 2);
    assert_int_equal(v.failures[0].check, MF_GATE_ACCURACY);
    assert_string_equal(v.failures[0].reason,
                        "accuracy 0.7056 is below the minimum 0.9500 by 0.2444 (254 of 360 right)");
    assert_int_equal(v.failures[1].check, MF_GATE_DROP);
    assert_contains(v.failures[1].reason, "accuracy drop 0.2750 against the incumbent");
    assert_true(v.mcnemar_p < 1e-10);

    /* The other way round (fp32 replacing int2) passes. */
    assert_int_equal(mf_bench_compute(labels, n, &fp32, &int2, &b, &d), MF_OK);
    mf_gate_input_from_bench(&b, &th, &in);
    mf_gate_judge(&in, &v);
    assert_true(v.pass);

    mf_runner_result_free(&fp32);
    mf_runner_result_free(&int2);
    free(labels);
    unit_tmpdir_free(scratch);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_ok),
        cmocka_unit_test(test_parse_invalid),
        cmocka_unit_test(test_parse_cap_and_names),
        cmocka_unit_test(test_run_good),
        cmocka_unit_test(test_run_relative_paths),
        cmocka_unit_test(test_run_crash),
        cmocka_unit_test(test_run_signal),
        cmocka_unit_test(test_run_hang),
        cmocka_unit_test(test_run_linger),
        cmocka_unit_test(test_run_invalid_output),
        cmocka_unit_test(test_run_flood),
        cmocka_unit_test(test_run_memory_limit),
        cmocka_unit_test(test_run_stderr_tail),
        cmocka_unit_test(test_run_start_failures),
        cmocka_unit_test(test_latency_stats),
        cmocka_unit_test(test_bench_compute),
        cmocka_unit_test(test_labels_load),
        cmocka_unit_test(test_binom_tail),
        cmocka_unit_test(test_gate_table),
        cmocka_unit_test(test_gate_verdict_fields),
        cmocka_unit_test(test_chain_fake),
        cmocka_unit_test(test_real_opencv),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
