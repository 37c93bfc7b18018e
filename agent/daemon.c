/* daemon.c — the agent's MQTT shell (see daemon.h for the process and
 * thread split). Invariants: only the main thread touches the spool, the
 * in-flight table and the worker; the spool is open only while no worker
 * runs (the worker writes it); the network thread only calls libmosquitto
 * and fills the mailbox under its mutex; signal handlers only set flags and
 * write one byte to the main thread's wake-up pipe. */
#define _GNU_SOURCE
#include "daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <inttypes.h>
#include <mosquitto.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent/reconcile.h"
#include "agent/runner.h"
#include "agent/spool.h"
#include "agent/state.h"
#include "agent/statemsg.h"
#include "common/clock.h"
#include "common/encode.h"
#include "common/fs.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/mem.h"
#include "telemetry/devmsg.h"

static volatile sig_atomic_t daemon_stop;
static int signal_pipe = -1; /* write end of the main thread's wake-up pipe */

static void on_signal(int sig)
{
    (void)sig;
    int saved = errno;
    daemon_stop = 1;
    if (signal_pipe >= 0) {
        ssize_t w = write(signal_pipe, "s", 1);
        (void)w;
    }
    errno = saved;
}

/* Filled by the network thread, emptied by the main thread. */
struct mailbox {
    pthread_mutex_t mu;
    bool connected;
    unsigned generation; /* +1 per successful CONNACK */
    uint8_t *desired;    /* the latest desired message not yet taken */
    size_t desired_len;
    int *acks; /* mids of acknowledged publishes */
    size_t n_acks, cap_acks;
};

struct inflight {
    int mid;
    uint64_t msg;
};

struct daemon {
    const struct mf_agent_config *cfg;
    struct mosquitto *mosq;
    char *host;
    int port;
    char topics[MF_DEVMSG__COUNT][MF_TOPIC_MAX];
    int wake_main[2], wake_net[2];
    struct mailbox mb;
    volatile sig_atomic_t net_quit;

    /* main thread only */
    struct mf_spool *spool; /* NULL while the worker runs */
    char *spool_dir, *desired_in;
    uint64_t last_msg, dropped; /* for the state message */
    uint64_t *acks;             /* acknowledged while the spool was closed */
    size_t n_acks;
    char **worker_argv; /* modelfleet-agent <config flags> apply [FILE] */
    size_t worker_argc; /* without the optional FILE */
    char *cwd;
    pid_t worker;  /* -1: none */
    int worker_fd; /* its stdout: one line per change */
    char line[64]; /* a partial line from the worker */
    size_t line_len;
    uint64_t *live; /* messages the worker stored, in order, while it runs */
    size_t n_live;
    bool live_ok;    /* they may go out at once: everything older has */
    uint8_t *queued; /* the newest desired state waiting for the worker */
    size_t queued_len;
    int64_t retry_at; /* monotonic ns; 0 = no retry pending */
    unsigned retry_s;
    bool connected;
    unsigned generation;
    bool state_dirty;
    struct inflight inflight[MF_DAEMON_WINDOW];
    size_t n_inflight;
    uint64_t published_upto; /* highest spool number published on this connection */
};

static void wake(int fd)
{
    ssize_t w = write(fd, "w", 1);
    (void)w;
}

static void drain(int fd)
{
    char buf[64];
    while (read(fd, buf, sizeof buf) > 0)
        ;
}

/* ---- network thread: libmosquitto callbacks ---- */

static void cb_connect(struct mosquitto *mosq, void *obj, int rc)
{
    struct daemon *d = obj;
    if (rc != 0) {
        mf_log(MF_LOG_WARN, "mqtt: broker refused the connection: %s device=%s",
               mosquitto_connack_string(rc), d->cfg->device_id);
        return;
    }
    mf_log(MF_LOG_INFO, "mqtt: connected to %s:%d device=%s", d->host, d->port, d->cfg->device_id);
    (void)mosquitto_subscribe(mosq, NULL, d->topics[MF_DEVMSG_DESIRED], 1);
    (void)mosquitto_publish(mosq, NULL, d->topics[MF_DEVMSG_ONLINE], 1, "1", 1, true);
    pthread_mutex_lock(&d->mb.mu);
    d->mb.connected = true;
    d->mb.generation++;
    pthread_mutex_unlock(&d->mb.mu);
    wake(d->wake_main[1]);
}

