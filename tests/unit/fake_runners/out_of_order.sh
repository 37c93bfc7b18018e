#!/bin/sh
# Samples 0, 2, 1, 3... : sample 1 missing where it belongs.
. "$(dirname "$0")/lib.sh"
header
echo "0 0 100"
echo "2 2 102"
echo "1 1 101"
samples 3 "$n"
echo "end $n"
