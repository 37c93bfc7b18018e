/* buf.c — capped growable buffer. Invariant: data == NULL or data[len] == 0. */
#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

void mf_buf_init(struct mf_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

static void buf__reserve(struct mf_buf *b, size_t need)
{
    if (need + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need + 1)
        cap = cap > ((size_t)-1) / 2 ? need + 1 : cap * 2;
    b->data = mf_xrealloc(b->data, cap);
    b->cap = cap;
}

enum mf_err mf_buf_append(struct mf_buf *b, const void *p, size_t n)
{
    if (n > b->max || b->len > b->max - n)
        return MF_ERR_TOO_LARGE;
    buf__reserve(b, b->len + n);
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
    return MF_OK;
}

enum mf_err mf_buf_append_str(struct mf_buf *b, const char *s)
{
    return mf_buf_append(b, s, strlen(s));
}

enum mf_err mf_buf_printf(struct mf_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return MF_ERR_USAGE;
    if ((size_t)n > b->max || b->len > b->max - (size_t)n)
        return MF_ERR_TOO_LARGE;
    buf__reserve(b, b->len + (size_t)n);
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return MF_OK;
}

void mf_buf_reset(struct mf_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = 0;
}

uint8_t *mf_buf_steal(struct mf_buf *b, size_t *len)
{
    if (!b->data)
        buf__reserve(b, 0), b->data[0] = 0;
    uint8_t *p = b->data;
    if (len)
        *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}

void mf_buf_free(struct mf_buf *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
