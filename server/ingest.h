/* ingest.h — telemetry ingest: the server subscribes (QoS 1) to every
 * device's state, event, report and online topics, checks each message
 * (mf_topic_parse, mf_devmsg_check, or the exact "0"/"1" of online), and
 * hands the message bytes that pass to one writer thread through a bounded
 * queue. Full: the network thread waits while the writer makes progress (the
 * broker keeps the rest in the session's queue); only while the database is
 * unreachable is the newest message dropped and counted. The writer stores
 * batches (ingest_batch messages or 200 ms) in one transaction each, with
 * one statement per kind of message: events and reports once per (device,
 * msg), the newest state per device (with its models in device_models),
 * online, and last_seen (moved by events and reports at most every 30 s per
 * device). A database outage keeps the batch and retries with backoff;
 * nothing here takes the process down.
 *
 * Threads: one MQTT network thread (connect, reconnect with backoff, loop)
 * and the writer, which uses its own database connection (mf_server_db). */
#ifndef MF_SERVER_INGEST_H
#define MF_SERVER_INGEST_H

#include <stdint.h>

#include "common/err.h"

struct mf_server;
struct mf_ingest;

/* What the ingest has done since it started (for logs and tests). */
struct mf_ingest_stats {
    uint64_t received;   /* messages delivered by the broker */
    uint64_t refused;    /* failed a check (topic, size, JSON, schema, device) */
    uint64_t dropped;    /* queue full, or lost at shutdown with the database down */
    uint64_t stored;     /* rows written: events, reports, states, online changes */
    uint64_t duplicates; /* events and reports already stored (redelivery) */
    uint64_t stale;      /* states older (lower msg) than the stored one */
    uint64_t unknown;    /* for a device that is not enrolled */
    uint64_t failed;     /* refused by the database (logged), not retried */
};

/* Starts both threads against s->cfg.mqtt_broker. Fails only on a bad
 * configuration (broker address, unreadable password file), never because
 * the broker or the database is down: those are retried. */
MF_MUST_CHECK enum mf_err mf_ingest_start(struct mf_server *s, struct mf_ingest **out,
                                          struct mf_diag *diag);

/* Disconnects, lets the writer store what is queued (one attempt if the
 * database is down), joins and frees; logs the totals. NULL is a no-op. */
void mf_ingest_stop(struct mf_ingest *g);

void mf_ingest_stats(struct mf_ingest *g, struct mf_ingest_stats *out);

#endif
