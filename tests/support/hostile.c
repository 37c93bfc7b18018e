/* hostile.c — builders for hostile packages. A base manifest describes three
 * small payload files; each case mutates the manifest, the signature or the
 * archive to produce exactly one defect. */
#include "hostile.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "common/encode.h"
#include "common/hash.h"
#include "common/mem.h"
#include "packaging/manifest.h"
#include "packaging/sig.h"

#define H_MODEL  "model/net.onnx"
#define H_INPUTS "eval/inputs.npy"
#define H_LABELS "eval/labels.npy"

enum { T_REG, T_SYMLINK, T_HARDLINK, T_CHAR, T_FIFO, T_DIR };

struct hent {
    const char *name;
    int type;
    const void *data;
    size_t len;
    const char *link;
};

static uint8_t h_model[4096], h_inputs[640], h_labels[80];

static void h__payload_init(void)
{
    for (size_t i = 0; i < sizeof h_model; i++)
        h_model[i] = (uint8_t)(i * 131 + 7);
    for (size_t i = 0; i < sizeof h_inputs; i++)
        h_inputs[i] = (uint8_t)(i * 17);
    for (size_t i = 0; i < sizeof h_labels; i++)
        h_labels[i] = (uint8_t)(i % 10);
}

void hostile_ctx_init(struct hostile_ctx *c, const char *sandbox, const char *path)
{
    uint8_t seed[crypto_sign_SEEDBYTES];
    memset(c, 0, sizeof *c);
    c->path = path;
    c->sandbox = sandbox;
    memset(seed, 0x11, sizeof seed);
    mf_key_from_seed(&c->trusted, seed);
    memset(seed, 0x22, sizeof seed);
    mf_key_from_seed(&c->stranger, seed);
    h__payload_init();
}

static json_t *h__file(const char *path, const void *data, size_t len)
{
    uint8_t h[MF_HASH_BYTES];
    char hex[MF_HASH_HEX];
    mf_hash_bytes(h, data, len);
    mf_hex_encode(hex, h, sizeof h);
    return json_pack("{s:s, s:I, s:s}", "path", path, "size", (json_int_t)len, "blake2b", hex);
}

static json_t *h__manifest(void)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:{s:[s], s:s}, s:s, s:[o,o,o], "
                     "s:{s:s, s:s, s:s, s:i}, s:{s:f, s:f}, s:s, s:{}}",
                     "format_version", "1.0", "model", "hostile", "version", "1.0.0", "created",
                     "2026-01-01T00:00:00Z", "variant", "hardware", "rpi5", "runtime", "onnx",
                     "entry", H_MODEL, "files", h__file(H_INPUTS, h_inputs, sizeof h_inputs),
                     h__file(H_LABELS, h_labels, sizeof h_labels),
                     h__file(H_MODEL, h_model, sizeof h_model), "eval", "inputs", H_INPUTS,
                     "labels", H_LABELS, "metric", "top1", "n", 80, "thresholds", "min_accuracy",
                     0.9, "max_accuracy_drop", 0.01, "min_agent_version", "0.1.0", "metadata");
}

