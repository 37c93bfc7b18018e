/* config.c — key = value parser driven by struct mf_cfg_key tables. Values are
 * validated fully before the target field is written. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "fs.h"
#include "mem.h"

#define CFG_FIELD(obj, k, T) ((T *)((char *)(obj) + (k)->offset))

void mf_strlist_push(struct mf_strlist *l, const char *s)
{
    l->v = mf_xreallocarray(l->v, l->n + 1, sizeof *l->v);
    l->v[l->n++] = mf_xstrdup(s);
}

void mf_strlist_free(struct mf_strlist *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

enum mf_err mf_parse_size(const char *s, uint64_t *out)
{
    char *end = NULL;
    if (!isdigit((unsigned char)*s))
        return MF_ERR_PARSE;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return MF_ERR_PARSE;
    unsigned shift = 0;
    switch (*end) {
    case '\0':
        break;
    case 'K':
    case 'k':
        shift = 10;
        break;
    case 'M':
        shift = 20;
        break;
    case 'G':
        shift = 30;
        break;
    case 'T':
        shift = 40;
        break;
    default:
        return MF_ERR_PARSE;
    }
    if (*end && end[1] != '\0' && strcmp(end + 1, "iB") != 0 && strcmp(end + 1, "B") != 0)
        return MF_ERR_PARSE;
    if (shift && v > (UINT64_MAX >> shift))
        return MF_ERR_PARSE;
    *out = (uint64_t)v << shift;
    return MF_OK;
}

static const struct mf_cfg_key *cfg__find(const struct mf_cfg_key *t, const char *key)
{
    for (; t->name; t++)
        if (strcmp(t->name, key) == 0)
            return t;
    return NULL;
}

static bool cfg__in_range(const struct mf_cfg_key *k, double v)
{
    return !(k->min < k->max) || (v >= k->min && v <= k->max);
}

static enum mf_err cfg__bad(struct mf_diag *diag, const struct mf_cfg_key *k, const char *value,
                            const char *expect)
{
    if (k->min < k->max)
        return mf_diag_set(diag, MF_ERR_PARSE, NULL, "%s = '%s': expected %s in [%g, %g]", k->name,
                           value, expect, k->min, k->max);
    return mf_diag_set(diag, MF_ERR_PARSE, NULL, "%s = '%s': expected %s", k->name, value, expect);
}

enum mf_err mf_cfg_set(const struct mf_cfg_key *table, void *obj, const char *key,
                       const char *value, struct mf_diag *diag)
{
    const struct mf_cfg_key *k = cfg__find(table, key);
    char *end = NULL;
    if (!k)
        return mf_diag_set(diag, MF_ERR_USAGE, NULL, "unknown key '%s'", key);
    /* Values end up in paths, topics and log lines: no control characters
     * (MULTI values are free-form text, e.g. package metadata, escaped where
     * they go). */
    for (const char *c = value; k->type != MF_CFG_MULTI && *c; c++)
        if (((unsigned char)*c < 0x20 && *c != '\t') || *c == 0x7f)
            return mf_diag_set(diag, MF_ERR_PARSE, k->name,
                               "a control character (byte 0x%02x) in the value", (unsigned char)*c);
    switch (k->type) {
    case MF_CFG_STR:
        free(*CFG_FIELD(obj, k, char *));
        *CFG_FIELD(obj, k, char *) = mf_xstrdup(value);
        return MF_OK;
    case MF_CFG_INT: {
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (errno || end == value || *end || !cfg__in_range(k, (double)v))
            return cfg__bad(diag, k, value, "an integer");
        *CFG_FIELD(obj, k, int64_t) = v;
        return MF_OK;
    }
    case MF_CFG_DOUBLE: {
        errno = 0;
        double v = strtod(value, &end);
        if (errno || end == value || *end || !isfinite(v) || !cfg__in_range(k, v))
            return cfg__bad(diag, k, value, "a number");
        *CFG_FIELD(obj, k, double) = v;
        return MF_OK;
    }
    case MF_CFG_BOOL: {
        static const char *const yes[] = {"true", "yes", "on", "1"};
        static const char *const no[] = {"false", "no", "off", "0"};
        for (size_t i = 0; i < 4; i++) {
            if (strcasecmp(value, yes[i]) == 0 || strcasecmp(value, no[i]) == 0) {
                *CFG_FIELD(obj, k, bool) = strcasecmp(value, yes[i]) == 0;
                return MF_OK;
            }
        }
        return cfg__bad(diag, k, value, "true or false");
    }
    case MF_CFG_SIZE: {
        uint64_t v;
        if (mf_parse_size(value, &v) != MF_OK || !cfg__in_range(k, (double)v))
            return cfg__bad(diag, k, value, "a size such as 512M");
        *CFG_FIELD(obj, k, uint64_t) = v;
        return MF_OK;
    }
    case MF_CFG_MULTI:
        mf_strlist_push(CFG_FIELD(obj, k, struct mf_strlist), value);
        return MF_OK;
    case MF_CFG_LIST: {
        struct mf_strlist *l = CFG_FIELD(obj, k, struct mf_strlist);
        const char *p = value;
        while (*p) {
            size_t n = strcspn(p, ",");
            const char *a = p, *b = p + n;
            while (a < b && isspace((unsigned char)*a))
                a++;
            while (b > a && isspace((unsigned char)b[-1]))
                b--;
            if (b > a) {
                char *item = mf_xstrndup(a, (size_t)(b - a));
                mf_strlist_push(l, item);
                free(item);
            }
            p += n + (p[n] == ',');
        }
        return MF_OK;
    }
    }
    return mf_diag_set(diag, MF_ERR_USAGE, NULL, "key '%s' has an unknown type", key);
}

