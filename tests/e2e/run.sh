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
#   4. Codex alone against the same failing mock (recorded, not asserted);
#   5. Codex 0.169 as measured: request shape by model name, FORCED_MODEL through the
#      wrapper, the give-up forms it shows verbatim, progress events in exec, the SDK;
#   6. through chatgpt.sh with the user's profiles and config, the client config's
#      refresh, resume, and the TUI under tmux (progress line, warnings, resume, Ctrl-C);
#   7. chatgpt.sh returns to a caller that captures its pipes, and leaves no temporary
#      folder or process behind however it ends (tests/e2e/wrapper.sh);
#   8. Codex with a named key of CLIENT_KEYS_FILE: its name on /status (tests/e2e/keys.sh);
#   9. chat-completions SDK clients (openai Python and node, Vercel AI, LangChain, the
#      Agents SDK) on a Responses-only upstream (tests/e2e/chatclients.sh).
# Everything is bounded in time and stopped by the EXIT trap.  Network: only the
# npm and PyPI registries, once, for the installs (and apt for tmux if it is missing).
set -euo pipefail

NAME=e2e
# shellcheck source=tests/e2e/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
FAILURES="429,429ms,error,cut,failed"   # then "ok": five failures in a row before the answer
ANSWER="SHIELD-OK-7431: the mock upstream answered after every failure."
export CODEX_SHIELD_E2E_RUN=$$   # tags every process this run starts (leftover checks)

# --- 0. install (idempotent, pinned) -------------------------------------------
install_codex
install_openai
PROXY_BIN="$(proxy_bin)"
log "$("$CODEX" --version), openai $OPENAI_PY_VERSION (python), proxy $PROXY_BIN"

# --- helpers -----------------------------------------------------------------
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
no_leftover() { # the watchdog stops a session's proxy within ~3 s of Codex's exit
    local i
    for ((i = 0; i < 50; i++)); do
        [ "$(proxy_pids)" = "$before" ] && return 0
        sleep 0.1
    done
    return 1
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
: >"$WORK/proxy.log"   # exists before the loop below reads it
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
if [ -f "$PROFILE" ] && [ "$(grep -c "wrote $PROFILE" "$WORK/wrap1.err")" = 1 ] && grep -q 'wire_api = "responses"' "$PROFILE"; then
    ok "chatgpt.sh wrote $PROFILE once and said so"
else
    fail "chatgpt.sh wrote the profile" "$(grep chatgpt.sh "$WORK/wrap1.err")"
fi
echo "# user edit" >>"$PROFILE"
sum1="$(cksum <"$PROFILE")"
mock_script "500,ok"
run_codex "$WORK/wrap2" "$WRAP" exec --skip-git-repo-check --ephemeral -s read-only "Reply with the magic words."
check_answer "chatgpt.sh exec (2nd run) answers" "$WORK/wrap2"
if [ "$sum1" = "$(cksum <"$PROFILE")" ] && ! grep -q "$PROFILE" "$WORK/wrap2.err"; then
    ok "2nd run kept the existing profile (user edit intact, no message)"
else
    fail "2nd run kept the existing profile"
fi
if no_leftover; then ok "no proxy left behind after chatgpt.sh runs"; else fail "proxy left behind" "$(proxy_pids)"; fi

# two sessions at once: A waits on a slow answer while B starts, finishes and exits
mock_script "slow,ok"
run_codex "$WORK/wrapA" "$WRAP" exec --skip-git-repo-check --ephemeral -s read-only "Reply with the magic words." &
session_a=$!
for _ in $(seq 1 100); do [ -n "$(mock_steps)" ] && break; sleep 0.1; done
run_codex "$WORK/wrapB" "$WRAP" exec --skip-git-repo-check --ephemeral -s read-only "Reply with the magic words."
wait "$session_a" || true
check_answer "concurrent session B (finishes first)" "$WORK/wrapB"
check_answer "concurrent session A (its proxy survived B's exit)" "$WORK/wrapA"
if no_leftover; then ok "no proxy left behind after concurrent sessions"; else fail "proxy left behind (concurrent)" "$(proxy_pids)"; fi

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
    if [ "$rc" -ne 0 ] && [ $((SECONDS - start)) -le 8 ] && no_leftover; then
        ok "$label: exit $rc, client and proxy stopped"
    else
        fail "$label" "exit $rc after $((SECONDS - start))s, leftover proxies: $(proxy_pids)"
    fi
}

