/* server.h — modelfleet-server: the process (config, signing key, blob
 * store, HTTP daemon) and its commands (serve, migrate, token create,
 * --check-config). Shared state is read-only after start; each HTTP worker
 * thread owns its own database connection (mf_server_db). */
#ifndef MF_SERVER_SERVER_H
#define MF_SERVER_SERVER_H

#include <pthread.h>
#include <stdbool.h>

#include "packaging/key.h"
#include "server/blobs.h"
#include "server/config.h"
#include "server/db.h"

struct MHD_Daemon;
struct mf_controller;

struct mf_server {
    struct mf_server_config cfg;
    struct mf_key_secret key;     /* the server's signing key */
    struct mf_keyring publishers; /* trusted publisher keys */
    struct mf_blobs blobs;
    pthread_key_t db_key; /* per-thread struct mf_db */
    bool db_key_ok;       /* db_key was created */
    struct MHD_Daemon *mhd;
    void *http;                       /* http.c's routing state */
    struct mf_controller *controller; /* NULL: no controller in this process */
};

/* The calling thread's database connection (created on first use). */
struct mf_db *mf_server_db(struct mf_server *s);

/* `modelfleet-server ...`: returns the process exit code. */
int mf_server_main(int argc, char **argv);

#endif