void mf_cfg_defaults(const struct mf_cfg_key *table, void *obj)
{
    for (const struct mf_cfg_key *k = table; k->name; k++) {
        switch (k->type) {
        case MF_CFG_STR:
            *CFG_FIELD(obj, k, char *) = NULL;
            break;
        case MF_CFG_INT:
            *CFG_FIELD(obj, k, int64_t) = 0;
            break;
        case MF_CFG_DOUBLE:
            *CFG_FIELD(obj, k, double) = 0;
            break;
        case MF_CFG_BOOL:
            *CFG_FIELD(obj, k, bool) = false;
            break;
        case MF_CFG_SIZE:
            *CFG_FIELD(obj, k, uint64_t) = 0;
            break;
        case MF_CFG_LIST:
        case MF_CFG_MULTI:
            *CFG_FIELD(obj, k, struct mf_strlist) = (struct mf_strlist){0};
            break;
        }
        /* A default is parsed like any value, so a bad table fails loudly. */
        if (k->def && mf_cfg_set(table, obj, k->name, k->def, NULL) != MF_OK) {
            fprintf(stderr, "modelfleet: bad default for %s\n", k->name);
            abort();
        }
    }
}

void mf_cfg_free(const struct mf_cfg_key *table, void *obj)
{
    for (const struct mf_cfg_key *k = table; k->name; k++) {
        if (k->type == MF_CFG_STR) {
            free(*CFG_FIELD(obj, k, char *));
            *CFG_FIELD(obj, k, char *) = NULL;
        } else if (k->type == MF_CFG_LIST || k->type == MF_CFG_MULTI) {
            mf_strlist_free(CFG_FIELD(obj, k, struct mf_strlist));
        }
    }
}

static char *cfg__trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

enum mf_err mf_cfg_parse(const struct mf_cfg_key *table, void *obj, const void *data, size_t len,
                         const char *name, struct mf_diag *diag)
{
    if (len > MF_CFG_FILE_MAX)
        return mf_diag_set(diag, MF_ERR_TOO_LARGE, name, "over %u bytes", MF_CFG_FILE_MAX);
    const char *nul = memchr(data, '\0', len);
    if (nul) {
        int lineno = 1;
        for (const char *c = data; c < nul; c++)
            lineno += *c == '\n';
        return mf_diag_set(diag, MF_ERR_PARSE, name, "line %d: a NUL byte", lineno);
    }
    char *text = mf_xstrndup(data, len), *p = text, *line;
    int lineno = 0;
    char where[MF_DIAG_WHERE];
    enum mf_err err = MF_OK;
    while (p && *p) {
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = '\0';
        line = cfg__trim(p);
        lineno++;
        p = nl ? nl + 1 : NULL;
        if (!*line || *line == '#')
            continue;
        snprintf(where, sizeof where, "%s:%d", name, lineno);
        char *eq = strchr(line, '=');
        if (!eq) {
            err = mf_diag_set(diag, MF_ERR_PARSE, where, "expected 'key = value'");
            goto out;
        }
        *eq = '\0';
        char *key = cfg__trim(line), *value = cfg__trim(eq + 1);
        err = mf_cfg_set(table, obj, key, value, diag);
        if (err != MF_OK) {
            /* In a file an unknown key is a defect of the file, not of the command line. */
            if (err == MF_ERR_USAGE)
                err = diag ? (diag->err = MF_ERR_SCHEMA) : MF_ERR_SCHEMA;
            mf_diag_prefix(diag, where);
            goto out;
        }
    }
out:
    free(text);
    return err;
}

