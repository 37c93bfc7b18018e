/* ingest.c — MQTT telemetry into PostgreSQL (see ingest.h). */
#include "server/ingest.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <mosquitto.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/config.h"
#include "common/log.h"
#include "common/mem.h"
#include "server/db.h"
#include "server/mqtt.h"
#include "server/server.h"
#include "telemetry/devmsg.h"

#define INGEST_BATCH_MS    200 /* a batch waits at most this long for more messages */
#define INGEST_BACKOFF_MS  100 /* first retry delay (database, broker), doubled */
#define INGEST_BACKOFF_MAX 5000
#define INGEST_LOG_PER_S   20 /* refusals logged per second; the rest are counted */
#define INGEST_KEEPALIVE   30

static const char *const ingest_topics[] = {"mf/v1/d/+/state", "mf/v1/d/+/event",
                                            "mf/v1/d/+/report", "mf/v1/d/+/online"};

struct ingest_item {
    enum mf_devmsg_kind kind;
    bool online;  /* MF_DEVMSG_ONLINE */
    json_t *body; /* state, event, report: the checked message */
    char *raw;    /* and its bytes, stored as they came (jsonb) */
    char device[MF_TOPIC_MAX];
};

struct mf_ingest {
    struct mf_server *s;
    struct mosquitto *mosq;
    char *host;
    int port;
    size_t batch_max;

    pthread_t net, writer;
    bool net_started, writer_started;
    atomic_bool net_stop;

    pthread_mutex_t mu; /* guards the queue and stop */
    pthread_cond_t cv;  /* queue not empty, or stop */
    struct ingest_item *q;
    size_t cap, head, n;
    bool stop;
    bool give_up; /* writer: the database was down at shutdown */

    pthread_mutex_t log_mu; /* the refusal log's rate limit */
    int64_t log_sec;
    unsigned log_n;
    uint64_t log_suppressed;

    atomic_uint_least64_t received, refused, dropped, stored, duplicates, stale, unknown, failed;
};

/* ---- helpers ---- */

static void ingest__nap(struct mf_ingest *g, unsigned ms, bool writer)
{
    /* sleeps in slices so a stop is noticed within 50 ms */
    for (unsigned t = 0; t < ms; t += 50) {
        if (writer) {
            pthread_mutex_lock(&g->mu);
            bool stop = g->stop;
            pthread_mutex_unlock(&g->mu);
            if (stop)
                return;
        } else if (atomic_load(&g->net_stop)) {
            return;
        }
        struct timespec d = {0, 50 * 1000000L};
        nanosleep(&d, NULL);
    }
}

static unsigned ingest__backoff(unsigned *fails)
{
    unsigned d = INGEST_BACKOFF_MS;
    for (unsigned i = 0; i < *fails && d < INGEST_BACKOFF_MAX; i++)
        d *= 2;
    if (*fails < 32)
        (*fails)++;
    return d > INGEST_BACKOFF_MAX ? INGEST_BACKOFF_MAX : d;
}

/* Refusals and unknown devices are logged, at most INGEST_LOG_PER_S a second
 * (a misbehaving device cannot flood the log); the others are counted and
 * the count is logged with the next line that gets through. */
static void ingest__log_limited(struct mf_ingest *g, const char *fmt, ...) MF_PRINTF(2, 3);
static void ingest__log_limited(struct mf_ingest *g, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    int64_t now = mf_clock_mono_ns() / 1000000000;
    uint64_t suppressed = 0;

    pthread_mutex_lock(&g->log_mu);
    if (now != g->log_sec) {
        g->log_sec = now;
        g->log_n = 0;
    }
    if (g->log_n >= INGEST_LOG_PER_S) {
        g->log_suppressed++;
        pthread_mutex_unlock(&g->log_mu);
        return;
    }
    g->log_n++;
    suppressed = g->log_suppressed;
    g->log_suppressed = 0;
    pthread_mutex_unlock(&g->log_mu);
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (suppressed)
        mf_log(MF_LOG_WARN, "%s (and %" PRIu64 " more not logged)", line, suppressed);
    else
        mf_log(MF_LOG_WARN, "%s", line);
}

