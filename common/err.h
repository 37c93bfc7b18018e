/* err.h — the one error enum of modelfleet and the diagnostic that travels with it.
 * Code gets an `enum mf_err`; a person gets `struct mf_diag`: where it went wrong
 * (a file, an entry, a JSON path) and a sentence saying what. */
#ifndef MF_ERR_H
#define MF_ERR_H

#include <stddef.h>

#define MF_MUST_CHECK   __attribute__((warn_unused_result))
#define MF_PRINTF(f, a) __attribute__((format(printf, f, a)))

/* Programmer misuse (not bad input): stays on in release builds. */
#define MF_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond))                                                                               \
            mf_assert_fail(__FILE__, __LINE__, #cond);                                             \
    } while (0)

enum mf_err {
    MF_OK = 0,
    MF_ERR_IO,            /* an operating-system call failed */
    MF_ERR_USAGE,         /* invalid argument or option */
    MF_ERR_PARSE,         /* malformed text or JSON */
    MF_ERR_SCHEMA,        /* well-formed but wrong fields or types */
    MF_ERR_VERSION,       /* a format version this build does not understand */
    MF_ERR_TOO_LARGE,     /* over a size cap */
    MF_ERR_NOT_PACKAGE,   /* empty file, not a tar archive */
    MF_ERR_TRUNCATED,     /* the archive ends early */
    MF_ERR_LAYOUT,        /* manifest.json / manifest.sig not where they must be */
    MF_ERR_UNSIGNED,      /* no signature at all */
    MF_ERR_UNKNOWN_KEY,   /* signed, but by no trusted key */
    MF_ERR_BAD_SIGNATURE, /* a trusted key's signature does not verify */
    MF_ERR_UNSAFE_PATH,   /* absolute path, `..`, bad characters */
    MF_ERR_ENTRY_TYPE,    /* link, device, fifo, directory, sparse file */
    MF_ERR_DUPLICATE,     /* the same path twice */
    MF_ERR_UNLISTED,      /* an entry the manifest does not list */
    MF_ERR_MISSING,       /* a listed file is absent */
    MF_ERR_SIZE_MISMATCH, /* entry size differs from the manifest */
    MF_ERR_HASH_MISMATCH, /* entry hash differs from the manifest */
    MF_ERR_DISK_BUDGET,   /* declared sizes exceed the disk budget */
    MF_ERR_EXISTS,        /* the target already exists */
    MF_ERR_NOT_FOUND,     /* the thing asked for does not exist */
    MF_ERR_KEY,           /* malformed key file */
    MF_ERR_UNAVAILABLE,   /* a service (the database) cannot be reached now */
    MF_ERR_CONFLICT,      /* a different thing already holds this name */
    MF_ERR_AUTH,          /* no valid credential */
    MF_ERR_FORBIDDEN,     /* a valid credential without the right */
    MF_ERR_DB,            /* the database refused a statement */
    MF_ERR_WRONG_TARGET,  /* a message addressed to another device */
    MF_ERR_STALE,         /* a sequence number not above the last one applied */
    MF_ERR_REFUSED,       /* a model the activation gate refused */
    MF_ERR__COUNT
};

__attribute__((noreturn)) void mf_assert_fail(const char *file, int line, const char *cond);

/* Static English name of an error code ("hash mismatch"); never NULL. */
const char *mf_strerror(enum mf_err err);

/* Short stable token for an error code ("hash_mismatch"), for JSON and logs. */
const char *mf_errname(enum mf_err err);

#define MF_DIAG_WHERE 256
#define MF_DIAG_WHAT  512

struct mf_diag {
    enum mf_err err;
    char where[MF_DIAG_WHERE]; /* e.g. "pkg.mfpkg: model/net.onnx"; may be empty */
    char what[MF_DIAG_WHAT];   /* one human sentence, no trailing newline */
};

/* Fills `diag` (which may be NULL) and returns `err`, so callers can write
 * `return mf_diag_set(diag, MF_ERR_PARSE, path, "line %d: ...", n);`. */
enum mf_err mf_diag_set(struct mf_diag *diag, enum mf_err err, const char *where, const char *fmt,
                        ...) MF_PRINTF(4, 5);

/* Like mf_diag_set, appending ": strerror(errno)" for the saved errno value. */
enum mf_err mf_diag_errno(struct mf_diag *diag, int errnum, const char *where, const char *fmt, ...)
    MF_PRINTF(4, 5);

/* Prefixes diag->where with `outer` ("outer: where"); no-op when diag is NULL. */
void mf_diag_prefix(struct mf_diag *diag, const char *outer);

/* "where: what" (or "what", or the code's name) into buf; returns buf. */
const char *mf_diag_str(const struct mf_diag *diag, char *buf, size_t size);

#define MF_DIAG_STR_MAX (MF_DIAG_WHERE + MF_DIAG_WHAT + 4)

#endif