static void cb_disconnect(struct mosquitto *mosq, void *obj, int rc)
{
    struct daemon *d = obj;
    (void)mosq;
    pthread_mutex_lock(&d->mb.mu);
    bool was = d->mb.connected;
    d->mb.connected = false;
    pthread_mutex_unlock(&d->mb.mu);
    if (was)
        mf_log(rc ? MF_LOG_WARN : MF_LOG_INFO, "mqtt: disconnected (%s) device=%s",
               rc ? mosquitto_strerror(rc) : "clean", d->cfg->device_id);
    wake(d->wake_main[1]);
}

static void cb_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *m)
{
    struct daemon *d = obj;
    (void)mosq;
    if (!m->topic || strcmp(m->topic, d->topics[MF_DEVMSG_DESIRED]) != 0 || m->payloadlen < 0)
        return;
    /* Keep at most one byte over the cap: enough for the reconciler to
     * refuse it as too large, never a copy of a huge payload. */
    size_t len = (size_t)m->payloadlen;
    if (len > MF_DESIRED_MAX + 1)
        len = MF_DESIRED_MAX + 1;
    uint8_t *copy = mf_xmalloc(len ? len : 1);
    if (len)
        memcpy(copy, m->payload, len);
    pthread_mutex_lock(&d->mb.mu);
    free(d->mb.desired); /* an older one not yet taken is superseded */
    d->mb.desired = copy;
    d->mb.desired_len = len;
    pthread_mutex_unlock(&d->mb.mu);
    wake(d->wake_main[1]);
}

static void cb_publish(struct mosquitto *mosq, void *obj, int mid)
{
    struct daemon *d = obj;
    (void)mosq;
    pthread_mutex_lock(&d->mb.mu);
    if (d->mb.n_acks == d->mb.cap_acks) {
        d->mb.cap_acks = d->mb.cap_acks ? 2 * d->mb.cap_acks : 64;
        d->mb.acks = mf_xreallocarray(d->mb.acks, d->mb.cap_acks, sizeof *d->mb.acks);
    }
    d->mb.acks[d->mb.n_acks++] = mid;
    pthread_mutex_unlock(&d->mb.mu);
    wake(d->wake_main[1]);
}

/* ---- network thread: the loop ---- */

static uint64_t backoff_next(const struct mf_agent_config *c, unsigned *failures)
{
    uint64_t d = (uint64_t)c->reconnect_min_ms;
    for (unsigned i = 0; i < *failures && d < (uint64_t)c->reconnect_max_ms; i++)
        d *= 2;
    if (d > (uint64_t)c->reconnect_max_ms)
        d = (uint64_t)c->reconnect_max_ms;
    if (*failures < 64)
        (*failures)++;
    return mf_clock_jitter(d);
}

/* Sleeps up to ms, or until the main thread wakes us. */
static void net_sleep(struct daemon *d, uint64_t ms)
{
    struct pollfd p = {.fd = d->wake_net[0], .events = POLLIN};
    if (poll(&p, 1, ms > INT32_MAX ? INT32_MAX : (int)ms) > 0)
        drain(d->wake_net[0]);
}

