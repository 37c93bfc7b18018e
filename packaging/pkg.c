/* pkg.c — the one streaming reader behind verify, extract, inspect and sign.
 * A run walks the archive once; what happens to payload bytes is decided by a
 * sink (nothing, files below a staging directory, or a rewritten archive). */
#include "pkg.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/encode.h"
#include "common/fs.h"
#include "common/hash.h"
#include "common/mem.h"
#include "packaging/writer.h"

#define PKG_READ_BLOCK (1u << 20)
/* Slots of the hashing ring (each PKG_READ_BLOCK bytes). */
#define PKG_RING 4

/* What a run does with the payload. Every callback may be NULL. */
struct pkg_sink_ops {
    /* After the manifest is verified and parsed, before any payload byte. */
    enum mf_err (*header)(void *ctx, const struct mf_pkg_result *res, struct mf_diag *diag);
    enum mf_err (*begin)(void *ctx, const struct mf_manifest_file *f, struct mf_diag *diag);
    enum mf_err (*data)(void *ctx, const void *p, size_t n, struct mf_diag *diag);
    /* After the entry's size and hash matched. */
    enum mf_err (*end)(void *ctx, struct mf_diag *diag);
    /* After every listed file was seen. */
    enum mf_err (*finish)(void *ctx, struct mf_diag *diag);
    /* On any failure (also after finish failed). */
    void (*fail)(void *ctx);
};

struct pkg_src {
    const char *path; /* or: */
    const void *mem;
    size_t len;
};

/* Hashing pipeline for runs whose payload also goes to a sink (extract,
 * sign). BLAKE2b costs several times more than writing to the page cache, so
 * the caller's thread copies each block into a free slot of a small ring,
 * queues it for the hashing thread and goes on writing that slot and reading
 * the next block; it only waits when all slots are queued. The sink writes
 * the private copy, so the bytes written are exactly the bytes hashed. */
struct pkg_hasher {
    pthread_t thread;
    sem_t free_slots, full;
    uint8_t *slot[PKG_RING];
    size_t len[PKG_RING];
    struct mf_hash *h[PKG_RING];
    unsigned head, tail; /* head: next slot to fill (caller); tail: next to hash */
    bool quit;
};

struct pkg_run {
    struct pkg_hasher *hasher; /* NULL: hash on the caller's thread */
    const char *agent_version;
    const struct mf_keyring *trust;
    bool check_sig;
    bool header_only;
    size_t manifest_max;
    uint64_t disk_budget;
    const struct pkg_sink_ops *sink;
    void *ctx;
};

/* ---- libarchive errors ---- */

static enum mf_err pkg__arerr(struct archive *a, bool first, const char *where,
                              struct mf_diag *diag)
{
    const char *msg = archive_error_string(a);
    if (!msg)
        msg = "unknown error";
    if (strstr(msg, "runcated") || strstr(msg, "remature") || strstr(msg, "nexpected end"))
        return mf_diag_set(diag, MF_ERR_TRUNCATED, where, "the archive ends early (%s)", msg);
    if (first && strstr(msg, "Unrecognized archive format"))
        return mf_diag_set(diag, MF_ERR_NOT_PACKAGE, NULL,
                           "not a modelfleet package (not a tar or tar.zst archive)");
    return mf_diag_set(diag, MF_ERR_NOT_PACKAGE, where, "damaged archive: %s", msg);
}

/* Refuses anything but a plain regular file, each kind with its own words. */
static enum mf_err pkg__check_type(struct archive_entry *e, const char *name, struct mf_diag *diag)
{
    const char *what = NULL;
    if (archive_entry_hardlink(e))
        what = "is a hard link";
    else {
        switch (archive_entry_filetype(e)) {
        case AE_IFREG:
            break;
        case AE_IFLNK:
            what = "is a symbolic link";
            break;
        case AE_IFCHR:
        case AE_IFBLK:
            what = "is a device node";
            break;
        case AE_IFIFO:
            what = "is a fifo";
            break;
        case AE_IFDIR:
            what = "is a directory entry";
            break;
        case AE_IFSOCK:
            what = "is a socket";
            break;
        default:
            what = "has an unknown type";
            break;
        }
    }
    if (!what && archive_entry_sparse_count(e) > 0)
        what = "is a sparse file";
    if (what)
        return mf_diag_set(diag, MF_ERR_ENTRY_TYPE, name, "%s; packages hold only regular files",
                           what);
    return MF_OK;
}

