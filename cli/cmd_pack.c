/* cmd_pack.c — `modelfleet pack`: options and/or a spec file of the same
 * keys (`key = value`) become a struct mf_pack_input. A key given on the
 * command line replaces the spec's value (all its values for a repeatable
 * key). Source paths in a spec are relative to the spec's directory. */
#include <getopt.h>
#include <libgen.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "common/clock.h"
#include "common/config.h"
#include "common/mem.h"
#include "packaging/pack.h"

struct pack_opts {
    char *name, *version, *runtime, *model, *eval_inputs, *eval_labels, *min_agent, *created;
    char *key, *out;
    struct mf_strlist hardware, files, meta;
    double min_accuracy, max_drop, latency_p99_ms;
    uint64_t memory;
    bool zstd;
};

#define PO(f) offsetof(struct pack_opts, f)
static const struct mf_cfg_key pack_keys[] = {
    {"name", MF_CFG_STR, PO(name), NULL, 0, 0, "model name"},
    {"version", MF_CFG_STR, PO(version), NULL, 0, 0, "semantic version, e.g. 1.2.0"},
    {"hardware", MF_CFG_LIST, PO(hardware), NULL, 0, 0, "hardware classes, comma-separated"},
    {"runtime", MF_CFG_STR, PO(runtime), "onnx", 0, 0, "runtime: onnx, tensorrt, tflite, ..."},
    {"model", MF_CFG_STR, PO(model), NULL, 0, 0, "model file (stored as model/<basename>)"},
    {"eval-inputs", MF_CFG_STR, PO(eval_inputs), NULL, 0, 0, "evaluation inputs .npy"},
    {"eval-labels", MF_CFG_STR, PO(eval_labels), NULL, 0, 0, "evaluation labels .npy"},
    {"file", MF_CFG_MULTI, PO(files), NULL, 0, 0, "extra file PKGPATH=SOURCE (repeatable)"},
    {"min-accuracy", MF_CFG_DOUBLE, PO(min_accuracy), NULL, 0, 1, "accuracy floor, 0..1"},
    {"max-accuracy-drop", MF_CFG_DOUBLE, PO(max_drop), "0.01", 0, 1,
     "largest accuracy drop vs the incumbent"},
    {"latency-p99-ms", MF_CFG_DOUBLE, PO(latency_p99_ms), NULL, 0, 3.6e6, "p99 latency budget"},
    {"memory", MF_CFG_SIZE, PO(memory), NULL, 0, 0, "peak memory budget, e.g. 256M"},
    {"min-agent-version", MF_CFG_STR, PO(min_agent), "0.1.0", 0, 0, "oldest agent allowed"},
    {"meta", MF_CFG_MULTI, PO(meta), NULL, 0, 0, "metadata KEY=VALUE (repeatable)"},
    {"created", MF_CFG_STR, PO(created), NULL, 0, 0, "creation time, RFC 3339 UTC"},
    {"zstd", MF_CFG_BOOL, PO(zstd), "false", 0, 0, "compress with zstd"},
    {"key", MF_CFG_STR, PO(key), NULL, 0, 0, "secret key to sign with"},
    {"out", MF_CFG_STR, PO(out), NULL, 0, 0, "output package"},
    {NULL, 0, 0, NULL, 0, 0, NULL},
};

static void pack__help(void)
{
    printf("usage: modelfleet pack [--spec FILE] [options] --out PKG\n\n"
           "Builds a model package. Every option can also be a 'key = value' line of the spec\n"
           "file (without the dashes); a command-line option replaces the spec's value.\n"
           "Repeatable: --file, --meta. Flags: --zstd.\n\n");
    for (const struct mf_cfg_key *k = pack_keys; k->name; k++)
        printf("  --%-18s %s%s%s%s\n", k->name, k->help, k->def ? " [" : "", k->def ? k->def : "",
               k->def ? "]" : "");
    printf("\nThe evaluation set size n is read from the labels .npy. 'created' defaults to\n"
           "$SOURCE_DATE_EPOCH, else the newest source file's mtime, so the same inputs give\n"
           "the same bytes.\n");
}

/* Makes a spec-relative path relative to the working directory. */
static void pack__rebase(char **path, const char *dir)
{
    if (!*path || (*path)[0] == '/' || strcmp(dir, ".") == 0)
        return;
    char *p = mf_xasprintf("%s/%s", dir, *path);
    free(*path);
    *path = p;
}

