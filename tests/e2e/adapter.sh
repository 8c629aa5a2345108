#!/usr/bin/env bash
# tests/e2e/adapter.sh: real clients through codex-shield with UPSTREAM_API=chat, on servers
# that speak only Chat Completions (the adapter, issue 9).
#
# Installs what it needs, pinned, into the same cache as tests/e2e/run.sh (Codex CLI from npm,
# the `openai` Python package in a venv, plus two npm packages: the MCP "everything" server and
# @dwmkerr/mock-llm, a third-party OpenAI-compatible mock server), uses $CODEX_SHIELD_BIN or
# builds the proxy, and checks on 127.0.0.1:
#   1. Codex exec on tests/e2e/chat_mock.py (404 on /responses; a scripted model that answers
#      each new turn only after a 429 and a cut stream): a plain answer with its reasoning; a
#      shell-tool round trip; an apply_patch round trip that creates a file; an MCP tool round
#      trip, both behind Codex's tool_search (a model Codex knows) and directly (a model it
#      does not); no "Reconnecting" or error in Codex's output;
#   2. the openai SDK's Responses client, streamed and not, text and tool calls;
#   3. Codex exec and the SDK on @dwmkerr/mock-llm (UPSTREAM_API=auto: the full
#      .../chat/completions endpoint picks chat).
# Prints ok/FAIL lines and "adapter: N passed, N failed"; exits 1 on any failure.
set -euo pipefail

NAME=adapter
# shellcheck source=tests/e2e/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
MCP_EVERYTHING_VERSION="2026.8.31"
MOCK_LLM_VERSION="0.1.29"
MCP_PREFIX="$CACHE/mcp-everything-$MCP_EVERYTHING_VERSION"
MOCK_LLM_PREFIX="$CACHE/mock-llm-$MOCK_LLM_VERSION"

# --- 0. install (idempotent, pinned) -------------------------------------------
install_codex
npm_install "$MCP_PREFIX" mcp-server-everything "@modelcontextprotocol/server-everything@$MCP_EVERYTHING_VERSION"
npm_install "$MOCK_LLM_PREFIX" mock-llm "@dwmkerr/mock-llm@$MOCK_LLM_VERSION"
install_openai
PROXY_BIN="$(proxy_bin)"

# --- helpers -----------------------------------------------------------------
# mock_log PYTHON-EXPRESSION: evaluate it over the chat mock's log (`log`: its entries;
# `reqs`: the chat requests; `tools(r)`, `msgs(r, role)` helpers) and print the result
mock_log() {
    http GET "$MOCK/__log" | "$PYTHON" -c '
import json, sys
log = json.load(sys.stdin)
reqs = [e["request"] for e in log if e["request"] is not None and e["path"].endswith("/chat/completions")]
tools = lambda r: [t["function"]["name"] for t in r.get("tools") or []]
msgs = lambda r, role: [m for m in r["messages"] if m["role"] == role]
calls = lambda r: [c["function"]["name"] for m in msgs(r, "assistant") for c in m.get("tool_calls") or []]
print(eval(sys.argv[1]))' "$1"
}
start_proxy() { # start_proxy NAME ENV...: start a proxy with these settings, set PROXY_PORT
    local logf="$WORK/$1.log"
    shift
    : >"$logf"   # exists before the loop below reads it (the proxy's redirection may come later)
    (cd "$WORK" && exec env -u PROXY_API_KEY -u FORCED_MODEL -u AZURE_ENDPOINT_2 -u AZURE_API_KEY_2 "$@" PORT=0 HOST=127.0.0.1 "$PROXY_BIN") </dev/null 2>"$logf" &
    started_pids+=($!)
    PROXY_PORT=""
    for _ in $(seq 1 100); do
        PROXY_PORT="$(sed -n 's|.*listening on http://[^ ]*:\([0-9][0-9]*\).*|\1|p' "$logf" | head -n 1)"
        [ -n "$PROXY_PORT" ] && return 0
        sleep 0.1
    done
    log "proxy did not start:"
    cat "$logf" >&2
    exit 1
}
# codex_exec OUT PORT MODEL PROMPT [ARGS...]: Codex exec on the proxy at PORT, in $WORK/project
codex_exec() {
    local out="$1" port="$2" model="$3" prompt="$4"
    shift 4
    codex_via "$out" "http://127.0.0.1:$port/v1" client-placeholder \
        -c show_raw_agent_reasoning=true -s workspace-write -m "$model" "$@" "$prompt"
}
notices() { grep -E 'Reconnecting|ERROR|stream disconnected|exceeded retry' "$1" || true; }
# check_codex NAME OUT WANT: exit 0, WANT in the final answer, no notice
check_codex() {
    local rc
    rc="$(cat "$2.rc")"
    if [ "$rc" = 0 ] && grep -qF -- "$3" "$2.out" && [ -z "$(notices "$2.err")" ]; then
        ok "$1"
    else
        fail "$1" "exit $rc, stdout: $(head -c 400 "$2.out" | tr '\n' '|')" \
            "notices: $(notices "$2.err" | head -n 5 | tr '\n' '|')" "stderr tail: $(tail -n 8 "$2.err" | tr '\n' '|')"
    fi
}
expect() { # expect NAME ACTUAL WANTED
    if [ "$2" = "$3" ]; then ok "$1"; else fail "$1" "got: $2" "want: $3"; fi
}
mkdir -p "$WORK/project" "$WORK/codex-home"
log "$("$CODEX" --version), openai $OPENAI_PY_VERSION, server-everything $MCP_EVERYTHING_VERSION, mock-llm $MOCK_LLM_VERSION, proxy $PROXY_BIN"

