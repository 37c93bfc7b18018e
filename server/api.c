/* api.c — the /api/v1 handlers: check the request's values, call the store,
 * answer. Every value from the request is validated here before it reaches
 * SQL (as a parameter) or the file system (only blob ids, 64 hex digits). */
#include "server/api.h"

#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/encode.h"
#include "common/json.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/semver.h"
#include "packaging/pkg.h"
#include "server/api_rollouts.h"
#include "server/rollouts.h"
#include "server/range.h"
#include "server/store.h"

/* Sends a store result: JSON text with `status`, or the error. */
static void api__reply(struct mf_http_req *req, enum mf_err rc, unsigned status, char *json,
                       const struct mf_diag *diag)
{
    if (rc == MF_OK)
        mf_http_json_text(req, status, json, strlen(json));
    else
        mf_http_error_diag(req, diag);
    free(json);
}

static bool api__version_query(struct mf_http_req *req, const char **out)
{
    struct mf_semver v;
    *out = mf_http_query(req, "version");
    if (*out && mf_semver_parse(*out, &v, NULL) != MF_OK) {
        mf_http_error(req, 400, "bad_request", "version must be a semantic version such as 1.2.0");
        return false;
    }
    return true;
}

/* ---- health, keys ------------------------------------------------------- */

static void api__healthz(struct mf_http_req *req)
{
    bool up = mf_db_ping(req->db);
    mf_http_json(req, up ? 200 : 503,
                 json_pack("{s:s, s:s, s:s}", "status", up ? "ok" : "unavailable", "database",
                           up ? "ok" : "unavailable", "version", MF_VERSION));
    if (!up)
        mf_http_header(req, MHD_HTTP_HEADER_RETRY_AFTER, "1");
}

static void api__keys(struct mf_http_req *req)
{
    struct mf_diag diag = {0};
    char *json = NULL;
    enum mf_err rc = mf_store_keys(req->db, req->srv->key.pub.id, &json, &diag);
    api__reply(req, rc, 200, json, &diag);
}

/* ---- packages ----------------------------------------------------------- */

static void api__refused(struct mf_http_req *req, const struct mf_diag *diag)
{
    /* The verifier names the file it read: the upload's temp path, which is
     * the server's business. Keep only the entry inside the package. */
    const char *where = diag->where, *tmp = req->upload_path;
    size_t tl = tmp ? strlen(tmp) : 0;
    char msg[MF_DIAG_STR_MAX];

    if (tl && strncmp(where, tmp, tl) == 0) {
        where += tl;
        while (*where == ':' || *where == ' ')
            where++;
    }
    char entry[MF_DIAG_WHERE];
    snprintf(entry, sizeof entry, "%s", where);
    mf_utf8_sanitize(entry); /* entry names come from the archive */
    snprintf(msg, sizeof msg, "%s%s%s", entry, *entry ? ": " : "", diag->what);
    mf_utf8_sanitize(msg);
    req->log_error = "package_refused";
    json_t *body = json_pack("{s:s, s:s, s:s}", "error", "package_refused", "reason",
                             mf_errname(diag->err), "message", msg);
    if (*entry)
        json_object_set_new(body, "where", json_string(entry));
    mf_http_json(req, 422, body);
}

/* Checks the publisher signature when publisher keys are configured.
 * *publisher gets the signer's key id or "" (unsigned / unknown signer, allowed
 * unless require_publisher_signature). false (response set) on refusal. */
static bool api__publisher(struct mf_http_req *req, char publisher[MF_KEY_ID_LEN + 1])
{
    const struct mf_server *s = req->srv;
    struct mf_pkg_result res = {0};
    struct mf_diag diag = {0};
    enum mf_err rc;

    publisher[0] = '\0';
    if (s->publishers.n == 0)
        return true;
    rc = mf_pkg_verify(req->upload_path, &s->publishers, NULL, &res, &diag);
    if (rc == MF_OK) {
        snprintf(publisher, MF_KEY_ID_LEN + 1, "%s", res.signer);
        mf_pkg_result_free(&res);
        return true;
    }
    if ((rc == MF_ERR_UNSIGNED || rc == MF_ERR_UNKNOWN_KEY) && !s->cfg.require_publisher_signature)
        return true;
    if (rc == MF_ERR_UNKNOWN_KEY || rc == MF_ERR_UNSIGNED)
        mf_diag_set(&diag, rc, diag.where,
                    "this server requires a signature by a trusted publisher key (%s)",
                    mf_strerror(rc));
    if (rc == MF_ERR_IO)
        mf_http_error_diag(req, &diag);
    else
        api__refused(req, &diag);
    return false;
}