static void *net_main(void *arg)
{
    struct daemon *d = arg;
    const struct mf_agent_config *c = d->cfg;
    bool have_socket = false, ever = false;
    unsigned failures = 0, generation = 0;
    uint64_t delay = 0;
    int rc;

    while (!d->net_quit) {
        if (!have_socket) {
            if (delay)
                net_sleep(d, delay);
            if (d->net_quit)
                break;
            rc = ever ? mosquitto_reconnect(d->mosq)
                      : mosquitto_connect(d->mosq, d->host, d->port, (int)c->keepalive);
            if (rc != MOSQ_ERR_SUCCESS) {
                delay = backoff_next(c, &failures);
                mf_log(failures == 1 ? MF_LOG_WARN : MF_LOG_DEBUG,
                       "mqtt: cannot connect to %s:%d: %s; next try in %" PRIu64 " ms device=%s",
                       d->host, d->port,
                       rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc), delay,
                       c->device_id);
                continue;
            }
            ever = have_socket = true;
        }
        int sock = mosquitto_socket(d->mosq);
        if (sock < 0) {
            have_socket = false;
            delay = backoff_next(c, &failures);
            continue;
        }
        struct pollfd p[2] = {
            {.fd = sock, .events = (short)(POLLIN | (mosquitto_want_write(d->mosq) ? POLLOUT : 0))},
            {.fd = d->wake_net[0], .events = POLLIN}};
        (void)poll(p, 2, (int)(c->keepalive * 250));
        if (p[1].revents)
            drain(d->wake_net[0]);
        rc = MOSQ_ERR_SUCCESS;
        if (p[0].revents & (POLLIN | POLLHUP | POLLERR))
            rc = mosquitto_loop_read(d->mosq, 1);
        if (rc == MOSQ_ERR_SUCCESS && mosquitto_want_write(d->mosq))
            rc = mosquitto_loop_write(d->mosq, 1);
        if (rc == MOSQ_ERR_SUCCESS)
            rc = mosquitto_loop_misc(d->mosq);
        pthread_mutex_lock(&d->mb.mu);
        bool up = d->mb.connected;
        unsigned gen = d->mb.generation;
        pthread_mutex_unlock(&d->mb.mu);
        if (up && gen != generation) { /* a CONNACK: the link works again */
            generation = gen;
            failures = 0;
        }
        if (rc != MOSQ_ERR_SUCCESS || mosquitto_socket(d->mosq) < 0) {
            cb_disconnect(d->mosq, d, rc == MOSQ_ERR_SUCCESS ? MOSQ_ERR_CONN_LOST : rc);
            have_socket = false;
            delay = backoff_next(c, &failures);
        }
    }
    /* Stopping: send what the main thread queued last (online "0", DISCONNECT). */
    int64_t until = mf_clock_mono_ns() + 2000LL * 1000 * 1000;
    while (have_socket && mosquitto_socket(d->mosq) >= 0 && mosquitto_want_write(d->mosq) &&
           mf_clock_mono_ns() < until) {
        struct pollfd p = {.fd = mosquitto_socket(d->mosq), .events = POLLOUT};
        if (poll(&p, 1, 100) > 0 && mosquitto_loop_write(d->mosq, 1) != MOSQ_ERR_SUCCESS)
            break;
    }
    return NULL;
}

/* ---- main thread: the outbox and the state ---- */

static void publish_state(struct daemon *d)
{
    struct mf_state *s = NULL;
    struct mf_diag diag = {0};
    if (mf_state_load(d->cfg->state_dir, &s, &diag) != MF_OK) {
        mf_log(MF_LOG_WARN, "state: %s: %s", diag.where, diag.what);
        return;
    }
    size_t len;
    char *text = mf_state_message(d->cfg, s, d->last_msg, d->dropped, &len);
    mf_state_free(s);
    int rc = mosquitto_publish(d->mosq, NULL, d->topics[MF_DEVMSG_STATE], (int)len, text, 1, true);
    free(text);
    if (rc == MOSQ_ERR_SUCCESS)
        d->state_dirty = false;
}

/* While the worker runs: the messages it reported, read from their files. */
static void publish_live(struct daemon *d)
{
    for (size_t i = 0; d->live_ok && i < d->n_live && d->n_inflight < MF_DAEMON_WINDOW; i++) {
        uint64_t msg = d->live[i];
        enum mf_devmsg_kind kind;
        uint8_t *payload = NULL;
        size_t len = 0;
        struct mf_diag diag = {0};
        if (msg <= d->published_upto)
            continue;
        if (mf_spool_peek(d->spool_dir, msg, &kind, &payload, &len, &diag) != MF_OK) {
            d->live_ok = false; /* dropped already? the rest goes after the worker */
            return;
        }
        int mid = 0;
        int rc = mosquitto_publish(d->mosq, &mid, d->topics[kind], (int)len, payload, 1, false);
        free(payload);
        if (rc != MOSQ_ERR_SUCCESS)
            return;
        d->inflight[d->n_inflight++] = (struct inflight){mid, msg};
        d->published_upto = msg;
    }
}

