#!/usr/bin/env bash
# chatgpt.sh: run the Codex CLI through a private codex-shield proxy.
#
# Every session starts its own proxy on a free loopback port (PORT=0), points
# Codex at it with `--profile codex-shield` plus a `-c` override of the port, and
# stops the proxy when Codex exits (also on Ctrl-C, TERM and HUP).  Two sessions
# never share or kill each other's proxy.  All arguments go to Codex unchanged;
# the exit status is Codex's.  Works through symlinks and from any directory.
#
#   ln -s /path/to/codex-shield/chatgpt.sh /usr/local/bin/chatgpt
#   chatgpt                      # interactive Codex
#   chatgpt exec "fix the tests" # any Codex arguments
set -euo pipefail

# --- settings (override from the environment) ---------------------------------
CLIENT_EXECUTABLE="${CLIENT_EXECUTABLE:-codex}"
CLIENT_CONFIG_DIR="${CLIENT_CONFIG_DIR:-${CODEX_HOME:-$HOME/.codex}}"
PROFILE_NAME="${CODEX_SHIELD_PROFILE:-codex-shield}"       # -> $CLIENT_CONFIG_DIR/$PROFILE_NAME.config.toml
PROVIDER_ID="codex-shield"                                  # [model_providers.codex-shield] in config_template.toml
STARTUP_TIMEOUT_SECONDS="${CODEX_SHIELD_STARTUP_TIMEOUT:-20}"
PROXY_LOG="${CODEX_SHIELD_LOG:-}"                           # keep the proxy's log here (default: temporary)

me="chatgpt.sh"
die() { echo "$me: $*" >&2; exit 1; }

# --- where this script really lives (follows symlinks, any cwd) ---------------
script_dir() {
    local src="${BASH_SOURCE[0]}" dir
    while [ -L "$src" ]; do
        dir="$(cd -P "$(dirname "$src")" && pwd)"
        src="$(readlink "$src")"
        case "$src" in /*) ;; *) src="$dir/$src" ;; esac
    done
    cd -P "$(dirname "$src")" && pwd
}
DIR="$(script_dir)"

# --- the proxy binary: next to us, else the repo's release build, else build it
find_proxy() {
    local candidate
    for candidate in "$DIR/codex-shield" "$DIR/target/release/codex-shield"; do
        if [ -f "$candidate" ] && [ -x "$candidate" ]; then
            echo "$candidate"
            return
        fi
    done
    [ -f "$DIR/Cargo.toml" ] || die "no codex-shield binary next to $DIR/chatgpt.sh"
    command -v cargo >/dev/null 2>&1 || die "codex-shield is not built and cargo is missing (install Rust, or copy the static binary next to chatgpt.sh)"
    echo "$me: building codex-shield (cargo build --release), once..." >&2
    cargo build --release --manifest-path "$DIR/Cargo.toml" >&2 || die "cargo build --release failed"
    echo "$DIR/target/release/codex-shield"
}

# --- the port written into a new profile: PORT from the env, else .env, else 8888
configured_port() {
    local port="${PORT:-}"
    if [ -z "$port" ] && [ -f "$DIR/.env" ]; then
        port="$(sed -n 's/^[[:space:]]*\(export[[:space:]]\{1,\}\)\{0,1\}PORT[[:space:]]*=[[:space:]]*["'\'']\{0,1\}\([0-9]\{1,5\}\).*/\2/p' "$DIR/.env" | tail -n 1)"
    fi
    case "$port" in '' | 0 | *[!0-9]*) port=8888 ;; esac
    echo "$port"
}

# --- first run: write the Codex profile from the template, never overwrite ----
ensure_profile() {
    local profile="$CLIENT_CONFIG_DIR/$PROFILE_NAME.config.toml" template="$DIR/config_template.toml" tmp
    [ -e "$profile" ] && return
    [ -f "$template" ] || die "missing $template (keep it next to chatgpt.sh)"
    mkdir -p "$CLIENT_CONFIG_DIR"
    tmp="$(mktemp "$CLIENT_CONFIG_DIR/.$PROFILE_NAME.XXXXXX")"
    sed "s/__CODEX_SHIELD_PORT__/$(configured_port)/g" "$template" >"$tmp"
    chmod 644 "$tmp"
    # ln fails if another session created the file first: no overwrite, no race
    if ln "$tmp" "$profile" 2>/dev/null; then
        echo "$me: wrote the Codex profile $profile (used as --profile $PROFILE_NAME; edit it freely, it is never rewritten)" >&2
    fi
    rm -f "$tmp"
}

# --- health check: curl when present, else bash's /dev/tcp ---------------------
healthy() {
    if command -v curl >/dev/null 2>&1; then
        curl -fsS --max-time 2 "http://127.0.0.1:$1/healthz" 2>/dev/null | grep -q '"ok"'
    else
        (
            exec 3<>"/dev/tcp/127.0.0.1/$1"
            printf 'GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
            IFS= read -r -t 2 status_line <&3
            case "$status_line" in "HTTP/1."?" 200"*) exit 0 ;; *) exit 1 ;; esac
        ) 2>/dev/null
    fi
}

