/* cli.c — `modelfleet-agent`: parses the command line, loads and checks the
 * config, and hands over to the daemon or to one local command. */
#define _GNU_SOURCE
#include "cli.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "agent/config.h"
#include "agent/daemon.h"
#include "agent/fetch.h"
#include "agent/install.h"
#include "agent/reconcile.h"
#include "agent/state.h"
#include "common/buf.h"
#include "common/fs.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/mem.h"

#define EXIT_USAGE 2

static void cli__help(void)
{
    printf("usage: modelfleet-agent [--config FILE] [--KEY VALUE ...] [run]\n"
           "       modelfleet-agent [...] install PKG.mfpkg\n"
           "       modelfleet-agent [...] status [--json]\n"
           "       modelfleet-agent [...] rollback MODEL\n"
           "       modelfleet-agent --check-config [--config FILE] [--KEY VALUE ...]\n"
           "       modelfleet-agent --version\n"
           "\nThe config file defaults to " MF_AGENT_DEFAULT_CONFIG
           " when it exists. Exit status: 0 done, 1 failed,\n"
           "2 usage error, 3 refused by the activation gate.\n"
           "\nConfig keys (file lines `key = value`, or flags --key value):\n");
    mf_cfg_help(stdout, mf_agent_config_table);
}

static int cli__fail(const struct mf_diag *d)
{
    fprintf(stderr, "modelfleet-agent: %s%s%s\n", d->where, d->where[0] ? ": " : "", d->what);
    return d->err == MF_ERR_USAGE ? EXIT_USAGE : 1;
}

/* ---- status ---- */

static size_t cli__spool_pending(const char *state_dir)
{
    char *dir = mf_xasprintf("%s/" MF_AGENT_SPOOL, state_dir);
    DIR *d = opendir(dir);
    size_t n = 0;
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        const char *dot = strchr(de->d_name, '.');
        if (dot && dot - de->d_name == 20 && de->d_name[0] != '.')
            n++;
    }
    if (d)
        closedir(d);
    free(dir);
    return n;
}

static json_t *cli__version_json(const struct mf_agent_config *c, const char *model,
                                 const struct mf_state_version *v)
{
    if (!v->slot[0])
        return json_null();
    char *path = mf_install_slot_path(c->state_dir, model, v->slot);
    struct mf_diag d = {0};
    bool complete = mf_install_check_slot(path, false, &d) == MF_OK;
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:b}", "version", v->version, "package", v->package,
                          "slot", v->slot, "path", path, "complete", complete);
    free(path);
    return o;
}

static int cli__status(const struct mf_agent_config *c, bool as_json)
{
    struct mf_state *s = NULL;
    struct mf_diag d = {0};
    if (mf_state_load(c->state_dir, &s, &d) != MF_OK)
        return cli__fail(&d);
    if (!s->fresh && strcmp(s->device, c->device_id) != 0) {
        mf_diag_set(&d, MF_ERR_CONFLICT, c->state_dir,
                    "the state directory belongs to device %s, not %s", s->device, c->device_id);
        mf_state_free(s);
        return cli__fail(&d);
    }
    size_t pending = cli__spool_pending(c->state_dir);
    int rc = 0;
    if (as_json) {
        json_t *models = json_array();
        for (size_t i = 0; i < s->n_models; i++)
            json_array_append_new(
                models, json_pack("{s:s, s:o, s:o}", "name", s->models[i].name, "current",
                                  cli__version_json(c, s->models[i].name, &s->models[i].current),
                                  "previous",
                                  cli__version_json(c, s->models[i].name, &s->models[i].previous)));
        json_t *op =
            s->op.kind == MF_STATE_OP_NONE
                ? json_null()
                : json_pack("{s:s, s:s, s:s, s:s}", "kind", mf_state_op_kind_name(s->op.kind),
                            "model", s->op.model, "version", s->op.version, "phase",
                            mf_state_phase_name(s->op.phase));
        json_t *root =
            json_pack("{s:s, s:s, s:s, s:I, s:b, s:o, s:o, s:{s:I}}", "device", c->device_id,
                      "hw_class", c->hw_class, "agent_version", MF_AGENT_VERSION, "desired_seq",
                      (json_int_t)s->desired_seq, "desired_done", s->desired_done, "models", models,
                      "op", op, "spool", "pending", (json_int_t)pending);
        char *text = json_dumps(root, JSON_PRESERVE_ORDER | JSON_INDENT(2));
        puts(text ? text : "{}");
        free(text);
        json_decref(root);
    } else {
        printf("device    %s (%s), agent %s\n", c->device_id, c->hw_class, MF_AGENT_VERSION);
        printf("desired   seq %llu%s\n", (unsigned long long)s->desired_seq,
               s->desired_seq == 0 ? " (none received)"
               : s->desired_done   ? " (applied)"
                                   : " (in progress)");
        if (s->op.kind != MF_STATE_OP_NONE)
            printf("in flight %s %s %s (%s)\n", mf_state_op_kind_name(s->op.kind), s->op.model,
                   s->op.version, mf_state_phase_name(s->op.phase));
        printf("outbox    %zu message(s) waiting for the broker\n\n", pending);
        if (s->n_models == 0) {
            printf("no model installed\n");
        } else {
            printf("%-20s %-14s %-14s %s\n", "MODEL", "CURRENT", "PREVIOUS", "SLOT");
            for (size_t i = 0; i < s->n_models; i++) {
                const struct mf_state_model *m = &s->models[i];
                char *path = mf_install_slot_path(c->state_dir, m->name, m->current.slot);
                struct mf_diag cd = {0};
                bool ok = mf_install_check_slot(path, false, &cd) == MF_OK;
                printf("%-20s %-14s %-14s %s%s\n", m->name, m->current.version,
                       m->previous.slot[0] ? m->previous.version : "-", m->current.slot,
                       ok ? "" : "  (DAMAGED)");
                if (!ok)
                    rc = 1;
                free(path);
            }
        }
    }
    mf_state_free(s);
    return rc;
}

