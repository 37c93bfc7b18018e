/* spool.c — the agent's outbox (layout in spool.h). The index in memory
 * mirrors the message files, sorted by number (items[head] is the oldest), so
 * count/bytes are O(1) and get/ack never rescan. What is written in which
 * order, so a crash at any instant loses and repeats nothing:
 * - next. A push does not rewrite meta: its own file carries its number, and
 *   open takes next = max(meta's next, highest file + 1). Meta is rewritten
 *   (with next) before the file holding the highest number is deleted (an ack
 *   of the newest message), and every other meta write carries next too. So a
 *   number repeats only if meta itself is lost or corrupt and no file newer
 *   than meta's last write survives (say, an empty spool whose meta was
 *   deleted): then numbering restarts at highest file + 1, logged.
 * - dropped. A push that must make room writes its message file first, then
 *   meta (dropped += k, floor = newest dropped + 1), then unlinks the k oldest
 *   files. A crash before meta leaves too many files: the next open drops and
 *   counts them then. A crash after meta leaves files below floor: the next
 *   open deletes them without counting them again. So the count is exact.
 *   At open, damaged message files are counted in meta before they are
 *   deleted: a crash in between may count one twice, never zero times.
 * - An ack unlinks without an fsync of the directory: a crash may bring the
 *   file back and it is sent again (QoS 1 is at least once; the receiver
 *   drops a "msg" it already has). */
#include "spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/fs.h"
#include "common/log.h"
#include "common/mem.h"

#define NUM_DIGITS 20
#define MAX_NUM    ((uint64_t)INT64_MAX - 1) /* "msg" is a JSON integer (int64); next fits */
#define META_MAX   128                       /* "next <20>\ndropped <20>\nfloor <20>\n" is 83 */

void (*mf_spool_crash_hook)(const char *point) = NULL;

static void crash_point(const char *point)
{
    if (mf_spool_crash_hook)
        mf_spool_crash_hook(point);
}

/* The kinds a spool holds, and their file suffixes. */
static const struct {
    enum mf_devmsg_kind kind;
    const char *suffix;
} kinds[] = {
    {MF_DEVMSG_EVENT, "event"},
    {MF_DEVMSG_REPORT, "report"},
};
#define N_KINDS (sizeof kinds / sizeof kinds[0])

struct spool_item {
    uint64_t num;
    uint32_t size; /* 1 .. MF_DEVMSG_MAX */
    enum mf_devmsg_kind kind;
};

struct mf_spool {
    char *dir;
    struct mf_spool_limits limits;
    struct spool_item *items; /* pending: items[head .. head+n) */
    size_t head, n, cap;
    uint64_t bytes;     /* sum of pending sizes */
    uint64_t next;      /* number of the next push */
    uint64_t dropped;   /* as in meta */
    uint64_t floor;     /* as in meta: every number below was acked or dropped */
    uint64_t meta_next; /* next as last written to meta */
};

static const char *sp__suffix(enum mf_devmsg_kind kind)
{
    for (size_t i = 0; i < N_KINDS; i++)
        if (kinds[i].kind == kind)
            return kinds[i].suffix;
    return NULL;
}

