/* npy.c — .npy header parser. The header is a Python dict literal; only the
 * three documented keys are accepted, in any order. Little-endian or
 * byte-order-free dtypes only (every supported device is little-endian). */
#include "npy.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NPY_HEAD_MAX 16384

static const char *npy__skip(const char *p, const char *end)
{
    while (p < end && isspace((unsigned char)*p))
        p++;
    return p;
}

static bool npy__lit(const char **p, const char *end, const char *lit)
{
    size_t n = strlen(lit);
    *p = npy__skip(*p, end);
    if ((size_t)(end - *p) < n || memcmp(*p, lit, n) != 0)
        return false;
    *p += n;
    return true;
}

/* A quoted Python string ('x' or "x") into out. */
static bool npy__str(const char **p, const char *end, char *out, size_t cap)
{
    *p = npy__skip(*p, end);
    if (*p >= end || (**p != '\'' && **p != '"'))
        return false;
    char q = *(*p)++;
    size_t n = 0;
    while (*p < end && **p != q) {
        if (n + 1 >= cap)
            return false;
        out[n++] = *(*p)++;
    }
    if (*p >= end)
        return false;
    (*p)++;
    out[n] = '\0';
    return true;
}

static bool npy__shape(const char **p, const char *end, struct mf_npy *h)
{
    if (!npy__lit(p, end, "("))
        return false;
    h->ndim = 0;
    for (;;) {
        *p = npy__skip(*p, end);
        if (*p < end && **p == ')') {
            (*p)++;
            return true;
        }
        if (h->ndim == MF_NPY_MAX_DIMS || *p >= end || !isdigit((unsigned char)**p))
            return false;
        uint64_t v = 0;
        while (*p < end && isdigit((unsigned char)**p)) {
            if (v > (UINT64_MAX - 9) / 10)
                return false;
            v = v * 10 + (uint64_t)(**p - '0');
            (*p)++;
        }
        h->shape[h->ndim++] = v;
        *p = npy__skip(*p, end);
        if (*p < end && **p == ',')
            (*p)++;
        else if (!(*p < end && **p == ')'))
            return false;
    }
}

enum mf_err mf_npy_parse(const uint8_t *head, size_t len, struct mf_npy *out, struct mf_diag *diag)
{
    struct mf_npy h = {0};
    size_t hlen, pre;
    if (len < 10 || memcmp(head, "\x93NUMPY", 6) != 0)
        return mf_diag_set(diag, MF_ERR_PARSE, NULL, "not a .npy file (bad magic)");
    if (head[6] == 1) {
        hlen = (size_t)head[8] | (size_t)head[9] << 8;
        pre = 10;
    } else if ((head[6] == 2 || head[6] == 3) && len >= 12) {
        hlen = (size_t)head[8] | (size_t)head[9] << 8 | (size_t)head[10] << 16 |
               (size_t)head[11] << 24;
        pre = 12;
    } else {
        return mf_diag_set(diag, MF_ERR_VERSION, NULL, ".npy format version %u is not supported",
                           head[6]);
    }
    if (hlen > NPY_HEAD_MAX || pre + hlen > len)
        return mf_diag_set(diag, MF_ERR_PARSE, NULL, ".npy header is truncated or too long");
    const char *p = (const char *)head + pre, *end = p + hlen;
    bool seen_descr = false, seen_order = false, seen_shape = false;
    if (!npy__lit(&p, end, "{"))
        goto bad;
    for (;;) {
        char key[32];
        if (npy__lit(&p, end, "}"))
            break;
        if (!npy__str(&p, end, key, sizeof key) || !npy__lit(&p, end, ":"))
            goto bad;
        if (strcmp(key, "descr") == 0 && !seen_descr) {
            if (!npy__str(&p, end, h.descr, sizeof h.descr))
                goto bad;
            seen_descr = true;
        } else if (strcmp(key, "fortran_order") == 0 && !seen_order) {
            if (npy__lit(&p, end, "True"))
                h.fortran_order = true;
            else if (!npy__lit(&p, end, "False"))
                goto bad;
            seen_order = true;
        } else if (strcmp(key, "shape") == 0 && !seen_shape) {
            if (!npy__shape(&p, end, &h))
                goto bad;
            seen_shape = true;
        } else {
            goto bad;
        }
        if (!npy__lit(&p, end, ",") && !(npy__skip(p, end) < end && *npy__skip(p, end) == '}'))
            goto bad;
    }
    if (!seen_descr || !seen_order || !seen_shape)
        goto bad;
    /* descr: byte order, kind, item size. */
    unsigned size = 0;
    int n = 0;
    if (strlen(h.descr) < 3 || (h.descr[0] != '<' && h.descr[0] != '|') ||
        !strchr("fiub", h.descr[1]) || sscanf(h.descr + 2, "%u%n", &size, &n) != 1 ||
        (size_t)n != strlen(h.descr + 2) || (size != 1 && size != 2 && size != 4 && size != 8))
        return mf_diag_set(diag, MF_ERR_SCHEMA, NULL,
                           ".npy dtype '%s' is not supported (little-endian numbers only)",
                           h.descr);
    h.kind = h.descr[1];
    h.itemsize = size;
    uint64_t count = 1;
    for (unsigned i = 0; i < h.ndim; i++) {
        if (h.shape[i] && count > UINT64_MAX / h.shape[i])
            return mf_diag_set(diag, MF_ERR_SCHEMA, NULL, ".npy shape overflows");
        count *= h.shape[i];
    }
    if (count > UINT64_MAX / size)
        return mf_diag_set(diag, MF_ERR_SCHEMA, NULL, ".npy shape overflows");
    h.data_offset = pre + hlen;
    h.data_bytes = count * size;
    *out = h;
    return MF_OK;
bad:
    return mf_diag_set(diag, MF_ERR_PARSE, NULL, "malformed .npy header");
}

enum mf_err mf_npy_load_header(const char *path, struct mf_npy *out, struct mf_diag *diag)
{
    uint8_t head[NPY_HEAD_MAX + 12];
    struct stat st;
    enum mf_err err;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return mf_diag_errno(diag, errno, path, "cannot open");
    ssize_t n = fstat(fd, &st) == 0 ? read(fd, head, sizeof head) : -1;
    close(fd);
    if (n < 0)
        return mf_diag_errno(diag, errno, path, "cannot read");
    err = mf_npy_parse(head, (size_t)n, out, diag);
    if (err != MF_OK) {
        mf_diag_prefix(diag, path);
        return err;
    }
    if ((uint64_t)st.st_size != out->data_offset + out->data_bytes)
        return mf_diag_set(
            diag, MF_ERR_SCHEMA, path, "file is %lld bytes but its header announces %llu",
            (long long)st.st_size, (unsigned long long)(out->data_offset + out->data_bytes));
    return MF_OK;
}