# chatgpt.sh has become Codex (same PID): the TERM reaches Codex itself
interrupt "TERM to chatgpt.sh" term 0 -TERM "%PID%"
# Ctrl-C: SIGINT to the whole process group, as a terminal sends it
if command -v setsid >/dev/null 2>&1; then
    interrupt "Ctrl-C (INT to the process group)" int 1 -INT -- "-%PID%"
fi

# --- 5. Codex 0.169 as measured: request shapes, the forms it shows, progress -----
# Codex straight against the mock (no proxy), the provider given as -c overrides.
mkdir -p "$WORK/codex-home-direct"
direct() { # direct OUT_PREFIX CODEX-ARGS...: codex exec against the mock, stream retries on
    local out="$1"
    shift
    CODEX_HOME="$WORK/codex-home-direct" K=client-placeholder run_codex "$out" "$CODEX" \
        -c 'model_provider="m"' -c 'model_providers.m.name="mock"' -c "model_providers.m.base_url=\"$MOCK/v1\"" \
        -c 'model_providers.m.env_key="K"' -c 'model_providers.m.supports_websockets=false' \
        exec --skip-git-repo-check --ephemeral -s read-only "$@" "Reply with the magic words."
}
mock_requests() { # mock_requests PYTHON-EXPR-OF-r: one line per logged request
    http GET "$MOCK/__log" | "$PYTHON" -c 'import json,sys; [print(eval(sys.argv[1])) for r in json.load(sys.stdin)]' "$1"
}
shape_expr='"lite" if r["headers"].get("x-openai-internal-codex-responses-lite") == "true" and any(i.get("type") == "additional_tools" for i in r["body"]["input"]) and "tools" not in r["body"] else "standard" if r["body"].get("tools") and not any(i.get("type") == "additional_tools" for i in r["body"]["input"]) and "x-openai-internal-codex-responses-lite" not in r["headers"] else "mixed"'
table="" expected_table="" 
for row in "(default):lite" "gpt-6.1-sol:lite" "gpt-6.1-sol-mine:lite" "gpt-5.6-luna:lite" "gpt-5.5:standard" "gpt-5.4:standard" "my-deployment:standard"; do
    model="${row%%:*}"
    margs=()
    [ "$model" = "(default)" ] || margs=(-m "$model")
    mock_script "ok"
    direct "$WORK/shape" ${margs[@]+"${margs[@]}"}
    table+="$model:$(mock_requests "$shape_expr" | head -n 1) "
    expected_table+="$row "
done
if [ "$table" = "$expected_table" ]; then ok "request shape by model (Codex 0.169): $table"; else fail "request shape by model" "got:      $table" "expected: $expected_table"; fi

# the wrapper sends FORCED_MODEL as the model: the standard shape even for Codex's default
mock_script "ok"
FORCED_MODEL=my-deployment run_codex "$WORK/forced" "$WRAP" exec --skip-git-repo-check --ephemeral -s read-only "Reply with the magic words."
got="$(mock_requests '(r["model"], '"$shape_expr"')' | head -n 1)"
if grep -qF "$ANSWER" "$WORK/forced.out" && [ "$got" = "('my-deployment', 'standard')" ] && grep -q '^model: my-deployment' "$WORK/forced.err"; then
    ok "chatgpt.sh with FORCED_MODEL=my-deployment: Codex uses it, standard shape"
else
    fail "chatgpt.sh with FORCED_MODEL" "upstream saw: $got" "$(grep '^model:' "$WORK/forced.err")"
fi
FORCED_MODEL=my-deployment run_codex "$WORK/forced-m" "$WRAP" exec -m gpt-5.4 --skip-git-repo-check --ephemeral -s read-only "hi"
if grep -q '^model: gpt-5.4' "$WORK/forced-m.err"; then ok "chatgpt.sh keeps the user's -m over FORCED_MODEL"; else fail "user's -m kept" "$(grep '^model:' "$WORK/forced-m.err")"; fi

