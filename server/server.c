/* server.c — modelfleet-server's commands and lifecycle. The main thread
 * loads and checks everything, migrates the database, starts the HTTP
 * workers with SIGINT/SIGTERM blocked, then waits for one of those signals
 * in sigwait(): no handler runs asynchronously. */
#include "server/server.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/mem.h"
#include "server/api.h"
#include "server/http.h"
#include "server/controller.h"
#include "server/ingest.h"
#include "server/store.h"

#define EXIT_USAGE 2

static void server__help(void)
{
    printf("usage: modelfleet-server [serve] [--config FILE] [--KEY VALUE ...]\n"
           "       modelfleet-server --check-config [--config FILE] [--KEY VALUE ...]\n"
           "       modelfleet-server migrate [--config FILE] [--KEY VALUE ...]\n"
           "       modelfleet-server token create --role admin|operator|viewer|enroll --name N\n"
           "                         [--max-uses N] [--expires-in SECONDS] [--config FILE]\n"
           "\nConfig keys (file lines `key = value`, or flags --key value):\n");
    mf_cfg_help(stdout, mf_server_config_table);
}

static void server__db_free(void *db)
{
    mf_db_free(db);
}

struct mf_db *mf_server_db(struct mf_server *s)
{
    struct mf_db *db = pthread_getspecific(s->db_key);
    if (!db) {
        db = mf_db_new(s->cfg.database_url, (int)s->cfg.db_connect_timeout);
        pthread_setspecific(s->db_key, db);
    }
    return db;
}

static int server__fail(const char *what, const struct mf_diag *diag)
{
    char msg[MF_DIAG_STR_MAX];
    fprintf(stderr, "modelfleet-server: %s: %s\n", what, mf_diag_str(diag, msg, sizeof msg));
    return diag->err == MF_ERR_USAGE ? EXIT_USAGE : 1;
}

/* Loads the config (and with `full`, the keys and blob store). */
static int server__open(struct mf_server *s, int argc, char **argv, int first, bool full,
                        bool sweep)
{
    struct mf_diag diag = {0};
    enum mf_log_level lvl;

    memset(s, 0, sizeof *s);
    if (mf_server_config_load(&s->cfg, argc, argv, first, &diag) != MF_OK)
        return server__fail("config", &diag);
    if (mf_log_parse_level(s->cfg.log_level, &lvl) == MF_OK)
        mf_log_set_level(lvl);
    s->db_key_ok = pthread_key_create(&s->db_key, server__db_free) == 0;
    if (!s->db_key_ok) {
        fprintf(stderr, "modelfleet-server: cannot create a thread key\n");
        return 1;
    }
    if (!full)
        return 0;
    if (mf_server_config_check(&s->cfg, &diag) != MF_OK)
        return server__fail("config", &diag);
    if (mf_key_secret_load(s->cfg.signing_key, &s->key, &diag) != MF_OK)
        return server__fail("signing_key", &diag);
    for (size_t i = 0; i < s->cfg.publisher_keys.n; i++)
        if (mf_keyring_load(&s->publishers, s->cfg.publisher_keys.v[i], &diag) != MF_OK)
            return server__fail("publisher_keys", &diag);
    if (mf_blobs_open(&s->blobs, s->cfg.data_dir, sweep, &diag) != MF_OK)
        return server__fail("data_dir", &diag);
    return 0;
}

static void server__close(struct mf_server *s)
{
    if (s->db_key_ok) {
        mf_db_free(pthread_getspecific(s->db_key));
        pthread_setspecific(s->db_key, NULL);
        pthread_key_delete(s->db_key);
        s->db_key_ok = false;
    }
    mf_blobs_close(&s->blobs);
    mf_keyring_free(&s->publishers);
    sodium_memzero(&s->key, sizeof s->key);
    mf_server_config_free(&s->cfg);
}

static int server__migrate(struct mf_server *s)
{
    struct mf_diag diag = {0};
    int n = 0;
    if (mf_db_migrate(mf_server_db(s), &n, &diag) != MF_OK)
        return server__fail("migrate", &diag);
    mf_log(MF_LOG_INFO, "schema up to date (%d migration(s) applied now)", n);
    return 0;
}

/* Waits for the database at start, so a server started before PostgreSQL
 * (or during its restart) comes up once it can. false when signalled. */
static bool server__wait_db(struct mf_server *s, const sigset_t *sigs)
{
    struct timespec delay = {1, 0};
    int waited = 0;
    while (!mf_db_ping(mf_server_db(s))) {
        if (waited++ == 0)
            mf_log(MF_LOG_WARN, "database not reachable yet; retrying");
        if (sigtimedwait(sigs, NULL, &delay) > 0)
            return false;
        if (delay.tv_sec < 10)
            delay.tv_sec *= 2;
    }
    return true;
}