static void publish_spool(struct daemon *d)
{
    struct mf_spool *sp = d->spool;
    if (!sp) {
        publish_live(d);
        return;
    }
    size_t n = sp ? mf_spool_count(sp) : 0;
    for (size_t i = 0; i < n && d->n_inflight < MF_DAEMON_WINDOW; i++) {
        uint64_t msg = mf_spool_number(sp, i);
        enum mf_devmsg_kind kind;
        uint8_t *payload = NULL;
        size_t len = 0;
        struct mf_diag diag = {0};
        if (msg <= d->published_upto)
            continue; /* in flight on this connection */
        if (mf_spool_get(sp, i, &msg, &kind, &payload, &len, &diag) != MF_OK) {
            /* Unreadable (damaged storage): dropped, so it cannot block the rest. */
            mf_log(MF_LOG_WARN, "spool: %s: %s; message %" PRIu64 " dropped", diag.where, diag.what,
                   msg);
            if (mf_spool_ack(sp, msg, &diag) != MF_OK)
                break;
            n--;
            i--;
            continue;
        }
        int mid = 0;
        int rc = mosquitto_publish(d->mosq, &mid, d->topics[kind], (int)len, payload, 1, false);
        free(payload);
        if (rc != MOSQ_ERR_SUCCESS)
            break; /* connection gone: everything is resent on the next connect */
        d->inflight[d->n_inflight++] = (struct inflight){mid, msg};
        d->published_upto = msg;
    }
}

static void ack(struct daemon *d, uint64_t msg)
{
    struct mf_diag diag = {0};
    if (!d->spool) { /* the worker owns the spool now: later */
        d->acks = mf_xreallocarray(d->acks, d->n_acks + 1, sizeof *d->acks);
        d->acks[d->n_acks++] = msg;
    } else if (mf_spool_ack(d->spool, msg, &diag) != MF_OK) {
        mf_log(MF_LOG_WARN, "spool: %s: %s", diag.where, diag.what);
    }
}

/* Opens the spool (after the worker ended) and applies the acks that came
 * meanwhile. */
static void spool_open(struct daemon *d)
{
    struct mf_spool_limits lim = {.max_bytes = d->cfg->spool_max_bytes,
                                  .max_messages = (uint64_t)d->cfg->spool_max_messages};
    struct mf_diag diag = {0};
    if (d->spool)
        return;
    if (mf_spool_open(d->spool_dir, &lim, &d->spool, &diag) != MF_OK) {
        mf_log(MF_LOG_ERROR, "spool: %s: %s", diag.where, diag.what);
        return;
    }
    for (size_t i = 0; i < d->n_acks; i++)
        ack(d, d->acks[i]);
    free(d->acks);
    d->acks = NULL;
    d->n_acks = 0;
    d->last_msg = mf_spool_next(d->spool) - 1;
    d->dropped = mf_spool_dropped(d->spool);
}

/* Takes the mailbox: connection changes, acks, and (with take_desired) the
 * newest desired message, which the caller then owns. Publishes spool
 * messages up to the window, then the state when it changed. */
static uint8_t *flush(struct daemon *d, bool take_desired, size_t *desired_len)
{
    uint8_t *desired = NULL;
    int *acks;
    size_t n_acks;

    pthread_mutex_lock(&d->mb.mu);
    bool connected = d->mb.connected;
    unsigned gen = d->mb.generation;
    acks = d->mb.acks;
    n_acks = d->mb.n_acks;
    d->mb.acks = NULL;
    d->mb.n_acks = d->mb.cap_acks = 0;
    if (take_desired && d->mb.desired) {
        desired = d->mb.desired;
        *desired_len = d->mb.desired_len;
        d->mb.desired = NULL;
    }
    pthread_mutex_unlock(&d->mb.mu);

    for (size_t i = 0; i < n_acks; i++) {
        for (size_t k = 0; k < d->n_inflight; k++) {
            if (d->inflight[k].mid != acks[i])
                continue;
            ack(d, d->inflight[k].msg);
            d->inflight[k] = d->inflight[--d->n_inflight];
            break;
        }
    }
    free(acks);
    if (!connected || gen != d->generation) { /* a new connection resends everything */
        d->live_ok = false;                   /* ... after the worker, in order */
        d->n_inflight = 0;
        d->published_upto = 0;
        d->state_dirty = true;
        d->generation = gen;
    }
    d->connected = connected;
    if (connected) {
        publish_spool(d); /* events first: the state names the last one */
        if (d->state_dirty)
            publish_state(d);
        wake(d->wake_net[1]);
    }
    return desired;
}

/* ---- main thread: the worker ---- */

