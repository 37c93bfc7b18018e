/* db.h — one PostgreSQL connection (libpq) owned by one thread, with the
 * outage rules of the server: a connection that is down is re-opened on the
 * next statement; a statement that cannot reach the database fails with
 * MF_ERR_UNAVAILABLE (the API answers 503) instead of taking the process down.
 * Only parameterised statements: values never become SQL text. */
#ifndef MF_SERVER_DB_H
#define MF_SERVER_DB_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "common/err.h"

struct mf_db;

/* A handle that connects lazily. url: libpq URL or conninfo. */
struct mf_db *mf_db_new(const char *url, int connect_timeout_s);
void mf_db_free(struct mf_db *db);

/* Runs one statement with text parameters (NULL = SQL NULL). On MF_OK *out
 * (if not NULL) holds the result, caller PQclear()s it. Errors:
 *  MF_ERR_UNAVAILABLE  cannot connect, connection lost, server shutting down;
 *  MF_ERR_CONFLICT     unique violation (diag->where = constraint name);
 *  MF_ERR_DB           any other refusal (message in diag).
 * A read (SELECT) or BEGIN outside a transaction is retried once on a fresh
 * connection when the old one turns out to be dead. */
MF_MUST_CHECK enum mf_err mf_db_exec(struct mf_db *db, const char *sql, int n,
                                     const char *const *params, PGresult **out,
                                     struct mf_diag *diag);

/* Transactions: mf_db_begin / mf_db_commit; mf_db_rollback never fails
 * (a lost connection rolls back by itself). */
MF_MUST_CHECK enum mf_err mf_db_begin(struct mf_db *db, struct mf_diag *diag);
MF_MUST_CHECK enum mf_err mf_db_commit(struct mf_db *db, struct mf_diag *diag);
void mf_db_rollback(struct mf_db *db);

/* Runs a multi-statement script with no parameters (migrations only). */
MF_MUST_CHECK enum mf_err mf_db_script(struct mf_db *db, const char *sql, struct mf_diag *diag);

/* True when a trivial query succeeds now. */
bool mf_db_ping(struct mf_db *db);

/* Applies the embedded migrations (schema/NNNN_name.sql) that the database
 * lacks, in order, each in its own transaction, under an advisory lock so
 * servers starting together apply each exactly once. Refuses a database whose
 * applied migrations differ from this build's (edited file, newer schema).
 * *applied (may be NULL) gets the number newly applied. */
MF_MUST_CHECK enum mf_err mf_db_migrate(struct mf_db *db, int *applied, struct mf_diag *diag);

#endif