# the give-up forms Codex shows verbatim, without retrying (stream retries left at 5)
for form in giveup400 giveupfailed; do
    mock_script "$form,$form,$form,$form,$form,$form"
    direct "$WORK/$form" -m gpt-5.5
    steps="$(mock_steps)"
    if [ "$(cat "$WORK/$form.rc")" = 1 ] && grep -qxF "ERROR: codex-shield: gave up after 3 attempts over 4.2 s; last failure: upstream answered 429 Too Many Requests" "$WORK/$form.err" &&
        [ "$steps" = "$form" ] && ! grep -q Reconnecting "$WORK/$form.err"; then
        ok "Codex shows the $form form verbatim, one request, no retry"
    else
        fail "Codex shows the $form form verbatim" "exit $(cat "$WORK/$form.rc"), requests: $steps" "$(grep ERROR "$WORK/$form.err" | head -n 3 | tr '\n' '|')"
    fi
done
# what Codex shows when the proxy itself gives up: the proxy's own message, verbatim
mock_script "429,429,429,429"
: >"$WORK/proxy2.log"
(cd "$WORK" && PORT=0 HOST=127.0.0.1 RETRY_ATTEMPTS=2 RETRY_WAIT_SECONDS=0.05 exec "$PROXY_BIN") </dev/null 2>"$WORK/proxy2.log" &
started_pids+=($!)
for _ in $(seq 1 100); do
    P2="$(sed -n 's|.*listening on http://[^ ]*:\([0-9][0-9]*\).*|\1|p' "$WORK/proxy2.log" | head -n 1)"
    [ -n "$P2" ] && break
    sleep 0.1
done
render_profile "$WORK/codex-home-giveup" "$P2"
CODEX_HOME="$WORK/codex-home-giveup" CODEX_SHIELD_API_KEY=client-placeholder \
    run_codex "$WORK/giveup-proxy" "$CODEX" --profile codex-shield exec --skip-git-repo-check --ephemeral -s read-only "hi"
giveup_line="$(grep '^ERROR' "$WORK/giveup-proxy.err" | tail -n 1)"
if grep -q '^ERROR: codex-shield: upstream failed 2 attempt(s) over .*429' "$WORK/giveup-proxy.err" &&
    ! grep -q 'exceeded retry limit' "$WORK/giveup-proxy.err"; then
    ok "when the proxy gives up, Codex prints its message: ${giveup_line:0:100}"
else
    fail "Codex prints the proxy's give-up message" "$giveup_line"
fi
kill -TERM "${started_pids[-1]}" 2>/dev/null || true
wait "${started_pids[-1]}" 2>/dev/null || true

# progress: exec prints the answer only
mock_script "progress"
direct "$WORK/progress" -m gpt-5.5
if grep -qF "$ANSWER" "$WORK/progress.out" && [ "$(cat "$WORK/progress.rc")" = 0 ] && ! grep -q "retrying in" "$WORK/progress.out" "$WORK/progress.err"; then
    ok "codex exec: progress events and keep-alives add nothing to the output"
else
    fail "codex exec with progress events" "exit $(cat "$WORK/progress.rc")" "$(tail -n 5 "$WORK/progress.err" | tr '\n' '|')"
fi
# the openai SDK: why keep-alive and progress data events are for Codex only
if MOCK_URL="$MOCK" timeout 120 "$VENV/bin/python" "$E2E/sdk_codex_forms.py" >"$WORK/sdkforms.out" 2>&1; then
    ok "openai SDK vs the Codex-only forms: $(grep -c '^ok' "$WORK/sdkforms.out") cases as documented"
else
    fail "openai SDK vs the Codex-only forms" "$(tr '\n' '|' <"$WORK/sdkforms.out" | tail -c 1500)"
fi

# --- 6. the TUI under tmux -------------------------------------------------------------
if ! command -v tmux >/dev/null 2>&1; then
    log "tmux is missing; installing it"
    apt-get install -y tmux >&2 || { apt-get update >&2 && apt-get install -y tmux >&2; }
