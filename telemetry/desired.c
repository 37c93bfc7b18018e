/* desired.c — desired-state messages: strict JSON, domain-separated Ed25519. */
#include "telemetry/desired.h"

#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/encode.h"
#include "common/json.h"
#include "common/mem.h"
#include "common/semver.h"
#include "packaging/manifest.h"

#define DESIRED_DEPTH   8
#define DESIRED_SEQ_MAX ((uint64_t)1 << 53) /* exact in every JSON reader */

void mf_desired_free(struct mf_desired *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n_models; i++) {
        free(d->models[i].name);
        free(d->models[i].version);
    }
    free(d->models);
    free(d->device);
    free(d);
}

static int desired__cmp(const void *a, const void *b)
{
    return strcmp(((const struct mf_desired_model *)a)->name,
                  ((const struct mf_desired_model *)b)->name);
}

/* A non-negative integer field within [min, max]. */
static enum mf_err desired__uint(json_t *o, const char *key, uint64_t min, uint64_t max,
                                 bool required, uint64_t *out, const char *where,
                                 struct mf_diag *diag)
{
    json_t *v = json_object_get(o, key);
    char path[96];
    snprintf(path, sizeof path, "%s%s", where, key);
    if (!v) {
        if (!required) {
            *out = 0;
            return MF_OK;
        }
        return mf_diag_set(diag, MF_ERR_SCHEMA, path, "is missing");
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) < min ||
        (uint64_t)json_integer_value(v) > max)
        return mf_diag_set(diag, MF_ERR_SCHEMA, path, "must be an integer from %llu to %llu",
                           (unsigned long long)min, (unsigned long long)max);
    *out = (uint64_t)json_integer_value(v);
    return MF_OK;
}

