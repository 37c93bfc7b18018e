#!/bin/sh
# make_corpus.sh — regenerates the named seed inputs of tests/fuzz/corpus/
# deterministically: good packages come from the real `modelfleet pack`,
# signed by the fuzz key (fuzz_key.h); make_corpus.py derives everything else.
#
#   tests/fuzz/make_corpus.sh [BUILD_DIR]      (default: build)
#
# Needs the build's modelfleet and fuzz_signer, python3 (stdlib only) and the
# zstd command. Files the fuzzers found (hash names) are left alone.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
mf=$build/cli/modelfleet
signer=$build/tests/fuzz/fuzz_signer
for tool in "$mf" "$signer"; do
    [ -x "$tool" ] || { echo "make_corpus: $tool is missing; build first" >&2; exit 1; }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/mf-corpus.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
created=2026-01-31T12:00:00Z

# The fuzz key (public test material) and tiny payload files.
"$signer" keys "$work/fuzz" >/dev/null
python3 "$here/make_corpus.py" payload "$work/src"
src=$work/src

pack() { # pack OUT [extra options...]; --hardware pi4 unless given
    out=$1
    shift
    case " $* " in *" --hardware "*) hw= ;; *) hw="--hardware pi4" ;; esac
    # shellcheck disable=SC2086 # $hw is empty or two words
    "$mf" pack --name tiny-net --version 1.0.0 $hw --runtime onnx \
        --model "$src/net.onnx" --eval-inputs "$src/inputs.npy" --eval-labels "$src/labels.npy" \
        --min-accuracy 0.9 --created "$created" --out "$work/$out" "$@" >/dev/null
}

pack signed.mfpkg --key "$work/fuzz.key"
pack signed-zstd.mfpkg --key "$work/fuzz.key" --zstd
pack unsigned.mfpkg
pack unsigned-zstd.mfpkg --zstd
pack signed-budgets.mfpkg --key "$work/fuzz.key" --hardware pi4,jetson-orin,x86-64 \
    --latency-p99-ms 12.5 --memory 64M --max-accuracy-drop 0.005 --min-agent-version 0.2.0-rc.1 \
    --meta team=vision --meta "note=tiny seed" --file docs/README.txt="$src/readme.txt" \
    --file docs/deep/a/b/c.txt="$src/readme.txt"
pack signed-empty-file.mfpkg --key "$work/fuzz.key" --file empty.bin="$src/empty.bin"
# Refused by fuzz_archive's agent (0.2.0) before any payload byte.
pack signed-needs-agent-9.mfpkg --key "$work/fuzz.key" --min-agent-version 9.0.0
# 192 KiB of payload in a few hundred bytes: extraction hashes big blocks on
# its helper thread.
pack signed-zstd-big.mfpkg --key "$work/fuzz.key" --zstd --file big/zeros.bin="$src/zeros.bin"
# One package of the real fixture model (int8: the smallest), compressed.
"$mf" pack --name digits --version 2.1.0+int8 --hardware pi4,pi5 --runtime onnx \
    --model "$root/tests/fixtures/models/digits-int8.onnx" \
    --eval-inputs "$root/tests/fixtures/models/eval-inputs.npy" \
    --eval-labels "$root/tests/fixtures/models/eval-labels.npy" \
    --min-accuracy 0.95 --latency-p99-ms 5 --memory 256M --created "$created" --zstd \
    --key "$work/fuzz.key" --out "$work/real-digits-int8.mfpkg" >/dev/null
# `sign` on an unsigned package (rewrites it with the fuzz key's signature).
cp "$work/unsigned.mfpkg" "$work/signed-by-sign.mfpkg"
"$mf" sign --key "$work/fuzz.key" "$work/signed-by-sign.mfpkg" >/dev/null
# Sanity: the good ones verify against the fuzz key.
for p in signed signed-zstd signed-budgets signed-by-sign real-digits-int8; do
    "$mf" verify --quiet --pubkey "$work/fuzz.pub" "$work/$p.mfpkg" >/dev/null
done

python3 "$here/make_corpus.py" derive "$work" "$here/corpus" "$signer"
echo "make_corpus: seeds written to $here/corpus/{manifest,archive}"