fi
TMUX_SOCKET="$WORK/tmux.sock"
tui() { tmux -S "$TMUX_SOCKET" "$@"; }
screen() { tui capture-pane -p -t "$1" 2>/dev/null | grep -v '^[[:space:]]*$' | grep -v '⣿' || true; }
wait_screen() { # wait_screen SESSION REGEX SECONDS: 0 once the screen matches
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        screen "$1" | grep -qE "$2" && return 0
        sleep 0.1
    done
    return 1
}
type_line() { # type_line SESSION TEXT: type, then Enter (again if the composer still holds the text)
    tui send-keys -t "$1" -l "$2"
    sleep 1
    tui send-keys -t "$1" Enter
    wait_screen "$1" 'Ask Codex to do anything' 3 || tui send-keys -t "$1" Enter
}
tui_start() { # tui_start SESSION COMMAND...: in the scratch project, wrapper env, a 150x45 terminal
    local name="$1"
    shift
    printf '%q ' "$@" >"$WORK/$name.cmd"
    tui new-session -d -s "$name" -x 150 -y 45 -c "$WORK/project" \
        "env -u OPENAI_API_KEY $(printf '%q ' "$@"); echo EXITED-\$?; sleep 600"
}
tui_end() { tui kill-session -t "$1" 2>/dev/null || true; }
trap 'tui kill-server 2>/dev/null || true; cleanup' EXIT

# progress line in the status line, answer after it, nothing in the next request. Codex
# straight against the mock: the proxy does not stream progress events yet (the keep-alive
# head comes first); the wrapper's config dir, so that `resume --last` below finds it.
mock_script "progress,ok,ok,ok,ok"
# (the wrapper's provider id: `resume --last` lists the sessions of the current provider)
tui_start prog env CODEX_HOME="$CLIENT_CONFIG_DIR" K=client-placeholder "$CODEX" --no-daemon \
    -c 'model_provider="codex-shield"' -c 'model_providers.codex-shield.name="mock"' \
    -c "model_providers.codex-shield.base_url=\"$MOCK/v1\"" \
    -c 'model_providers.codex-shield.env_key="K"' -c 'model_providers.codex-shield.supports_websockets=false' \
    -m my-deployment -s read-only   # a model without Codex's "try the new model" prompt
if wait_screen prog 'Ask Codex|Try new model' 30; then
    if screen prog | grep -q 'Try new model'; then tui send-keys -t prog Down Enter; wait_screen prog 'Ask Codex' 10 || true; fi
    type_line prog "first question"
    saw_progress=no
    wait_screen prog 'retrying in 2 s \(attempt 2 of 10\)' 10 && saw_progress=yes
    wait_screen prog 'retrying in 1 s \(attempt 3 of 10\)' 10 && saw_progress="$saw_progress,yes"
    wait_screen prog 'SHIELD-OK-7431' 15 || true
    screen prog >"$WORK/prog.screen1"
    type_line prog "second question"
    wait_screen prog 'Worked for.*[[:space:]]*$' 10 || true
    sleep 1
    progress_in_history="$(mock_requests '"retrying in" in json.dumps(r["body"])' | sort -u | tr '\n' ' ')"
    second="$(mock_requests '[i.get("content", [{}])[0].get("text", "")[:15] for i in r["body"]["input"] if i.get("role") in ("user", "assistant")][-3:]' | grep -c 'second question' || true)"
    if [ "$saw_progress" = yes,yes ] && grep -q SHIELD-OK-7431 "$WORK/prog.screen1" && ! grep -q 'retrying in' "$WORK/prog.screen1" &&
        [ "$progress_in_history" = "False " ] && [ "$second" -ge 1 ]; then
        ok "TUI: progress lines shown in the status line, then the answer; not in the transcript nor the next request"
    else
        fail "TUI progress" "seen: $saw_progress, in history: $progress_in_history, second turn requests: $second" "$(tail -n 6 "$WORK/prog.screen1" | tr '\n' '|')"
    fi
else
    fail "TUI progress: Codex did not start" "$(screen prog | tail -n 5 | tr '\n' '|')"
fi
tui_end prog


# a WebSocket-first Codex (supports_websockets=true): the proxy answers the upgrade with a 426,
# the one status that makes Codex 0.169 fall back to HTTP at once (issue 11, item 6). Codex
# logs one ERROR line about the failed WebSocket connect; what matters is no reconnect loop.
mock_script "ok"
ws_start=$SECONDS
CODEX_SHIELD_LOG="$WORK/ws-proxy.log" run_codex "$WORK/ws" "$WRAP" exec -c 'model_providers.codex-shield.supports_websockets=true' \
    --skip-git-repo-check --ephemeral -s read-only "Reply with the magic words."
