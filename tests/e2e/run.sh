#!/usr/bin/env bash
# tests/e2e/run.sh: real clients through codex-shield against a failing mock upstream.
#
# Installs what it needs (pinned Codex CLI from npm into a cache dir, the pinned
# `openai` Python package into a venv), builds the proxy (cargo build --release),
# starts tests/e2e/mock_upstream.py on 127.0.0.1, and checks:
#   1. `codex exec` through the proxy gets the answer after 429s, an in-stream
#      error, a cut stream and response.failed, with no reconnect/error notice;
#   2. the same through chatgpt.sh: profile written once, concurrent sessions,
#      startup failure reported fast, TERM handled, no proxy left behind;
#   3. the openai Python SDK (Responses + Chat Completions, streamed or not);
#   4. Codex alone against the same failing mock (recorded, not asserted).
# Everything is bounded in time and stopped by the EXIT trap.  Network: only the
# npm and PyPI registries, once, for the installs.
set -euo pipefail

CODEX_VERSION="0.169.0"
OPENAI_PY_VERSION="3.57.0"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
E2E="$ROOT/tests/e2e"
CACHE="${CODEX_SHIELD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/codex-shield}"
CODEX_PREFIX="$CACHE/codex-$CODEX_VERSION"
CODEX="$CODEX_PREFIX/node_modules/.bin/codex"
VENV="$CACHE/venv-openai-$OPENAI_PY_VERSION"
PYTHON="${PYTHON:-python3}"
FAILURES="429,429ms,error,cut,failed"   # then "ok": five failures in a row before the answer
ANSWER="SHIELD-OK-7431: the mock upstream answered after every failure."

WORK="$(mktemp -d "${TMPDIR:-/tmp}/codex-shield-e2e.XXXXXX")"
export CODEX_SHIELD_E2E_RUN=$$   # tags every process this run starts (leftover checks)
started_pids=()
passed=0 failed=0

