/* store.h — every SQL statement of the HTTP API, behind functions that take
 * a connection and checked values and return JSON text built by PostgreSQL
 * (json_build_object / json_agg), so the API is one round trip per read.
 * All statements are parameterised. Returned strings are malloc'd (caller
 * frees). Errors per mf_db_exec, plus MF_ERR_NOT_FOUND. */
#ifndef MF_SERVER_STORE_H
#define MF_SERVER_STORE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "packaging/key.h"
#include "packaging/manifest.h"
#include "server/auth.h"
#include "server/db.h"

/* Runs a statement returning one row with one JSON text column. 0 rows or a
 * NULL value is MF_ERR_NOT_FOUND. */
MF_MUST_CHECK enum mf_err mf_store_json(struct mf_db *db, const char *sql, int n,
                                        const char *const *params, char **out,
                                        struct mf_diag *diag);

/* From an Authorization header value: MF_ERR_AUTH (missing, malformed,
 * unknown, revoked, expired, used up) or MF_ERR_UNAVAILABLE. */
MF_MUST_CHECK enum mf_err mf_store_authenticate(struct mf_db *db, const char *header,
                                                struct mf_principal *who, struct mf_diag *diag);

/* Tokens. */
struct mf_token_spec {
    const char *name;
    enum mf_role role;
    int64_t max_uses;   /* 0 = unlimited */
    int64_t expires_in; /* seconds, 0 = never */
    const char *created_by;
};
/* Creates a token; secret gets its text (shown once), *json the token object
 * including "token". */
MF_MUST_CHECK enum mf_err mf_store_token_create(struct mf_db *db, const struct mf_token_spec *t,
                                                char secret[MF_SECRET_LEN + 1], char **json,
                                                struct mf_diag *diag);
MF_MUST_CHECK enum mf_err mf_store_tokens(struct mf_db *db, char **json, struct mf_diag *diag);
MF_MUST_CHECK enum mf_err mf_store_token_revoke(struct mf_db *db, const char *id, const char *actor,
                                                struct mf_diag *diag);

/* Signing keys: record (or touch) the server key; list all. */
MF_MUST_CHECK enum mf_err mf_store_key_register(struct mf_db *db, const struct mf_key_pub *k,
                                                struct mf_diag *diag);
MF_MUST_CHECK enum mf_err mf_store_keys(struct mf_db *db, const char *active_id, char **json,
                                        struct mf_diag *diag);

/* Packages. */
/* The package whose id or upload_hash is hash (idempotent re-push). */
MF_MUST_CHECK enum mf_err mf_store_package_by_hash(struct mf_db *db, const char *hash, char **json,
                                                   struct mf_diag *diag);
MF_MUST_CHECK enum mf_err mf_store_package_get(struct mf_db *db, const char *id, char **json,
                                               struct mf_diag *diag);
struct mf_package_row {
    const char *id, *upload_hash;
    const struct mf_manifest *manifest;
    const char *manifest_json; /* mf_manifest_to_json text */
    uint64_t size, payload_bytes;
    const char *server_key, *publisher_key; /* publisher_key may be NULL */
    const char *pushed_by;
};
/* Inserts in one transaction. MF_ERR_CONFLICT with diag->where = the id of
 * the package already serving this model+version on one of its hardware
 * classes; MF_ERR_EXISTS when these bytes raced in concurrently. */
MF_MUST_CHECK enum mf_err mf_store_package_insert(struct mf_db *db, const struct mf_package_row *p,
                                                  char **json, struct mf_diag *diag);
MF_MUST_CHECK enum mf_err mf_store_packages(struct mf_db *db, const char *model,
                                            const char *version, int limit, const char *after,
                                            char **json, struct mf_diag *diag);

/* Models. */
MF_MUST_CHECK enum mf_err mf_store_models(struct mf_db *db, char **json, struct mf_diag *diag);
/* name's versions (semver-sorted by the caller). */
MF_MUST_CHECK enum mf_err mf_store_model(struct mf_db *db, const char *name, char **json,
                                         struct mf_diag *diag);
MF_MUST_CHECK enum mf_err mf_store_model_version(struct mf_db *db, const char *name,
                                                 const char *version, char **json,
                                                 struct mf_diag *diag);

/* Devices. */
struct mf_enroll {
    const char *device_id; /* validated */
    const char *hw_class;
    const char *runtimes; /* PostgreSQL array literal text, e.g. {onnx,tflite} */
    const char *agent_version;
    const char *labels; /* JSON object text (mf_labels_check'ed), NULL = {} */
    int64_t token_id;
    const char *token_name;
};
MF_MUST_CHECK enum mf_err mf_store_device_enroll(struct mf_db *db, const struct mf_enroll *e,
                                                 char credential[MF_SECRET_LEN + 1],
                                                 struct mf_diag *diag);
struct mf_device_filter {
    const char *hw_class, *model, *version, *online, *after; /* NULL = any */
    int limit;
};
MF_MUST_CHECK enum mf_err mf_store_devices(struct mf_db *db, const struct mf_device_filter *f,
                                           char **json, struct mf_diag *diag);
MF_MUST_CHECK enum mf_err mf_store_device(struct mf_db *db, const char *id, char **json,
                                          struct mf_diag *diag);
MF_MUST_CHECK enum mf_err mf_store_device_delete(struct mf_db *db, const char *id,
                                                 const char *actor, struct mf_diag *diag);
MF_MUST_CHECK enum mf_err mf_store_fleet_summary(struct mf_db *db, char **json,
                                                 struct mf_diag *diag);

/* The SQL of the two benchmarked reads (the devices one: with a model filter),
 * exported so bench/ runs the same text. */
extern const char mf_store_sql_fleet_summary[];
extern const char mf_store_sql_devices[];

#endif
