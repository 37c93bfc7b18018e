/* store.c — the API's SQL. JSON is assembled by PostgreSQL; values travel
 * only as parameters. */
#include "server/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/encode.h"
#include "common/mem.h"

/* The package object of docs/api.md, for a row `p` of packages. */
#define PKG_JSON                                                                                   \
    "json_build_object('id', p.id, 'upload_hash', p.upload_hash, 'model', p.model,"                \
    " 'version', p.version, 'runtime', p.runtime, 'hardware', to_json(p.hardware),"                \
    " 'variant', p.runtime || ':' || array_to_string(p.hardware, ','), 'size', p.size,"            \
    " 'payload_bytes', p.payload_bytes, 'server_key', p.server_key,"                               \
    " 'publisher_key', p.publisher_key, 'pushed_by', p.pushed_by,"                                 \
    " 'pushed_at', mf_rfc3339(p.pushed_at), 'created', p.manifest->'created',"                     \
    " 'thresholds', p.manifest->'thresholds', 'eval', p.manifest->'eval',"                         \
    " 'files', p.manifest->'files', 'manifest', p.manifest,"                                       \
    " 'blob', '/api/v1/packages/' || p.id || '/blob')"

/* The device object, for a row `d` of devices. */
#define DEV_JSON                                                                                   \
    "json_build_object('id', d.id, 'hw_class', d.hw_class, 'agent_version', d.agent_version,"      \
    " 'runtimes', to_json(d.runtimes), 'online', d.online, 'last_seen', mf_rfc3339(d.last_seen),"  \
    " 'enrolled_at', mf_rfc3339(d.enrolled_at), 'labels', d.labels,"                               \
    " 'models', coalesce((SELECT json_agg("                                                        \
    "json_build_object('name', m.model, 'version', m.version, 'package', m.package)"               \
    " ORDER BY m.model) FROM device_models m WHERE m.device_id = d.id), '[]'::json))"

/* From the trigger-maintained fleet_counts (schema/0002): model '*' rows count
 * every device once per hardware class and online state. */
const char mf_store_sql_fleet_summary[] =
    "SELECT json_build_object("
    "'devices', coalesce(sum(f.devices) FILTER (WHERE f.model = '*'), 0),"
    " 'online', coalesce(sum(f.devices) FILTER (WHERE f.model = '*' AND f.online), 0),"
    " 'groups', coalesce(json_agg(json_build_object('hw_class', f.hw_class,"
    " 'model', NULLIF(f.model, ''), 'version', NULLIF(f.version, ''), 'online', f.online,"
    " 'devices', f.devices) ORDER BY f.hw_class, f.model, f.version, f.online)"
    " FILTER (WHERE f.model <> '*' AND f.devices > 0), '[]'::json))::text"
    " FROM fleet_counts f";

/* GET /devices. Two static statements, so that the planner sees a plain
 * semi-join when a model is named and nothing to join when none is (an
 * optional filter written as "$2 IS NULL OR EXISTS (...)" cannot be planned as
 * a join); the caller picks one, the values stay parameters. */
#define DEVICES_SQL(model_filter)                                                                  \
    "SELECT json_build_object('devices',"                                                          \
    " coalesce(json_agg(s.j ORDER BY s.id) FILTER (WHERE s.rn <= $6::integer), '[]'::json),"       \
    " 'next', CASE WHEN count(*) > $6::integer"                                                    \
    " THEN max(s.id) FILTER (WHERE s.rn <= $6::integer) END)::text"                                \
    " FROM (SELECT d.id, row_number() OVER (ORDER BY d.id) AS rn, " DEV_JSON " AS j"               \
    " FROM devices d"                                                                              \
    " WHERE ($1::text IS NULL OR d.hw_class = $1::text)"                                           \
    " AND ($4::boolean IS NULL OR d.online = $4::boolean)"                                         \
    " AND ($5::text IS NULL OR d.id > $5::text) AND " model_filter                                 \
    " ORDER BY d.id LIMIT $6::integer + 1) s"

const char mf_store_sql_devices[] =
    DEVICES_SQL("EXISTS (SELECT 1 FROM device_models m2 WHERE m2.device_id = d.id"
                " AND m2.model = $2::text AND ($3::text IS NULL OR m2.version = $3::text))");
static const char store__sql_devices_any[] = DEVICES_SQL("$2::text IS NULL AND $3::text IS NULL");