/* Reads one of the two leading small entries completely. */
static enum mf_err pkg__read_small(struct archive *a, int index, const char *want, size_t cap,
                                   struct mf_buf *out, struct mf_diag *diag)
{
    struct archive_entry *e;
    int r = archive_read_next_header(a, &e);
    if (r == ARCHIVE_EOF)
        return index == 0
                   ? mf_diag_set(diag, MF_ERR_NOT_PACKAGE, NULL, "the archive holds no entries")
                   : mf_diag_set(diag, MF_ERR_LAYOUT, NULL,
                                 "the archive ends after manifest.json; manifest.sig "
                                 "must be the second entry");
    if (r != ARCHIVE_OK)
        return pkg__arerr(a, index == 0, want, diag);
    const char *name = archive_entry_pathname(e);
    if (!name || strcmp(name, want) != 0)
        return mf_diag_set(diag, MF_ERR_LAYOUT, NULL, "entry %d is '%s'; %s must be entry %d",
                           index + 1, name ? name : "(no name)", want, index + 1);
    enum mf_err err = pkg__check_type(e, want, diag);
    if (err != MF_OK)
        return err;
    if (!archive_entry_size_is_set(e) || archive_entry_size(e) < 0 ||
        (uint64_t)archive_entry_size(e) > cap)
        return mf_diag_set(diag, MF_ERR_TOO_LARGE, want, "is %lld bytes; the cap is %zu",
                           (long long)archive_entry_size(e), cap);
    size_t size = (size_t)archive_entry_size(e);
    mf_buf_init(out, cap);
    uint8_t *p = mf_xmalloc(size ? size : 1);
    la_ssize_t got = 0;
    while ((size_t)got < size) {
        la_ssize_t n = archive_read_data(a, p + got, size - (size_t)got);
        if (n < 0) {
            free(p);
            return pkg__arerr(a, false, want, diag);
        }
        if (n == 0)
            break;
        got += n;
    }
    if ((size_t)got != size) {
        free(p);
        return mf_diag_set(diag, MF_ERR_TRUNCATED, want, "the archive ends early");
    }
    err = mf_buf_append(out, p, size);
    free(p);
    return err;
}

static enum mf_err pkg__check_agent(const struct mf_manifest *m, const char *agent,
                                    struct mf_diag *diag)
{
    struct mf_semver have, need;
    if (mf_semver_parse(agent, &have, diag) != MF_OK)
        return mf_diag_set(diag, MF_ERR_USAGE, NULL, "agent version '%s' is not semantic", agent);
    if (mf_semver_parse(m->min_agent_version, &need, diag) != MF_OK)
        return MF_ERR_SCHEMA; /* the manifest parser already refuses this */
    if (mf_semver_cmp(&have, &need) < 0)
        return mf_diag_set(diag, MF_ERR_VERSION, "min_agent_version",
                           "the package needs agent %s or newer; this agent is %s",
                           m->min_agent_version, agent);
    return MF_OK;
}