/* "<20 digits>.<suffix>" with a number in 1 .. MAX_NUM. */
static bool sp__parse_name(const char *name, uint64_t *num, enum mf_devmsg_kind *kind)
{
    uint64_t v = 0;
    for (size_t i = 0; i < NUM_DIGITS; i++) {
        if (name[i] < '0' || name[i] > '9')
            return false;
        unsigned d = (unsigned)(name[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (name[NUM_DIGITS] != '.' || v == 0 || v > MAX_NUM)
        return false;
    for (size_t i = 0; i < N_KINDS; i++)
        if (strcmp(name + NUM_DIGITS + 1, kinds[i].suffix) == 0) {
            *num = v;
            *kind = kinds[i].kind;
            return true;
        }
    return false;
}

static char *sp__path(const struct mf_spool *sp, uint64_t num, enum mf_devmsg_kind kind)
{
    return mf_xasprintf("%s/%020" PRIu64 ".%s", sp->dir, num, sp__suffix(kind));
}

/* ---- meta ---- */

/* `key` ' ' decimal '\n' at *p; advances *p. */
static bool sp__meta_field(const char **p, const char *end, const char *key, uint64_t *out)
{
    size_t klen = strlen(key);
    const char *s = *p;
    if ((size_t)(end - s) < klen + 1 || memcmp(s, key, klen) != 0 || s[klen] != ' ')
        return false;
    s += klen + 1;
    uint64_t v = 0;
    const char *digits = s;
    while (s < end && *s >= '0' && *s <= '9') {
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
        s++;
    }
    if (s == digits || s - digits > NUM_DIGITS || (s - digits > 1 && *digits == '0'))
        return false;
    if (s == end || *s != '\n')
        return false;
    *p = s + 1;
    *out = v;
    return true;
}

static bool sp__meta_parse(const uint8_t *data, size_t len, uint64_t *next, uint64_t *dropped,
                           uint64_t *floor)
{
    const char *p = (const char *)data, *end = p + len;
    uint64_t n, d, f;
    if (!sp__meta_field(&p, end, "next", &n) || !sp__meta_field(&p, end, "dropped", &d) ||
        !sp__meta_field(&p, end, "floor", &f) || p != end)
        return false;
    if (n == 0 || n > MAX_NUM + 1 || f > n)
        return false;
    *next = n;
    *dropped = d;
    *floor = f;
    return true;
}

/* Writes meta with these values; on success they become the spool's. */
static enum mf_err sp__meta_write(struct mf_spool *sp, uint64_t next, uint64_t dropped,
                                  uint64_t floor, struct mf_diag *diag)
{
    char text[META_MAX];
    int n =
        snprintf(text, sizeof text, "next %" PRIu64 "\ndropped %" PRIu64 "\nfloor %" PRIu64 "\n",
                 next, dropped, floor);
    MF_ASSERT(n > 0 && (size_t)n < sizeof text);
    char *path = mf_xasprintf("%s/" MF_SPOOL_META, sp->dir);
    enum mf_err err = mf_fs_write_file(path, text, (size_t)n, 0600, diag);
    free(path);
    if (err != MF_OK)
        return err;
    sp->next = next;
    sp->dropped = dropped;
    sp->floor = floor;
    sp->meta_next = next;
    return MF_OK;
}

/* ---- the index ---- */

static struct spool_item *sp__item(const struct mf_spool *sp, size_t i)
{
    return &sp->items[sp->head + i];
}

static void sp__append(struct mf_spool *sp, struct spool_item it)
{
    if (sp->head + sp->n == sp->cap) {
        if (sp->head > 0 && sp->head >= sp->cap / 2) { /* reuse the room acks left */
            memmove(sp->items, sp->items + sp->head, sp->n * sizeof *sp->items);
            sp->head = 0;
        } else {
            sp->cap = sp->cap ? 2 * sp->cap : 64;
            sp->items = mf_xreallocarray(sp->items, sp->cap, sizeof *sp->items);
        }
    }
    sp->items[sp->head + sp->n++] = it;
    sp->bytes += it.size;
}

/* Removes pending index i. */
static void sp__remove(struct mf_spool *sp, size_t i)
{
    MF_ASSERT(i < sp->n);
    sp->bytes -= sp__item(sp, i)->size;
    if (i == 0) {
        sp->head++;
    } else {
        struct spool_item *at = sp__item(sp, i);
        memmove(at, at + 1, (sp->n - i - 1) * sizeof *at);
    }
    sp->n--;
    if (sp->n == 0)
        sp->head = 0;
}

/* Index of message `num`, or SIZE_MAX. */
static size_t sp__find(const struct mf_spool *sp, uint64_t num)
{
    size_t lo = 0, hi = sp->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint64_t m = sp__item(sp, mid)->num;
        if (m == num)
            return mid;
        if (m < num)
            lo = mid + 1;
        else
            hi = mid;
    }
    return SIZE_MAX;
}

static void sp__unlink(const struct mf_spool *sp, const struct spool_item *it, const char *why)
{
    char *path = sp__path(sp, it->num, it->kind);
    if (unlink(path) != 0 && errno != ENOENT) /* a leftover below floor goes at next open */
        mf_log(MF_LOG_WARN, "spool: cannot delete %s message %s: %s", why, path, strerror(errno));
    free(path);
}

/* ---- open ---- */

struct scan_entry {
    char *name;
    uint64_t num; /* 0: not a message name */
    enum mf_devmsg_kind kind;
    uint64_t size;
    bool usable;     /* a valid message file */
    const char *why; /* set when the file is to be deleted */
};

static int sp__cmp_entry(const void *a, const void *b)
{
    const struct scan_entry *x = a, *y = b;
    if (x->num != y->num)
        return x->num < y->num ? -1 : 1;
    return (int)x->kind - (int)y->kind;
}

static void sp__delete_entry(int dfd, const char *dir, const char *name, const char *why)
{
    mf_log(MF_LOG_WARN, "spool: deleting %s/%s (%s)", dir, name, why);
    if (mf_fs_rmtree_at(dfd, name) != MF_OK)
        mf_log(MF_LOG_WARN, "spool: cannot delete %s/%s", dir, name);
}

enum mf_err mf_spool_open(const char *dir, const struct mf_spool_limits *limits,
                          struct mf_spool **out, struct mf_diag *diag)
{
    MF_ASSERT(dir && limits && out);
    enum mf_err err = MF_OK;
    struct mf_spool *sp = NULL;
    struct scan_entry *ents = NULL;
    size_t n_ents = 0, cap_ents = 0;
    struct mf_buf meta = {0};
    DIR *d = NULL;
    int dfd = -1;
    bool have_meta = false, meta_ok = false, meta_is_file = true;
    uint64_t m_next = 1, m_dropped = 0, m_floor = 0;

    if (limits->max_bytes == 0 || limits->max_messages == 0)
        return mf_diag_set(diag, MF_ERR_USAGE, dir, "spool limits must be greater than zero");
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return mf_diag_errno(diag, errno, dir, "cannot create the spool directory");
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return mf_diag_errno(diag, errno, dir, "cannot open the spool directory");
    int scan_fd = dup(dfd);
    if (scan_fd < 0 || !(d = fdopendir(scan_fd))) {
        err = mf_diag_errno(diag, errno, dir, "cannot read the spool directory");
        if (scan_fd >= 0)
            close(scan_fd);
        goto out;
    }

    /* 1. Scan. Temp files and foreign names go at once (they count nothing). */
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            if (errno != 0) {
                err = mf_diag_errno(diag, errno, dir, "cannot read the spool directory");
                goto out;
            }
            break;
        }
        const char *name = de->d_name;
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
            continue;
        struct stat st;
        if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
            if (errno == ENOENT)
                continue;
            err = mf_diag_errno(diag, errno, dir, "cannot stat %s", name);
            goto out;
        }
        if (strcmp(name, MF_SPOOL_META) == 0) {
            have_meta = true;
            meta_is_file = S_ISREG(st.st_mode);
            continue;
        }
        uint64_t num;
        enum mf_devmsg_kind kind;
        if (!sp__parse_name(name, &num, &kind)) {
            if (name[0] == '.' && strstr(name, ".tmp.")) {
                mf_log(MF_LOG_INFO, "spool: removing %s/%s (an interrupted write)", dir, name);
                if (mf_fs_rmtree_at(dfd, name) != MF_OK)
                    mf_log(MF_LOG_WARN, "spool: cannot delete %s/%s", dir, name);
            } else {
                sp__delete_entry(dfd, dir, name, "not a spool file");
            }
            continue;
        }
        if (n_ents == cap_ents) {
            cap_ents = cap_ents ? 2 * cap_ents : 64;
            ents = mf_xreallocarray(ents, cap_ents, sizeof *ents);
        }
        ents[n_ents++] = (struct scan_entry){
            .name = mf_xstrdup(name),
            .num = num,
            .kind = kind,
            .size = (uint64_t)st.st_size,
            .usable = S_ISREG(st.st_mode) && st.st_size > 0 && st.st_size <= MF_DEVMSG_MAX,
        };
    }
    closedir(d);
    d = NULL;
    if (n_ents > 0)
        qsort(ents, n_ents, sizeof *ents, sp__cmp_entry);

    /* 2. Meta. */
    if (have_meta && meta_is_file) {
        char *path = mf_xasprintf("%s/" MF_SPOOL_META, dir);
        struct mf_diag md = {0};
        if (mf_fs_read_file(path, META_MAX, &meta, &md) == MF_OK)
            meta_ok = sp__meta_parse(meta.data, meta.len, &m_next, &m_dropped, &m_floor);
        free(path);
    }
    if (have_meta && !meta_is_file)
        sp__delete_entry(dfd, dir, MF_SPOOL_META, "meta is not a regular file");
    if (!meta_ok) {
        m_next = 1;
        m_dropped = m_floor = 0;
        if (have_meta)
            mf_log(MF_LOG_WARN,
                   "spool: %s/" MF_SPOOL_META " is corrupt; rebuilt from the files "
                   "(the dropped count restarts at 0)",
                   dir);
        else if (n_ents > 0)
            mf_log(MF_LOG_WARN,
                   "spool: %s/" MF_SPOOL_META " is missing; rebuilt from the files "
                   "(the dropped count restarts at 0)",
                   dir);
    }

    /* 3. Decide, in memory: what stays, what is counted, what goes. */
    sp = mf_xcalloc(1, sizeof *sp);
    sp->dir = mf_xstrdup(dir);
    sp->limits = *limits;
    uint64_t next = m_next, dropped = m_dropped, floor = m_floor;
    for (size_t i = 0; i < n_ents; i++) {
        struct scan_entry *e = &ents[i];
        if (e->num >= next)
            next = e->num + 1;
        if (e->num < floor) { /* dropped (counted) or acked before a crash */
            e->why = "already acked or dropped";
            continue;
        }
        if (!e->usable) { /* a message that can no longer be sent is lost */
            e->why = "damaged message, counted as dropped";
            dropped++;
            continue;
        }
        if (sp->n > 0 && sp__item(sp, sp->n - 1)->num == e->num) { /* one number, two kinds */
            e->why = "a second message with this number";
            continue;
        }
        sp__append(sp,
                   (struct spool_item){.num = e->num, .size = (uint32_t)e->size, .kind = e->kind});
    }
    size_t k = 0; /* oldest pending over the (maybe shrunk) limits */
    uint64_t kbytes = 0;
    while (k < sp->n &&
           (sp->n - k > limits->max_messages || sp->bytes - kbytes > limits->max_bytes)) {
        kbytes += sp__item(sp, k)->size;
        k++;
    }
    if (k > 0) {
        dropped += k;
        floor = sp__item(sp, k - 1)->num + 1;
    }

    /* 4. Count first (meta), then delete: a crash in between never under-counts. */
    if (!meta_ok || next != m_next || dropped != m_dropped || floor != m_floor) {
        err = sp__meta_write(sp, next, dropped, floor, diag);
        if (err != MF_OK)
            goto out;
    } else {
        sp->next = sp->meta_next = next;
        sp->dropped = dropped;
        sp->floor = floor;
    }
    if (k > 0)
        mf_log(MF_LOG_WARN, "spool: %s over its limits: dropped the %zu oldest messages", dir, k);
    for (size_t i = 0; i < k; i++) {
        sp__unlink(sp, sp__item(sp, 0), "dropped");
        sp__remove(sp, 0);
    }
    for (size_t i = 0; i < n_ents; i++)
        if (ents[i].why)
            sp__delete_entry(dfd, dir, ents[i].name, ents[i].why);

