/* agentd_main.c — the `modelfleet-agentd` entry point (agent/daemon.h). */
#include "agent/daemon.h"

int main(int argc, char **argv)
{
    return mf_agentd_main(argc, argv);
}
