/* unit_tmp.h — a scratch directory for a cmocka test (under $TMPDIR or /tmp),
 * removed afterwards without following symbolic links. Include after
 * <cmocka.h>; header-only so each test executable stays one file. */
#ifndef MF_UNIT_TMP_H
#define MF_UNIT_TMP_H

#include <stdlib.h>

#include "common/fs.h"
#include "common/mem.h"

/* A new directory "<base>/mf-test-<tag>.XXXXXX" (caller: unit_tmpdir_free). */
static char *unit_tmpdir(const char *tag)
{
    const char *base = getenv("TMPDIR");
    char *dir = mf_xasprintf("%s/mf-test-%s.XXXXXX", base && *base ? base : "/tmp", tag);
    assert_non_null(mkdtemp(dir));
    return dir;
}

static void unit_tmpdir_free(char *dir)
{
    assert_int_equal(mf_fs_rmtree(dir), MF_OK);
    free(dir);
}

#endif
