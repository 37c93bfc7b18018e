#!/usr/bin/env bash
# test_cli.sh — drives the real `modelfleet` binary: keygen, pack (options and
# spec file), determinism, sign/re-sign, inspect, verify, tamper refusal, and
# every hostile package refused with exit 1 and exactly one line on stderr.
# Usage: test_cli.sh MODELFLEET HOSTILE_GEN FIXTURES_DIR
set -u
MF=$1 GEN=$2 FIX=$3
T=$(mktemp -d /tmp/mf-cli-XXXXXX)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }
check() { local what=$1; shift; if "$@"; then ok; else bad "$what"; fi; }
# expect CODE PATTERN -- cmd...: exit code and a stderr line matching PATTERN
expect() {
    local code=$1 pat=$2; shift 3
    "$@" >"$T/out" 2>"$T/err"; local rc=$?
    if [ "$rc" != "$code" ]; then bad "$* -> exit $rc, want $code: $(cat "$T/err")"; return; fi
    if [ -n "$pat" ] && ! grep -q -- "$pat" "$T/err"; then
        bad "$* -> stderr lacks '$pat': $(cat "$T/err")"; return
    fi
    ok
}

# ---- keygen ----
out=$("$MF" keygen --out "$T/pub") || bad "keygen failed"
id=$(echo "$out" | awk '/^key id/ {print $3}')
check "secret key mode 0600" [ "$(stat -c %a "$T/pub.key")" = 600 ]
check "public key mode 0644" [ "$(stat -c %a "$T/pub.pub")" = 644 ]
check "key id in both files" grep -q "key-id: $id" "$T/pub.key"
check "key id in the pub file" grep -q "key-id: $id" "$T/pub.pub"
check "version line" [ "$(head -1 "$T/pub.pub")" = "modelfleet-public-key v1" ]
expect 1 "refusing to overwrite" -- "$MF" keygen --out "$T/pub"
"$MF" keygen --out "$T/other" >/dev/null

# ---- pack: options, determinism, spec file ----
packargs=(--name digits --version 1.0.0 --hardware rpi5,jetson-orin
          --model "$FIX/digits-fp32.onnx" --eval-inputs "$FIX/eval-inputs.npy"
          --eval-labels "$FIX/eval-labels.npy" --min-accuracy 0.95 --max-accuracy-drop 0.005
          --latency-p99-ms 20 --memory 256M --meta dataset=sklearn-digits
          --created 2026-01-01T00:00:00Z)
check "pack" "$MF" pack "${packargs[@]}" --out "$T/a.mfpkg" >/dev/null
check "pack again" "$MF" pack "${packargs[@]}" --out "$T/b.mfpkg" >/dev/null
check "two packs byte-identical" cmp -s "$T/a.mfpkg" "$T/b.mfpkg"
# Without --created, SOURCE_DATE_EPOCH pins the creation time (and so the bytes).
SOURCE_DATE_EPOCH=1767225600 "$MF" pack "${packargs[@]:0:${#packargs[@]}-2}" \
    --out "$T/c.mfpkg" >/dev/null || bad "pack with SOURCE_DATE_EPOCH"
check "SOURCE_DATE_EPOCH gives the same bytes" cmp -s "$T/a.mfpkg" "$T/c.mfpkg"
mkdir -p "$T/spec/models"
cp "$FIX/digits-int8.onnx" "$FIX/eval-inputs.npy" "$FIX/eval-labels.npy" "$T/spec/models/"
cat >"$T/spec/digits.spec" <<SPEC
# digits int8, packed from a spec file; paths are relative to this file
name = digits
version = 1.1.0
hardware = rpi5
model = models/digits-int8.onnx
eval-inputs = models/eval-inputs.npy
eval-labels = models/eval-labels.npy
min-accuracy = 0.95
meta = quantization=int8
created = 2026-02-01T00:00:00Z
SPEC
(cd / && "$MF" pack --spec "$T/spec/digits.spec" --version 1.1.1 --zstd --key "$T/pub.key" \
    --out "$T/spec.mfpkg" >"$T/packed") || bad "pack --spec"
check "pack --key says who signed" grep -q "signed by $id\$" "$T/packed"
"$MF" inspect --json "$T/spec.mfpkg" >"$T/spec.json" || bad "inspect --json"
check "spec + override" /usr/bin/python3 - "$T/spec.json" "$id" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
m = j["manifest"]
assert m["version"] == "1.1.1", m["version"]          # option replaced the spec's value
assert m["variant"]["hardware"] == ["rpi5"]
assert m["entry"] == "model/digits-int8.onnx"
assert m["eval"]["n"] == 360
assert m["metadata"] == {"quantization": "int8"}
assert m["created"] == "2026-02-01T00:00:00Z"
assert j["compression"] == "zstd"
assert [s["key_id"] for s in j["signatures"]] == [sys.argv[2]]
PY
expect 2 "required" -- "$MF" pack --name x --out "$T/x.mfpkg"
expect 2 "--min-accuracy is required" -- "$MF" pack "${packargs[@]/--min-accuracy/--meta}" \
    --out "$T/x.mfpkg"
expect 1 "not a semantic version" -- "$MF" pack "${packargs[@]}" --version 1.0 --out "$T/x.mfpkg"
echo "colour = blue" >"$T/bad.spec"
expect 1 "bad.spec:1: unknown key 'colour'" -- "$MF" pack --spec "$T/bad.spec" --out "$T/x.mfpkg"
check "refused pack writes nothing" [ ! -e "$T/x.mfpkg" ]

