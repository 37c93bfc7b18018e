/* pack.c — pack: hash pass, manifest, then a streaming write pass that hashes
 * again and refuses a source file that changed in between. */
#include "pack.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/mem.h"
#include "packaging/npy.h"
#include "packaging/sig.h"
#include "packaging/writer.h"

#define PACK_CHUNK (1u << 20)

static const struct mf_pack_file *pack__source(const struct mf_pack_input *in, const char *path)
{
    for (size_t i = 0; i < in->n_files; i++)
        if (strcmp(in->files[i].path, path) == 0)
            return &in->files[i];
    return NULL;
}

/* Reads the labels and inputs headers: labels must be a 1-D integer array of
 * n items, inputs an array whose first dimension is n. */
static enum mf_err pack__eval_n(const struct mf_pack_input *in, uint64_t *n, struct mf_diag *diag)
{
    const struct mf_pack_file *lf = pack__source(in, in->eval_labels);
    const struct mf_pack_file *xf = pack__source(in, in->eval_inputs);
    struct mf_npy labels, inputs;
    enum mf_err err;
    if (!lf || !xf)
        return mf_diag_set(diag, MF_ERR_USAGE, NULL, "evaluation %s '%s' is not among the files",
                           lf ? "inputs" : "labels", lf ? in->eval_inputs : in->eval_labels);
    if ((err = mf_npy_load_header(lf->source, &labels, diag)) != MF_OK ||
        (err = mf_npy_load_header(xf->source, &inputs, diag)) != MF_OK)
        return err;
    if (labels.ndim != 1 || (labels.kind != 'i' && labels.kind != 'u'))
        return mf_diag_set(diag, MF_ERR_SCHEMA, lf->source,
                           "labels must be a 1-D integer array (got dtype %s, %u dimensions)",
                           labels.descr, labels.ndim);
    if (inputs.ndim < 1 || inputs.shape[0] != labels.shape[0])
        return mf_diag_set(diag, MF_ERR_SCHEMA, xf->source,
                           "inputs hold %llu items but labels hold %llu",
                           (unsigned long long)(inputs.ndim ? inputs.shape[0] : 0),
                           (unsigned long long)labels.shape[0]);
    if (inputs.fortran_order)
        return mf_diag_set(diag, MF_ERR_SCHEMA, xf->source, "inputs must be in C order");
    *n = labels.shape[0];
    return MF_OK;
}

static int pack__file_cmp(const void *a, const void *b)
{
    return strcmp(((const struct mf_manifest_file *)a)->path,
                  ((const struct mf_manifest_file *)b)->path);
}

/* Builds the manifest (files sorted by path, as in the archive): hashes each
 * source, records the newest mtime. */
static enum mf_err pack__manifest(const struct mf_pack_input *in, struct mf_manifest **out,
                                  struct mf_diag *diag)
{
    enum mf_err err = MF_OK;
    struct mf_manifest *m = mf_xcalloc(1, sizeof *m);
    int64_t newest = 0;
    m->format_major = MF_MANIFEST_MAJOR;
    m->format_minor = MF_MANIFEST_MINOR;
    m->model = mf_xstrdup(in->model ? in->model : "");
    m->version = mf_xstrdup(in->version ? in->version : "");
    m->runtime = mf_xstrdup(in->runtime ? in->runtime : "");
    m->entry = mf_xstrdup(in->entry ? in->entry : "");
    m->eval.inputs = mf_xstrdup(in->eval_inputs ? in->eval_inputs : "");
    m->eval.labels = mf_xstrdup(in->eval_labels ? in->eval_labels : "");
    m->eval.metric = mf_xstrdup(in->metric ? in->metric : "top1");
    m->min_agent_version = mf_xstrdup(in->min_agent_version ? in->min_agent_version : "0.1.0");
    for (size_t i = 0; in->hardware && i < in->hardware->n; i++)
        mf_strlist_push(&m->hardware, in->hardware->v[i]);
    m->thresholds.min_accuracy = in->min_accuracy;
    m->thresholds.max_accuracy_drop = in->max_accuracy_drop;
    m->thresholds.latency_p99_ms = in->latency_p99_ms;
    m->thresholds.memory_bytes = in->memory_bytes;
    m->metadata = in->metadata ? json_incref(in->metadata) : json_object();
    m->files = mf_xcalloc(in->n_files ? in->n_files : 1, sizeof *m->files);
    for (size_t i = 0; i < in->n_files; i++) {
        struct stat st;
        struct mf_manifest_file *f = &m->files[i];
        f->path = mf_xstrdup(in->files[i].path);
        m->n_files = i + 1;
        if (stat(in->files[i].source, &st) != 0) {
            err = mf_diag_errno(diag, errno, in->files[i].source, "cannot read");
            goto out;
        }
        if (!S_ISREG(st.st_mode)) {
            err = mf_diag_set(diag, MF_ERR_USAGE, in->files[i].source, "not a regular file");
            goto out;
        }
        if (st.st_mtime > newest)
            newest = st.st_mtime;
        if ((err = mf_hash_file(in->files[i].source, f->hash, &f->size, diag)) != MF_OK)
            goto out;
    }
    qsort(m->files, m->n_files, sizeof *m->files, pack__file_cmp);
    m->created = in->created != MF_PACK_CREATED_UNSET ? in->created : newest;
    if (in->n_files && (err = pack__eval_n(in, &m->eval.n, diag)) != MF_OK)
        goto out;
out:
    if (err != MF_OK) {
        mf_manifest_free(m);
        return err;
    }
    *out = m;
    return MF_OK;
}

