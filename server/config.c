/* config.c — the server's config table and its loader. */
#include "server/config.h"

#include <errno.h>
#include <netdb.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/mem.h"
#include "packaging/key.h"

#define SO(f) offsetof(struct mf_server_config, f)

const struct mf_cfg_key mf_server_config_table[] = {
    {"listen", MF_CFG_STR, SO(listen), "127.0.0.1:8080", 0, 0, "HTTP listen address host:port"},
    {"database_url", MF_CFG_STR, SO(database_url), "postgresql:///modelfleet", 0, 0,
     "PostgreSQL connection URL or libpq conninfo"},
    {"data_dir", MF_CFG_STR, SO(data_dir), "/var/lib/modelfleet", 0, 0,
     "directory for package blobs (must exist)"},
    {"signing_key", MF_CFG_STR, SO(signing_key), "/etc/modelfleet/server.key", 0, 0,
     "the server's Ed25519 secret key file (mode 0600)"},
    {"publisher_keys", MF_CFG_LIST, SO(publisher_keys), NULL, 0, 0,
     "public key files of trusted publishers, comma-separated"},
    {"require_publisher_signature", MF_CFG_BOOL, SO(require_publisher_signature), "false", 0, 0,
     "refuse uploads not signed by a publisher key"},
    {"max_upload", MF_CFG_SIZE, SO(max_upload), "4G", 1024, 1099511627776.0,
     "largest package upload, bytes (K/M/G suffixes)"},
    {"max_json_body", MF_CFG_SIZE, SO(max_json_body), "64K", 256, 16777216.0,
     "largest JSON request body"},
    {"max_json_depth", MF_CFG_INT, SO(max_json_depth), "32", 2, 1000, "deepest JSON nesting"},
    {"http_threads", MF_CFG_INT, SO(http_threads), "0", 0, 256,
     "HTTP worker threads, each with its own database connection (0 = one per CPU)"},
    {"db_connect_timeout", MF_CFG_INT, SO(db_connect_timeout), "3", 1, 300,
     "seconds to wait for a database connection"},
    {"shutdown_timeout", MF_CFG_INT, SO(shutdown_timeout), "10", 0, 3600,
     "seconds SIGTERM waits for requests in flight (downloads resume with Range)"},
    {"mqtt_broker", MF_CFG_STR, SO(mqtt_broker), "127.0.0.1:1883", 0, 0,
     "MQTT broker host:port for telemetry ingest and desired states (empty: neither)"},
    {"mqtt_client_id", MF_CFG_STR, SO(mqtt_client_id), "", 0, 0,
     "MQTT client id; set: a persistent session, so the broker keeps what devices send while "
     "the server is down (one id per server); empty: a clean session"},
    {"mqtt_username", MF_CFG_STR, SO(mqtt_username), "", 0, 0,
     "MQTT user name of the server (empty: anonymous)"},
    {"mqtt_password_file", MF_CFG_STR, SO(mqtt_password_file), "", 0, 0,
     "file holding the MQTT password (first line)"},
    {"ingest_batch", MF_CFG_INT, SO(ingest_batch), "256", 1, 10000,
     "telemetry messages written per database transaction (at most; or every 200 ms)"},
    {"ingest_queue", MF_CFG_INT, SO(ingest_queue), "10000", 16, 1000000,
     "telemetry messages waiting for the database; beyond, new ones are dropped (counted)"},
    {"controller_interval_ms", MF_CFG_INT, SO(controller_interval_ms), "1000", 0, 3600000,
     "rollout controller: milliseconds between steps (0: no controller in this process)"},
    {"log_level", MF_CFG_STR, SO(log_level), "info", 0, 0, "debug, info, warn or error"},
    {NULL, 0, 0, NULL, 0, 0, NULL},
};

enum mf_err mf_server_config_load(struct mf_server_config *c, int argc, char **argv, int first,
                                  struct mf_diag *diag)
{
    return mf_cfg_load_args(mf_server_config_table, c, argc, argv, first, NULL, NULL, diag);
}

enum mf_err mf_server_config_check(const struct mf_server_config *c, struct mf_diag *diag)
{
    struct mf_key_secret key;
    struct mf_keyring ring = {0};
    enum mf_log_level lvl;
    struct stat st;
    char *host = NULL;
    int port;
    enum mf_err rc;

    if (mf_split_hostport(c->listen, &host, &port) != MF_OK)
        return mf_diag_set(diag, MF_ERR_SCHEMA, "listen", "\"%s\" is not host:port", c->listen);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST}, *ai = NULL;
    int gai = getaddrinfo(host, NULL, &hints, &ai);
    if (ai)
        freeaddrinfo(ai);
    if (gai != 0) {
        rc = mf_diag_set(diag, MF_ERR_SCHEMA, "listen",
                         "\"%s\" is not a numeric address (use 127.0.0.1, 0.0.0.0 or [::1])", host);
        free(host);
        return rc;
    }
    free(host);
    host = NULL;
    if (*c->mqtt_broker && mf_split_hostport(c->mqtt_broker, &host, &port) != MF_OK)
        return mf_diag_set(diag, MF_ERR_SCHEMA, "mqtt_broker", "\"%s\" is not host:port",
                           c->mqtt_broker);
    free(host);
    if (mf_log_parse_level(c->log_level, &lvl) != MF_OK)
        return mf_diag_set(diag, MF_ERR_SCHEMA, "log_level", "\"%s\" is not debug|info|warn|error",
                           c->log_level);
    if (!c->database_url || !*c->database_url)
        return mf_diag_set(diag, MF_ERR_SCHEMA, "database_url", "is empty");
    if (stat(c->data_dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return mf_diag_set(diag, MF_ERR_SCHEMA, "data_dir", "%s is not a directory", c->data_dir);
    if (access(c->data_dir, W_OK | X_OK) != 0)
        return mf_diag_errno(diag, errno, "data_dir", "%s is not writable", c->data_dir);
    rc = mf_key_secret_load(c->signing_key, &key, diag);
    sodium_memzero(&key, sizeof key);
    if (rc != MF_OK) {
        mf_diag_prefix(diag, "signing_key");
        return rc;
    }
    for (size_t i = 0; i < c->publisher_keys.n; i++) {
        rc = mf_keyring_load(&ring, c->publisher_keys.v[i], diag);
        if (rc != MF_OK) {
            mf_keyring_free(&ring);
            mf_diag_prefix(diag, "publisher_keys");
            return rc;
        }
    }
    mf_keyring_free(&ring);
    if (c->require_publisher_signature && c->publisher_keys.n == 0)
        return mf_diag_set(diag, MF_ERR_SCHEMA, "require_publisher_signature",
                           "is true but publisher_keys lists no key");
    return MF_OK;
}

unsigned mf_server_http_threads(const struct mf_server_config *c)
{
    long n = c->http_threads > 0 ? (long)c->http_threads : sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1u : (unsigned)n;
}

void mf_server_config_free(struct mf_server_config *c)
{
    mf_cfg_free(mf_server_config_table, c);
}
