/* install.c — mf-bench-install: times verify + extract of a signed package
 * (mf_pkg_extract) against plain `tar -xf` of the same archive, alternating run
 * by run in one process, and prints per-run times, medians and their ratio.
 * A benchmark, never a pass/fail test: the exit code only says whether it ran. */
#define _GNU_SOURCE /* syncfs, wait4 */

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "common/fs.h"
#include "common/hash.h"
#include "common/mem.h"
#include "packaging/key.h"
#include "packaging/pkg.h"

#define TAR_PATH        "/bin/tar"
#define HASH_BLOCK      (1u << 20) /* the read block packaging/pkg.c streams with */
#define DEFAULT_RUNS    7
#define DEFAULT_INFO    3
#define DEFAULT_HASH_MB 512
#define DEFAULT_GOAL    1.3

struct bench {
    const char *pkg;
    struct mf_keyring trust;
    char *dir_tar; /* WORK/tar: tar -xf target */
    char *dir_mf;  /* WORK/extract: mf_pkg_extract staging */
    int workfd;
    uint64_t payload; /* bytes of payload, from the warm-up extract */
    uint64_t archive; /* bytes of the package file */
    size_t n_files;
};

/* One timed run: wall clock, and CPU (user + system) of whatever did the work. */
struct sample {
    double wall, cpu;
};

/* One line of the summary: medians over its runs. */
struct row {
    const char *name;
    double wall, cpu;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(const struct rusage *ru)
{
    return (double)ru->ru_utime.tv_sec + (double)ru->ru_utime.tv_usec / 1e6 +
           (double)ru->ru_stime.tv_sec + (double)ru->ru_stime.tv_usec / 1e6;
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return cpu_s(&ru);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *v, int n)
{
    if (n <= 0)
        return 0;
    double *s = mf_xmalloc((size_t)n * sizeof *s);
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    double m = n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
    free(s);
    return m;
}

static struct row summarize(const char *name, const struct sample *s, int n)
{
    double *w = mf_xcalloc((size_t)n, sizeof *w), *c = mf_xcalloc((size_t)n, sizeof *c);
    for (int i = 0; i < n; i++) {
        w[i] = s[i].wall;
        c[i] = s[i].cpu;
    }
    struct row r = {name, median(w, n), median(c, n)};
    free(w);
    free(c);
    return r;
}

static double mbps(uint64_t bytes, double s)
{
    return s > 0 ? (double)bytes / 1e6 / s : 0;
}

static void die(const char *what, const struct mf_diag *diag)
{
    char buf[MF_DIAG_STR_MAX];
    fprintf(stderr, "mf-bench-install: %s: %s\n", what,
            diag ? mf_diag_str(diag, buf, sizeof buf) : strerror(errno));
    exit(1);
}

/* Removes an extracted tree and flushes the file system, so every run starts
 * without writeback pending from the one before (untimed). */
static void reset_dir(struct bench *b, const char *dir)
{
    if (mf_fs_rmtree(dir) != MF_OK)
        die(dir, NULL);
    if (syncfs(b->workfd) != 0)
        die("syncfs", NULL);
}

/* tar -xf PKG -C DIR, timed from fork to wait4; with sync, also syncfs. The
 * CPU is the child's, as wait4 reports it. */
static struct sample run_tar(struct bench *b, bool sync)
{
    struct rusage ru;
    int status;
    if (mkdir(b->dir_tar, 0755) != 0)
        die(b->dir_tar, NULL);
    double t0 = now_s();
    pid_t pid = fork();
    if (pid < 0)
        die("fork", NULL);
    if (pid == 0) {
        execl(TAR_PATH, "tar", "-xf", b->pkg, "-C", b->dir_tar, (char *)NULL);
        _exit(127);
    }
    while (wait4(pid, &status, 0, &ru) < 0)
        if (errno != EINTR)
            die("wait4", NULL);
    if (sync && syncfs(b->workfd) != 0)
        die("syncfs", NULL);
    struct sample s = {now_s() - t0, cpu_s(&ru)};
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "mf-bench-install: %s -xf %s failed (status %d)\n", TAR_PATH, b->pkg,
                status);
        exit(1);
    }
    reset_dir(b, b->dir_tar);
    return s;
}

/* mf_pkg_extract with the signature checked against the trusted key; with
 * extract == false, mf_pkg_verify (the same pass without writing). The CPU is
 * this process's, all threads. */
