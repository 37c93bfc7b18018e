#!/bin/bash
# run.sh MODELFLEET SRCDIR — ctest `compat_python_packer`.
# mfpkg_py.py implements the package format from docs/package-format.md alone;
# this checks it against the C implementation in both directions:
#   (a) packages packed by Python verify with `modelfleet verify`;
#   (b) Python and `modelfleet pack` give byte-identical packages for the same
#       inputs and --created (the doc pins the tar layout); a package written
#       through Python's stock tarfile differs in header bytes only, so for it
#       the manifest bytes and the entries are compared;
#   (c) packages made by the C CLI verify with the Python verifier;
#   (d) one flipped payload byte makes `modelfleet verify` exit 1 with
#       "hash mismatch" in its one-line message;
#   (e) both verifiers refuse the same broken packages with the same error.
# Exits 77 (ctest SKIP) only when /usr/bin/python3 or its Ed25519 module
# (Debian python3-cryptography, or python3-nacl) is missing.
set -u

MF=${1:?usage: run.sh MODELFLEET SRCDIR}
SRC=${2:?usage: run.sh MODELFLEET SRCDIR}
PY=/usr/bin/python3
IMPL=$SRC/tests/compat/mfpkg_py.py
FIX=$SRC/tests/fixtures/models

skip() {
    echo "SKIP: $*"
    exit 77
}
[ -x "$PY" ] || skip "$PY is missing"
"$PY" -c 'import cryptography.hazmat.primitives.asymmetric.ed25519' 2>/dev/null ||
    "$PY" -c 'import nacl.signing' 2>/dev/null ||
    skip "no Ed25519 module for $PY (apt-get install python3-cryptography)"
if [ ! -x "$MF" ]; then
    echo "FAIL: $MF is not an executable"
    exit 1
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/mf-compat.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
failures=0
fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}
ok() { echo "ok: $*"; }
py() { "$PY" "$IMPL" "$@"; }

# Flips one bit of byte `off` (default: the middle) of entry $2's data in tar $1.
flip() {
    "$PY" - "$@" <<'EOF'
import sys, tarfile
path, member = sys.argv[1], sys.argv[2]
with tarfile.open(path) as t:
    m = t.getmember(member)
off = m.offset_data + m.size // 2
with open(path, "r+b") as f:
    f.seek(off)
    b = f.read(1)[0]
    f.seek(off)
    f.write(bytes([b ^ 0x01]))
EOF
}

# Runs `modelfleet verify`; sets C_RC and C_ERR (stderr).
c_verify() {
    C_ERR=$("$MF" verify --quiet "$@" 2>&1 >/dev/null)
    C_RC=$?
}
# Runs the Python verifier; sets P_RC and P_ERR.
p_verify() {
    P_ERR=$(py verify --quiet "$@" 2>&1 >/dev/null)
    P_RC=$?
}
# signed_copy SRC DST: SIGNED=SRC when this case packs with --key, else a copy
# of SRC at DST signed by `modelfleet sign` (the Python packer signs only with --key).
signed_copy() {
    SIGNED=$1
    grep -q -- --key <<<"${args[*]}" && return 0
    cp "$1" "$2"
    "$MF" sign --key "$TMP/k.key" "$2" >/dev/null || fail "case $n: modelfleet sign $1"
    SIGNED=$2
}

"$MF" keygen --out "$TMP/k" >/dev/null || {
    echo "FAIL: modelfleet keygen"
    exit 1
}
"$MF" keygen --out "$TMP/other" >/dev/null || exit 1
kid=$(sed -n 's/^key-id: //p' "$TMP/k.pub")
if [ "$(py keyinfo "$TMP/k.key")" = "secret key $kid" ] &&
    [ "$(py keyinfo "$TMP/k.pub")" = "public key $kid" ]; then
    ok "Python reads modelfleet key files (key id re-derived)"
else
    fail "Python cannot read the key files made by modelfleet keygen"
fi

# Extra payload for case 2: a path over 100 bytes (ustar prefix split), an
# empty file and a hidden file.
printf 'extra\n' >"$TMP/extra.txt"
: >"$TMP/empty.bin"
LONG="assets/$(printf 'b%.0s' $(seq 1 60))/$(printf 'c%.0s' $(seq 1 60)).txt"

