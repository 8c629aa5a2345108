#!/usr/bin/env bash
# make monitoring: a real Prometheus scrapes a running codex-shield in front of a
# fault-injecting mock (tests/monitoring/mock.py) through a known fault sequence; the values
# Prometheus's HTTP API returns must be exactly the faults the mock sent. `promtool check
# metrics` lints the real exposition. Then headless Chromium opens /status with the status
# token, the rendered page must show the same numbers, and screenshots at 1280 and 390 px
# go to target/monitoring/. Installs Debian's prometheus and chromium if missing.
# Knobs: MONITORING_RELEASE=1 (test the release build instead of the debug one),
# MONITORING_KEEP=1 (keep the temp dir with configs and logs).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
HERE=$ROOT/tests/monitoring
OUT=$ROOT/target/monitoring
START=$(date +%s)

log() { printf '[monitoring %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

TMP=$(mktemp -d /tmp/codex-shield-monitoring.XXXXXX)
PIDS=()
cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [[ "${MONITORING_KEEP:-0}" == 1 || $rc != 0 ]]; then log "logs kept in $TMP"; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ tools ---
need=()
command -v prometheus >/dev/null || need+=(prometheus)
command -v chromium >/dev/null || need+=(chromium)
for tool in curl python3; do command -v "$tool" >/dev/null || need+=("$tool"); done
if ((${#need[@]})); then
  log "installing ${need[*]} from Debian's packages"
  SUDO=""; [[ $(id -u) == 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq
  # RUNLEVEL=1: do not start the packaged prometheus service; this test runs its own
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [[ "${MONITORING_RELEASE:-0}" == 1 ]]; then
  cargo build --release --quiet --bin codex-shield
  BIN=$ROOT/target/release/codex-shield
else
  cargo build --quiet --bin codex-shield
  BIN=$ROOT/target/debug/codex-shield
fi

read -r PROXY PROM <<<"$(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s: x.bind(("127.0.0.1", 0))
print(*(x.getsockname()[1] for x in s))')"

wait_for() { # url [curl args...]
  local url=$1 i
  shift
  for ((i = 0; i < 300; i++)); do
    curl -fs -o /dev/null --max-time 1 "$@" "$url" && return 0
    sleep 0.1
  done
  return 1
}

# --------------------------------------------------------------- the run ---
# One request per group; each group ends the way the comment says.
#   429, 500, ok       -> 200 (2 failures absorbed)
#   cut, ok            -> 200 (1 absorbed)
#   error, 429, ok     -> 200 (2 absorbed)
#   503, 503, 503      -> 503 (RETRY_ATTEMPTS=3 spent: given up, reason 5xx)
#   ok                 -> 200
#   400                -> 400 (a final answer, passed through)
SCRIPT="429,500,ok,cut,ok,error,429,ok,503,503,503,ok,400"
EXPECTED_STATUSES="200 200 200 503 200 400"
KEY="pk-monitoring-$RANDOM$RANDOM"
TOKEN="st-monitoring-$RANDOM$RANDOM"

python3 "$HERE/mock.py" "$SCRIPT" --port-file "$TMP/mock.port" &
PIDS+=($!)
for _ in $(seq 100); do [[ -s $TMP/mock.port ]] && break; sleep 0.05; done
MOCK=$(cat "$TMP/mock.port") || die "mock did not start"

(cd "$TMP" && exec env -i PATH="$PATH" NO_PROXY=127.0.0.1 AZURE_ENDPOINT="http://127.0.0.1:$MOCK/v1" \
  AZURE_API_KEY=sk-upstream-monitoring HOST=127.0.0.1 PORT="$PROXY" PROXY_API_KEY="$KEY" STATUS_TOKEN="$TOKEN" \
  RETRY_ATTEMPTS=3 RETRY_WAIT_SECONDS=0.01 RETRY_MAX_WAIT_SECONDS=0.05 LOG_FORMAT=json "$BIN") \
  >"$TMP/proxy.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$PROXY/healthz" || die "proxy did not start: $(tail -3 "$TMP/proxy.log")"

mkdir -p "$TMP/prom"
cat >"$TMP/prom/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: codex-shield
    authorization:
      credentials: $TOKEN
    static_configs:
      - targets: ["127.0.0.1:$PROXY"]
YAML
prometheus --config.file="$TMP/prom/prometheus.yml" --storage.tsdb.path="$TMP/prom/data" \
  --web.listen-address="127.0.0.1:$PROM" --log.level=warn >"$TMP/prom/prometheus.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$PROM/-/ready" || die "prometheus did not start: $(tail -3 "$TMP/prom/prometheus.log")"
log "mock :$MOCK, codex-shield :$PROXY ($BIN), prometheus :$PROM"

got=""
for _ in $(echo "$EXPECTED_STATUSES"); do
  got+="$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 -H "Authorization: Bearer $KEY" \
    -H 'content-type: application/json' -d '{"model":"m","input":"hi","stream":true}' \
    "http://127.0.0.1:$PROXY/v1/responses") "
done
[[ "${got% }" == "$EXPECTED_STATUSES" ]] || die "statuses: expected $EXPECTED_STATUSES, got $got"
log "client statuses: ${got% }"

curl -fs -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PROXY/metrics" >"$TMP/metrics.txt"
promtool check metrics <"$TMP/metrics.txt" || die "promtool check metrics"
log "promtool check metrics: OK ($(grep -vc '^#' "$TMP/metrics.txt") samples)"
promtool check rules "$HERE/rules.yml" >/dev/null || die "promtool check rules"
promtool test rules "$HERE/rules_test.yml" >/dev/null || die "promtool test rules"
log "promtool: the alert rules of docs/monitoring.md (tests/monitoring/rules.yml) are valid and pass rules_test.yml"

# ------------------------------------------------------- what Prometheus saw ---
python3 - "http://127.0.0.1:$PROM" <<'PY' || die "Prometheus's values differ from the fault sequence"
import json, sys, time, urllib.parse, urllib.request

base = sys.argv[1]

def query(q):
    url = base + "/api/v1/query?" + urllib.parse.urlencode({"query": q})
    with urllib.request.urlopen(url, timeout=5) as r:
        res = json.load(r)["data"]["result"]
    return float(res[0]["value"][1]) if res else None

# wait for a scrape that saw every request
deadline = time.time() + 30
while query('sum(codex_shield_requests_total{job="codex-shield"})') != 6:
    if time.time() > deadline:
        sys.exit("Prometheus never saw the 6 requests: up=%s" % query('up{job="codex-shield"}'))
    time.sleep(0.5)

expected = [
    ('up{job="codex-shield"}', 1),
    ('codex_shield_upstream_attempts_total{outcome="429"}', 2),
    ('codex_shield_upstream_attempts_total{outcome="5xx"}', 4),
    ('codex_shield_upstream_attempts_total{outcome="cut"}', 1),
    ('codex_shield_upstream_attempts_total{outcome="in_stream_error"}', 1),
    ('codex_shield_upstream_attempts_total{outcome="final_error"}', 1),
    ('codex_shield_upstream_attempts_total{outcome="ok"}', 4),
    ('sum(codex_shield_upstream_attempts_total)', 13),
    ('sum(codex_shield_failures_absorbed_total)', 5),
    ('codex_shield_failures_absorbed_total{outcome="429"}', 2),
    ('codex_shield_requests_given_up_total{reason="5xx"}', 1),
    ('sum(codex_shield_requests_given_up_total)', 1),
    ('codex_shield_answers_delivered_total{route="responses"}', 4),
    ('codex_shield_requests_total{route="responses",status="200"}', 4),
    ('codex_shield_requests_total{route="responses",status="503"}', 1),
    ('codex_shield_requests_total{route="responses",status="400"}', 1),
    ('sum(codex_shield_retries_total)', 7),
    ('codex_shield_request_duration_seconds_count{route="responses"}', 6),
    ('codex_shield_client_hangups_total', 0),
    ('codex_shield_upstream_cooling_down{upstream="1"}', 0),
    ('count(codex_shield_build_info)', 1),
    ('codex_shield_tokens_total{upstream="1",client="-",kind="input"}', 4000),
    ('codex_shield_tokens_total{upstream="1",client="-",kind="cached_input"}', 3000),
    ('sum(codex_shield_tokens_total{kind="reasoning"})', 64),
]
bad = 0
for q, want in expected:
    got = query(q)
    ok = got == want
    bad += not ok
    print(f"  {'ok ' if ok else 'BAD'} {q} = {got} (expected {want})", file=sys.stderr)
for q in ['codex_shield_retry_wait_seconds_total > 0', 'time() - codex_shield_start_time_seconds < 600']:
    got = query(q)
    bad += got is None
    print(f"  {'ok ' if got is not None else 'BAD'} {q}", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
log "Prometheus's HTTP API returned the expected values"

# -------------------------------------------------------- /status in Chromium ---
mkdir -p "$OUT"
chrome() { # window-width args...
  local width=$1
  shift
  timeout 60 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync --hide-scrollbars \
    --user-data-dir="$(mktemp -d "$TMP/chrome.XXXXXX")" --window-size="$width" "$@" \
    "http://127.0.0.1:$PROXY/status?token=$TOKEN" 2>>"$TMP/chromium.log"
}
chrome 1280,1000 --dump-dom >"$TMP/status.html" || die "chromium --dump-dom failed: $(tail -3 "$TMP/chromium.log")"
python3 - "$TMP/status.html" <<'PY' || die "/status does not show the fault sequence's numbers"
import re, sys
dom = open(sys.argv[1]).read()
def num(id_):
    m = re.search(r'id="%s">([^<]*)<' % re.escape(id_), dom)
    return m.group(1) if m else None
expected = {"requests": "6", "delivered": "4", "absorbed": "5", "given-up": "1", "retries": "7",
            "attempts-429": "2", "attempts-5xx": "4", "attempts-ok": "4",
            "cache-upstream-1": "75.0 %", "cache-client--": "75.0 %", "discarded-upstream-1": "0"}
bad = {k: (v, num(k)) for k, v in expected.items() if num(k) != v}
rows = len(re.findall(r'<tr><td data-label="time">', dom))
if rows != 6:
    bad["recent rows"] = (6, rows)
for secret in ("pk-monitoring", "sk-upstream", "monitoring answer"):
    if secret in dom:
        bad["leak"] = secret
if bad:
    sys.exit("expected vs rendered: %s" % bad)
print("  /status shows requests=6 delivered=4 absorbed=5 given-up=1 retries=7, a 75.0 % cache hit, 6 recent rows", file=sys.stderr)
PY
chrome 1280,1100 --screenshot="$OUT/status-1280.png" >/dev/null || die "screenshot 1280"
chrome 390,1900 --force-device-scale-factor=2 --screenshot="$OUT/status-390.png" >/dev/null || die "screenshot 390"
log "screenshots: target/monitoring/status-1280.png, target/monitoring/status-390.png"

# ------------------------------------------------------------ the logs ---
grep -q '"msg":"request"' "$TMP/proxy.log" || die "no JSON request line in the proxy's log"
if grep -q -e "$TOKEN" -e "$KEY" -e sk-upstream-monitoring "$TMP/proxy.log"; then die "a key or token in the log"; fi
log "PASS in $(($(date +%s) - START)) s"