static struct sample run_mf(struct bench *b, bool extract, bool fsync)
{
    struct mf_pkg_opts opts = {.fsync = fsync};
    struct mf_pkg_result res;
    struct mf_diag diag = {0};
    enum mf_err err;
    double c0 = self_cpu_s(), t0 = now_s();
    if (extract)
        err = mf_pkg_extract(b->pkg, &b->trust, b->dir_mf, &opts, &res, &diag);
    else
        err = mf_pkg_verify(b->pkg, &b->trust, &opts, &res, &diag);
    struct sample s = {now_s() - t0, self_cpu_s() - c0};
    if (err != MF_OK)
        die(extract ? "mf_pkg_extract" : "mf_pkg_verify", &diag);
    if (res.signer[0] == '\0') {
        fprintf(stderr, "mf-bench-install: no trusted signature was checked\n");
        exit(1);
    }
    b->payload = res.payload_bytes;
    b->n_files = res.manifest->n_files;
    mf_pkg_result_free(&res);
    if (extract)
        reset_dir(b, b->dir_mf);
    return s;
}

static void print_row(const struct row *r, const struct row *base, uint64_t bytes, const char *note)
{
    printf("  %-24s %7.3f s %6.0f MB/s %7.3f s", r->name, r->wall, mbps(bytes, r->wall), r->cpu);
    if (base)
        printf("  %5.2fx vs %s", r->wall / base->wall, base->name);
    if (note)
        printf("  (%s)", note);
    printf("\n");
}

/* BLAKE2b-256 alone over an in-memory buffer: one-shot and in 1 MiB updates,
 * as pkg.c feeds it. The floor under any verifying extract on one core. */
static void bench_blake2b(size_t mib, int runs, double *oneshot, double *stream)
{
    size_t len = mib << 20;
    uint8_t *buf = mf_xmalloc(len), out[MF_HASH_BYTES];
    double *t1 = mf_xcalloc((size_t)runs, sizeof *t1), *t2 = mf_xcalloc((size_t)runs, sizeof *t2);
    randombytes_buf(buf, len); /* touches every page before timing */
    for (int i = 0; i < runs; i++) {
        double t0 = now_s();
        mf_hash_bytes(out, buf, len);
        t1[i] = now_s() - t0;
        struct mf_hash h;
        t0 = now_s();
        mf_hash_init(&h);
        for (size_t off = 0; off < len; off += HASH_BLOCK)
            mf_hash_update(&h, buf + off, len - off < HASH_BLOCK ? len - off : HASH_BLOCK);
        mf_hash_final(&h, out);
        t2[i] = now_s() - t0;
    }
    *oneshot = median(t1, runs);
    *stream = median(t2, runs);
    free(t1);
    free(t2);
    free(buf);
}

static void print_machine(void)
{
    char line[512], model[256] = "unknown";
    bool avx2 = false, avx512 = false;
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) == 0 && strcmp(model, "unknown") == 0) {
            const char *p = strchr(line, ':');
            if (p) {
                snprintf(model, sizeof model, "%s", p + 2);
                model[strcspn(model, "\n")] = '\0';
            }
        }
        if (strncmp(line, "flags", 5) == 0) {
            avx2 = avx2 || strstr(line, " avx2") != NULL;
            avx512 = avx512 || strstr(line, " avx512f") != NULL;
        }
    }
    if (f)
        fclose(f);
    printf("machine: %ld CPUs, %s (avx2 %s, avx512f %s)\n", sysconf(_SC_NPROCESSORS_ONLN), model,
           avx2 ? "yes" : "no", avx512 ? "yes" : "no");
}

/* CPU seconds all CPUs spent busy since boot, from /proc/stat (-1 unknown). */
static double busy_cpu_s(void)
{
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    int n = f ? fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                       &v[4], &v[5], &v[6], &v[7])
              : 0;
    if (f)
        fclose(f);
    if (n != 8)
        return -1;
    /* user nice system [idle iowait] irq softirq steal */
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
}