static void api__push(struct mf_http_req *req)
{
    struct mf_server *s = req->srv;
    struct mf_pkg_result res = {0};
    struct mf_diag diag = {0};
    uint8_t h[MF_HASH_BYTES];
    char upload_hex[MF_HASH_HEX], id[MF_HASH_HEX], publisher[MF_KEY_ID_LEN + 1];
    char *json = NULL, *manifest = NULL;
    uint64_t blob_size = 0;
    bool created = false;
    enum mf_err rc;

    mf_hash_final(&req->upload_hash, h);
    mf_hex_encode(upload_hex, h, sizeof h);
    close(req->upload_fd);
    req->upload_fd = -1;
    if (req->upload_size == 0) {
        mf_diag_set(&diag, MF_ERR_NOT_PACKAGE, "", "the body is empty; send the .mfpkg bytes");
        api__refused(req, &diag);
        return;
    }
    /* The same bytes again (as pushed, or the signed blob itself): same answer. */
    rc = mf_store_package_by_hash(req->db, upload_hex, &json, &diag);
    if (rc != MF_ERR_NOT_FOUND) {
        api__reply(req, rc, 200, json, &diag);
        return;
    }
    if (!api__publisher(req, publisher))
        return;
    /* Signing makes one verifying pass: layout, manifest, every hash. */
    rc = mf_pkg_sign(req->upload_path, &s->key, &res, &diag);
    if (rc != MF_OK) {
        if (rc == MF_ERR_IO)
            mf_http_error_diag(req, &diag);
        else
            api__refused(req, &diag);
        return;
    }
    rc = mf_hash_file(req->upload_path, h, &blob_size, &diag);
    if (rc != MF_OK)
        goto fail;
    mf_hex_encode(id, h, sizeof h);
    rc = mf_blobs_commit(&s->blobs, req->upload_path, id, &created, &diag);
    if (rc != MF_OK)
        goto fail;
    free(req->upload_path);
    req->upload_path = NULL;

    /* The signed manifest text itself: jsonb keeps its numbers exact. */
    manifest = mf_xstrndup((const char *)res.manifest_bytes, res.manifest_len);
    struct mf_package_row row = {
        .id = id,
        .upload_hash = upload_hex,
        .manifest = res.manifest,
        .manifest_json = manifest,
        .size = blob_size,
        .payload_bytes = res.payload_bytes,
        .server_key = s->key.pub.id,
        .publisher_key = publisher[0] ? publisher : NULL,
        .pushed_by = req->who.name,
    };
    rc = mf_store_key_register(req->db, &s->key.pub, &diag);
    if (rc == MF_OK)
        rc = mf_store_package_insert(req->db, &row, &json, &diag);
    if (rc == MF_OK) {
        mf_log(MF_LOG_INFO, "package stored model=%s version=%s id=%s by=%s", res.manifest->model,
               res.manifest->version, id, req->who.name);
        mf_http_json_text(req, 201, json, strlen(json));
        goto out;
    }
    /* Only a conflict is known to have rolled back with no row for this id;
     * after any other failure the commit may have happened. A blob no row
     * names is harmless (content-addressed, never listed). */
    if (created && rc == MF_ERR_CONFLICT)
        mf_blobs_remove(&s->blobs, id);
    if (rc == MF_ERR_EXISTS) { /* the same bytes won a race with us */
        rc = mf_store_package_get(req->db, id, &json, &diag);
        api__reply(req, rc, 200, json, &diag);
        json = NULL;
        goto out;
    }
    if (rc == MF_ERR_CONFLICT) {
        req->log_error = "conflict";
        mf_http_json(req, 409,
                     json_pack("{s:s, s:s, s:s}", "error", "conflict", "message", diag.what,
                               "existing", diag.where));
        goto out;
    }
fail:
    mf_http_error_diag(req, &diag);
out:
    free(json);
    free(manifest);
    mf_pkg_result_free(&res);
}

