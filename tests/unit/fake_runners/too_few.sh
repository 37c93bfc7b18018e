#!/bin/sh
# One sample short, with a matching (wrong) end count.
. "$(dirname "$0")/lib.sh"
header
samples 0 $((n - 1))
echo "end $((n - 1))"
