/* controller.h — the rollout controller: one thread that, every
 * controller_interval_ms, steps each live rollout and publishes the desired
 * states that result.
 *
 * A step, for one rollout, is one transaction: lock the rollout row, load
 * the snapshot (the target devices with their outcome so far, their latest
 * valid report of the candidate and their crash count), call the pure policy
 * (mf_rollout_step), then write what it decided: desired states (signed with
 * the server key, seq grown) into the outbox (desired_states with
 * published_at NULL), rollout_devices rows, the rollout's progress, the
 * stage's gate evidence, and an audit row per transition. Only after the
 * commit does the publisher send the outbox (QoS 1, retained); a desired
 * state is marked published when the broker acknowledges it, so a crash or a
 * broker outage between commit and publish resends, never loses.
 *
 * One controller at a time: each step runs under a transaction-level
 * PostgreSQL advisory lock; a server that does not get it skips the tick
 * (several server replicas may run, docs/operations.md). */
#ifndef MF_SERVER_CONTROLLER_H
#define MF_SERVER_CONTROLLER_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

struct mf_db;
struct mf_server;
struct mf_controller;

/* Starts the thread (and, when mqtt_broker is set, the publisher's MQTT
 * client, which connects and reconnects by itself). Fails only on a bad
 * configuration; the database or the broker being down is retried. */
MF_MUST_CHECK enum mf_err mf_controller_start(struct mf_server *s, struct mf_controller **out,
                                              struct mf_diag *diag);

/* Stops and joins; what is committed and not yet published stays in the
 * outbox for the next start. NULL is a no-op. */
void mf_controller_stop(struct mf_controller *c);

/* Steps now instead of at the end of the interval: the API calls it after
 * a rollout starts or changes (start, resume, promote, abort), so a stage
 * does not wait for the next tick. NULL is a no-op. */
void mf_controller_wake(struct mf_controller *c);

/* One step of one rollout exactly as the thread does it (its own
 * transaction, under the leader lock), without publishing: for benchmarks
 * and tools. *leader is false (and nothing done) when another process holds
 * the lock. */
MF_MUST_CHECK enum mf_err mf_controller_step_once(struct mf_server *s, struct mf_db *db,
                                                  int64_t rollout_id, bool *leader,
                                                  struct mf_diag *diag);

/* The two statements of a step's snapshot (see controller.c), exported so
 * bench/controller can time them alone as the baseline of a tick:
 * targets ($1 classes as a JSON array, $2 labels) and the rollout's devices
 * ($1 rollout id, $2 model, $3 version). */
extern const char mf_controller_sql_targets[];
extern const char mf_controller_sql_rollout_devices[];

#endif