# ---- sign, verify, re-sign ----
expect 1 "has no signature" -- "$MF" verify --pubkey "$T/pub.pub" "$T/a.mfpkg"
check "sign" "$MF" sign --key "$T/pub.key" "$T/a.mfpkg" >/dev/null
check "verify" "$MF" verify --pubkey "$T/pub.pub" "$T/a.mfpkg" >/dev/null
expect 1 "signed by an unknown key" -- "$MF" verify --pubkey "$T/other.pub" "$T/a.mfpkg"
check "second signature" "$MF" sign --key "$T/other.key" "$T/a.mfpkg" >/dev/null
check "verify with the other key" "$MF" verify --pubkey "$T/other.pub" "$T/a.mfpkg" >/dev/null
check "still verifies with the first" "$MF" verify --pubkey "$T/pub.pub" "$T/a.mfpkg" >/dev/null
check "inspect lists both keys" [ "$("$MF" inspect "$T/a.mfpkg" | grep -c 'key ')" = 2 ]

# ---- verify --extract ----
check "verify --extract" "$MF" verify --pubkey "$T/pub.pub" --extract "$T/x" "$T/a.mfpkg" \
    >/dev/null
check "extracted model identical" cmp -s "$T/x/model/digits-fp32.onnx" "$FIX/digits-fp32.onnx"
expect 1 "staging directory already exists" -- "$MF" verify --pubkey "$T/pub.pub" \
    --extract "$T/x" "$T/a.mfpkg"
expect 1 "disk budget" -- "$MF" verify --pubkey "$T/pub.pub" --disk-budget 64K \
    --extract "$T/y" "$T/a.mfpkg"
check "refused extract leaves nothing" [ ! -e "$T/y" ]

# ---- a tampered copy: one byte of the model ----
cp "$T/a.mfpkg" "$T/tampered.mfpkg"
size=$(stat -c %s "$T/tampered.mfpkg")
printf '\x00' | dd of="$T/tampered.mfpkg" bs=1 seek=$((size - 3000)) conv=notrunc 2>/dev/null
expect 1 "hash mismatch: .*model/digits-fp32.onnx" -- "$MF" verify --pubkey "$T/pub.pub" \
    "$T/tampered.mfpkg"
check "one line on stderr" [ "$(wc -l <"$T/err")" = 1 ]

# ---- every hostile package: exit 1, one line ----
"$GEN" "$T/hostile" >/dev/null || bad "mf-hostile-gen"
n=0
for p in "$T"/hostile/*.mfpkg; do
    name=$(basename "$p" .mfpkg)
    [ "$name" = valid ] && continue
    n=$((n + 1))
    budget=()
    [ "$name" = over-disk-budget ] && budget=(--disk-budget 1G)
    expect 1 "" -- "$MF" verify --pubkey "$T/hostile/trusted.pub" "${budget[@]}" \
        --extract "$T/h-$name" "$p"
    [ "$(wc -l <"$T/err")" = 1 ] || bad "$name: stderr is not one line: $(cat "$T/err")"
    [ ! -e "$T/h-$name" ] || bad "$name: staging left behind"
done
check "hostile packages found" [ "$n" -ge 30 ]
check "valid control" "$MF" verify --pubkey "$T/hostile/trusted.pub" "$T/hostile/valid.mfpkg" \
    >/dev/null

# ---- wrong inputs to each command ----
expect 1 "first line must be 'modelfleet-secret-key v1'" -- "$MF" sign --key "$T/pub.pub" \
    "$T/a.mfpkg"
expect 1 "first line must be 'modelfleet-public-key v1'" -- "$MF" verify --pubkey "$T/pub.key" \
    "$T/a.mfpkg"
cp "$T/pub.key" "$T/loose.key"
chmod 644 "$T/loose.key"
expect 1 "accessible by others (mode 0644)" -- "$MF" sign --key "$T/loose.key" "$T/a.mfpkg"
: >"$T/empty.mfpkg"
expect 1 "the file is empty" -- "$MF" inspect "$T/empty.mfpkg"
expect 1 "not a tar or tar.zst archive" -- "$MF" inspect "$T/pub.pub"
expect 1 "cannot open" -- "$MF" verify --pubkey "$T/pub.pub" "$T/no-such.mfpkg"
expect 2 "is not a size" -- "$MF" verify --pubkey "$T/pub.pub" --disk-budget lots "$T/a.mfpkg"
expect 2 "expected KEY=VALUE" -- "$MF" pack "${packargs[@]}" --meta novalue --out "$T/x.mfpkg"
expect 2 "expected PKGPATH=SOURCE" -- "$MF" pack "${packargs[@]}" --file model/x --out "$T/x.mfpkg"
expect 1 "has a '..' component" -- "$MF" pack "${packargs[@]}" --file "../up=$FIX/eval-labels.npy" \
    --out "$T/x.mfpkg"
check "meta values keep their commas" "$MF" pack "${packargs[@]}" --meta "notes=a, b" \
    --out "$T/m.mfpkg"
check "comma kept in metadata" grep -q '"notes": "a, b"' <(tar -xOf "$T/m.mfpkg" manifest.json)
check "failed packs wrote nothing" [ ! -e "$T/x.mfpkg" ]

# ---- usage ----
expect 2 "" -- "$MF" frobnicate
expect 2 "expected at least one --pubkey" -- "$MF" verify "$T/a.mfpkg"
check "help" "$MF" --help >/dev/null
for c in keygen pack sign inspect verify; do check "$c --help" "$MF" "$c" --help >/dev/null; done

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