static enum mf_err pack__load_spec(struct pack_opts *o, const char *spec, struct mf_diag *diag)
{
    enum mf_err err = mf_cfg_load(pack_keys, o, spec, diag);
    if (err != MF_OK)
        return err;
    char *copy = mf_xstrdup(spec);
    const char *dir = dirname(copy);
    pack__rebase(&o->model, dir);
    pack__rebase(&o->eval_inputs, dir);
    pack__rebase(&o->eval_labels, dir);
    pack__rebase(&o->key, dir);
    for (size_t i = 0; i < o->files.n; i++) {
        char *eq = strchr(o->files.v[i], '=');
        if (!eq || eq[1] == '/')
            continue;
        char *full =
            mf_xasprintf("%.*s=%s/%s", (int)(eq - o->files.v[i]), o->files.v[i], dir, eq + 1);
        free(o->files.v[i]);
        o->files.v[i] = full;
    }
    free(copy);
    return MF_OK;
}

static char *pack__under(const char *dir, const char *source)
{
    char *copy = mf_xstrdup(source);
    char *p = mf_xasprintf("%s/%s", dir, basename(copy));
    free(copy);
    return p;
}

static int pack__run(struct pack_opts *o)
{
    struct mf_diag diag = {0};
    struct mf_pack_input in = {0};
    struct mf_pack_file *files = NULL;
    struct mf_key_secret key;
    struct mf_manifest *m = NULL;
    char *paths[3] = {NULL, NULL, NULL};
    json_t *meta = json_object();
    int rc = MF_EXIT_FAIL;
    size_t n = 0;

    if (!o->name || !o->version || !o->model || !o->eval_inputs || !o->eval_labels ||
        !o->hardware.n || !o->out) {
        rc = mf_cli_usage_error("pack", "--name, --version, --hardware, --model, --eval-inputs, "
                                        "--eval-labels and --out are required");
        goto out;
    }
    if (o->min_accuracy < 0) {
        rc = mf_cli_usage_error("pack", "--min-accuracy is required (the accuracy floor on the "
                                        "evaluation set, 0..1)");
        goto out;
    }
    files = mf_xcalloc(3 + o->files.n, sizeof *files);
    paths[0] = pack__under("model", o->model);
    paths[1] = pack__under("eval", o->eval_inputs);
    paths[2] = pack__under("eval", o->eval_labels);
    files[n++] = (struct mf_pack_file){paths[0], o->model};
    files[n++] = (struct mf_pack_file){paths[1], o->eval_inputs};
    files[n++] = (struct mf_pack_file){paths[2], o->eval_labels};
    for (size_t i = 0; i < o->files.n; i++) {
        char *eq = strchr(o->files.v[i], '=');
        if (!eq || eq == o->files.v[i] || !eq[1]) {
            rc = mf_cli_usage_error("pack", "--file '%s': expected PKGPATH=SOURCE", o->files.v[i]);
            goto out;
        }
        *eq = '\0';
        files[n++] = (struct mf_pack_file){o->files.v[i], eq + 1};
    }
    for (size_t i = 0; i < o->meta.n; i++) {
        char *eq = strchr(o->meta.v[i], '=');
        if (!eq || eq == o->meta.v[i]) {
            rc = mf_cli_usage_error("pack", "--meta '%s': expected KEY=VALUE", o->meta.v[i]);
            goto out;
        }
        *eq = '\0';
        if (json_object_set_new(meta, o->meta.v[i], json_string(eq + 1)) != 0) {
            rc = mf_cli_usage_error("pack", "--meta '%s': not valid UTF-8", o->meta.v[i]);
            goto out;
        }
    }
    in.created = MF_PACK_CREATED_UNSET;
    if (o->created && mf_time_parse(o->created, &in.created) != MF_OK) {
        rc = mf_cli_usage_error("pack", "--created '%s': expected e.g. 2026-01-31T12:00:00Z",
                                o->created);
        goto out;
    }
    const char *sde = getenv("SOURCE_DATE_EPOCH");
    if (!o->created && sde && *sde) {
        char *end;
        long long t = strtoll(sde, &end, 10);
        if (*end || t < 0) {
            rc = mf_cli_usage_error("pack", "SOURCE_DATE_EPOCH '%s' is not a number", sde);
            goto out;
        }
        in.created = t;
    }
    if (o->key && mf_key_secret_load(o->key, &key, &diag) != MF_OK) {
        rc = mf_cli_fail("pack", &diag);
        goto out;
    }
    in.model = o->name;
    in.version = o->version;
    in.runtime = o->runtime;
    in.min_agent_version = o->min_agent;
    in.hardware = &o->hardware;
    in.entry = paths[0];
    in.eval_inputs = paths[1];
    in.eval_labels = paths[2];
    in.min_accuracy = o->min_accuracy;
    in.max_accuracy_drop = o->max_drop;
    in.latency_p99_ms = o->latency_p99_ms;
    in.memory_bytes = o->memory;
    in.metadata = meta;
    in.files = files;
    in.n_files = n;
    in.zstd = o->zstd;
    in.key = o->key ? &key : NULL;
    enum mf_err err = mf_pkg_pack(&in, o->out, &m, &diag);
    if (o->key)
        sodium_memzero(key.sk, sizeof key.sk);
    if (err != MF_OK) {
        rc = mf_cli_fail("pack", &diag);
        goto out;
    }
    printf("packed %s %s (%s on", m->model, m->version, m->runtime);
    for (size_t i = 0; i < m->hardware.n; i++)
        printf("%s%s", i ? ", " : " ", m->hardware.v[i]);
    printf(") -> %s: %zu files, %llu bytes, %s%s\n", o->out, m->n_files,
           (unsigned long long)mf_manifest_payload_bytes(m), o->key ? "signed by " : "unsigned",
           o->key ? key.pub.id : "");
    rc = MF_EXIT_OK;
out:
    mf_manifest_free(m);
    json_decref(meta);
    for (int i = 0; i < 3; i++)
        free(paths[i]);
    free(files);
    return rc;
}

