# lib.sh — sourced by the fake runners (tests/unit/test_agent.c). Parses the
# protocol's options, records them in ./args (the scratch directory), checks
# stdin is empty, and reads n from the "model" file (a number, one line).
set -eu
printf '%s\n' "$*" >args
model='' inputs='' warmup='' threads=''
while [ $# -gt 0 ]; do
    case "$1" in
    --model) model=$2; shift 2 ;;
    --inputs) inputs=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    *) echo "fake runner: unknown option $1" >&2; exit 2 ;;
    esac
done
[ -r "$model" ] && [ -r "$inputs" ] && [ -n "$warmup" ] || {
    echo "fake runner: missing --model, --inputs or --warmup" >&2
    exit 2
}
if read -r _line; then
    echo "fake runner: stdin is not empty" >&2
    exit 2
fi
n=$(cat "$model")

header() {
    echo "modelfleet-runner 1 fake-rt 0.1.0+test"
    echo "load 1234"
    echo "first 567"
}

# Samples $1..$2-1: class i % 10, latency 100 + i.
samples() {
    i=$1
    while [ "$i" -lt "$2" ]; do
        echo "$i $((i % 10)) $((100 + i))"
        i=$((i + 1))
    done
}