/* Checks one payload header; returns the manifest entry it stands for. */
static enum mf_err pkg__check_entry(struct archive_entry *e, const struct mf_manifest *m,
                                    const uint8_t *seen, const struct mf_manifest_file **out,
                                    struct mf_diag *diag)
{
    const char *name = archive_entry_pathname(e), *why;
    if (!name)
        return mf_diag_set(diag, MF_ERR_UNSAFE_PATH, NULL, "an entry has no name");
    if (strcmp(name, "manifest.json") == 0 || strcmp(name, "manifest.sig") == 0)
        return mf_diag_set(diag, MF_ERR_DUPLICATE, name, "appears a second time");
    enum mf_err err = pkg__check_type(e, name, diag);
    if (err != MF_OK)
        return err;
    if (mf_pkg_path_check(name, &why) != MF_OK)
        return mf_diag_set(diag, MF_ERR_UNSAFE_PATH, name, "entry path %s", why);
    const struct mf_manifest_file *f = mf_manifest_find(m, name);
    if (!f)
        return mf_diag_set(diag, MF_ERR_UNLISTED, name, "is not listed in the manifest");
    if (seen[f - m->files])
        return mf_diag_set(diag, MF_ERR_DUPLICATE, name, "appears twice in the archive");
    if (!archive_entry_size_is_set(e) || (uint64_t)archive_entry_size(e) != f->size)
        return mf_diag_set(diag, MF_ERR_SIZE_MISMATCH, name,
                           "is %lld bytes in the archive; the manifest says %llu",
                           (long long)archive_entry_size(e), (unsigned long long)f->size);
    *out = f;
    return MF_OK;
}

/* Queues n bytes for hashing into h and hands each slot to the sink. */
static enum mf_err ring__feed(struct pkg_hasher *w, struct mf_hash *h, const uint8_t *p, size_t n,
                              const struct pkg_run *run, struct mf_diag *diag)
{
    while (n) {
        size_t c = n < PKG_READ_BLOCK ? n : PKG_READ_BLOCK;
        while (sem_wait(&w->free_slots) != 0)
            ; /* EINTR */
        unsigned i = w->head++ % PKG_RING;
        memcpy(w->slot[i], p, c);
        w->len[i] = c;
        w->h[i] = h;
        sem_post(&w->full);
        enum mf_err err = run->sink->data(run->ctx, w->slot[i], c, diag);
        if (err != MF_OK)
            return err;
        p += c;
        n -= c;
    }
    return MF_OK;
}

/* Waits until every queued slot is hashed (the hash state lives on the
 * caller's stack, so this runs before the entry's hash is read or dropped). */
static void ring__drain(struct pkg_hasher *w)
{
    for (unsigned i = 0; i < PKG_RING; i++)
        while (sem_wait(&w->free_slots) != 0)
            ;
    for (unsigned i = 0; i < PKG_RING; i++)
        sem_post(&w->free_slots);
}

static void *ring__main(void *arg)
{
    struct pkg_hasher *w = arg;
    for (;;) {
        while (sem_wait(&w->full) != 0)
            ;
        if (w->quit)
            return NULL;
        unsigned i = w->tail++ % PKG_RING;
        mf_hash_update(w->h[i], w->slot[i], w->len[i]);
        sem_post(&w->free_slots);
    }
}

/* Starts the hashing thread; false (hash inline) on one CPU or if the system
 * refuses a thread. */
static bool ring__start(struct pkg_hasher *w)
{
    memset(w, 0, sizeof *w);
    if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
        return false;
    if (sem_init(&w->free_slots, 0, PKG_RING) != 0)
        return false;
    if (sem_init(&w->full, 0, 0) != 0) {
        sem_destroy(&w->free_slots);
        return false;
    }
    for (unsigned i = 0; i < PKG_RING; i++)
        w->slot[i] = mf_xmalloc(PKG_READ_BLOCK);
    if (pthread_create(&w->thread, NULL, ring__main, w) == 0)
        return true;
    for (unsigned i = 0; i < PKG_RING; i++)
        free(w->slot[i]);
    sem_destroy(&w->free_slots);
    sem_destroy(&w->full);
    return false;
}

static void ring__stop(struct pkg_hasher *w)
{
    w->quit = true;
    sem_post(&w->full);
    pthread_join(w->thread, NULL);
    for (unsigned i = 0; i < PKG_RING; i++)
        free(w->slot[i]);
    sem_destroy(&w->free_slots);
    sem_destroy(&w->full);
}

