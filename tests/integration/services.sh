#!/usr/bin/env bash
# tests/integration/services.sh — a real PostgreSQL 15 and a real mosquitto
# broker for the integration tests, each on a free loopback port, everything
# (data, sockets, configs, logs, pid files) inside one directory DIR.
#
#   services.sh start DIR        fresh initdb + broker; writes DIR/services.env
#   services.sh stop DIR         stops both (fine if already stopped)
#   services.sh pg-stop DIR      stops PostgreSQL only (fast shutdown)
#   services.sh pg-start DIR     starts it again, same data dir and port
#   services.sh pg-restart DIR   pg-stop + pg-start
#   services.sh createdb DIR NAME  creates a database, prints its URL
#   services.sh status DIR       exit 0 when both answer
#
# PostgreSQL refuses to run as root: when we are root, initdb/pg_ctl run as
# user `postgres` (runuser) and own DIR/pg; otherwise they run as we are.
# services.env is shell-sourceable and has MF_PG_HOST, MF_PG_PORT, MF_PG_USER,
# MF_PG_DATA, MF_PG_BIN, MF_MQTT_HOST, MF_MQTT_PORT, MF_SERVICES_DIR.
set -euo pipefail

PG_BIN=${MF_PG_BIN:-/usr/lib/postgresql/15/bin}
MOSQUITTO=${MF_MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}
HOST=127.0.0.1

die() {
    echo "services.sh: $*" >&2
    exit 1
}
log() { echo "services.sh: $*" >&2; }

usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[ $# -ge 2 ] || usage
CMD=$1
mkdir -p "$2"
DIR=$(cd "$2" && pwd)
# PostgreSQL's files live in DIR/pg, or, when user postgres cannot reach DIR
# (a checkout under /root), in a /tmp/mf-pg-* directory named by DIR/pg.home.
PGDIR=$DIR/pg
[ -f "$DIR/pg.home" ] && PGDIR=$(cat "$DIR/pg.home")
PGDATA=$PGDIR/data
MQDIR=$DIR/mqtt
ENVFILE=$DIR/services.env

as_pg() { # run a PostgreSQL binary as the user that owns the cluster
    if [ "$(id -u)" = 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

free_port() { # a loopback TCP port nobody listens on, not in "$@"
    local p
    for _ in $(seq 50); do
        p=$(python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        case " $* " in *" $p "*) continue ;; esac
        echo "$p"
        return 0
    done
    die "no free port found"
}

tcp_open() { # true when something accepts connections on 127.0.0.1:$1
    python3 - "$1" <<'PY' 2>/dev/null
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
s.close()
PY
}

pg_port() { cat "$PGDIR/port" 2>/dev/null || die "no PostgreSQL set up in $DIR (run start)"; }
pg_sock() { cat "$PGDIR/socket_dir"; }

pg_running() {
    [ -f "$PGDATA/PG_VERSION" ] && as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1
}

pg_wait_ready() {
    local port
    port=$(pg_port)
    for _ in $(seq 300); do
        if "$PG_BIN/pg_isready" -q -h "$HOST" -p "$port" -U postgres -d postgres; then
            return 0
        fi
        sleep 0.1
    done
    tail -20 "$PGDIR/postgres.log" >&2 || true
    die "PostgreSQL did not accept connections on $HOST:$port within 30 s"
}

pg_start() {
    pg_port >/dev/null
    if pg_running; then
        pg_wait_ready
        return 0
    fi
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PGDIR/postgres.log" -w -t 60 start >/dev/null ||
        {
            tail -20 "$PGDIR/postgres.log" >&2 || true
            die "pg_ctl start failed"
        }
    pg_wait_ready
}

pg_stop() {
    if [ -f "$PGDATA/PG_VERSION" ] && pg_running; then
        as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w -t 60 stop >/dev/null ||
            die "pg_ctl stop failed"
    fi
}

pg_setup() { # fresh cluster in $PGDATA listening on a new free port
    local port=$1 sock
    rm -rf "$PGDIR"
    case "$PGDIR" in /tmp/mf-pg-*) rm -f "$DIR/pg.home" ;; esac
    PGDIR=$DIR/pg
    if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$DIR"; then
        PGDIR=$(mktemp -d /tmp/mf-pg-XXXXXX)
        chmod 755 "$PGDIR"
        echo "$PGDIR" >"$DIR/pg.home"
        log "user postgres cannot enter $DIR; PostgreSQL's files go to $PGDIR"
    fi
    PGDATA=$PGDIR/data
    mkdir -p "$PGDIR"
    # A unix socket path is limited to ~107 bytes; fall back to a /tmp dir.
    sock=$PGDIR/sock
    if [ ${#sock} -gt 80 ]; then
        sock=$(mktemp -d /tmp/mf-pgsock-XXXXXX)
    fi
    mkdir -p "$sock"
    echo "$sock" >"$PGDIR/socket_dir"
    echo "$port" >"$PGDIR/port"
    if [ "$(id -u)" = 0 ]; then
        chown -R postgres: "$PGDIR" "$sock"
    fi
    as_pg "$PG_BIN/initdb" -D "$PGDATA" -A trust -U postgres -E UTF8 --locale=C \
        --no-sync >"$PGDIR/initdb.log" 2>&1 || {
        cat "$PGDIR/initdb.log" >&2
        die "initdb failed"
    }
    cat >>"$PGDATA/postgresql.conf" <<CONF

# --- modelfleet integration tests (services.sh) ---
listen_addresses = '$HOST'
port = $port
unix_socket_directories = '$sock'
max_connections = 200
shared_buffers = 64MB
fsync = off
synchronous_commit = off
full_page_writes = off
wal_level = minimal
max_wal_senders = 0
checkpoint_timeout = 30min
log_min_messages = warning
log_connections = off
log_line_prefix = '%m [%p] %d '
CONF
}

mq_pid() { cat "$MQDIR/mosquitto.pid" 2>/dev/null || true; }

mq_alive() { # our broker's pid is alive and really is our mosquitto
    local pid
    pid=$(mq_pid)
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] &&
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$MQDIR/mosquitto.conf"
}

mq_stop() {
    local pid
    if mq_alive; then
        pid=$(mq_pid)
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            [ -d "/proc/$pid" ] || break
            sleep 0.1
        done
        if [ -d "/proc/$pid" ]; then
            log "mosquitto $pid ignored SIGTERM; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$MQDIR/mosquitto.pid"
}

mq_start() {
    local port=$1
    rm -rf "$MQDIR"
    mkdir -p "$MQDIR"
    {
        echo "# generated by tests/integration/services.sh"
        echo "listener $port $HOST"
        echo "allow_anonymous true"
        echo "persistence false"
        echo "pid_file $MQDIR/mosquitto.pid"
        echo "log_dest file $MQDIR/mosquitto.log"
        echo "log_type error"
        echo "log_type warning"
        echo "log_type notice"
        echo "max_packet_size 1048576"
        # As root, mosquitto 2 would switch to user `mosquitto`, which cannot
        # write into DIR; keep running as the invoking user.
        if [ "$(id -u)" = 0 ]; then echo "user root"; fi
    } >"$MQDIR/mosquitto.conf"
    echo "$port" >"$MQDIR/port"
    "$MOSQUITTO" -c "$MQDIR/mosquitto.conf" -d 2>>"$MQDIR/stderr.log"
    for _ in $(seq 100); do
        if tcp_open "$port"; then
            mq_alive || die "mosquitto answers on $port but its pid file is wrong"
            return 0
        fi
        sleep 0.1
    done
    cat "$MQDIR/mosquitto.log" >&2 2>/dev/null || true
    die "mosquitto did not accept connections on $HOST:$port"
}

write_env() {
    local tmp=$ENVFILE.tmp
    cat >"$tmp" <<ENV
# written by tests/integration/services.sh; source it
MF_PG_HOST=$HOST
MF_PG_PORT=$(pg_port)
MF_PG_USER=postgres
MF_PG_DATA=$PGDATA
MF_PG_BIN=$PG_BIN
MF_PG_SOCKET_DIR=$(pg_sock)
MF_MQTT_HOST=$HOST
MF_MQTT_PORT=$(cat "$MQDIR/port")
MF_SERVICES_DIR=$DIR
ENV
    mv "$tmp" "$ENVFILE"
}

stop_all() {
    local sock=""
    [ -f "$PGDIR/socket_dir" ] && sock=$(pg_sock)
    mq_stop
    pg_stop
    rm -f "$ENVFILE"
    case "$sock" in /tmp/mf-pgsock-*) rm -rf "$sock" ;; esac
    case "$PGDIR" in /tmp/mf-pg-*) rm -rf "$PGDIR" "$DIR/pg.home" ;; esac
}

case "$CMD" in
start)
    stop_all
    chmod 755 "$DIR"
    pgport=$(free_port)
    mqport=$(free_port "$pgport")
    pg_setup "$pgport"
    pg_start
    mq_start "$mqport"
    write_env
    log "PostgreSQL on $HOST:$pgport, mosquitto on $HOST:$mqport ($ENVFILE)"
    ;;
stop)
    stop_all
    ;;
pg-stop)
    pg_port >/dev/null
    pg_stop
    ;;
pg-start)
    pg_start
    ;;
pg-restart)
    pg_port >/dev/null
    pg_stop
    pg_start
    ;;
createdb)
    [ $# -eq 3 ] || usage
    name=$3
    [[ "$name" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "database name must match [a-z_][a-z0-9_]*: $name"
    port=$(pg_port)
    "$PG_BIN/createdb" -h "$HOST" -p "$port" -U postgres "$name"
    echo "postgresql://postgres@$HOST:$port/$name"
    ;;
status)
    pg_running && mq_alive && tcp_open "$(cat "$MQDIR/port")"
    ;;
*)
    usage
    ;;
esac
