/* runner.c — one runner run: fork, confine, exec, watch, reap, parse.
 * Invariants: between fork and exec the child calls only async-signal-safe
 * functions; the child's process group is killed (SIGKILL) before the child is
 * reaped, whatever happened, so no helper of the runner outlives the run; the
 * parent never blocks longer than the deadline (except the final wait4 after
 * SIGKILL). Peak RSS comes from wait4 (ru_maxrss of the child and its reaped
 * children). On Linux exec folds the pre-exec image's high-water mark into
 * it, and the forked copy of the agent shares (and counts) the agent's
 * anonymous pages: the figure is max(runner peak, agent anonymous RSS at fork).
 * vfork/posix_spawn would be worse (the parent's own high-water mark). */
#define _GNU_SOURCE /* pipe2, close_range */
#include "runner.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/mem.h"

#define RUNNER_DRAIN_NS (1000LL * 1000 * 1000) /* reading on after the runner exited */
#define RUNNER_TICK_MS  50                     /* how often a live child is checked */

static const char *const fail_names[MF_RUNNER_FAIL__COUNT] = {
    [MF_RUNNER_OK] = "ok",
    [MF_RUNNER_START] = "runner_start",
    [MF_RUNNER_FAILED] = "runner_failed",
    [MF_RUNNER_TIMEOUT] = "runner_timeout",
    [MF_RUNNER_OUTPUT] = "runner_output",
    [MF_RUNNER_OUTPUT_CAP] = "runner_output_cap",
};

const char *mf_runner_fail_name(enum mf_runner_fail fail)
{
    if ((unsigned)fail >= MF_RUNNER_FAIL__COUNT)
        return "unknown";
    return fail_names[fail];
}

size_t mf_runner_output_cap(uint64_t n)
{
    MF_ASSERT(n <= MF_RUNNER_MAX_SAMPLES);
    return (size_t)n * MF_RUNNER_BYTES_PER_ITEM + MF_RUNNER_BYTES_EXTRA;
}

void mf_runner_result_free(struct mf_runner_result *r)
{
    if (!r)
        return;
    free(r->classes);
    free(r->latencies_us);
    r->classes = NULL;
    r->latencies_us = NULL;
    r->n = 0;
}

/* ---- parsing ------------------------------------------------------------ */

#define RUNNER_MAX_FIELDS 5

struct line {
    const char *f[RUNNER_MAX_FIELDS];
    size_t len[RUNNER_MAX_FIELDS];
    unsigned nf;
};

/* Splits a line (without its '\n') into fields separated by exactly one
 * space. false: an empty field (double, leading or trailing space) or too
 * many fields. */
static bool runner__split(const char *p, size_t len, struct line *l)
{
    size_t start = 0;
    l->nf = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && p[i] != ' ')
            continue;
        if (i == start || l->nf == RUNNER_MAX_FIELDS)
            return false;
        l->f[l->nf] = p + start;
        l->len[l->nf] = i - start;
        l->nf++;
        start = i + 1;
    }
    return true;
}

static bool runner__is(const struct line *l, unsigned i, const char *word)
{
    return i < l->nf && l->len[i] == strlen(word) && memcmp(l->f[i], word, l->len[i]) == 0;
}

/* A non-negative decimal integer of 1..18 digits. */
static bool runner__num(const struct line *l, unsigned i, uint64_t *out)
{
    uint64_t v = 0;
    if (i >= l->nf || l->len[i] == 0 || l->len[i] > MF_RUNNER_NUM_DIGITS)
        return false;
    for (size_t k = 0; k < l->len[i]; k++) {
        char c = l->f[i][k];
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (uint64_t)(c - '0');
    }
    *out = v;
    return true;
}

/* A runtime name or version: [A-Za-z0-9._+-]{1,64}. */
static bool runner__name(const struct line *l, unsigned i, char out[MF_RUNNER_NAME_MAX + 1])
{
    if (i >= l->nf || l->len[i] == 0 || l->len[i] > MF_RUNNER_NAME_MAX)
        return false;
    for (size_t k = 0; k < l->len[i]; k++) {
        char c = l->f[i][k];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '+' || c == '-'))
            return false;
    }
    memcpy(out, l->f[i], l->len[i]);
    out[l->len[i]] = '\0';
    return true;
}

