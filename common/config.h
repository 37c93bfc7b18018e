/* config.h — table-driven `key = value` files (one table per binary or file
 * kind: key, type, default, range). Unknown keys are errors; `#` starts a
 * comment line; values run to the end of the line, trimmed. The same table
 * applies command-line overrides through mf_cfg_set(). */
#ifndef MF_CONFIG_H
#define MF_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "err.h"

enum mf_cfg_type {
    MF_CFG_STR,    /* char *, owned */
    MF_CFG_INT,    /* int64_t, within [min, max] */
    MF_CFG_DOUBLE, /* double, within [min, max] */
    MF_CFG_BOOL,   /* bool: true/false/yes/no/on/off/1/0 */
    MF_CFG_SIZE,   /* uint64_t bytes: "512", "64K", "512M", "2G" (powers of 1024) */
    MF_CFG_LIST,   /* struct mf_strlist: each occurrence appends; "a, b" splits on commas */
    MF_CFG_MULTI,  /* struct mf_strlist: each occurrence appends the whole value */
};

struct mf_strlist {
    char **v; /* owned strings */
    size_t n;
};

struct mf_cfg_key {
    const char *name; /* NULL ends the table */
    enum mf_cfg_type type;
    size_t offset;   /* offsetof(struct ..., field) */
    const char *def; /* default as text, or NULL for none/empty */
    double min, max; /* range for INT/DOUBLE/SIZE when min < max */
    const char *help;
};

void mf_strlist_push(struct mf_strlist *l, const char *s);
void mf_strlist_free(struct mf_strlist *l);

/* Sets every key of the table in obj to its default. */
void mf_cfg_defaults(const struct mf_cfg_key *table, void *obj);
/* Sets one key from text. MF_ERR_USAGE for an unknown key, MF_ERR_PARSE for a
 * value of the wrong type or out of range; obj is unchanged on error. */
MF_MUST_CHECK enum mf_err mf_cfg_set(const struct mf_cfg_key *table, void *obj, const char *key,
                                     const char *value, struct mf_diag *diag);
#define MF_CFG_FILE_MAX (1u << 20) /* a config file, bytes */

/* Applies the `key = value` lines of data[0..len) (at most MF_CFG_FILE_MAX
 * bytes, no NUL byte); diag->where is "name:line". An unknown key is
 * MF_ERR_SCHEMA here (a defect of the file); obj may be partly set on error. */
MF_MUST_CHECK enum mf_err mf_cfg_parse(const struct mf_cfg_key *table, void *obj, const void *data,
                                       size_t len, const char *name, struct mf_diag *diag);
/* Loads a file with mf_cfg_parse; diag->where is "path:line". */
MF_MUST_CHECK enum mf_err mf_cfg_load(const struct mf_cfg_key *table, void *obj, const char *path,
                                      struct mf_diag *diag);
/* A binary's whole configuration from its command line: defaults, then the
 * file of every `--config FILE` / `--config=FILE` in order (or, when there is
 * none, default_file if it is non-NULL and exists), then every `--key value` /
 * `--key=value` flag of argv[first..) ('-' in a key name reads as '_'),
 * wherever the flags stand relative to --config. With rest == NULL every
 * argument must be a flag (a stray one is MF_ERR_USAGE "unexpected
 * argument"); otherwise the flags end at the first argument that does not
 * start with "--" and *rest gets its index (argc when there is none). An
 * unknown flag or a missing value is MF_ERR_USAGE; a bad value MF_ERR_PARSE
 * (diag->where starts with "option"); file errors as mf_cfg_load. On error
 * obj is freed (mf_cfg_free) and *rest is not written. */
MF_MUST_CHECK enum mf_err mf_cfg_load_args(const struct mf_cfg_key *table, void *obj, int argc,
                                           char **argv, int first, const char *default_file,
                                           int *rest, struct mf_diag *diag);
/* Splits "host:port" (host may be "[v6]"; no blanks, control characters or
 * '/'; port 0..65535); *host is malloc'd. MF_ERR_USAGE otherwise. */
MF_MUST_CHECK enum mf_err mf_split_hostport(const char *s, char **host, int *port);
/* Prints one line per key: name, help, [default]. */
void mf_cfg_help(FILE *out, const struct mf_cfg_key *table);
#define MF_CFG_SECRET_MAX 256 /* bytes of a credential or password, newline excluded */

/* Reads a secret file (a device credential, an MQTT password): one line,
 * one trailing "\n" or "\r\n" stripped. *out is the caller's (free; better
 * wipe it first). A NULL or empty path gives *out = NULL and MF_OK.
 * Refusals (diag->where is the path): MF_ERR_IO cannot open or read;
 * MF_ERR_SCHEMA not a regular file, any group/other permission bit (it must
 * be mode 0600 or stricter), empty, a NUL / CR / LF inside; MF_ERR_TOO_LARGE
 * more than MF_CFG_SECRET_MAX bytes. */
MF_MUST_CHECK enum mf_err mf_cfg_secret(const char *path, char **out, struct mf_diag *diag);
/* Frees the owned strings and lists of obj (not obj itself). */
void mf_cfg_free(const struct mf_cfg_key *table, void *obj);

/* Parses a size with optional K/M/G/T suffix. */
MF_MUST_CHECK enum mf_err mf_parse_size(const char *s, uint64_t *out);

#endif