static void api__packages(struct mf_http_req *req)
{
    struct mf_diag diag = {0};
    const char *model, *version, *after = mf_http_query(req, "after");
    char *json = NULL;
    int limit;

    if (!mf_http_query_limit(req, &limit) || !mf_http_query_name(req, "model", &model) ||
        !api__version_query(req, &version))
        return;
    if (after && !mf_blobs_id_ok(after)) {
        mf_http_error(req, 400, "bad_request", "after must be a package id (64 hex digits)");
        return;
    }
    enum mf_err rc = mf_store_packages(req->db, model, version, limit, after, &json, &diag);
    api__reply(req, rc, 200, json, &diag);
}

static void api__package(struct mf_http_req *req)
{
    struct mf_diag diag = {0};
    char *json = NULL;
    enum mf_err rc = MF_ERR_NOT_FOUND;

    if (mf_blobs_id_ok(req->param[0]))
        rc = mf_store_package_get(req->db, req->param[0], &json, &diag);
    if (rc == MF_ERR_NOT_FOUND)
        mf_diag_set(&diag, rc, "", "no package with id %.80s", req->param[0]);
    api__reply(req, rc, 200, json, &diag);
}

/* If-None-Match: "*" or a comma-separated list of entity tags, each maybe
 * W/-prefixed (weak comparison, RFC 9110 13.1.2). */
static bool api__etag_match(const char *h, const char *etag)
{
    size_t el = strlen(etag);
    if (!h)
        return false;
    while (*h) {
        while (*h == ' ' || *h == '\t' || *h == ',')
            h++;
        if (*h == '*')
            return true;
        if (strncmp(h, "W/", 2) == 0)
            h += 2;
        size_t n = strcspn(h, ",");
        while (n && (h[n - 1] == ' ' || h[n - 1] == '\t'))
            n--;
        if (n == el && strncmp(h, etag, el) == 0)
            return true;
        h += strcspn(h, ",");
    }
    return false;
}