enum mf_err mf_store_json(struct mf_db *db, const char *sql, int n, const char *const *params,
                          char **out, struct mf_diag *diag)
{
    PGresult *res = NULL;
    enum mf_err rc = mf_db_exec(db, sql, n, params, &res, diag);
    if (rc != MF_OK)
        return rc;
    if (PQntuples(res) < 1 || PQnfields(res) < 1 || PQgetisnull(res, 0, 0)) {
        PQclear(res);
        return mf_diag_set(diag, MF_ERR_NOT_FOUND, "", "not found");
    }
    *out = mf_xstrdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    return MF_OK;
}

/* PostgreSQL's hex text form of bytea: "\\x" + hex. out holds 2 + 2n + 1. */
static void store__bytea(char *out, const uint8_t *p, size_t n)
{
    out[0] = '\\';
    out[1] = 'x';
    mf_hex_encode(out + 2, p, n);
}

static void store__audit(struct mf_db *db, const char *actor, const char *action,
                         const char *object)
{
    const char *p[3] = {actor, action, object};
    if (mf_db_exec(db, "INSERT INTO audit_log (actor, action, object) VALUES ($1, $2, $3)", 3, p,
                   NULL, NULL) != MF_OK) {
        /* best effort */
    }
}

/* ---- auth --------------------------------------------------------------- */

enum mf_err mf_store_authenticate(struct mf_db *db, const char *header, struct mf_principal *who,
                                  struct mf_diag *diag)
{
    const char *secret;
    uint8_t h[MF_HASH_BYTES];
    char hb[2 + 2 * MF_HASH_BYTES + 1];
    bool device;
    PGresult *res = NULL;
    enum mf_err rc;
    const char *p[1] = {hb};

    if (!header)
        return mf_diag_set(diag, MF_ERR_AUTH, "",
                           "this endpoint needs an Authorization: Bearer <token> header");
    if (mf_auth_bearer(header, &secret) != MF_OK)
        return mf_diag_set(diag, MF_ERR_AUTH, "",
                           "the Authorization header must be \"Bearer <token>\"");
    if (mf_secret_hash(secret, h, &device) != MF_OK)
        return mf_diag_set(diag, MF_ERR_AUTH, "", "the bearer token is malformed");
    store__bytea(hb, h, MF_HASH_BYTES);
    if (device) {
        rc = mf_db_exec(db, "SELECT id FROM devices WHERE credential_hash = $1::bytea", 1, p, &res,
                        diag);
        if (rc != MF_OK)
            return rc;
        if (PQntuples(res) != 1) {
            PQclear(res);
            return mf_diag_set(diag, MF_ERR_AUTH, "",
                               "unknown or decommissioned device credential");
        }
        who->role = MF_ROLE_DEVICE;
        who->token_id = 0;
        snprintf(who->name, sizeof who->name, "%s", PQgetvalue(res, 0, 0));
        PQclear(res);
        return MF_OK;
    }
    rc = mf_db_exec(db,
                    "SELECT id, name, role, revoked_at IS NOT NULL,"
                    " expires_at IS NOT NULL AND expires_at <= now(),"
                    " max_uses IS NOT NULL AND uses >= max_uses,"
                    " last_used_at IS NULL OR last_used_at < now() - interval '60 seconds'"
                    " FROM api_tokens WHERE secret_hash = $1::bytea",
                    1, p, &res, diag);
    if (rc != MF_OK)
        return rc;
    if (PQntuples(res) != 1) {
        PQclear(res);
        return mf_diag_set(diag, MF_ERR_AUTH, "", "unknown token");
    }
    const char *why = *PQgetvalue(res, 0, 3) == 't'   ? "this token was revoked"
                      : *PQgetvalue(res, 0, 4) == 't' ? "this token has expired"
                      : *PQgetvalue(res, 0, 5) == 't' ? "this token is used up"
                                                      : NULL;
    if (why) {
        PQclear(res);
        return mf_diag_set(diag, MF_ERR_AUTH, "", "%s", why);
    }
    if (mf_role_parse(PQgetvalue(res, 0, 2), &who->role) != MF_OK) {
        PQclear(res);
        return mf_diag_set(diag, MF_ERR_AUTH, "", "token with an unknown role");
    }
    who->token_id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    snprintf(who->name, sizeof who->name, "%s", PQgetvalue(res, 0, 1));
    if (*PQgetvalue(res, 0, 6) == 't') {
        const char *q[1] = {PQgetvalue(res, 0, 0)};
        if (mf_db_exec(db, "UPDATE api_tokens SET last_used_at = now() WHERE id = $1::bigint", 1, q,
                       NULL, NULL) != MF_OK) {
            /* best effort */
        }
    }
    PQclear(res);
    return MF_OK;
}