/* Starts `modelfleet-agent apply [desired.in]`: it recovers, resumes a
 * pending desired state, applies the given one, and exits 0, or 75 when a
 * download could not reach the server. */
static void worker_start(struct daemon *d, bool with_desired)
{
    int p[2];
    struct mf_diag diag = {0};
    if (pipe2(p, O_CLOEXEC) != 0) {
        mf_log(MF_LOG_ERROR, "worker: cannot make a pipe: %s", strerror(errno));
        d->retry_at = mf_clock_mono_ns() + (int64_t)d->retry_s * 1000000000;
        return;
    }
    /* What the worker stores can go out at once only if everything older
     * already has, on this connection. */
    size_t n = d->spool ? mf_spool_count(d->spool) : 0;
    d->live_ok = d->connected && (n == 0 || mf_spool_number(d->spool, n - 1) <= d->published_upto);
    d->n_live = 0;
    d->line_len = 0;
    mf_spool_close(d->spool); /* the worker writes it now */
    d->spool = NULL;
    d->worker_argv[d->worker_argc] = with_desired ? d->desired_in : NULL;
    if (mf_runner_spawn(d->worker_argv, d->cwd, p[1], &d->worker, &diag) != MF_OK) {
        mf_log(MF_LOG_ERROR, "worker: %s: %s", diag.where, diag.what);
        d->worker = -1;
        close(p[0]);
        spool_open(d);
        d->retry_at = mf_clock_mono_ns() + (int64_t)d->retry_s * 1000000000;
    } else {
        d->worker_fd = p[0];
        (void)fcntl(p[0], F_SETFL, O_NONBLOCK);
        mf_log(MF_LOG_DEBUG, "worker %ld started%s device=%s", (long)d->worker,
               with_desired ? " with a desired state" : "", d->cfg->device_id);
    }
    close(p[1]);
}

/* A new desired state: to the worker now, or after the running one ends. */
static void desired_arrived(struct daemon *d, uint8_t *msg, size_t len)
{
    struct mf_diag diag = {0};
    if (d->worker > 0) {
        free(d->queued);
        d->queued = msg;
        d->queued_len = len;
        return;
    }
    if (mf_fs_write_file(d->desired_in, msg, len, 0600, &diag) != MF_OK)
        mf_log(MF_LOG_ERROR, "desired: %s: %s", diag.where, diag.what);
    else
        worker_start(d, true);
    free(msg);
}

/* The worker's pipe: a line per change (publish the state); EOF = it ended. */
static void worker_read(struct daemon *d)
{
    char buf[512];
    ssize_t r;
    while ((r = read(d->worker_fd, buf, sizeof buf)) > 0) {
        d->state_dirty = true;
        for (ssize_t i = 0; i < r; i++) {
            if (buf[i] != '\n') {
                if (d->line_len < sizeof d->line - 1)
                    d->line[d->line_len++] = buf[i];
                continue;
            }
            d->line[d->line_len] = '\0';
            d->line_len = 0;
            const char *p = d->line + 2;
            uint64_t msg;
            if (strncmp(d->line, "m ", 2) == 0 && mf_dec_u64(&p, &msg) && !*p) {
                d->live = mf_xreallocarray(d->live, d->n_live + 1, sizeof *d->live);
                d->live[d->n_live++] = msg;
            }
        }
    }
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    int st = 0;
    while (waitpid(d->worker, &st, 0) < 0 && errno == EINTR)
        ;
    close(d->worker_fd);
    d->worker_fd = -1;
    d->worker = -1;
    d->state_dirty = true;
    d->n_live = 0;
    spool_open(d);
    bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (!ok)
        mf_log(MF_LOG_WARN, "worker %s %d%s device=%s",
               WIFEXITED(st) ? "exited with status" : "was killed by signal",
               WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st),
               WIFEXITED(st) && WEXITSTATUS(st) == MF_AGENT_EXIT_PENDING
                   ? " (a download could not reach the server)"
                   : "",
               d->cfg->device_id);
    if (d->queued) {
        uint8_t *msg = d->queued;
        d->queued = NULL;
        desired_arrived(d, msg, d->queued_len);
        return;
    }
    if (ok) {
        d->retry_at = 0;
        d->retry_s = (unsigned)d->cfg->retry_min_s;
        return;
    }
    /* Pending or failed: again later; a desired state the worker never
     * read (desired.in still there) is handed over again. */
    d->retry_at = mf_clock_mono_ns() + (int64_t)d->retry_s * 1000000000;
    mf_log(MF_LOG_INFO, "next attempt in %u s device=%s", d->retry_s, d->cfg->device_id);
    d->retry_s = d->retry_s * 2 > (unsigned)d->cfg->retry_max_s ? (unsigned)d->cfg->retry_max_s
                                                                : d->retry_s * 2;
}

