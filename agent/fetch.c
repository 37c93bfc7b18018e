/* fetch.c — the real fetch op (see fetch.h). */
#include "fetch.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "agent/download.h"
#include "common/log.h"

enum mf_err mf_agent_fetcher_init(struct mf_agent_fetcher *f, const struct mf_agent_config *cfg,
                                  volatile sig_atomic_t *stop, struct mf_diag *diag)
{
    memset(f, 0, sizeof *f);
    f->cfg = cfg;
    f->stop = stop;
    return mf_cfg_secret(cfg->credential_file, &f->credential, diag);
}

void mf_agent_fetcher_free(struct mf_agent_fetcher *f)
{
    if (f->credential) {
        memset(f->credential, 0, strlen(f->credential));
        free(f->credential);
        f->credential = NULL;
    }
    if (f->curl_ready)
        curl_global_cleanup();
    f->curl_ready = false;
}

enum mf_err mf_agent_fetch(void *ctx, const struct mf_desired_model *m, const char *dir,
                           char **path, struct mf_diag *diag)
{
    struct mf_agent_fetcher *f = ctx;
    const struct mf_agent_config *c = f->cfg;
    if (!f->curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return mf_diag_set(diag, MF_ERR_IO, "libcurl", "cannot initialise");
        f->curl_ready = true;
    }
    struct mf_download_result res;
    struct mf_download_spec spec = {.base_url = c->server_url,
                                    .package_id = m->package,
                                    .size = m->size,
                                    .credential = f->credential,
                                    .dir = dir,
                                    .low_speed_time_s = (long)c->download_timeout,
                                    .max_bytes_per_sec = c->download_rate,
                                    .retries = (unsigned)c->download_retries,
                                    .backoff_ms = (uint64_t)c->download_backoff_ms,
                                    .backoff_max_ms = (uint64_t)c->download_backoff_max_ms,
                                    .stop = f->stop,
                                    .budget = c->disk_budget};
    enum mf_err err = mf_download(&spec, &res, diag);
    mf_log(err == MF_OK ? MF_LOG_INFO : MF_LOG_WARN,
           "download %s device=%s package=%s bytes=%" PRIu64 " attempts=%u resumed=%s cached=%s",
           err == MF_OK ? "done" : "failed", c->device_id, m->package, res.bytes_fetched,
           res.attempts, res.resumed ? "yes" : "no", res.cached ? "yes" : "no");
    if (err == MF_OK) {
        *path = res.path;
        res.path = NULL;
    }
    mf_download_result_free(&res);
    return err;
}