static char *h__dump(json_t *m)
{
    char *s = json_dumps(m, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(m);
    return s;
}

static char *h__sign(const char *manifest, const struct mf_key_secret *k)
{
    struct mf_sigset s = {.n = 0};
    if (k)
        mf_sigset_sign(&s, (const uint8_t *)manifest, strlen(manifest), k);
    return mf_sigset_format(&s);
}

static void h__write(const char *path, const struct hent *e, size_t n, int zstd_layers)
{
    struct archive *a = archive_write_new();
    struct archive_entry *ae = archive_entry_new();
    archive_write_set_format_pax_restricted(a);
    for (int i = 0; i < zstd_layers; i++)
        archive_write_add_filter_zstd(a);
    if (archive_write_open_filename(a, path) != ARCHIVE_OK)
        abort();
    for (size_t i = 0; i < n; i++) {
        archive_entry_clear(ae);
        archive_entry_set_pathname(ae, e[i].name);
        archive_entry_set_perm(ae, 0644);
        archive_entry_set_mtime(ae, 1767225600, 0);
        switch (e[i].type) {
        case T_REG:
            archive_entry_set_filetype(ae, AE_IFREG);
            archive_entry_set_size(ae, (la_int64_t)e[i].len);
            break;
        case T_SYMLINK:
            archive_entry_set_filetype(ae, AE_IFLNK);
            archive_entry_set_symlink(ae, e[i].link);
            break;
        case T_HARDLINK:
            archive_entry_set_filetype(ae, AE_IFREG);
            archive_entry_set_hardlink(ae, e[i].link);
            archive_entry_set_size(ae, 0);
            break;
        case T_CHAR:
            archive_entry_set_filetype(ae, AE_IFCHR);
            archive_entry_set_rdev(ae, makedev(1, 3));
            break;
        case T_FIFO:
            archive_entry_set_filetype(ae, AE_IFIFO);
            break;
        case T_DIR:
            archive_entry_set_filetype(ae, AE_IFDIR);
            archive_entry_set_perm(ae, 0755);
            break;
        }
        if (archive_write_header(a, ae) != ARCHIVE_OK)
            abort();
        if (e[i].type == T_REG && e[i].len &&
            archive_write_data(a, e[i].data, e[i].len) != (la_ssize_t)e[i].len)
            abort();
    }
    archive_write_close(a);
    archive_write_free(a);
    archive_entry_free(ae);
}

/* The standard layout: manifest, sig, payload sorted, plus `extra` appended. */
static void h__package(const struct hostile_ctx *c, const char *manifest, const char *sig,
                       const struct hent *extra, size_t n_extra, int zstd)
{
    struct hent e[16] = {
        {"manifest.json", T_REG, manifest, strlen(manifest), NULL},
        {"manifest.sig", T_REG, sig, strlen(sig), NULL},
        {H_INPUTS, T_REG, h_inputs, sizeof h_inputs, NULL},
        {H_LABELS, T_REG, h_labels, sizeof h_labels, NULL},
        {H_MODEL, T_REG, h_model, sizeof h_model, NULL},
    };
    size_t n = 5;
    for (size_t i = 0; i < n_extra && n < 16; i++)
        e[n++] = extra[i];
    h__write(c->path, e, n, zstd);
}

/* Signs `m` with the trusted key and writes the standard layout. */
static void h__signed(const struct hostile_ctx *c, json_t *m, const struct hent *extra,
                      size_t n_extra)
{
    char *man = h__dump(m);
    char *sig = h__sign(man, &c->trusted);
    h__package(c, man, sig, extra, n_extra, false);
    free(man);
    free(sig);
}

void hostile_build_valid(const struct hostile_ctx *c)
{
    h__signed(c, h__manifest(), NULL, 0);
}

static void h__zstd(const struct hostile_ctx *c, int layers)
{
    char *man = h__dump(h__manifest());
    char *sig = h__sign(man, &c->trusted);
    h__package(c, man, sig, NULL, 0, layers);
    free(man);
    free(sig);
}

static void h_valid_zstd(const struct hostile_ctx *c)
{
    h__zstd(c, 1);
}

static void h_zstd_twice(const struct hostile_ctx *c)
{
    h__zstd(c, 2);
}

/* ---- signatures ---- */

static void h_bad_signature(const struct hostile_ctx *c)
{
    char *man = h__dump(h__manifest());
    char *sig = h__sign(man, &c->trusted);
    /* Flip one base64 character of the signature (keeping it valid base64). */
    char *b64 = strrchr(sig, ' ') + 1;
    b64[10] = b64[10] == 'A' ? 'B' : 'A';
    h__package(c, man, sig, NULL, 0, false);
    free(man);
    free(sig);
}

static void h_tampered_manifest(const struct hostile_ctx *c)
{
    char *man = h__dump(h__manifest());
    char *sig = h__sign(man, &c->trusted);
    /* Change the manifest after signing: a lower accuracy floor. */
    char *p = strstr(man, "0.9");
    p[2] = '1';
    h__package(c, man, sig, NULL, 0, false);
    free(man);
    free(sig);
}

static void h_unknown_key(const struct hostile_ctx *c)
{
    char *man = h__dump(h__manifest());
    char *sig = h__sign(man, &c->stranger);
    h__package(c, man, sig, NULL, 0, false);
    free(man);
    free(sig);
}

static void h_unsigned(const struct hostile_ctx *c)
{
    char *man = h__dump(h__manifest());
    h__package(c, man, "", NULL, 0, false);
    free(man);
}

/* ---- layout ---- */

static void h_manifest_not_first(const struct hostile_ctx *c)
{
    char *man = h__dump(h__manifest());
    char *sig = h__sign(man, &c->trusted);
    struct hent e[] = {
        {H_MODEL, T_REG, h_model, sizeof h_model, NULL},
        {"manifest.json", T_REG, man, strlen(man), NULL},
        {"manifest.sig", T_REG, sig, strlen(sig), NULL},
        {H_INPUTS, T_REG, h_inputs, sizeof h_inputs, NULL},
        {H_LABELS, T_REG, h_labels, sizeof h_labels, NULL},
    };
    h__write(c->path, e, 5, false);
    free(man);
    free(sig);
}

static void h_no_signature_entry(const struct hostile_ctx *c)
{
    char *man = h__dump(h__manifest());
    struct hent e[] = {{"manifest.json", T_REG, man, strlen(man), NULL}};
    h__write(c->path, e, 1, false);
    free(man);
}

static void h_duplicate_entry(const struct hostile_ctx *c)
{
    struct hent extra[] = {{H_MODEL, T_REG, h_model, sizeof h_model, NULL}};
    h__signed(c, h__manifest(), extra, 1);
}

static void h_duplicate_manifest(const struct hostile_ctx *c)
{
    static const char evil[] = "{\"format_version\": \"1.0\"}";
    struct hent extra[] = {{"manifest.json", T_REG, evil, sizeof evil - 1, NULL}};
    h__signed(c, h__manifest(), extra, 1);
}

static void h_unlisted_entry(const struct hostile_ctx *c)
{
    static const char payload[] = "#!/bin/sh\necho owned\n";
    struct hent extra[] = {{"model/run.sh", T_REG, payload, sizeof payload - 1, NULL}};
    h__signed(c, h__manifest(), extra, 1);
}

static void h_listed_missing(const struct hostile_ctx *c)
{
    json_t *m = h__manifest();
    static const char ghost[] = "ghost";
    json_array_append_new(json_object_get(m, "files"), h__file("model/extra.bin", ghost, 5));
    h__signed(c, m, NULL, 0);
}

static void h_size_mismatch(const struct hostile_ctx *c)
{
    json_t *m = h__manifest();
    json_t *model = json_array_get(json_object_get(m, "files"), 2);
    json_object_set_new(model, "size", json_integer((json_int_t)sizeof h_model + 1));
    h__signed(c, m, NULL, 0);
}

static void h_hash_mismatch(const struct hostile_ctx *c)
{
    char *man = h__dump(h__manifest());
    char *sig = h__sign(man, &c->trusted);
    h_model[100] ^= 0x01; /* the payload changes after the manifest was made */
    h__package(c, man, sig, NULL, 0, false);
    h_model[100] ^= 0x01;
    free(man);
    free(sig);
}

/* ---- paths and entry types ---- */

static void h_absolute_path(const struct hostile_ctx *c)
{
    char *abs = mf_xasprintf("%s/escaped-absolute", c->sandbox);
    static const char payload[] = "escaped";
    struct hent extra[] = {{abs, T_REG, payload, sizeof payload - 1, NULL}};
    h__signed(c, h__manifest(), extra, 1);
    free(abs);
}

static void h_dotdot(const struct hostile_ctx *c)
{
    static const char payload[] = "escaped";
    struct hent extra[] = {
        {"model/../../escaped-dotdot", T_REG, payload, sizeof payload - 1, NULL}};
    h__signed(c, h__manifest(), extra, 1);
}

static void h_dotdot_listed(const struct hostile_ctx *c)
{
    json_t *m = h__manifest();
    static const char payload[] = "escaped";
    json_array_append_new(json_object_get(m, "files"), h__file("../escaped-listed", payload, 7));
    h__signed(c, m, NULL, 0);
}

static void h_symlink(const struct hostile_ctx *c)
{
    json_t *m = h__manifest();
    json_array_append_new(json_object_get(m, "files"), h__file("model/link", "", 0));
    struct hent extra[] = {{"model/link", T_SYMLINK, NULL, 0, "/etc/passwd"}};
    h__signed(c, m, extra, 1);
}

static void h_hardlink(const struct hostile_ctx *c)
{
    json_t *m = h__manifest();
    json_array_append_new(json_object_get(m, "files"), h__file("model/hard", "", 0));
    struct hent extra[] = {{"model/hard", T_HARDLINK, NULL, 0, "/etc/shadow"}};
    h__signed(c, m, extra, 1);
}

static void h_device_node(const struct hostile_ctx *c)
{
    struct hent extra[] = {{"model/null", T_CHAR, NULL, 0, NULL}};
    h__signed(c, h__manifest(), extra, 1);
}

static void h_fifo(const struct hostile_ctx *c)
{
    struct hent extra[] = {{"model/pipe", T_FIFO, NULL, 0, NULL}};
    h__signed(c, h__manifest(), extra, 1);
}

static void h_directory_entry(const struct hostile_ctx *c)
{
    struct hent extra[] = {{"model/sub", T_DIR, NULL, 0, NULL}};
    h__signed(c, h__manifest(), extra, 1);
}

/* ---- manifest content ---- */

static void h_manifest_too_large(const struct hostile_ctx *c)
{
    json_t *m = h__manifest();
    char *pad = mf_xmalloc(MF_MANIFEST_MAX + 1);
    memset(pad, 'x', MF_MANIFEST_MAX);
    pad[MF_MANIFEST_MAX] = '\0';
    json_object_set_new(json_object_get(m, "metadata"), "padding", json_string(pad));
    free(pad);
    h__signed(c, m, NULL, 0);
}

static void h_over_disk_budget(const struct hostile_ctx *c)
{
    json_t *m = h__manifest();
    /* Claims a 6 GiB model; the verifier runs with a 1 GiB budget. */
    json_object_set_new(json_array_get(json_object_get(m, "files"), 2), "size",
                        json_integer((json_int_t)6 << 30));
    h__signed(c, m, NULL, 0);
}

static void h_sign_text(const struct hostile_ctx *c, const char *man)
{
    char *sig = h__sign(man, &c->trusted);
    h__package(c, man, sig, NULL, 0, false);
    free(sig);
}

static void h_invalid_json(const struct hostile_ctx *c)
{
    h_sign_text(c, "{\"format_version\": \"1.0\", \"model\": \"hostile\",");
}

static void h_wrong_types(const struct hostile_ctx *c)
{
    json_t *m = h__manifest();
    json_object_set_new(m, "version", json_integer(2));
    h__signed(c, m, NULL, 0);
}

static void h_negative_size(const struct hostile_ctx *c)
{
    json_t *m = h__manifest();
    json_object_set_new(json_array_get(json_object_get(m, "files"), 0), "size", json_integer(-1));
    h__signed(c, m, NULL, 0);
}

static void h_higher_major(const struct hostile_ctx *c)
{
    json_t *m = h__manifest();
    json_object_set_new(m, "format_version", json_string("2.0"));
    json_object_set_new(m, "shards", json_array()); /* a 2.x-only field */
    h__signed(c, m, NULL, 0);
}

static void h_unknown_field_same_minor(const struct hostile_ctx *c)
{
    json_t *m = h__manifest();
    json_object_set_new(m, "entrypoint", json_string("typo"));
    h__signed(c, m, NULL, 0);
}

/* ---- not a package ---- */

static void h_write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n)
        abort();
    fclose(f);
}

