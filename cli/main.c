/* main.c — the `modelfleet` CLI entry point. */
#include "cli/cli.h"

int main(int argc, char **argv)
{
    return mf_cli_main(argc, argv);
}
