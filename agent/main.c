/* main.c — the `modelfleet-agent` entry point. */
#include "agent/cli.h"

int main(int argc, char **argv)
{
    return mf_agent_main(argc, argv);
}
