/* db.c — a lazily (re)connecting libpq connection and the migration runner. */
#include "server/db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/encode.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/mem.h"
#include "server/migrations.h"

/* pg_advisory_lock key for migrations: "mfschema" as a big-endian int64. */
#define DB_MIGRATE_LOCK "7883115068549066081"

struct mf_db {
    PGconn *conn;
    char *url;
    char timeout[16];
    bool in_tx;
};

struct mf_db *mf_db_new(const char *url, int connect_timeout_s)
{
    struct mf_db *db = mf_xcalloc(1, sizeof *db);
    db->url = mf_xstrdup(url);
    snprintf(db->timeout, sizeof db->timeout, "%d", connect_timeout_s);
    return db;
}

void mf_db_free(struct mf_db *db)
{
    if (!db)
        return;
    if (db->conn)
        PQfinish(db->conn);
    free(db->url);
    free(db);
}

static void db__notice(void *arg, const char *msg)
{
    (void)arg;
    (void)msg; /* NOTICEs from migrations ("... does not exist, skipping") are noise */
}

static enum mf_err db__connect(struct mf_db *db, struct mf_diag *diag)
{
    const char *keys[] = {"dbname", "connect_timeout", "application_name", NULL};
    const char *vals[] = {db->url, db->timeout, "modelfleet-server", NULL};

    if (db->conn && PQstatus(db->conn) == CONNECTION_OK)
        return MF_OK;
    if (db->conn)
        PQfinish(db->conn);
    db->in_tx = false;
    db->conn = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(db->conn) != CONNECTION_OK) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s", PQerrorMessage(db->conn));
        msg[strcspn(msg, "\n")] = '\0';
        PQfinish(db->conn);
        db->conn = NULL;
        return mf_diag_set(diag, MF_ERR_UNAVAILABLE, "database", "cannot connect: %s", msg);
    }
    PQsetNoticeProcessor(db->conn, db__notice, NULL);
    return MF_OK;
}

/* Classifies a failed result. Connection-class SQLSTATEs (08xxx, 57P0x) and a
 * dead socket mean "unavailable"; 23505 is a unique violation. */
static enum mf_err db__classify(struct mf_db *db, PGresult *res, struct mf_diag *diag)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    char msg[300];

    snprintf(msg, sizeof msg, "%s",
             res ? PQresultErrorMessage(res) : (db->conn ? PQerrorMessage(db->conn) : ""));
    msg[strcspn(msg, "\n")] = '\0';
    if (PQstatus(db->conn) != CONNECTION_OK || !state || strncmp(state, "08", 2) == 0 ||
        strncmp(state, "57P0", 4) == 0) {
        PQfinish(db->conn);
        db->conn = NULL;
        db->in_tx = false;
        return mf_diag_set(diag, MF_ERR_UNAVAILABLE, "database", "connection lost: %s", msg);
    }
    if (strcmp(state, "23505") == 0) {
        const char *c = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);
        return mf_diag_set(diag, MF_ERR_CONFLICT, c ? c : "", "%s", msg);
    }
    return mf_diag_set(diag, MF_ERR_DB, state, "%s", msg);
}

static bool db__retryable(const struct mf_db *db, const char *sql)
{
    return !db->in_tx && (strncmp(sql, "SELECT", 6) == 0 || strcmp(sql, "BEGIN") == 0);
}

enum mf_err mf_db_exec(struct mf_db *db, const char *sql, int n, const char *const *params,
                       PGresult **out, struct mf_diag *diag)
{
    for (int attempt = 0;; attempt++) {
        bool fresh = !db->conn;
        enum mf_err rc = db__connect(db, diag);
        if (rc != MF_OK)
            return rc;
        PGresult *res = PQexecParams(db->conn, sql, n, NULL, params, NULL, NULL, 0);
        ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            if (out)
                *out = res;
            else
                PQclear(res);
            return MF_OK;
        }
        rc = db__classify(db, res, diag);
        PQclear(res);
        if (rc == MF_ERR_UNAVAILABLE && !fresh && attempt == 0 && db__retryable(db, sql)) {
            mf_log(MF_LOG_WARN, "database connection lost; reconnecting");
            continue;
        }
        return rc;
    }
}

enum mf_err mf_db_begin(struct mf_db *db, struct mf_diag *diag)
{
    enum mf_err rc = mf_db_exec(db, "BEGIN", 0, NULL, NULL, diag);
    if (rc == MF_OK)
        db->in_tx = true;
    return rc;
}

enum mf_err mf_db_commit(struct mf_db *db, struct mf_diag *diag)
{
    enum mf_err rc = mf_db_exec(db, "COMMIT", 0, NULL, NULL, diag);
    db->in_tx = false;
    return rc;
}

void mf_db_rollback(struct mf_db *db)
{
    if (db->conn && db->in_tx) {
        PGresult *res = PQexec(db->conn, "ROLLBACK");
        PQclear(res);
    }
    db->in_tx = false;
}

