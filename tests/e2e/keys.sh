#!/usr/bin/env bash
# tests/e2e/keys.sh: the real Codex CLI through codex-shield with a named key of
# CLIENT_KEYS_FILE (issue 21): its answer after failures, its name in the log line, on /status
# and in /metrics (never its key), a second key kept as a sha256: digest, a wrong key and a
# revoked key refused with Codex showing the proxy's 401, and the file re-read without a
# restart.
#
# Uses the pinned Codex from the cache of tests/e2e/run.sh (installs it if missing: npm only),
# $CODEX_SHIELD_BIN or a release build, and tests/e2e/mock_upstream.py on 127.0.0.1.
# Prints ok/FAIL lines and "keys: N passed, N failed"; exits 1 on any failure.
set -euo pipefail

NAME=keys
# shellcheck source=tests/e2e/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ANSWER="SHIELD-OK-7431: the mock upstream answered after every failure."

install_codex
PROXY_BIN="$(proxy_bin)"
mkdir -p "$WORK/project" "$WORK/codex-home"

# --- mock upstream and a proxy with a keys file ---------------------------------
"$PYTHON" "$E2E/mock_upstream.py" --port-file "$WORK/mock.port" --max-seconds 300 2>"$WORK/mock.log" &
started_pids+=($!)
wait_for_file "$WORK/mock.port" 10 || { log "mock did not start"; cat "$WORK/mock.log" >&2; exit 1; }
MOCK="http://127.0.0.1:$(cat "$WORK/mock.port")"
ALICE_KEY="sk-alice-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
BOB_KEY="sk-bob-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
KEYS="$WORK/client-keys"
{
    echo "# issued by tests/e2e/keys.sh"
    echo "alice: $ALICE_KEY max=4"
    echo "bob: sha256:$(printf %s "$BOB_KEY" | sha256sum | cut -d' ' -f1)"
} >"$KEYS"
chmod 600 "$KEYS"

: >"$WORK/proxy.log"
(cd "$WORK" && exec env -u PROXY_API_KEY -u STATUS_TOKEN -u FORCED_MODEL -u AZURE_ENDPOINT_2 \
    AZURE_ENDPOINT="$MOCK/v1" AZURE_API_KEY="upstream-secret-$$" UPSTREAM_AUTH=bearer \
    RETRY_WAIT_SECONDS=0.05 RETRY_MAX_WAIT_SECONDS=2 LOG_LEVEL=info CLIENT_KEYS_FILE="$KEYS" \
    PORT=0 HOST=127.0.0.1 "$PROXY_BIN") </dev/null 2>"$WORK/proxy.log" &
started_pids+=($!)
PROXY_PORT=""
for _ in $(seq 1 100); do
    PROXY_PORT="$(sed -n 's|.*listening on http://[^ ]*:\([0-9][0-9]*\).*|\1|p' "$WORK/proxy.log" | head -n 1)"
    [ -n "$PROXY_PORT" ] && break
    sleep 0.1
done
[ -n "$PROXY_PORT" ] || { log "proxy did not start:"; cat "$WORK/proxy.log" >&2; exit 1; }
PROXY="http://127.0.0.1:$PROXY_PORT"
log "mock on $MOCK, proxy on $PROXY, $("$CODEX" --version)"

