#!/bin/sh
# Writes without end: the agent must stop it at the output cap.
. "$(dirname "$0")/lib.sh"
header
exec yes "0 0 100 flooding the agent with output it did not ask for"
