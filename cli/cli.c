/* cli.c — subcommand dispatch and shared error reporting. */
#include "cli.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/hash.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} cli__commands[] = {
    {"keygen", mf_cli_keygen, "create an Ed25519 signing key pair"},
    {"pack", mf_cli_pack, "build a model package from files and/or a spec file"},
    {"sign", mf_cli_sign, "sign or re-sign a package in place"},
    {"inspect", mf_cli_inspect, "show what a package claims to be (no verification)"},
    {"verify", mf_cli_verify, "check a package's signature and every file hash"},
    {"push", mf_cli_push, "upload a package to the server"},
    {"models", mf_cli_models, "list models, their versions and variants on the server"},
    {"devices", mf_cli_devices, "list devices (filter by hardware class, model, online)"},
    {"fleet", mf_cli_fleet, "fleet summary: devices per hardware class, model, version"},
    {"rollout", mf_cli_rollout, "start, watch, pause, resume, promote or abort staged rollouts"},
};

#define CLI_NCOMMANDS (sizeof cli__commands / sizeof cli__commands[0])

static void cli__help(FILE *out)
{
    fprintf(out, "usage: modelfleet <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < CLI_NCOMMANDS; i++)
        fprintf(out, "  %-9s %s\n", cli__commands[i].name, cli__commands[i].help);
    fprintf(out, "\n'modelfleet <command> --help' shows a command's options.\n"
                 "push, models, devices, fleet and rollout talk to modelfleet-server: --url and\n"
                 "--token, MODELFLEET_URL and MODELFLEET_TOKEN, or ~/.config/modelfleet/config.\n"
                 "exit codes: 0 success, 1 failed (e.g. package refused, server unreachable),\n"
                 "2 usage error\n");
}

int mf_cli_fail(const char *cmd, const struct mf_diag *diag)
{
    char line[MF_DIAG_STR_MAX];
    fprintf(stderr, "modelfleet %s: %s: %s\n", cmd, mf_strerror(diag->err),
            mf_diag_str(diag, line, sizeof line));
    return diag->err == MF_ERR_USAGE ? MF_EXIT_USAGE : MF_EXIT_FAIL;
}

int mf_cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "modelfleet %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(see 'modelfleet %s --help')\n", cmd);
    return MF_EXIT_USAGE;
}

int mf_cli_main(int argc, char **argv)
{
    mf_crypto_init();
    if (argc < 2) {
        cli__help(stderr);
        return MF_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        cli__help(stdout);
        return MF_EXIT_OK;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("modelfleet %s\n", MF_VERSION);
        return MF_EXIT_OK;
    }
    for (size_t i = 0; i < CLI_NCOMMANDS; i++)
        if (strcmp(cmd, cli__commands[i].name) == 0)
            return cli__commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "modelfleet: '%s' is not a command\n", cmd);
    cli__help(stderr);
    return MF_EXIT_USAGE;
}
