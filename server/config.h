/* config.h — modelfleet-server's one config table. A file of `key = value`
 * lines (unknown keys are errors) sets it; `--key value` flags override the
 * file. mf_server_config_check() validates what the table cannot: that the
 * signing key loads, the data directory is usable, the listen address parses. */
#ifndef MF_SERVER_CONFIG_H
#define MF_SERVER_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "common/config.h"
#include "common/err.h"

struct mf_server_config {
    char *listen;       /* host:port */
    char *database_url; /* libpq connection string or URL */
    char *data_dir;     /* blobs/ and tmp/ live here */
    char *signing_key;  /* secret key file, mode 0600 */
    struct mf_strlist publisher_keys;
    bool require_publisher_signature;
    uint64_t max_upload;
    uint64_t max_json_body;
    int64_t max_json_depth;
    int64_t http_threads;           /* 0 = one per online CPU: see mf_server_http_threads() */
    int64_t db_connect_timeout;     /* seconds */
    int64_t shutdown_timeout;       /* seconds to let requests finish on SIGTERM */
    char *mqtt_broker;              /* host:port; "" = no telemetry ingest */
    char *mqtt_client_id;           /* "" = modelfleet-server-<pid>, clean session */
    char *mqtt_username;            /* "" = anonymous */
    char *mqtt_password_file;       /* "" = no password */
    int64_t ingest_batch;           /* messages per transaction */
    int64_t ingest_queue;           /* bounded queue to the ingest writer */
    int64_t controller_interval_ms; /* rollout controller step period; 0 = none */
    char *log_level;
};

extern const struct mf_cfg_key mf_server_config_table[];

/* Defaults, then the file named by `--config FILE` (if any), then every
 * `--key value` / `--key=value` flag of argv[first..argc) ('-' or '_' in key
 * names). Non-flag arguments and flags the table lacks are MF_ERR_USAGE.
 * On error the config is freed. */
MF_MUST_CHECK enum mf_err mf_server_config_load(struct mf_server_config *c, int argc, char **argv,
                                                int first, struct mf_diag *diag);

/* Semantic checks: listen address (numeric), data_dir, signing key,
 * publisher keys. A wrong value is MF_ERR_SCHEMA (or the key loader's code),
 * never MF_ERR_USAGE: that is kept for a malformed command line. */
MF_MUST_CHECK enum mf_err mf_server_config_check(const struct mf_server_config *c,
                                                 struct mf_diag *diag);

/* The HTTP worker count: http_threads, or the number of online CPUs for 0. */
unsigned mf_server_http_threads(const struct mf_server_config *c);

void mf_server_config_free(struct mf_server_config *c);

#endif