int mf_cli_pack(int argc, char **argv)
{
    /* Every table key is also a long option, plus --spec and --help. */
    struct option all[sizeof pack_keys / sizeof pack_keys[0] + 2];
    size_t nk = 0;
    for (; pack_keys[nk].name; nk++)
        all[nk] = (struct option){pack_keys[nk].name,
                                  pack_keys[nk].type == MF_CFG_BOOL ? optional_argument
                                                                    : required_argument,
                                  NULL, 1000 + (int)nk};
    all[nk] = (struct option){"spec", required_argument, NULL, 's'};
    all[nk + 1] = (struct option){"help", no_argument, NULL, 'h'};
    all[nk + 2] = (struct option){0};

    struct pack_opts o;
    struct mf_diag diag = {0};
    const char *spec = NULL;
    int c, rc;
    /* First pass: find --spec and --help. */
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "o:h", all, NULL)) != -1) {
        if (c == 'h') {
            pack__help();
            return MF_EXIT_OK;
        }
        if (c == 's')
            spec = optarg;
    }
    opterr = 1;
    mf_cfg_defaults(pack_keys, &o);
    o.min_accuracy = -1; /* required: no silent default for the accuracy floor */
    if (spec && pack__load_spec(&o, spec, &diag) != MF_OK) {
        rc = mf_cli_fail("pack", &diag);
        goto out;
    }
    /* Second pass: options replace the spec's values. */
    bool cleared[sizeof pack_keys / sizeof pack_keys[0]] = {false};
    optind = 0;
    while ((c = getopt_long(argc, argv, "o:h", all, NULL)) != -1) {
        const char *key, *val;
        if (c == 's')
            continue;
        if (c == 'o') {
            key = "out";
            val = optarg;
        } else if (c >= 1000 && c < 1000 + (int)nk) {
            const struct mf_cfg_key *k = &pack_keys[c - 1000];
            key = k->name;
            val = optarg ? optarg : (k->type == MF_CFG_BOOL ? "true" : "");
            if ((k->type == MF_CFG_LIST || k->type == MF_CFG_MULTI) && !cleared[c - 1000]) {
                mf_strlist_free((struct mf_strlist *)((char *)&o + k->offset));
                cleared[c - 1000] = true;
            }
        } else {
            rc = mf_cli_usage_error("pack", "unknown option");
            goto out;
        }
        if (mf_cfg_set(pack_keys, &o, key, val, &diag) != MF_OK) {
            mf_diag_prefix(&diag, "option");
            rc = mf_cli_fail("pack", &diag);
            goto out;
        }
    }
    if (optind != argc) {
        rc = mf_cli_usage_error("pack", "unexpected argument '%s'", argv[optind]);
        goto out;
    }
    rc = pack__run(&o);
out:
    mf_cfg_free(pack_keys, &o);
    return rc;
}
