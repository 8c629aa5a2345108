#!/usr/bin/env bash
# tests/e2e/keepalive.sh: real clients accept the proxy's keepalive events (KEEPALIVE_SECONDS).
#
# Self-sufficient (tests/e2e/run.sh calls it last, but it runs alone too): installs the same
# pinned Codex CLI and openai package into the same cache dirs as run.sh, builds the proxy
# unless CODEX_SHIELD_BIN names one, starts tests/e2e/keepalive_mock.py (an upstream that
# waits before answering) and checks:
#   1. Codex with stream_idle_timeout_ms=2000 completes a turn whose answer takes 6 s through
#      a proxy with KEEPALIVE_SECONDS=1, with no reconnect or error notice;
#   2. the same WITHOUT keepalive completes too: Codex 0.169 starts its idle timer when the
#      response head arrives, and a proxy without keepalive sends the head only with the
#      complete answer, so its silence never trips the timer (measured; if a later Codex
#      times out the wait for the head, this check says so);
#   2b. control: keepalive every 3 s is too sparse for a 2 s idle timer, and Codex says so
#      (the short timeout is really in force, so 1 and 2 prove something);
#   3. Codex with its DEFAULT idle timeout (the profile's stream_idle_timeout_ms removed)
#      completes the same slow turn with keepalive on, and without it;
#   4. the openai SDK (not Codex: its keepalives are SSE comments): create(stream=True) and
#      responses.stream() get the whole slow answer, and an exhausted retry budget after the
#      head raises APIError with the proxy's message (keepalive_sdk.py).
# Bounded in time; every process it starts is stopped by the EXIT trap. Network: only the
# npm and PyPI registries, once, for the installs.
set -euo pipefail

NAME=keepalive
# shellcheck source=tests/e2e/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ANSWER="SHIELD-OK-7431: the mock upstream answered after every failure."
SLOW=6   # seconds the upstream takes before it answers

# --- install (idempotent, pinned; the same places as run.sh) ---------------------
install_codex
install_openai
PROXY_BIN="$(proxy_bin)"

# --- helpers -----------------------------------------------------------------------
mock_script() { http POST "$MOCK/__script" "$1" >/dev/null; } # the mock's next answers (and a fresh log)
mock_count() { # how many model requests the mock saw since the last script
    "$PYTHON" -c 'import json,sys,urllib.request; print(len(json.load(urllib.request.urlopen(sys.argv[1], timeout=5))))' "$MOCK/__log"
}
# start_proxy NAME KEEPALIVE: a proxy in front of the mock; sets PROXY_PORT
start_proxy() {
    local pid i
    (cd "$WORK" && PORT=0 HOST=127.0.0.1 KEEPALIVE_SECONDS="$2" exec "$PROXY_BIN") </dev/null 2>"$WORK/$1.log" &
    pid=$!
    started_pids+=("$pid")
    PROXY_PID=$pid
    PROXY_PORT=""
    for ((i = 0; i < 100; i++)); do
        PROXY_PORT="$(sed -n 's|.*listening on http://[^ ]*:\([0-9][0-9]*\).*|\1|p' "$WORK/$1.log" 2>/dev/null | head -n 1 || true)"
        [ -n "$PROXY_PORT" ] && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    log "proxy $1 did not start:"
    cat "$WORK/$1.log" >&2
    exit 1
}
# codex_home DIR PORT IDLE_MS: the project's profile for a proxy on PORT; IDLE_MS replaces
# its stream_idle_timeout_ms ("default": the line removed, Codex's own default applies)
codex_home() {
    mkdir -p "$1"
    sed -e "s/__CODEX_SHIELD_PORT__/$2/g" -e '/^stream_idle_timeout_ms/d' "$ROOT/config_template.toml" >"$1/codex-shield.config.toml"
    [ "$3" = default ] || echo "stream_idle_timeout_ms = $3" >>"$1/codex-shield.config.toml"
}
# run_codex OUT CODEX_HOME: one `codex exec` turn, bounded; writes OUT.out OUT.err OUT.rc OUT.secs
run_codex() {
    local rc=0 start
    start=$(date +%s.%N)
    (cd "$WORK/project" && env -u OPENAI_API_KEY -u OPENAI_BASE_URL -u OPENAI_API_BASE \
        CODEX_HOME="$2" CODEX_SHIELD_API_KEY=client-placeholder \
        timeout 120 "$CODEX" --profile codex-shield exec --skip-git-repo-check --ephemeral \
        -s read-only "Reply with the magic words." </dev/null >"$1.out" 2>"$1.err") || rc=$?
    echo "$rc" >"$1.rc"
    awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }' >"$1.secs"
}
notices() { grep -E -i 'Reconnecting|ERROR|stream disconnected|idle timeout|timed out|exceeded retry' "$1" || true; }
summary() { # summary OUT: one line about a codex run
    echo "exit $(cat "$1.rc") after $(cat "$1.secs")s, answer printed: $(grep -qF "$ANSWER" "$1.out" && echo yes || echo no), upstream requests: $(mock_count), notices: $(notices "$1.err" | head -n 3 | tr '\n' '|')"
}
completed() { # completed OUT: the turn printed the answer, exited 0, no notice
    [ "$(cat "$1.rc")" = 0 ] && grep -qF "$ANSWER" "$1.out" && [ -z "$(notices "$1.err")" ]
}
mkdir -p "$WORK/project"