enum mf_err mf_cfg_load(const struct mf_cfg_key *table, void *obj, const char *path,
                        struct mf_diag *diag)
{
    struct mf_buf text;
    enum mf_err err = mf_fs_read_file(path, MF_CFG_FILE_MAX, &text, diag);
    if (err != MF_OK)
        return err;
    err =
        mf_cfg_parse(table, obj, text.data ? text.data : (const uint8_t *)"", text.len, path, diag);
    mf_buf_free(&text);
    return err;
}

/* argv[i] is "--config FILE" or "--config=FILE": the file name, or NULL for
 * any other argument; *i moves past a separate value. */
static enum mf_err cfg__config_arg(int argc, char **argv, int *i, const char **file,
                                   struct mf_diag *diag)
{
    *file = NULL;
    if (strncmp(argv[*i], "--config=", 9) == 0) {
        *file = argv[*i] + 9;
    } else if (strcmp(argv[*i], "--config") == 0) {
        if (*i + 1 >= argc)
            return mf_diag_set(diag, MF_ERR_USAGE, "--config", "needs a file name");
        *file = argv[++*i];
    }
    return MF_OK;
}

enum mf_err mf_cfg_load_args(const struct mf_cfg_key *table, void *obj, int argc, char **argv,
                             int first, const char *default_file, int *rest, struct mf_diag *diag)
{
    enum mf_err rc;
    const char *file;
    bool had_config = false;
    int end = argc;
    struct stat st;

    MF_ASSERT(first >= 0 && first <= argc);
    mf_cfg_defaults(table, obj);
    /* First pass: where the flags end, and the config files, in order. */
    for (int i = first; i < argc; i++) {
        if (strncmp(argv[i], "--", 2) != 0) {
            if (rest) {
                end = i;
                break;
            }
            rc = mf_diag_set(diag, MF_ERR_USAGE, argv[i], "unexpected argument");
            goto fail;
        }
        if ((rc = cfg__config_arg(argc, argv, &i, &file, diag)) != MF_OK)
            goto fail;
        if (file) {
            had_config = true;
            if ((rc = mf_cfg_load(table, obj, file, diag)) != MF_OK)
                goto fail;
        } else if (!strchr(argv[i], '=')) {
            i++; /* its value (a missing one is reported below) */
        }
    }
    if (!had_config && default_file && stat(default_file, &st) == 0 &&
        (rc = mf_cfg_load(table, obj, default_file, diag)) != MF_OK)
        goto fail;
    /* Second pass: the flags override whatever the files said. */
    for (int i = first; i < end; i++) {
        const char *arg = argv[i], *val;
        char key[64];
        size_t n;

        if ((rc = cfg__config_arg(argc, argv, &i, &file, diag)) != MF_OK)
            goto fail;
        if (file)
            continue;
        arg += 2;
        val = strchr(arg, '=');
        n = val ? (size_t)(val - arg) : strlen(arg);
        if (n == 0 || n >= sizeof key) {
            rc = mf_diag_set(diag, MF_ERR_USAGE, argv[i], "unknown option");
            goto fail;
        }
        for (size_t j = 0; j < n; j++)
            key[j] = arg[j] == '-' ? '_' : arg[j];
        key[n] = '\0';
        if (val) {
            val++;
        } else {
            if (i + 1 >= argc) {
                rc = mf_diag_set(diag, MF_ERR_USAGE, argv[i], "needs a value");
                goto fail;
            }
            val = argv[++i];
        }
        rc = mf_cfg_set(table, obj, key, val, diag);
        if (rc != MF_OK) {
            mf_diag_prefix(diag, "option");
            goto fail;
        }
    }
    if (rest)
        *rest = end;
    return MF_OK;
fail:
    mf_cfg_free(table, obj);
    return rc;
}

