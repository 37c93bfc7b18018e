#!/bin/sh
# Some output, a complaint on stderr, then exit status 3.
. "$(dirname "$0")/lib.sh"
header
samples 0 2
echo "fake runner: out of cheese" >&2
exit 3