/* SIGTERM to the worker's group; SIGKILL after shutdown_s. */
static void worker_stop(struct daemon *d, unsigned shutdown_s)
{
    if (d->worker <= 0)
        return;
    (void)kill(-d->worker, SIGTERM);
    int64_t until = mf_clock_mono_ns() + (int64_t)shutdown_s * 1000000000;
    while (d->worker > 0) {
        int64_t left = until - mf_clock_mono_ns();
        if (left <= 0) {
            mf_log(MF_LOG_WARN, "worker did not stop in %u s: killed device=%s", shutdown_s,
                   d->cfg->device_id);
            (void)kill(-d->worker, SIGKILL);
            left = 1000000000;
        }
        struct pollfd p = {.fd = d->worker_fd, .events = POLLIN};
        if (poll(&p, 1, (int)(left / 1000000) + 1) >= 0)
            worker_read(d);
    }
}

/* ---- set-up and the main loop ---- */

static enum mf_err daemon_init(struct daemon *d, struct mf_diag *diag)
{
    const struct mf_agent_config *c = d->cfg;
    char *password = NULL;
    enum mf_err err;

    for (int k = 0; k < MF_DEVMSG__COUNT; k++)
        if (mf_topic(d->topics[k], c->device_id, (enum mf_devmsg_kind)k) != MF_OK)
            return mf_diag_set(diag, MF_ERR_SCHEMA, "device_id", "cannot be used in a topic");
    if (mf_split_hostport(c->broker, &d->host, &d->port) != MF_OK)
        return mf_diag_set(diag, MF_ERR_SCHEMA, "broker", "\"%s\" is not host:port", c->broker);
    if ((err = mf_cfg_secret(c->broker_password_file, &password, diag)) != MF_OK)
        return err;
    d->mosq = mosquitto_new(c->device_id, true, d);
    if (!d->mosq) {
        free(password);
        return mf_diag_errno(diag, errno, "mqtt", "cannot create the client");
    }
    mosquitto_threaded_set(d->mosq, true);
    mosquitto_connect_callback_set(d->mosq, cb_connect);
    mosquitto_disconnect_callback_set(d->mosq, cb_disconnect);
    mosquitto_message_callback_set(d->mosq, cb_message);
    mosquitto_publish_callback_set(d->mosq, cb_publish);
    int rc = mosquitto_will_set(d->mosq, d->topics[MF_DEVMSG_ONLINE], 1, "0", 1, true);
    if (rc == MOSQ_ERR_SUCCESS)
        rc = mosquitto_username_pw_set(d->mosq, c->device_id, password);
    if (rc == MOSQ_ERR_SUCCESS && c->broker_cafile && c->broker_cafile[0])
        rc = mosquitto_tls_set(d->mosq, c->broker_cafile, NULL, NULL, NULL, NULL);
    if (password) {
        memset(password, 0, strlen(password));
        free(password);
    }
    if (rc != MOSQ_ERR_SUCCESS)
        return mf_diag_set(diag, MF_ERR_SCHEMA, "broker", "cannot set up the client: %s",
                           mosquitto_strerror(rc));
    return MF_OK;
}

/* Holds <state_dir>/daemon.lock for the daemon's life, so a second daemon
 * and the local install / rollback commands see it running. */
