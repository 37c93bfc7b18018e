/* cli.h — the `modelfleet-agent` command line:
 *
 *   modelfleet-agent [--config FILE] [--KEY VALUE ...] [run]     the daemon
 *   modelfleet-agent [...] install PKG        verify, benchmark, gate, activate
 *   modelfleet-agent [...] status [--json]    what runs, what is in flight
 *   modelfleet-agent [...] rollback MODEL     previous becomes current
 *   modelfleet-agent --check-config [--config FILE] [--KEY VALUE ...]
 *
 * Exit status: 0 success; 1 failure (with a sentence on stderr); 2 a usage
 * error; 3 the activation gate refused the package (install). */
#ifndef MF_AGENT_CLI_H
#define MF_AGENT_CLI_H

#define MF_AGENT_EXIT_REFUSED 3

int mf_agent_main(int argc, char **argv);

#endif