# --- cleanup: stop our proxy (and only ours), reap it, remove temporary files -
state_dir="" proxy_pid="" watchdog_pid="" client_pid="" got_signal=""
# shellcheck disable=SC2317  # reached from the traps below, which shellcheck cannot follow
stop_pid() { # stop_pid PID GRACE_TENTHS: TERM, wait, then KILL; always reaped
    local pid="$1" tenths="$2"
    kill -TERM "$pid" 2>/dev/null || true
    while [ "$tenths" -gt 0 ] && kill -0 "$pid" 2>/dev/null; do
        sleep 0.1
        tenths=$((tenths - 1))
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
# shellcheck disable=SC2317  # reached from the traps below, which shellcheck cannot follow
cleanup() {
    set +e
    trap '' INT TERM HUP
    [ -n "$client_pid" ] && stop_pid "$client_pid" 50
    [ -n "$watchdog_pid" ] && stop_pid "$watchdog_pid" 0
    [ -n "$proxy_pid" ] && stop_pid "$proxy_pid" 50
    [ -n "$state_dir" ] && rm -rf "$state_dir"
}
# shellcheck disable=SC2317  # reached from the traps below, which shellcheck cannot follow
on_signal() { # first signal: TERM the client; a second one: KILL it
    local how=TERM
    [ -n "$got_signal" ] && how=KILL
    got_signal="$1"
    [ -n "$client_pid" ] && kill -"$how" "$client_pid" 2>/dev/null
    [ -n "$client_pid" ] || exit "$got_signal"
}
trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
trap 'on_signal 129' HUP

# --- start this session's proxy ------------------------------------------------
command -v "$CLIENT_EXECUTABLE" >/dev/null 2>&1 ||
    { echo "$me: '$CLIENT_EXECUTABLE' not found (npm install -g @openai/codex@0.169.0, or set CLIENT_EXECUTABLE)" >&2; exit 127; }
proxy_bin="$(find_proxy)"
state_dir="$(mktemp -d "${TMPDIR:-/tmp}/codex-shield.XXXXXX")"
[ -n "$PROXY_LOG" ] || PROXY_LOG="$state_dir/proxy.log"
: >>"$PROXY_LOG"
log_start=$(($(wc -c <"$PROXY_LOG") + 1))
session_key="cs-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
proxy_args=()
[ -f "$DIR/.env" ] && proxy_args+=(--env-file "$DIR/.env")

# PORT=0: a free port per session; HOST pinned to loopback; a per-session inbound
# key so only this Codex can use this proxy; a short grace since Codex is gone.
(
    cd "$DIR"
    HOST=127.0.0.1 PORT=0 PROXY_API_KEY="$session_key" SHUTDOWN_GRACE_SECONDS=2 \
        exec "$proxy_bin" ${proxy_args[@]+"${proxy_args[@]}"}
) </dev/null >>"$PROXY_LOG" 2>&1 &
proxy_pid=$!

# if this script is killed with SIGKILL, the watchdog still stops the client and
# the proxy and removes the temporary files (it ticks with `read -t` on a private
# FIFO: no sleep child to leave behind)
wrapper_pid=$$
mkfifo "$state_dir/tick"
(
    exec 3<>"$state_dir/tick"
    while kill -0 "$wrapper_pid" && kill -0 "$proxy_pid"; do read -r -t 1 -u 3 _tick || true; done
    kill -0 "$wrapper_pid" && exit 0 # the proxy died on its own: the script reports it
    [ -f "$state_dir/client.pid" ] && kill -TERM "$(cat "$state_dir/client.pid")"
    kill -TERM "$proxy_pid"
    rm -rf "$state_dir"
) </dev/null >/dev/null 2>&1 &
watchdog_pid=$!

proxy_failed() {
    echo "$me: the codex-shield proxy $1; its output:" >&2
    tail -c +"$log_start" "$PROXY_LOG" | sed 's/^/    /' >&2
    exit 1
}

port=""
deadline=$((SECONDS + STARTUP_TIMEOUT_SECONDS))
while :; do
    if ! kill -0 "$proxy_pid" 2>/dev/null; then
        rc=0
        wait "$proxy_pid" || rc=$?
        proxy_pid=""
        proxy_failed "exited with status $rc before it was ready"
    fi
    if [ -z "$port" ]; then
        port="$(tail -c +"$log_start" "$PROXY_LOG" | sed -n 's|.*listening on http://[^ ]*:\([0-9][0-9]*\).*|\1|p' | head -n 1)"
    fi
    if [ -n "$port" ] && healthy "$port"; then
        break
    fi
    [ "$SECONDS" -lt "$deadline" ] || proxy_failed "did not answer /healthz within ${STARTUP_TIMEOUT_SECONDS}s"
    sleep 0.1
done

# --- run the client against it -------------------------------------------------
ensure_profile
export CODEX_HOME="$CLIENT_CONFIG_DIR"
export CODEX_SHIELD_API_KEY="$session_key"
# Runs in the background so TERM/HUP reach this script at once; stdin is passed
# on explicitly and the terminal stays Codex's (no job control in scripts).
"$CLIENT_EXECUTABLE" --profile "$PROFILE_NAME" \
    -c "model_provider=\"$PROVIDER_ID\"" \
    -c "model_providers.$PROVIDER_ID.base_url=\"http://127.0.0.1:$port/v1\"" \
    "$@" <&0 &
client_pid=$!
echo "$client_pid" >"$state_dir/client.pid"

set +e
while :; do
    wait "$client_pid"
    status=$?
    [ "$status" -le 128 ] && break
    if ! kill -0 "$client_pid" 2>/dev/null; then
        wait "$client_pid"
        rc=$?
        [ "$rc" -ne 127 ] && status=$rc
        break
    fi
done
client_pid=""
if [ -n "$got_signal" ] && [ "$status" -eq 0 ]; then
    status="$got_signal"
fi
if ! kill -0 "$proxy_pid" 2>/dev/null; then
    echo "$me: note: the codex-shield proxy stopped during the session; its output:" >&2
    tail -c +"$log_start" "$PROXY_LOG" | tail -n 20 | sed 's/^/    /' >&2
fi
exit "$status"
