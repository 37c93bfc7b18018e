#!/bin/sh
# Killed by a signal (SIGUSR1) half-way.
. "$(dirname "$0")/lib.sh"
header
echo "fake runner: about to be killed" >&2
kill -USR1 $$
sleep 5