static void h_empty_file(const struct hostile_ctx *c)
{
    h_write_bytes(c->path, "", 0);
}

static void h_not_archive(const struct hostile_ctx *c)
{
    static const char text[] = "this is a model, trust me\n";
    uint8_t junk[4096];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (uint8_t)text[i % (sizeof text - 1)];
    h_write_bytes(c->path, junk, sizeof junk);
}

static void h_zip_archive(const struct hostile_ctx *c)
{
    struct archive *a = archive_write_new();
    struct archive_entry *ae = archive_entry_new();
    archive_write_set_format_zip(a);
    if (archive_write_open_filename(a, c->path) != ARCHIVE_OK)
        abort();
    archive_entry_set_pathname(ae, "manifest.json");
    archive_entry_set_filetype(ae, AE_IFREG);
    archive_entry_set_size(ae, 2);
    archive_write_header(a, ae);
    archive_write_data(a, "{}", 2);
    archive_write_close(a);
    archive_write_free(a);
    archive_entry_free(ae);
}

/* A pax extended header ('x') announcing a 512 MiB body: a reader that
 * buffered it would exhaust a small device's memory. */
static void h_huge_pax_header(const struct hostile_ctx *c)
{
    uint8_t block[512 * 5] = {0};
    unsigned sum = 0;
    memcpy(block, "PaxHeader/manifest.json", 23);
    memcpy(block + 100, "0000644", 7);
    memcpy(block + 108, "0000000", 7);
    memcpy(block + 116, "0000000", 7);
    snprintf((char *)block + 124, 12, "%011o", 512u << 20);
    memcpy(block + 136, "00000000000", 11);
    block[156] = 'x';
    memcpy(block + 257,
           "ustar\0"
           "00",
           8);
    memset(block + 148, ' ', 8);
    for (int i = 0; i < 512; i++)
        sum += block[i];
    snprintf((char *)block + 148, 8, "%06o", sum);
    memcpy(block + 512, "30 path=manifest.json\n", 22);
    h_write_bytes(c->path, block, sizeof block);
}