out:
    if (d)
        closedir(d);
    if (dfd >= 0)
        close(dfd);
    for (size_t i = 0; i < n_ents; i++)
        free(ents[i].name);
    free(ents);
    mf_buf_free(&meta);
    if (err != MF_OK) {
        mf_spool_close(sp);
        return err;
    }
    *out = sp;
    return MF_OK;
}

void mf_spool_close(struct mf_spool *sp)
{
    if (!sp)
        return;
    free(sp->items);
    free(sp->dir);
    free(sp);
}

uint64_t mf_spool_next(const struct mf_spool *sp)
{
    return sp->next;
}

size_t mf_spool_count(const struct mf_spool *sp)
{
    return sp->n;
}

uint64_t mf_spool_number(const struct mf_spool *sp, size_t i)
{
    MF_ASSERT(i < sp->n);
    return sp->items[sp->head + i].num;
}

uint64_t mf_spool_bytes(const struct mf_spool *sp)
{
    return sp->bytes;
}

uint64_t mf_spool_dropped(const struct mf_spool *sp)
{
    return sp->dropped;
}

/* ---- push, get, ack ---- */

enum mf_err mf_spool_push(struct mf_spool *sp, uint64_t msg, enum mf_devmsg_kind kind,
                          const void *payload, size_t len, struct mf_diag *diag)
{
    MF_ASSERT(sp && (payload || len == 0));
    MF_ASSERT(sp->next <= MAX_NUM); /* 2^63 messages: never */
    enum mf_err err;
    if (msg != sp->next)
        return mf_diag_set(diag, MF_ERR_USAGE, sp->dir,
                           "message number %" PRIu64 " pushed where %" PRIu64 " is next", msg,
                           sp->next);
    if (!sp__suffix(kind))
        return mf_diag_set(diag, MF_ERR_USAGE, sp->dir, "the spool holds events and reports only");
    if (len == 0)
        return mf_diag_set(diag, MF_ERR_USAGE, sp->dir, "an empty message");
    if (len > sp->limits.max_bytes || len > MF_DEVMSG_MAX) {
        err = sp__meta_write(sp, sp->next + 1, sp->dropped + 1, sp->floor, diag);
        if (err != MF_OK)
            return err;
        mf_log(MF_LOG_WARN, "spool: message %" PRIu64 " of %zu bytes is over the cap; dropped", msg,
               len);
        return mf_diag_set(diag, MF_ERR_TOO_LARGE, sp->dir,
                           "message %" PRIu64 " is %zu bytes, over the spool's cap", msg, len);
    }

    /* Make room: the k oldest go. */
    size_t k = 0;
    uint64_t kbytes = 0;
    while (k < sp->n && (sp->n - k + 1 > sp->limits.max_messages ||
                         sp->bytes - kbytes + len > sp->limits.max_bytes)) {
        kbytes += sp__item(sp, k)->size;
        k++;
    }

    /* 1. The message file, atomically. */
    char *path = sp__path(sp, msg, kind);
    struct mf_fs_atomic a;
    err = mf_fs_atomic_open(&a, path, 0600, diag);
    if (err != MF_OK)
        goto out;
    if (mf_fs_write_all(a.fd, payload, len) != MF_OK) {
        err = mf_diag_errno(diag, errno, path, "write failed");
        mf_fs_atomic_abort(&a);
        goto out;
    }
    crash_point("push:temp-written");
    err = mf_fs_atomic_commit(&a, diag);
    if (err != MF_OK)
        goto out;
    crash_point("push:committed");
    sp__append(sp, (struct spool_item){.num = msg, .size = (uint32_t)len, .kind = kind});
    sp->next = msg + 1;

    /* 2. Count the dropped ones in meta, 3. then delete them. */
    if (k > 0) {
        err = sp__meta_write(sp, sp->next, sp->dropped + k, sp__item(sp, k - 1)->num + 1, diag);
        if (err != MF_OK) { /* take the new message back: nothing stored */
            if (unlink(path) != 0 && errno != ENOENT)
                mf_log(MF_LOG_WARN, "spool: cannot delete %s: %s", path, strerror(errno));
            sp__remove(sp, sp->n - 1);
            sp->next = msg;
            goto out;
        }
        crash_point("push:meta-written");
        mf_log(MF_LOG_WARN, "spool: full; dropped the %zu oldest messages (%" PRIu64 " so far)", k,
               sp->dropped);
        for (size_t i = 0; i < k; i++) {
            sp__unlink(sp, sp__item(sp, 0), "dropped");
            sp__remove(sp, 0);
            crash_point("push:dropping");
        }
    }
out:
    free(path);
    return err;
}

