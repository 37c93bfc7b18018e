#!/usr/bin/env bash
# cli_remote.sh — the remote commands of the real `modelfleet` CLI (push,
# models, devices, fleet) against a real modelfleet-server on a free port,
# with its own database (PostgreSQL from services.sh), signing key, config and
# data dir in a temp dir. Checks exit codes, tables, --json (with jq), the
# refusals (conflict, forbidden, unauthorized, unreachable), and where URL and
# token come from (flags > environment > config file). The token must never
# appear in anything the CLI prints.
# Usage: cli_remote.sh SERVICES_DIR BUILD_DIR   (services.sh start SERVICES_DIR first)
set -u
SERVICES=$(cd "$1" && pwd) BUILD=$(cd "$2" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
FIX=$HERE/../fixtures/models
MF=$BUILD/cli/modelfleet
SRV=$BUILD/server/modelfleet-server
# shellcheck disable=SC1091
. "$SERVICES/services.env"
for tool in jq curl python3; do
    command -v $tool >/dev/null || { echo "cli_remote.sh: $tool is needed" >&2; exit 1; }
done
[ -x "$MF" ] || { echo "cli_remote.sh: no $MF" >&2; exit 1; }
[ -x "$SRV" ] || { echo "cli_remote.sh: no $SRV" >&2; exit 1; }

T=$(mktemp -d /tmp/mf-cli-remote-XXXXXX)
SRV_PID=
pass=0 fail=0
cleanup() {
    if [ -n "$SRV_PID" ]; then
        kill "$SRV_PID" 2>/dev/null
        wait "$SRV_PID" 2>/dev/null
    fi
    if [ "$fail" = 0 ]; then rm -rf "$T"; else echo "cli_remote.sh: work dir kept: $T" >&2; fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }
check() { local what=$1; shift; if "$@"; then ok; else bad "$what"; fi; }
OP='' VIEW=''
mask() { # the command line for a message, without the secrets
    local s=$1
    [ -n "$OP" ] && s=${s//$OP/<operator token>}
    [ -n "$VIEW" ] && s=${s//$VIEW/<viewer token>}
    printf '%s' "$s"
}
# run CODE -- cmd...: runs cmd with stdout in $T/out, stderr in $T/err (both
# also appended to $T/all, which is searched for the tokens at the end).
run() {
    local code=$1; shift 2
    "$@" >"$T/out" 2>"$T/err"; local rc=$?
    cat "$T/out" "$T/err" >>"$T/all"
    if [ "$rc" != "$code" ]; then
        bad "$(mask "${*/#$MF/modelfleet}") -> exit $rc, want $code: $(head -c 600 "$T/err")"
        return 1
    fi
    ok
}
out_has() { grep -Eq -- "$1" "$T/out" || { bad "stdout lacks /$1/: $(head -c 600 "$T/out")"; return 1; }; ok; }
err_has() { grep -Eq -- "$1" "$T/err" || { bad "stderr lacks /$1/: $(head -c 600 "$T/err")"; return 1; }; ok; }
err_empty() { [ ! -s "$T/err" ] || { bad "stderr not empty: $(head -c 300 "$T/err")"; return 1; }; ok; }
# jq_ok FILTER: stdout is JSON and FILTER is true on it
jq_ok() {
    if jq -e "$1" "$T/out" >/dev/null 2>&1; then ok; else bad "jq '$1' on: $(head -c 600 "$T/out")"; fi
}
# rows N: the table on stdout has a header and N rows
rows() {
    local n
    n=$(($(wc -l <"$T/out") - 1))
    [ "$n" = "$1" ] || { bad "want $1 table rows, got $n: $(cat "$T/out")"; return 1; }
    ok
}
free_port() {
    python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# ---- a server of our own ----
export HOME=$T/home XDG_CONFIG_HOME=$T/xdg
unset MODELFLEET_URL MODELFLEET_TOKEN
mkdir -p "$HOME" "$XDG_CONFIG_HOME" "$T/data" "$T/tmp"
DBNAME=mf_cli_remote_$$_$RANDOM
DB_URL=$(bash "$HERE/services.sh" createdb "$SERVICES" "$DBNAME") || { echo "createdb failed" >&2; exit 1; }
PSQL=(psql -X -q -v ON_ERROR_STOP=1 "$DB_URL")
"$MF" keygen --out "$T/server" >/dev/null || { echo "keygen failed" >&2; exit 1; }
PORT=$(free_port)
URL=http://127.0.0.1:$PORT
cat >"$T/server.conf" <<CONF
# cli_remote.sh
listen = 127.0.0.1:$PORT
database_url = $DB_URL
data_dir = $T/data
signing_key = $T/server.key
mqtt_broker = $MF_MQTT_HOST:$MF_MQTT_PORT
log_level = info
CONF
TMPDIR=$T/tmp "$SRV" serve --config "$T/server.conf" >"$T/server.log" 2>&1 &
SRV_PID=$!
for _ in $(seq 200); do
    curl -fsS "$URL/healthz" >/dev/null 2>&1 && break
    kill -0 "$SRV_PID" 2>/dev/null || break
    sleep 0.1
done
if ! curl -fsS "$URL/healthz" >/dev/null 2>&1; then
    echo "cli_remote.sh: the server did not come up; its log:" >&2
    tail -30 "$T/server.log" >&2
    fail=1
    exit 1
fi
token() { "$SRV" token create --config "$T/server.conf" --role "$1" --name "$2" 2>>"$T/token.err"; }
if ! OP=$(token operator ci) || ! VIEW=$(token viewer dash); then
    echo "token create failed: $(cat "$T/token.err")" >&2
    fail=1
    exit 1
fi
check "operator token shape" grep -Eq '^mft_[A-Za-z0-9_-]{43}$' <<<"$OP"
check "viewer token shape" grep -Eq '^mft_[A-Za-z0-9_-]{43}$' <<<"$VIEW"

# ---- packages from the fixtures ----
pack() { # pack OUT NAME VERSION HARDWARE MODELFILE
    "$MF" pack --name "$2" --version "$3" --hardware "$4" --model "$FIX/$5" \
        --eval-inputs "$FIX/eval-inputs.npy" --eval-labels "$FIX/eval-labels.npy" \
        --min-accuracy 0.95 --latency-p99-ms 20 --created 2026-01-01T00:00:00Z --out "$1" >/dev/null ||
        { echo "pack $1 failed" >&2; fail=1; exit 1; }
}
pack "$T/d110.mfpkg" digits 1.1.0 rpi4 digits-fp32.onnx
pack "$T/d110-int8.mfpkg" digits 1.1.0 rpi4 digits-int8.onnx # same model+version+hw, other bytes
pack "$T/d100.mfpkg" digits 1.0.0 rpi4,x86-cpu digits-int8.onnx
pack "$T/o010.mfpkg" other 0.1.0 jetson-orin digits-int2.onnx

# ---- push ----
A=(--url "$URL" --token "$OP")
run 0 -- "$MF" push "${A[@]}" "$T/d110.mfpkg" &&
    out_has '^pushed digits 1\.1\.0 \(onnx:rpi4\) [0-9a-f]{64}$' && err_empty
ID=$(awk '{print $NF}' "$T/out")
run 0 -- "$MF" push "${A[@]}" "$T/d110.mfpkg" &&
    out_has "^already stored: digits 1\.1\.0 \(onnx:rpi4\) $ID\$"
run 0 -- "$MF" push "${A[@]}" --json "$T/d110.mfpkg" &&
    jq_ok ".id == \"$ID\" and .model == \"digits\" and .version == \"1.1.0\" and .hardware == [\"rpi4\"]"
run 1 -- "$MF" push "${A[@]}" "$T/d110-int8.mfpkg" && err_has '409 conflict' && err_has "$ID"
check "conflict: one line on stderr" [ "$(wc -l <"$T/err")" = 1 ]
run 1 -- "$MF" push --url "$URL" --token "$VIEW" "$T/d100.mfpkg" && err_has '403 forbidden'
run 1 -- "$MF" push --url "$URL" "$T/d100.mfpkg" && err_has '401 unauthorized' && err_has 'no API token'
run 1 -- "$MF" push --url "$URL" --token "mft_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" "$T/d100.mfpkg" &&
    err_has '401 unauthorized' && err_has 'unknown, revoked or expired'
DEAD=http://127.0.0.1:$(free_port)
run 1 -- "$MF" push --url "$DEAD" --token "$OP" "$T/d100.mfpkg" && err_has 'cannot reach' &&
    err_has 'is modelfleet-server running'
# The file is checked before any connection: the dead URL is never tried.
run 1 -- "$MF" push --url "$DEAD" --token "$OP" "$T/missing.mfpkg" && err_has 'missing.mfpkg' &&
    ! grep -q 'cannot reach' "$T/err"
run 1 -- "$MF" push --url "$URL" --token "$OP" "$T" && err_has 'not a regular file'
printf 'not a package' >"$T/junk.mfpkg"
run 1 -- "$MF" push "${A[@]}" "$T/junk.mfpkg" && err_has '422 package_refused'
run 2 -- "$MF" push "${A[@]}" && err_has 'expected one package'
run 2 -- "$MF" push --url ftp://x "$T/d100.mfpkg" && err_has 'http://'
run 0 -- "$MF" push "${A[@]}" "$T/d100.mfpkg" && out_has '^pushed digits 1\.0\.0 \(onnx:rpi4,x86-cpu\) '
run 0 -- "$MF" push "${A[@]}" "$T/o010.mfpkg" && out_has '^pushed other 0\.1\.0 '
# A progress bar only on a terminal (script(1) gives the command a pty).
if command -v script >/dev/null; then
    script -qec "$MF push --url $URL --token $OP $T/d100.mfpkg" /dev/null >"$T/tty" 2>&1
    check "progress bar on a terminal" grep -q '100%' "$T/tty"
    check "still the result line on a terminal" grep -q 'already stored: digits 1.0.0' "$T/tty"
    cat "$T/tty" >>"$T/all"
fi

# ---- models ----
run 0 -- "$MF" models "${A[@]}" && rows 2 && out_has '^NAME +VERSIONS +LATEST +UPDATED$' &&
    out_has '^digits +2 +1\.1\.0 ' && out_has '^other +1 +0\.1\.0 '
run 0 -- "$MF" models "${A[@]}" --json &&
    jq_ok '[.models[].name] == ["digits", "other"] and .models[0].latest == "1.1.0"'
run 0 -- "$MF" models "${A[@]}" digits && rows 2 && out_has '^VERSION +VARIANT +SIZE' &&
    out_has "^1\.1\.0 +onnx:rpi4 +.* ${ID:0:12}\$" && out_has '^1\.0\.0 +onnx:rpi4,x86-cpu '
check "models NAME: highest version first" [ "$(sed -n 2p "$T/out" | awk '{print $1}')" = 1.1.0 ]
run 0 -- "$MF" models "${A[@]}" digits --json &&
    jq_ok '.name == "digits" and [.versions[].version] == ["1.1.0", "1.0.0"]'
run 0 -- "$MF" models "${A[@]}" digits 1.1.0 && out_has '^digits 1\.1\.0: 1 variant$' &&
    out_has "^onnx:rpi4 .* $ID\$" && out_has 'accuracy >= 0\.95, drop <= 0\.01, p99 <= 20 ms'
run 0 -- "$MF" models "${A[@]}" --json digits 1.1.0 &&
    jq_ok ".name == \"digits\" and .version == \"1.1.0\" and .variants[0].id == \"$ID\""
run 1 -- "$MF" models "${A[@]}" nosuch && err_has '404 not_found'
run 1 -- "$MF" models "${A[@]}" digits 9.9.9 && err_has '404 not_found'
run 0 -- "$MF" models --url "$URL" --token "$VIEW" && rows 2
run 1 -- "$MF" models --url "$URL" && err_has '401 unauthorized'
run 2 -- "$MF" models "${A[@]}" a b c
run 2 -- "$MF" models --bogus

# ---- devices ----
"${PSQL[@]}" <<'SQL' || { bad "inserting devices"; exit 1; }
INSERT INTO devices (id, hw_class, credential_hash, agent_version, runtimes, online, last_seen)
SELECT id, hw, decode(md5(id) || md5(id || '.'), 'hex'), '0.1.0', '{onnx}', online,
       '2026-11-22T10:00:00Z'::timestamptz
FROM (VALUES ('pi-001', 'rpi4', true), ('pi-002', 'rpi4', false), ('pi-003', 'rpi4', true),
             ('jet-001', 'jetson-orin', true), ('x86-001', 'x86-cpu', false)) AS d(id, hw, online);
INSERT INTO device_models (device_id, model, version) VALUES
    ('pi-001', 'digits', '1.1.0'), ('pi-002', 'digits', '1.0.0'),
    ('jet-001', 'digits', '1.1.0'), ('jet-001', 'other', '0.1.0'),
    ('x86-001', 'digits', '1.0.0');
SQL
ids() { awk 'NR > 1 {print $1}' "$T/out" | tr '\n' ' '; }
run 0 -- "$MF" devices "${A[@]}" && rows 5 &&
    out_has '^ID +HW-CLASS +ONLINE +MODELS +LAST-SEEN$' &&
    out_has '^pi-001 +rpi4 +yes +digits@1\.1\.0 +2026-11-22T10:00:00Z$' &&
    out_has '^pi-003 +rpi4 +yes +- ' && out_has '^jet-001 +jetson-orin +yes +digits@1\.1\.0,other@0\.1\.0 '
check "devices ordered by id" [ "$(ids)" = "jet-001 pi-001 pi-002 pi-003 x86-001 " ]
run 0 -- "$MF" devices "${A[@]}" --hw-class rpi4 && rows 3
run 0 -- "$MF" devices "${A[@]}" --model digits --version 1.1.0 && rows 2 &&
    check "model+version filter" [ "$(ids)" = "jet-001 pi-001 " ]
run 0 -- "$MF" devices "${A[@]}" --model other && rows 1
run 0 -- "$MF" devices "${A[@]}" --online && rows 3
run 0 -- "$MF" devices "${A[@]}" --offline --hw-class rpi4 && rows 1 && out_has '^pi-002 '
run 0 -- "$MF" devices "${A[@]}" --limit 2 && rows 2 && err_has 'more devices: use --after pi-001'
run 0 -- "$MF" devices "${A[@]}" --limit 2 --after pi-001 && rows 2 &&
    check "second page" [ "$(ids)" = "pi-002 pi-003 " ]
run 0 -- "$MF" devices "${A[@]}" --limit 2 --all && rows 5 && err_empty
# api.md: `next` is null on the last page, also when it is exactly full.
run 0 -- "$MF" devices "${A[@]}" --limit 5 && rows 5 && err_empty
run 0 -- "$MF" devices "${A[@]}" --limit 2 --json && jq_ok '(.devices | length) == 2 and .next == "pi-001"'
run 0 -- "$MF" devices "${A[@]}" --limit 2 --all --json &&
    jq_ok '[.devices[].id] == ["jet-001", "pi-001", "pi-002", "pi-003", "x86-001"] and .next == null'
run 0 -- "$MF" devices "${A[@]}" --hw-class nosuch && err_has 'no devices'
run 2 -- "$MF" devices "${A[@]}" --version 1.1.0 && err_has 'needs --model'
run 2 -- "$MF" devices "${A[@]}" --online --offline
run 2 -- "$MF" devices "${A[@]}" --limit 0
run 2 -- "$MF" devices "${A[@]}" extra

# ---- fleet ----
run 0 -- "$MF" fleet "${A[@]}" && out_has '^devices +5$' && out_has '^online +3 \(60\.0%\)$' &&
    out_has '^HW-CLASS +MODEL +VERSION +ONLINE +OFFLINE +DEVICES$' &&
    out_has '^rpi4 +digits +1\.1\.0 +1 +0 +1$' && out_has '^rpi4 +digits +1\.0\.0 +0 +1 +1$' &&
    out_has '^rpi4 +\(none\) +- +1 +0 +1$' && out_has '^jetson-orin +other +0\.1\.0 +1 +0 +1$'
run 0 -- "$MF" fleet "${A[@]}" --json &&
    jq_ok '.devices == 5 and .online == 3 and ([.groups[].devices] | add) == 6'

# ---- where URL and token come from: flags > environment > config file ----
CFG=$XDG_CONFIG_HOME/modelfleet/config
mkdir -p "$(dirname "$CFG")" "$HOME/.config/modelfleet"
MODELFLEET_URL=$URL MODELFLEET_TOKEN=$VIEW run 0 -- "$MF" models && rows 2
MODELFLEET_URL=$URL/api/v1/ MODELFLEET_TOKEN=$VIEW run 0 -- "$MF" models && rows 2
printf 'url = %s\ntoken = %s\n' "$URL" "$VIEW" >"$CFG"
run 0 -- "$MF" models && rows 2
# environment over config file
MODELFLEET_TOKEN=mft_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB run 1 -- "$MF" models &&
    err_has 'token from MODELFLEET_TOKEN'
MODELFLEET_URL=$DEAD run 1 -- "$MF" models && err_has 'cannot reach' && err_has 'MODELFLEET_URL'
# flags over environment
MODELFLEET_URL=$DEAD MODELFLEET_TOKEN=mft_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB \
    run 0 -- "$MF" models --url "$URL" --token "$VIEW" && rows 2
# token from the config file, refused: the message names the file
printf 'url = %s\ntoken = mft_CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC\n' "$URL" >"$CFG"
run 1 -- "$MF" models && err_has "token from $CFG"
run 0 -- "$MF" models --token "$VIEW" && rows 2
# ~/.config/modelfleet/config when XDG_CONFIG_HOME is unset
printf '# fallback\nurl = %s\ntoken = %s\n' "$URL" "$VIEW" >"$HOME/.config/modelfleet/config"
run 1 -- "$MF" models && err_has "token from $CFG" # XDG_CONFIG_HOME's file wins while set
if env -u XDG_CONFIG_HOME "$MF" fleet >"$T/out" 2>"$T/err" && grep -q '^devices  *5$' "$T/out"; then
    ok
else
    bad "fallback config file: $(cat "$T/err")"
fi
# unknown keys are errors naming the line
printf 'url = %s\ntokn = x\n' "$URL" >"$CFG"
run 1 -- "$MF" models && err_has "$CFG:2"
rm -f "$CFG"

# ---- --help everywhere ----
for c in push models devices fleet; do
    run 0 -- "$MF" "$c" --help && out_has "^usage: modelfleet $c"
done
run 0 -- "$MF" --help && out_has '^  push ' && out_has '^  fleet '

# ---- the tokens never appear in what the CLI printed ----
for tok in "$OP" "$VIEW"; do
    check "token never printed" bash -c "! grep -qF -- '$tok' '$T/all'"
done

echo "cli_remote: $pass passed, $fail failed"
[ "$fail" = 0 ]