/* Streams one payload entry through the hash and the sink. */
static enum mf_err pkg__stream_entry(struct archive *a, const struct mf_manifest_file *f,
                                     const struct pkg_run *run, struct mf_diag *diag)
{
    struct mf_hash h;
    uint8_t digest[MF_HASH_BYTES];
    uint64_t total = 0;
    enum mf_err err = MF_OK;
    if (run->sink->begin && (err = run->sink->begin(run->ctx, f, diag)) != MF_OK)
        return err;
    mf_hash_init(&h);
    for (;;) {
        const void *p;
        size_t n;
        la_int64_t off;
        int r = archive_read_data_block(a, &p, &n, &off);
        if (r == ARCHIVE_EOF)
            break;
        if (r != ARCHIVE_OK) {
            err = pkg__arerr(a, false, f->path, diag);
            break;
        }
        if (off < 0 || (uint64_t)off != total) {
            err = mf_diag_set(diag, MF_ERR_ENTRY_TYPE, f->path,
                              "has holes (sparse); packages hold only regular files");
            break;
        }
        if (n > f->size - total) {
            err = mf_diag_set(diag, MF_ERR_SIZE_MISMATCH, f->path,
                              "holds more bytes than the manifest says (%llu)",
                              (unsigned long long)f->size);
            break;
        }
        if (run->hasher) {
            err = ring__feed(run->hasher, &h, p, n, run, diag);
        } else {
            mf_hash_update(&h, p, n);
            err = run->sink->data ? run->sink->data(run->ctx, p, n, diag) : MF_OK;
        }
        if (err != MF_OK)
            break;
        total += n;
    }
    if (run->hasher)
        ring__drain(run->hasher);
    if (err != MF_OK)
        return err;
    if (total != f->size)
        return mf_diag_set(diag, MF_ERR_TRUNCATED, f->path, "holds %llu of its %llu bytes",
                           (unsigned long long)total, (unsigned long long)f->size);
    mf_hash_final(&h, digest);
    if (sodium_memcmp(digest, f->hash, sizeof digest) != 0) {
        char got[MF_HASH_HEX], want[MF_HASH_HEX];
        mf_hex_encode(got, digest, sizeof digest);
        mf_hex_encode(want, f->hash, sizeof f->hash);
        return mf_diag_set(diag, MF_ERR_HASH_MISMATCH, f->path,
                           "content hash is %.16s..., the manifest says %.16s... (altered or "
                           "corrupted)",
                           got, want);
    }
    if (run->sink->end && (err = run->sink->end(run->ctx, diag)) != MF_OK)
        return err;
    return MF_OK;
}

void mf_pkg_result_free(struct mf_pkg_result *r)
{
    if (!r)
        return;
    mf_manifest_free(r->manifest);
    free(r->manifest_bytes);
    memset(r, 0, sizeof *r);
}

static enum mf_err pkg__open(struct archive *a, const struct pkg_src *src, int *fd,
                             struct mf_diag *diag)
{
    struct stat st;
    archive_read_support_format_tar(a);
    archive_read_support_filter_zstd(a);
    if (src->path) {
        *fd = open(src->path, O_RDONLY | O_CLOEXEC);
        if (*fd < 0)
            return mf_diag_errno(diag, errno, NULL, "cannot open");
        if (fstat(*fd, &st) != 0)
            return mf_diag_errno(diag, errno, NULL, "cannot stat");
        if (!S_ISREG(st.st_mode))
            return mf_diag_set(diag, MF_ERR_NOT_PACKAGE, NULL, "not a regular file");
        if (st.st_size == 0)
            return mf_diag_set(diag, MF_ERR_NOT_PACKAGE, NULL, "the file is empty");
        posix_fadvise(*fd, 0, 0, POSIX_FADV_SEQUENTIAL);
        if (archive_read_open_fd(a, *fd, PKG_READ_BLOCK) != ARCHIVE_OK)
            return pkg__arerr(a, true, NULL, diag);
    } else {
        if (src->len == 0)
            return mf_diag_set(diag, MF_ERR_NOT_PACKAGE, NULL, "the file is empty");
        if (archive_read_open_memory(a, src->mem, src->len) != ARCHIVE_OK)
            return pkg__arerr(a, true, NULL, diag);
    }
    return MF_OK;
}