static const char *desired__str(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static enum mf_err desired__model(json_t *m, size_t i, struct mf_desired_model *out,
                                  struct mf_diag *diag)
{
    static const char *const fields[] = {"name", "version", "package", "size", NULL};
    char where[32];
    struct mf_semver sv;
    const char *name, *version, *package;
    enum mf_err rc;

    snprintf(where, sizeof where, "models[%zu].", i);
    if ((rc = mf_json_only(m, fields, diag)) != MF_OK) {
        mf_diag_prefix(diag, where);
        return rc;
    }
    name = desired__str(m, "name");
    version = desired__str(m, "version");
    package = desired__str(m, "package");
    if (!name || !mf_pkg_name_ok(name))
        return mf_diag_set(diag, MF_ERR_SCHEMA, where, "name must be a model name");
    if (!version || mf_semver_parse(version, &sv, NULL) != MF_OK)
        return mf_diag_set(diag, MF_ERR_SCHEMA, where, "version must be a semantic version");
    if (!package || strlen(package) != 2 * MF_HASH_BYTES ||
        strspn(package, "0123456789abcdef") != 2 * MF_HASH_BYTES)
        return mf_diag_set(diag, MF_ERR_SCHEMA, where,
                           "package must be a package id (64 lowercase hex digits)");
    if ((rc = desired__uint(m, "size", 1, (uint64_t)1 << 50, true, &out->size, where, diag)))
        return rc;
    out->name = mf_xstrdup(name);
    out->version = mf_xstrdup(version);
    memcpy(out->package, package, sizeof out->package);
    return MF_OK;
}

enum mf_err mf_desired_parse(const uint8_t *json, size_t len, struct mf_desired **out,
                             struct mf_diag *diag)
{
    static const char *const fields[] = {"device", "seq", "issued", "rollout", "models", NULL};
    struct mf_desired *d = NULL;
    json_t *root = NULL, *models, *m;
    const char *device, *issued;
    uint64_t rollout;
    enum mf_err rc;
    size_t i;

    if ((rc = mf_json_parse(json, len, DESIRED_DEPTH, &root, diag)) != MF_OK)
        return rc;
    if ((rc = mf_json_only(root, fields, diag)) != MF_OK)
        goto out;
    d = mf_xcalloc(1, sizeof *d);
    device = desired__str(root, "device");
    if (!device || !mf_pkg_name_ok(device)) {
        rc = mf_diag_set(diag, MF_ERR_SCHEMA, "device", "must be a device id");
        goto out;
    }
    d->device = mf_xstrdup(device);
    if ((rc = desired__uint(root, "seq", 1, DESIRED_SEQ_MAX, true, &d->seq, "", diag)) ||
        (rc = desired__uint(root, "rollout", 0, DESIRED_SEQ_MAX, false, &rollout, "", diag)))
        goto out;
    d->rollout = (int64_t)rollout;
    issued = desired__str(root, "issued");
    if (!issued || mf_time_parse(issued, &d->issued) != MF_OK) {
        rc = mf_diag_set(diag, MF_ERR_SCHEMA, "issued", "must be an RFC 3339 UTC time");
        goto out;
    }
    models = json_object_get(root, "models");
    if (!json_is_array(models) || json_array_size(models) > MF_DESIRED_MODELS) {
        rc = mf_diag_set(diag, MF_ERR_SCHEMA, "models", "must be an array of at most %d models",
                         MF_DESIRED_MODELS);
        goto out;
    }
    d->models = mf_xcalloc(json_array_size(models) + 1, sizeof *d->models);
    json_array_foreach(models, i, m)
    {
        if ((rc = desired__model(m, i, &d->models[i], diag)) != MF_OK)
            goto out;
        d->n_models++;
    }
    qsort(d->models, d->n_models, sizeof *d->models, desired__cmp);
    for (i = 1; i < d->n_models; i++)
        if (strcmp(d->models[i - 1].name, d->models[i].name) == 0) {
            rc = mf_diag_set(diag, MF_ERR_SCHEMA, "models", "model %s is listed twice",
                             d->models[i].name);
            goto out;
        }
    *out = d;
    d = NULL;
out:
    mf_desired_free(d);
    json_decref(root);
    return rc;
}

char *mf_desired_format(const struct mf_desired *d, size_t *len)
{
    char issued[MF_RFC3339_LEN];
    json_t *models = json_array(), *root;
    struct mf_desired_model *sorted = mf_xcalloc(d->n_models + 1, sizeof *sorted);
    char *text;

    memcpy(sorted, d->models, d->n_models * sizeof *sorted);
    qsort(sorted, d->n_models, sizeof *sorted, desired__cmp);
    for (size_t i = 0; i < d->n_models; i++)
        json_array_append_new(models,
                              json_pack("{s:s, s:s, s:s, s:I}", "name", sorted[i].name, "version",
                                        sorted[i].version, "package", sorted[i].package, "size",
                                        (json_int_t)sorted[i].size));
    free(sorted);
    mf_time_format(d->issued, issued);
    root = json_pack("{s:s, s:I, s:s, s:o}", "device", d->device, "seq", (json_int_t)d->seq,
                     "issued", issued, "models", models);
    if (d->rollout > 0)
        json_object_set_new(root, "rollout", json_integer(d->rollout));
    text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!text)
        abort();
    if (len)
        *len = strlen(text);
    return text;
}

static uint8_t *desired__message(const uint8_t *json, size_t len, size_t *mlen)
{
    size_t clen = strlen(MF_DESIRED_CONTEXT);
    uint8_t *m = mf_xmalloc(clen + len + 1);
    memcpy(m, MF_DESIRED_CONTEXT, clen);
    memcpy(m + clen, json, len);
    *mlen = clen + len;
    return m;
}

char *mf_desired_sign(const struct mf_desired *d, const struct mf_key_secret *k, size_t *len)
{
    size_t jlen, mlen;
    char *json = mf_desired_format(d, &jlen);
    uint8_t *m = desired__message((const uint8_t *)json, jlen, &mlen);
    uint8_t sig[crypto_sign_BYTES];
    char b64[sodium_base64_ENCODED_LEN(crypto_sign_BYTES, sodium_base64_VARIANT_ORIGINAL)];

    mf_crypto_init();
    crypto_sign_detached(sig, NULL, m, mlen, k->sk);
    mf_base64_encode(b64, sizeof b64, sig, sizeof sig);
    char *out = mf_xasprintf("%s\ned25519 %s %s\n%s", MF_DESIRED_MAGIC, k->pub.id, b64, json);
    if (len)
        *len = strlen(out);
    free(m);
    free(json);
    return out;
}

