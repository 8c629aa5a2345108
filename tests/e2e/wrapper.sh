#!/usr/bin/env bash
# tests/e2e/wrapper.sh: chatgpt.sh returns to a caller that captures its pipes, and leaves no
# temporary folder or process behind however it ends (issue 16, items 1 and 2).
#
# Self-sufficient (tests/e2e/run.sh calls it, but it runs alone too): installs the same pinned
# Codex CLI into the same cache dir as run.sh, builds the proxy unless CODEX_SHIELD_BIN names
# one, starts tests/e2e/mock_upstream.py, and runs tests/e2e/wrapper.py twice: with a fake
# client (a shell script that prints the answer: the wrapper's logic alone, quick) and with the
# real Codex CLI. The wrapper under test is $ROOT/chatgpt.sh, or CODEX_SHIELD_WRAPPER (e.g. an
# older version, to see these checks fail on it); it is copied into a private directory with
# the template and the proxy binary, so that no .env of the repo applies.
# Bounded in time; every process it starts is stopped by the EXIT trap. Network: only the npm
# registry, once, for the install.
set -euo pipefail

NAME=wrapper
# shellcheck source=tests/e2e/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

install_codex
PROXY_BIN="$(proxy_bin)"
WRAPPER_UNDER_TEST="${CODEX_SHIELD_WRAPPER:-$ROOT/chatgpt.sh}"
log "$WRAPPER_UNDER_TEST with $("$CODEX" --version) and a fake client, proxy $PROXY_BIN"

# the wrapper with what it finds next to itself
mkdir -p "$WORK/bin" "$WORK/project" "$WORK/fake" "$WORK/fake-curl"
cp "$WRAPPER_UNDER_TEST" "$WORK/bin/chatgpt.sh"
chmod +x "$WORK/bin/chatgpt.sh"
cp "$ROOT/config_template.toml" "$WORK/bin/"
ln -s "$PROXY_BIN" "$WORK/bin/codex-shield"

# the fake client: prints the answer; with FAKE_CLIENT_READY set (wrapper.py sets it), first
# says it is in its session and waits for FAKE_CLIENT_GO (a signal may end it instead)
cat >"$WORK/fake/codex" <<'SH'
#!/bin/sh
if [ -n "${FAKE_CLIENT_READY:-}" ]; then
    : >"$FAKE_CLIENT_READY"
    i=0
    while [ ! -e "$FAKE_CLIENT_GO" ] && [ "$i" -lt 600 ]; do sleep 0.05; i=$((i + 1)); done
fi
echo "SHIELD-OK-7431: the mock upstream answered after every failure."
echo "fake client: done" >&2
SH
# the health check's curl, to hold start-up: FAKE_CURL=hang waits as long as the wrapper's
# curl --max-time 2 would, FAKE_CURL=fail fails at once; either way it says it ran
cat >"$WORK/fake-curl/curl" <<'SH'
#!/bin/sh
: >"$FAKE_CURL_READY"
[ "$FAKE_CURL" = hang ] && sleep 2
exit 28
SH
chmod +x "$WORK/fake/codex" "$WORK/fake-curl/curl"

# the mock upstream, and the proxy's settings (the environment wins over any .env)
"$PYTHON" "$E2E/mock_upstream.py" --port-file "$WORK/mock.port" --max-seconds 900 2>"$WORK/mock.log" &
started_pids+=($!)
wait_for_file "$WORK/mock.port" 10 || { log "mock did not start"; cat "$WORK/mock.log" >&2; exit 1; }
MOCK="http://127.0.0.1:$(cat "$WORK/mock.port")"
export AZURE_ENDPOINT="$MOCK/v1" AZURE_API_KEY="upstream-secret-$$" UPSTREAM_AUTH=bearer
export RETRY_WAIT_SECONDS=0.05 RETRY_MAX_WAIT_SECONDS=2 RETRY_ATTEMPTS=10 RETRY_DEADLINE_SECONDS=60
export LOG_LEVEL=info FORCED_MODEL=my-deployment CODEX_SHIELD_KEEPALIVE_SECONDS=0
export CLIENT_CONFIG_DIR="$WORK/codex-home"
unset PROXY_API_KEY HOST PORT OPENAI_API_KEY OPENAI_BASE_URL OPENAI_API_BASE CODEX_SHIELD_LOG

for client in ${WRAPPER_E2E_CLIENTS:-fake codex}; do   # WRAPPER_E2E_CLIENTS=fake: the quick half alone
    if [ "$client" = fake ]; then executable="$WORK/fake/codex" timeout=15; else executable="$CODEX" timeout=60; fi
    if CLIENT_EXECUTABLE="$executable" "$PYTHON" "$E2E/wrapper.py" --wrapper "$WORK/bin/chatgpt.sh" --label "$client" \
        --proxy "$PROXY_BIN" --mock "$MOCK" --work "$WORK" --project "$WORK/project" --fake-curl-dir "$WORK/fake-curl" \
        --timeout "$timeout"; then
        ok "chatgpt.sh with the $client client: returns through pipes, leaves nothing behind"
    else
        fail "chatgpt.sh with the $client client (the FAIL lines above say which)"
    fi
done
echo "wrapper: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