static int server__serve(int argc, char **argv, int first)
{
    struct mf_server s;
    struct mf_diag diag = {0};
    struct mf_ingest *ingest = NULL;
    struct mf_controller *ctl = NULL;
    sigset_t sigs;
    int sig, rc;

    if ((rc = server__open(&s, argc, argv, first, true, true)) != 0)
        goto out;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL); /* inherited by every worker thread */
    signal(SIGPIPE, SIG_IGN);
    if (!server__wait_db(&s, &sigs))
        goto out;
    if ((rc = server__migrate(&s)) != 0)
        goto out;
    if (mf_store_key_register(mf_server_db(&s), &s.key.pub, &diag) != MF_OK) {
        rc = server__fail("signing key", &diag);
        goto out;
    }
    if (*s.cfg.mqtt_broker && mf_ingest_start(&s, &ingest, &diag) != MF_OK) {
        rc = server__fail("ingest", &diag);
        goto out;
    }
    if (s.cfg.controller_interval_ms > 0 && mf_controller_start(&s, &ctl, &diag) != MF_OK) {
        rc = server__fail("controller", &diag);
        mf_ingest_stop(ingest);
        goto out;
    }
    s.controller = ctl;
    if (mf_http_start(&s, mf_api_routes, mf_api_routes_count, &diag) != MF_OK) {
        rc = server__fail("http", &diag);
        mf_controller_stop(ctl);
        mf_ingest_stop(ingest);
        goto out;
    }
    mf_log(MF_LOG_INFO, "modelfleet-server %s listening on %s key=%s threads=%u", MF_VERSION,
           s.cfg.listen, s.key.pub.id, mf_server_http_threads(&s.cfg));
    do {
        sig = sigwaitinfo(&sigs, NULL);
    } while (sig < 0);
    mf_log(MF_LOG_INFO, "signal %d: shutting down (up to %llds for requests in flight)", sig,
           (long long)s.cfg.shutdown_timeout);
    mf_ingest_stop(ingest); /* stores what is queued while requests finish */
    mf_http_drain(&s, (int)s.cfg.shutdown_timeout);
    mf_http_stop(&s);
    /* after the HTTP workers, which may wake it; what is not published yet
     * stays in the outbox */
    s.controller = NULL;
    mf_controller_stop(ctl);
    mf_log(MF_LOG_INFO, "stopped");
out:
    server__close(&s);
    return rc;
}

static int server__check(int argc, char **argv, int first)
{
    struct mf_server s;
    int rc = server__open(&s, argc, argv, first, true, false);
    if (rc == 0)
        printf("configuration ok (signing key %s)\n", s.key.pub.id);
    server__close(&s);
    return rc;
}

static int server__migrate_cmd(int argc, char **argv, int first)
{
    struct mf_server s;
    int rc = server__open(&s, argc, argv, first, false, false);
    if (rc == 0)
        rc = server__migrate(&s);
    server__close(&s);
    return rc;
}

/* `token create`: its own flags are taken out, the rest is config. */
static int server__token(int argc, char **argv)
{
    struct mf_token_spec t = {.created_by = "modelfleet-server token create"};
    const char *role = NULL;
    char **rest = mf_xcalloc((size_t)argc + 1, sizeof *rest);
    char secret[MF_SECRET_LEN + 1];
    struct mf_diag diag = {0};
    struct mf_server s;
    int n = 0, rc;

    if (argc < 3 || strcmp(argv[2], "create") != 0) {
        fprintf(stderr, "modelfleet-server: usage: token create --role R --name N\n");
        free(rest);
        return EXIT_USAGE;
    }
    rest[n++] = argv[0];
    for (int i = 3; i < argc; i++) {
        const char *a = argv[i];
        bool known = strcmp(a, "--role") == 0 || strcmp(a, "--name") == 0 ||
                     strcmp(a, "--max-uses") == 0 || strcmp(a, "--expires-in") == 0;
        if (!known) {
            rest[n++] = argv[i];
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "modelfleet-server: token create: %s needs a value\n", a);
            free(rest);
            return EXIT_USAGE;
        }
        const char *v = argv[++i];
        if (strcmp(a, "--role") == 0)
            role = v;
        else if (strcmp(a, "--name") == 0)
            t.name = v;
        else if (strcmp(a, "--max-uses") == 0)
            t.max_uses = atoll(v);
        else
            t.expires_in = atoll(v);
    }
    if (!role || mf_role_parse(role, &t.role) != MF_OK || !t.name || !*t.name ||
        strlen(t.name) > 128 || t.max_uses < 0 || t.expires_in < 0 ||
        (t.max_uses && t.role != MF_ROLE_ENROLL)) {
        fprintf(stderr, "modelfleet-server: token create needs --role admin|operator|viewer|enroll"
                        " and --name (1-128 bytes); --max-uses is for enroll tokens\n");
        free(rest);
        return EXIT_USAGE;
    }
    rc = server__open(&s, n, rest, 1, false, false);
    if (rc == 0)
        rc = server__migrate(&s);
    if (rc == 0) {
        if (mf_store_token_create(mf_server_db(&s), &t, secret, NULL, &diag) != MF_OK) {
            rc = server__fail("token create", &diag);
        } else {
            printf("%s\n", secret);
            fprintf(stderr, "created %s token \"%s\"; it is shown only this once\n", role, t.name);
        }
        sodium_memzero(secret, sizeof secret);
    }
    server__close(&s);
    free(rest);
    return rc;
}

int mf_server_main(int argc, char **argv)
{
    mf_crypto_init();
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
                     strcmp(argv[1], "help") == 0)) {
        server__help();
        return 0;
    }
    if (argc > 1 && (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0)) {
        printf("modelfleet-server %s\n", MF_VERSION);
        return 0;
    }
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--check-config") == 0) {
            char **rest = mf_xcalloc((size_t)argc, sizeof *rest);
            int n = 0;
            for (int j = 0; j < argc; j++)
                if (j != i)
                    rest[n++] = argv[j];
            int rc = server__check(n, rest, 1);
            free(rest);
            return rc;
        }
    if (argc > 1 && strcmp(argv[1], "migrate") == 0)
        return server__migrate_cmd(argc, argv, 2);
    if (argc > 1 && strcmp(argv[1], "token") == 0)
        return server__token(argc, argv);
    if (argc > 1 && strcmp(argv[1], "serve") == 0)
        return server__serve(argc, argv, 2);
    if (argc > 1 && strncmp(argv[1], "--", 2) != 0) {
        fprintf(stderr, "modelfleet-server: unknown command '%s' (see --help)\n", argv[1]);
        return EXIT_USAGE;
    }
    return server__serve(argc, argv, 1);
}