/* ---- tokens ------------------------------------------------------------- */

#define TOKEN_JSON                                                                                 \
    "json_build_object('id', id, 'name', name, 'role', role, 'created_at',"                        \
    " mf_rfc3339(created_at), 'created_by', created_by, 'last_used_at', mf_rfc3339(last_used_at)," \
    " 'expires_at', mf_rfc3339(expires_at), 'max_uses', max_uses, 'uses', uses,"                   \
    " 'revoked', revoked_at IS NOT NULL)"

enum mf_err mf_store_token_create(struct mf_db *db, const struct mf_token_spec *t,
                                  char secret[MF_SECRET_LEN + 1], char **json, struct mf_diag *diag)
{
    uint8_t h[MF_HASH_BYTES];
    char hb[2 + 2 * MF_HASH_BYTES + 1], uses[24], exp[24];
    char *text = NULL;
    enum mf_err rc;

    mf_secret_new(MF_SECRET_API, secret, h);
    store__bytea(hb, h, MF_HASH_BYTES);
    snprintf(uses, sizeof uses, "%lld", (long long)t->max_uses);
    snprintf(exp, sizeof exp, "%lld", (long long)t->expires_in);
    const char *p[6] = {t->name, mf_role_name(t->role), hb, t->created_by, exp, uses};
    rc = mf_store_json(db,
                       "INSERT INTO api_tokens (name, role, secret_hash, created_by, expires_at,"
                       " max_uses) VALUES ($1, $2, $3::bytea, $4, CASE WHEN $5::bigint > 0 THEN"
                       " now() + make_interval(secs => $5::bigint) END, NULLIF($6::integer, 0))"
                       " RETURNING " TOKEN_JSON "::text",
                       6, p, &text, diag);
    if (rc != MF_OK)
        return rc;
    if (json) {
        json_t *o = json_loads(text, 0, NULL);
        json_object_set_new(o, "token", json_string(secret));
        *json = json_dumps(o, JSON_COMPACT);
        json_decref(o);
    }
    free(text);
    store__audit(db, t->created_by, "token.create", t->name);
    return MF_OK;
}

enum mf_err mf_store_tokens(struct mf_db *db, char **json, struct mf_diag *diag)
{
    return mf_store_json(db,
                         "SELECT json_build_object('tokens', coalesce(json_agg(" TOKEN_JSON
                         " ORDER BY id), '[]'::json))::text FROM api_tokens",
                         0, NULL, json, diag);
}

enum mf_err mf_store_token_revoke(struct mf_db *db, const char *id, const char *actor,
                                  struct mf_diag *diag)
{
    char *text = NULL;
    const char *p[1] = {id};
    enum mf_err rc = mf_store_json(db,
                                   "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now())"
                                   " WHERE id = $1::bigint RETURNING name",
                                   1, p, &text, diag);
    if (rc == MF_ERR_NOT_FOUND)
        return mf_diag_set(diag, MF_ERR_NOT_FOUND, id, "no token with id %s", id);
    if (rc == MF_OK)
        store__audit(db, actor, "token.revoke", text);
    free(text);
    return rc;
}

/* ---- keys --------------------------------------------------------------- */

enum mf_err mf_store_key_register(struct mf_db *db, const struct mf_key_pub *k,
                                  struct mf_diag *diag)
{
    char hex[2 + 2 * sizeof k->pk + 1];
    const char *p[2] = {k->id, hex};

    store__bytea(hex, k->pk, sizeof k->pk);
    return mf_db_exec(db,
                      "INSERT INTO signing_keys (key_id, public_key) VALUES ($1, $2::bytea)"
                      " ON CONFLICT (key_id) DO UPDATE SET last_used = now()",
                      2, p, NULL, diag);
}

enum mf_err mf_store_keys(struct mf_db *db, const char *active_id, char **json,
                          struct mf_diag *diag)
{
    const char *p[1] = {active_id};
    return mf_store_json(
        db,
        "SELECT json_build_object('keys', coalesce(json_agg(json_build_object('key_id', key_id,"
        " 'algorithm', 'ed25519', 'public_key', encode(public_key, 'base64'),"
        " 'public_key_file', 'modelfleet-public-key v1' || chr(10) || 'key-id: ' || key_id"
        " || chr(10) || 'public-key: ' || encode(public_key, 'base64') || chr(10),"
        " 'active', key_id = $1, 'first_used', mf_rfc3339(first_used),"
        " 'last_used', mf_rfc3339(last_used)) ORDER BY key_id = $1 DESC, last_used DESC),"
        " '[]'::json))::text FROM signing_keys",
        1, p, json, diag);
}