enum mf_err mf_spool_get(const struct mf_spool *sp, size_t i, uint64_t *msg,
                         enum mf_devmsg_kind *kind, uint8_t **payload, size_t *len,
                         struct mf_diag *diag)
{
    MF_ASSERT(sp && msg && kind && payload && len);
    if (i >= sp->n)
        return mf_diag_set(diag, MF_ERR_NOT_FOUND, sp->dir, "no pending message %zu", i);
    const struct spool_item *it = sp__item(sp, i);
    enum mf_err err = MF_OK;
    uint8_t *data = NULL;
    char *path = sp__path(sp, it->num, it->kind);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        err = errno == ENOENT ? mf_diag_set(diag, MF_ERR_NOT_FOUND, path, "the message vanished")
                              : mf_diag_errno(diag, errno, path, "cannot open");
        goto out;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        err = mf_diag_errno(diag, errno, path, "cannot stat");
        goto out;
    }
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != it->size) {
        err = mf_diag_set(diag, MF_ERR_IO, path, "the message changed: %" PRIu64 " bytes, was %u",
                          (uint64_t)st.st_size, (unsigned)it->size);
        goto out;
    }
    data = mf_xmalloc(it->size);
    size_t have = 0;
    while (have < it->size) {
        ssize_t r = read(fd, data + have, it->size - have);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            err = mf_diag_errno(diag, errno, path, "cannot read");
            goto out;
        }
        if (r == 0) {
            err = mf_diag_set(diag, MF_ERR_IO, path, "the message is shorter than %u bytes",
                              (unsigned)it->size);
            goto out;
        }
        have += (size_t)r;
    }
    *msg = it->num;
    *kind = it->kind;
    *payload = data;
    *len = it->size;
    data = NULL;
