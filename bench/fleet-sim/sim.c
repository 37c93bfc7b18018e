/* sim.c — mf-fleet-sim: one process playing N devices, each with its own
 * MQTT connection, speaking the device protocol of docs/protocol.md with the
 * builders of telemetry/ (mf_devmsg_*_format) and opening every desired state
 * with mf_desired_open against the server's public key (real signature
 * check, seq kept per device). Non-blocking libmosquitto clients driven by
 * one epoll loop; one thread; nothing here is a test, only a load generator
 * for bench/fleet.
 *
 * Modes:
 *   fleet    devices during a rollout: online "1" (last will "0"), retained
 *            state, desired states opened and, after a delay, answered with
 *            events, a benchmark report drawn from the config and a new state
 *   flood    after "go", every device publishes --reports reports, QoS 1, as
 *            fast as the broker acknowledges them (--window in flight each)
 *   listen   devices that only subscribe to their desired topic and record
 *            when a verified desired state arrives (the push baseline)
 * Every device records when its latest verified desired state arrived and
 * when the first one of that rollout did (--arrivals, "dump").
 *   publish  one client that signs --devices desired states and publishes
 *            them retained, QoS 1 (the push baseline's sender)
 *   count    one client that subscribes to --topic and counts messages
 *   classes  prints "id,hw_class" per device (enrollment) and exits
 *   sample   prints one flood report per device, one per line, and exits
 *
 * Control: lines on stdin ("go", "stats", "dump", "quit"; EOF = quit); status
 * lines on stdout, one per event ("ready ...", "flood_done ...", "stats ...").
 * Times are CLOCK_REALTIME microseconds (comparable with PostgreSQL's now()
 * on the same machine).
 *
 * One fd per device: libmosquitto opens a socket pair per client in
 * mosquitto_new() (a wake-up for its threaded loop, unused here). It is
 * made to fail by lowering RLIMIT_NOFILE to the lowest free descriptor for
 * the duration of the call, so 10,000 devices fit in a 20,000 fd limit. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <mosquitto.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/config.h"
#include "common/log.h"
#include "common/mem.h"
#include "fleet.h"
#include "packaging/key.h"
#include "telemetry/desired.h"
#include "telemetry/devmsg.h"

enum mode { M_FLEET, M_FLOOD, M_LISTEN, M_PUBLISH, M_COUNT, M_CLASSES, M_SAMPLE };
enum phase { P_DOWN, P_CONNECTING, P_UP };

#define VERSIONS_MAX 64
#define TICK_MS      20

struct version {
    char version[65];
    char package[MF_HASH_HEX];
};

struct dev {
    struct mosquitto *m;
    int fd;      /* registered with epoll, -1 none */
    uint32_t ev; /* its registered events */
    uint8_t phase;
    bool ready; /* subscribed (fleet, listen) or connected (flood) */
    bool ever;  /* connected once */
    uint8_t cls;
    int8_t cur, prev, want; /* version table indices, -1 none */
    uint64_t msg;           /* last message number produced */
    uint64_t seq;           /* desired seq applied */
    uint64_t act_seq;
    int64_t rollout;                 /* of the last verified desired state */
    int64_t arrived_us;              /* when it arrived */
    int64_t first_rollout, first_us; /* the first desired state of that rollout, when */
    int64_t act_at;                  /* monotonic ms of the pending reaction, 0 none */
    int64_t retry_at;                /* monotonic ms of the next connect attempt */
    uint32_t sent, acked;
};

static struct {
    enum mode mode;
    char *host;
    int port;
    unsigned n;
    unsigned first;
    const char *prefix;
    const char *root; /* topic root, "mf/v1/d/" */
    const char *arrivals;
    const char *count_topic;
    unsigned reports, window, max_connecting, keepalive, inflight;
    uint64_t msg_start, count;
    bool clear;
    struct fleet_config cfg;
    struct fleet_rng rng;
    struct mf_keyring trust;
    bool have_sign;
    struct mf_key_secret sign;
    struct version ver[VERSIONS_MAX];
    int n_ver;

    struct dev *devs;
    int ep;
    unsigned connecting, up, ready;
    bool announced, going, flood_done, quit;
    int64_t t_go_us, t_first_us, t_last_us;
    uint64_t published, acked, desired, desired_bad, stale, disconnects, connect_fail;
    uint64_t events, reports_sent, states;
    uint64_t count_n;
    int64_t count_first, count_last;
} S = {
    .prefix = "sim-",
    .root = MF_TOPIC_PREFIX,
    .first = 1,
    .reports = 10,
    .window = 4,
    .max_connecting = 200,
    .keepalive = 120,
    .inflight = 20,
};

static volatile sig_atomic_t sig_quit;

static void on_signal(int s)
{
    (void)s;
    sig_quit = 1;
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t mono_ms(void)
{
    return mf_clock_mono_ns() / 1000000;
}

static void say(const char *fmt, ...) MF_PRINTF(1, 2);
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
}