# --- the slow upstream ----------------------------------------------------------------
"$PYTHON" "$E2E/keepalive_mock.py" --port-file "$WORK/mock.port" --max-seconds 600 2>"$WORK/mock.log" &
started_pids+=($!)
wait_for_file "$WORK/mock.port" 10 || { log "mock did not start"; cat "$WORK/mock.log" >&2; exit 1; }
MOCK="http://127.0.0.1:$(cat "$WORK/mock.port")"
export AZURE_ENDPOINT="$MOCK/v1" AZURE_API_KEY="upstream-secret-$$" UPSTREAM_AUTH=bearer
export RETRY_WAIT_SECONDS=0.05 RETRY_MAX_WAIT_SECONDS=2 RETRY_ATTEMPTS=3 RETRY_DEADLINE_SECONDS=60
export IDLE_TIMEOUT_SECONDS=30 LOG_LEVEL=info FORCED_MODEL=
unset PROXY_API_KEY HOST PORT
log "$("$CODEX" --version), openai $OPENAI_PY_VERSION, proxy $PROXY_BIN, mock $MOCK"

# --- 1. Codex, 2 s idle timeout, keepalive every 1 s: the 6 s turn completes ------------
start_proxy with-keepalive 1
KA_PORT=$PROXY_PORT
codex_home "$WORK/home-short-ka" "$KA_PORT" 2000
mock_script "sleep$SLOW,sleep$SLOW,sleep$SLOW"
run_codex "$WORK/short-ka" "$WORK/home-short-ka"
if completed "$WORK/short-ka" && [ "$(mock_count)" = 1 ]; then
    ok "codex (stream_idle_timeout_ms=2000) + KEEPALIVE_SECONDS=1: ${SLOW}s answer completes: $(summary "$WORK/short-ka")"
else
    fail "codex (stream_idle_timeout_ms=2000) + KEEPALIVE_SECONDS=1 completes a ${SLOW}s turn" "$(summary "$WORK/short-ka")" "stderr tail: $(tail -n 5 "$WORK/short-ka.err" | tr '\n' '|')"
fi

# --- 2. the same without keepalive: the idle timer starts at the head -------------------
start_proxy without-keepalive 0
NOKA_PORT=$PROXY_PORT
NOKA_PID=$PROXY_PID
codex_home "$WORK/home-short" "$NOKA_PORT" 2000
mock_script "sleep$SLOW,sleep$SLOW,sleep$SLOW"
run_codex "$WORK/short" "$WORK/home-short"
if completed "$WORK/short" && [ "$(mock_count)" = 1 ]; then
    ok "codex (stream_idle_timeout_ms=2000) WITHOUT keepalive completes too (idle timer starts at the head): $(summary "$WORK/short")"
else
    fail "codex (stream_idle_timeout_ms=2000) without keepalive: the wait for the head is not idle time" "$(summary "$WORK/short")"
fi

# --- 2b. control: events too sparse for the idle timer ------------------------------------
start_proxy sparse-keepalive 3
codex_home "$WORK/home-sparse" "$PROXY_PORT" 2000
mock_script "sleep8,sleep8,sleep8"
run_codex "$WORK/sparse" "$WORK/home-sparse"
if ! completed "$WORK/sparse" && [ -n "$(notices "$WORK/sparse.err")" ]; then
    ok "control: codex (stream_idle_timeout_ms=2000) + KEEPALIVE_SECONDS=3 times out: $(summary "$WORK/sparse")"
else
    fail "control: codex (stream_idle_timeout_ms=2000) + KEEPALIVE_SECONDS=3 times out" "$(summary "$WORK/sparse")"
fi
stop "$PROXY_PID"

# --- 3. Codex's default idle timeout, with and without keepalive -----------------------
for port in "$KA_PORT" "$NOKA_PORT"; do
    label="keepalive on"
    [ "$port" = "$KA_PORT" ] || label="keepalive off"
    codex_home "$WORK/home-default-$port" "$port" default
    mock_script "sleep$SLOW"
    run_codex "$WORK/default-$port" "$WORK/home-default-$port"
    if completed "$WORK/default-$port"; then
        ok "codex (default stream_idle_timeout_ms), $label, completes: $(summary "$WORK/default-$port")"
    else
        fail "codex (default stream_idle_timeout_ms), $label, completes" "$(summary "$WORK/default-$port")"
    fi
done
stop "$NOKA_PID"

# --- 4. the openai SDK through keepalive events -----------------------------------------
if PROXY_URL="http://127.0.0.1:$KA_PORT/v1" MOCK_URL="$MOCK" SLOW="$SLOW" timeout 180 \
    "$VENV/bin/python" "$E2E/keepalive_sdk.py" >"$WORK/sdk.out" 2>&1; then
    ok "openai SDK $OPENAI_PY_VERSION through keepalive comments ($(tail -n 1 "$WORK/sdk.out"))"
else
    fail "openai SDK $OPENAI_PY_VERSION through keepalive comments" "$(tr '\n' '|' <"$WORK/sdk.out" | tail -c 1500)"
fi

echo "keepalive: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