# --- 1. Codex on the scripted chat-only mock -----------------------------------
"$PYTHON" "$E2E/chat_mock.py" --port-file "$WORK/mock.port" --faults "429,cut" --max-seconds 600 2>"$WORK/mock.log" &
started_pids+=($!)
wait_for_file "$WORK/mock.port" 10 || { log "chat mock did not start"; cat "$WORK/mock.log" >&2; exit 1; }
MOCK="http://127.0.0.1:$(cat "$WORK/mock.port")"
start_proxy proxy-mock AZURE_ENDPOINT="$MOCK/v1" UPSTREAM_API=chat AZURE_API_KEY=upstream-secret \
    RETRY_WAIT_SECONDS=0.05 RETRY_MAX_WAIT_SECONDS=1 LOG_LEVEL=info
PROXY="$PROXY_PORT"
FAULTS_PER_TURN='all(s == ["429", "cut", "ok"] for s in [[e["step"] for e in log if e["turn"] == t] for t in {e["turn"] for e in log}])'
NO_RESPONSES='not any(e["path"].endswith("/responses") for e in log)'

# a. plain answer, its reasoning shown
http POST "$MOCK/__faults" "429,cut" >/dev/null
codex_exec "$WORK/plain" "$PROXY" gpt-5.5 "[[scenario:plain]] Say the plain answer."
check_codex "codex, chat upstream: plain answer after a 429 and a cut stream" "$WORK/plain" "PLAIN-ANSWER-2718"
expect "codex shows the chat reasoning_content (show_raw_agent_reasoning)" \
    "$(grep -c 'The user wants the plain answer; no tool needed.' "$WORK/plain.err")" 1
expect "plain: each turn got 429, cut, ok; nothing reached /responses" "$(mock_log "$FAULTS_PER_TURN and $NO_RESPONSES and len(log)")" 3

# b. shell tool round trip: the token is only in a file, so the answer can only quote it if Codex ran the command
TOKEN="SHELL-TOKEN-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
echo "$TOKEN" >"$WORK/project/shell-token.txt"
http POST "$MOCK/__faults" "429,cut" >/dev/null
codex_exec "$WORK/shell" "$PROXY" gpt-5.5 "[[scenario:shell]] Show me the token."
check_codex "codex, chat upstream: shell tool round trip quotes the command's output" "$WORK/shell" "DONE-shell. The tool said: $TOKEN"
expect "shell: the chat request declared exec_command, the output came back as a tool message" \
    "$(mock_log "'exec_command' in tools(reqs[-1]) and calls(reqs[-1]) == ['exec_command'] and any('$TOKEN' in m['content'] for m in msgs(reqs[-1], 'tool')) and $FAULTS_PER_TURN")" True

# c. apply_patch round trip: a custom tool, called as a function with one `input` string
http POST "$MOCK/__faults" "429,cut" >/dev/null
codex_exec "$WORK/patch" "$PROXY" gpt-5.5 "[[scenario:patch]] Create the file."
check_codex "codex, chat upstream: apply_patch round trip" "$WORK/patch" "DONE-patch."
if [ "$(cat "$WORK/project/created-by-patch.txt" 2>/dev/null)" = "$(printf 'PATCH-CONTENT-5150\nsecond line')" ]; then
    ok "apply_patch created created-by-patch.txt with the patch's content"
else
    fail "apply_patch created the file" "$(ls -la "$WORK/project")"
fi
expect "patch: apply_patch offered as a function with one string 'input'; faults before each turn" \
    "$(mock_log "[t['function']['parameters']['required'] for t in reqs[0]['tools'] if t['function']['name'] == 'apply_patch'] == [['input']] and $FAULTS_PER_TURN")" True

# d. MCP round trip with a real MCP server, for a model Codex knows (tool_search) and one it does not
# required=true: Codex waits for the server's tool list before the first turn (otherwise the
# first tool_search may run before the server is up, and find nothing)
MCP=(-c "mcp_servers.everything.command=\"$MCP_PREFIX/node_modules/.bin/mcp-server-everything\""
    -c 'mcp_servers.everything.args=["stdio"]' -c mcp_servers.everything.startup_timeout_sec=30 -c mcp_servers.everything.required=true)