static void api__blob(struct mf_http_req *req)
{
    const char *id = req->param[0];
    struct mf_diag diag = {0};
    char *size_text = NULL, *path = NULL, etag[MF_HASH_HEX + 2], crange[96];
    const char *p[1] = {id};
    uint64_t start = 0, len = 0;
    struct stat st;
    enum mf_err rc = MF_ERR_NOT_FOUND;
    int fd = -1;

    if (mf_blobs_id_ok(id))
        rc = mf_store_json(req->db, "SELECT size::text FROM packages WHERE id = $1", 1, p,
                           &size_text, &diag);
    if (rc != MF_OK) {
        if (rc == MF_ERR_NOT_FOUND)
            mf_diag_set(&diag, rc, "", "no package with id %.80s", id);
        mf_http_error_diag(req, &diag);
        return;
    }
    free(size_text);
    path = mf_blobs_path(&req->srv->blobs, id);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        mf_log(MF_LOG_ERROR, "blob of package %s is missing: %s: %s", id, path, strerror(errno));
        mf_http_error(req, 500, "internal", "the package blob is missing on the server");
        if (fd >= 0)
            close(fd);
        free(path);
        return;
    }
    free(path);
    snprintf(etag, sizeof etag, "\"%s\"", id);
    if (api__etag_match(mf_http_header_in(req, MHD_HTTP_HEADER_IF_NONE_MATCH), etag)) {
        close(fd);
        mf_http_empty(req, 304);
        mf_http_header(req, MHD_HTTP_HEADER_ETAG, etag);
        mf_http_header(req, MHD_HTTP_HEADER_CACHE_CONTROL, "private, max-age=31536000, immutable");
        return;
    }
    const char *range = mf_http_header_in(req, MHD_HTTP_HEADER_RANGE);
    const char *if_range = mf_http_header_in(req, MHD_HTTP_HEADER_IF_RANGE);
    if (if_range && strcmp(if_range, etag) != 0)
        range = NULL; /* the client's partial copy is of other bytes: send everything */
    switch (mf_range_parse(range, (uint64_t)st.st_size, &start, &len)) {
    case MF_RANGE_NONE:
        mf_http_file(req, 200, fd, 0, (uint64_t)st.st_size);
        break;
    case MF_RANGE_PARTIAL:
        mf_http_file(req, 206, fd, start, len);
        snprintf(crange, sizeof crange, "bytes %llu-%llu/%llu", (unsigned long long)start,
                 (unsigned long long)(start + len - 1), (unsigned long long)st.st_size);
        mf_http_header(req, MHD_HTTP_HEADER_CONTENT_RANGE, crange);
        break;
    case MF_RANGE_UNSATISFIABLE:
        close(fd);
        mf_http_error(req, 416, "range_not_satisfiable",
                      "the range %.64s is outside the blob of %llu bytes", range,
                      (unsigned long long)st.st_size);
        snprintf(crange, sizeof crange, "bytes */%llu", (unsigned long long)st.st_size);
        mf_http_header(req, MHD_HTTP_HEADER_CONTENT_RANGE, crange);
        return;
    }
    mf_http_header(req, MHD_HTTP_HEADER_ETAG, etag);
    mf_http_header(req, MHD_HTTP_HEADER_ACCEPT_RANGES, "bytes");
    mf_http_header(req, MHD_HTTP_HEADER_CONTENT_TYPE, "application/vnd.modelfleet.package");
    mf_http_header(req, MHD_HTTP_HEADER_CACHE_CONTROL, "private, max-age=31536000, immutable");
}

/* ---- models ------------------------------------------------------------- */

static int api__semver_desc(const void *a, const void *b)
{
    const char *va = json_string_value(json_object_get(*(json_t *const *)a, "version"));
    const char *vb = json_string_value(json_object_get(*(json_t *const *)b, "version"));
    struct mf_semver sa, sb;
    if (!va || !vb || mf_semver_parse(va, &sa, NULL) != MF_OK ||
        mf_semver_parse(vb, &sb, NULL) != MF_OK)
        return 0;
    return mf_semver_cmp(&sb, &sa);
}

/* Sorts the objects of arr by their "version", highest first. */
static void api__sort_versions(json_t *arr)
{
    size_t n = json_array_size(arr);
    json_t **v = mf_xcalloc(n ? n : 1, sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = json_incref(json_array_get(arr, i));
    qsort(v, n, sizeof *v, api__semver_desc);
    json_array_clear(arr);
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, v[i]);
    free(v);
}

static void api__models(struct mf_http_req *req)
{
    struct mf_diag diag = {0};
    char *text = NULL;
    enum mf_err rc = mf_store_models(req->db, &text, &diag);
    if (rc != MF_OK) {
        api__reply(req, rc, 200, text, &diag);
        return;
    }
    json_t *root = json_loads(text, 0, NULL), *m;
    size_t i;
    free(text);
    json_array_foreach(json_object_get(root, "models"), i, m)
    {
        json_t *vs = json_object_get(m, "versions"), *wrapped = json_array(), *v;
        size_t j;
        json_array_foreach(vs, j, v)
            json_array_append_new(wrapped, json_pack("{s:O}", "version", v));
        api__sort_versions(wrapped);
        json_object_set_new(m, "latest",
                            json_copy(json_object_get(json_array_get(wrapped, 0), "version")));
        json_object_set_new(m, "versions", json_integer((json_int_t)json_array_size(wrapped)));
        json_decref(wrapped);
    }
    mf_http_json(req, 200, root);
}

