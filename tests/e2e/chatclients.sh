#!/usr/bin/env bash
# tests/e2e/chatclients.sh: real chat-completions clients through codex-shield with
# UPSTREAM_API=responses-only, on a server that speaks only the Responses API (issue 20).
#
# Installs what it needs, pinned, into the same cache as tests/e2e/run.sh: a venv with the
# `openai` SDK, langchain-openai and openai-agents; a node prefix with openai-node, the Vercel
# AI SDK (`ai`, `@ai-sdk/openai`) and zod. Uses $CODEX_SHIELD_BIN or builds the proxy. Then on
# 127.0.0.1, with tests/e2e/responses_mock.py as the upstream (404 on /chat/completions, as
# Azure answers for codex models; a 429 and a cut stream before every answer), runs each
# client's checks (tests/e2e/chatclients_py.py, tests/e2e/chatclients_node.mjs): the openai
# Python SDK, openai-node, the Vercel AI SDK's openai.chat, LangChain's ChatOpenAI, the OpenAI
# Agents SDK's OpenAIChatCompletionsModel with a two-tool agent. After each client it asks the
# mock (tests/e2e/chatclients_check.py) whether every turn came as a 429, a cut and the answer,
# and whether each tool loop's next request carried the turn's reasoning item right in front
# of its function calls and their outputs. A second proxy with REASONING_SUMMARIES=true runs
# the openai SDK and the Agents SDK again: they get the summary as `reasoning_content`.
# Prints ok/FAIL lines, the install and run times, and "chatclients: N passed, N failed";
# exits 1 on any failure.
set -euo pipefail

NAME=chatclients
# shellcheck source=tests/e2e/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
PY_PACKAGES=(openai==3.63.0 openai-agents==0.24.0 langchain-openai==1.8.1)
NODE_PACKAGES=(openai@7.60.0 ai@7.0.185 @ai-sdk/openai@4.0.126 zod@4.6.7)
CC_VENV="$CACHE/venv-chatclients-$(echo "${PY_PACKAGES[*]}" | cksum | cut -d' ' -f1)"
CC_NODE="$CACHE/node-chatclients-$(echo "${NODE_PACKAGES[*]}" | cksum | cut -d' ' -f1)"

# --- 0. install (idempotent, pinned) -------------------------------------------
start=$SECONDS
if [ ! -f "$CC_VENV/.installed" ]; then
    venv_install "$CC_VENV" "${PY_PACKAGES[@]}"
    touch "$CC_VENV/.installed"
fi
if [ ! -f "$CC_NODE/.installed" ]; then
    command -v npm >/dev/null || { log "npm is required (apt-get install -y nodejs npm)"; exit 1; }
    log "installing ${NODE_PACKAGES[*]} into $CC_NODE"
    rm -rf "$CC_NODE"
    mkdir -p "$CC_NODE"
    timeout 600 npm install --prefix "$CC_NODE" --no-audit --no-fund --loglevel=error "${NODE_PACKAGES[@]}" >&2
    touch "$CC_NODE/.installed"
fi
PROXY_BIN="$(proxy_bin)"
installed=$((SECONDS - start))
log "installs and build: ${installed}s; node $(node --version), python $("$CC_VENV/bin/python" -c 'import sys; print(sys.version.split()[0])'), proxy $PROXY_BIN"

# the node script is copied next to the packages it imports (ESM resolves from the script)
mkdir -p "$WORK/node"
ln -s "$CC_NODE/node_modules" "$WORK/node/node_modules"
cp "$E2E/chatclients_node.mjs" "$WORK/node/"

