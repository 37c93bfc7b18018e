/* main.c — the `modelfleet-server` entry point. */
#include "server/server.h"

int main(int argc, char **argv)
{
    return mf_server_main(argc, argv);
}
