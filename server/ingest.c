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
#include "common/buf.h"
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
#define INGEST_SEEN_S      "30" /* last_seen resolution for events and reports, seconds */
#define INGEST_ROOM_MS     1000 /* a full queue is re-checked this often */

static const char *const ingest_topics[] = {"mf/v1/d/+/state", "mf/v1/d/+/event",
                                            "mf/v1/d/+/report", "mf/v1/d/+/online"};

struct ingest_item {
    enum mf_devmsg_kind kind;
    bool online; /* MF_DEVMSG_ONLINE */
    int64_t msg; /* state, event, report: its message number */
    char *raw;   /* the checked message's bytes, stored as they came (jsonb) */
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

    pthread_mutex_t mu;  /* guards the queue, want, db_down and stop */
    pthread_cond_t cv;   /* want items queued, or stop */
    pthread_cond_t room; /* the writer took items, or the database went down */
    struct ingest_item *q;
    size_t cap, head, n;
    size_t want;  /* the writer sleeps until this many are queued (0: it is busy) */
    bool db_down; /* the writer is retrying a batch: the database is unreachable */
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

/* Queues a checked message. A full queue holds the network thread back (in
 * slices of INGEST_ROOM_MS, so a stop is noticed) while the writer is making
 * progress: the broker then keeps what is not read yet, in the session's
 * queue, instead of this process dropping it. Only while the database is
 * unreachable (the writer retrying) or at a stop is the newest message
 * dropped and counted. */
static void ingest__push(struct mf_ingest *g, struct ingest_item *it)
{
    pthread_mutex_lock(&g->mu);
    while (g->n == g->cap && !g->stop && !g->db_down && !atomic_load(&g->net_stop)) {
        struct timespec until;
        ingest__deadline(&until, INGEST_ROOM_MS);
        pthread_cond_timedwait(&g->room, &g->mu, &until);
    }
    if (g->n == g->cap || g->stop) {
        pthread_mutex_unlock(&g->mu);
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
    if (g->want && g->n >= g->want) /* one wake-up per batch, not per message */
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
        json_t *body = NULL;
        if (mf_devmsg_check(it.kind, p, len, it.device, &body, &diag) != MF_OK) {
            char why[MF_DIAG_STR_MAX];
            ingest__refuse(g, m->topic, mf_diag_str(&diag, why, sizeof why));
            return;
        }
        /* the writer's SQL reads the fields out of the bytes: only they are
         * queued, not the parsed tree (several times their size) */
        it.msg = (int64_t)json_integer_value(json_object_get(body, "msg"));
        json_decref(body);
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

/* Every statement below takes the whole batch's messages of one kind as one
 * parameter: a JSON array of {"d": device (the topic's), "b": the message as
 * it came} (or {"d", "o": online}), unpacked by jsonb_to_recordset WITH
 * ORDINALITY, so a batch costs one round trip and one statement (one firing
 * of the fleet_counts statement triggers) per kind, not one per message. Rows
 * are inserted in arrival order (ids keep it: the controller takes a
 * device's latest event). Fields are taken from the checked message. */
#define INGEST_ROWS_B                                                                              \
    " ROWS FROM (jsonb_to_recordset($1::jsonb) AS (d text, b jsonb))"                              \
    " WITH ORDINALITY AS x(d, b, ord)"
#define INGEST_ROWS_O                                                                              \
    " ROWS FROM (jsonb_to_recordset($1::jsonb) AS (d text, o boolean))"                            \
    " WITH ORDINALITY AS x(d, o, ord)"

static const char sql_events[] =
    "INSERT INTO events (device_id, msg, kind, model, version, reason, rollout_id, body)"
    " SELECT x.d, (x.b->>'msg')::bigint, x.b->>'kind', x.b->>'model', x.b->>'version',"
    " x.b->>'reason', r.id, x.b"
    " FROM" INGEST_ROWS_B " LEFT JOIN rollouts r ON r.id = (x.b->>'rollout')::bigint"
    " ORDER BY x.ord"
    " ON CONFLICT (device_id, msg) WHERE msg IS NOT NULL DO NOTHING";

static const char sql_reports[] =
    "INSERT INTO reports (device_id, msg, rollout_id, stage, model, version, package, hw_class,"
    " valid, body)"
    " SELECT x.d, (x.b->>'msg')::bigint, r.id, rd.stage, x.b->>'model',"
    " x.b->'candidate'->>'version', x.b->'candidate'->>'package', x.b->>'hw_class',"
    " coalesce((x.b->'validity'->>'valid')::boolean, false), x.b"
    " FROM" INGEST_ROWS_B " LEFT JOIN rollouts r ON r.id = (x.b->>'rollout')::bigint"
    " LEFT JOIN rollout_devices rd ON rd.rollout_id = r.id AND rd.device_id = x.d"
    " ORDER BY x.ord"
    " ON CONFLICT (device_id, msg) WHERE msg IS NOT NULL DO NOTHING";

/* The newest state of each device in the batch (highest msg, then the last
 * to arrive) wins, unless the stored one is newer: a lower msg is stale.
 * Returns the devices whose state was applied, with its msg. */
#define INGEST_NEWEST_STATE                                                                        \
    " (SELECT DISTINCT ON (x.d) x.d, (x.b->>'msg')::bigint AS msg, x.b"                            \
    " FROM" INGEST_ROWS_B " ORDER BY x.d, (x.b->>'msg')::bigint DESC, x.ord DESC) s"

static const char sql_states[] =
    "UPDATE devices d SET state = s.b, state_at = now(), last_seen = now(),"
    " agent_version = s.b->>'agent_version',"
    " runtimes = ARRAY(SELECT jsonb_array_elements_text(s.b->'runtimes')), last_msg = s.msg"
    " FROM" INGEST_NEWEST_STATE " WHERE d.id = s.d AND (d.last_msg IS NULL OR d.last_msg <= s.msg)"
    " RETURNING d.id, d.last_msg";

/* device_models in statements of their own (schema/0002's writers rule), for
 * the devices $2 (a JSON array of ids) whose state was applied. */
static const char sql_models_del[] =
    "DELETE FROM device_models m USING" INGEST_NEWEST_STATE
    " WHERE s.d IN (SELECT jsonb_array_elements_text($2::jsonb)) AND m.device_id = s.d"
    " AND m.model NOT IN (SELECT e->>'name' FROM jsonb_array_elements(s.b->'models') e)";

static const char sql_models_put[] =
    "INSERT INTO device_models AS d (device_id, model, version, package, previous_version)"
    " SELECT s.d, m->>'name', m->>'version',"
    " (SELECT p.id FROM packages p WHERE p.id = m->>'package'), m->'previous'->>'version'"
    " FROM" INGEST_NEWEST_STATE ", jsonb_array_elements(s.b->'models') m"
    " WHERE s.d IN (SELECT jsonb_array_elements_text($2::jsonb))"
    " ORDER BY s.d, m->>'name'"
    " ON CONFLICT (device_id, model) DO UPDATE SET version = EXCLUDED.version,"
    " package = EXCLUDED.package, previous_version = EXCLUDED.previous_version,"
    " updated_at = now()"
    " WHERE (d.version, d.package, d.previous_version) IS DISTINCT FROM"
    " (EXCLUDED.version, EXCLUDED.package, EXCLUDED.previous_version)";

/* The last online value of each device in the batch. */
static const char sql_online[] =
    "UPDATE devices d SET online = s.o, last_seen = now()"
    " FROM (SELECT DISTINCT ON (x.d) x.d, x.o FROM" INGEST_ROWS_O " ORDER BY x.d, x.ord DESC) s"
    " WHERE d.id = s.d";

/* Events and reports move last_seen at most every INGEST_SEEN_S seconds per
 * device: a row update (and its fleet_counts trigger) per device and batch
 * was ~30% of the database's time under a flood of reports; state and online
 * messages still set it every time. */
static const char sql_seen[] =
    "UPDATE devices SET last_seen = now()"
    " WHERE id IN (SELECT jsonb_array_elements_text($1::jsonb))"
    " AND (last_seen IS NULL OR last_seen < now() - make_interval(secs => " INGEST_SEEN_S "))";

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

/* Appends to a buffer without a cap (allocation failure aborts). */
static void ingest__put(struct mf_buf *b, const void *p, size_t n)
{
    enum mf_err rc = mf_buf_append(b, p, n);
    MF_ASSERT(rc == MF_OK);
}

static void ingest__puts(struct mf_buf *b, const char *s)
{
    ingest__put(b, s, strlen(s));
}

/* Appends s as a JSON string. */
static void ingest__json_str(struct mf_buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    ingest__put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        if (c == '"' || c == '\\')
            ingest__put(b, (char[2]){'\\', (char)c}, 2);
        else if (c < 0x20)
            ingest__put(b, esc, sizeof esc);
        else
            ingest__put(b, &c, 1);
    }
    ingest__put(b, "\"", 1);
}

/* The recordset parameter: the items of one kind that are known, in order. */
static size_t ingest__rows(const struct ingest_item *items, size_t n, const bool *known,
                           enum mf_devmsg_kind kind, struct mf_buf *b)
{
    size_t k = 0;
    mf_buf_reset(b);
    ingest__puts(b, "[");
    for (size_t i = 0; i < n; i++) {
        if (!known[i] || items[i].kind != kind)
            continue;
        ingest__puts(b, k++ ? ",{\"d\":" : "{\"d\":");
        ingest__json_str(b, items[i].device);
        if (kind == MF_DEVMSG_ONLINE) {
            ingest__puts(b, items[i].online ? ",\"o\":true}" : ",\"o\":false}");
        } else {
            ingest__puts(b, ",\"b\":");
            ingest__puts(b, items[i].raw);
            ingest__puts(b, "}");
        }
    }
    ingest__puts(b, "]");
    return k;
}

static int ingest__cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The batch's states: the newest per device applied, the others stale. */
static enum mf_err ingest__states(const struct ingest_item *items, size_t n, const bool *known,
                                  struct mf_db *db, struct mf_buf *b, struct ingest_tally *t,
                                  struct mf_diag *diag)
{
    PGresult *res = NULL;
    size_t k = ingest__rows(items, n, known, MF_DEVMSG_STATE, b);
    const char *p[2] = {(const char *)b->data, NULL};
    char **applied = NULL;
    int rows = 0;
    if (k == 0)
        return MF_OK;
    enum mf_err rc = mf_db_exec(db, sql_states, 1, p, &res, diag);
    if (rc != MF_OK)
        return rc;
    rows = PQntuples(res);
    /* "id\tmsg" per applied device, sorted, for the stale check below */
    applied = mf_xcalloc((size_t)rows + 1, sizeof *applied);
    json_t *ids = json_array();
    for (int r = 0; r < rows; r++) {
        applied[r] = mf_xasprintf("%s\t%s", PQgetvalue(res, r, 0), PQgetvalue(res, r, 1));
        json_array_append_new(ids, json_string(PQgetvalue(res, r, 0)));
    }
    PQclear(res);
    qsort(applied, (size_t)rows, sizeof *applied, ingest__cmp_str);
    t->stored += (uint64_t)rows;
    t->stale += k - (size_t)rows;
    for (size_t i = 0; i < n && k > (size_t)rows; i++) {
        if (!known[i] || items[i].kind != MF_DEVMSG_STATE)
            continue;
        char msg[24], *key;
        snprintf(msg, sizeof msg, "%" PRId64, items[i].msg);
        key = mf_xasprintf("%s\t%s", items[i].device, msg);
        if (!bsearch(&key, applied, (size_t)rows, sizeof *applied, ingest__cmp_str))
            mf_log(MF_LOG_INFO,
                   "ingest: state of device=%s with msg=%s is older than the stored one;"
                   " ignored",
                   items[i].device, msg);
        free(key);
    }
    if (rows > 0) {
        char *ids_text = json_dumps(ids, JSON_COMPACT);
        p[1] = ids_text;
        rc = ingest__exec(db, sql_models_del, 2, p, NULL, diag);
        if (rc == MF_OK)
            rc = ingest__exec(db, sql_models_put, 2, p, NULL, diag);
        free(ids_text);
    }
    json_decref(ids);
    for (int r = 0; r < rows; r++)
        free(applied[r]);
    free(applied);
    return rc;
}

/* One batch in one transaction: one statement per kind of message. Items
 * for devices that are not enrolled are skipped (logged). */
static enum mf_err ingest__write(struct mf_ingest *g, struct mf_db *db,
                                 const struct ingest_item *items, size_t n, struct ingest_tally *t,
                                 struct mf_diag *diag)
{
    json_t *ids = json_array(), *seen = json_array();
    PGresult *res = NULL;
    char *ids_text = NULL, *seen_text = NULL;
    bool *known = mf_xcalloc(n ? n : 1, sizeof *known);
    const char **sorted = mf_xcalloc(n ? n : 1, sizeof *sorted);
    struct mf_buf b;
    enum mf_err rc;

    mf_buf_init(&b, SIZE_MAX);
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
        int rows = PQntuples(res);
        for (int r = 0; r < rows; r++)
            sorted[r] = PQgetvalue(res, r, 0);
        qsort(sorted, (size_t)rows, sizeof *sorted, ingest__cmp_str);
        for (size_t i = 0; i < n; i++) {
            const char *key = items[i].device;
            known[i] = bsearch(&key, sorted, (size_t)rows, sizeof *sorted, ingest__cmp_str);
            if (!known[i])
                t->unknown++;
            else if (items[i].kind == MF_DEVMSG_EVENT || items[i].kind == MF_DEVMSG_REPORT)
                json_array_append_new(seen, json_string(items[i].device));
        }
    }
    static const enum mf_devmsg_kind inserts[] = {MF_DEVMSG_EVENT, MF_DEVMSG_REPORT};
    for (size_t k = 0; k < 2 && rc == MF_OK; k++) {
        size_t m = ingest__rows(items, n, known, inserts[k], &b);
        long rows = 0;
        const char *p[1] = {(const char *)b.data};
        if (m == 0)
            continue;
        rc = ingest__exec(db, inserts[k] == MF_DEVMSG_EVENT ? sql_events : sql_reports, 1, p, &rows,
                          diag);
        if (rc == MF_OK) {
            t->stored += (uint64_t)rows;
            t->duplicates += m - (size_t)rows;
        }
    }
    if (rc == MF_OK)
        rc = ingest__states(items, n, known, db, &b, t, diag);
    if (rc == MF_OK) {
        size_t m = ingest__rows(items, n, known, MF_DEVMSG_ONLINE, &b);
        const char *p[1] = {(const char *)b.data};
        if (m > 0 && (rc = ingest__exec(db, sql_online, 1, p, NULL, diag)) == MF_OK)
            t->stored += m;
    }
    if (rc == MF_OK && json_array_size(seen) > 0) {
        seen_text = json_dumps(seen, JSON_COMPACT);
        const char *p[1] = {seen_text};
        rc = ingest__exec(db, sql_seen, 1, p, NULL, diag);
    }
    PQclear(res); /* sorted[] pointed into it */
    if (rc == MF_OK)
        rc = mf_db_commit(db, diag);
    else
        mf_db_rollback(db);
    if (rc == MF_OK)
        for (size_t i = 0; i < n; i++)
            if (!known[i])
                ingest__log_limited(g, "ingest: %s from device=%s ignored: not enrolled",
                                    mf_devmsg_kind_name(items[i].kind), items[i].device);
    mf_buf_free(&b);
    free(sorted);
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

/* While the database is unreachable a full queue drops (ingest__push). */
static void ingest__db_down(struct mf_ingest *g, bool down)
{
    pthread_mutex_lock(&g->mu);
    g->db_down = down;
    pthread_cond_broadcast(&g->room);
    pthread_mutex_unlock(&g->mu);
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
            if (fails) {
                ingest__db_down(g, false);
                mf_log(MF_LOG_INFO, "ingest: database reachable again; %zu message(s) written",
                       n - off);
            }
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
        ingest__db_down(g, true);
        unsigned d = ingest__backoff(&fails);
        if (fails == 1 || d == INGEST_BACKOFF_MAX)
            mf_log(MF_LOG_WARN, "ingest: %s; keeping %zu message(s), retrying in %u ms",
                   mf_diag_str(&diag, why, sizeof why), n - off, d);
        ingest__nap(g, d, true);
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
        g->want = 1;
        while (g->n == 0 && !g->stop)
            pthread_cond_wait(&g->cv, &g->mu);
        g->want = 0;
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
            pthread_cond_signal(&g->room);
            if (n == g->batch_max || g->stop)
                break;
            g->want = g->batch_max - n;
            int w = pthread_cond_timedwait(&g->cv, &g->mu, &until);
            g->want = 0;
            if (w == ETIMEDOUT) {
                while (g->n > 0 && n < g->batch_max) {
                    batch[n++] = g->q[g->head];
                    g->head = (g->head + 1) % g->cap;
                    g->n--;
                }
                pthread_cond_signal(&g->room);
                break;
            }
        }
        pthread_mutex_unlock(&g->mu);
        ingest__flush(g, batch, n);
        for (size_t i = 0; i < n; i++) {
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
        free(g->q[(g->head + i) % g->cap].raw);
    }
    free(g->q);
    free(g->host);
    pthread_cond_destroy(&g->cv);
    pthread_cond_destroy(&g->room);
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
    pthread_cond_init(&g->room, &ca);
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
    pthread_cond_broadcast(&g->room);
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
