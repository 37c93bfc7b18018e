/* daemon.h — `modelfleet-agent run`: the agent connected to its broker.
 *
 * Two threads. The main thread owns the agent (state file, spool,
 * reconciler) and decides everything that is published; the network thread
 * owns only the MQTT socket: it connects (jittered exponential backoff
 * between attempts), reads, writes, and sends keepalive pings, sleeping in
 * poll() in between — an idle agent wakes four times per keepalive period
 * and does nothing else. The network thread hands what arrives (desired
 * state, connection changes, PUBACKs) to the main thread through a small
 * locked mailbox and a wake-up pipe.
 *
 * Topics (docs/protocol.md): subscribes to its own `desired` (QoS 1);
 * publishes `online` "1" retained on connect, "0" as last will and on a clean
 * stop; `state` retained on connect and after every change; `event` and
 * `report` from the spool, oldest first, each deleted from the spool once the
 * broker acknowledges it (QoS 1), at most MF_DAEMON_WINDOW in flight. */
#ifndef MF_AGENT_DAEMON_H
#define MF_AGENT_DAEMON_H

#include "agent/config.h"
#include "common/err.h"

#define MF_DAEMON_WINDOW      32  /* spool messages in flight at once */
#define MF_DAEMON_RETRY_MIN_S 30  /* a pending desired state is retried after ... */
#define MF_DAEMON_RETRY_MAX_S 600 /* ... doubling up to this */

/* Runs until SIGTERM or SIGINT (exit status 0) or a start-up error (the
 * error, with diag). cfg must have passed mf_agent_config_check(). */
MF_MUST_CHECK enum mf_err mf_agent_daemon(const struct mf_agent_config *cfg, struct mf_diag *diag);

#endif