log() { printf '%s\n' "e2e: $*" >&2; }
ok() { passed=$((passed + 1)); printf 'ok   %s\n' "$1"; }
fail() { failed=$((failed + 1)); printf 'FAIL %s\n' "$1"; shift; [ $# -eq 0 ] || printf '     %s\n' "$@"; }

cleanup() {
    local pid
    set +e
    for pid in ${started_pids[@]+"${started_pids[@]}"}; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in ${started_pids[@]+"${started_pids[@]}"}; do
        for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    if [ -n "${KEEP_E2E_WORK:-}" ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 0. install (idempotent, pinned) -------------------------------------------
install_codex() {
    if [ -x "$CODEX" ] && [ "$("$CODEX" --version 2>/dev/null)" = "codex-cli $CODEX_VERSION" ]; then return; fi
    command -v npm >/dev/null || { log "npm is required (apt-get install -y nodejs npm)"; exit 1; }
    log "installing @openai/codex@$CODEX_VERSION into $CODEX_PREFIX"
    mkdir -p "$CODEX_PREFIX"
    timeout 600 npm install --prefix "$CODEX_PREFIX" --no-audit --no-fund --loglevel=error \
        "@openai/codex@$CODEX_VERSION" >&2
}
install_openai() {
    if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import openai, sys; sys.exit(openai.__version__ != '$OPENAI_PY_VERSION')" 2>/dev/null; then
        return
    fi
    log "installing openai==$OPENAI_PY_VERSION into $VENV"
    rm -rf "$VENV"
    if ! "$PYTHON" -m venv "$VENV" >&2; then
        log "python venv is missing; installing it"
        apt-get install -y python3-venv >&2 || { apt-get update >&2 && apt-get install -y python3-venv >&2; }
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV" >&2
    fi
    timeout 600 "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "openai==$OPENAI_PY_VERSION" >&2
}
install_codex
install_openai
if [ -n "${CODEX_SHIELD_BIN:-}" ]; then
    PROXY_BIN="$CODEX_SHIELD_BIN"
else
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet) >&2
    PROXY_BIN="$ROOT/target/release/codex-shield"
fi
log "$("$CODEX" --version), openai $OPENAI_PY_VERSION (python), proxy $PROXY_BIN"

# --- helpers -----------------------------------------------------------------
wait_for_file() { # wait_for_file PATH SECONDS
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        [ -s "$1" ] && return 0
        sleep 0.1
    done
    return 1
}
http() { # http METHOD URL [BODY]: print the body of a 2xx answer (python: no curl needed)
    "$PYTHON" - "$@" <<'PY'
import sys, urllib.request
method, url = sys.argv[1], sys.argv[2]
data = sys.argv[3].encode() if len(sys.argv) > 3 else None
with urllib.request.urlopen(urllib.request.Request(url, data=data, method=method), timeout=5) as r:
    sys.stdout.write(r.read().decode())
PY
}
mock_script() { http POST "$MOCK/__script" "$1" >/dev/null; }
mock_steps() { # the steps the mock served, e.g. "429 429ms error cut failed ok"
    http GET "$MOCK/__log" | "$PYTHON" -c 'import json,sys; print(" ".join(r["step"] for r in json.load(sys.stdin)))'
}
mock_field() { # mock_field FIELD: distinct values of a logged request field
    http GET "$MOCK/__log" | "$PYTHON" -c 'import json,sys; print(" ".join(sorted({str(r[sys.argv[1]]) for r in json.load(sys.stdin)})))' "$1"
}
proxy_pids() { # PIDs of running processes of this proxy binary (to detect leftovers)
    local exe proc real
    real="$(readlink -f "$PROXY_BIN")"
    for proc in /proc/[0-9]*; do
        exe="$(readlink "$proc/exe" 2>/dev/null)" || continue
        [ "$exe" = "$real" ] || continue
        # only the ones this run started (other suites may run the same binary)
        tr '\0' '\n' <"$proc/environ" 2>/dev/null | grep -qx "CODEX_SHIELD_E2E_RUN=$$" && echo "${proc#/proc/}"
    done | sort -n | tr '\n' ' '
}
render_profile() { # render_profile CODEX_HOME PORT
    mkdir -p "$1"
    sed "s/__CODEX_SHIELD_PORT__/$2/g" "$ROOT/config_template.toml" >"$1/codex-shield.config.toml"
}
# run_codex OUT_PREFIX COMMAND...: run in a scratch project dir, bounded; writes .out .err .rc
run_codex() {
    local out="$1"
    shift
    local rc=0
    (cd "$WORK/project" && env -u OPENAI_API_KEY -u OPENAI_BASE_URL -u OPENAI_API_BASE \
        timeout 120 "$@" </dev/null >"$out.out" 2>"$out.err") || rc=$?
    echo "$rc" >"$out.rc"
}
notices() { grep -E 'Reconnecting|ERROR|stream disconnected|exceeded retry' "$1" || true; }
check_answer() { # check_answer NAME OUT_PREFIX
    local rc
    rc="$(cat "$2.rc")"
    if [ "$rc" = 0 ] && grep -qF "$ANSWER" "$2.out" && [ -z "$(notices "$2.err")" ]; then
        ok "$1"
    else
        fail "$1" "exit $rc, stdout: $(head -c 300 "$2.out")" "notices: $(notices "$2.err" | head -n 5 | tr '\n' '|')" "stderr tail: $(tail -n 5 "$2.err" | tr '\n' '|')"
    fi
}
mkdir -p "$WORK/project"

# --- mock upstream -----------------------------------------------------------
"$PYTHON" "$E2E/mock_upstream.py" --port-file "$WORK/mock.port" --max-seconds 900 2>"$WORK/mock.log" &
started_pids+=($!)
wait_for_file "$WORK/mock.port" 10 || { log "mock did not start"; cat "$WORK/mock.log" >&2; exit 1; }
MOCK_PORT="$(cat "$WORK/mock.port")"
MOCK="http://127.0.0.1:$MOCK_PORT"
UPSTREAM_KEY="upstream-secret-$$"
export AZURE_ENDPOINT="$MOCK/v1" AZURE_API_KEY="$UPSTREAM_KEY" UPSTREAM_AUTH=bearer
export RETRY_WAIT_SECONDS=0.05 RETRY_MAX_WAIT_SECONDS=2 RETRY_ATTEMPTS=10 RETRY_DEADLINE_SECONDS=60
export LOG_LEVEL=info FORCED_MODEL=
unset PROXY_API_KEY HOST PORT
log "mock upstream on $MOCK"

# --- 1. codex exec through the proxy -----------------------------------------
(cd "$WORK" && PORT=0 HOST=127.0.0.1 exec "$PROXY_BIN") </dev/null 2>"$WORK/proxy.log" &
started_pids+=($!)
PROXY_PID=$!
for _ in $(seq 1 100); do
    PROXY_PORT="$(sed -n 's|.*listening on http://[^ ]*:\([0-9][0-9]*\).*|\1|p' "$WORK/proxy.log" | head -n 1)"
    [ -n "$PROXY_PORT" ] && break
    kill -0 "$PROXY_PID" 2>/dev/null || break
    sleep 0.1
done
if [ -z "${PROXY_PORT:-}" ]; then log "proxy did not start:"; cat "$WORK/proxy.log" >&2; exit 1; fi
PROXY="http://127.0.0.1:$PROXY_PORT"
if http GET "$PROXY/healthz" | grep -q '"status"'; then ok "proxy /healthz answers"; else fail "proxy /healthz answers"; fi

CH="$WORK/codex-home-proxy"
render_profile "$CH" "$PROXY_PORT"
mock_script "$FAILURES"
CODEX_HOME="$CH" CODEX_SHIELD_API_KEY=client-placeholder \
    run_codex "$WORK/via-proxy" "$CODEX" --profile codex-shield exec --skip-git-repo-check --ephemeral \
    -s read-only "Reply with the magic words."
check_answer "codex exec through the proxy answers after $FAILURES, no notice" "$WORK/via-proxy"
steps="$(mock_steps)"
if [ "$steps" = "$(echo "$FAILURES,ok" | tr ',' ' ')" ]; then ok "proxy retried each failure once: $steps"; else fail "proxy retried each failure once" "mock served: $steps"; fi
if [ "$(mock_field stream)" = "True" ]; then ok "proxy forced stream:true upstream"; else fail "proxy forced stream:true upstream" "$(mock_field stream)"; fi
if [ "$(mock_field authorization)" = "Bearer $UPSTREAM_KEY" ]; then ok "proxy sent the upstream key, not Codex's placeholder"; else fail "upstream key" "$(mock_field authorization)"; fi
if grep -q "provider: codex-shield" "$WORK/via-proxy.err"; then ok "codex used the codex-shield provider from the profile"; else fail "codex provider" "$(grep provider: "$WORK/via-proxy.err")"; fi

# --- 2. Codex alone against the same failing mock (recorded) ------------------
CA="$WORK/codex-home-alone"
render_profile "$CA" "$MOCK_PORT"
# Codex's own defaults for retries and timeouts: what a user without the proxy has
sed -i -e '/^request_max_retries/d' -e '/^stream_max_retries/d' -e '/^stream_idle_timeout_ms/d' "$CA/codex-shield.config.toml"
contrast="$WORK/contrast.txt"
for scenario in "$FAILURES" "error,cut,failed"; do
    mock_script "$scenario"
    start=$(date +%s.%N)
    CODEX_HOME="$CA" CODEX_SHIELD_API_KEY=client-placeholder \
        run_codex "$WORK/alone" "$CODEX" --profile codex-shield exec --skip-git-repo-check --ephemeral \
        -s read-only "Reply with the magic words."
    secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
    answered=no
    grep -qF "$ANSWER" "$WORK/alone.out" && answered=yes
    {
        echo "Codex alone, mock fails [$scenario] then answers: exit $(cat "$WORK/alone.rc"), answer printed: $answered, ${secs}s, upstream requests: $(mock_steps)"
        notices "$WORK/alone.err" | sort | uniq -c | sed 's/^/    /'
    } >>"$contrast"
done
mock_script "$FAILURES"
start=$(date +%s.%N)
CODEX_HOME="$CH" CODEX_SHIELD_API_KEY=client-placeholder \
    run_codex "$WORK/via-proxy2" "$CODEX" --profile codex-shield exec --skip-git-repo-check --ephemeral \
    -s read-only "Reply with the magic words."
secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
echo "Through codex-shield, mock fails [$FAILURES] then answers: exit $(cat "$WORK/via-proxy2.rc"), answer printed: $(grep -qF "$ANSWER" "$WORK/via-proxy2.out" && echo yes || echo no), ${secs}s, notices: $(notices "$WORK/via-proxy2.err" | wc -l)" >>"$contrast"
log "Codex alone vs through the proxy:"
sed 's/^/    /' "$contrast" >&2
[ -z "${E2E_CONTRAST_OUT:-}" ] || cp "$contrast" "$E2E_CONTRAST_OUT"

# --- 3. openai Python SDK through the proxy ----------------------------------
if PROXY_URL="$PROXY/v1" MOCK_URL="$MOCK" timeout 300 "$VENV/bin/python" "$E2E/sdk_test.py" >"$WORK/sdk.out" 2>&1; then
    ok "openai Python SDK: responses + chat, streamed + not ($(tail -n 1 "$WORK/sdk.out"))"
else
    fail "openai Python SDK" "$(tr '\n' '|' <"$WORK/sdk.out" | tail -c 1500)"
fi
kill -TERM "$PROXY_PID" 2>/dev/null || true
wait "$PROXY_PID" 2>/dev/null || true

# --- 4. chatgpt.sh ---------------------------------------------------------------
# the wrapper finds target/release/codex-shield in the repo (or the binary next
# to it); it reads $ROOT/.env if present, but the env vars above win over it.
export CLIENT_EXECUTABLE="$CODEX" CLIENT_CONFIG_DIR="$WORK/codex-home-wrapper"
ln -s "$ROOT/chatgpt.sh" "$WORK/chatgpt"   # through a symlink, from another cwd
WRAP="$WORK/chatgpt"
PROFILE="$CLIENT_CONFIG_DIR/codex-shield.config.toml"
before="$(proxy_pids)"

mock_script "$FAILURES"
run_codex "$WORK/wrap1" "$WRAP" exec --skip-git-repo-check --ephemeral -s read-only "Reply with the magic words."
check_answer "chatgpt.sh exec (1st run) answers after $FAILURES, no notice" "$WORK/wrap1"
if [ -f "$PROFILE" ] && [ "$(grep -c "wrote the Codex profile" "$WORK/wrap1.err")" = 1 ] && grep -q 'wire_api = "responses"' "$PROFILE"; then
    ok "chatgpt.sh wrote $PROFILE once and said so"
else
    fail "chatgpt.sh wrote the profile" "$(grep chatgpt.sh "$WORK/wrap1.err")"
fi
echo "# user edit" >>"$PROFILE"
sum1="$(cksum <"$PROFILE")"
mock_script "500,ok"
run_codex "$WORK/wrap2" "$WRAP" exec --skip-git-repo-check --ephemeral -s read-only "Reply with the magic words."
check_answer "chatgpt.sh exec (2nd run) answers" "$WORK/wrap2"
if [ "$sum1" = "$(cksum <"$PROFILE")" ] && ! grep -q "wrote the Codex profile" "$WORK/wrap2.err"; then
    ok "2nd run kept the existing profile (user edit intact, no message)"
else
    fail "2nd run kept the existing profile"
fi
if [ "$(proxy_pids)" = "$before" ]; then ok "no proxy left behind after chatgpt.sh runs"; else fail "proxy left behind" "$(proxy_pids)"; fi

# two sessions at once: A waits on a slow answer while B starts, finishes and exits
mock_script "slow,ok"
run_codex "$WORK/wrapA" "$WRAP" exec --skip-git-repo-check --ephemeral -s read-only "Reply with the magic words." &
session_a=$!
for _ in $(seq 1 100); do [ -n "$(mock_steps)" ] && break; sleep 0.1; done
run_codex "$WORK/wrapB" "$WRAP" exec --skip-git-repo-check --ephemeral -s read-only "Reply with the magic words."
wait "$session_a" || true
check_answer "concurrent session B (finishes first)" "$WORK/wrapB"
check_answer "concurrent session A (its proxy survived B's exit)" "$WORK/wrapA"
if [ "$(proxy_pids)" = "$before" ]; then ok "no proxy left behind after concurrent sessions"; else fail "proxy left behind (concurrent)" "$(proxy_pids)"; fi

# the proxy cannot start: the wrapper fails fast with the proxy's own message
start=$SECONDS
rc=0
AZURE_ENDPOINT="not a url" timeout 30 "$WRAP" exec --skip-git-repo-check "hi" </dev/null >"$WORK/bad.out" 2>"$WORK/bad.err" || rc=$?
if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ $((SECONDS - start)) -le 10 ] && grep -q AZURE_ENDPOINT "$WORK/bad.err" && [ ! -s "$WORK/bad.out" ]; then
    ok "bad AZURE_ENDPOINT: chatgpt.sh exits $rc in $((SECONDS - start))s showing the proxy's message"
else
    fail "bad AZURE_ENDPOINT: fail fast" "exit $rc after $((SECONDS - start))s: $(tr '\n' '|' <"$WORK/bad.err")"
fi

# Interrupt the wrapper while Codex waits: client and proxy stop, the exit status says so.
# interrupt LABEL OUT SETSID KILL-ARGS...: start the wrapper (in its own session if SETSID=1),
# wait for its request to reach the mock, send the signal (%PID% is the wrapper's pid).
interrupt() {
    local label="$1" out="$2" rc=0 start wrapper launch=()
    [ "$3" = 1 ] && launch=(setsid)
    shift 3
    mock_script "slow"
    (cd "$WORK/project" && exec "${launch[@]}" "$WRAP" exec --skip-git-repo-check --ephemeral -s read-only "hi") </dev/null >"$WORK/$out.out" 2>"$WORK/$out.err" &
    wrapper=$!
    for _ in $(seq 1 100); do [ -n "$(mock_steps)" ] && break; sleep 0.1; done
    kill "${@//%PID%/$wrapper}"
    start=$SECONDS
    wait "$wrapper" || rc=$?
    sleep 0.3
    if [ "$rc" -ne 0 ] && [ $((SECONDS - start)) -le 8 ] && [ "$(proxy_pids)" = "$before" ]; then
        ok "$label: exit $rc, client and proxy stopped"
    else
        fail "$label" "exit $rc after $((SECONDS - start))s, leftover proxies: $(proxy_pids)"
    fi
}

interrupt "TERM to chatgpt.sh" term 0 -TERM "%PID%"
# Ctrl-C: SIGINT to the whole process group, as a terminal sends it
if command -v setsid >/dev/null 2>&1; then
    interrupt "Ctrl-C (INT to the process group)" int 1 -INT -- "-%PID%"
fi

CODEX_SHIELD_BIN="$PROXY_BIN" bash "$E2E/adapter.sh" && ok "adapter: Codex and the SDK on chat-only upstreams (tests/e2e/adapter.sh)" || fail "adapter: tests/e2e/adapter.sh"
echo "e2e: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
