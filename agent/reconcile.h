/* reconcile.h — the agent's state machine: from a desired state (or a local
 * package file) to an active model, one step at a time, saving the state file
 * before each side effect so a crash at any instant is finished or undone on
 * the next start:
 *
 *   install:  download -> extract (verify into a slot) -> benchmark (candidate
 *             and incumbent through the runner) -> gate -> activate -> hook
 *   activate: an installed slot (current's previous) made current: instant
 *   rollback: current and previous swapped (local command)
 *
 * A refused or failed candidate is never activated: its slot is discarded,
 * the event says why, `current` is untouched. Every outcome is an event (and
 * a benchmark a report) pushed into the spool; ops->changed() tells the MQTT
 * shell there is something to publish. The reconciler does no network I/O of
 * its own except through ops->fetch, and owns no thread: one thread calls it. */
#ifndef MF_AGENT_RECONCILE_H
#define MF_AGENT_RECONCILE_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/config.h"
#include "agent/spool.h"
#include "agent/state.h"
#include "agent/statemsg.h"
#include "common/err.h"
#include "telemetry/desired.h"

#define MF_AGENT_DOWNLOADS   "downloads"
#define MF_AGENT_SPOOL       "spool"
#define MF_AGENT_SCRATCH     "scratch"     /* the runners' working directory */
#define MF_AGENT_DESIRED_MSG "desired.msg" /* the last accepted desired state, as received */
#define MF_AGENT_LOCK        "lock"        /* held by whoever changes the state (the worker) */
#define MF_AGENT_DAEMON_LOCK "daemon.lock" /* held by the daemon */
#define MF_AGENT_DESIRED_IN  "desired.in"  /* a desired state handed to the worker */

/* I/O the reconciler does not do itself (real ones in daemon.c / main, fakes
 * in tests). */
struct mf_agent_ops {
    /* Puts the package blob `m->package` (m->size bytes) into downloads_dir
     * and sets *path (caller frees) to a file whose BLAKE2b-256 is the id.
     * NULL: the agent has no server (desired states cannot be installed). */
    enum mf_err (*fetch)(void *ctx, const struct mf_desired_model *m, const char *downloads_dir,
                         char **path, struct mf_diag *diag);
    /* Something new to publish: msg is the number of the event or report
     * just stored in the spool, or 0 for a changed state. May be NULL. */
    void (*changed)(void *ctx, uint64_t msg);
    void *ctx;
};

struct mf_agent; /* opaque */

/* Crash-test hook, like mf_install_crash_hook (NULL in production); the
 * reconciler's points: "op:saved:<phase>" after each op save, "fetch:done",
 * "gate:passed", "activate:linked" (links switched, state not yet saved),
 * "hook:before". */
extern void (*mf_agent_crash_hook)(const char *point);

/* Opens the agent on cfg->state_dir (created 0700 with downloads/, spool/,
 * scratch/): takes the directory's lock (MF_ERR_CONFLICT naming the holder's
 * pid when another agent runs), loads the state file (a device id that
 * differs from cfg->device_id is MF_ERR_CONFLICT), cleans up interrupted
 * extractions and saves, opens the spool, and finishes or undoes the
 * operation that was in flight, with a "recovered" event. cfg and ops are
 * borrowed for the agent's life. stop (may be NULL) is watched during long
 * steps (download). On success *out is the caller's (mf_agent_close). */
MF_MUST_CHECK enum mf_err mf_agent_open(const struct mf_agent_config *cfg,
                                        const struct mf_agent_ops *ops, volatile sig_atomic_t *stop,
                                        struct mf_agent **out, struct mf_diag *diag);
void mf_agent_close(struct mf_agent *ag);

/* Re-applies the accepted desired state whose models were not all tried
 * before the agent stopped (state desired_done false). MF_OK when there was
 * none. */
MF_MUST_CHECK enum mf_err mf_agent_resume(struct mf_agent *ag, struct mf_diag *diag);

/* True while an accepted desired state is not reached because a download
 * could not reach the server: the shell calls mf_agent_resume() again after
 * a backoff. */
bool mf_agent_pending(const struct mf_agent *ag);

/* A desired-state message as received on the desired topic: checked
 * (telemetry/desired.h), refused with a "desired_refused" event, or accepted
 * (saved, "desired_accepted") and applied model by model. The retained
 * message the agent already accepted, received again on reconnect, is
 * ignored quietly (*quiet set when not NULL). Returns the refusal's error, or
 * MF_OK once applied (an install that failed or was refused is reported in
 * events, not here). */
MF_MUST_CHECK enum mf_err mf_agent_desired(struct mf_agent *ag, const uint8_t *msg, size_t len,
                                           bool *quiet, struct mf_diag *diag);

/* `modelfleet-agent install FILE`: the same verify / benchmark / gate /
 * activate path for a package file, no server. MF_OK when it was activated
 * (or already current); the refusal's error otherwise: MF_ERR_REFUSED for the
 * gate, the verifier's or runner's error for the rest. */
MF_MUST_CHECK enum mf_err mf_agent_install_file(struct mf_agent *ag, const char *path,
                                                struct mf_diag *diag);

/* `modelfleet-agent rollback MODEL`: previous becomes current (instant).
 * MF_ERR_NOT_FOUND without a previous. */
MF_MUST_CHECK enum mf_err mf_agent_rollback(struct mf_agent *ag, const char *model,
                                            struct mf_diag *diag);

/* Borrowed: the spool (the MQTT shell publishes and acks from it) and the
 * state (read-only). */
struct mf_spool *mf_agent_spool(struct mf_agent *ag);
const struct mf_state *mf_agent_state(const struct mf_agent *ag);

#endif
