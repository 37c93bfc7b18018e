/* fuzz_check.h — what both fuzz targets assert with: fail() aborts with a
 * message prefixed by FUZZ_TARGET (defined by the includer), and
 * check_diag() insists a failed call names its error in a terminated diag. */
#ifndef MF_FUZZ_CHECK_H
#define MF_FUZZ_CHECK_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"

static void fail(const char *fmt, ...) MF_PRINTF(1, 2);

static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs(FUZZ_TARGET ": ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

/* A failed call names its error in the diag, with both strings terminated. */
static void check_diag(const char *who, enum mf_err err, const struct mf_diag *diag)
{
    if (err == MF_OK)
        return;
    if (err < 0 || err >= MF_ERR__COUNT)
        fail("%s returned %d, not an mf_err", who, (int)err);
    if (!memchr(diag->where, '\0', sizeof diag->where) ||
        !memchr(diag->what, '\0', sizeof diag->what))
        fail("%s left an unterminated diag", who);
    if (diag->err != err)
        fail("%s returned %s but its diag says %s (%s: %s)", who, mf_errname(err),
             mf_errname(diag->err), diag->where, diag->what);
}

#endif