/* ---- truncation: a valid package cut at an offset ---- */

static void h__truncate(const struct hostile_ctx *c, long keep, bool zstd)
{
    if (zstd)
        h_valid_zstd(c);
    else
        hostile_build_valid(c);
    struct stat st;
    if (stat(c->path, &st) != 0)
        abort();
    if (keep < 0)
        keep += st.st_size;
    if (truncate(c->path, keep) != 0)
        abort();
}

/* Layout of the valid package (512-byte tar blocks): manifest header at 0,
 * its data from 512, the sig header after it, then three payload entries. */
static void h_truncated_in_manifest(const struct hostile_ctx *c)
{
    h__truncate(c, 700, false);
}

static void h_truncated_in_first_header(const struct hostile_ctx *c)
{
    h__truncate(c, 300, false);
}

static void h_truncated_in_payload(const struct hostile_ctx *c)
{
    h__truncate(c, -2048, false); /* inside model/net.onnx, the last entry */
}

static void h_truncated_at_entry_boundary(const struct hostile_ctx *c)
{
    /* Cut right after eval/labels.npy: tar cannot tell, the manifest can. */
    h__truncate(c, -(4096 + 512 + 1024), false);
}

static void h_truncated_zstd(const struct hostile_ctx *c)
{
    h__truncate(c, -40, true);
}