static enum mf_err pkg__run_payload(const struct pkg_src *src, const struct pkg_run *run,
                                    struct mf_pkg_result *out, struct mf_diag *diag);

/* Runs with a hashing helper thread when payload bytes also go to a sink. */
static enum mf_err pkg__run(const struct pkg_src *src, struct pkg_run *run,
                            struct mf_pkg_result *out, struct mf_diag *diag)
{
    struct pkg_hasher hasher;
    run->hasher = run->sink->data && !run->header_only && ring__start(&hasher) ? &hasher : NULL;
    enum mf_err err = pkg__run_payload(src, run, out, diag);
    if (run->hasher)
        ring__stop(run->hasher);
    run->hasher = NULL;
    return err;
}

static enum mf_err pkg__run_payload(const struct pkg_src *src, const struct pkg_run *run,
                                    struct mf_pkg_result *out, struct mf_diag *diag)
{
    struct mf_pkg_result res = {0};
    struct mf_buf mbuf = {0}, sbuf = {0};
    uint8_t *seen = NULL;
    int fd = -1;
    enum mf_err err;
    struct archive *a = archive_read_new();

    if ((err = pkg__open(a, src, &fd, diag)) != MF_OK ||
        (err = pkg__read_small(a, 0, "manifest.json", run->manifest_max, &mbuf, diag)) != MF_OK)
        goto out;
    res.zstd = archive_filter_code(a, 0) == ARCHIVE_FILTER_ZSTD;
    if (archive_filter_count(a) > 2) { /* "none" plus at most one zstd layer */
        err =
            mf_diag_set(diag, MF_ERR_NOT_PACKAGE, NULL, "the archive is compressed more than once");
        goto out;
    }
    if ((err = pkg__read_small(a, 1, "manifest.sig", MF_SIG_FILE_MAX, &sbuf, diag)) != MF_OK ||
        (err = mf_sigset_parse(sbuf.data, sbuf.len, &res.sigs, diag)) != MF_OK)
        goto out;
    /* The signature is checked on the raw bytes before the manifest is parsed. */
    if (run->check_sig && (err = mf_sigset_check(&res.sigs, mbuf.data, mbuf.len, run->trust,
                                                 res.signer, diag)) != MF_OK)
        goto out;
    if ((err = mf_manifest_parse(mbuf.data, mbuf.len, &res.manifest, diag)) != MF_OK)
        goto out;
    res.manifest_bytes = mf_buf_steal(&mbuf, &res.manifest_len);
    if (run->header_only)
        goto done;

