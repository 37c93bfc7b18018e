#!/bin/sh
# A line that is no part of the protocol after the first sample (line 5).
. "$(dirname "$0")/lib.sh"
header
samples 0 1
echo "hello from the runner"
samples 1 "$n"
echo "end $n"