/* ---- local commands ---- */

/* MF_ERR_CONFLICT while a daemon runs on this state directory: local changes
 * would race with the desired states it applies. */
static enum mf_err cli__no_daemon(const struct mf_agent_config *c, struct mf_diag *d)
{
    char *path = mf_xasprintf("%s/" MF_AGENT_DAEMON_LOCK, c->state_dir);
    enum mf_err err = MF_OK;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0 && flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK) {
        char pid[32] = "";
        ssize_t r = pread(fd, pid, sizeof pid - 1, 0);
        pid[r > 0 ? r : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        err = mf_diag_set(d, MF_ERR_CONFLICT, c->state_dir,
                          "the agent daemon (pid %s) is running on this state directory: stop "
                          "it first (systemctl stop modelfleet-agent)",
                          pid[0] ? pid : "?");
    }
    if (fd >= 0)
        close(fd);
    free(path);
    return err;
}

static int cli__local(const struct mf_agent_config *c, const char *cmd, const char *arg)
{
    struct mf_agent *ag = NULL;
    struct mf_diag d = {0};
    enum mf_err err;
    if ((err = cli__no_daemon(c, &d)) != MF_OK ||
        (err = mf_agent_open(c, NULL, NULL, &ag, &d)) != MF_OK)
        return cli__fail(&d);
    if (strcmp(cmd, "install") == 0)
        err = mf_agent_install_file(ag, arg, &d);
    else
        err = mf_agent_rollback(ag, arg, &d);
    int rc = 0;
    if (err == MF_ERR_REFUSED) {
        fprintf(stderr, "modelfleet-agent: %s\n", d.what);
        rc = MF_AGENT_EXIT_REFUSED;
    } else if (err != MF_OK) {
        rc = cli__fail(&d);
    } else {
        const struct mf_state *s = mf_agent_state(ag);
        for (size_t i = 0; i < s->n_models; i++)
            if (strcmp(cmd, "rollback") != 0 || strcmp(s->models[i].name, arg) == 0)
                printf("%s %s is current (%s)\n", s->models[i].name, s->models[i].current.version,
                       s->models[i].current.slot);
    }
    size_t waiting = mf_spool_count(mf_agent_spool(ag));
    if (waiting)
        printf("%zu event(s)/report(s) wait in the outbox for the broker\n", waiting);
    mf_agent_close(ag);
    return rc;
}

/* ---- the daemon's worker ---- */

static volatile sig_atomic_t apply_stop;

static void apply__signal(int sig)
{
    (void)sig;
    apply_stop = 1;
}

/* One line to the daemon per change: "m <n>" for a message stored in the
 * spool (it publishes it at once), "s" for a state change. */
static void apply__changed(void *ctx, uint64_t msg)
{
    (void)ctx;
    char line[32];
    int n = msg ? snprintf(line, sizeof line, "m %llu\n", (unsigned long long)msg)
                : snprintf(line, sizeof line, "s\n");
    ssize_t w = write(STDOUT_FILENO, line, (size_t)n);
    (void)w;
}

/* `apply [FILE]`: recovery, the pending desired state, then FILE's. Exit 0,
 * or MF_AGENT_EXIT_PENDING while a download could not reach the server. */