# gpt-5.5: Codex defers MCP tools behind its client-run tool_search; qwen3-coder: it offers them
for model in gpt-5.5 qwen3-coder; do
    case "$model" in
        gpt-5.5) want_calls="['tool_search', 'mcp__everything__echo']" ;;
        *) want_calls="['mcp__everything__echo']" ;;
    esac
    http POST "$MOCK/__faults" "429,cut" >/dev/null
    codex_exec "$WORK/mcp-$model" "$PROXY" "$model" "[[scenario:mcp]] Echo through the MCP server." "${MCP[@]}"
    check_codex "codex ($model), chat upstream: MCP echo round trip" "$WORK/mcp-$model" "Echo: MCP-ECHO-4242"
    expect "mcp ($model): Codex ran the call on the MCP server" "$(grep -c 'mcp: everything/echo (completed)' "$WORK/mcp-$model.err")" 1
    expect "mcp ($model): the model's calls, by their chat names" "$(mock_log "calls(reqs[-1])")" "$want_calls"
    expect "mcp ($model): mcp__everything__echo offered, its result back as a tool message, faults each turn" \
        "$(mock_log "'mcp__everything__echo' in tools(reqs[-1]) and 'Echo: MCP-ECHO-4242' in msgs(reqs[-1], 'tool')[-1]['content'] and $FAULTS_PER_TURN and $NO_RESPONSES")" True
done

# --- 2. the openai SDK on the same mock -----------------------------------------
http POST "$MOCK/__faults" "429,cut" >/dev/null
if UPSTREAM=chat_mock PROXY_URL="http://127.0.0.1:$PROXY/v1" timeout 120 "$VENV/bin/python" "$E2E/adapter_sdk.py" >"$WORK/sdk.out" 2>&1; then
    ok "openai SDK, chat upstream: $(tail -n 1 "$WORK/sdk.out") (stream + create, text + tool calls)"
else
    fail "openai SDK, chat upstream" "$(tr '\n' '|' <"$WORK/sdk.out" | tail -c 1500)"
fi

# --- 3. a chat server this project did not write: @dwmkerr/mock-llm (echoes the last user message)
ML_PORT="$(free_port)"
mkdir -p "$WORK/mock-llm"
cat >"$WORK/mock-llm/mock-llm.yaml" <<'YAML'
streaming:
  chunkSize: 7
  chunkIntervalMs: 2
rules:
  - path: "/v1/chat/completions"
    method: "POST"
    match: "@"
    response:
      status: 200
      content: |
        {"id": "chatcmpl-{{timestamp}}", "object": "chat.completion", "model": "{{jmes request body.model}}",
         "choices": [{"message": {"role": "assistant", "content": "{{jmes request body.messages[-1].content}}"},
                      "finish_reason": "stop"}]}
YAML
(cd "$WORK/mock-llm" && HOST=127.0.0.1 PORT="$ML_PORT" exec "$MOCK_LLM_PREFIX/node_modules/.bin/mock-llm" --config mock-llm.yaml) \
    >"$WORK/mock-llm.log" 2>&1 &
started_pids+=($!)
for _ in $(seq 1 100); do grep -q "server running" "$WORK/mock-llm.log" && break; sleep 0.1; done
start_proxy proxy-mock-llm AZURE_ENDPOINT="http://127.0.0.1:$ML_PORT/v1/chat/completions" AZURE_API_KEY= UPSTREAM_API=auto
if grep -q "api: chat" "$WORK/proxy-mock-llm.log"; then ok "UPSTREAM_API=auto picks chat for a .../chat/completions endpoint"; else fail "auto picks chat" "$(cat "$WORK/proxy-mock-llm.log")"; fi
codex_exec "$WORK/third" "$PROXY_PORT" qwen3-coder "ECHO-THIRD-PARTY-31337 says hello"
check_codex "codex on @dwmkerr/mock-llm $MOCK_LLM_VERSION through the adapter: complete answer" "$WORK/third" "ECHO-THIRD-PARTY-31337 says hello"
if UPSTREAM=echo PROXY_URL="http://127.0.0.1:$PROXY_PORT/v1" timeout 60 "$VENV/bin/python" "$E2E/adapter_sdk.py" >"$WORK/sdk-third.out" 2>&1; then
    ok "openai SDK on @dwmkerr/mock-llm through the adapter: $(tail -n 1 "$WORK/sdk-third.out")"
else
    fail "openai SDK on @dwmkerr/mock-llm" "$(tr '\n' '|' <"$WORK/sdk-third.out" | tail -c 1500)"
fi

echo "adapter: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
