/* buf.h — a growable byte buffer with a hard size cap. Anything the network or
 * a package controls is read into one of these, so a hostile peer meets the
 * cap instead of exhausting memory. The data is always NUL-terminated (not
 * counted in len) so text can be used in place. */
#ifndef MF_BUF_H
#define MF_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

struct mf_buf {
    uint8_t *data; /* owned; NULL until the first append */
    size_t len;
    size_t cap;
    size_t max; /* appends that would exceed it fail with MF_ERR_TOO_LARGE */
};

/* An empty buffer holding at most `max` bytes. */
void mf_buf_init(struct mf_buf *b, size_t max);
/* Appends n bytes; MF_ERR_TOO_LARGE (buffer unchanged) past the cap. */
MF_MUST_CHECK enum mf_err mf_buf_append(struct mf_buf *b, const void *p, size_t n);
MF_MUST_CHECK enum mf_err mf_buf_append_str(struct mf_buf *b, const char *s);
MF_MUST_CHECK enum mf_err mf_buf_printf(struct mf_buf *b, const char *fmt, ...) MF_PRINTF(2, 3);
void mf_buf_reset(struct mf_buf *b);
/* Hands the data to the caller (who frees it) and leaves b empty. */
uint8_t *mf_buf_steal(struct mf_buf *b, size_t *len);
void mf_buf_free(struct mf_buf *b);

#endif