static void die(const char *fmt, ...) MF_PRINTF(1, 2);
static void die(const char *fmt, ...)
{
    va_list ap;
    fputs("mf-fleet-sim: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

static unsigned dev_index(const struct dev *d)
{
    return (unsigned)(d - S.devs);
}

static void dev_id(const struct dev *d, char out[80])
{
    snprintf(out, 80, "%s%06u", S.prefix, S.first + dev_index(d));
}

static void topic_of(const char *id, const char *kind, char out[MF_TOPIC_MAX])
{
    snprintf(out, MF_TOPIC_MAX, "%s%s/%s", S.root, id, kind);
}

static int version_intern(const char *version, const char *package)
{
    for (int i = 0; i < S.n_ver; i++)
        if (strcmp(S.ver[i].version, version) == 0 && strcmp(S.ver[i].package, package) == 0)
            return i;
    if (S.n_ver == VERSIONS_MAX)
        return -1;
    snprintf(S.ver[S.n_ver].version, sizeof S.ver[0].version, "%s", version);
    snprintf(S.ver[S.n_ver].package, sizeof S.ver[0].package, "%s", package);
    return S.n_ver++;
}

/* ---- epoll bookkeeping ---- */

static void dev_arm(struct dev *d)
{
    int fd = mosquitto_socket(d->m);
    if (fd < 0) {
        d->fd = -1;
        return;
    }
    uint32_t want = EPOLLIN | (mosquitto_want_write(d->m) ? EPOLLOUT : 0);
    struct epoll_event ev = {.events = want, .data.u32 = dev_index(d)};
    if (fd != d->fd) {
        if (epoll_ctl(S.ep, EPOLL_CTL_ADD, fd, &ev) != 0 &&
            (errno != EEXIST || epoll_ctl(S.ep, EPOLL_CTL_MOD, fd, &ev) != 0))
            die("epoll_ctl add: %s", strerror(errno));
        d->fd = fd;
        d->ev = want;
    } else if (want != d->ev) {
        if (epoll_ctl(S.ep, EPOLL_CTL_MOD, fd, &ev) != 0)
            die("epoll_ctl mod: %s", strerror(errno));
        d->ev = want;
    }
}

static void dev_down(struct dev *d)
{
    if (d->phase == P_DOWN)
        return;
    if (d->phase == P_CONNECTING)
        S.connecting--;
    else
        S.up--;
    if (d->ready) {
        d->ready = false;
        S.ready--;
    }
    d->phase = P_DOWN;
    d->fd = -1; /* closed by libmosquitto: epoll forgot it */
    d->sent = d->acked;
    if (!S.quit) {
        S.disconnects++;
        d->retry_at = mono_ms() + 1000 + (int64_t)(fleet_rng_uniform(&S.rng) * 1000);
    }
}

/* ---- publishing ---- */

static void dev_pub(struct dev *d, const char *kind, const void *p, size_t len, bool retain)
{
    char id[80], topic[MF_TOPIC_MAX];
    dev_id(d, id);
    topic_of(id, kind, topic);
    int rc = mosquitto_publish(d->m, NULL, topic, (int)len, p, 1, retain);
    if (rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_NO_CONN)
        mf_log(MF_LOG_WARN, "publish %s: %s", topic, mosquitto_strerror(rc));
    S.published++;
}

static void dev_state(struct dev *d)
{
    char id[80];
    const char *runtimes[] = {"onnx"};
    struct mf_state_msg_model mm = {0};
    dev_id(d, id);
    struct mf_state_msg s = {.device = id,
                             .hw_class = S.cfg.classes[d->cls].name,
                             .agent_version = S.cfg.agent_version,
                             .msg = d->msg,
                             .time = mf_clock_now(),
                             .desired_seq = d->seq,
                             .runtimes = runtimes,
                             .n_runtimes = 1,
                             .disk_free = 5000000000ull,
                             .mem_available = 1000000000ull};
    if (d->cur >= 0) {
        mm.name = S.cfg.model;
        mm.version = S.ver[d->cur].version;
        mm.package = S.ver[d->cur].package;
        if (d->prev >= 0) {
            mm.previous_version = S.ver[d->prev].version;
            mm.previous_package = S.ver[d->prev].package;
        }
        s.models = &mm;
        s.n_models = 1;
    }
    size_t len;
    char *text = mf_devmsg_state_format(&s, &len);
    dev_pub(d, "state", text, len, true);
    free(text);
    S.states++;
}

static void dev_event(struct dev *d, struct mf_event *e)
{
    char id[80];
    size_t len;
    dev_id(d, id);
    e->device = id;
    e->msg = ++d->msg;
    e->time = mf_clock_now();
    char *text = mf_devmsg_event_format(e, &len);
    dev_pub(d, "event", text, len, false);
    free(text);
    S.events++;
}

static void dev_report(struct dev *d, struct mf_report *r)
{
    char id[80];
    size_t len;
    dev_id(d, id);
    r->device = id;
    r->msg = ++d->msg;
    r->time = mf_clock_now();
    char *text = mf_devmsg_report_format(r, &len);
    dev_pub(d, "report", text, len, false);
    free(text);
    S.reports_sent++;
}

/* The reaction to a desired state, once its delay has passed: what an agent
 * would send after download, verify, benchmark and its own gate. */
static void dev_act(struct dev *d)
{
    char detail[64];
    const struct version *w = d->want >= 0 ? &S.ver[d->want] : NULL;
    const char *from = d->cur >= 0 ? S.ver[d->cur].version : NULL;
    snprintf(detail, sizeof detail, "1 model(s), seq %" PRIu64, d->act_seq);
    struct mf_event acc = {.kind = MF_EVENT_DESIRED_ACCEPTED,
                           .origin = "desired",
                           .desired_seq = d->act_seq,
                           .rollout = d->rollout,
                           .detail = detail};
    dev_event(d, &acc);
    if (w && d->want != d->cur) {
        struct mf_event e = {.origin = "desired",
                             .model = S.cfg.model,
                             .version = w->version,
                             .package = w->package,
                             .desired_seq = d->act_seq,
                             .rollout = d->rollout};
        if (d->want == d->prev) { /* a rollback: the previous version is on disk */
            e.kind = MF_EVENT_ROLLED_BACK;
            e.from_version = from;
            dev_event(d, &e);
            d->prev = d->cur;
            d->cur = d->want;
        } else {
            struct fleet_install in;
            fleet_install_draw(&S.cfg, d->cls, w->version, d->cur >= 0, &S.rng, &in);
            if (in.outcome == FLEET_DOWNLOAD_FAILED) {
                e.kind = MF_EVENT_DOWNLOAD_FAILED;
                e.reason = "io";
                e.detail = "the download was cut and could not be resumed";
                dev_event(d, &e);
            } else {
                struct mf_report *r = &in.report;
                r->desired_seq = d->act_seq;
                r->rollout = d->rollout;
                r->candidate.version = w->version;
                r->candidate.package = w->package;
                if (r->has_incumbent) {
                    r->incumbent.version = S.ver[d->cur].version;
                    r->incumbent.package = S.ver[d->cur].package;
                }
                dev_report(d, r);
                if (in.outcome == FLEET_REFUSED) {
                    e.kind = MF_EVENT_REFUSED;
                    e.reason = in.failure.check;
                    e.detail = in.reason;
                    e.failures = &in.failure;
                    e.n_failures = 1;
                    dev_event(d, &e);
                } else {
                    e.kind = MF_EVENT_ACTIVATED;
                    e.from_version = from;
                    dev_event(d, &e);
                    d->prev = d->cur;
                    d->cur = d->want;
                }
            }
        }
    }
    dev_state(d);
}

static void flood_next(struct dev *d)
{
    struct fleet_install in;
    fleet_report_draw(&S.cfg, d->cls, &S.rng, &in);
    in.report.candidate.version = "1.1.0";
    in.report.candidate.package = S.cfg.incumbent_package;
    in.report.incumbent.version = "1.0.0";
    in.report.incumbent.package = S.cfg.incumbent_package;
    if (S.t_first_us == 0)
        S.t_first_us = now_us();
    d->sent++;
    dev_report(d, &in.report);
}

/* ---- libmosquitto callbacks (called from loop_read / loop_write) ---- */

static void cb_connect(struct mosquitto *m, void *obj, int rc)
{
    struct dev *d = obj;
    char id[80], topic[MF_TOPIC_MAX];
    if (rc != 0) {
        mf_log(MF_LOG_WARN, "connect refused: %s", mosquitto_connack_string(rc));
        return; /* the library closes the socket: cb_disconnect */
    }
    if (d->phase == P_CONNECTING) {
        S.connecting--;
        S.up++;
    }
    d->phase = P_UP;
    dev_id(d, id);
    switch (S.mode) {
    case M_FLEET:
        dev_pub(d, "online", "1", 1, true);
        dev_state(d);
        /* fall through */
    case M_LISTEN:
        topic_of(id, "desired", topic);
        if (mosquitto_subscribe(m, NULL, topic, 1) != MOSQ_ERR_SUCCESS)
            mf_log(MF_LOG_WARN, "subscribe %s failed", topic);
        break;
    case M_FLOOD:
        d->ready = true;
        S.ready++;
        if (S.going)
            while (d->sent < S.reports && d->sent - d->acked < S.window)
                flood_next(d);
        break;
    default:
        break;
    }
    d->ever = true;
}

static void cb_subscribe(struct mosquitto *m, void *obj, int mid, int n, const int *granted)
{
    struct dev *d = obj;
    (void)m, (void)mid, (void)n, (void)granted;
    if (!d->ready) {
        d->ready = true;
        S.ready++;
    }
}

static void cb_disconnect(struct mosquitto *m, void *obj, int rc)
{
    (void)m, (void)rc;
    dev_down(obj);
}

static void cb_publish(struct mosquitto *m, void *obj, int mid)
{
    struct dev *d = obj;
    (void)m, (void)mid;
    S.acked++;
    if (S.mode != M_FLOOD || !S.going)
        return;
    d->acked++;
    if (d->sent < S.reports)
        flood_next(d);
    if (!S.flood_done && S.acked >= (uint64_t)S.n * S.reports) {
        S.flood_done = true;
        S.t_last_us = now_us();
        say("flood_done published=%" PRIu64 " acked=%" PRIu64 " first_us=%" PRId64
            " last_ack_us=%" PRId64 " rate=%.0f",
            S.published, S.acked, S.t_first_us, S.t_last_us,
            (double)S.acked / ((double)(S.t_last_us - S.t_first_us) / 1e6));
    }
}

static void cb_message(struct mosquitto *m, void *obj, const struct mosquitto_message *msg)
{
    struct dev *d = obj;
    char id[80], signer[MF_KEY_ID_LEN + 1];
    struct mf_desired *ds = NULL;
    struct mf_diag diag = {0};
    int64_t t = now_us();
    (void)m;
    if (msg->payloadlen <= 0)
        return;
    dev_id(d, id);
    enum mf_err rc = mf_desired_open(msg->payload, (size_t)msg->payloadlen, &S.trust, id, d->seq,
                                     &ds, signer, &diag);
    if (rc == MF_ERR_STALE) {
        S.stale++; /* a retained message delivered again */
        return;
    }
    if (rc != MF_OK) {
        S.desired_bad++;
        mf_log(MF_LOG_WARN, "desired state for device=%s refused: %s: %s", id, mf_errname(rc),
               diag.what);
        if (S.mode == M_FLEET) {
            struct mf_event e = {.kind = MF_EVENT_DESIRED_REFUSED,
                                 .origin = "desired",
                                 .reason = mf_errname(rc),
                                 .detail = diag.what};
            dev_event(d, &e);
        }
        return;
    }
    S.desired++;
    d->seq = ds->seq;
    d->rollout = ds->rollout;
    d->arrived_us = t;
    if (!d->first_us || ds->rollout != d->first_rollout) {
        d->first_rollout = ds->rollout;
        d->first_us = t;
    }
    if (S.mode == M_FLEET) {
        d->want = d->cur;
        for (size_t i = 0; i < ds->n_models; i++)
            if (strcmp(ds->models[i].name, S.cfg.model) == 0)
                d->want = (int8_t)version_intern(ds->models[i].version, ds->models[i].package);
        d->act_seq = ds->seq;
        double j = S.cfg.delay_jitter * (2 * fleet_rng_uniform(&S.rng) - 1);
        d->act_at = mono_ms() + (int64_t)((double)S.cfg.delay_ms * (1 + j));
        if (d->act_at == 0)
            d->act_at = 1;
    }
    mf_desired_free(ds);
}

/* ---- connections ---- */

/* mosquitto_new without its socket pair (see the top of the file). */
static struct mosquitto *new_client(const char *id, bool clean, void *obj)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    int lowest = fcntl(0, F_DUPFD, 0);
    struct mosquitto *m;
    if (lowest >= 0) {
        close(lowest);
        struct rlimit tight = {(rlim_t)lowest, rl.rlim_max};
        setrlimit(RLIMIT_NOFILE, &tight);
    }
    m = mosquitto_new(id, clean, obj);
    setrlimit(RLIMIT_NOFILE, &rl);
    if (!m)
        die("mosquitto_new: %s", strerror(errno));
    return m;
}

static void dev_connect(struct dev *d)
{
    int rc = mosquitto_connect_async(d->m, S.host, S.port, (int)S.keepalive);
    d->phase = P_CONNECTING;
    S.connecting++;
    if (rc != MOSQ_ERR_SUCCESS) {
        S.connect_fail++;
        dev_down(d);
        return;
    }
    dev_arm(d);
}

static void devs_create(void)
{
    S.devs = mf_xcalloc(S.n, sizeof *S.devs);
    int inc = S.cfg.incumbent_version[0]
                  ? version_intern(S.cfg.incumbent_version, S.cfg.incumbent_package)
                  : -1;
    for (unsigned i = 0; i < S.n; i++) {
        struct dev *d = &S.devs[i];
        char id[80];
        dev_id(d, id);
        d->fd = -1;
        d->cls = (uint8_t)fleet_class_of(&S.cfg, S.first + i);
        d->cur = (int8_t)inc;
        d->prev = d->want = -1;
        d->msg = S.msg_start;
        d->m = new_client(id, true, d);
        mosquitto_username_pw_set(d->m, id, NULL);
        mosquitto_max_inflight_messages_set(d->m, S.inflight);
        if (S.mode == M_FLEET) {
            char topic[MF_TOPIC_MAX];
            topic_of(id, "online", topic);
            if (mosquitto_will_set(d->m, topic, 1, "0", 1, true) != MOSQ_ERR_SUCCESS)
                die("will_set failed");
        }
        mosquitto_connect_callback_set(d->m, cb_connect);
        mosquitto_disconnect_callback_set(d->m, cb_disconnect);
        mosquitto_publish_callback_set(d->m, cb_publish);
        mosquitto_subscribe_callback_set(d->m, cb_subscribe);
        mosquitto_message_callback_set(d->m, cb_message);
    }
}

static void write_arrivals(const char *path)
{
    char tmp[4096], id[80];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        mf_log(MF_LOG_ERROR, "cannot write %s: %s", tmp, strerror(errno));
        return;
    }
    for (unsigned i = 0; i < S.n; i++) {
        const struct dev *d = &S.devs[i];
        if (!d->arrived_us)
            continue;
        dev_id(d, id);
        fprintf(f, "%s %" PRIu64 " %" PRId64 " %" PRId64 " %" PRId64 "\n", id, d->seq, d->rollout,
                d->arrived_us, d->first_us);
    }
    if (fclose(f) != 0 || rename(tmp, path) != 0)
        mf_log(MF_LOG_ERROR, "cannot write %s: %s", path, strerror(errno));
}