    const struct mf_manifest *m = res.manifest;
    uint64_t declared = mf_manifest_payload_bytes(m);
    if (run->disk_budget && declared > run->disk_budget) {
        err = mf_diag_set(diag, MF_ERR_DISK_BUDGET, NULL,
                          "the manifest declares %llu bytes of files; the disk budget is %llu",
                          (unsigned long long)declared, (unsigned long long)run->disk_budget);
        goto out;
    }
    if (run->agent_version && (err = pkg__check_agent(m, run->agent_version, diag)) != MF_OK)
        goto out;
    if (run->sink->header && (err = run->sink->header(run->ctx, &res, diag)) != MF_OK)
        goto out;
    seen = mf_xcalloc(m->n_files, 1);
    for (;;) {
        struct archive_entry *e;
        const struct mf_manifest_file *f = NULL;
        int r = archive_read_next_header(a, &e);
        if (r == ARCHIVE_EOF)
            break;
        if (r != ARCHIVE_OK) {
            err = pkg__arerr(a, false, NULL, diag);
            goto out;
        }
        if ((err = pkg__check_entry(e, m, seen, &f, diag)) != MF_OK ||
            (err = pkg__stream_entry(a, f, run, diag)) != MF_OK)
            goto out;
        seen[f - m->files] = 1;
        res.payload_bytes += f->size;
    }
    for (size_t i = 0; i < m->n_files; i++) {
        if (!seen[i]) {
            err = mf_diag_set(diag, MF_ERR_MISSING, m->files[i].path,
                              "is listed in the manifest but not in the archive");
            goto out;
        }
    }
    if (run->sink->finish && (err = run->sink->finish(run->ctx, diag)) != MF_OK)
        goto out;
done:
    *out = res;
    memset(&res, 0, sizeof res);
out:
    if (err != MF_OK && run->sink && run->sink->fail)
        run->sink->fail(run->ctx);
    if (err != MF_OK)
        mf_diag_prefix(diag, src->path ? src->path : "<buffer>");
    archive_read_free(a);
    if (fd >= 0)
        close(fd);
    free(seen);
    mf_buf_free(&mbuf);
    mf_buf_free(&sbuf);
    mf_pkg_result_free(&res);
    return err;
}

/* ---- verify ---- */

static const struct pkg_sink_ops pkg__null_sink = {0};

static void pkg__run_init(struct pkg_run *run, const struct mf_keyring *trust,
                          const struct mf_pkg_opts *opts)
{
    memset(run, 0, sizeof *run);
    run->trust = trust;
    run->check_sig = trust != NULL;
    run->manifest_max = opts && opts->manifest_max && opts->manifest_max < MF_MANIFEST_MAX
                            ? opts->manifest_max
                            : MF_MANIFEST_MAX;
    run->disk_budget = opts ? opts->disk_budget : 0;
    run->agent_version = opts ? opts->agent_version : NULL;
    run->sink = &pkg__null_sink;
}

enum mf_err mf_pkg_verify(const char *path, const struct mf_keyring *trust,
                          const struct mf_pkg_opts *opts, struct mf_pkg_result *out,
                          struct mf_diag *diag)
{
    struct pkg_run run;
    struct pkg_src src = {.path = path};
    pkg__run_init(&run, trust, opts);
    return pkg__run(&src, &run, out, diag);
}

enum mf_err mf_pkg_verify_buffer(const void *data, size_t len, const struct mf_keyring *trust,
                                 const struct mf_pkg_opts *opts, struct mf_pkg_result *out,
                                 struct mf_diag *diag)
{
    struct pkg_run run;
    struct pkg_src src = {.mem = data, .len = len};
    pkg__run_init(&run, trust, opts);
    return pkg__run(&src, &run, out, diag);
}

enum mf_err mf_pkg_inspect(const char *path, struct mf_pkg_result *out, struct mf_diag *diag)
{
    struct pkg_run run;
    struct pkg_src src = {.path = path};
    pkg__run_init(&run, NULL, NULL);
    run.header_only = true;
    return pkg__run(&src, &run, out, diag);
}

/* ---- extract: files below a staging directory ---- */

struct dir_sink {
    const char *staging;
    int root; /* staging directory */
    int fd;   /* file being written, or -1 */
    bool fsync;
};

/* Opens (creating) the parent directories of path below root; the path was
 * validated, and nothing here follows a symbolic link. */