static void api__model(struct mf_http_req *req)
{
    struct mf_diag diag = {0};
    char *text = NULL;
    enum mf_err rc = MF_ERR_NOT_FOUND;

    if (mf_pkg_name_ok(req->param[0]))
        rc = mf_store_model(req->db, req->param[0], &text, &diag);
    if (rc != MF_OK) {
        if (rc == MF_ERR_NOT_FOUND)
            mf_diag_set(&diag, rc, "", "no model named %.80s", req->param[0]);
        api__reply(req, rc, 200, text, &diag);
        return;
    }
    json_t *root = json_loads(text, 0, NULL);
    free(text);
    api__sort_versions(json_object_get(root, "versions"));
    mf_http_json(req, 200, root);
}

static void api__model_version(struct mf_http_req *req)
{
    struct mf_diag diag = {0};
    struct mf_semver v;
    char *json = NULL;
    enum mf_err rc = MF_ERR_NOT_FOUND;

    if (mf_pkg_name_ok(req->param[0]) && mf_semver_parse(req->param[1], &v, NULL) == MF_OK)
        rc = mf_store_model_version(req->db, req->param[0], req->param[1], &json, &diag);
    if (rc == MF_ERR_NOT_FOUND)
        mf_diag_set(&diag, rc, "", "no version %.64s of model %.64s", req->param[1], req->param[0]);
    api__reply(req, rc, 200, json, &diag);
}

/* ---- tokens ------------------------------------------------------------- */

/* An optional positive integer field; false (400 set) when of the wrong type. */
static bool api__int_field(struct mf_http_req *req, const char *key, int64_t max, int64_t *out)
{
    json_t *v = json_object_get(req->json, key);
    *out = 0;
    if (!v)
        return true;
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > max) {
        mf_http_error(req, 400, "invalid_json", "%s must be an integer from 1 to %lld", key,
                      (long long)max);
        return false;
    }
    *out = json_integer_value(v);
    return true;
}

static void api__token_create(struct mf_http_req *req)
{
    static const char *const fields[] = {"name", "role", "max_uses", "expires_in", NULL};
    struct mf_diag diag = {0};
    struct mf_token_spec t = {.created_by = req->who.name};
    char secret[MF_SECRET_LEN + 1], *json = NULL;
    const char *role;

    if (mf_json_only(req->json, fields, &diag) != MF_OK) {
        mf_http_error_diag(req, &diag);
        return;
    }
    t.name = json_string_value(json_object_get(req->json, "name"));
    role = json_string_value(json_object_get(req->json, "role"));
    if (!t.name || !*t.name || strlen(t.name) > 128) {
        mf_http_error(req, 400, "invalid_json", "name must be a string of 1 to 128 bytes");
        return;
    }
    if (!role || mf_role_parse(role, &t.role) != MF_OK) {
        mf_http_error(req, 400, "invalid_json",
                      "role must be one of \"admin\", \"operator\", \"viewer\", \"enroll\"");
        return;
    }
    if (!api__int_field(req, "max_uses", 1000000000, &t.max_uses) ||
        !api__int_field(req, "expires_in", 10LL * 366 * 86400, &t.expires_in))
        return;
    if (t.max_uses && t.role != MF_ROLE_ENROLL) {
        mf_http_error(req, 400, "invalid_json", "max_uses applies only to enroll tokens");
        return;
    }
    enum mf_err rc = mf_store_token_create(req->db, &t, secret, &json, &diag);
    sodium_memzero(secret, sizeof secret);
    if (rc == MF_OK)
        mf_log(MF_LOG_INFO, "token created name=%s role=%s by=%s", t.name, role, req->who.name);
    api__reply(req, rc, 201, json, &diag);
}

static void api__tokens(struct mf_http_req *req)
{
    struct mf_diag diag = {0};
    char *json = NULL;
    enum mf_err rc = mf_store_tokens(req->db, &json, &diag);
    api__reply(req, rc, 200, json, &diag);
}

static bool api__digits(const char *s)
{
    size_t n = 0;
    while (s[n] >= '0' && s[n] <= '9')
        n++;
    return n > 0 && n < 19 && s[n] == '\0';
}