# --- 1. the Responses-only mock and the proxy in front of it -----------------------
start=$SECONDS
"$PYTHON" "$E2E/responses_mock.py" --port-file "$WORK/mock.port" --max-seconds 600 2>"$WORK/mock.log" &
started_pids+=($!)
wait_for_file "$WORK/mock.port" 10 || { log "responses mock did not start"; cat "$WORK/mock.log" >&2; exit 1; }
MOCK="http://127.0.0.1:$(cat "$WORK/mock.port")"
start_proxy() { # start_proxy NAME ENV...: a proxy on the mock with these settings, set PROXY_URL
    local logf="$WORK/$1.log" port=""
    shift
    : >"$logf"   # exists before the loop below reads it
    (cd "$WORK" && exec env -u PROXY_API_KEY -u FORCED_MODEL -u AZURE_ENDPOINT_2 -u AZURE_API_KEY_2 \
        AZURE_ENDPOINT="$MOCK/v1" AZURE_API_KEY=upstream-secret UPSTREAM_AUTH=bearer UPSTREAM_API=responses-only \
        RETRY_WAIT_SECONDS=0.05 RETRY_MAX_WAIT_SECONDS=1 LOG_LEVEL=info "$@" PORT=0 HOST=127.0.0.1 "$PROXY_BIN") \
        </dev/null 2>"$logf" &
    started_pids+=($!)
    for _ in $(seq 1 100); do
        port="$(sed -n 's|.*listening on http://[^ ]*:\([0-9][0-9]*\).*|\1|p' "$logf" | head -n 1)"
        [ -n "$port" ] && break
        sleep 0.1
    done
    [ -n "$port" ] || { log "proxy did not start:"; cat "$logf" >&2; exit 1; }
    PROXY_URL="http://127.0.0.1:$port/v1"
    export PROXY_URL
    log "proxy $PROXY_URL (${*:-defaults}) on the responses mock $MOCK"
}

# --- 2. each client, then what the upstream saw ------------------------------------
# client LABEL TURNS LOOPS COMMAND...: fresh faults, run the client's checks, then check the
# mock saw TURNS turns (each 429, cut, ok) and at least LOOPS tool loops with their reasoning
client() {
    local label="$1" turns="$2" loops="$3" out="$WORK/$1.out" begun=$SECONDS verdict
    shift 3
    http POST "$MOCK/__faults" "429,cut" >/dev/null
    if timeout 180 "$@" >"$out" 2>&1; then
        ok "$label: $(tail -n 1 "$out") in $((SECONDS - begun))s ($(grep '^ok ' "$out" | sed 's/^ok *[^:]*: //' | paste -sd ';' | sed 's/;/; /g'))"
    else
        fail "$label" "$(grep -v '^ok ' "$out" | tail -n 40 | tr '\n' '|' | tail -c 3000)"
    fi
    if verdict="$(http GET "$MOCK/__log" | "$PYTHON" "$E2E/chatclients_check.py" faults "$turns")"; then
        ok "$label, upstream: $verdict"
    else
        fail "$label, upstream: 429 and cut retried" "$verdict"
    fi
    if verdict="$(http GET "$MOCK/__log" | "$PYTHON" "$E2E/chatclients_check.py" reasoning "$loops")"; then
        ok "$label, upstream: $verdict"
    else
        fail "$label, upstream: reasoning item in front of the calls" "$verdict"
    fi
}
start_proxy proxy
client "openai Python SDK" 6 2 "$CC_VENV/bin/python" "$E2E/chatclients_py.py" openai
client "openai-node" 6 2 node "$WORK/node/chatclients_node.mjs" openai
client "Vercel AI SDK openai.chat" 6 2 node "$WORK/node/chatclients_node.mjs" vercel
client "LangChain ChatOpenAI" 4 1 "$CC_VENV/bin/python" "$E2E/chatclients_py.py" langchain
client "OpenAI Agents SDK OpenAIChatCompletionsModel" 4 2 "$CC_VENV/bin/python" "$E2E/chatclients_py.py" agents

# reasoning summaries as reasoning_content: the clients that read it get the mock's summary
start_proxy proxy-summaries REASONING_SUMMARIES=true
export SUMMARIES=1
client "openai Python SDK, REASONING_SUMMARIES" 6 2 "$CC_VENV/bin/python" "$E2E/chatclients_py.py" openai
client "OpenAI Agents SDK, REASONING_SUMMARIES" 4 2 "$CC_VENV/bin/python" "$E2E/chatclients_py.py" agents

log "installs and build ${installed}s, run $((SECONDS - start))s"
echo "chatclients: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