static void ingest__refuse(struct mf_ingest *g, const char *topic, const char *why)
{
    atomic_fetch_add(&g->refused, 1);
    ingest__log_limited(g, "ingest: refused topic=%s: %s", topic, why);
}

/* ---- the MQTT side (network thread) ---- */

static void ingest__push(struct mf_ingest *g, struct ingest_item *it)
{
    pthread_mutex_lock(&g->mu);
    if (g->n == g->cap || g->stop) {
        pthread_mutex_unlock(&g->mu);
        json_decref(it->body);
        free(it->raw);
        uint64_t n = atomic_fetch_add(&g->dropped, 1) + 1;
        ingest__log_limited(g,
                            "ingest: queue full (%zu messages): dropped %s from device=%s "
                            "(%" PRIu64 " dropped so far)",
                            g->cap, mf_devmsg_kind_name(it->kind), it->device, n);
        return;
    }
    g->q[(g->head + g->n) % g->cap] = *it;
    g->n++;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void ingest__on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *m)
{
    struct mf_ingest *g = obj;
    struct ingest_item it = {0};
    const uint8_t *p = m->payload;
    size_t len = m->payloadlen > 0 ? (size_t)m->payloadlen : 0;
    (void)mosq;

    atomic_fetch_add(&g->received, 1);
    if (!m->topic || mf_topic_parse(m->topic, it.device, &it.kind) != MF_OK ||
        it.kind == MF_DEVMSG_DESIRED) {
        ingest__refuse(g, m->topic ? m->topic : "(none)", "not a device telemetry topic");
        return;
    }
    if (len == 0) {
        /* how a retained message is cleared: nothing to store */
        mf_log(MF_LOG_DEBUG, "ingest: empty message topic=%s ignored", m->topic);
        return;
    }
    if (it.kind == MF_DEVMSG_ONLINE) {
        if (len != 1 || (p[0] != '0' && p[0] != '1')) {
            ingest__refuse(g, m->topic, "online payload is not exactly \"0\" or \"1\"");
            return;
        }
        it.online = p[0] == '1';
    } else {
        struct mf_diag diag = {0};
        if (mf_devmsg_check(it.kind, p, len, it.device, &it.body, &diag) != MF_OK) {
            char why[MF_DIAG_STR_MAX];
            ingest__refuse(g, m->topic, mf_diag_str(&diag, why, sizeof why));
            return;
        }
        it.raw = mf_xstrndup((const char *)p, len);
    }
    ingest__push(g, &it);
}

static void ingest__on_connect(struct mosquitto *mosq, void *obj, int rc)
{
    struct mf_ingest *g = obj;
    if (rc != 0) {
        mf_log(MF_LOG_ERROR, "ingest: broker %s:%d refused the connection: %s", g->host, g->port,
               mosquitto_connack_string(rc));
        return;
    }
    for (size_t i = 0; i < sizeof ingest_topics / sizeof *ingest_topics; i++) {
        int src = mosquitto_subscribe(mosq, NULL, ingest_topics[i], 1);
        if (src != MOSQ_ERR_SUCCESS)
            mf_log(MF_LOG_ERROR, "ingest: subscribe %s: %s", ingest_topics[i],
                   mosquitto_strerror(src));
    }
    mf_log(MF_LOG_INFO, "ingest: connected to %s:%d, subscribed to device telemetry", g->host,
           g->port);
}