ws_secs=$((SECONDS - ws_start))
upgrades="$(grep -c 'GET /v1/responses status=426' "$WORK/ws-proxy.log" || true)"
answered="$(grep -c 'POST /v1/responses status=200' "$WORK/ws-proxy.log" || true)"
if [ "$(cat "$WORK/ws.rc")" = 0 ] && grep -qF "$ANSWER" "$WORK/ws.out" && [ "${upgrades:-0}" -ge 1 ] &&
    [ "${answered:-0}" -ge 1 ] && ! grep -qE 'Reconnecting|stream disconnected|exceeded retry' "$WORK/ws.err" &&
    [ "$ws_secs" -le 20 ]; then
    ok "WebSocket-first Codex: $upgrades upgrade(s) answered 426, then the answer over HTTP in ${ws_secs}s, no reconnects"
else
    fail "WebSocket-first Codex falls back at once" "exit $(cat "$WORK/ws.rc"), upgrades answered 426: $upgrades, POSTs answered: $answered, ${ws_secs}s" "$(notices "$WORK/ws.err" | head -n 3 | tr '\n' '|')"
fi

# the user's own profile and config: chatgpt.sh adds only -c overrides and --no-daemon
printf 'model_reasoning_effort = "low"\n' >"$CLIENT_CONFIG_DIR/mine.config.toml"
for args in "--profile mine exec" "exec -p mine"; do
    mock_script "ok"
    # shellcheck disable=SC2086  # the words of $args are separate arguments
    run_codex "$WORK/prof" "$WRAP" $args --skip-git-repo-check --ephemeral -s read-only "Reply with the magic words."
    if grep -qF "$ANSWER" "$WORK/prof.out" && grep -q '^provider: codex-shield' "$WORK/prof.err" && grep -q '^reasoning effort: low' "$WORK/prof.err"; then
        ok "chatgpt $args NAME: the user's profile applies, the proxy answers"
    else
        fail "chatgpt $args NAME" "exit $(cat "$WORK/prof.rc")" "$(grep -iE 'error|provider|effort' "$WORK/prof.err" | head -n 4 | tr '\n' '|')"
    fi
done
printf 'model_reasoning_effort = "high"\n\n[profiles.old]\nmodel = "o3"\n' >"$CLIENT_CONFIG_DIR/config.toml"
mock_script "ok"
run_codex "$WORK/legacy" "$WRAP" exec --skip-git-repo-check --ephemeral -s read-only "Reply with the magic words."
if grep -qF "$ANSWER" "$WORK/legacy.out" && grep -q '^reasoning effort: high' "$WORK/legacy.err"; then
    ok "a config.toml with a legacy [profiles.*] table: its settings apply, no error"
else
    fail "legacy [profiles.*] in config.toml" "$(grep -iE 'error|effort' "$WORK/legacy.err" | head -n 3 | tr '\n' '|')"
fi
rm -f "$CLIENT_CONFIG_DIR/config.toml"

# TUI with a profile: no "shared background server" warning (read every startup warning)
mock_script "ok"
tui_start prof "$WRAP" --profile mine -s read-only
wait_screen prof 'Ask Codex|Try new model' 30 || true
screen prof | grep -q 'Try new model' && { tui send-keys -t prof Down Enter; wait_screen prof 'Ask Codex' 10 || true; }
warnings=""
if screen prof | grep -q 'warning'; then
    tui send-keys -t prof F2
    for _ in 1 2 3 4; do
        sleep 0.5
        warnings+="$(screen prof | sed -n '/Warnings ·/,$p')"
        tui send-keys -t prof Right
    done
fi
if screen prof | grep -q 'Ask Codex\|Warnings' && ! grep -q 'background server' <<<"$warnings"; then
    ok "TUI through chatgpt.sh --profile mine: no 'shared background server' warning"
else
    fail "TUI background-server warning" "$(grep -o 'Running without[^.]*' <<<"$warnings" | head -n 1)"
fi
tui_end prof

