#!/bin/sh
# Allocates (and touches) a 100 MiB buffer, then reports normally. Under an
# address-space limit below that, the allocation fails and so does the run.
. "$(dirname "$0")/lib.sh"
dd if=/dev/zero of=/dev/null bs=100M count=1 2>dd.err || {
    cat dd.err >&2
    exit 1
}
header
samples 0 "$n"
echo "end $n"
