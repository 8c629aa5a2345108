# shellcheck shell=bash disable=SC2034  # sourced: its variables are the scripts'
# tests/e2e/common.sh: what every end-to-end script shares, sourced after `set -euo pipefail`
# with NAME set (the prefix of its log lines and of its scratch directory): the pinned
# clients and where they live, the scratch dir, ok/fail counting, stopping every process the
# script started, the idempotent installs, and the proxy binary (CODEX_SHIELD_BIN, or a
# release build). Network: only the npm and PyPI registries, once, for the installs.

CODEX_VERSION="0.169.0"
OPENAI_PY_VERSION="3.57.0"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
E2E="$ROOT/tests/e2e"
CACHE="${CODEX_SHIELD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/codex-shield}"
CODEX_PREFIX="$CACHE/codex-$CODEX_VERSION"
CODEX="$CODEX_PREFIX/node_modules/.bin/codex"
VENV="$CACHE/venv-openai-$OPENAI_PY_VERSION"
PYTHON="${PYTHON:-python3}"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/codex-shield-$NAME.XXXXXX")"
started_pids=()
passed=0 failed=0

log() { printf '%s\n' "$NAME: $*" >&2; }
ok() { passed=$((passed + 1)); printf 'ok   %s\n' "$1"; }
fail() { failed=$((failed + 1)); printf 'FAIL %s\n' "$1"; shift; [ $# -eq 0 ] || printf '     %s\n' "$@"; }

stop() { # stop PID: TERM, then KILL after 2 s
    local i
    kill -TERM "$1" 2>/dev/null || return 0
    for ((i = 0; i < 20; i++)); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
cleanup() {
    local pid
    set +e
    for pid in ${started_pids[@]+"${started_pids[@]}"}; do kill -TERM "$pid" 2>/dev/null; done
    for pid in ${started_pids[@]+"${started_pids[@]}"}; do stop "$pid"; done
    if [ -n "${KEEP_E2E_WORK:-}" ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

npm_install() { # npm_install PREFIX BIN PACKAGE@VERSION: unless PREFIX/node_modules/.bin/BIN exists
    [ -x "$1/node_modules/.bin/$2" ] && return
    command -v npm >/dev/null || { log "npm is required (apt-get install -y nodejs npm)"; exit 1; }
    log "installing $3 into $1"
    mkdir -p "$1"
    timeout 600 npm install --prefix "$1" --no-audit --no-fund --loglevel=error "$3" >&2
}
install_codex() {
    if [ -x "$CODEX" ] && [ "$("$CODEX" --version 2>/dev/null)" != "codex-cli $CODEX_VERSION" ]; then
        rm -rf "$CODEX_PREFIX"
    fi
    npm_install "$CODEX_PREFIX" codex "@openai/codex@$CODEX_VERSION"
}
install_openai() {
    if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import openai, sys; sys.exit(openai.__version__ != '$OPENAI_PY_VERSION')" 2>/dev/null; then
        return
    fi
    venv_install "$VENV" "openai==$OPENAI_PY_VERSION"
}
venv_install() { # DIR PACKAGE...: a fresh venv at DIR (python3-venv installed if missing) with the packages
    local dir="$1"
    shift
    log "installing $* into $dir"
    rm -rf "$dir"
    if ! "$PYTHON" -m venv "$dir" >&2; then
        log "python venv is missing; installing it"
        apt-get install -y python3-venv >&2 || { apt-get update >&2 && apt-get install -y python3-venv >&2; }
        rm -rf "$dir"
        "$PYTHON" -m venv "$dir" >&2
    fi
    timeout 600 "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@" >&2
}
# codex_via OUT BASE_URL KEY ARGS...: `codex exec ARGS...` in $WORK/project (CODEX_HOME
# $WORK/codex-home) through a provider "codex-shield" at BASE_URL that sends KEY, with no
# retries of its own but one of a stream; OUT.out, OUT.err and OUT.rc hold what it did
codex_via() {
    local out="$1" url="$2" key="$3" rc=0
    shift 3
    (cd "$WORK/project" && env -u OPENAI_API_KEY -u OPENAI_BASE_URL CODEX_HOME="$WORK/codex-home" \
        CODEX_SHIELD_API_KEY="$key" timeout 120 "$CODEX" exec --skip-git-repo-check --ephemeral \
        -c model_provider=codex-shield -c model_providers.codex-shield.name=codex-shield \
        -c "model_providers.codex-shield.base_url=\"$url\"" \
        -c model_providers.codex-shield.wire_api=responses \
        -c model_providers.codex-shield.env_key=CODEX_SHIELD_API_KEY \
        -c model_providers.codex-shield.supports_websockets=false \
        -c model_providers.codex-shield.request_max_retries=0 \
        -c model_providers.codex-shield.stream_max_retries=1 \
        "$@" </dev/null >"$out.out" 2>"$out.err") || rc=$?
    echo "$rc" >"$out.rc"
}
proxy_bin() { # the proxy under test: CODEX_SHIELD_BIN, or a fresh release build
    if [ -n "${CODEX_SHIELD_BIN:-}" ]; then
        readlink -f "$CODEX_SHIELD_BIN"
    else
        log "cargo build --release"
        (cd "$ROOT" && cargo build --release --quiet --bin codex-shield) >&2
        echo "$ROOT/target/release/codex-shield"
    fi
}

wait_for_file() { # wait_for_file PATH SECONDS
    local i
    for ((i = 0; i < $2 * 10; i++)); do [ -s "$1" ] && return 0; sleep 0.1; done
    return 1
}
free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
http() { # http METHOD URL [BODY]: print the body of a 2xx answer (python: no curl needed)
    "$PYTHON" - "$@" <<'PY'
import sys, urllib.request
method, url = sys.argv[1], sys.argv[2]
data = sys.argv[3].encode() if len(sys.argv) > 3 else None
with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method), timeout=5) as r:
    sys.stdout.write(r.read().decode())
PY
}