/* ---- packages ----------------------------------------------------------- */

enum mf_err mf_store_package_by_hash(struct mf_db *db, const char *hash, char **json,
                                     struct mf_diag *diag)
{
    const char *p[1] = {hash};
    return mf_store_json(db,
                         "SELECT " PKG_JSON "::text FROM packages p"
                         " WHERE p.id = $1 OR p.upload_hash = $1 ORDER BY p.id = $1 DESC LIMIT 1",
                         1, p, json, diag);
}

enum mf_err mf_store_package_get(struct mf_db *db, const char *id, char **json,
                                 struct mf_diag *diag)
{
    const char *p[1] = {id};
    return mf_store_json(db, "SELECT " PKG_JSON "::text FROM packages p WHERE p.id = $1", 1, p,
                         json, diag);
}

/* "{"a","b"}" from names that mf_pkg_name_ok() accepted (no quote or
 * backslash inside); quoted, because a bare NULL would be SQL NULL. */
static char *store__array(const struct mf_strlist *l)
{
    size_t n = 3;
    for (size_t i = 0; i < l->n; i++)
        n += strlen(l->v[i]) + 3;
    char *s = mf_xmalloc(n), *w = s;
    *w++ = '{';
    for (size_t i = 0; i < l->n; i++) {
        size_t k = strlen(l->v[i]);
        if (i)
            *w++ = ',';
        *w++ = '"';
        memcpy(w, l->v[i], k);
        w += k;
        *w++ = '"';
    }
    *w++ = '}';
    *w = '\0';
    return s;
}

enum mf_err mf_store_package_insert(struct mf_db *db, const struct mf_package_row *row, char **json,
                                    struct mf_diag *diag)
{
    const struct mf_manifest *m = row->manifest;
    char *hw = store__array(&m->hardware);
    char size[24], payload[24];
    enum mf_err rc;

    snprintf(size, sizeof size, "%llu", (unsigned long long)row->size);
    snprintf(payload, sizeof payload, "%llu", (unsigned long long)row->payload_bytes);
    const char *pm[1] = {m->model};
    const char *pp[11] = {
        row->id, row->upload_hash, m->model,           m->version,      m->runtime,        hw,
        size,    payload,          row->manifest_json, row->server_key, row->publisher_key};
    const char *pb[1] = {row->pushed_by};
    const char *ph[4] = {m->model, m->version, hw, row->id};

    rc = mf_db_begin(db, diag);
    if (rc != MF_OK)
        goto out;
    rc = mf_db_exec(db,
                    "INSERT INTO models (name) VALUES ($1)"
                    " ON CONFLICT (name) DO UPDATE SET updated_at = now()",
                    1, pm, NULL, diag);
    if (rc == MF_OK) {
        const char *all[12];
        memcpy(all, pp, sizeof pp);
        all[11] = pb[0];
        rc = mf_db_exec(db,
                        "INSERT INTO packages (id, upload_hash, model, version, runtime, hardware,"
                        " size, payload_bytes, manifest, server_key, publisher_key, pushed_by)"
                        " VALUES ($1, $2, $3, $4, $5, $6::text[], $7::bigint, $8::bigint,"
                        " $9::jsonb, $10, $11, $12)",
                        12, all, NULL, diag);
        if (rc == MF_ERR_CONFLICT) {
            rc = mf_diag_set(diag, MF_ERR_EXISTS, row->id, "these bytes are already stored");
            goto fail;
        }
    }
    if (rc == MF_OK) {
        rc = mf_db_exec(db,
                        "INSERT INTO package_hardware (model, version, hw_class, package)"
                        " SELECT $1, $2, unnest($3::text[]), $4",
                        4, ph, NULL, diag);
        if (rc == MF_ERR_CONFLICT) {
            char *other = NULL;
            mf_db_rollback(db);
            const char *pq[3] = {m->model, m->version, hw};
            rc = mf_store_json(db,
                               "SELECT package || ' ' || hw_class FROM package_hardware"
                               " WHERE model = $1 AND version = $2 AND hw_class = ANY($3::text[])"
                               " ORDER BY hw_class LIMIT 1",
                               3, pq, &other, diag);
            if (rc == MF_OK) {
                char *sp = strchr(other, ' ');
                *sp = '\0';
                rc = mf_diag_set(diag, MF_ERR_CONFLICT, other,
                                 "%s %s for hardware class %s is already package %s", m->model,
                                 m->version, sp + 1, other);
            }
            free(other);
            goto out;
        }
    }
    if (rc == MF_OK) {
        const char *pa[3] = {row->pushed_by, "package.push", row->id};
        rc = mf_db_exec(db, "INSERT INTO audit_log (actor, action, object) VALUES ($1, $2, $3)", 3,
                        pa, NULL, diag);
    }
    if (rc != MF_OK)
        goto fail;
    rc = mf_db_commit(db, diag);
    if (rc == MF_OK)
        rc = mf_store_package_get(db, row->id, json, diag);
    goto out;
fail:
    mf_db_rollback(db);
out:
    free(hw);
    return rc;
}