static int pack__cmp(const void *a, const void *b)
{
    return strcmp(((const struct mf_pack_file *)a)->path, ((const struct mf_pack_file *)b)->path);
}

/* Streams one source file into the archive, hashing it again. */
static enum mf_err pack__copy(struct mf_pkgw *w, const struct mf_pack_file *pf,
                              const struct mf_manifest_file *f, uint8_t *buf, struct mf_diag *diag)
{
    struct mf_hash h;
    uint8_t digest[MF_HASH_BYTES];
    uint64_t total = 0;
    enum mf_err err = mf_pkgw_begin(w, f->path, f->size, diag);
    if (err != MF_OK)
        return err;
    int fd = open(pf->source, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return mf_diag_errno(diag, errno, pf->source, "cannot open");
    mf_hash_init(&h);
    while (total < f->size) {
        size_t want = f->size - total < PACK_CHUNK ? (size_t)(f->size - total) : PACK_CHUNK;
        ssize_t n = read(fd, buf, want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            err = n < 0 ? mf_diag_errno(diag, errno, pf->source, "cannot read")
                        : mf_diag_set(diag, MF_ERR_IO, pf->source, "file shrank while packing");
            goto out;
        }
        mf_hash_update(&h, buf, (size_t)n);
        if ((err = mf_pkgw_data(w, buf, (size_t)n, diag)) != MF_OK)
            goto out;
        total += (uint64_t)n;
    }
    mf_hash_final(&h, digest);
    if (memcmp(digest, f->hash, sizeof digest) != 0 || read(fd, buf, 1) != 0)
        err = mf_diag_set(diag, MF_ERR_IO, pf->source, "file changed while packing");
out:
    close(fd);
    return err;
}

enum mf_err mf_pkg_pack(const struct mf_pack_input *in, const char *out_path,
                        struct mf_manifest **manifest, struct mf_diag *diag)
{
    struct mf_manifest *m = NULL, *check = NULL;
    struct mf_pack_file *sorted = NULL;
    struct mf_pkgw *w = NULL;
    struct mf_sigset sigs = {.n = 0};
    char *mtext = NULL, *stext = NULL;
    uint8_t *buf = NULL;
    size_t mlen;
    enum mf_err err;

    if ((err = pack__manifest(in, &m, diag)) != MF_OK)
        goto out;
    /* Whatever pack writes must be what verify accepts: round-trip it. */
    mtext = mf_manifest_format(m, &mlen);
    if ((err = mf_manifest_parse((const uint8_t *)mtext, mlen, &check, diag)) != MF_OK)
        goto out;
    if (in->key)
        mf_sigset_sign(&sigs, (const uint8_t *)mtext, mlen, in->key);
    stext = mf_sigset_format(&sigs);

    sorted = mf_xcalloc(in->n_files, sizeof *sorted);
    memcpy(sorted, in->files, in->n_files * sizeof *sorted);
    qsort(sorted, in->n_files, sizeof *sorted, pack__cmp);
    buf = mf_xmalloc(PACK_CHUNK);
    if ((err = mf_pkgw_open(&w, out_path, in->zstd, check->created, diag)) != MF_OK ||
        (err = mf_pkgw_add(w, "manifest.json", mtext, mlen, diag)) != MF_OK ||
        (err = mf_pkgw_add(w, "manifest.sig", stext, strlen(stext), diag)) != MF_OK)
        goto out;
    for (size_t i = 0; i < in->n_files; i++)
        if ((err = pack__copy(w, &sorted[i], mf_manifest_find(check, sorted[i].path), buf, diag)) !=
            MF_OK)
            goto out;
    err = mf_pkgw_commit(w, diag);
    w = NULL;
    if (err == MF_OK && manifest) {
        *manifest = check;
        check = NULL;
    }
out:
    mf_pkgw_abort(w);
    mf_manifest_free(m);
    mf_manifest_free(check);
    free(sorted);
    free(mtext);
    free(stext);
    free(buf);
    return err;
}
