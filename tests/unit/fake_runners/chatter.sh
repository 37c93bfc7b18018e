#!/bin/sh
# Valid output with ~12 KiB of diagnostics on stderr around it.
. "$(dirname "$0")/lib.sh"
k=0
while [ $k -lt 300 ]; do
    echo "fake runner: chatter line $k, nothing to worry about" >&2
    k=$((k + 1))
done
header
samples 0 "$n"
echo "end $n"
echo "fake runner: last words" >&2