static void print_stats(void)
{
    say("stats connected=%u ready=%u connecting=%u desired=%" PRIu64 " desired_bad=%" PRIu64
        " stale=%" PRIu64 " published=%" PRIu64 " acked=%" PRIu64 " events=%" PRIu64
        " reports=%" PRIu64 " states=%" PRIu64 " disconnects=%" PRIu64 " rss_kb=%ld",
        S.up, S.ready, S.connecting, S.desired, S.desired_bad, S.stale, S.published, S.acked,
        S.events, S.reports_sent, S.states, S.disconnects, rss_kb());
}

static void flood_go(void)
{
    if (S.going)
        return;
    S.going = true;
    S.t_go_us = now_us();
    for (unsigned i = 0; i < S.n; i++) {
        struct dev *d = &S.devs[i];
        if (d->phase != P_UP)
            continue;
        while (d->sent < S.reports && d->sent - d->acked < S.window)
            flood_next(d);
        dev_arm(d);
    }
}

static void command(char *line)
{
    line[strcspn(line, "\r\n")] = 0;
    if (strcmp(line, "go") == 0) {
        if (S.mode == M_FLOOD)
            flood_go();
    } else if (strcmp(line, "stats") == 0) {
        print_stats();
    } else if (strcmp(line, "dump") == 0) {
        if (S.arrivals)
            write_arrivals(S.arrivals);
        say("dumped desired=%" PRIu64, S.desired);
    } else if (strcmp(line, "quit") == 0) {
        S.quit = true;
    } else if (*line) {
        mf_log(MF_LOG_WARN, "unknown command '%s'", line);
    }
}

