/* fetch.h — the reconciler's real fetch op (struct mf_agent_ops.fetch):
 * mf_download of a package blob from the configured server with the device
 * credential and the config's limits. libcurl is initialised at the first
 * download, not at start, so an agent that never downloads never loads it. */
#ifndef MF_AGENT_FETCH_H
#define MF_AGENT_FETCH_H

#include <signal.h>
#include <stdbool.h>

#include "agent/config.h"
#include "common/err.h"
#include "telemetry/desired.h"

struct mf_agent_fetcher {
    const struct mf_agent_config *cfg; /* borrowed */
    char *credential;                  /* owned, wiped on free */
    volatile sig_atomic_t *stop;       /* borrowed, may be NULL */
    bool curl_ready;
};

/* Reads the credential file (when set). */
MF_MUST_CHECK enum mf_err mf_agent_fetcher_init(struct mf_agent_fetcher *f,
                                                const struct mf_agent_config *cfg,
                                                volatile sig_atomic_t *stop, struct mf_diag *diag);
void mf_agent_fetcher_free(struct mf_agent_fetcher *f);

/* The op: ctx is a struct mf_agent_fetcher. */
enum mf_err mf_agent_fetch(void *ctx, const struct mf_desired_model *m, const char *dir,
                           char **path, struct mf_diag *diag);

#endif