/* CPU used by this process and its waited-for children so far. */
static double own_cpu_s(void)
{
    struct rusage ch;
    getrusage(RUSAGE_CHILDREN, &ch);
    return self_cpu_s() + cpu_s(&ch);
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: mf-bench-install --pubkey PUB [--runs N] [--info-runs N] [--hash-mb N]\n"
            "                        [--goal X] [--values FILE] PKG WORKDIR\n"
            "\n"
            "Times mf_pkg_extract (signature + every payload hash, fsync off) against\n"
            "`tar -xf PKG` into WORKDIR, alternating, N runs each [%d], after one untimed\n"
            "warm-up of each; prints per-run times, medians and the median ratio.\n"
            "Informational rows (--info-runs each [%d], 0 skips): verify without writing,\n"
            "extract with fsync vs tar -xf + syncfs, and BLAKE2b alone over --hash-mb MiB\n"
            "in memory [%d, 0 skips]. --goal only labels the ratio line [%.1f].\n"
            "--values FILE also writes every figure as a `name value` line (bench/install\n"
            "turns them into its --json rows).\n"
            "A benchmark, not a test: exit 0 means it ran, whatever the ratio.\n",
            DEFAULT_RUNS, DEFAULT_INFO, DEFAULT_HASH_MB, DEFAULT_GOAL);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"pubkey", required_argument, NULL, 'k'},
        {"runs", required_argument, NULL, 'n'},
        {"info-runs", required_argument, NULL, 'i'},
        {"hash-mb", required_argument, NULL, 'm'},
        {"goal", required_argument, NULL, 'g'},
        {"values", required_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct bench b = {.workfd = -1};
    struct mf_diag diag = {0};
    const char *pub = NULL, *work, *values_path = NULL;
    int runs = DEFAULT_RUNS, info = DEFAULT_INFO, hash_mb = DEFAULT_HASH_MB, c;
    double goal = DEFAULT_GOAL;
    struct stat st;

    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 'k':
            pub = optarg;
            break;
        case 'n':
            runs = atoi(optarg);
            break;
        case 'i':
            info = atoi(optarg);
            break;
        case 'm':
            hash_mb = atoi(optarg);
            break;
        case 'g':
            goal = atof(optarg);
            break;
        case 'v':
            values_path = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!pub || argc - optind != 2 || runs < 1 || info < 0 || hash_mb < 0) {
        usage(stderr);
        return 2;
    }
    b.pkg = argv[optind];
    work = argv[optind + 1];
    mf_crypto_init();
    if (mf_keyring_load(&b.trust, pub, &diag) != MF_OK)
        die("--pubkey", &diag);
    if (stat(b.pkg, &st) != 0)
        die(b.pkg, NULL);
    b.archive = (uint64_t)st.st_size;
    if (mkdir(work, 0755) != 0 && errno != EEXIST)
        die(work, NULL);
    b.workfd = open(work, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (b.workfd < 0)
        die(work, NULL);
    b.dir_tar = mf_xasprintf("%s/tar", work);
    b.dir_mf = mf_xasprintf("%s/extract", work);
    /* Leftovers of an interrupted run. */
    if (mf_fs_rmtree(b.dir_tar) != MF_OK || mf_fs_rmtree(b.dir_mf) != MF_OK)
        die(work, NULL);

    struct sample *s_tar = mf_xcalloc((size_t)runs, sizeof *s_tar);
    struct sample *s_mf = mf_xcalloc((size_t)runs, sizeof *s_mf);
    double *ratio = mf_xcalloc((size_t)runs, sizeof *ratio);

    print_machine();
    double busy0 = busy_cpu_s(), own0 = own_cpu_s(), wall0 = now_s();
    /* Warm-up: reads the package into the page cache for both (untimed). */
    run_tar(&b, false);
    run_mf(&b, true, false);
    printf("package: %s (%.1f MB archive, %zu files, %.1f MB payload)\n", b.pkg,
           (double)b.archive / 1e6, b.n_files, (double)b.payload / 1e6);
    printf("method: %d alternating pairs in one process (tar first in odd pairs, extract first\n"
           "  in even), one untimed warm-up of each; between runs the tree is removed and\n"
           "  syncfs() called (untimed). mf_pkg_extract checks the Ed25519 signature and the\n"
           "  BLAKE2b-256 of every payload byte; it runs with fsync=false because tar -xf does\n"
           "  not fsync either. MB/s = payload bytes / wall time; cpu = user + system time of\n"
           "  the tar child (wait4) or of this process (getrusage).\n\n",
           runs);

    printf("  run   tar -xf    (cpu)      extract    (cpu)      extract/tar\n");
    for (int i = 0; i < runs; i++) {
        if (i % 2 == 0) {
            s_tar[i] = run_tar(&b, false);
            s_mf[i] = run_mf(&b, true, false);
        } else {
            s_mf[i] = run_mf(&b, true, false);
            s_tar[i] = run_tar(&b, false);
        }
        ratio[i] = s_mf[i].wall / s_tar[i].wall;
        printf("  %3d   %6.3f s  (%5.3f s)  %6.3f s  (%5.3f s)  %6.2fx\n", i + 1, s_tar[i].wall,
               s_tar[i].cpu, s_mf[i].wall, s_mf[i].cpu, ratio[i]);
        fflush(stdout);
    }
    struct row tar = summarize("tar -xf", s_tar, runs);
    struct row ext = summarize("extract fsync=false", s_mf, runs);
    double med_ratio = median(ratio, runs);
    printf("\nmedians (%d runs)            wall      MB/s       cpu\n", runs);
    print_row(&tar, NULL, b.payload, "baseline");
    print_row(&ext, &tar, b.payload, "signature + every hash");

    struct row ver = {0}, tsy = {0}, fsy = {0};
    double one = 0, stream = 0;
    if (info > 0) {
        struct sample *sv = mf_xcalloc((size_t)info, sizeof *sv);
        struct sample *ss = mf_xcalloc((size_t)info, sizeof *ss);
        struct sample *sf = mf_xcalloc((size_t)info, sizeof *sf);
        for (int i = 0; i < info; i++) {
            sv[i] = run_mf(&b, false, false);
            ss[i] = run_tar(&b, true);
            sf[i] = run_mf(&b, true, true);
        }
        ver = summarize("verify only (no write)", sv, info);
        tsy = summarize("tar -xf + syncfs", ss, info);
        fsy = summarize("extract fsync=true", sf, info);
        printf("informational (%d runs each)\n", info);
        print_row(&ver, &tar, b.payload, "mf_pkg_verify: read + parse + hash");
        print_row(&tsy, &tar, b.payload, "durable baseline; syncfs cpu not counted");
        print_row(&fsy, &tsy, b.payload, "fdatasync per file + dirs");
        free(sv);
        free(ss);
        free(sf);
    }
    if (hash_mb > 0) {
        uint64_t bytes = (uint64_t)hash_mb << 20;
        bench_blake2b((size_t)hash_mb, info > 0 ? info : 1, &one, &stream);
        printf("  %-24s %7.3f s %6.0f MB/s %9s  (libsodium crypto_generichash, %d MiB in "
               "memory, one core)\n",
               "blake2b alone", one, mbps(bytes, one), "", hash_mb);
        printf("  %-24s %7.3f s %6.0f MB/s %9s  (same, in 1 MiB updates as pkg.c)\n",
               "blake2b alone, 1 MiB", stream, mbps(bytes, stream), "");
    }
    /* What else ran meanwhile: busy CPU time not spent by this benchmark
     * (kernel threads doing its writeback count as "else", a small share). */
    double other = (busy_cpu_s() - busy0 - (own_cpu_s() - own0)) / (now_s() - wall0);
    if (busy0 < 0 || other < 0) /* unknown, or rounding of the tick counts */
        other = 0;
    printf("\nother load while this ran: %.2f of %ld CPUs busy on average%s\n", other,
           sysconf(_SC_NPROCESSORS_ONLN),
           other > 0.25 ? " -- a busy machine: wall-clock ratios are noisy; compare the cpu\n"
                          "  column, and rerun when it is quiet"
                        : "");
    printf("  ratio of medians %.2fx, median of paired ratios %.2fx, cpu ratio %.2fx\n",
           ext.wall / tar.wall, med_ratio, ext.cpu / tar.cpu);
    printf("install: median extract %.2f s vs tar -xf %.2f s -> ratio %.2fx (goal <= %.1fx)\n",
           ext.wall, tar.wall, med_ratio, goal);
    if (values_path) {
        FILE *vf = fopen(values_path, "w");
        if (!vf)
            die(values_path, NULL);
        qsort(ratio, (size_t)runs, sizeof *ratio, cmp_double);
        fprintf(vf, "runs %d\ninfo_runs %d\nhash_mb %d\ngoal %.3f\n", runs, info, hash_mb, goal);
        fprintf(vf, "payload_bytes %llu\narchive_bytes %llu\nfiles %zu\n",
                (unsigned long long)b.payload, (unsigned long long)b.archive, b.n_files);
        fprintf(vf, "tar_wall %.6f\ntar_cpu %.6f\nextract_wall %.6f\nextract_cpu %.6f\n", tar.wall,
                tar.cpu, ext.wall, ext.cpu);
        fprintf(vf, "ratio %.6f\nratio_min %.6f\nratio_max %.6f\nratio_of_medians %.6f\n",
                med_ratio, ratio[0], ratio[runs - 1], ext.wall / tar.wall);
        fprintf(vf, "cpu_ratio %.6f\nother_load %.3f\n", ext.cpu / tar.cpu, other);
        if (info > 0)
            fprintf(vf, "verify_wall %.6f\ntar_sync_wall %.6f\nextract_fsync_wall %.6f\n", ver.wall,
                    tsy.wall, fsy.wall);
        if (hash_mb > 0)
            fprintf(vf, "blake2b_wall %.6f\nblake2b_stream_wall %.6f\n", one, stream);
        if (fclose(vf) != 0)
            die(values_path, NULL);
    }

    free(s_tar);
    free(s_mf);
    free(ratio);
    free(b.dir_tar);
    free(b.dir_mf);
    close(b.workfd);
    mf_keyring_free(&b.trust);
    return 0;
}