static void read_stdin(void)
{
    static char buf[4096];
    static size_t have;
    ssize_t r = read(0, buf + have, sizeof buf - 1 - have);
    if (r <= 0) {
        if (r == 0 || (errno != EAGAIN && errno != EINTR))
            S.quit = true;
        if (r == 0)
            epoll_ctl(S.ep, EPOLL_CTL_DEL, 0, NULL);
        return;
    }
    have += (size_t)r;
    buf[have] = 0;
    char *nl;
    while ((nl = memchr(buf, '\n', have))) {
        *nl = 0;
        command(buf);
        size_t used = (size_t)(nl - buf) + 1;
        memmove(buf, nl + 1, have - used);
        have -= used;
        buf[have] = 0;
    }
    if (have == sizeof buf - 1)
        have = 0;
}

/* The device loop: fleet, flood, listen. */
static void run_devices(void)
{
    struct epoll_event evs[512];
    unsigned next_connect = 0, misc_at = 0;
    int64_t last_tick = 0;

    S.ep = epoll_create1(EPOLL_CLOEXEC);
    if (S.ep < 0)
        die("epoll_create1: %s", strerror(errno));
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    struct epoll_event sin = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    epoll_ctl(S.ep, EPOLL_CTL_ADD, 0, &sin); /* fails for /dev/null: fine */
    devs_create();
    int64_t t_start = now_us();

    while (!S.quit && !sig_quit) {
        /* start connections, at most max_connecting in progress */
        while (next_connect < S.n && S.connecting < S.max_connecting)
            dev_connect(&S.devs[next_connect++]);

        int n = epoll_wait(S.ep, evs, 512, TICK_MS);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u32 == UINT32_MAX) {
                read_stdin();
                continue;
            }
            struct dev *d = &S.devs[evs[i].data.u32];
            if (d->phase == P_DOWN || d->fd < 0)
                continue; /* an event for a socket closed meanwhile */
            int rc = MOSQ_ERR_SUCCESS;
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                rc = mosquitto_loop_read(d->m, 1);
            if (rc == MOSQ_ERR_SUCCESS && d->phase != P_DOWN &&
                ((evs[i].events & EPOLLOUT) || mosquitto_want_write(d->m)))
                rc = mosquitto_loop_write(d->m, 1);
            if (rc != MOSQ_ERR_SUCCESS || mosquitto_socket(d->m) < 0)
                dev_down(d);
            else
                dev_arm(d);
        }

        int64_t now = mono_ms();
        if (now - last_tick < TICK_MS && n > 0)
            continue;
        last_tick = now;
        /* timers: reactions, reconnects; keepalives a slice at a time */
        unsigned slice = S.n / 50 + 1;
        for (unsigned i = 0; i < S.n; i++) {
            struct dev *d = &S.devs[i];
            if (d->act_at && d->act_at <= now && d->phase == P_UP) {
                d->act_at = 0;
                dev_act(d);
                dev_arm(d);
            }
            if (d->phase == P_DOWN && d->ever == false && i >= next_connect)
                continue;
            if (d->phase == P_DOWN && d->retry_at && d->retry_at <= now &&
                S.connecting < S.max_connecting) {
                d->retry_at = 0;
                dev_connect(d);
            }
        }
        for (unsigned k = 0; k < slice && S.n; k++) {
            struct dev *d = &S.devs[misc_at];
            misc_at = (misc_at + 1) % S.n;
            if (d->phase != P_DOWN) {
                if (mosquitto_loop_misc(d->m) != MOSQ_ERR_SUCCESS || mosquitto_socket(d->m) < 0)
                    dev_down(d);
                else
                    dev_arm(d);
            }
        }
        if (!S.announced && S.ready == S.n) {
            S.announced = true;
            say("ready devices=%u connect_s=%.2f rss_kb=%ld", S.n,
                (double)(now_us() - t_start) / 1e6, rss_kb());
        }
    }
    /* clean stop: DISCONNECT (no last will), flush, free */
    S.quit = true;
    if (S.arrivals)
        write_arrivals(S.arrivals);
    print_stats();
    for (unsigned i = 0; i < S.n; i++) {
        struct dev *d = &S.devs[i];
        if (d->phase == P_UP) {
            (void)mosquitto_disconnect(d->m);
            (void)mosquitto_loop_write(d->m, 1);
        }
        mosquitto_destroy(d->m);
    }
    free(S.devs);
}

