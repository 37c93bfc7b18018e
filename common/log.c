/* log.c — stderr logger. The level is process-wide configuration set once at
 * start-up, before any thread is started. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static enum mf_log_level log__level = MF_LOG_INFO;
static const char *const log__names[] = {"debug", "info", "warn", "error"};

void mf_log_set_level(enum mf_log_level level)
{
    log__level = level;
}

enum mf_log_level mf_log_get_level(void)
{
    return log__level;
}

enum mf_err mf_log_parse_level(const char *name, enum mf_log_level *out)
{
    for (int i = MF_LOG_DEBUG; i <= MF_LOG_ERROR; i++) {
        if (strcmp(name, log__names[i]) == 0) {
            *out = (enum mf_log_level)i;
            return MF_OK;
        }
    }
    return MF_ERR_USAGE;
}

void mf_log(enum mf_log_level level, const char *fmt, ...)
{
    if (level < log__level)
        return;
    char line[2048];
    char stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    /* Values from the network end up in log lines: a newline or escape there
     * could forge a line or a terminal sequence. One event, one line. */
    for (char *c = line; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            *c = '?';
    /* One write per line so concurrent writers do not interleave. */
    fprintf(stderr, "%s %s %s\n", stamp, log__names[level], line);
}