enum mf_err mf_store_packages(struct mf_db *db, const char *model, const char *version, int limit,
                              const char *after, char **json, struct mf_diag *diag)
{
    char lim[16];
    snprintf(lim, sizeof lim, "%d", limit);
    const char *p[4] = {model, version, after, lim};
    return mf_store_json(
        db,
        "SELECT json_build_object('packages',"
        " coalesce(json_agg(s.j ORDER BY s.id) FILTER (WHERE s.rn <= $4::integer), '[]'::json),"
        " 'next', CASE WHEN count(*) > $4::integer"
        " THEN max(s.id) FILTER (WHERE s.rn <= $4::integer) END)::text"
        " FROM (SELECT p.id, row_number() OVER (ORDER BY p.id) AS rn, " PKG_JSON " AS j"
        " FROM packages p"
        " WHERE ($1::text IS NULL OR p.model = $1) AND ($2::text IS NULL OR p.version = $2)"
        " AND ($3::text IS NULL OR p.id > $3) ORDER BY p.id LIMIT $4::integer + 1) s",
        4, p, json, diag);
}

/* ---- models ------------------------------------------------------------- */

enum mf_err mf_store_models(struct mf_db *db, char **json, struct mf_diag *diag)
{
    return mf_store_json(
        db,
        "SELECT json_build_object('models', coalesce(json_agg(json_build_object('name', m.name,"
        " 'versions', v.versions, 'updated_at', mf_rfc3339(m.updated_at)) ORDER BY m.name),"
        " '[]'::json))::text FROM models m, LATERAL (SELECT json_agg(DISTINCT p.version) AS"
        " versions FROM packages p WHERE p.model = m.name) v",
        0, NULL, json, diag);
}

enum mf_err mf_store_model(struct mf_db *db, const char *name, char **json, struct mf_diag *diag)
{
    const char *p[1] = {name};
    return mf_store_json(
        db,
        "SELECT json_build_object('name', m.name, 'versions', coalesce((SELECT"
        " json_agg(json_build_object('version', v.version, 'pushed_at', mf_rfc3339(v.pushed_at),"
        " 'pushed_by', v.pushed_by, 'variants', v.variants)) FROM (SELECT p.version,"
        " min(p.pushed_at) AS pushed_at, (array_agg(p.pushed_by ORDER BY p.pushed_at))[1] AS"
        " pushed_by, json_agg(json_build_object('id', p.id, 'runtime', p.runtime, 'hardware',"
        " to_json(p.hardware), 'size', p.size) ORDER BY p.runtime, p.id) AS variants"
        " FROM packages p WHERE p.model = m.name GROUP BY p.version) v), '[]'::json))::text"
        " FROM models m WHERE m.name = $1",
        1, p, json, diag);
}

enum mf_err mf_store_model_version(struct mf_db *db, const char *name, const char *version,
                                   char **json, struct mf_diag *diag)
{
    const char *p[2] = {name, version};
    return mf_store_json(db,
                         "SELECT json_build_object('name', $1::text, 'version', $2::text,"
                         " 'variants', json_agg(" PKG_JSON " ORDER BY p.runtime, p.id))::text"
                         " FROM packages p WHERE p.model = $1 AND p.version = $2"
                         " HAVING count(*) > 0",
                         2, p, json, diag);
}

/* ---- devices ------------------------------------------------------------ */