static int cli__apply(const struct mf_agent_config *c, const char *file)
{
    struct mf_agent_fetcher fetcher;
    struct mf_agent *ag = NULL;
    struct mf_diag d = {0};
    int rc = 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = apply__signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (mf_agent_fetcher_init(&fetcher, c, &apply_stop, &d) != MF_OK)
        return cli__fail(&d);
    struct mf_agent_ops ops = {.fetch = c->server_url && c->server_url[0] ? mf_agent_fetch : NULL,
                               .changed = apply__changed,
                               .ctx = &fetcher};
    if (mf_agent_open(c, &ops, &apply_stop, &ag, &d) != MF_OK) {
        rc = cli__fail(&d);
        goto out;
    }
    if (mf_agent_resume(ag, &d) != MF_OK)
        mf_log(MF_LOG_DEBUG, "resume: %s", d.what);
    if (file && !apply_stop) {
        struct mf_buf b;
        if (mf_fs_read_file(file, MF_DESIRED_MAX + 1, &b, &d) == MF_OK ||
            (d.err == MF_ERR_TOO_LARGE && mf_fs_read_file(file, 1u << 30, &b, &d) == MF_OK)) {
            bool quiet;
            if (mf_agent_desired(ag, b.data ? b.data : (const uint8_t *)"", b.len, &quiet, &d) !=
                MF_OK)
                mf_log(MF_LOG_DEBUG, "desired state refused: %s", d.what);
            mf_buf_free(&b);
        }
        if (!apply_stop)
            (void)unlink(file); /* handled: accepted (and saved) or refused */
    }
    rc = mf_agent_pending(ag) ? MF_AGENT_EXIT_PENDING : 0;
out:
    mf_agent_close(ag);
    mf_agent_fetcher_free(&fetcher);
    return rc;
}

/* `run`: becomes modelfleet-agentd (which links no download or archive
 * library, so the idle daemon stays small). */
static int cli__run(char **argv)
{
    char *agentd = mf_agent_sibling("modelfleet-agentd");
    if (agentd) {
        argv[0] = agentd;
        execv(agentd, argv);
    }
    fprintf(stderr, "modelfleet-agent: %s: cannot start the daemon: %s\n",
            agentd ? agentd : "modelfleet-agentd", strerror(errno));
    free(agentd);
    return 1;
}

int mf_agent_main(int argc, char **argv)
{
    struct mf_agent_config cfg;
    struct mf_diag d = {0};
    bool check = false;
    int rest = argc, rc;
    char **args = mf_xcalloc((size_t)argc + 1, sizeof *args);
    int n = 0;

    for (int i = 0; i < argc; i++) {
        if (i > 0 && (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)) {
            cli__help();
            free(args);
            return 0;
        }
        if (i > 0 && strcmp(argv[i], "--version") == 0) {
            printf("modelfleet-agent %s\n", MF_AGENT_VERSION);
            free(args);
            return 0;
        }
        if (i > 0 && strcmp(argv[i], "--check-config") == 0)
            check = true;
        else
            args[n++] = argv[i];
    }
    if (mf_agent_config_load(&cfg, n, args, 1, &rest, &d) != MF_OK) {
        free(args);
        return cli__fail(&d);
    }
    enum mf_log_level lvl;
    if (mf_log_parse_level(cfg.log_level, &lvl) == MF_OK)
        mf_log_set_level(lvl);
    const char *cmd = rest < n ? args[rest] : "run";
    int nargs = rest < n ? n - rest - 1 : 0;
    char **cargs = args + rest + 1;
    mf_crypto_init();

    if (mf_agent_config_check(&cfg, &d) != MF_OK) {
        rc = cli__fail(&d);
        if (rc == EXIT_USAGE)
            rc = 1;
        goto out;
    }
    if (check) {
        printf("config ok: device %s (%s), %zu runner(s), %zu trusted key(s), broker %s\n",
               cfg.device_id, cfg.hw_class, cfg.runners.n, cfg.trusted_keys.n,
               cfg.broker && cfg.broker[0] ? cfg.broker : "(none: local use only)");
        rc = 0;
        goto out;
    }
    if (strcmp(cmd, "run") == 0 && nargs == 0) {
        mf_agent_config_free(&cfg);
        char **again = mf_xcalloc((size_t)argc + 1, sizeof *again);
        memcpy(again, argv, (size_t)argc * sizeof *again);
        free(args);
        rc = cli__run(again);
        free(again);
        return rc;
    } else if (strcmp(cmd, "apply") == 0 && nargs <= 1) {
        rc = cli__apply(&cfg, nargs ? cargs[0] : NULL);
    } else if (strcmp(cmd, "status") == 0 && nargs <= 1 &&
               (nargs == 0 || strcmp(cargs[0], "--json") == 0)) {
        rc = cli__status(&cfg, nargs == 1);
    } else if ((strcmp(cmd, "install") == 0 || strcmp(cmd, "rollback") == 0) && nargs == 1) {
        rc = cli__local(&cfg, cmd, cargs[0]);
    } else {
        fprintf(stderr, "modelfleet-agent: %s: unknown command or wrong arguments (see --help)\n",
                cmd);
        rc = EXIT_USAGE;
    }
out:
    mf_agent_config_free(&cfg);
    free(args);
    return rc;
}