/* What a line looks like, for messages: printable ASCII, at most 40 bytes. */
static const char *runner__show(const char *p, size_t len, char buf[64])
{
    size_t k = 0, i;
    for (i = 0; i < len && k < 40; i++)
        buf[k++] = (p[i] >= 0x20 && p[i] < 0x7f) ? p[i] : '?';
    if (i < len) {
        memcpy(buf + k, "...", 3);
        k += 3;
    }
    buf[k] = '\0';
    return buf;
}

enum mf_err mf_runner_parse(const char *text, size_t len, uint64_t n, struct mf_runner_result *out,
                            struct mf_diag *diag)
{
    MF_ASSERT(text || len == 0);
    MF_ASSERT(n >= 1 && n <= MF_RUNNER_MAX_SAMPLES);
    char runtime[MF_RUNNER_NAME_MAX + 1], version[MF_RUNNER_NAME_MAX + 1], show[64];
    uint64_t load_us = 0, first_us = 0, v;
    uint32_t *classes = mf_xcalloc((size_t)n, sizeof *classes);
    uint64_t *lat = mf_xcalloc((size_t)n, sizeof *lat);
    enum mf_err err = MF_ERR_PARSE;
    size_t pos = 0, lineno = 0;
    /* Expected line: 0 header, 1 load, 2 first, 3..n+2 samples, n+3 end. */
    for (uint64_t want = 0; want <= n + 3; want++) {
        struct line l;
        lineno++;
        if (pos == len) {
            mf_diag_set(diag, err, "runner output", "line %zu: output ends before %s", lineno,
                        want == 0      ? "the header"
                        : want == 1    ? "the load line"
                        : want == 2    ? "the first line"
                        : want < n + 3 ? "all samples were reported"
                                       : "the end line");
            goto out;
        }
        const char *p = text + pos, *nl = memchr(p, '\n', len - pos);
        if (!nl) {
            mf_diag_set(diag, err, "runner output", "line %zu: no newline at the end of '%s'",
                        lineno, runner__show(p, len - pos, show));
            goto out;
        }
        size_t ll = (size_t)(nl - p);
        pos += ll + 1;
        if (!runner__split(p, ll, &l)) {
            mf_diag_set(diag, err, "runner output",
                        "line %zu: fields must be separated by exactly one space: '%s'", lineno,
                        runner__show(p, ll, show));
            goto out;
        }
        if (want == 0) {
            if (!runner__is(&l, 0, "modelfleet-runner") || l.nf != 4) {
                mf_diag_set(diag, err, "runner output",
                            "line 1: expected 'modelfleet-runner 1 RUNTIME VERSION', got '%s'",
                            runner__show(p, ll, show));
                goto out;
            }
            if (!runner__is(&l, 1, "1")) {
                mf_diag_set(diag, err, "runner output",
                            "line 1: protocol version '%s' is not supported (this agent speaks 1)",
                            runner__show(l.f[1], l.len[1], show));
                goto out;
            }
            if (!runner__name(&l, 2, runtime) || !runner__name(&l, 3, version)) {
                mf_diag_set(diag, err, "runner output",
                            "line 1: runtime name and version must be [A-Za-z0-9._+-]{1,64}: '%s'",
                            runner__show(p, ll, show));
                goto out;
            }
        } else if (want == 1 || want == 2) {
            const char *word = want == 1 ? "load" : "first";
            if (l.nf != 2 || !runner__is(&l, 0, word) || !runner__num(&l, 1, &v)) {
                mf_diag_set(diag, err, "runner output",
                            "line %zu: expected '%s MICROSECONDS' (at most 18 digits), got '%s'",
                            lineno, word, runner__show(p, ll, show));
                goto out;
            }
            *(want == 1 ? &load_us : &first_us) = v;
        } else if (want < n + 3) {
            uint64_t i = want - 3, idx, cls, us;
            if (l.nf != 3 || !runner__num(&l, 0, &idx) || !runner__num(&l, 1, &cls) ||
                !runner__num(&l, 2, &us)) {
                mf_diag_set(
                    diag, err, "runner output",
                    "line %zu: expected sample %llu as 'INDEX CLASS MICROSECONDS', got '%s'",
                    lineno, (unsigned long long)i, runner__show(p, ll, show));
                goto out;
            }
            if (idx != i) {
                mf_diag_set(diag, err, "runner output",
                            "line %zu: expected sample %llu, got sample %llu (samples must come "
                            "in order, each once)",
                            lineno, (unsigned long long)i, (unsigned long long)idx);
                goto out;
            }
            if (cls > UINT32_MAX) {
                mf_diag_set(diag, err, "runner output", "line %zu: class %llu is out of range",
                            lineno, (unsigned long long)cls);
                goto out;
            }
            classes[i] = (uint32_t)cls;
            lat[i] = us;
        } else {
            if (l.nf != 2 || !runner__is(&l, 0, "end") || !runner__num(&l, 1, &v)) {
                mf_diag_set(diag, err, "runner output", "line %zu: expected 'end %llu', got '%s'",
                            lineno, (unsigned long long)n, runner__show(p, ll, show));
                goto out;
            }
            if (v != n) {
                mf_diag_set(diag, err, "runner output",
                            "line %zu: the runner reports %llu samples, the inputs hold %llu",
                            lineno, (unsigned long long)v, (unsigned long long)n);
                goto out;
            }
        }
    }
    if (pos != len) {
        mf_diag_set(diag, err, "runner output", "line %zu: output after the end line: '%s'",
                    lineno + 1, runner__show(text + pos, len - pos, show));
        goto out;
    }
    mf_runner_result_free(out);
    memcpy(out->runtime, runtime, sizeof runtime);
    memcpy(out->runtime_version, version, sizeof version);
    out->load_us = load_us;
    out->first_us = first_us;
    out->n = n;
    out->classes = classes;
    out->latencies_us = lat;
    classes = NULL;
    lat = NULL;
    err = MF_OK;
out:
    free(classes);
    free(lat);
    return err;
}

