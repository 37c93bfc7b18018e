/* cli.h — the `modelfleet` command: git-style subcommands sharing a few
 * helpers. Exit codes: 0 success, 1 the operation failed (a package refused,
 * a file unreadable, the server unreachable or refusing), 2 a usage error. */
#ifndef MF_CLI_H
#define MF_CLI_H

#include "common/err.h"

#define MF_EXIT_OK    0
#define MF_EXIT_FAIL  1
#define MF_EXIT_USAGE 2

int mf_cli_main(int argc, char **argv);

int mf_cli_keygen(int argc, char **argv);
int mf_cli_pack(int argc, char **argv);
int mf_cli_sign(int argc, char **argv);
int mf_cli_inspect(int argc, char **argv);
int mf_cli_verify(int argc, char **argv);
/* Remote commands (cmd_remote.c): talk to modelfleet-server's HTTP API. */
int mf_cli_push(int argc, char **argv);
int mf_cli_models(int argc, char **argv);
int mf_cli_devices(int argc, char **argv);
int mf_cli_fleet(int argc, char **argv);
/* `modelfleet rollout <start|status|list|...>` (cmd_rollout.c). */
int mf_cli_rollout(int argc, char **argv);

/* Prints "modelfleet <cmd>: <diag>" on stderr and returns MF_EXIT_FAIL (or
 * MF_EXIT_USAGE for MF_ERR_USAGE). */
int mf_cli_fail(const char *cmd, const struct mf_diag *diag);
/* Prints "modelfleet <cmd>: <msg>" and the usage hint; returns MF_EXIT_USAGE. */
int mf_cli_usage_error(const char *cmd, const char *fmt, ...) MF_PRINTF(2, 3);

#endif