out:
    if (fd >= 0)
        close(fd);
    free(data);
    free(path);
    return err;
}

enum mf_err mf_spool_ack(struct mf_spool *sp, uint64_t msg, struct mf_diag *diag)
{
    MF_ASSERT(sp);
    size_t i = sp__find(sp, msg);
    if (i == SIZE_MAX)
        return MF_OK; /* acked twice, or dropped meanwhile */
    const struct spool_item *it = sp__item(sp, i);
    if (i == sp->n - 1 && sp->meta_next < sp->next) { /* it carries next: meta first */
        enum mf_err err = sp__meta_write(sp, sp->next, sp->dropped, sp->floor, diag);
        if (err != MF_OK)
            return err;
        crash_point("ack:meta-written");
    }
    char *path = sp__path(sp, it->num, it->kind);
    if (unlink(path) != 0 && errno != ENOENT) {
        enum mf_err err = mf_diag_errno(diag, errno, path, "cannot delete an acked message");
        free(path);
        return err;
    }
    free(path);
    sp__remove(sp, i);
    return MF_OK;
}

enum mf_err mf_spool_peek(const char *dir, uint64_t msg, enum mf_devmsg_kind *kind,
                          uint8_t **payload, size_t *len, struct mf_diag *diag)
{
    MF_ASSERT(dir && kind && payload && len);
    for (size_t k = 0; k < N_KINDS; k++) {
        char *path = mf_xasprintf("%s/%020" PRIu64 ".%s", dir, msg, kinds[k].suffix);
        struct mf_buf b;
        enum mf_err err = MF_ERR_NOT_FOUND;
        if (access(path, F_OK) == 0 &&
            (err = mf_fs_read_file(path, MF_DEVMSG_MAX, &b, diag)) == MF_OK) {
            if (b.len == 0) {
                mf_buf_free(&b);
                err = mf_diag_set(diag, MF_ERR_IO, path, "empty");
            } else {
                *kind = kinds[k].kind;
                *len = b.len;
                *payload = mf_buf_steal(&b, NULL);
            }
        }
        free(path);
        if (err != MF_ERR_NOT_FOUND)
            return err;
    }
    return mf_diag_set(diag, MF_ERR_NOT_FOUND, dir, "no message %" PRIu64, msg);
}
