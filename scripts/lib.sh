# scripts/lib.sh — shared by scripts/test and scripts/demo: install the Debian
# 12 packages modelfleet needs (only those missing; apt-get update first) and
# configure + build a tree. Source it; do not run it.

MF_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Build tools and libraries; python3-cryptography (Ed25519) is for the independent-packer
# conformance test (tests/compat). postgresql and mosquitto are the real services
# the integration tests, the demo and the benchmarks start (never as system
# services); curl, jq and wrk drive the HTTP API from scripts and benchmarks.
# libopencv-dnn-dev is for the reference model runner (runners/opencv).
MF_PACKAGES=(build-essential cmake pkg-config git ca-certificates tar zstd
             libsodium-dev libarchive-dev libjansson-dev libcmocka-dev libzstd-dev
             libpq-dev libmicrohttpd-dev libcurl4-openssl-dev libmosquitto-dev
             postgresql mosquitto mosquitto-clients curl jq wrk libopencv-dnn-dev
             python3 python3-cryptography)

mf_install_deps() {
    local missing=() p
    for p in "${MF_PACKAGES[@]}" "$@"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "== installing: ${missing[*]}"
    local sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends \
        "${missing[@]}" >/dev/null
}

# mf_build DIR [cmake args...]: configure (once) and build.
mf_build() {
    local dir=$1
    shift
    mkdir -p "$dir"
    if ! cmake -S "$MF_ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" \
        >"$dir/configure.log" 2>&1; then
        cat "$dir/configure.log"
        return 1
    fi
    if ! cmake --build "$dir" -j"$(nproc)" >"$dir/build.log" 2>&1; then
        grep -E -A3 'error|Error' "$dir/build.log" | head -60
        return 1
    fi
}
