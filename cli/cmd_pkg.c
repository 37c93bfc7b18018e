/* cmd_pkg.c — `modelfleet sign | inspect | verify` on an existing package. */
#include <getopt.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "common/clock.h"
#include "common/config.h"
#include "common/encode.h"
#include "packaging/pkg.h"

/* ---- sign ---- */

int mf_cli_sign(int argc, char **argv)
{
    static const struct option opts[] = {
        {"key", required_argument, NULL, 'k'}, {"help", no_argument, NULL, 'h'}, {0}};
    const char *keypath = NULL;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "k:h", opts, NULL)) != -1) {
        if (c == 'k')
            keypath = optarg;
        else if (c == 'h') {
            printf("usage: modelfleet sign --key KEY PKG\n\n"
                   "Adds KEY's signature to PKG, or replaces an earlier one by the same key,\n"
                   "keeping other keys' signatures. The package is checked (every file hash)\n"
                   "and rewritten atomically; a package that does not match its manifest is\n"
                   "not signed.\n");
            return MF_EXIT_OK;
        } else
            return mf_cli_usage_error("sign", "unknown option");
    }
    if (!keypath || optind != argc - 1)
        return mf_cli_usage_error("sign", "expected --key KEY and one package");
    struct mf_key_secret key;
    struct mf_pkg_result res;
    struct mf_diag diag = {0};
    if (mf_key_secret_load(keypath, &key, &diag) != MF_OK)
        return mf_cli_fail("sign", &diag);
    enum mf_err err = mf_pkg_sign(argv[optind], &key, &res, &diag);
    sodium_memzero(&key, sizeof key);
    if (err != MF_OK)
        return mf_cli_fail("sign", &diag);
    printf("signed %s with key %s (%zu signature%s)\n", argv[optind], res.signer, res.sigs.n,
           res.sigs.n == 1 ? "" : "s");
    mf_pkg_result_free(&res);
    return MF_EXIT_OK;
}

/* ---- inspect ---- */

static json_t *inspect__json(const char *path, const struct mf_pkg_result *r, long long size)
{
    json_t *sigs = json_array();
    for (size_t i = 0; i < r->sigs.n; i++)
        json_array_append_new(
            sigs, json_pack("{s:s, s:s}", "algorithm", "ed25519", "key_id", r->sigs.v[i].key_id));
    uint8_t h[MF_HASH_BYTES];
    char hex[MF_HASH_HEX];
    mf_hash_bytes(h, r->manifest_bytes, r->manifest_len);
    mf_hex_encode(hex, h, sizeof h);
    return json_pack("{s:s, s:I, s:s, s:s, s:o, s:o, s:b}", "file", path, "size", (json_int_t)size,
                     "compression", r->zstd ? "zstd" : "none", "manifest_blake2b", hex, "manifest",
                     mf_manifest_to_json(r->manifest), "signatures", sigs, "verified", 0);
}

static void inspect__human(const char *path, const struct mf_pkg_result *r, long long size)
{
    const struct mf_manifest *m = r->manifest;
    char created[MF_RFC3339_LEN];
    mf_time_format(m->created, created);
    printf("package    %s (%lld bytes, %s)\n", path, size, r->zstd ? "tar+zstd" : "tar");
    printf("model      %s %s\n", m->model, m->version);
    printf("created    %s\n", created);
    printf("variant    %s on", m->runtime);
    for (size_t i = 0; i < m->hardware.n; i++)
        printf("%s%s", i ? ", " : " ", m->hardware.v[i]);
    printf("\nentry      %s\n", m->entry);
    printf("eval       %s, %s (%s, n=%llu)\n", m->eval.inputs, m->eval.labels, m->eval.metric,
           (unsigned long long)m->eval.n);
    printf("accept     accuracy >= %.4g, drop <= %.4g vs incumbent", m->thresholds.min_accuracy,
           m->thresholds.max_accuracy_drop);
    if (m->thresholds.latency_p99_ms > 0)
        printf(", p99 <= %.4g ms", m->thresholds.latency_p99_ms);
    if (m->thresholds.memory_bytes > 0)
        printf(", memory <= %llu bytes", (unsigned long long)m->thresholds.memory_bytes);
    printf("\nagent      >= %s\n", m->min_agent_version);
    if (r->sigs.n == 0)
        printf("signed     no\n");
    for (size_t i = 0; i < r->sigs.n; i++)
        printf("%s key %s (not checked; use 'modelfleet verify')\n",
               i ? "          " : "signed by ", r->sigs.v[i].key_id);
    printf("files      %-40s %12s  %s\n", "PATH", "SIZE", "BLAKE2B-256");
    for (size_t i = 0; i < m->n_files; i++) {
        char hex[MF_HASH_HEX];
        mf_hex_encode(hex, m->files[i].hash, sizeof m->files[i].hash);
        printf("           %-40s %12llu  %s\n", m->files[i].path,
               (unsigned long long)m->files[i].size, hex);
    }
    if (json_object_size(m->metadata)) {
        char *meta = json_dumps(m->metadata, JSON_COMPACT | JSON_SORT_KEYS);
        printf("metadata   %s\n", meta);
        free(meta);
    }
}

