/* semver.h — Semantic Versioning 2.0.0 parsing and precedence. Versions of one
 * model, and agent versions, compare by these rules. */
#ifndef MF_SEMVER_H
#define MF_SEMVER_H

#include <stdint.h>

#include "err.h"

#define MF_SEMVER_MAX 128 /* longest accepted version string */

struct mf_semver {
    uint64_t major, minor, patch;
    char pre[MF_SEMVER_MAX];   /* pre-release identifiers, "" if none */
    char build[MF_SEMVER_MAX]; /* build metadata, "" if none (ignored by compare) */
};

/* Parses "1.2.3", "1.0.0-rc.1+build.5"; MF_ERR_PARSE with a reason otherwise. */
MF_MUST_CHECK enum mf_err mf_semver_parse(const char *s, struct mf_semver *out,
                                          struct mf_diag *diag);
/* <0, 0, >0 by semver precedence (build metadata ignored). */
int mf_semver_cmp(const struct mf_semver *a, const struct mf_semver *b);

#endif
