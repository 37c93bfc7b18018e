/* statemsg.c — the retained state message (telemetry/devmsg.h) from the
 * state file, the config and the outbox's counters, plus the free disk and
 * memory the device has now. */
#include "statemsg.h"

#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/fs.h"
#include "common/mem.h"
#include "telemetry/devmsg.h"

static uint64_t statemsg__mem_available(void)
{
    struct mf_buf b;
    struct mf_diag d = {0};
    uint64_t kb = 0;
    if (mf_fs_read_file("/proc/meminfo", 1 << 16, &b, &d) != MF_OK)
        return 0;
    if (mf_buf_append(&b, "", 1) != MF_OK) {
        mf_buf_free(&b);
        return 0;
    }
    const char *p = strstr((const char *)b.data, "MemAvailable:");
    if (p)
        kb = strtoull(p + 13, NULL, 10);
    mf_buf_free(&b);
    return kb * 1024;
}

char *mf_state_message(const struct mf_agent_config *c, const struct mf_state *s, uint64_t last_msg,
                       uint64_t spool_dropped, size_t *len)
{
    const char **runtimes = mf_xcalloc(c->runners.n + 1, sizeof *runtimes);
    char **names = mf_xcalloc(c->runners.n + 1, sizeof *names);
    struct mf_state_msg_model *models = mf_xcalloc(s->n_models + 1, sizeof *models);
    for (size_t i = 0; i < c->runners.n; i++) {
        const char *eq = strchr(c->runners.v[i], '=');
        names[i] = eq ? mf_xstrndup(c->runners.v[i], (size_t)(eq - c->runners.v[i]))
                      : mf_xstrdup(c->runners.v[i]);
        runtimes[i] = names[i];
    }
    for (size_t i = 0; i < s->n_models; i++) {
        const struct mf_state_model *m = &s->models[i];
        models[i] = (struct mf_state_msg_model){
            .name = m->name,
            .version = m->current.version,
            .package = m->current.package,
            .previous_version = m->previous.slot[0] ? m->previous.version : NULL,
            .previous_package = m->previous.slot[0] ? m->previous.package : NULL};
    }
    struct statvfs vfs;
    uint64_t disk_free =
        statvfs(c->state_dir, &vfs) == 0 ? (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize : 0;
    bool op = s->op.kind != MF_STATE_OP_NONE;
    struct mf_state_msg msg = {.device = c->device_id,
                               .hw_class = c->hw_class,
                               .agent_version = MF_AGENT_VERSION,
                               .msg = last_msg,
                               .time = mf_clock_now(),
                               .desired_seq = s->desired_seq,
                               .runtimes = runtimes,
                               .n_runtimes = c->runners.n,
                               .models = models,
                               .n_models = s->n_models,
                               .op_kind = op ? mf_state_op_kind_name(s->op.kind) : NULL,
                               .op_model = op ? s->op.model : NULL,
                               .op_version = op ? s->op.version : NULL,
                               .op_phase = op ? mf_state_phase_name(s->op.phase) : NULL,
                               .disk_free = disk_free,
                               .mem_available = statemsg__mem_available(),
                               .spool_dropped = spool_dropped};
    char *text = mf_devmsg_state_format(&msg, len);
    for (size_t i = 0; i < c->runners.n; i++)
        free(names[i]);
    free(names);
    free(runtimes);
    free(models);
    return text;
}