# the client config: refreshed when the template changes, unless edited (said once)
rm -f "$PROFILE"
run_codex "$WORK/fresh" "$WRAP" --version   # a fresh, unedited copy
sed -i '1s/^# codex-shield-template: [^ ]* /# codex-shield-template: 0000 /' "$PROFILE"   # as if from an older template
run_codex "$WORK/refresh" "$WRAP" --version
if grep -q "updated $PROFILE" "$WORK/refresh.err" && [ "$(tail -n +2 "$PROFILE")" = "$(sed "s/__CODEX_SHIELD_PORT__/8888/g" "$ROOT/config_template.toml")" ]; then
    ok "an unedited client config from an older template is refreshed (and said)"
else
    fail "client config refresh" "$(tr '\n' '|' <"$WORK/refresh.err")" "$(head -n 1 "$PROFILE")"
fi
sed -i '1s/^# codex-shield-template: [^ ]* /# codex-shield-template: 0000 /' "$PROFILE"
echo 'model = "mine"' >>"$PROFILE"
edited="$(cksum <"$PROFILE")"
run_codex "$WORK/edited1" "$WRAP" --version
run_codex "$WORK/edited2" "$WRAP" --version
if [ "$edited" = "$(cksum <"$PROFILE")" ] && [ "$(grep -c 'was edited, so it was not updated' "$WORK/edited1.err")" = 1 ] && ! grep -q "$PROFILE" "$WORK/edited2.err"; then
    ok "an edited client config is kept; the template change is said once"
else
    fail "edited client config" "1st: $(tr '\n' '|' <"$WORK/edited1.err")" "2nd: $(tr '\n' '|' <"$WORK/edited2.err")"
fi
# the unmarked file of earlier wrappers (template a00eebf) counts as unedited
git -C "$ROOT" show a00eebf:config_template.toml 2>/dev/null | sed 's/__CODEX_SHIELD_PORT__/8888/g' >"$PROFILE.legacy" || true
if [ -s "$PROFILE.legacy" ]; then
    mv "$PROFILE.legacy" "$PROFILE"
    run_codex "$WORK/legacyprofile" "$WRAP" --version
    if grep -q "updated $PROFILE" "$WORK/legacyprofile.err" && head -n 1 "$PROFILE" | grep -q '^# codex-shield-template: '; then
        ok "the unmarked client config of earlier wrappers is refreshed"
    else
        fail "legacy client config refresh" "$(tr '\n' '|' <"$WORK/legacyprofile.err")"
    fi
else
    rm -f "$PROFILE.legacy"
    log "no git history here: the legacy client config check is skipped"
fi

# resume through the wrapper: exec resume --last, and the TUI's resume --last (which
# lists interactive sessions only: it continues the progress session above)
mock_script "ok,ok"
run_codex "$WORK/res1" "$WRAP" exec --skip-git-repo-check -s read-only "first question"
run_codex "$WORK/res2" "$WRAP" exec --skip-git-repo-check -s read-only resume --last "second question"
hist="$(mock_requests '" | ".join(i["content"][0].get("text", "")[:15] for i in r["body"]["input"] if i.get("role") in ("user", "assistant"))' | tail -n 1)"
if grep -qF "$ANSWER" "$WORK/res2.out" && [[ "$hist" == *"first question | SHIELD-OK-7431: | second question" ]]; then
    ok "chatgpt exec resume --last: the resumed turn goes through the proxy with its history"
else
    fail "chatgpt exec resume --last" "history sent: $hist" "$(tail -n 3 "$WORK/res2.err" | tr '\n' '|')"
fi
mock_script "ok,ok,ok"
tui_start res "$WRAP" resume --last -s read-only
if wait_screen res 'second question' 30 && wait_screen res 'Ask Codex|›' 10; then
    type_line res "third question"
    wait_screen res 'Worked for' 15 || true
    sleep 1
    hist="$(mock_requests '" | ".join(i["content"][0].get("text", "")[:15] for i in r["body"]["input"] if i.get("role") in ("user", "assistant"))' | grep 'third question' | head -n 1 || true)"
    if [[ "$hist" == *"second question | SHIELD-OK-7431: | third question" ]]; then
        ok "chatgpt resume --last (TUI): the old conversation is shown and continues through the proxy"
    else
        fail "chatgpt resume --last (TUI)" "history sent: $hist" "$(screen res | tail -n 5 | tr '\n' '|')"
    fi
else
    fail "chatgpt resume --last (TUI): no old conversation" "$(screen res | tail -n 5 | tr '\n' '|')"
fi
tui_end res