enum mf_err mf_store_device_enroll(struct mf_db *db, const struct mf_enroll *e,
                                   char credential[MF_SECRET_LEN + 1], struct mf_diag *diag)
{
    uint8_t h[MF_HASH_BYTES];
    char hb[2 + 2 * MF_HASH_BYTES + 1], tid[24];
    PGresult *res = NULL;
    enum mf_err rc;

    mf_secret_new(MF_SECRET_DEVICE, credential, h);
    store__bytea(hb, h, MF_HASH_BYTES);
    snprintf(tid, sizeof tid, "%lld", (long long)e->token_id);
    const char *pt[1] = {tid};
    const char *pd[7] = {e->device_id, e->hw_class,   hb,       e->agent_version,
                         e->runtimes,  e->token_name, e->labels};

    rc = mf_db_begin(db, diag);
    if (rc != MF_OK)
        return rc;
    rc = mf_db_exec(db,
                    "UPDATE api_tokens SET uses = uses + 1 WHERE id = $1::bigint"
                    " AND (max_uses IS NULL OR uses < max_uses) RETURNING id",
                    1, pt, &res, diag);
    if (rc == MF_OK && PQntuples(res) != 1)
        rc = mf_diag_set(diag, MF_ERR_AUTH, "", "this enrollment token is used up");
    PQclear(res);
    if (rc == MF_OK) {
        rc = mf_db_exec(db,
                        "INSERT INTO devices (id, hw_class, credential_hash, agent_version,"
                        " runtimes, enrolled_by, labels) VALUES ($1, $2, $3::bytea, $4,"
                        " coalesce($5::text[], '{}'), $6, coalesce($7::jsonb, '{}'))",
                        7, pd, NULL, diag);
        if (rc == MF_ERR_CONFLICT)
            rc = mf_diag_set(diag, MF_ERR_CONFLICT, e->device_id,
                             "a device with id \"%s\" is already enrolled", e->device_id);
    }
    if (rc == MF_OK) {
        const char *pa[3] = {e->token_name, "device.enroll", e->device_id};
        rc = mf_db_exec(db, "INSERT INTO audit_log (actor, action, object) VALUES ($1, $2, $3)", 3,
                        pa, NULL, diag);
    }
    if (rc != MF_OK) {
        mf_db_rollback(db);
        return rc;
    }
    return mf_db_commit(db, diag);
}

enum mf_err mf_store_devices(struct mf_db *db, const struct mf_device_filter *f, char **json,
                             struct mf_diag *diag)
{
    char lim[16];
    snprintf(lim, sizeof lim, "%d", f->limit);
    const char *p[6] = {f->hw_class, f->model, f->version, f->online, f->after, lim};
    return mf_store_json(db, f->model ? mf_store_sql_devices : store__sql_devices_any, 6, p, json,
                         diag);
}

enum mf_err mf_store_device(struct mf_db *db, const char *id, char **json, struct mf_diag *diag)
{
    const char *p[1] = {id};
    return mf_store_json(db, "SELECT " DEV_JSON "::text FROM devices d WHERE d.id = $1", 1, p, json,
                         diag);
}

enum mf_err mf_store_device_delete(struct mf_db *db, const char *id, const char *actor,
                                   struct mf_diag *diag)
{
    char *text = NULL;
    const char *p[1] = {id};
    enum mf_err rc = mf_db_begin(db, diag);
    if (rc != MF_OK)
        return rc;
    /* Lock the device first, so no model row can be added while it goes
     * (that insert waits, then fails its foreign key). Then the model rows:
     * the fleet_counts triggers need the device row. */
    rc = mf_db_exec(db, "SELECT 1 FROM devices WHERE id = $1 FOR UPDATE", 1, p, NULL, diag);
    if (rc == MF_OK)
        rc = mf_db_exec(db, "DELETE FROM device_models WHERE device_id = $1", 1, p, NULL, diag);
    if (rc == MF_OK)
        rc = mf_store_json(db, "DELETE FROM devices WHERE id = $1 RETURNING id", 1, p, &text, diag);
    free(text);
    if (rc != MF_OK) {
        mf_db_rollback(db);
        return rc;
    }
    rc = mf_db_commit(db, diag);
    if (rc == MF_OK)
        store__audit(db, actor, "device.delete", id);
    return rc;
}

enum mf_err mf_store_fleet_summary(struct mf_db *db, char **json, struct mf_diag *diag)
{
    return mf_store_json(db, mf_store_sql_fleet_summary, 0, NULL, json, diag);
}
