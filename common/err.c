/* err.c — error names and diagnostics. The tables below are indexed by
 * `enum mf_err` and must list every code, in order. */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    const char *text;
} err__table[MF_ERR__COUNT] = {
    [MF_OK] = {"ok", "success"},
    [MF_ERR_IO] = {"io", "input/output error"},
    [MF_ERR_USAGE] = {"usage", "invalid argument"},
    [MF_ERR_PARSE] = {"parse", "malformed input"},
    [MF_ERR_SCHEMA] = {"schema", "invalid field"},
    [MF_ERR_VERSION] = {"version", "unsupported format version"},
    [MF_ERR_TOO_LARGE] = {"too_large", "over the size cap"},
    [MF_ERR_NOT_PACKAGE] = {"not_package", "not a modelfleet package"},
    [MF_ERR_TRUNCATED] = {"truncated", "truncated archive"},
    [MF_ERR_LAYOUT] = {"layout", "wrong package layout"},
    [MF_ERR_UNSIGNED] = {"unsigned", "package is not signed"},
    [MF_ERR_UNKNOWN_KEY] = {"unknown_key", "signed by an unknown key"},
    [MF_ERR_BAD_SIGNATURE] = {"bad_signature", "bad signature"},
    [MF_ERR_UNSAFE_PATH] = {"unsafe_path", "unsafe path"},
    [MF_ERR_ENTRY_TYPE] = {"entry_type", "forbidden entry type"},
    [MF_ERR_DUPLICATE] = {"duplicate", "duplicate entry"},
    [MF_ERR_UNLISTED] = {"unlisted", "entry not listed in the manifest"},
    [MF_ERR_MISSING] = {"missing", "listed file missing"},
    [MF_ERR_SIZE_MISMATCH] = {"size_mismatch", "size mismatch"},
    [MF_ERR_HASH_MISMATCH] = {"hash_mismatch", "hash mismatch"},
    [MF_ERR_DISK_BUDGET] = {"disk_budget", "over the disk budget"},
    [MF_ERR_EXISTS] = {"exists", "already exists"},
    [MF_ERR_NOT_FOUND] = {"not_found", "not found"},
    [MF_ERR_KEY] = {"key", "invalid key file"},
    [MF_ERR_UNAVAILABLE] = {"unavailable", "service unavailable"},
    [MF_ERR_CONFLICT] = {"conflict", "conflicts with an existing object"},
    [MF_ERR_AUTH] = {"unauthorized", "not authenticated"},
    [MF_ERR_FORBIDDEN] = {"forbidden", "not allowed"},
    [MF_ERR_DB] = {"database", "database error"},
    [MF_ERR_WRONG_TARGET] = {"wrong_target", "addressed to another device"},
    [MF_ERR_STALE] = {"stale", "stale or replayed sequence number"},
    [MF_ERR_REFUSED] = {"refused", "refused by the activation gate"},
};

void mf_assert_fail(const char *file, int line, const char *cond)
{
    fprintf(stderr, "modelfleet: %s:%d: misuse: %s\n", file, line, cond);
    abort();
}

const char *mf_strerror(enum mf_err err)
{
    if ((unsigned)err >= MF_ERR__COUNT)
        return "unknown error";
    return err__table[err].text;
}

const char *mf_errname(enum mf_err err)
{
    if ((unsigned)err >= MF_ERR__COUNT)
        return "unknown";
    return err__table[err].name;
}

static enum mf_err diag__vset(struct mf_diag *diag, enum mf_err err, const char *where,
                              const char *suffix, const char *fmt, va_list ap)
    __attribute__((format(printf, 5, 0)));

static enum mf_err diag__vset(struct mf_diag *diag, enum mf_err err, const char *where,
                              const char *suffix, const char *fmt, va_list ap)
{
    if (!diag)
        return err;
    diag->err = err;
    snprintf(diag->where, sizeof diag->where, "%s", where ? where : "");
    int n = vsnprintf(diag->what, sizeof diag->what, fmt, ap);
    if (suffix && n >= 0 && (size_t)n < sizeof diag->what)
        snprintf(diag->what + n, sizeof diag->what - (size_t)n, ": %s", suffix);
    return err;
}

enum mf_err mf_diag_set(struct mf_diag *diag, enum mf_err err, const char *where, const char *fmt,
                        ...)
{
    va_list ap;
    va_start(ap, fmt);
    diag__vset(diag, err, where, NULL, fmt, ap);
    va_end(ap);
    return err;
}

enum mf_err mf_diag_errno(struct mf_diag *diag, int errnum, const char *where, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    diag__vset(diag, MF_ERR_IO, where, strerror(errnum), fmt, ap);
    va_end(ap);
    return MF_ERR_IO;
}

void mf_diag_prefix(struct mf_diag *diag, const char *outer)
{
    if (!diag || !outer || !*outer)
        return;
    char tmp[2 * MF_DIAG_WHERE + 4];
    if (diag->where[0])
        snprintf(tmp, sizeof tmp, "%s: %s", outer, diag->where);
    else
        snprintf(tmp, sizeof tmp, "%s", outer);
    snprintf(diag->where, sizeof diag->where, "%.*s", (int)sizeof diag->where - 1, tmp);
}

const char *mf_diag_str(const struct mf_diag *diag, char *buf, size_t size)
{
    const char *what = diag->what[0] ? diag->what : mf_strerror(diag->err);
    if (diag->where[0])
        snprintf(buf, size, "%s: %s", diag->where, what);
    else
        snprintf(buf, size, "%s", what);
    return buf;
}
