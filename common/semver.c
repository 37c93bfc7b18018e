/* semver.c — strict SemVer 2.0.0: no leading zeros in numbers, identifiers of
 * [0-9A-Za-z-], no empty identifiers. */
#include "semver.h"

#include "encode.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A numeric identifier: digits, no leading zero (SemVer 2.0.0). */
static bool semver__num(const char **p, uint64_t *out)
{
    if ((*p)[0] == '0' && isdigit((unsigned char)(*p)[1]))
        return false;
    return mf_dec_u64(p, out);
}

static bool semver__all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    return true;
}

/* Dot-separated identifiers up to the end or `stop`; numeric ones may not have
 * leading zeros when `strict_numeric`. Copies into out. */
static bool semver__idents(const char **p, char stop, bool strict_numeric, char *out, size_t cap)
{
    const char *s = *p, *start = s;
    for (;;) {
        const char *id = s;
        while (isalnum((unsigned char)*s) || *s == '-')
            s++;
        size_t n = (size_t)(s - id);
        if (n == 0)
            return false;
        if (strict_numeric && n > 1 && id[0] == '0' && semver__all_digits(id, n))
            return false;
        if (*s != '.')
            break;
        s++;
    }
    if (*s != '\0' && *s != stop)
        return false;
    size_t len = (size_t)(s - start);
    if (len >= cap)
        return false;
    memcpy(out, start, len);
    out[len] = '\0';
    *p = s;
    return true;
}

enum mf_err mf_semver_parse(const char *s, struct mf_semver *out, struct mf_diag *diag)
{
    struct mf_semver v = {0};
    const char *p = s;
    if (strlen(s) >= MF_SEMVER_MAX)
        return mf_diag_set(diag, MF_ERR_PARSE, NULL, "version is longer than %d characters",
                           MF_SEMVER_MAX - 1);
    if (!semver__num(&p, &v.major) || *p++ != '.' || !semver__num(&p, &v.minor) || *p++ != '.' ||
        !semver__num(&p, &v.patch))
        goto bad;
    if (*p == '-') {
        p++;
        if (!semver__idents(&p, '+', true, v.pre, sizeof v.pre))
            goto bad;
    }
    if (*p == '+') {
        p++;
        if (!semver__idents(&p, '\0', false, v.build, sizeof v.build))
            goto bad;
    }
    if (*p != '\0')
        goto bad;
    *out = v;
    return MF_OK;
bad:
    return mf_diag_set(diag, MF_ERR_PARSE, NULL,
                       "'%s' is not a semantic version (MAJOR.MINOR.PATCH[-pre][+build])", s);
}

static int semver__cmp_u64(uint64_t a, uint64_t b)
{
    return a < b ? -1 : a > b;
}

static int semver__cmp_pre(const char *a, const char *b)
{
    if (!*a || !*b) /* a release ranks above any pre-release */
        return !*a - !*b;
    while (*a && *b) {
        size_t na = strcspn(a, "."), nb = strcspn(b, ".");
        bool da = semver__all_digits(a, na), db = semver__all_digits(b, nb);
        int c;
        if (da && db)
            c = na != nb ? (na < nb ? -1 : 1) : strncmp(a, b, na);
        else if (da != db)
            c = da ? -1 : 1;
        else {
            size_t m = na < nb ? na : nb;
            c = strncmp(a, b, m);
            if (c == 0)
                c = semver__cmp_u64(na, nb);
        }
        if (c)
            return c < 0 ? -1 : 1;
        a += na + (a[na] == '.');
        b += nb + (b[nb] == '.');
    }
    return (*a != 0) - (*b != 0);
}

int mf_semver_cmp(const struct mf_semver *a, const struct mf_semver *b)
{
    int c = semver__cmp_u64(a->major, b->major);
    if (!c)
        c = semver__cmp_u64(a->minor, b->minor);
    if (!c)
        c = semver__cmp_u64(a->patch, b->patch);
    if (!c)
        c = semver__cmp_pre(a->pre, b->pre);
    return c;
}
