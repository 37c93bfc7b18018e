#!/bin/sh
# Valid output, exit 0, but leaves a child holding stdout open: the agent
# must not wait for it (it kills the group once the runner has exited).
. "$(dirname "$0")/lib.sh"
header
samples 0 "$n"
echo "end $n"
sleep 100 &
echo $! >sleep.pid
exit 0