static enum mf_err dir__parent(struct dir_sink *s, const char *path, int *dirfd, const char **leaf,
                               struct mf_diag *diag)
{
    int cur = s->root;
    const char *p = path;
    for (const char *slash; (slash = strchr(p, '/')) != NULL; p = slash + 1) {
        char comp[MF_PATH_MAX + 1];
        memcpy(comp, p, (size_t)(slash - p));
        comp[slash - p] = '\0';
        if (mkdirat(cur, comp, 0755) != 0 && errno != EEXIST)
            goto fail;
        int next = openat(cur, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (cur != s->root)
            close(cur);
        if (next < 0)
            return mf_diag_errno(diag, errno, path, "cannot open directory '%s'", comp);
        cur = next;
    }
    *dirfd = cur;
    *leaf = p;
    return MF_OK;
fail:;
    int saved = errno;
    if (cur != s->root)
        close(cur);
    return mf_diag_errno(diag, saved, path, "cannot create directory");
}

static enum mf_err dir__begin(void *ctx, const struct mf_manifest_file *f, struct mf_diag *diag)
{
    struct dir_sink *s = ctx;
    int dirfd;
    const char *leaf;
    enum mf_err err = dir__parent(s, f->path, &dirfd, &leaf, diag);
    if (err != MF_OK)
        return err;
    s->fd = openat(dirfd, leaf, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    int saved = errno;
    if (dirfd != s->root)
        close(dirfd);
    if (s->fd < 0)
        return mf_diag_errno(diag, saved, f->path, "cannot create");
    return MF_OK;
}

static enum mf_err dir__data(void *ctx, const void *p, size_t n, struct mf_diag *diag)
{
    struct dir_sink *s = ctx;
    if (mf_fs_write_all(s->fd, p, n) != MF_OK)
        return mf_diag_errno(diag, errno, s->staging, "write failed");
    return MF_OK;
}

static enum mf_err dir__end(void *ctx, struct mf_diag *diag)
{
    struct dir_sink *s = ctx;
    int rc = s->fsync ? fdatasync(s->fd) : 0;
    int saved = errno;
    rc |= close(s->fd);
    s->fd = -1;
    if (rc != 0)
        return mf_diag_errno(diag, saved, s->staging, "cannot flush an extracted file");
    return MF_OK;
}

static enum mf_err dir__fsync_tree(int dirfd)
{
    /* Sync every directory below dirfd, then dirfd itself. */
    int dup_fd = dup(dirfd);
    if (dup_fd < 0)
        return MF_ERR_IO;
    DIR *d = fdopendir(dup_fd);
    if (!d) {
        close(dup_fd);
        return MF_ERR_IO;
    }
    enum mf_err err = MF_OK;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_type != DT_DIR || strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        int sub = openat(dirfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0 || dir__fsync_tree(sub) != MF_OK)
            err = MF_ERR_IO;
        if (sub >= 0)
            close(sub);
    }
    closedir(d);
    if (fsync(dirfd) != 0)
        err = MF_ERR_IO;
    return err;
}

static enum mf_err dir__finish(void *ctx, struct mf_diag *diag)
{
    struct dir_sink *s = ctx;
    if (s->fsync && dir__fsync_tree(s->root) != MF_OK)
        return mf_diag_errno(diag, errno, s->staging, "cannot fsync the staging directory");
    return MF_OK;
}

static void dir__fail(void *ctx)
{
    struct dir_sink *s = ctx;
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

static const struct pkg_sink_ops pkg__dir_sink = {
    .begin = dir__begin,
    .data = dir__data,
    .end = dir__end,
    .finish = dir__finish,
    .fail = dir__fail,
};

static enum mf_err pkg__extract(const struct pkg_src *src, const struct mf_keyring *trust,
                                const char *staging, const struct mf_pkg_opts *opts,
                                struct mf_pkg_result *out, struct mf_diag *diag)
{
    struct pkg_run run;
    struct dir_sink s = {.staging = staging, .fd = -1, .fsync = opts && opts->fsync};
    if (mkdir(staging, 0755) != 0) {
        if (errno == EEXIST)
            return mf_diag_set(diag, MF_ERR_EXISTS, staging, "staging directory already exists");
        return mf_diag_errno(diag, errno, staging, "cannot create the staging directory");
    }
    s.root = open(staging, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (s.root < 0) {
        enum mf_err err = mf_diag_errno(diag, errno, staging, "cannot open");
        rmdir(staging);
        return err;
    }
    pkg__run_init(&run, trust, opts);
    run.sink = &pkg__dir_sink;
    run.ctx = &s;
    enum mf_err err = pkg__run(src, &run, out, diag);
    close(s.root);
    if (err != MF_OK)
        mf_fs_rmtree(staging);
    return err;
}

enum mf_err mf_pkg_extract(const char *path, const struct mf_keyring *trust, const char *staging,
                           const struct mf_pkg_opts *opts, struct mf_pkg_result *out,
                           struct mf_diag *diag)
{
    struct pkg_src src = {.path = path};
    return pkg__extract(&src, trust, staging, opts, out, diag);
}

enum mf_err mf_pkg_extract_buffer(const void *data, size_t len, const struct mf_keyring *trust,
                                  const char *staging, const struct mf_pkg_opts *opts,
                                  struct mf_pkg_result *out, struct mf_diag *diag)
{
    struct pkg_src src = {.mem = data, .len = len};
    return pkg__extract(&src, trust, staging, opts, out, diag);
}

/* ---- sign: a rewritten archive ---- */

struct sign_sink {
    const char *path;
    const struct mf_key_secret *key;
    struct mf_pkgw *w;
};

static enum mf_err sign__header(void *ctx, const struct mf_pkg_result *res, struct mf_diag *diag)
{
    struct sign_sink *s = ctx;
    struct mf_sigset sigs = res->sigs;
    mf_sigset_sign(&sigs, res->manifest_bytes, res->manifest_len, s->key);
    char *text = mf_sigset_format(&sigs);
    enum mf_err err = mf_pkgw_open(&s->w, s->path, res->zstd, res->manifest->created, diag);
    if (err == MF_OK && (err = mf_pkgw_add(s->w, "manifest.json", res->manifest_bytes,
                                           res->manifest_len, diag)) == MF_OK)
        err = mf_pkgw_add(s->w, "manifest.sig", text, strlen(text), diag);
    free(text);
    return err;
}

static enum mf_err sign__begin(void *ctx, const struct mf_manifest_file *f, struct mf_diag *diag)
{
    struct sign_sink *s = ctx;
    return mf_pkgw_begin(s->w, f->path, f->size, diag);
}

static enum mf_err sign__data(void *ctx, const void *p, size_t n, struct mf_diag *diag)
{
    struct sign_sink *s = ctx;
    return mf_pkgw_data(s->w, p, n, diag);
}

static enum mf_err sign__finish(void *ctx, struct mf_diag *diag)
{
    struct sign_sink *s = ctx;
    enum mf_err err = mf_pkgw_commit(s->w, diag);
    s->w = NULL;
    return err;
}

static void sign__fail(void *ctx)
{
    struct sign_sink *s = ctx;
    mf_pkgw_abort(s->w);
    s->w = NULL;
}

static const struct pkg_sink_ops pkg__sign_sink = {
    .header = sign__header,
    .begin = sign__begin,
    .data = sign__data,
    .finish = sign__finish,
    .fail = sign__fail,
};

enum mf_err mf_pkg_sign(const char *path, const struct mf_key_secret *k, struct mf_pkg_result *out,
                        struct mf_diag *diag)
{
    struct pkg_run run;
    struct pkg_src src = {.path = path};
    struct sign_sink s = {.path = path, .key = k};
    struct mf_pkg_result res;
    pkg__run_init(&run, NULL, NULL);
    run.sink = &pkg__sign_sink;
    run.ctx = &s;
    enum mf_err err = pkg__run(&src, &run, &res, diag);
    if (err != MF_OK)
        return err;
    /* The result describes the package as it now is: with the new signature. */
    mf_sigset_sign(&res.sigs, res.manifest_bytes, res.manifest_len, k);
    memcpy(res.signer, k->pub.id, sizeof res.signer);
    if (out)
        *out = res;
    else
        mf_pkg_result_free(&res);
    return MF_OK;
}