static enum mf_err daemon_lock(const struct mf_agent_config *c, int *fd, struct mf_diag *diag)
{
    char *path = mf_xasprintf("%s/" MF_AGENT_DAEMON_LOCK, c->state_dir);
    enum mf_err err = MF_OK;
    if (mkdir(c->state_dir, 0700) != 0 && errno != EEXIST)
        err = mf_diag_errno(diag, errno, c->state_dir, "cannot create the state directory");
    else if ((*fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0)
        err = mf_diag_errno(diag, errno, path, "cannot open");
    else if (flock(*fd, LOCK_EX | LOCK_NB) != 0)
        err = mf_diag_set(diag, MF_ERR_CONFLICT, path, "another modelfleet-agent daemon runs");
    else {
        char pid[32];
        int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
        if (ftruncate(*fd, 0) != 0 || pwrite(*fd, pid, (size_t)n, 0) != n)
            err = mf_diag_errno(diag, errno, path, "cannot write");
    }
    free(path);
    return err;
}

enum mf_err mf_agent_daemon(const struct mf_agent_config *c, const char *worker,
                            char *const *config_args, size_t n_config_args, struct mf_diag *diag)
{
    struct daemon d;
    enum mf_err err;
    pthread_t net;
    bool net_started = false;
    int lock_fd = -1;
    memset(&d, 0, sizeof d);
    d.cfg = c;
    d.worker = -1;
    d.worker_fd = -1;
    d.retry_s = (unsigned)c->retry_min_s;
    d.wake_main[0] = d.wake_main[1] = d.wake_net[0] = d.wake_net[1] = -1;
    d.spool_dir = mf_xasprintf("%s/" MF_AGENT_SPOOL, c->state_dir);
    d.desired_in = mf_xasprintf("%s/" MF_AGENT_DESIRED_IN, c->state_dir);
    d.cwd = getcwd(NULL, 0);
    d.worker_argv = mf_xcalloc(n_config_args + 4, sizeof *d.worker_argv);
    d.worker_argv[0] = (char *)worker;
    for (size_t i = 0; i < n_config_args; i++)
        d.worker_argv[1 + i] = config_args[i];
    d.worker_argv[1 + n_config_args] = "apply";
    d.worker_argc = 2 + n_config_args;
    pthread_mutex_init(&d.mb.mu, NULL);
    mosquitto_lib_init();

    if (!d.cwd) {
        err = mf_diag_errno(diag, errno, "daemon", "cannot read the working directory");
        goto out;
    }
    if (pipe2(d.wake_main, O_CLOEXEC | O_NONBLOCK) != 0 ||
        pipe2(d.wake_net, O_CLOEXEC | O_NONBLOCK) != 0) {
        err = mf_diag_errno(diag, errno, "daemon", "cannot make pipes");
        goto out;
    }
    signal_pipe = d.wake_main[1];
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (!c->broker || !c->broker[0]) {
        err = mf_diag_set(diag, MF_ERR_SCHEMA, "broker",
                          "is not set: `run` needs a broker (install, status and rollback work "
                          "without one)");
        goto out;
    }
    if ((err = daemon_lock(c, &lock_fd, diag)) != MF_OK || (err = daemon_init(&d, diag)) != MF_OK)
        goto out;
    mf_log(MF_LOG_INFO, "agent %s started device=%s hw_class=%s broker=%s:%d", MF_AGENT_VERSION,
           c->device_id, c->hw_class, d.host, d.port);

    /* Signals go to the main thread only. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    int prc = pthread_create(&net, NULL, net_main, &d);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (prc != 0) {
        err = mf_diag_errno(diag, prc, "daemon", "cannot start the network thread");
        goto out;
    }
    net_started = true;

    /* First a worker without a desired state: it finishes what a crash cut
     * and resumes a pending desired state. */
    worker_start(&d, access(d.desired_in, F_OK) == 0);
    while (!daemon_stop) {
        size_t len = 0;
        uint8_t *msg = flush(&d, true, &len);
        if (msg) {
            desired_arrived(&d, msg, len);
            continue;
        }
        struct pollfd p[2] = {{.fd = d.wake_main[0], .events = POLLIN},
                              {.fd = d.worker_fd, .events = POLLIN}};
        int timeout = -1;
        if (d.retry_at && d.worker <= 0) {
            int64_t left = d.retry_at - mf_clock_mono_ns();
            timeout = left <= 0 ? 0 : (int)(left / 1000000) + 1;
        }
        int r = poll(p, d.worker > 0 ? 2 : 1, timeout);
        if (r > 0 && p[0].revents)
            drain(d.wake_main[0]);
        if (r > 0 && d.worker > 0 && p[1].revents)
            worker_read(&d);
        if (d.worker <= 0 && d.retry_at && mf_clock_mono_ns() >= d.retry_at && !daemon_stop) {
            d.retry_at = 0;
            worker_start(&d, access(d.desired_in, F_OK) == 0);
        }
    }
    mf_log(MF_LOG_INFO, "stopping device=%s", c->device_id);
    worker_stop(&d, MF_DAEMON_WORKER_STOP_S);
    /* Give the broker up to a second to acknowledge what is in flight, so a
     * clean stop leaves less to resend (a resend is harmless: at least once). */
    int64_t until = mf_clock_mono_ns() + 1000LL * 1000 * 1000;
    for (;;) {
        (void)flush(&d, false, NULL);
        int64_t left = until - mf_clock_mono_ns();
        if (!d.connected || d.n_inflight == 0 || left <= 0)
            break;
        struct pollfd p = {.fd = d.wake_main[0], .events = POLLIN};
        if (poll(&p, 1, (int)(left / 1000000) + 1) > 0)
            drain(d.wake_main[0]);
    }
    if (d.connected) {
        (void)mosquitto_publish(d.mosq, NULL, d.topics[MF_DEVMSG_ONLINE], 1, "0", 1, true);
        (void)mosquitto_disconnect(d.mosq);
    }
    err = MF_OK;
out:
    if (net_started) {
        d.net_quit = 1;
        wake(d.wake_net[1]);
        pthread_join(net, NULL);
    }
    worker_stop(&d, 0);
    signal_pipe = -1;
    mf_spool_close(d.spool);
    if (d.mosq)
        mosquitto_destroy(d.mosq);
    mosquitto_lib_cleanup();
    for (int i = 0; i < 2; i++) {
        if (d.wake_main[i] >= 0)
            close(d.wake_main[i]);
        if (d.wake_net[i] >= 0)
            close(d.wake_net[i]);
    }
    if (lock_fd >= 0)
        close(lock_fd);
    free(d.mb.desired);
    free(d.mb.acks);
    pthread_mutex_destroy(&d.mb.mu);
    free(d.host);
    free(d.acks);
    free(d.queued);
    free(d.live);
    free(d.worker_argv);
    free(d.spool_dir);
    free(d.desired_in);
    free(d.cwd);
    return err;
}

/* The directory of the running executable + "/" + name (caller frees), or
 * NULL. */
char *mf_agent_sibling(const char *name)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return NULL;
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (!slash)
        return NULL;
    *slash = '\0';
    return mf_xasprintf("%s/%s", self, name);
}