static void api__token_revoke(struct mf_http_req *req)
{
    struct mf_diag diag = {0};
    enum mf_err rc = MF_ERR_NOT_FOUND;

    if (api__digits(req->param[0]))
        rc = mf_store_token_revoke(req->db, req->param[0], req->who.name, &diag);
    if (rc == MF_OK) {
        mf_http_auth_invalidate();
        mf_http_empty(req, 204);
        return;
    }
    if (rc == MF_ERR_NOT_FOUND)
        mf_diag_set(&diag, rc, "", "no token with id %.32s", req->param[0]);
    mf_http_error_diag(req, &diag);
}

/* ---- devices ------------------------------------------------------------ */

static void api__enroll(struct mf_http_req *req)
{
    static const char *const fields[] = {"device_id",     "hw_class", "runtimes",
                                         "agent_version", "labels",   NULL};
    struct mf_diag diag = {0};
    struct mf_enroll e = {.token_id = req->who.token_id, .token_name = req->who.name};
    char credential[MF_SECRET_LEN + 1], gen[20], *runtimes = NULL, *labels = NULL;
    json_t *rt, *v, *lj;
    struct mf_semver sv;
    size_t i;

    if (mf_json_only(req->json, fields, &diag) != MF_OK) {
        mf_http_error_diag(req, &diag);
        return;
    }
    e.device_id = json_string_value(json_object_get(req->json, "device_id"));
    e.hw_class = json_string_value(json_object_get(req->json, "hw_class"));
    e.agent_version = json_string_value(json_object_get(req->json, "agent_version"));
    if (json_object_get(req->json, "device_id") && (!e.device_id || !mf_pkg_name_ok(e.device_id))) {
        mf_http_error(req, 400, "invalid_json",
                      "device_id must be 1-64 characters of [A-Za-z0-9._-] starting with a "
                      "letter or digit");
        return;
    }
    if (!e.hw_class || !mf_pkg_name_ok(e.hw_class)) {
        mf_http_error(req, 400, "invalid_json",
                      "hw_class is required: 1-64 characters of [A-Za-z0-9._-]");
        return;
    }
    if (json_object_get(req->json, "agent_version") &&
        (!e.agent_version || mf_semver_parse(e.agent_version, &sv, NULL) != MF_OK)) {
        mf_http_error(req, 400, "invalid_json", "agent_version must be a semantic version");
        return;
    }
    rt = json_object_get(req->json, "runtimes");
    if (rt) {
        struct mf_strlist l = {0};
        if (!json_is_array(rt) || json_array_size(rt) > 16) {
            mf_http_error(req, 400, "invalid_json",
                          "runtimes must be an array of at most 16 names");
            return;
        }
        json_array_foreach(rt, i, v)
        {
            if (!json_is_string(v) || !mf_pkg_name_ok(json_string_value(v))) {
                mf_strlist_free(&l);
                mf_http_error(req, 400, "invalid_json", "runtimes[%zu] is not a runtime name", i);
                return;
            }
            mf_strlist_push(&l, json_string_value(v));
        }
        /* Quoted elements: an unquoted NULL would be SQL NULL. */
        runtimes = mf_xstrdup("{");
        for (i = 0; i < l.n; i++) {
            char *next = mf_xasprintf("%s%s\"%s\"", runtimes, i ? "," : "", l.v[i]);
            free(runtimes);
            runtimes = next;
        }
        char *closed = mf_xasprintf("%s}", runtimes);
        free(runtimes);
        runtimes = closed;
        mf_strlist_free(&l);
    }
    e.runtimes = runtimes;
    lj = json_object_get(req->json, "labels");
    if (lj) {
        if (mf_labels_check(lj, "labels", &diag) != MF_OK) {
            free(runtimes);
            mf_http_error_diag(req, &diag);
            return;
        }
        labels = json_dumps(lj, JSON_COMPACT | JSON_SORT_KEYS);
    }
    e.labels = labels;
    if (!e.device_id) {
        uint8_t r[8];
        randombytes_buf(r, sizeof r);
        gen[0] = 'd';
        gen[1] = '-';
        mf_hex_encode(gen + 2, r, sizeof r);
        e.device_id = gen;
    }
    enum mf_err rc = mf_store_device_enroll(req->db, &e, credential, &diag);
    free(runtimes);
    free(labels);
    if (rc != MF_OK) {
        mf_http_error_diag(req, &diag);
        return;
    }
    mf_log(MF_LOG_INFO, "device enrolled device=%s hw_class=%s by=%s", e.device_id, e.hw_class,
           req->who.name);
    mf_http_json(req, 201,
                 json_pack("{s:s, s:s, s:s, s:o}", "device_id", e.device_id, "credential",
                           credential, "hw_class", e.hw_class, "labels",
                           lj ? json_incref(lj) : json_object()));
    sodium_memzero(credential, sizeof credential);
}

