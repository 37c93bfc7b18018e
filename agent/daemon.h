/* daemon.h — `modelfleet-agent run`: the agent connected to its broker.
 *
 * Two processes. The daemon (`modelfleet-agentd`, which `modelfleet-agent
 * run` becomes by exec) holds the MQTT connection, the outbox and nothing
 * heavy: it links neither libcurl nor libarchive, so an idle device pays for
 * a small MQTT client only. Every piece of real work runs in a worker,
 * `modelfleet-agent apply [desired.in]` (the full binary, started next to
 * it): recovery at start, each desired state, the retries of a pending one.
 * The worker owns the state file and the spool while it runs; the daemon
 * republishes the state on each line the worker writes to its stdout, and
 * the worker's events when it has ended. A worker that crashes is only a
 * failed attempt: the daemon starts another after a backoff.
 *
 * Two threads in the daemon. The main thread owns the spool, the worker and
 * everything published; the network thread owns only the MQTT socket: it
 * connects (jittered exponential backoff between attempts), reads, writes,
 * and sends keepalive pings, sleeping in poll() in between — an idle agent
 * wakes four times per keepalive period and does nothing else. The network
 * thread hands what arrives (desired state, connection changes, PUBACKs) to
 * the main thread through a small locked mailbox and a wake-up pipe.
 *
 * Topics (docs/protocol.md): subscribes to its own `desired` (QoS 1);
 * publishes `online` "1" retained on connect, "0" as last will and on a clean
 * stop; `state` retained on connect and after every change; `event` and
 * `report` from the spool, oldest first, each deleted from the spool once the
 * broker acknowledges it (QoS 1), at most MF_DAEMON_WINDOW in flight. */
#ifndef MF_AGENT_DAEMON_H
#define MF_AGENT_DAEMON_H

#include <stddef.h>

#include "agent/config.h"
#include "common/err.h"

#define MF_DAEMON_WINDOW        32 /* spool messages in flight at once */
#define MF_DAEMON_WORKER_STOP_S 10 /* SIGTERM: the worker's grace before SIGKILL */
#define MF_AGENT_EXIT_PENDING   75 /* apply: a download could not reach the server */

/* Runs until SIGTERM or SIGINT (MF_OK) or a start-up error (the error,
 * with diag). cfg must have passed mf_agent_config_check(). worker is the
 * full binary's absolute path; config_args are the configuration flags the
 * daemon got (`--config F`, `--key value` ...), passed on to each worker. */
MF_MUST_CHECK enum mf_err mf_agent_daemon(const struct mf_agent_config *cfg, const char *worker,
                                          char *const *config_args, size_t n_config_args,
                                          struct mf_diag *diag);

/* `modelfleet-agentd [--config F] [--KEY VALUE ...] [run]`: the daemon's
 * main(); finds modelfleet-agent next to itself. */
int mf_agentd_main(int argc, char **argv);

/* "<directory of this executable>/<name>" (caller frees), or NULL. */
char *mf_agent_sibling(const char *name);

#endif