/* ---- the single-client modes ---- */

static void single_wait(struct mosquitto *m, bool *done, int64_t limit_ms)
{
    int64_t until = mono_ms() + limit_ms;
    while (!*done && !sig_quit && mono_ms() < until) {
        int rc = mosquitto_loop(m, 100, 1);
        if (rc != MOSQ_ERR_SUCCESS)
            die("connection lost: %s", mosquitto_strerror(rc));
    }
}

static bool single_connected, publish_done;
static uint64_t publish_acked;

static void single_on_connect(struct mosquitto *m, void *obj, int rc)
{
    (void)m, (void)obj;
    if (rc != 0)
        die("broker refused the connection: %s", mosquitto_connack_string(rc));
    single_connected = true;
}

static void single_on_publish(struct mosquitto *m, void *obj, int mid)
{
    (void)m, (void)obj, (void)mid;
    if (++publish_acked == S.n)
        publish_done = true;
}

static bool count_subscribed;

static void count_on_subscribe(struct mosquitto *m, void *obj, int mid, int n, const int *g)
{
    (void)m, (void)obj, (void)mid, (void)n, (void)g;
    count_subscribed = true;
}

static bool count_done;

static void count_on_message(struct mosquitto *m, void *obj, const struct mosquitto_message *msg)
{
    (void)m, (void)obj, (void)msg;
    int64_t t = now_us();
    if (!S.count_n++)
        S.count_first = t;
    S.count_last = t;
    if (S.count && S.count_n >= S.count)
        count_done = true;
}

