/* statemsg.h — what the agent publishes retained on mf/v1/d/<id>/state. */
#ifndef MF_AGENT_STATEMSG_H
#define MF_AGENT_STATEMSG_H

#include <stddef.h>
#include <stdint.h>

#include "agent/config.h"
#include "agent/state.h"

#define MF_AGENT_VERSION "0.4.0"

/* The state message for s (caller frees): its models, the op in flight, the
 * runtimes of the config's runners, last_msg (the newest event or report
 * number produced), spool_dropped, free disk under the state directory and
 * MemAvailable. */
char *mf_state_message(const struct mf_agent_config *c, const struct mf_state *s, uint64_t last_msg,
                       uint64_t spool_dropped, size_t *len);

#endif