enum mf_err mf_desired_open(const uint8_t *msg, size_t len, const struct mf_keyring *trust,
                            const char *device, uint64_t last_seq, struct mf_desired **out,
                            char signer[MF_KEY_ID_LEN + 1], struct mf_diag *diag)
{
    const size_t ml = strlen(MF_DESIRED_MAGIC);
    const uint8_t *line2, *json, *nl;
    char key_id[MF_KEY_ID_LEN + 1], b64[128];
    uint8_t sig[crypto_sign_BYTES];
    size_t siglen = 0, mlen;
    struct mf_desired *d = NULL;
    const struct mf_key_pub *k;
    enum mf_err rc;

    if (len > MF_DESIRED_MAX)
        return mf_diag_set(diag, MF_ERR_TOO_LARGE, "desired", "message of %zu bytes (cap %u)", len,
                           MF_DESIRED_MAX);
    if (len < ml + 1 || memcmp(msg, MF_DESIRED_MAGIC, ml) != 0 || msg[ml] != '\n')
        return mf_diag_set(diag, MF_ERR_LAYOUT, "desired",
                           "does not start with \"" MF_DESIRED_MAGIC "\"");
    line2 = msg + ml + 1;
    nl = memchr(line2, '\n', len - (size_t)(line2 - msg));
    if (!nl || (size_t)(nl - line2) >= sizeof b64 + MF_KEY_ID_LEN + 16)
        return mf_diag_set(diag, MF_ERR_LAYOUT, "desired", "no signature line");
    char line[sizeof b64 + MF_KEY_ID_LEN + 16];
    memcpy(line, line2, (size_t)(nl - line2));
    line[nl - line2] = '\0';
    if (sscanf(line, "ed25519 %16s %127s", key_id, b64) != 2 || strlen(key_id) != MF_KEY_ID_LEN ||
        strlen(line) != 8 + MF_KEY_ID_LEN + 1 + strlen(b64) ||
        mf_base64_decode(sig, sizeof sig, &siglen, b64) != MF_OK || siglen != sizeof sig)
        return mf_diag_set(diag, MF_ERR_LAYOUT, "desired",
                           "the second line must be \"ed25519 <key-id> <base64 signature>\"");
    json = nl + 1;
    k = mf_keyring_find(trust, key_id);
    if (!k)
        return mf_diag_set(diag, MF_ERR_UNKNOWN_KEY, "desired",
                           "signed by key %s, which is not trusted here", key_id);
    mf_crypto_init();
    uint8_t *m = desired__message(json, len - (size_t)(json - msg), &mlen);
    int bad = crypto_sign_verify_detached(sig, m, mlen, k->pk);
    free(m);
    if (bad)
        return mf_diag_set(diag, MF_ERR_BAD_SIGNATURE, "desired",
                           "signature by key %s does not match the message", key_id);
    if ((rc = mf_desired_parse(json, len - (size_t)(json - msg), &d, diag)) != MF_OK) {
        mf_diag_prefix(diag, "desired");
        return rc;
    }
    if (strcmp(d->device, device) != 0) {
        rc = mf_diag_set(diag, MF_ERR_WRONG_TARGET, "desired", "addressed to device %s, this is %s",
                         d->device, device);
        goto fail;
    }
    if (d->seq <= last_seq) {
        rc = mf_diag_set(diag, MF_ERR_STALE, "desired",
                         "sequence %llu is not above the last one applied (%llu): replayed or old",
                         (unsigned long long)d->seq, (unsigned long long)last_seq);
        goto fail;
    }
    if (signer)
        memcpy(signer, k->id, MF_KEY_ID_LEN + 1);
    *out = d;
    return MF_OK;
fail:
    mf_desired_free(d);
    return rc;
}
