/* log.h — one line per event on stderr, with a level and `key=value` fields
 * written by the caller. Never log a secret. */
#ifndef MF_LOG_H
#define MF_LOG_H

#include "err.h"

enum mf_log_level { MF_LOG_DEBUG, MF_LOG_INFO, MF_LOG_WARN, MF_LOG_ERROR };

/* Messages below `level` are dropped. Default: MF_LOG_INFO. */
void mf_log_set_level(enum mf_log_level level);
enum mf_log_level mf_log_get_level(void);

/* Parses "debug|info|warn|error"; returns MF_ERR_USAGE otherwise. */
enum mf_err mf_log_parse_level(const char *name, enum mf_log_level *out);

/* "2026-11-22T02:46:13Z warn <msg>\n" on stderr; control characters in msg
 * are written as '?'. */
void mf_log(enum mf_log_level level, const char *fmt, ...) MF_PRINTF(2, 3);

#endif