int mf_agentd_main(int argc, char **argv)
{
    struct mf_agent_config cfg;
    struct mf_diag d = {0};
    int rest = argc, rc = 1;
    char *worker = NULL;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: modelfleet-agentd [--config FILE] [--KEY VALUE ...] [run]\n"
                   "The daemon that `modelfleet-agent run` starts (see modelfleet-agent "
                   "--help);\nits work runs in `modelfleet-agent apply`, found next to it.\n");
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("modelfleet-agentd %s\n", MF_AGENT_VERSION);
            return 0;
        }
    }
    if (mf_agent_config_load(&cfg, argc, argv, 1, &rest, &d) != MF_OK) {
        fprintf(stderr, "modelfleet-agentd: %s%s%s\n", d.where, d.where[0] ? ": " : "", d.what);
        return 2;
    }
    enum mf_log_level lvl;
    if (mf_log_parse_level(cfg.log_level, &lvl) == MF_OK)
        mf_log_set_level(lvl);
    if (rest < argc && !(strcmp(argv[rest], "run") == 0 && rest + 1 == argc)) {
        fprintf(stderr, "modelfleet-agentd: %s: unexpected argument\n", argv[rest]);
        rc = 2;
        goto out;
    }
    mf_crypto_init();
    if (mf_agent_config_check(&cfg, &d) != MF_OK)
        goto fail;
    worker = mf_agent_sibling("modelfleet-agent");
    if (!worker || access(worker, X_OK) != 0) {
        mf_diag_set(&d, MF_ERR_NOT_FOUND, worker ? worker : "modelfleet-agent",
                    "the worker binary is not next to modelfleet-agentd");
        goto fail;
    }
    if (mf_agent_daemon(&cfg, worker, argv + 1, (size_t)(rest - 1), &d) != MF_OK)
        goto fail;
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "modelfleet-agentd: %s%s%s\n", d.where, d.where[0] ? ": " : "", d.what);
    rc = 1;
out:
    free(worker);
    mf_agent_config_free(&cfg);
    return rc;
}
