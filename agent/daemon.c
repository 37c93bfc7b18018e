/* daemon.c — the agent's MQTT shell (see daemon.h for the thread split).
 * Invariants: only the main thread touches the agent, the spool and the
 * in-flight table; the network thread only calls libmosquitto and fills the
 * mailbox under its mutex; signal handlers only set flags and write one byte
 * to the main thread's wake-up pipe. */
#define _GNU_SOURCE
#include "daemon.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <mosquitto.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/download.h"
#include "agent/reconcile.h"
#include "common/clock.h"
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
    char *credential;

    /* main thread only */
    struct mf_agent *ag;
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

/* ---- main thread: publishing ---- */

static void publish_state(struct daemon *d)
{
    size_t len;
    char *text = mf_agent_state_msg(d->ag, &len);
    int rc = mosquitto_publish(d->mosq, NULL, d->topics[MF_DEVMSG_STATE], (int)len, text, 1, true);
    free(text);
    if (rc == MOSQ_ERR_SUCCESS)
        d->state_dirty = false;
}

static void publish_spool(struct daemon *d)
{
    struct mf_spool *sp = mf_agent_spool(d->ag);
    size_t n = mf_spool_count(sp);
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

/* Takes the mailbox: connection changes, acks, and (with take_desired) the
 * newest desired message, which the caller then owns. Publishes the state
 * when it changed and spool messages up to the window. */
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
            struct mf_diag diag = {0};
            if (mf_spool_ack(mf_agent_spool(d->ag), d->inflight[k].msg, &diag) != MF_OK)
                mf_log(MF_LOG_WARN, "spool: %s: %s", diag.where, diag.what);
            d->inflight[k] = d->inflight[--d->n_inflight];
            break;
        }
    }
    free(acks);
    if (!connected || gen != d->generation) { /* a new connection resends everything */
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

static void on_changed(void *ctx)
{
    struct daemon *d = ctx;
    d->state_dirty = true;
    (void)flush(d, false, NULL);
}

static enum mf_err fetch(void *ctx, const struct mf_desired_model *m, const char *dir, char **path,
                         struct mf_diag *diag)
{
    struct daemon *d = ctx;
    const struct mf_agent_config *c = d->cfg;
    struct mf_download_result res;
    struct mf_download_spec spec = {.base_url = c->server_url,
                                    .package_id = m->package,
                                    .size = m->size,
                                    .credential = d->credential,
                                    .dir = dir,
                                    .low_speed_time_s = (long)c->download_timeout,
                                    .max_bytes_per_sec = c->download_rate,
                                    .retries = (unsigned)c->download_retries,
                                    .backoff_ms = (uint64_t)c->download_backoff_ms,
                                    .backoff_max_ms = (uint64_t)c->download_backoff_max_ms,
                                    .stop = &daemon_stop,
                                    .budget = c->disk_budget};
    enum mf_err err = mf_download(&spec, &res, diag);
    mf_log(err == MF_OK ? MF_LOG_INFO : MF_LOG_WARN,
           "download %s device=%s package=%s bytes=%" PRIu64 " attempts=%u resumed=%s cached=%s",
           err == MF_OK ? "done" : "failed", c->device_id, m->package, res.bytes_fetched,
           res.attempts, res.resumed ? "yes" : "no", res.cached ? "yes" : "no");
    if (err == MF_OK) {
        *path = res.path;
        res.path = NULL;
    }
    mf_download_result_free(&res);
    return err;
}

/* ---- set-up and the main loop ---- */

static enum mf_err daemon_init(struct daemon *d, struct mf_diag *diag)
{
    const struct mf_agent_config *c = d->cfg;
    enum mf_err err;
    char *password = NULL;

    for (int k = 0; k < MF_DEVMSG__COUNT; k++)
        if (mf_topic(d->topics[k], c->device_id, (enum mf_devmsg_kind)k) != MF_OK)
            return mf_diag_set(diag, MF_ERR_SCHEMA, "device_id", "cannot be used in a topic");
    if (mf_split_hostport(c->broker, &d->host, &d->port) != MF_OK)
        return mf_diag_set(diag, MF_ERR_SCHEMA, "broker", "\"%s\" is not host:port", c->broker);
    if ((err = mf_agent_config_secret(c->credential_file, &d->credential, diag)) != MF_OK ||
        (err = mf_agent_config_secret(c->broker_password_file, &password, diag)) != MF_OK)
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

enum mf_err mf_agent_daemon(const struct mf_agent_config *c, struct mf_diag *diag)
{
    struct daemon d;
    enum mf_err err;
    pthread_t net;
    bool net_started = false;
    memset(&d, 0, sizeof d);
    d.cfg = c;
    d.wake_main[0] = d.wake_main[1] = d.wake_net[0] = d.wake_net[1] = -1;
    pthread_mutex_init(&d.mb.mu, NULL);
    mosquitto_lib_init();
    curl_global_init(CURL_GLOBAL_DEFAULT);

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
    if ((err = daemon_init(&d, diag)) != MF_OK)
        goto out;
    struct mf_agent_ops ops = {.fetch = c->server_url && c->server_url[0] ? fetch : NULL,
                               .changed = on_changed,
                               .ctx = &d};
    if ((err = mf_agent_open(c, &ops, &daemon_stop, &d.ag, diag)) != MF_OK)
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

    struct mf_diag rd = {0};
    if (mf_agent_resume(d.ag, &rd) != MF_OK)
        mf_log(MF_LOG_DEBUG, "resume: %s", rd.what);
    unsigned retry_s = MF_DAEMON_RETRY_MIN_S;
    while (!daemon_stop) {
        size_t len = 0;
        uint8_t *msg = flush(&d, true, &len);
        if (msg) {
            bool quiet = false;
            struct mf_diag dd = {0};
            if (mf_agent_desired(d.ag, msg, len, &quiet, &dd) != MF_OK)
                mf_log(MF_LOG_DEBUG, "desired state refused: %s", dd.what);
            free(msg);
            retry_s = MF_DAEMON_RETRY_MIN_S;
            continue;
        }
        bool pending = mf_agent_pending(d.ag);
        struct pollfd p = {.fd = d.wake_main[0], .events = POLLIN};
        int r = poll(&p, 1, pending ? (int)retry_s * 1000 : -1);
        if (r > 0)
            drain(d.wake_main[0]);
        else if (r == 0 && pending && !daemon_stop) {
            mf_log(MF_LOG_INFO, "retrying the pending desired state device=%s", c->device_id);
            if (mf_agent_resume(d.ag, &rd) != MF_OK)
                mf_log(MF_LOG_DEBUG, "resume: %s", rd.what);
            retry_s = retry_s * 2 > MF_DAEMON_RETRY_MAX_S ? MF_DAEMON_RETRY_MAX_S : retry_s * 2;
        }
    }
    mf_log(MF_LOG_INFO, "stopping device=%s", c->device_id);
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
    signal_pipe = -1;
    mf_agent_close(d.ag);
    if (d.mosq)
        mosquitto_destroy(d.mosq);
    mosquitto_lib_cleanup();
    curl_global_cleanup();
    for (int i = 0; i < 2; i++) {
        if (d.wake_main[i] >= 0)
            close(d.wake_main[i]);
        if (d.wake_net[i] >= 0)
            close(d.wake_net[i]);
    }
    free(d.mb.desired);
    free(d.mb.acks);
    pthread_mutex_destroy(&d.mb.mu);
    free(d.host);
    if (d.credential) {
        memset(d.credential, 0, strlen(d.credential));
        free(d.credential);
    }
    return err;
}
