/* fuzz_config.c — libFuzzer target for config files (common/config.c) as the
 * agent and the server read them: a file an installer, a configuration
 * management tool or a person wrote. mf_cfg_parse must refuse with a named
 * error (diag naming the line) or set values that are within their table's
 * ranges; either way the config frees cleanly. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_TARGET "fuzz_config"
#include "agent/config.h"
#include "fuzz_check.h"
#include "server/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Every INT / DOUBLE / SIZE value within its range, every string without a
 * line break (values run to the end of their line). */
static void check_ranges(const struct mf_cfg_key *table, const void *obj)
{
    for (const struct mf_cfg_key *k = table; k->name; k++) {
        const char *p = (const char *)obj + k->offset;
        if (k->type == MF_CFG_STR) {
            const char *s = *(char *const *)(const void *)p;
            if (s && strpbrk(s, "\r\n"))
                fail("%s holds a line break", k->name);
        }
        if (!(k->min < k->max))
            continue;
        double v = k->type == MF_CFG_INT      ? (double)*(const int64_t *)(const void *)p
                   : k->type == MF_CFG_DOUBLE ? *(const double *)(const void *)p
                   : k->type == MF_CFG_SIZE   ? (double)*(const uint64_t *)(const void *)p
                                              : k->min;
        if (v < k->min || v > k->max)
            fail("%s = %g is outside [%g, %g]", k->name, v, k->min, k->max);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct mf_agent_config a;
    struct mf_server_config s;
    struct mf_diag diag = {0};

    mf_cfg_defaults(mf_agent_config_table, &a);
    enum mf_err rc = mf_cfg_parse(mf_agent_config_table, &a, data, size, "agent.conf", &diag);
    check_diag("mf_cfg_parse(agent)", rc, &diag);
    if (rc == MF_OK)
        check_ranges(mf_agent_config_table, &a);
    else if (strncmp(diag.where, "agent.conf", 10) != 0)
        fail("a refusal that does not name the file: '%s'", diag.where);
    mf_agent_config_free(&a);

    memset(&diag, 0, sizeof diag);
    mf_cfg_defaults(mf_server_config_table, &s);
    rc = mf_cfg_parse(mf_server_config_table, &s, data, size, "server.conf", &diag);
    check_diag("mf_cfg_parse(server)", rc, &diag);
    if (rc == MF_OK)
        check_ranges(mf_server_config_table, &s);
    mf_server_config_free(&s);
    return 0;
}