enum mf_err mf_db_script(struct mf_db *db, const char *sql, struct mf_diag *diag)
{
    enum mf_err rc = db__connect(db, diag);
    if (rc != MF_OK)
        return rc;
    PGresult *res = PQexec(db->conn, sql);
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        PQclear(res);
        return MF_OK;
    }
    rc = db__classify(db, res, diag);
    PQclear(res);
    return rc;
}

bool mf_db_ping(struct mf_db *db)
{
    return mf_db_exec(db, "SELECT 1", 0, NULL, NULL, NULL) == MF_OK;
}

static void db__checksum(const char *sql, char hex[2 * MF_HASH_BYTES + 1])
{
    uint8_t h[MF_HASH_BYTES];
    mf_hash_bytes(h, sql, strlen(sql));
    mf_hex_encode(hex, h, sizeof h);
}

/* Applies one migration in its own transaction. */
static enum mf_err db__apply(struct mf_db *db, const struct mf_migration *m, const char *sum,
                             struct mf_diag *diag)
{
    char ver[16];
    const char *p[3] = {ver, m->name, sum};
    enum mf_err rc;

    snprintf(ver, sizeof ver, "%d", m->version);
    rc = mf_db_begin(db, diag);
    if (rc == MF_OK)
        rc = mf_db_script(db, m->sql, diag);
    if (rc == MF_OK)
        rc = mf_db_exec(db,
                        "INSERT INTO schema_migrations (version, name, checksum) "
                        "VALUES ($1::integer, $2, $3)",
                        3, p, NULL, diag);
    if (rc == MF_OK)
        return mf_db_commit(db, diag);
    mf_db_rollback(db);
    mf_diag_prefix(diag, m->name);
    return rc;
}

static enum mf_err db__migrate_locked(struct mf_db *db, int *applied, struct mf_diag *diag)
{
    PGresult *res = NULL;
    enum mf_err rc;
    int n = 0;

    rc = mf_db_script(db,
                      "CREATE TABLE IF NOT EXISTS schema_migrations ("
                      " version integer PRIMARY KEY, name text NOT NULL,"
                      " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
                      diag);
    if (rc != MF_OK)
        return rc;
    rc = mf_db_exec(db, "SELECT version, name, checksum FROM schema_migrations ORDER BY version", 0,
                    NULL, &res, diag);
    if (rc != MF_OK)
        return rc;
    int rows = PQntuples(res);
    for (int r = 0; r < rows; r++) {
        int v = atoi(PQgetvalue(res, r, 0));
        const struct mf_migration *m = NULL;
        for (unsigned i = 0; i < mf_migrations_count; i++)
            if (mf_migrations[i].version == v)
                m = &mf_migrations[i];
        if (!m) {
            rc = mf_diag_set(diag, MF_ERR_VERSION, "schema",
                             "the database has migration %s, which this server does not know "
                             "(a newer server migrated it)",
                             PQgetvalue(res, r, 1));
            goto out;
        }
        char sum[2 * MF_HASH_BYTES + 1];
        db__checksum(m->sql, sum);
        if (strcmp(sum, PQgetvalue(res, r, 2)) != 0) {
            rc = mf_diag_set(diag, MF_ERR_VERSION, "schema",
                             "migration %s differs from the one applied to the database "
                             "(migrations are forward-only: add a new file instead)",
                             m->name);
            goto out;
        }
    }
    for (unsigned i = 0; i < mf_migrations_count; i++) {
        const struct mf_migration *m = &mf_migrations[i];
        bool done = false;
        for (int r = 0; r < rows && !done; r++)
            done = atoi(PQgetvalue(res, r, 0)) == m->version;
        if (done)
            continue;
        char sum[2 * MF_HASH_BYTES + 1];
        db__checksum(m->sql, sum);
        rc = db__apply(db, m, sum, diag);
        if (rc != MF_OK)
            goto out;
        mf_log(MF_LOG_INFO, "migration applied name=%s", m->name);
        n++;
    }
    if (applied)
        *applied = n;
out:
    PQclear(res);
    return rc;
}

enum mf_err mf_db_migrate(struct mf_db *db, int *applied, struct mf_diag *diag)
{
    enum mf_err rc =
        mf_db_exec(db, "SELECT pg_advisory_lock(" DB_MIGRATE_LOCK ")", 0, NULL, NULL, diag);
    if (rc != MF_OK)
        return rc;
    rc = db__migrate_locked(db, applied, diag);
    /* A lost connection releases the lock by itself. */
    if (mf_db_exec(db, "SELECT pg_advisory_unlock(" DB_MIGRATE_LOCK ")", 0, NULL, NULL, NULL) !=
        MF_OK) {
        /* best effort */
    }
    return rc;
}