static void *ingest__net(void *arg)
{
    struct mf_ingest *g = arg;
    unsigned fails = 0;
    bool ever = false, up = false;

    while (!atomic_load(&g->net_stop)) {
        int rc;
        if (!up) {
            rc = ever ? mosquitto_reconnect(g->mosq)
                      : mosquitto_connect(g->mosq, g->host, g->port, INGEST_KEEPALIVE);
            if (rc == MOSQ_ERR_SUCCESS) {
                ever = up = true;
                continue;
            }
            unsigned d = ingest__backoff(&fails);
            if (fails == 1 || d == INGEST_BACKOFF_MAX)
                mf_log(MF_LOG_WARN, "ingest: cannot connect to broker %s:%d (%s); retrying",
                       g->host, g->port,
                       rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
            ingest__nap(g, d, false);
            continue;
        }
        rc = mosquitto_loop(g->mosq, 100, 1);
        if (rc == MOSQ_ERR_SUCCESS) {
            fails = 0;
            continue;
        }
        up = false;
        mf_log(MF_LOG_WARN, "ingest: lost the broker %s:%d (%s); reconnecting", g->host, g->port,
               rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
        ingest__nap(g, ingest__backoff(&fails), false);
    }
    if (up) {
        (void)mosquitto_disconnect(g->mosq);
        (void)mosquitto_loop(g->mosq, 100, 1);
    }
    return NULL;
}

/* ---- the database side (writer thread) ---- */

struct ingest_tally {
    uint64_t stored, duplicates, stale, unknown;
};

static const char sql_known[] =
    "SELECT id FROM devices WHERE id IN (SELECT jsonb_array_elements_text($1::jsonb))";

static const char sql_event[] =
    "INSERT INTO events (device_id, msg, kind, model, version, reason, rollout_id, body)"
    " SELECT $1::text, $2::bigint, $3::text, $4::text, $5::text, $6::text,"
    " (SELECT r.id FROM rollouts r WHERE r.id = $7::bigint), $8::jsonb"
    " ON CONFLICT (device_id, msg) WHERE msg IS NOT NULL DO NOTHING";

static const char sql_report[] =
    "INSERT INTO reports (device_id, msg, rollout_id, stage, model, version, package, hw_class,"
    " valid, body)"
    " SELECT $1::text, $2::bigint, r.id, rd.stage, $4::text, $5::text, $6::text, $7::text,"
    " $8::boolean, $9::jsonb"
    " FROM (SELECT $3::bigint AS rid) x LEFT JOIN rollouts r ON r.id = x.rid"
    " LEFT JOIN rollout_devices rd ON rd.rollout_id = r.id AND rd.device_id = $1::text"
    " ON CONFLICT (device_id, msg) WHERE msg IS NOT NULL DO NOTHING";

/* A newer state wins; one with a lower msg than the stored one is stale. */
static const char sql_state[] =
    "UPDATE devices SET state = $2::jsonb, state_at = now(), last_seen = now(),"
    " agent_version = $3::text, runtimes = ARRAY(SELECT jsonb_array_elements_text($4::jsonb)),"
    " last_msg = $5::bigint"
    " WHERE id = $1::text AND (last_msg IS NULL OR last_msg <= $5::bigint)";

/* device_models in statements of their own (schema/0002's writers rule). */
static const char sql_models_del[] =
    "DELETE FROM device_models WHERE device_id = $1::text"
    " AND model NOT IN (SELECT m->>'name' FROM jsonb_array_elements($2::jsonb) m)";

static const char sql_models_put[] =
    "INSERT INTO device_models AS d (device_id, model, version, package, previous_version)"
    " SELECT $1::text, m->>'name', m->>'version',"
    " (SELECT p.id FROM packages p WHERE p.id = m->>'package'), m->'previous'->>'version'"
    " FROM jsonb_array_elements($2::jsonb) m"
    " ON CONFLICT (device_id, model) DO UPDATE SET version = EXCLUDED.version,"
    " package = EXCLUDED.package, previous_version = EXCLUDED.previous_version,"
    " updated_at = now()"
    " WHERE (d.version, d.package, d.previous_version) IS DISTINCT FROM"
    " (EXCLUDED.version, EXCLUDED.package, EXCLUDED.previous_version)";

static const char sql_online[] =
    "UPDATE devices SET online = $2::boolean, last_seen = now() WHERE id = $1::text";

static const char sql_seen[] = "UPDATE devices SET last_seen = now()"
                               " WHERE id IN (SELECT jsonb_array_elements_text($1::jsonb))";

static const char *ingest__str(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static char *ingest__int(char buf[24], const json_t *v)
{
    if (!json_is_integer(v))
        return NULL;
    snprintf(buf, 24, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    return buf;
}

/* Runs one statement; *rows gets the number of rows it changed. */
static enum mf_err ingest__exec(struct mf_db *db, const char *sql, int n, const char *const *p,
                                long *rows, struct mf_diag *diag)
{
    PGresult *res = NULL;
    enum mf_err rc = mf_db_exec(db, sql, n, p, &res, diag);
    if (rc == MF_OK && rows)
        *rows = atol(PQcmdTuples(res));
    PQclear(res);
    return rc;
}

static enum mf_err ingest__one(struct mf_db *db, const struct ingest_item *it,
                               struct ingest_tally *t, struct mf_diag *diag)
{
    char msg[24], roll[24];
    enum mf_err rc = MF_OK;
    long rows = 0;
    const char *body = it->raw;

    if (it->kind == MF_DEVMSG_ONLINE) {
        const char *p[2] = {it->device, it->online ? "true" : "false"};
        rc = ingest__exec(db, sql_online, 2, p, &rows, diag);
        t->stored += rc == MF_OK && rows > 0;
        return rc;
    }
    const char *m = ingest__int(msg, json_object_get(it->body, "msg"));
    if (it->kind == MF_DEVMSG_EVENT) {
        const char *p[8] = {it->device,
                            m,
                            ingest__str(it->body, "kind"),
                            ingest__str(it->body, "model"),
                            ingest__str(it->body, "version"),
                            ingest__str(it->body, "reason"),
                            ingest__int(roll, json_object_get(it->body, "rollout")),
                            body};
        rc = ingest__exec(db, sql_event, 8, p, &rows, diag);
        if (rc == MF_OK)
            *(rows > 0 ? &t->stored : &t->duplicates) += 1;
    } else if (it->kind == MF_DEVMSG_REPORT) {
        const json_t *cand = json_object_get(it->body, "candidate");
        const json_t *validity = json_object_get(it->body, "validity");
        const char *p[9] = {it->device,
                            m,
                            ingest__int(roll, json_object_get(it->body, "rollout")),
                            ingest__str(it->body, "model"),
                            ingest__str(cand, "version"),
                            ingest__str(cand, "package"),
                            ingest__str(it->body, "hw_class"),
                            json_is_true(json_object_get(validity, "valid")) ? "true" : "false",
                            body};
        rc = ingest__exec(db, sql_report, 9, p, &rows, diag);
        if (rc == MF_OK)
            *(rows > 0 ? &t->stored : &t->duplicates) += 1;
    } else { /* state */
        char *runtimes = json_dumps(json_object_get(it->body, "runtimes"), JSON_COMPACT);
        char *models = json_dumps(json_object_get(it->body, "models"), JSON_COMPACT);
        const char *p[5] = {it->device, body, ingest__str(it->body, "agent_version"), runtimes, m};
        const char *pm[2] = {it->device, models};
        rc = ingest__exec(db, sql_state, 5, p, &rows, diag);
        if (rc == MF_OK && rows == 0) {
            t->stale++;
            mf_log(MF_LOG_INFO,
                   "ingest: state of device=%s with msg=%s is older than the stored one;"
                   " ignored",
                   it->device, m);
        } else if (rc == MF_OK) {
            rc = ingest__exec(db, sql_models_del, 2, pm, NULL, diag);
            if (rc == MF_OK)
                rc = ingest__exec(db, sql_models_put, 2, pm, NULL, diag);
            t->stored += rc == MF_OK;
        }
        free(runtimes);
        free(models);
    }
    return rc;
}

/* One batch in one transaction. Items for devices that are not enrolled are
 * skipped (logged); known[] is filled once the devices are looked up. */
static enum mf_err ingest__write(struct mf_ingest *g, struct mf_db *db,
                                 const struct ingest_item *items, size_t n, struct ingest_tally *t,
                                 struct mf_diag *diag)
{
    json_t *ids = json_array(), *seen = json_array();
    PGresult *res = NULL;
    char *ids_text = NULL, *seen_text = NULL;
    bool *known = mf_xcalloc(n ? n : 1, sizeof *known);
    enum mf_err rc;

    *t = (struct ingest_tally){0};
    for (size_t i = 0; i < n; i++)
        json_array_append_new(ids, json_string(items[i].device));
    ids_text = json_dumps(ids, JSON_COMPACT);
    rc = mf_db_begin(db, diag);
    if (rc == MF_OK) {
        const char *p[1] = {ids_text};
        rc = mf_db_exec(db, sql_known, 1, p, &res, diag);
    }
    if (rc == MF_OK) {
        for (int r = 0; r < PQntuples(res); r++)
            for (size_t i = 0; i < n; i++)
                if (strcmp(items[i].device, PQgetvalue(res, r, 0)) == 0)
                    known[i] = true;
        PQclear(res);
    }
    for (size_t i = 0; i < n && rc == MF_OK; i++) {
        if (!known[i]) {
            t->unknown++;
            continue;
        }
        rc = ingest__one(db, &items[i], t, diag);
        if (items[i].kind == MF_DEVMSG_EVENT || items[i].kind == MF_DEVMSG_REPORT)
            json_array_append_new(seen, json_string(items[i].device));
    }
    if (rc == MF_OK && json_array_size(seen) > 0) {
        seen_text = json_dumps(seen, JSON_COMPACT);
        const char *p[1] = {seen_text};
        rc = ingest__exec(db, sql_seen, 1, p, NULL, diag);
    }
    if (rc == MF_OK)
        rc = mf_db_commit(db, diag);
    else
        mf_db_rollback(db);
    if (rc == MF_OK)
        for (size_t i = 0; i < n; i++)
            if (!known[i])
                ingest__log_limited(g, "ingest: %s from device=%s ignored: not enrolled",
                                    mf_devmsg_kind_name(items[i].kind), items[i].device);
    free(known);
    free(ids_text);
    free(seen_text);
    json_decref(ids);
    json_decref(seen);
    return rc;
}

static void ingest__count(struct mf_ingest *g, const struct ingest_tally *t)
{
    atomic_fetch_add(&g->stored, t->stored);
    atomic_fetch_add(&g->duplicates, t->duplicates);
    atomic_fetch_add(&g->stale, t->stale);
    atomic_fetch_add(&g->unknown, t->unknown);
}

static bool ingest__stopping(struct mf_ingest *g)
{
    pthread_mutex_lock(&g->mu);
    bool stop = g->stop;
    pthread_mutex_unlock(&g->mu);
    return stop;
}

/* Stores items[0..n): the whole batch in one transaction; if the database
 * refuses it (not an outage), message by message so that one bad message
 * cannot hold the others back. An outage keeps what is left and retries with
 * backoff — until a stop, after which one attempt is made. */
static void ingest__flush(struct mf_ingest *g, const struct ingest_item *items, size_t n)
{
    struct mf_db *db = mf_server_db(g->s);
    unsigned fails = 0;
    size_t off = 0;

    if (g->give_up) {
        atomic_fetch_add(&g->dropped, n);
        return;
    }
    while (off < n) {
        struct mf_diag diag = {0};
        struct ingest_tally t;
        char why[MF_DIAG_STR_MAX];
        enum mf_err rc = ingest__write(g, db, items + off, n - off, &t, &diag);
        if (rc == MF_OK) {
            ingest__count(g, &t);
            if (fails)
                mf_log(MF_LOG_INFO, "ingest: database reachable again; %zu message(s) written",
                       n - off);
            return;
        }
        if (rc != MF_ERR_UNAVAILABLE) {
            mf_log(MF_LOG_WARN, "ingest: batch of %zu refused (%s); writing one by one", n - off,
                   mf_diag_str(&diag, why, sizeof why));
            for (; off < n; off++) {
                struct mf_diag d1 = {0};
                rc = ingest__write(g, db, items + off, 1, &t, &d1);
                if (rc == MF_ERR_UNAVAILABLE)
                    break;
                if (rc == MF_OK) {
                    ingest__count(g, &t);
                } else {
                    atomic_fetch_add(&g->failed, 1);
                    mf_log(MF_LOG_ERROR, "ingest: %s from device=%s not stored: %s",
                           mf_devmsg_kind_name(items[off].kind), items[off].device,
                           mf_diag_str(&d1, why, sizeof why));
                }
            }
            if (off == n)
                return;
            diag = (struct mf_diag){0};
            mf_diag_set(&diag, rc, "database", "unavailable");
        }
        if (ingest__stopping(g)) {
            g->give_up = true; /* and the batches after this one */
            atomic_fetch_add(&g->dropped, n - off);
            mf_log(MF_LOG_ERROR,
                   "ingest: database unavailable at shutdown: %zu message(s) not stored "
                   "(devices re-publish their retained state on the next start)",
                   n - off);
            return;
        }
        unsigned d = ingest__backoff(&fails);
        if (fails == 1 || d == INGEST_BACKOFF_MAX)
            mf_log(MF_LOG_WARN, "ingest: %s; keeping %zu message(s), retrying in %u ms",
                   mf_diag_str(&diag, why, sizeof why), n - off, d);
        ingest__nap(g, d, true);
    }
}

static void ingest__deadline(struct timespec *ts, unsigned ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void *ingest__writer(void *arg)
{
    struct mf_ingest *g = arg;
    struct ingest_item *batch = mf_xcalloc(g->batch_max, sizeof *batch);

    for (;;) {
        size_t n = 0;
        struct timespec until;
        pthread_mutex_lock(&g->mu);
        while (g->n == 0 && !g->stop)
            pthread_cond_wait(&g->cv, &g->mu);
        if (g->n == 0 && g->stop) {
            pthread_mutex_unlock(&g->mu);
            break;
        }
        ingest__deadline(&until, INGEST_BATCH_MS);
        for (;;) {
            while (g->n > 0 && n < g->batch_max) {
                batch[n++] = g->q[g->head];
                g->head = (g->head + 1) % g->cap;
                g->n--;
            }
            if (n == g->batch_max || g->stop ||
                pthread_cond_timedwait(&g->cv, &g->mu, &until) == ETIMEDOUT) {
                while (g->n > 0 && n < g->batch_max) {
                    batch[n++] = g->q[g->head];
                    g->head = (g->head + 1) % g->cap;
                    g->n--;
                }
                break;
            }
        }
        pthread_mutex_unlock(&g->mu);
        ingest__flush(g, batch, n);
        for (size_t i = 0; i < n; i++) {
            json_decref(batch[i].body);
            free(batch[i].raw);
        }
    }
    free(batch);
    return NULL;
}

/* ---- start / stop ---- */

static void ingest__free(struct mf_ingest *g)
{
    if (g->mosq)
        mosquitto_destroy(g->mosq);
    for (size_t i = 0; i < g->n; i++) {
        json_decref(g->q[(g->head + i) % g->cap].body);
        free(g->q[(g->head + i) % g->cap].raw);
    }
    free(g->q);
    free(g->host);
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    pthread_mutex_destroy(&g->log_mu);
    free(g);
    mosquitto_lib_cleanup();
}

enum mf_err mf_ingest_start(struct mf_server *s, struct mf_ingest **out, struct mf_diag *diag)
{
    const struct mf_server_config *c = &s->cfg;
    struct mf_ingest *g = mf_xcalloc(1, sizeof *g);
    pthread_condattr_t ca;
    char client[64];
    enum mf_err rc = MF_OK;

    *out = NULL;
    mosquitto_lib_init();
    g->s = s;
    g->batch_max = (size_t)c->ingest_batch;
    g->cap = (size_t)c->ingest_queue;
    g->q = mf_xcalloc(g->cap, sizeof *g->q);
    pthread_mutex_init(&g->mu, NULL);
    pthread_mutex_init(&g->log_mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g->cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&g->net_stop, false);

    /* With mqtt_client_id, a persistent session: the broker queues (QoS 1)
     * what devices publish while the server is away and delivers it on
     * reconnect. Without, a clean session under an id of its own: events
     * and reports sent meanwhile are not kept for it (the retained state
     * and online messages are re-read on connect). */
    bool persistent = c->mqtt_client_id && *c->mqtt_client_id;
    snprintf(client, sizeof client, "modelfleet-server-%ld", (long)getpid());
    rc = mf_server_mqtt_new(c, persistent ? c->mqtt_client_id : client, !persistent, g, &g->mosq,
                            &g->host, &g->port, diag);
    if (rc != MF_OK)
        goto fail;
    mosquitto_connect_callback_set(g->mosq, ingest__on_connect);
    mosquitto_message_callback_set(g->mosq, ingest__on_message);
    if (pthread_create(&g->writer, NULL, ingest__writer, g) != 0) {
        rc = mf_diag_set(diag, MF_ERR_IO, "ingest", "cannot start the writer thread");
        goto fail;
    }
    g->writer_started = true;
    if (pthread_create(&g->net, NULL, ingest__net, g) != 0) {
        mf_ingest_stop(g);
        return mf_diag_set(diag, MF_ERR_IO, "ingest", "cannot start the MQTT thread");
    }
    g->net_started = true;
    mf_log(MF_LOG_INFO, "ingest: broker %s:%d batch=%zu queue=%zu", g->host, g->port, g->batch_max,
           g->cap);
    *out = g;
    return MF_OK;
fail:
    ingest__free(g);
    return rc;
}

void mf_ingest_stats(struct mf_ingest *g, struct mf_ingest_stats *out)
{
    out->received = atomic_load(&g->received);
    out->refused = atomic_load(&g->refused);
    out->dropped = atomic_load(&g->dropped);
    out->stored = atomic_load(&g->stored);
    out->duplicates = atomic_load(&g->duplicates);
    out->stale = atomic_load(&g->stale);
    out->unknown = atomic_load(&g->unknown);
    out->failed = atomic_load(&g->failed);
}

void mf_ingest_stop(struct mf_ingest *g)
{
    struct mf_ingest_stats st;
    if (!g)
        return;
    atomic_store(&g->net_stop, true);
    if (g->net_started)
        pthread_join(g->net, NULL);
    pthread_mutex_lock(&g->mu);
    g->stop = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    if (g->writer_started)
        pthread_join(g->writer, NULL);
    mf_ingest_stats(g, &st);
    mf_log(MF_LOG_INFO,
           "ingest: stopped received=%" PRIu64 " stored=%" PRIu64 " duplicates=%" PRIu64
           " stale=%" PRIu64 " refused=%" PRIu64 " unknown=%" PRIu64 " dropped=%" PRIu64
           " failed=%" PRIu64,
           st.received, st.stored, st.duplicates, st.stale, st.refused, st.unknown, st.dropped,
           st.failed);
    ingest__free(g);
}