# Three input sets: the doc's example (signed); awkward values (unsigned);
# rounding and epoch edge (signed). Commas inside values are list separators.
# shellcheck disable=SC2054
CASE1=(--name digits --version 1.2.0 --hardware pi4,jetson-orin
    --model "$FIX/digits-fp32.onnx" --eval-inputs "$FIX/eval-inputs.npy"
    --eval-labels "$FIX/eval-labels.npy" --min-accuracy 0.95 --latency-p99-ms 12.5
    --memory 256M --meta team=vision --created 2026-01-31T12:00:00Z --key "$TMP/k.key")
CASE2=(--name digits-int8 --version 2.0.0-rc.1+b.007 --hardware pi4 --hardware 'jetson-orin, x86'
    --runtime onnx --model "$FIX/digits-int8.onnx" --eval-inputs "$FIX/eval-inputs.npy"
    --eval-labels "$FIX/eval-labels.npy" --min-accuracy 1 --max-accuracy-drop 0
    --latency-p99-ms 0.000001 --memory 1 --min-agent-version 0.2.0
    --meta $'esc=\x1b"\\/\xc3\xa9\x7f' --meta x=1 --meta y=2 --meta x=3
    --file "$LONG=$TMP/extra.txt" --file "zz/empty=$TMP/empty.bin"
    --file "a/.hidden=$TMP/extra.txt" --created 2000-02-29T23:59:59Z)
CASE3=(--name m --version 0.0.1 --hardware h --model "$FIX/digits-int2.onnx"
    --eval-inputs "$FIX/eval-inputs.npy" --eval-labels "$FIX/eval-labels.npy"
    --min-accuracy 0.123456789012345 --max-accuracy-drop 0.3 --latency-p99-ms 3600000
    --created 1970-01-01T00:00:00Z --key "$TMP/k.key")

for n in 1 2 3; do
    case $n in
    1) args=("${CASE1[@]}") ;;
    2) args=("${CASE2[@]}") ;;
    3) args=("${CASE3[@]}") ;;
    esac
    c=$TMP/c$n.mfpkg p=$TMP/p$n.mfpkg t=$TMP/t$n.mfpkg
    if ! "$MF" pack "${args[@]}" --out "$c" >/dev/null; then
        fail "case $n: modelfleet pack failed"
        continue
    fi
    if ! py pack "${args[@]}" --out "$p" >/dev/null ||
        ! py pack "${args[@]}" --tar-style tarfile --out "$t" >/dev/null; then
        fail "case $n: mfpkg_py.py pack failed"
        continue
    fi

    # (a) Python-made packages verify with modelfleet (unsigned ones after
    # `modelfleet sign`, on a copy).
    for v in p t; do
        signed_copy "$TMP/$v$n.mfpkg" "$TMP/s$v$n.mfpkg"
        pkg=$SIGNED
        c_verify --pubkey "$TMP/k.pub" "$pkg"
        if [ "$C_RC" = 0 ]; then
            ok "(a) case $n: modelfleet verify accepts the Python package ($v)"
        else
            fail "(a) case $n: modelfleet verify refused the Python package ($v): $C_ERR"
        fi
    done

    # (b) byte identity with the pinned layout ...
    if cmp -s "$c" "$p"; then
        ok "(b) case $n: Python and C packages are byte-identical ($(stat -c %s "$c") bytes)"
    else
        fail "(b) case $n: Python and C packages differ: $(cmp "$c" "$p" 2>&1 | head -1)"
        diff <(py entries "$c") <(py entries "$p") | sed 's/^/    /'
    fi
    # ... and, for stock tarfile output, the same manifest bytes and entries.
    if cmp -s <(tar -xOf "$c" manifest.json) <(tar -xOf "$t" manifest.json) &&
        diff -q <(py entries "$c") <(py entries "$t") >/dev/null; then
        ok "(b) case $n: stock-tarfile package: same manifest.json bytes and entries" \
            "($(stat -c %s "$t") vs $(stat -c %s "$c") bytes: header fields and record padding differ)"
    else
        fail "(b) case $n: stock-tarfile package has different manifest or entries"
    fi

    # (c) the C-made package verifies with the Python verifier.
    signed_copy "$c" "$TMP/sc$n.mfpkg"
    cv=$SIGNED
    p_verify --pubkey "$TMP/k.pub" "$cv"
    if [ "$P_RC" = 0 ]; then
        ok "(c) case $n: the Python verifier accepts the C package"
    else
        fail "(c) case $n: the Python verifier refused the C package: $P_ERR"
    fi