#define KIB 1024ull
#define GIB (1024ull * 1024 * 1024)

const struct hostile_case hostile_cases[] = {
    {"bad-signature", h_bad_signature, MF_ERR_BAD_SIGNATURE, "does not match manifest.json", 0},
    {"tampered-manifest", h_tampered_manifest, MF_ERR_BAD_SIGNATURE, "does not match manifest.json",
     0},
    {"unknown-key", h_unknown_key, MF_ERR_UNKNOWN_KEY, "which is not trusted here", 0},
    {"unsigned", h_unsigned, MF_ERR_UNSIGNED, "has no signature", 0},
    /* 300 bytes do not even hold one tar header: nothing says it was a package. */
    {"truncated-inside-first-header", h_truncated_in_first_header, MF_ERR_NOT_PACKAGE,
     "not a tar or tar.zst archive", 0},
    {"truncated-in-manifest", h_truncated_in_manifest, MF_ERR_TRUNCATED, "ends early", 0},
    {"truncated-in-payload", h_truncated_in_payload, MF_ERR_TRUNCATED, "ends early", 0},
    {"truncated-at-entry-boundary", h_truncated_at_entry_boundary, MF_ERR_MISSING,
     "listed in the manifest but not in the archive", 0},
    {"truncated-zstd", h_truncated_zstd, MF_ERR_TRUNCATED, "ends early", 0},
    {"manifest-not-first", h_manifest_not_first, MF_ERR_LAYOUT,
     "entry 1 is 'model/net.onnx'; manifest.json must be entry 1", 0},
    {"no-signature-entry", h_no_signature_entry, MF_ERR_LAYOUT,
     "manifest.sig must be the second entry", 0},
    {"duplicate-entry", h_duplicate_entry, MF_ERR_DUPLICATE, "appears twice in the archive", 0},
    {"duplicate-manifest", h_duplicate_manifest, MF_ERR_DUPLICATE, "appears a second time", 0},
    {"unlisted-entry", h_unlisted_entry, MF_ERR_UNLISTED, "is not listed in the manifest", 0},
    {"listed-file-missing", h_listed_missing, MF_ERR_MISSING,
     "listed in the manifest but not in the archive", 0},
    {"size-mismatch", h_size_mismatch, MF_ERR_SIZE_MISMATCH, "the manifest says 4097", 0},
    {"hash-mismatch", h_hash_mismatch, MF_ERR_HASH_MISMATCH, "content hash is", 0},
    {"absolute-path", h_absolute_path, MF_ERR_UNSAFE_PATH, "is an absolute path", 0},
    {"dotdot-component", h_dotdot, MF_ERR_UNSAFE_PATH, "has a '..' component", 0},
    {"dotdot-in-manifest", h_dotdot_listed, MF_ERR_UNSAFE_PATH, "has a '..' component", 0},
    {"symlink", h_symlink, MF_ERR_ENTRY_TYPE, "is a symbolic link", 0},
    {"hardlink", h_hardlink, MF_ERR_ENTRY_TYPE, "is a hard link", 0},
    {"device-node", h_device_node, MF_ERR_ENTRY_TYPE, "is a device node", 0},
    {"fifo", h_fifo, MF_ERR_ENTRY_TYPE, "is a fifo", 0},
    {"directory-entry", h_directory_entry, MF_ERR_ENTRY_TYPE, "is a directory entry", 0},
    {"manifest-over-cap", h_manifest_too_large, MF_ERR_TOO_LARGE, "the cap is 1048576", 0},
    {"over-disk-budget", h_over_disk_budget, MF_ERR_DISK_BUDGET,
     "declares 6442451664 bytes of files; the disk budget is 1073741824", GIB},
    {"invalid-json", h_invalid_json, MF_ERR_PARSE, "invalid JSON", 0},
    {"wrong-json-type", h_wrong_types, MF_ERR_SCHEMA, "version: expected a string, got a number",
     0},
    {"negative-size", h_negative_size, MF_ERR_SCHEMA, "-1 is out of range", 0},
    {"higher-major-version", h_higher_major, MF_ERR_VERSION, "manifest format 2.0 is not supported",
     0},
    {"unknown-field-in-1.0", h_unknown_field_same_minor, MF_ERR_SCHEMA,
     "unknown field 'entrypoint'", 0},
    {"empty-file", h_empty_file, MF_ERR_NOT_PACKAGE, "the file is empty", 0},
    {"not-an-archive", h_not_archive, MF_ERR_NOT_PACKAGE, "not a tar or tar.zst archive", 0},
    {"zip-archive", h_zip_archive, MF_ERR_NOT_PACKAGE, "not a tar or tar.zst archive", 0},
    {"zstd-twice", h_zstd_twice, MF_ERR_NOT_PACKAGE, "compressed more than once", 0},
    {"huge-pax-header", h_huge_pax_header, MF_ERR_NOT_PACKAGE, "Special header too large", 0},
};

const size_t hostile_ncases = sizeof hostile_cases / sizeof hostile_cases[0];