/* ---- the child ---------------------------------------------------------- */

/* What the child reports through the exec pipe when it cannot exec. */
struct child_error {
    int stage; /* index into child_stages */
    int err;   /* errno */
};

static const char *const child_stages[] = {
    "set up its file descriptors", "join its process group", "set its memory limit",
    "enter the scratch directory", "execute the runner",
};

static void child__fail(int errfd, int stage)
{
    struct child_error ce = {stage, errno};
    ssize_t w = write(errfd, &ce, sizeof ce);
    (void)w;
    _exit(127);
}

/* Runs in the forked child: async-signal-safe calls only. */
static void child__exec(char *const argv[], const char *scratch, int in_fd, int out_fd, int err_fd,
                        int exec_fd, const struct rlimit *as, int max_fd, pid_t parent)
{
    /* Dies with the agent (kill -9, power-cut tests): no runner or hook
     * outlives the process that would read its output. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
        _exit(127);
    struct sigaction dfl;
    sigset_t none;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; s++)
        (void)sigaction(s, &dfl, NULL); /* fails harmlessly for KILL, STOP, RT */
    sigemptyset(&none);
    (void)sigprocmask(SIG_SETMASK, &none, NULL);
    /* Move every fd we use above 2 first, so no dup2 clobbers another (the
     * agent may run with a standard descriptor closed). */
    int e = fcntl(exec_fd, F_DUPFD_CLOEXEC, 3);
    if (e < 0)
        _exit(127);
    exec_fd = e;
    int a = fcntl(in_fd, F_DUPFD_CLOEXEC, 3), b = fcntl(out_fd, F_DUPFD_CLOEXEC, 3),
        c = fcntl(err_fd, F_DUPFD_CLOEXEC, 3);
    if (a < 0 || b < 0 || c < 0 || dup2(a, 0) < 0 || dup2(b, 1) < 0 || dup2(c, 2) < 0)
        child__fail(exec_fd, 0);
    /* Nothing else the agent holds reaches the runner. */
    if ((exec_fd > 3 && close_range(3, (unsigned)exec_fd - 1, 0) != 0) ||
        close_range((unsigned)exec_fd + 1, ~0U, 0) != 0) {
        for (int fd = 3; fd < max_fd; fd++) /* kernels before 5.9 */
            if (fd != exec_fd)
                (void)close(fd);
    }
    if (setpgid(0, 0) != 0)
        child__fail(exec_fd, 1);
    if (as && setrlimit(RLIMIT_AS, as) != 0)
        child__fail(exec_fd, 2);
    if (chdir(scratch) != 0)
        child__fail(exec_fd, 3);
    execv(argv[0], argv);
    child__fail(exec_fd, 4);
}