static void api__devices(struct mf_http_req *req)
{
    struct mf_device_filter f = {0};
    struct mf_diag diag = {0};
    const char *online = mf_http_query(req, "online");
    char *json = NULL;

    if (!mf_http_query_limit(req, &f.limit) || !mf_http_query_name(req, "hw_class", &f.hw_class) ||
        !mf_http_query_name(req, "model", &f.model) || !api__version_query(req, &f.version) ||
        !mf_http_query_name(req, "after", &f.after))
        return;
    if (f.version && !f.model) {
        mf_http_error(req, 400, "bad_request", "version needs model");
        return;
    }
    if (online) {
        if (strcmp(online, "true") != 0 && strcmp(online, "false") != 0) {
            mf_http_error(req, 400, "bad_request", "online must be true or false");
            return;
        }
        f.online = online;
    }
    enum mf_err rc = mf_store_devices(req->db, &f, &json, &diag);
    api__reply(req, rc, 200, json, &diag);
}

static void api__device(struct mf_http_req *req)
{
    struct mf_diag diag = {0};
    char *json = NULL;
    enum mf_err rc = MF_ERR_NOT_FOUND;

    if (req->who.role == MF_ROLE_DEVICE && strcmp(req->who.name, req->param[0]) != 0) {
        mf_http_error(req, 403, "forbidden", "a device may read only its own record");
        return;
    }
    if (mf_pkg_name_ok(req->param[0]))
        rc = mf_store_device(req->db, req->param[0], &json, &diag);
    if (rc == MF_ERR_NOT_FOUND)
        mf_diag_set(&diag, rc, "", "no device with id %.80s", req->param[0]);
    api__reply(req, rc, 200, json, &diag);
}

static void api__device_delete(struct mf_http_req *req)
{
    struct mf_diag diag = {0};
    enum mf_err rc = MF_ERR_NOT_FOUND;

    if (mf_pkg_name_ok(req->param[0]))
        rc = mf_store_device_delete(req->db, req->param[0], req->who.name, &diag);
    if (rc == MF_OK) {
        mf_http_auth_invalidate();
        mf_log(MF_LOG_INFO, "device decommissioned device=%s by=%s", req->param[0], req->who.name);
        mf_http_empty(req, 204);
        return;
    }
    if (rc == MF_ERR_NOT_FOUND)
        mf_diag_set(&diag, rc, "", "no device with id %.80s", req->param[0]);
    mf_http_error_diag(req, &diag);
}

static void api__fleet(struct mf_http_req *req)
{
    struct mf_diag diag = {0};
    char *json = NULL;
    enum mf_err rc = mf_store_fleet_summary(req->db, &json, &diag);
    api__reply(req, rc, 200, json, &diag);
}

#define V1   "/api/v1"
#define PAGE "limit", "after"