int mf_cli_inspect(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {0}};
    bool as_json = false;
    int c;
    optind = 0;
    while ((c = getopt_long(argc, argv, "jh", opts, NULL)) != -1) {
        if (c == 'j')
            as_json = true;
        else if (c == 'h') {
            printf("usage: modelfleet inspect [--json] PKG\n\n"
                   "Shows the manifest and the signatures' key ids. Nothing is verified:\n"
                   "use 'modelfleet verify' before trusting a package.\n");
            return MF_EXIT_OK;
        } else
            return mf_cli_usage_error("inspect", "unknown option");
    }
    if (optind != argc - 1)
        return mf_cli_usage_error("inspect", "expected one package");
    const char *path = argv[optind];
    struct mf_pkg_result res;
    struct mf_diag diag = {0};
    struct stat st;
    if (mf_pkg_inspect(path, &res, &diag) != MF_OK)
        return mf_cli_fail("inspect", &diag);
    long long size = stat(path, &st) == 0 ? (long long)st.st_size : -1;
    if (as_json) {
        json_t *j = inspect__json(path, &res, size);
        json_dumpf(j, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(12));
        putchar('\n');
        json_decref(j);
    } else {
        inspect__human(path, &res, size);
    }
    mf_pkg_result_free(&res);
    return MF_EXIT_OK;
}

/* ---- verify ---- */

int mf_cli_verify(int argc, char **argv)
{
    static const struct option opts[] = {{"pubkey", required_argument, NULL, 'p'},
                                         {"extract", required_argument, NULL, 'x'},
                                         {"disk-budget", required_argument, NULL, 'b'},
                                         {"quiet", no_argument, NULL, 'q'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    struct mf_keyring trust = {0};
    struct mf_pkg_opts popts = {.fsync = true};
    struct mf_pkg_result res;
    struct mf_diag diag = {0};
    const char *extract = NULL;
    bool quiet = false;
    int c, rc = MF_EXIT_FAIL;
    optind = 0;
    while ((c = getopt_long(argc, argv, "p:x:b:qh", opts, NULL)) != -1) {
        switch (c) {
        case 'p':
            if (mf_keyring_load(&trust, optarg, &diag) != MF_OK) {
                rc = mf_cli_fail("verify", &diag);
                goto out;
            }
            break;
        case 'x':
            extract = optarg;
            break;
        case 'b':
            if (mf_parse_size(optarg, &popts.disk_budget) != MF_OK) {
                rc = mf_cli_usage_error("verify", "--disk-budget '%s' is not a size", optarg);
                goto out;
            }
            break;
        case 'q':
            quiet = true;
            break;
        case 'h':
            printf("usage: modelfleet verify --pubkey PUB [--pubkey PUB2 ...] [--extract DIR]\n"
                   "                         [--disk-budget SIZE] [--quiet] PKG\n\n"
                   "Exits 0 only when a trusted key's signature holds over the manifest and\n"
                   "every file matches its listed size and BLAKE2b-256; otherwise prints one\n"
                   "line saying what failed and exits 1. --extract also writes the files into\n"
                   "DIR (which must not exist) in the same pass; DIR is removed on failure.\n");
            rc = MF_EXIT_OK;
            goto out;
        default:
            rc = mf_cli_usage_error("verify", "unknown option");
            goto out;
        }
    }
    if (trust.n == 0 || optind != argc - 1) {
        rc = mf_cli_usage_error("verify", "expected at least one --pubkey and one package");
        goto out;
    }
    enum mf_err err = extract ? mf_pkg_extract(argv[optind], &trust, extract, &popts, &res, &diag)
                              : mf_pkg_verify(argv[optind], &trust, &popts, &res, &diag);
    if (err != MF_OK) {
        rc = mf_cli_fail("verify", &diag);
        goto out;
    }
    if (!quiet)
        printf("OK %s %s %s: signed by %s, %zu files, %llu bytes verified%s%s\n", argv[optind],
               res.manifest->model, res.manifest->version, res.signer, res.manifest->n_files,
               (unsigned long long)res.payload_bytes, extract ? ", extracted to " : "",
               extract ? extract : "");
    mf_pkg_result_free(&res);
    rc = MF_EXIT_OK;
out:
    mf_keyring_free(&trust);
    return rc;
}