done

# (c) also a zstd-compressed C package, when a zstd tool is there to read it.
if command -v zstd >/dev/null; then
    P_RC=1 P_ERR="modelfleet pack --zstd failed"
    "$MF" pack "${CASE1[@]}" --zstd --out "$TMP/cz.mfpkg" >/dev/null &&
        p_verify --pubkey "$TMP/k.pub" "$TMP/cz.mfpkg"
    if [ "$P_RC" = 0 ]; then
        ok "(c) the Python verifier accepts the C zstd package"
    else
        fail "(c) zstd package: $P_ERR"
    fi
else
    echo "note: no zstd tool; the zstd variant of (c) was not run"
fi

# (d) one flipped payload byte in the Python package: modelfleet verify exits 1
# with a one-line "hash mismatch" message.
cp "$TMP/p1.mfpkg" "$TMP/d.mfpkg"
flip "$TMP/d.mfpkg" model/digits-fp32.onnx
c_verify --pubkey "$TMP/k.pub" "$TMP/d.mfpkg"
if [ "$C_RC" = 1 ] && [ "$(printf '%s\n' "$C_ERR" | wc -l)" = 1 ] &&
    grep -q 'hash mismatch' <<<"$C_ERR"; then
    ok "(d) tampered payload: modelfleet verify exits 1: $C_ERR"
else
    fail "(d) tampered payload: exit $C_RC, message: $C_ERR"
fi

# (e) the same refusals from both verifiers, compared by error name.
declare -A TOKEN=(["malformed input"]=parse ["invalid field"]=schema
    ["unsupported format version"]=version ["over the size cap"]=too_large
    ["not a modelfleet package"]=not_package ["truncated archive"]=truncated
    ["wrong package layout"]=layout ["package is not signed"]=unsigned
    ["signed by an unknown key"]=unknown_key ["bad signature"]=bad_signature
    ["unsafe path"]=unsafe_path ["forbidden entry type"]=entry_type
    ["duplicate entry"]=duplicate ["entry not listed in the manifest"]=unlisted
    ["listed file missing"]=missing ["size mismatch"]=size_mismatch
    ["hash mismatch"]=hash_mismatch)
expect_refusal() { # expect_refusal WANT-TOKEN LABEL PKG PUB
    c_verify --pubkey "$4" "$3"
    p_verify --pubkey "$4" "$3"
    local ctext ctok ptok
    ctext=$(sed -E 's/^modelfleet verify: ([^:]*):.*/\1/' <<<"$C_ERR")
    ctok=${TOKEN[$ctext]:-"?$ctext"}
    ptok=$(sed -E 's/^mfpkg_py verify: ([^:]*):.*/\1/' <<<"$P_ERR")
    if [ "$C_RC" = 1 ] && [ "$P_RC" = 1 ] && [ "$ctok" = "$1" ] && [ "$ptok" = "$1" ]; then
        ok "(e) $2: both refuse with $1"
    else
        fail "(e) $2: want $1; modelfleet: exit $C_RC $ctok; python: exit $P_RC $ptok ($P_ERR)"
    fi
}
expect_refusal hash_mismatch "payload byte flipped" "$TMP/d.mfpkg" "$TMP/k.pub"
cp "$TMP/c1.mfpkg" "$TMP/e1.mfpkg"
flip "$TMP/e1.mfpkg" manifest.json
expect_refusal bad_signature "manifest byte flipped" "$TMP/e1.mfpkg" "$TMP/k.pub"
expect_refusal unknown_key "signed by another key" "$TMP/c1.mfpkg" "$TMP/other.pub"
expect_refusal unsigned "never signed" "$TMP/p2.mfpkg" "$TMP/k.pub"
head -c 60000 "$TMP/c1.mfpkg" >"$TMP/e2.mfpkg"
expect_refusal truncated "archive cut in a payload" "$TMP/e2.mfpkg" "$TMP/k.pub"
cut=$("$PY" -c 'import sys, tarfile; print(tarfile.open(sys.argv[1]).getmembers()[2].offset)' \
    "$TMP/c1.mfpkg")
head -c "$cut" "$TMP/c1.mfpkg" >"$TMP/e3.mfpkg"
head -c 1024 /dev/zero >>"$TMP/e3.mfpkg"
expect_refusal missing "archive cut at an entry boundary" "$TMP/e3.mfpkg" "$TMP/k.pub"

if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "all compat checks passed"