/* ---- the parent --------------------------------------------------------- */

static char *runner__abs(const char *path)
{
    if (path[0] == '/')
        return mf_xstrdup(path);
    char *cwd = getcwd(NULL, 0);
    if (!cwd)
        return NULL;
    char *abs = mf_xasprintf("%s/%s", cwd, path);
    free(cwd);
    return abs;
}

/* Stderr's last MF_RUNNER_STDERR_TAIL bytes, kept in a ring. */
struct tail {
    char ring[MF_RUNNER_STDERR_TAIL];
    size_t pos;   /* next write */
    uint64_t len; /* total bytes seen */
};

static void tail__add(struct tail *t, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        t->ring[t->pos] = p[i];
        t->pos = (t->pos + 1) % sizeof t->ring;
    }
    t->len += n;
}

static void tail__get(const struct tail *t, char out[MF_RUNNER_STDERR_TAIL + 1])
{
    size_t n = t->len < sizeof t->ring ? (size_t)t->len : sizeof t->ring;
    size_t start = (t->pos + sizeof t->ring - n) % sizeof t->ring;
    for (size_t i = 0; i < n; i++) {
        char c = t->ring[(start + i) % sizeof t->ring];
        out[i] = (c == '\n' || c == '\t' || (unsigned char)c >= 0x20) && c != 0x7f ? c : '?';
    }
    out[n] = '\0';
}

/* The last non-empty line of the stderr tail, at most `max` bytes, for diag. */
static const char *tail__last_line(const char *tail, char *buf, size_t max)
{
    size_t n = strlen(tail);
    while (n > 0 && (tail[n - 1] == '\n' || tail[n - 1] == ' '))
        n--;
    size_t s = n;
    while (s > 0 && tail[s - 1] != '\n')
        s--;
    if (n - s >= max)
        s = n - (max - 1);
    memcpy(buf, tail + s, n - s);
    buf[n - s] = '\0';
    return buf;
}