# --- helpers -----------------------------------------------------------------
mock_script() { http POST "$MOCK/__script" "$1" >/dev/null; }
mock_count() { http GET "$MOCK/__log" | "$PYTHON" -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
# page PATH KEY: the body of a local page read with KEY as `api-key` (empty on an error)
page() {
    "$PYTHON" - "$PROXY$1" "$2" <<'PY' || true
import sys, urllib.request
req = urllib.request.Request(sys.argv[1], headers={"api-key": sys.argv[2]})
with urllib.request.urlopen(req, timeout=5) as r:
    sys.stdout.write(r.read().decode())
PY
}
# codex_as OUT KEY: codex exec through the proxy, sending KEY (the provider's env_key)
codex_as() {
    codex_via "$1" "$PROXY/v1" "$2" -s read-only -m gpt-5.5 "Reply with the magic words."
}
answered() { [ "$(cat "$1.rc")" = 0 ] && grep -qF "$ANSWER" "$1.out" && ! grep -qE 'Reconnecting|stream disconnected' "$1.err"; }
wait_log() { # wait_log REGEX SECONDS: 0 once the proxy's log matches
    local i
    for ((i = 0; i < $2 * 10; i++)); do grep -qE "$1" "$WORK/proxy.log" && return 0; sleep 0.1; done
    return 1
}

# --- 1. Codex with alice's key: the answer after failures, alice everywhere ------
mock_script "429,cut,ok"
codex_as "$WORK/alice" "$ALICE_KEY"
if answered "$WORK/alice"; then
    ok "Codex with alice's key answers after 429 and a cut"
else
    fail "Codex with alice's key" "exit $(cat "$WORK/alice.rc")" "$(tail -n 5 "$WORK/alice.err" | tr '\n' '|')"
fi
if wait_log 'POST /v1/responses client=alice status=200 attempts=3' 5; then
    ok "log line: $(grep -m1 -o 'POST /v1/responses client=alice status=200 attempts=3.*' "$WORK/proxy.log")"
else
    fail "alice's log line" "$(grep 'POST /v1/responses' "$WORK/proxy.log" | tail -n 3 | tr '\n' '|')"
fi
status="$(page /status "$ALICE_KEY")"
requests="$(printf '%s' "$status" | sed -n 's|.*id="client-alice-requests">\([0-9]*\)<.*|\1|p')"
if printf '%s' "$status" | grep -q '<tr id="client-alice">' && [ "${requests:-0}" -ge 1 ] &&
    printf '%s' "$status" | grep -q 'data-label="in flight">0 of 4<'; then
    ok "/status (read with alice's key) has alice's row: $requests request(s), max=4"
else
    fail "/status shows alice" "requests: '${requests}'" "$(printf '%s' "$status" | grep -o '<h2>Clients</h2>.\{0,600\}' | head -c 600)"
fi
# what alice's turns cost, as the upstream reported it (the Tokens table, by client)
input="$(printf '%s' "$status" | sed -n 's|.*id="input-client-alice">\([0-9]*\)<.*|\1|p')"
output="$(printf '%s' "$status" | sed -n 's|.*id="output-client-alice">\([0-9]*\)<.*|\1|p')"
if [ "${input:-0}" -ge 1 ] && [ "${output:-0}" -ge 1 ]; then
    ok "/status shows alice's token counts: $input input, $output output"
else
    fail "/status token counts for alice" "input: '${input}', output: '${output}'" "$(printf '%s' "$status" | grep -o '<h2>Tokens</h2>.\{0,900\}' | head -c 900)"
fi
metrics="$(page /metrics "$ALICE_KEY")"
if printf '%s\n' "$metrics" | grep -qx 'codex_shield_client_requests_total{client="alice",status_class="2xx"} [1-9][0-9]*'; then
    ok "/metrics: $(printf '%s\n' "$metrics" | grep 'client_requests_total{client="alice"')"
else
    fail "/metrics counts alice" "$(printf '%s\n' "$metrics" | grep codex_shield_client | tr '\n' '|')"
fi

# --- 2. bob's key, kept as a digest; a wrong key; no key anywhere ---------------
mock_script "ok"
codex_as "$WORK/bob" "$BOB_KEY"
if answered "$WORK/bob" && wait_log 'client=bob status=200' 5; then ok "Codex with bob's key (a sha256: line) answers, logged as bob"; else fail "Codex with bob's key" "$(tail -n 3 "$WORK/bob.err" | tr '\n' '|')"; fi
mock_script "ok"
before="$(mock_count)"
codex_as "$WORK/wrong" "sk-not-in-the-file"
if [ "$(cat "$WORK/wrong.rc")" != 0 ] && grep -q 'missing or wrong proxy API key' "$WORK/wrong.err" && [ "$(mock_count)" = "$before" ]; then
    ok "a wrong key: Codex shows the proxy's 401 ($(grep -m1 -o 'codex-shield: missing or wrong proxy API key' "$WORK/wrong.err")), nothing reaches the upstream"
else
    fail "a wrong key is refused" "exit $(cat "$WORK/wrong.rc")" "$(grep -i error "$WORK/wrong.err" | head -n 3 | tr '\n' '|')"
fi
if grep -qF -e "$ALICE_KEY" -e "$BOB_KEY" "$WORK/proxy.log" || printf '%s%s' "$status" "$metrics" | grep -qF -e "$ALICE_KEY" -e "$BOB_KEY"; then
    fail "no client key in the log, /status or /metrics"
else
    ok "no client key in the log, /status or /metrics"
fi

# --- 3. revoke alice (delete her line), no restart ------------------------------
grep -v '^alice:' "$KEYS" >"$KEYS.next" && mv "$KEYS.next" "$KEYS"
if wait_log 'CLIENT_KEYS_FILE reloaded: 1 key\(s\) in effect' 5; then
    codex_as "$WORK/revoked" "$ALICE_KEY"
    mock_script "ok"
    codex_as "$WORK/bob2" "$BOB_KEY"
    if [ "$(cat "$WORK/revoked.rc")" != 0 ] && grep -q 'missing or wrong proxy API key' "$WORK/revoked.err" && answered "$WORK/bob2"; then
        ok "alice's line deleted: her key is refused at once, bob's still works, same proxy"
    else
        fail "revoking alice" "alice exit $(cat "$WORK/revoked.rc"), bob exit $(cat "$WORK/bob2.rc")"
    fi
else
    fail "the keys file was not reloaded" "$(tail -n 5 "$WORK/proxy.log" | tr '\n' '|')"
fi

log "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