enum mf_err mf_split_hostport(const char *s, char **host, int *port)
{
    const char *colon = strrchr(s, ':'), *h = s, *d;
    size_t hl;
    long p = 0;

    if (!colon || colon == s || !colon[1] || strlen(colon + 1) > 5)
        return MF_ERR_USAGE;
    for (d = colon + 1; *d; d++) {
        if (*d < '0' || *d > '9')
            return MF_ERR_USAGE;
        p = p * 10 + (*d - '0');
    }
    if (p > 65535)
        return MF_ERR_USAGE;
    hl = (size_t)(colon - s);
    if (h[0] == '[') { /* [v6]:port */
        if (hl < 3 || s[hl - 1] != ']')
            return MF_ERR_USAGE;
        h++;
        hl -= 2;
        if (memchr(h, '[', hl) || memchr(h, ']', hl))
            return MF_ERR_USAGE;
    } else if (memchr(h, ':', hl) || memchr(h, '[', hl) || memchr(h, ']', hl)) {
        return MF_ERR_USAGE; /* a bare IPv6 address must be bracketed */
    }
    for (size_t i = 0; i < hl; i++)
        if ((unsigned char)h[i] <= ' ' || h[i] == '/' || h[i] == 0x7f)
            return MF_ERR_USAGE;
    *host = mf_xstrndup(h, hl);
    *port = (int)p;
    return MF_OK;
}

void mf_cfg_help(FILE *out, const struct mf_cfg_key *table)
{
    for (const struct mf_cfg_key *k = table; k->name; k++)
        fprintf(out, "  %-28s %s%s%s%s\n", k->name, k->help, k->def ? " [" : "",
                k->def ? k->def : "", k->def ? "]" : "");
}

enum mf_err mf_cfg_secret(const char *path, char **out, struct mf_diag *diag)
{
    char buf[MF_CFG_SECRET_MAX + 3]; /* the secret, "\r\n", and one byte to notice more */
    size_t n = 0;
    ssize_t got;
    struct stat st;
    enum mf_err rc = MF_OK;
    int fd;

    if (!path || !*path) {
        *out = NULL;
        return MF_OK;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return mf_diag_errno(diag, errno, path, "cannot open the secret file");
    if (fstat(fd, &st) != 0) {
        rc = mf_diag_errno(diag, errno, path, "cannot stat the secret file");
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = mf_diag_set(diag, MF_ERR_SCHEMA, path, "is not a regular file");
        goto out;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        rc = mf_diag_set(diag, MF_ERR_SCHEMA, path,
                         "other users can read or change this secret (mode %04o): chmod 600 it",
                         (unsigned)(st.st_mode & 07777));
        goto out;
    }
    while (n < sizeof buf) {
        got = read(fd, buf + n, sizeof buf - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            rc = mf_diag_errno(diag, errno, path, "cannot read the secret file");
            goto out;
        }
        if (got == 0)
            break;
        n += (size_t)got;
    }
    if (n > 0 && buf[n - 1] == '\n') {
        n--;
        if (n > 0 && buf[n - 1] == '\r')
            n--;
    }
    if (n > MF_CFG_SECRET_MAX) {
        rc = mf_diag_set(diag, MF_ERR_TOO_LARGE, path, "a secret is at most %d bytes",
                         MF_CFG_SECRET_MAX);
    } else if (n == 0) {
        rc = mf_diag_set(diag, MF_ERR_SCHEMA, path, "the secret file is empty");
    } else if (memchr(buf, '\0', n) || memchr(buf, '\n', n) || memchr(buf, '\r', n)) {
        rc =
            mf_diag_set(diag, MF_ERR_SCHEMA, path, "the secret must be one line without NUL bytes");
    } else {
        *out = mf_xstrndup(buf, n);
    }
out:
    sodium_memzero(buf, sizeof buf);
    close(fd);
    return rc;
}
