#!/bin/sh
# Hangs in a child process; records the child's pid in ./sleep.pid so the
# test can check the whole process group was killed.
. "$(dirname "$0")/lib.sh"
header
echo "fake runner: thinking" >&2
sleep 100 &
echo $! >sleep.pid
wait
