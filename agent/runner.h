/* runner.h — runs a model runner as a child process and reads its report, per
 * docs/runner-protocol.md (protocol v1). The child gets its own process group,
 * an address-space limit, a scratch working directory and /dev/null as stdin;
 * the parent enforces a wall-clock timeout (SIGKILL to the whole group), caps
 * stdout at 64 bytes per sample + 4 KiB, keeps stderr's last 4 KiB, reaps the
 * child with wait4 for its peak RSS and parses stdout strictly. Nothing here
 * sees the labels. */
#ifndef MF_AGENT_RUNNER_H
#define MF_AGENT_RUNNER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/err.h"

#define MF_RUNNER_PROTOCOL       1
#define MF_RUNNER_NAME_MAX       64      /* runtime name / version */
#define MF_RUNNER_STDERR_TAIL    4096    /* bytes of stderr kept */
#define MF_RUNNER_BYTES_PER_ITEM 64      /* stdout cap: this per sample ... */
#define MF_RUNNER_BYTES_EXTRA    4096    /* ... plus this */
#define MF_RUNNER_MAX_SAMPLES    1000000 /* so the stdout cap stays under 64 MiB */
#define MF_RUNNER_NUM_DIGITS     18      /* longest number the protocol allows */

/* Why a run failed. The names (mf_runner_fail_name) are stable: they go into
 * events. The protocol's "invalid output" is split in two so an event can say
 * whether the runner wrote nonsense or too much. */
enum mf_runner_fail {
    MF_RUNNER_OK = 0,     /* "ok" */
    MF_RUNNER_START,      /* "runner_start": could not be started (fork, exec, chdir...) */
    MF_RUNNER_FAILED,     /* "runner_failed": exit status != 0, or killed by a signal */
    MF_RUNNER_TIMEOUT,    /* "runner_timeout": wall-clock limit hit, group killed */
    MF_RUNNER_OUTPUT,     /* "runner_output": stdout breaks the protocol */
    MF_RUNNER_OUTPUT_CAP, /* "runner_output_cap": stdout longer than the cap */
    MF_RUNNER_FAIL__COUNT
};

/* Static stable token for a failure kind; never NULL. */
const char *mf_runner_fail_name(enum mf_runner_fail fail);

/* What to run. Every pointer is borrowed for the duration of the call.
 * Relative paths are taken relative to the caller's working directory (they
 * are made absolute before the child moves into scratch_dir). */
struct mf_runner_spec {
    const char *runner;      /* the executable (a path; PATH is not searched) */
    const char *model;       /* --model */
    const char *inputs;      /* --inputs, a .npy of n float32 rows */
    const char *scratch_dir; /* the child's working directory; must exist */
    uint64_t n;              /* samples in `inputs`, 1..MF_RUNNER_MAX_SAMPLES */
    unsigned warmup;         /* --warmup */
    unsigned threads;        /* --threads; 0 = option omitted (the runner picks) */
    uint64_t timeout_ms;     /* wall-clock limit, > 0 */
    uint64_t memory_bytes;   /* RLIMIT_AS (soft and hard); 0 = inherit the agent's */
};

/* The outcome of one run. The first group is set on success and failure
 * alike (so an event can carry it); the runner's report only on success. */
struct mf_runner_result {
    enum mf_runner_fail fail;
    int exit_status;         /* exit code, or -1 when it did not exit normally */
    int term_signal;         /* the signal that killed it, or 0 */
    uint64_t wall_us;        /* from fork to reap */
    uint64_t peak_rss_bytes; /* wait4's ru_maxrss * 1024: the runner and the
                                children it waited for. Linux folds in the
                                forked copy of the agent before exec, so this
                                is never below the agent's own anonymous RSS
                                at the fork: keep the agent small. */
    char stderr_tail[MF_RUNNER_STDERR_TAIL + 1]; /* last bytes of stderr, NUL and
                                                   control bytes but \n \t as '?' */

    char runtime[MF_RUNNER_NAME_MAX + 1];         /* "opencv-dnn" */
    char runtime_version[MF_RUNNER_NAME_MAX + 1]; /* "4.6.0" */
    uint64_t load_us, first_us;
    uint64_t n;
    uint32_t *classes;      /* owned, n entries: predicted class of sample i */
    uint64_t *latencies_us; /* owned, n entries: latency of sample i */
};

/* Runs the runner. `out` is always initialised (caller frees it with
 * mf_runner_result_free whatever the return value); on failure out->fail says
 * why and diag holds a sentence: MF_ERR_IO for start / exit / timeout,
 * MF_ERR_PARSE for invalid output, MF_ERR_TOO_LARGE for output over the cap.
 * The caller must not have SIGCHLD set to SIG_IGN (the child is reaped here).
 * Programmer misuse (NULL paths, n or timeout out of range) aborts. */
MF_MUST_CHECK enum mf_err mf_runner_run(const struct mf_runner_spec *spec,
                                        struct mf_runner_result *out, struct mf_diag *diag);

/* The child-process part of a run, shared with the post-activation hook:
 * argv[0] (an absolute path) runs in its own process group with /dev/null as
 * stdin, `cwd` as working directory, an address-space limit and a wall-clock
 * timeout; its stdout is collected into `stdout_buf` (whose cap is the
 * output cap) and stderr's tail into out->stderr_tail. Sets out->fail,
 * exit_status, term_signal, wall_us and peak_rss_bytes (nothing else). MF_OK
 * when it exited with status 0; otherwise the error and a sentence naming
 * `label` ("hook exited with status 3; stderr: ..."). */
struct mf_exec_spec {
    char *const *argv;     /* NULL-terminated; argv[0] absolute */
    const char *cwd;       /* must exist */
    const char *label;     /* "runner", "hook" */
    uint64_t timeout_ms;   /* > 0 */
    uint64_t memory_bytes; /* RLIMIT_AS; 0 = inherit */
};
struct mf_buf;
MF_MUST_CHECK enum mf_err mf_runner_exec(const struct mf_exec_spec *spec, struct mf_buf *stdout_buf,
                                         struct mf_runner_result *out, struct mf_diag *diag);

/* Starts argv[0] (absolute) in the background the same confined way (own
 * process group, /dev/null as stdin, nothing but stdin/stdout/stderr
 * inherited, killed when the calling thread dies), with stdout on out_fd and
 * the agent's stderr; *pid is the caller's to reap. Returns once exec has
 * succeeded (or why it failed). Used by the daemon for its worker. */
MF_MUST_CHECK enum mf_err mf_runner_spawn(char *const argv[], const char *cwd, int out_fd,
                                          pid_t *pid, struct mf_diag *diag);

/* Parses a runner's complete stdout for n samples (exported for tests and
 * fuzzing). On success fills the report fields of `out` (runtime, versions,
 * load_us, first_us, n, classes, latencies_us; any previous arrays are freed);
 * on failure `out` is untouched and diag->what reads "line K: why". */
MF_MUST_CHECK enum mf_err mf_runner_parse(const char *text, size_t len, uint64_t n,
                                          struct mf_runner_result *out, struct mf_diag *diag);

/* The stdout cap for n samples. */
size_t mf_runner_output_cap(uint64_t n);

/* Frees the arrays; takes a zeroed or NULL result. */
void mf_runner_result_free(struct mf_runner_result *r);

#endif
