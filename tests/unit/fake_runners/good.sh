#!/bin/sh
# Valid output for n samples: class i % 10, latency 100 + i us.
. "$(dirname "$0")/lib.sh"
header
samples 0 "$n"
echo "end $n"