static struct mosquitto *single_client(const char *id)
{
    struct mosquitto *m = mosquitto_new(id, true, NULL);
    if (!m)
        die("mosquitto_new: %s", strerror(errno));
    mosquitto_max_inflight_messages_set(m, S.inflight);
    mosquitto_connect_callback_set(m, single_on_connect);
    mosquitto_publish_callback_set(m, single_on_publish);
    mosquitto_subscribe_callback_set(m, count_on_subscribe);
    mosquitto_message_callback_set(m, count_on_message);
    int rc = mosquitto_connect(m, S.host, S.port, (int)S.keepalive);
    if (rc != MOSQ_ERR_SUCCESS)
        die("connect %s:%d: %s", S.host, S.port,
            rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
    single_wait(m, &single_connected, 10000);
    return m;
}

static void run_publish(void)
{
    char id[80], topic[MF_TOPIC_MAX];
    char **msgs = mf_xcalloc(S.n, sizeof *msgs);
    size_t *lens = mf_xcalloc(S.n, sizeof *lens);
    uint64_t seq = (uint64_t)(now_us() / 1000);
    char pkg[MF_HASH_HEX];

    memset(pkg, 'b', MF_HASH_HEX - 1);
    pkg[MF_HASH_HEX - 1] = 0;
    /* sign them all first: the figure is the broker's, not the signer's */
    for (unsigned i = 0; i < S.n && !S.clear; i++) {
        snprintf(id, sizeof id, "%s%06u", S.prefix, S.first + i);
        struct mf_desired_model dm = {.name = S.cfg.model, .version = "1.1.0", .size = 111616};
        memcpy(dm.package, pkg, MF_HASH_HEX);
        struct mf_desired d = {
            .device = id, .seq = seq, .issued = mf_clock_now(), .models = &dm, .n_models = 1};
        msgs[i] = mf_desired_sign(&d, &S.sign, &lens[i]);
    }
    struct mosquitto *m = single_client("mf-fleet-sim-publisher");
    int64_t t0 = now_us();
    for (unsigned i = 0; i < S.n; i++) {
        snprintf(id, sizeof id, "%s%06u", S.prefix, S.first + i);
        topic_of(id, "desired", topic);
        int rc = mosquitto_publish(m, NULL, topic, S.clear ? 0 : (int)lens[i], msgs[i], 1, true);
        if (rc != MOSQ_ERR_SUCCESS)
            die("publish: %s", mosquitto_strerror(rc));
        /* let the network loop run now and then so the queue drains */
        if (i % 64 == 63)
            (void)mosquitto_loop(m, 0, 1);
    }
    int64_t t_queued = now_us();
    single_wait(m, &publish_done, 600000);
    int64_t t1 = now_us();
    say("published n=%u acked=%" PRIu64 " t0_us=%" PRId64 " queued_us=%" PRId64
        " acked_us=%" PRId64,
        S.n, publish_acked, t0, t_queued, t1);
    mosquitto_disconnect(m);
    (void)mosquitto_loop(m, 100, 1);
    mosquitto_destroy(m);
    for (unsigned i = 0; i < S.n; i++)
        free(msgs[i]);
    free(msgs);
    free(lens);
}

static void run_count(void)
{
    struct mosquitto *m = single_client("mf-fleet-sim-counter");
    if (mosquitto_subscribe(m, NULL, S.count_topic, 1) != MOSQ_ERR_SUCCESS)
        die("subscribe %s failed", S.count_topic);
    single_wait(m, &count_subscribed, 10000);
    say("ready topic=%s", S.count_topic);
    while (!count_done && !sig_quit) {
        int rc = mosquitto_loop(m, 100, 1);
        if (rc != MOSQ_ERR_SUCCESS)
            die("connection lost: %s", mosquitto_strerror(rc));
    }
    say("count n=%" PRIu64 " first_us=%" PRId64 " last_us=%" PRId64 " rate=%.0f", S.count_n,
        S.count_first, S.count_last,
        S.count_n > 1 ? (double)(S.count_n - 1) / ((double)(S.count_last - S.count_first) / 1e6)
                      : 0.0);
    mosquitto_disconnect(m);
    (void)mosquitto_loop(m, 100, 1);
    mosquitto_destroy(m);
}

/* ---- main ---- */

static void usage(int rc)
{
    fputs("usage: mf-fleet-sim --mode MODE --broker HOST:PORT [options]\n"
          "  --mode fleet|flood|listen|publish|count|classes|sample\n"
          "  --devices N         devices (or messages, publish/count) [1000]\n"
          "  --prefix P          device ids P%06u [sim-]\n"
          "  --first I           first device number [1]\n"
          "  --config FILE       JSON: classes, incumbent, regression, delay (fleet.h)\n"
          "  --trust FILE        public key file of the server (fleet, listen)\n"
          "  --sign FILE         secret key to sign with (publish)\n"
          "  --clear             publish: empty retained messages (clears the topics)\n"
          "  --reports K         flood: reports per device [10]\n"
          "  --window W          flood: unacknowledged reports per device [4]\n"
          "  --topic-root R      topic prefix [mf/v1/d/]\n"
          "  --topic T           count: the subscription\n"
          "  --count N           count: stop after N messages [--devices]\n"
          "  --msg-start M       first message number - 1 [unix ms now]\n"
          "  --max-connecting P  connections in progress at once [200]\n"
          "  --keepalive S       [120]\n"
          "  --inflight I        QoS 1 messages in flight per client [20]\n"
          "  --arrivals FILE     write 'device seq rollout arrival_us first_us' at dump/exit\n"
          "                      (first_us: the first desired state of that rollout)\n"
          "  --seed S            random seed [1]\n"
          "  --regression V,P,F  fleet: version V loses P accuracy points and is F times as\n"
          "                      slow (overrides the config's \"regression\")\n"
          "  --delay-ms D        fleet: reaction delay (overrides the config's \"delay_ms\")\n"
          "stdin: go | stats | dump | quit (EOF = quit); stdout: status lines\n",
          rc ? stderr : stdout);
    exit(rc);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"mode", required_argument, NULL, 'm'},
        {"broker", required_argument, NULL, 'b'},
        {"devices", required_argument, NULL, 'n'},
        {"prefix", required_argument, NULL, 'p'},
        {"first", required_argument, NULL, 'f'},
        {"config", required_argument, NULL, 'c'},
        {"trust", required_argument, NULL, 't'},
        {"sign", required_argument, NULL, 's'},
        {"clear", no_argument, NULL, 'C'},
        {"reports", required_argument, NULL, 'k'},
        {"window", required_argument, NULL, 'w'},
        {"topic-root", required_argument, NULL, 'r'},
        {"topic", required_argument, NULL, 'T'},
        {"count", required_argument, NULL, 'N'},
        {"msg-start", required_argument, NULL, 'M'},
        {"max-connecting", required_argument, NULL, 'P'},
        {"keepalive", required_argument, NULL, 'K'},
        {"inflight", required_argument, NULL, 'I'},
        {"arrivals", required_argument, NULL, 'a'},
        {"seed", required_argument, NULL, 'S'},
        {"regression", required_argument, NULL, 'R'},
        {"delay-ms", required_argument, NULL, 'D'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *mode = "fleet", *broker = "127.0.0.1:1883", *config = NULL, *trust = NULL,
               *sign = NULL, *regression = NULL;
    long delay_ms = -1;
    uint64_t seed = 1;
    int c;
    struct mf_diag diag = {0};

    S.n = 1000;
    S.msg_start = (uint64_t)(now_us() / 1000);
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            mode = optarg;
            break;
        case 'b':
            broker = optarg;
            break;
        case 'n':
            S.n = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'p':
            S.prefix = optarg;
            break;
        case 'f':
            S.first = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'c':
            config = optarg;
            break;
        case 't':
            trust = optarg;
            break;
        case 's':
            sign = optarg;
            break;
        case 'C':
            S.clear = true;
            break;
        case 'k':
            S.reports = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'w':
            S.window = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'r':
            S.root = optarg;
            break;
        case 'T':
            S.count_topic = optarg;
            break;
        case 'N':
            S.count = strtoull(optarg, NULL, 10);
            break;
        case 'M':
            S.msg_start = strtoull(optarg, NULL, 10);
            break;
        case 'P':
            S.max_connecting = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'K':
            S.keepalive = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'I':
            S.inflight = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'a':
            S.arrivals = optarg;
            break;
        case 'S':
            seed = strtoull(optarg, NULL, 10);
            break;
        case 'R':
            regression = optarg;
            break;
        case 'D':
            delay_ms = strtol(optarg, NULL, 10);
            break;
        case 'h':
            usage(0);
            break;
        default:
            usage(2);
        }
    }
    if (optind != argc)
        usage(2);
    if (strcmp(mode, "fleet") == 0)
        S.mode = M_FLEET;
    else if (strcmp(mode, "flood") == 0)
        S.mode = M_FLOOD;
    else if (strcmp(mode, "listen") == 0)
        S.mode = M_LISTEN;
    else if (strcmp(mode, "publish") == 0)
        S.mode = M_PUBLISH;
    else if (strcmp(mode, "count") == 0)
        S.mode = M_COUNT;
    else if (strcmp(mode, "classes") == 0)
        S.mode = M_CLASSES;
    else if (strcmp(mode, "sample") == 0)
        S.mode = M_SAMPLE;
    else
        usage(2);
    if (S.n == 0 || S.window == 0 || S.max_connecting == 0 || S.keepalive < 5)
        die("--devices, --window and --max-connecting must be positive, --keepalive >= 5");
    if (fleet_config_load(config, &S.cfg, &diag) != MF_OK)
        die("%s: %s", diag.where, diag.what);
    if (regression) { /* VERSION,POINTS,FACTOR: overrides the config's */
        char v[65];
        double pts, fac;
        if (sscanf(regression, "%64[^,],%lf,%lf", v, &pts, &fac) != 3 || fac <= 0)
            die("--regression takes VERSION,ACCURACY_POINTS,LATENCY_FACTOR (e.g. 1.2.0,2,1.5)");
        snprintf(S.cfg.regress_version, sizeof S.cfg.regress_version, "%s", v);
        S.cfg.regress_points = pts;
        S.cfg.regress_latency = fac;
    }
    if (delay_ms >= 0)
        S.cfg.delay_ms = (unsigned)delay_ms;
    S.rng.s = seed * 0x9e3779b97f4a7c15ull + 1;
    if (S.mode == M_CLASSES) {
        for (unsigned i = 0; i < S.n; i++)
            printf("%s%06u,%s\n", S.prefix, S.first + i,
                   S.cfg.classes[fleet_class_of(&S.cfg, S.first + i)].name);
        return fflush(stdout) == 0 ? 0 : 1;
    }
    if (S.mode == M_SAMPLE) {
        S.devs = mf_xcalloc(S.n, sizeof *S.devs);
        for (unsigned i = 0; i < S.n; i++) {
            struct dev *d = &S.devs[i];
            char id[80];
            size_t len;
            struct fleet_install in;
            d->cls = (uint8_t)fleet_class_of(&S.cfg, S.first + i);
            dev_id(d, id);
            fleet_report_draw(&S.cfg, d->cls, &S.rng, &in);
            in.report.device = id;
            in.report.msg = S.msg_start + 1;
            in.report.time = mf_clock_now();
            in.report.candidate.version = "1.1.0";
            in.report.candidate.package = S.cfg.incumbent_package;
            in.report.incumbent.version = "1.0.0";
            in.report.incumbent.package = S.cfg.incumbent_package;
            char *text = mf_devmsg_report_format(&in.report, &len);
            printf("%s\n", text);
            free(text);
        }
        free(S.devs);
        return fflush(stdout) == 0 ? 0 : 1;
    }
    if (mf_split_hostport(broker, &S.host, &S.port) != MF_OK)
        die("--broker %s is not host:port", broker);
    if ((S.mode == M_FLEET || S.mode == M_LISTEN) &&
        (!trust || mf_keyring_load(&S.trust, trust, &diag) != MF_OK))
        die("--trust: %s", trust ? diag.what : "a public key file is required");
    if (S.mode == M_PUBLISH && !S.clear) {
        if (!sign || mf_key_secret_load(sign, &S.sign, &diag) != MF_OK)
            die("--sign: %s", sign ? diag.what : "a secret key file is required");
        S.have_sign = true;
    }
    if (S.mode == M_COUNT && !S.count_topic)
        die("count needs --topic");
    if (S.mode == M_COUNT && !S.count)
        S.count = S.n;

    /* every descriptor the hard limit allows */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if ((S.mode == M_FLEET || S.mode == M_FLOOD || S.mode == M_LISTEN) &&
        (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < (rlim_t)S.n + 64))
        die("%u devices need %u descriptors; the limit is %llu", S.n, S.n + 64,
            (unsigned long long)rl.rlim_cur);

    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    mf_log_set_level(MF_LOG_WARN);
    mosquitto_lib_init();
    switch (S.mode) {
    case M_PUBLISH:
        run_publish();
        break;
    case M_COUNT:
        run_count();
        break;
    default:
        run_devices();
        break;
    }
    mosquitto_lib_cleanup();
    mf_keyring_free(&S.trust);
    free(S.host);
    return 0;
}