/* Reads what is available. Returns false at EOF or on error (fd closed). */
static bool runner__drain(int *fd, struct mf_buf *out, struct tail *t, bool *over_cap)
{
    char chunk[16384];
    for (;;) {
        ssize_t r = read(*fd, chunk, sizeof chunk);
        if (r > 0) {
            if (t) {
                tail__add(t, chunk, (size_t)r);
            } else if (mf_buf_append(out, chunk, (size_t)r) != MF_OK) {
                *over_cap = true;
                return true;
            }
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return true;
        close(*fd);
        *fd = -1;
        return false;
    }
}

static int64_t runner__min(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

enum mf_err mf_runner_exec(const struct mf_exec_spec *spec, struct mf_buf *stdout_buf,
                           struct mf_runner_result *out, struct mf_diag *diag)
{
    MF_ASSERT(spec && spec->argv && spec->argv[0] && spec->argv[0][0] == '/' && spec->cwd);
    MF_ASSERT(spec->label && stdout_buf && out);
    MF_ASSERT(spec->timeout_ms > 0 && spec->timeout_ms <= INT64_MAX / 1000000);
    out->fail = MF_RUNNER_OK;
    out->exit_status = -1;
    out->term_signal = 0;

    const char *what = spec->label, *exe = spec->argv[0];
    enum mf_err err = MF_OK;
    char last[200];
    int in_fd = -1, out_p[2] = {-1, -1}, err_p[2] = {-1, -1}, exec_p[2] = {-1, -1};
    struct tail *tail = mf_xcalloc(1, sizeof *tail);
    struct rlimit as, *asp = NULL;
    pid_t pid = -1;
    bool reaped = false, over_cap = false, timed_out = false;
    int wstatus = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);

    if (spec->memory_bytes) {
        if (getrlimit(RLIMIT_AS, &as) != 0) {
            err = mf_diag_errno(diag, errno, exe, "%s not started: getrlimit", what);
            out->fail = MF_RUNNER_START;
            goto out;
        }
        rlim_t want = (rlim_t)spec->memory_bytes;
        if (as.rlim_max != RLIM_INFINITY && want > as.rlim_max)
            want = as.rlim_max;
        as.rlim_cur = as.rlim_max = want;
        asp = &as;
    }
    long max_fd = sysconf(_SC_OPEN_MAX);
    if (max_fd < 0 || max_fd > 65536)
        max_fd = 65536;

    in_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (in_fd < 0 || pipe2(out_p, O_CLOEXEC) != 0 || pipe2(err_p, O_CLOEXEC) != 0 ||
        pipe2(exec_p, O_CLOEXEC) != 0) {
        err = mf_diag_errno(diag, errno, exe, "%s not started: cannot make pipes", what);
        out->fail = MF_RUNNER_START;
        goto out;
    }
    int64_t start = mf_clock_mono_ns();
    pid_t parent = getpid();
    pid = fork();
    if (pid < 0) {
        err = mf_diag_errno(diag, errno, exe, "%s not started: fork", what);
        out->fail = MF_RUNNER_START;
        goto out;
    }
    if (pid == 0)
        child__exec(spec->argv, spec->cwd, in_fd, out_p[1], err_p[1], exec_p[1], asp, (int)max_fd,
                    parent);
    (void)setpgid(pid, pid); /* also done by the child; whoever is first wins */
    close(out_p[1]);
    close(err_p[1]);
    close(exec_p[1]);
    out_p[1] = err_p[1] = exec_p[1] = -1;

    /* The exec pipe closes on a successful exec, or carries why it failed. */
    struct child_error ce;
    ssize_t r;
    do
        r = read(exec_p[0], &ce, sizeof ce);
    while (r < 0 && errno == EINTR);
    if (r == (ssize_t)sizeof ce) {
        while (wait4(pid, &wstatus, 0, &ru) < 0 && errno == EINTR)
            ;
        reaped = true;
        out->wall_us = (uint64_t)(mf_clock_mono_ns() - start) / 1000;
        err = mf_diag_errno(diag, ce.err, exe, "%s not started: cannot %s", what,
                            child_stages[ce.stage >= 0 && ce.stage < 5 ? ce.stage : 4]);
        out->fail = MF_RUNNER_START;
        goto out;
    }

    (void)fcntl(out_p[0], F_SETFL, O_NONBLOCK);
    (void)fcntl(err_p[0], F_SETFL, O_NONBLOCK);
    int64_t deadline = start + (int64_t)spec->timeout_ms * 1000000;
    int64_t drain_until = INT64_MAX;
    bool exited = false;
    for (;;) {
        if (!exited) {
            siginfo_t si;
            memset(&si, 0, sizeof si);
            if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
                si.si_pid == pid) {
                /* The leader is a zombie and still holds the group id: kill
                 * whatever it left behind, then read what is buffered. */
                exited = true;
                (void)kill(-pid, SIGKILL);
                drain_until = runner__min(mf_clock_mono_ns() + RUNNER_DRAIN_NS, deadline);
            }
        }
        if (exited && out_p[0] < 0 && err_p[0] < 0)
            break;
        int64_t now = mf_clock_mono_ns();
        if (now >= deadline && !exited) {
            timed_out = true;
            break;
        }
        if (now >= drain_until)
            break; /* something that escaped the group holds the pipes */
        int64_t until = runner__min(deadline, drain_until);
        int ms = (int)((until - now + 999999) / 1000000);
        if (!exited && ms > RUNNER_TICK_MS)
            ms = RUNNER_TICK_MS;
        struct pollfd pf[2];
        nfds_t nf = 0;
        if (out_p[0] >= 0)
            pf[nf++] = (struct pollfd){.fd = out_p[0], .events = POLLIN};
        if (err_p[0] >= 0)
            pf[nf++] = (struct pollfd){.fd = err_p[0], .events = POLLIN};
        if (poll(nf ? pf : NULL, nf, ms) < 0 && errno != EINTR) {
            err = mf_diag_errno(diag, errno, exe, "cannot watch the %s: poll", what);
            out->fail = MF_RUNNER_START;
            goto out;
        }
        if (out_p[0] >= 0)
            runner__drain(&out_p[0], stdout_buf, NULL, &over_cap);
        if (err_p[0] >= 0)
            runner__drain(&err_p[0], NULL, tail, &over_cap);
        if (over_cap)
            break;
    }
    /* Kill the group (a no-op when it is already gone) before reaping, so the
     * group id cannot have been reused. */
    (void)kill(-pid, SIGKILL);
    while (wait4(pid, &wstatus, 0, &ru) < 0) {
        if (errno != EINTR) {
            err = mf_diag_errno(diag, errno, exe, "cannot reap the %s", what);
            out->fail = MF_RUNNER_START;
            reaped = true; /* nothing left to reap */
            goto out;
        }
    }
    reaped = true;
    out->wall_us = (uint64_t)(mf_clock_mono_ns() - start) / 1000;
    out->peak_rss_bytes = (uint64_t)ru.ru_maxrss * 1024;
    if (WIFEXITED(wstatus))
        out->exit_status = WEXITSTATUS(wstatus);
    else if (WIFSIGNALED(wstatus))
        out->term_signal = WTERMSIG(wstatus);
    tail__get(tail, out->stderr_tail);

    if (timed_out) {
        out->fail = MF_RUNNER_TIMEOUT;
        err = mf_diag_set(diag, MF_ERR_IO, exe,
                          "%s timed out after %llu ms (limit %llu ms) and was killed; "
                          "stderr: %s",
                          what, (unsigned long long)(out->wall_us / 1000),
                          (unsigned long long)spec->timeout_ms,
                          tail__last_line(out->stderr_tail, last, sizeof last));
    } else if (over_cap) {
        out->fail = MF_RUNNER_OUTPUT_CAP;
        err = mf_diag_set(diag, MF_ERR_TOO_LARGE, exe,
                          "%s wrote more than %zu bytes to stdout and was killed", what,
                          stdout_buf->max);
    } else if (out->term_signal) {
        out->fail = MF_RUNNER_FAILED;
        err = mf_diag_set(diag, MF_ERR_IO, exe,
                          "%s was killed by signal %d (%s); "
                          "stderr: %s",
                          what, out->term_signal, strsignal(out->term_signal),
                          tail__last_line(out->stderr_tail, last, sizeof last));
    } else if (out->exit_status != 0) {
        out->fail = MF_RUNNER_FAILED;
        err = mf_diag_set(diag, MF_ERR_IO, exe, "%s exited with status %d; stderr: %s", what,
                          out->exit_status, tail__last_line(out->stderr_tail, last, sizeof last));
    }
out:
    if (pid > 0 && !reaped) {
        (void)kill(-pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    for (int i = 0; i < 2; i++) {
        if (out_p[i] >= 0)
            close(out_p[i]);
        if (err_p[i] >= 0)
            close(err_p[i]);
        if (exec_p[i] >= 0)
            close(exec_p[i]);
    }
    if (in_fd >= 0)
        close(in_fd);
    free(tail);
    return err;
}

enum mf_err mf_runner_spawn(char *const argv[], const char *cwd, int out_fd, pid_t *pid,
                            struct mf_diag *diag)
{
    MF_ASSERT(argv && argv[0] && argv[0][0] == '/' && cwd && pid);
    int in_fd = open("/dev/null", O_RDONLY | O_CLOEXEC), exec_p[2] = {-1, -1};
    enum mf_err err = MF_OK;
    long max_fd = sysconf(_SC_OPEN_MAX);
    if (max_fd < 0 || max_fd > 65536)
        max_fd = 65536;
    if (in_fd < 0 || pipe2(exec_p, O_CLOEXEC) != 0) {
        err = mf_diag_errno(diag, errno, argv[0], "not started: cannot make pipes");
        goto out;
    }
    pid_t parent = getpid(), child = fork();
    if (child < 0) {
        err = mf_diag_errno(diag, errno, argv[0], "not started: fork");
        goto out;
    }
    if (child == 0)
        child__exec(argv, cwd, in_fd, out_fd, STDERR_FILENO, exec_p[1], NULL, (int)max_fd, parent);
    (void)setpgid(child, child);
    close(exec_p[1]);
    exec_p[1] = -1;
    struct child_error ce;
    ssize_t r;
    do
        r = read(exec_p[0], &ce, sizeof ce);
    while (r < 0 && errno == EINTR);
    if (r == (ssize_t)sizeof ce) {
        while (waitpid(child, NULL, 0) < 0 && errno == EINTR)
            ;
        err = mf_diag_errno(diag, ce.err, argv[0], "not started: cannot %s",
                            child_stages[ce.stage >= 0 && ce.stage < 5 ? ce.stage : 4]);
        goto out;
    }
    *pid = child;
out:
    for (int i = 0; i < 2; i++)
        if (exec_p[i] >= 0)
            close(exec_p[i]);
    if (in_fd >= 0)
        close(in_fd);
    return err;
}

enum mf_err mf_runner_run(const struct mf_runner_spec *spec, struct mf_runner_result *out,
                          struct mf_diag *diag)
{
    MF_ASSERT(spec && out);
    MF_ASSERT(spec->runner && spec->model && spec->inputs && spec->scratch_dir);
    MF_ASSERT(spec->n >= 1 && spec->n <= MF_RUNNER_MAX_SAMPLES);
    memset(out, 0, sizeof *out);
    out->exit_status = -1;

    enum mf_err err;
    char *runner = runner__abs(spec->runner), *model = runner__abs(spec->model),
         *inputs = runner__abs(spec->inputs), *scratch = runner__abs(spec->scratch_dir);
    char warmup[24], threads[24];
    struct mf_buf stdout_buf;
    mf_buf_init(&stdout_buf, mf_runner_output_cap(spec->n));
    if (!runner || !model || !inputs || !scratch) {
        err = mf_diag_errno(diag, errno, spec->runner, "runner not started: cannot resolve paths");
        out->fail = MF_RUNNER_START;
        goto out;
    }
    snprintf(warmup, sizeof warmup, "%u", spec->warmup);
    snprintf(threads, sizeof threads, "%u", spec->threads);
    char *argv[] = {runner,  "--model",  model,  "--inputs",
                    inputs,  "--warmup", warmup, spec->threads ? "--threads" : NULL,
                    threads, NULL};
    struct mf_exec_spec exec = {.argv = argv,
                                .cwd = scratch,
                                .label = "runner",
                                .timeout_ms = spec->timeout_ms,
                                .memory_bytes = spec->memory_bytes};
    err = mf_runner_exec(&exec, &stdout_buf, out, diag);
    if (err == MF_OK) {
        err = mf_runner_parse(stdout_buf.data ? (const char *)stdout_buf.data : "", stdout_buf.len,
                              spec->n, out, diag);
        if (err != MF_OK) {
            out->fail = MF_RUNNER_OUTPUT;
            mf_diag_prefix(diag, spec->runner);
        }
    } else if (out->fail == MF_RUNNER_OUTPUT_CAP) {
        err = mf_diag_set(diag, MF_ERR_TOO_LARGE, spec->runner,
                          "runner wrote more than %zu bytes to stdout (64 per sample + 4 KiB for "
                          "%llu samples) and was killed",
                          stdout_buf.max, (unsigned long long)spec->n);
    }
out:
    mf_buf_free(&stdout_buf);
    free(runner);
    free(model);
    free(inputs);
    free(scratch);
    return err;
}