# the same through chatgpt.sh and its proxy: the shield's own progress line while it waits
# out two 429s (retry-after: 1), then the answer alone
mock_script "429,429,ok,ok"
tui_start shieldprog "$WRAP" -m my-deployment -s read-only
if wait_screen shieldprog 'Ask Codex|Try new model' 30; then
    screen shieldprog | grep -q 'Try new model' && { tui send-keys -t shieldprog Down Enter; wait_screen shieldprog 'Ask Codex' 10 || true; }
    type_line shieldprog "shielded question"
    seen=no
    wait_screen shieldprog 'codex-shield: upstream 1 rate-limited \(429\); retrying in' 10 && seen=yes
    wait_screen shieldprog 'SHIELD-OK-7431' 15 || true
    screen shieldprog >"$WORK/shieldprog.screen"
    if [ "$seen" = yes ] && grep -q SHIELD-OK-7431 "$WORK/shieldprog.screen" &&
        ! grep -q 'retrying in' "$WORK/shieldprog.screen" && ! grep -q Reconnecting "$WORK/shieldprog.screen"; then
        ok "TUI through chatgpt.sh: the shield's progress line while it retries, then the answer alone"
    else
        fail "TUI through chatgpt.sh: progress line" "seen: $seen" "$(tail -n 8 "$WORK/shieldprog.screen" | tr '\n' '|')"
    fi
else
    fail "TUI through chatgpt.sh: Codex did not start" "$(screen shieldprog | tail -n 5 | tr '\n' '|')"
fi
tui_end shieldprog

# Ctrl-C in the TUI is Codex's own: the first interrupts the turn, Codex stays; two quit it
mock_script "slow,slow,ok,ok"
tui_start int "$WRAP" -m my-deployment -s read-only
wait_screen int 'Ask Codex|Try new model' 30 || true
screen int | grep -q 'Try new model' && { tui send-keys -t int Down Enter; wait_screen int 'Ask Codex' 10 || true; }
type_line int "slow question"
wait_screen int 'esc to interrupt' 10 || true
tui send-keys -t int C-c
interrupted=no
wait_screen int 'Conversation interrupted' 10 && screen int | grep -q 'Ask Codex' && interrupted=yes
alive="$(proxy_pids)"
exited=no
for _ in 1 2 3 4 5 6; do   # Ctrl-C until Codex quits (it asks for a second one)
    tui send-keys -t int C-c
    wait_screen int 'EXITED-' 1 && { exited="$(screen int | grep -o 'EXITED-[0-9]*')"; break; }
done
if [ "$interrupted" = yes ] && [ "$alive" != "$before" ] && [ "$exited" = EXITED-0 ] && no_leftover; then
    ok "TUI Ctrl-C: turn interrupted, Codex and its proxy stay; Ctrl-C twice quits ($exited), proxy stopped"
else
    fail "TUI Ctrl-C" "interrupted: $interrupted, proxy during session: ${alive:-none}, exit: $exited, leftovers: $(proxy_pids)" "$(screen int | tail -n 4 | tr '\n' '|')"
fi
tui_end int

CODEX_SHIELD_BIN="$PROXY_BIN" bash "$E2E/adapter.sh" && ok "adapter: Codex and the SDK on chat-only upstreams (tests/e2e/adapter.sh)" || fail "adapter: tests/e2e/adapter.sh"
CODEX_SHIELD_BIN="$PROXY_BIN" bash "$E2E/chatclients.sh" && ok "chat SDK clients on a Responses-only upstream (tests/e2e/chatclients.sh)" || fail "chat clients: tests/e2e/chatclients.sh"
CODEX_SHIELD_BIN="$PROXY_BIN" bash "$E2E/wrapper.sh" && ok "chatgpt.sh through pipes, and nothing left behind (tests/e2e/wrapper.sh)" || fail "chatgpt.sh: tests/e2e/wrapper.sh"
CODEX_SHIELD_BIN="$PROXY_BIN" bash "$E2E/keys.sh" && ok "Codex with a named key of CLIENT_KEYS_FILE (tests/e2e/keys.sh)" || fail "named keys: tests/e2e/keys.sh"
echo "e2e: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
CODEX_SHIELD_BIN="$PROXY_BIN" bash "$E2E/keepalive.sh"   # keepalive with Codex and the openai SDK (issue 10)