const struct mf_route mf_api_routes[] = {
    {"GET", "/healthz", 0, MF_BODY_NONE, api__healthz, {NULL}},
    {"GET", V1 "/healthz", 0, MF_BODY_NONE, api__healthz, {NULL}},
    {"POST", V1 "/packages", MF_ALLOW_OPERATOR, MF_BODY_STREAM, api__push, {NULL}},
    {"GET",
     V1 "/packages",
     MF_ALLOW_VIEWER,
     MF_BODY_NONE,
     api__packages,
     {"model", "version", PAGE, NULL}},
    {"GET",
     V1 "/packages/{}",
     MF_ALLOW_VIEWER | MF_ROLE_DEVICE,
     MF_BODY_NONE,
     api__package,
     {NULL}},
    {"GET",
     V1 "/packages/{}/blob",
     MF_ALLOW_VIEWER | MF_ROLE_DEVICE,
     MF_BODY_NONE,
     api__blob,
     {NULL}},
    {"GET", V1 "/models", MF_ALLOW_VIEWER, MF_BODY_NONE, api__models, {NULL}},
    {"GET", V1 "/models/{}", MF_ALLOW_VIEWER, MF_BODY_NONE, api__model, {NULL}},
    {"GET", V1 "/models/{}/versions/{}", MF_ALLOW_VIEWER, MF_BODY_NONE, api__model_version, {NULL}},
    {"GET", V1 "/keys", MF_ALLOW_VIEWER | MF_ROLE_DEVICE, MF_BODY_NONE, api__keys, {NULL}},
    {"POST", V1 "/tokens", MF_ALLOW_ADMIN, MF_BODY_JSON, api__token_create, {NULL}},
    {"GET", V1 "/tokens", MF_ALLOW_ADMIN, MF_BODY_NONE, api__tokens, {NULL}},
    {"DELETE", V1 "/tokens/{}", MF_ALLOW_ADMIN, MF_BODY_NONE, api__token_revoke, {NULL}},
    {"POST", V1 "/devices/enroll", MF_ROLE_ENROLL, MF_BODY_JSON, api__enroll, {NULL}},
    {"GET",
     V1 "/devices",
     MF_ALLOW_VIEWER,
     MF_BODY_NONE,
     api__devices,
     {"hw_class", "model", "version", "online", PAGE, NULL}},
    {"GET", V1 "/devices/{}", MF_ALLOW_VIEWER | MF_ROLE_DEVICE, MF_BODY_NONE, api__device, {NULL}},
    {"DELETE", V1 "/devices/{}", MF_ALLOW_ADMIN, MF_BODY_NONE, api__device_delete, {NULL}},
    {"GET", V1 "/fleet/summary", MF_ALLOW_VIEWER, MF_BODY_NONE, api__fleet, {NULL}},
    {"POST", V1 "/rollouts", MF_ALLOW_OPERATOR, MF_BODY_JSON, mf_api_rollout_create, {NULL}},
    {"GET",
     V1 "/rollouts",
     MF_ALLOW_VIEWER,
     MF_BODY_NONE,
     mf_api_rollouts,
     {"model", "status", PAGE, NULL}},
    {"GET", V1 "/rollouts/{}", MF_ALLOW_VIEWER, MF_BODY_NONE, mf_api_rollout, {NULL}},
    {"GET",
     V1 "/rollouts/{}/devices",
     MF_ALLOW_VIEWER,
     MF_BODY_NONE,
     mf_api_rollout_devices,
     {"hw_class", "outcome", PAGE, NULL}},
    {"POST",
     V1 "/rollouts/{}/pause",
     MF_ALLOW_OPERATOR,
     MF_BODY_NONE,
     mf_api_rollout_pause,
     {NULL}},
    {"POST",
     V1 "/rollouts/{}/resume",
     MF_ALLOW_OPERATOR,
     MF_BODY_NONE,
     mf_api_rollout_resume,
     {NULL}},
    /* The body is optional: buffered, parsed by the handler. */
    {"POST",
     V1 "/rollouts/{}/abort",
     MF_ALLOW_OPERATOR,
     MF_BODY_NONE,
     mf_api_rollout_abort,
     {NULL}},
    {"POST",
     V1 "/rollouts/{}/promote",
     MF_ALLOW_OPERATOR,
     MF_BODY_NONE,
     mf_api_rollout_promote,
     {NULL}},
};

const size_t mf_api_routes_count = sizeof mf_api_routes / sizeof mf_api_routes[0];
