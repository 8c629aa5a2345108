#!/usr/bin/env bash
# codex-shield benchmark: floor (wrk -> nginx mock upstream), reference (wrk -> nginx
# streaming reverse proxy -> mock), the baseline build (bench/BASELINE) and the current
# build, twice (wrk -> codex-shield -> mock), all measured side by side in the same
# interleaved rounds on 127.0.0.1, against a mock that answers with Content-Length and one
# that answers chunked; plus memory, start-up, binary size and CPU cost under upstream
# failures. Figures from different runs are not comparable (other load, other day): the
# report compares with the baseline of the same run, takes the spread between the two copies
# of the current build as the noise, and lists every figure worse than the baseline by more
# than that. Prints one markdown report and writes bench/RESULTS.md. See bench/README.md.
#
# Knobs (env): BENCH_BASELINE=<git rev> (default: bench/BASELINE; "none": no baseline tier),
#   BENCH_ROUNDS=3 and BENCH_ROUND_DURATION=2 (s) for the throughput/latency and memory
#   scenarios, BENCH_DURATION=5 (s per memory/failure run), BENCH_RATE=1000 (fixed-rate req/s),
#   BENCH_STARTUP_RUNS=30, BENCH_STATIC=1 (0: don't run scripts/static.sh, report what is there),
#   BENCH_STATIC_TIER=1 (0: do not load-test the static musl binary as one more tier),
#   BENCH_LOG_LEVEL=error, BENCH_TIMEOUT=2s (wrk --timeout), BENCH_KEEP=1 (keep the temp dir with configs and logs),
#   BENCH_LONG=2000 (concurrent 10 s answers for memory per in-flight answer; 0 skips),
#   BENCH_QUICK=1 (1 s runs, for checking the script itself), BENCH_BIN=path (measure that
#   binary instead of building target/release/codex-shield). How to move bench/BASELINE: bench/README.md.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
FIX="$BENCH_DIR/fixtures"
DUR="${BENCH_DURATION:-5}"
RATE="${BENCH_RATE:-1000}"
STARTUP_RUNS="${BENCH_STARTUP_RUNS:-30}"
LOG_LEVEL_BENCH="${BENCH_LOG_LEVEL:-error}"
# wrk counts a request unanswered after this long as a timeout error (every 2 s it stays
# unanswered): shorter than a run, so that a client the server never serves shows up
TIMEOUT="${BENCH_TIMEOUT:-2s}"
WARM=1
# the load scenarios run ROUNDS times, tiers interleaved in each round, RDUR s per run; the
# report takes the median round, so a burst of background noise hits one round, not one tier
ROUNDS="${BENCH_ROUNDS:-3}"
RDUR="${BENCH_ROUND_DURATION:-2}"
if [[ "${BENCH_QUICK:-0}" == 1 ]]; then DUR=1; RDUR=1; ROUNDS=1; STARTUP_RUNS=5; fi
CMDLINE="make bench"
[[ -n "${BENCH_CMDLINE:-}" ]] && CMDLINE="$BENCH_CMDLINE"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- cleanup ---
TMP="$(mktemp -d /tmp/codex-shield-bench.XXXXXX)"
PIDS=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local p
  for p in "${PIDS[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  if [[ "${BENCH_KEEP:-0}" == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ----------------------------------------------------------- requirements ---
need_install=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need_install+=(nginx)
command -v wrk >/dev/null 2>&1 || need_install+=(wrk)
command -v python3 >/dev/null 2>&1 || need_install+=(python3)
command -v curl >/dev/null 2>&1 || need_install+=(curl)
# perf: syscalls, context switches and CPU per request (the per-request table)
command -v perf >/dev/null 2>&1 || need_install+=(linux-perf)
if ((${#need_install[@]})); then
  log "installing ${need_install[*]} from Debian's packages"
  SUDO=""; [[ $(id -u) == 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  # (the bench never uses the system nginx service: its own configs, pid files and ports)
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $SUDO apt-get install -y -qq "${need_install[@]}" >/dev/null
fi
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
export PATH="$PATH:/usr/sbin"

[[ -s "$FIX/responses.sse" && -s "$FIX/responses_1mb.sse" && -s "$FIX/chat.sse" && -s "$FIX/chat_1mb.sse" ]] \
  || python3 "$BENCH_DIR/gen_fixtures.py" >/dev/null

BIN="$ROOT/target/release/codex-shield"
BUILD_NOTE=""
if [[ -n "${BENCH_BIN:-}" ]]; then # measure another binary (e.g. an older build) instead
  BIN="$BENCH_BIN"
  log "using BENCH_BIN=$BIN (no build)"
else
  log "cargo build --release"
fi
if [[ -z "${BENCH_BIN:-}" ]] && ! (cd "$ROOT" && cargo build --release --quiet) >"$TMP/build.log" 2>&1; then
  BUILD_NOTE="cargo build --release failed: $(grep -m1 -E '^error' "$TMP/build.log" || tail -1 "$TMP/build.log")"
  log "$BUILD_NOTE (codex-shield rows will be n/a)"
  [[ -x "$BIN" ]] && log "NOT using the stale $BIN"
  BIN=""
fi

# the baseline: another rev built in a git worktree of its own (bench/baseline.sh), measured
# as one more tier in the same rounds
BASE_BIN="" BASE_REV="" BASE_NOTE=""
if [[ "${BENCH_BASELINE:-}" != none ]]; then
  if BASE_BIN=$(bash "$BENCH_DIR/baseline.sh" 2>"$TMP/baseline.log"); then
    BASE_REV=$(git -C "$(dirname "$BASE_BIN")/../.." log -1 --format='%h (%s)')
    log "baseline: $BASE_REV"
  else
    BASE_NOTE="no baseline: $(grep -v 'a no-op when' "$TMP/baseline.log" | tail -1 | sed 's/^\[bench [0-9:]*\] baseline: //')"
    log "$BASE_NOTE"
    BASE_BIN=""
  fi
fi

RES="$TMP/results.txt"
: >"$RES"
rec() { echo "$*" >>"$RES"; }

# --------------------------------------------------------------- static ---
MUSL_BIN="$ROOT/target/x86_64-unknown-linux-musl/release/codex-shield"
STATIC_NOTE=""
if [[ -z "${BENCH_BIN:-}" && "${BENCH_STATIC:-1}" == 1 && -f "$ROOT/scripts/static.sh" ]]; then
  # always: cargo makes it a no-op when up to date, and a stale binary would be misreported
  log "static binary: bash scripts/static.sh"
  (cd "$ROOT" && timeout 900 bash scripts/static.sh) >"$TMP/static.log" 2>&1 \
    || STATIC_NOTE="scripts/static.sh failed: $(tail -1 "$TMP/static.log")"
fi
if [[ -x "$MUSL_BIN" ]]; then
  rec "metric static_bytes=$(stat -c %s "$MUSL_BIN") static_linkage=$(file -b "$MUSL_BIN" 2>/dev/null | grep -o 'static[a-z-]* linked' | tr ' ' '_' || echo unknown)"
elif [[ -z "$STATIC_NOTE" ]]; then
  STATIC_NOTE="n/a (no scripts/static.sh and no $MUSL_BIN)"
fi


free_ports() { python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}
read -r UP REF SH3 SH4 NG1 <<<"$(free_ports 5)"

wait_http() { # url [timeout_s]
  local url=$1 t=${2:-10} i
  for ((i = 0; i < t * 50; i++)); do
    curl -s -o /dev/null --max-time 1 "$url" && return 0
    sleep 0.02
  done
  return 1
}

# CPU ticks (utime+stime) of a pid and, for nginx, its workers
cpu_ticks() {
  local total=0 p s f
  for p in "$@" $(ps -o pid= --ppid "$1" 2>/dev/null); do
    s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    s=${s##*) }
    read -r -a f <<<"$s"
    total=$((total + f[11] + f[12]))
  done
  echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)
# mock upstream's stub_status counters: "accepted_connections requests" (a subrequest, such
# as the chunked locations' empty add_after_body, is not counted as a request)
up_status() { curl -s --max-time 2 "http://127.0.0.1:$UP/_status" | awk 'NR==3 {print $1, $3}'; }
status_kb() { awk -v k="$2:" '$1==k {print $2}' "/proc/$1/status"; }

# ------------------------------------------------------------ nginx mock ---
mkdir -p "$TMP/up" "$TMP/ref"
common_http() { # prefix
  cat <<EOF
  access_log off;
  client_body_temp_path $1/body; proxy_temp_path $1/proxy; fastcgi_temp_path $1/fastcgi;
  uwsgi_temp_path $1/uwsgi; scgi_temp_path $1/scgi;
  keepalive_requests 10000000; keepalive_timeout 120s;
  sendfile on; tcp_nopush on; tcp_nodelay on;
EOF
}
cat >"$TMP/up/nginx.conf" <<EOF
# mock upstream (the floor). Static files can't be POSTed to, so every endpoint answers
# "return 405" and error_page turns that into an internal GET redirect to the fixture
# with status 200 (the request body is read and discarded, keep-alive works).
# /chunked/... and /bigchunked/... send the same bytes with Transfer-Encoding: chunked, as
# OpenAI and Azure do: an (empty) add_after_body makes nginx drop the Content-Length, and
# the file still goes out by sendfile (sub_filter or ssi would scan every byte: a third of
# the throughput).
worker_processes 1;
pid $TMP/up/nginx.pid;
events { worker_connections 8192; multi_accept on; }
http {
$(common_http "$TMP/up")
  types { } default_type text/event-stream;
  open_file_cache max=64; open_file_cache_valid 1h;
  log_format st '\$status \$uri';
  split_clients "\${request_id}" \$flaky { 50% fail; * ok; }
  map \$flaky \$flaky_stream { fail responses_failed.sse; default responses.sse; }
  server {
    listen 127.0.0.1:$UP backlog=4096;
    location = /v1/responses         { error_page 405 =200 /_f/responses.sse; return 405; }
    location = /v1/chat/completions  { error_page 405 =200 /_f/chat.sse; return 405; }
    # 1 MiB answer at 512 KB/s (nginx lets the first second through at once: ~1-2 s per
    # answer), so that all 256 answers are in flight at the same time
    location = /big/v1/responses     { error_page 405 =200 /_slow/responses_1mb.sse; return 405; }
    location = /big/v1/chat/completions { error_page 405 =200 /_slow/chat_1mb.sse; return 405; }
    location = /chunked/v1/responses        { error_page 405 =200 /_c/responses.sse; return 405; }
    location = /chunked/v1/chat/completions { error_page 405 =200 /_c/chat.sse; return 405; }
    location = /bigchunked/v1/responses     { error_page 405 =200 /_slowc/responses_1mb.sse; return 405; }
    # half of the attempts get 429
    location = /flaky/v1/responses {
      access_log $TMP/up/flaky.log st;
      default_type application/json;
      if (\$flaky = fail) {
        return 429 '{"error":{"message":"Rate limit reached. Please retry.","type":"rate_limit_error","code":"rate_limit_exceeded"}}';
      }
      error_page 405 =200 /_fl/responses.sse; return 405;
    }
    # half of the attempts get 200 with a stream that ends in response.failed (server_error)
    location = /flakystream/v1/responses {
      error_page 405 =200 /_fl/\$flaky_stream; return 405;
    }
    location = /_status { stub_status; }
    location /_f/    { internal; alias $FIX/; }
    location /_fl/   { internal; alias $FIX/; access_log $TMP/up/flaky.log st; }
    location /_slow/ { internal; alias $FIX/; limit_rate 512k; }
    location /_c/     { internal; alias $FIX/; addition_types *; add_after_body /_empty; }
    location /_slowc/ { internal; alias $FIX/; limit_rate 512k; addition_types *; add_after_body /_empty; }
    location = /_empty { internal; return 200 ""; }
  }
}
EOF
cat >"$TMP/ref/nginx.conf" <<EOF
# reference: nginx as a plain streaming reverse proxy in front of the mock
worker_processes $(nproc);
pid $TMP/ref/nginx.pid;
events { worker_connections 8192; multi_accept on; }
http {
$(common_http "$TMP/ref")
  upstream mock { server 127.0.0.1:$UP; keepalive 512; keepalive_requests 10000000; }
  server {
    listen 127.0.0.1:$REF backlog=4096;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
EOF

# the per-request reference: the same reverse proxy with one worker (one process, as the
# proxy is one process), so that CPU, syscalls and wake-ups per request compare like for like
mkdir -p "$TMP/ng1"
sed -e "s/^worker_processes .*/worker_processes 1;/" -e "s#$TMP/ref#$TMP/ng1#g" -e "s/127.0.0.1:$REF /127.0.0.1:$NG1 /" \
  "$TMP/ref/nginx.conf" >"$TMP/ng1/nginx.conf"

start_nginx() { # name
  "$NGINX" -p "$TMP/$1" -c "$TMP/$1/nginx.conf" -e "$TMP/$1/error.log" -g 'daemon off;' &
  PIDS+=($!)
  eval "${1^^}_PID=$!"
}
start_nginx up
start_nginx ref
start_nginx ng1
wait_http "http://127.0.0.1:$UP/" 10 || die "mock upstream did not start: $(cat "$TMP/up/error.log")"
wait_http "http://127.0.0.1:$REF/" 10 || die "nginx reference did not start: $(cat "$TMP/ref/error.log")"
wait_http "http://127.0.0.1:$NG1/" 10 || die "nginx 1-worker reference did not start: $(cat "$TMP/ng1/error.log")"

start_shield() { # port endpoint_path extra_env... ; sets SHIELD_PID
  local port=$1 path=$2
  shift 2
  (cd "$TMP" && exec env -i PATH="$PATH" HOME="$TMP" NO_PROXY=127.0.0.1,localhost \
    AZURE_ENDPOINT="http://127.0.0.1:$UP$path" AZURE_API_KEY=bench HOST=127.0.0.1 PORT="$port" \
    LOG_LEVEL="$LOG_LEVEL_BENCH" "$@" "${START_BIN:-$BIN}" >>"$TMP/shield-$port.log" 2>&1) &
  SHIELD_PID=$!
  PIDS+=("$SHIELD_PID")
  wait_http "http://127.0.0.1:$port/healthz" 10 || { log "codex-shield on $port not ready: $(tail -3 "$TMP/shield-$port.log")"; return 1; }
}
# wait (max 15 s) until codex-shield's /healthz reports no request in flight: wrk abandons
# its in-flight requests when a run ends, and the proxy finishes them (they would count
# against MAX_CONCURRENT in the next run)
wait_drained() { # port
  local i h
  for ((i = 0; i < 150; i++)); do
    h=$(curl -s --max-time 1 "http://127.0.0.1:$1/healthz") || h=""
    [[ $h == *'"in_flight"'* ]] || { sleep 1; return 0; } # no counter: just give it a second
    grep -q '"in_flight":[01]\b' <<<"$h" && return 0
    sleep 0.1
  done
  log "codex-shield on $1 still has requests in flight after 15 s"
}
stop_pid() {
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.05; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# ------------------------------------------------------------ sanity checks ---
# the mock's two framings: cl = Content-Length (static files), chunked = Transfer-Encoding:
# chunked (as OpenAI and Azure send), same bytes; a framing is a path prefix on the mock
declare -A PREFIX=([cl]="" [chunked]=/chunked)
check_answer() { # tier url fixture [framing the answer must have]
  local hdr="$TMP/hdr" out="$TMP/out" body="$FIX/request_responses.json"
  [[ "$2" == */chat/completions ]] && body="$FIX/request_chat.json"
  local code
  code=$(curl -s --max-time 10 -D "$hdr" -o "$out" -w '%{http_code}' -X POST \
    -H 'Content-Type: application/json' -H 'Authorization: Bearer bench' --data-binary @"$body" "$2") || code=000
  local ok=1 why=""
  [[ "$code" == 200 ]] || { ok=0; why+=" status=$code"; }
  grep -qi '^content-type: *text/event-stream' "$hdr" || { ok=0; why+=" content-type"; }
  cmp -s "$out" "$FIX/$3" || { ok=0; why+=" body differs ($(stat -c %s "$out") vs $(stat -c %s "$FIX/$3") bytes)"; }
  local cl=0 te=0
  grep -qi '^content-length:' "$hdr" && cl=1
  grep -qi '^transfer-encoding: *chunked' "$hdr" && te=1
  case ${4:-} in
    cl) ((cl && !te)) || { ok=0; why+=" not Content-Length framed"; } ;;
    chunked) ((te && !cl)) || { ok=0; why+=" not chunked"; } ;;
  esac
  if [[ $1 != floor && $1 != nginx ]] && ((!cl)); then ok=0; why+=" no Content-Length"; fi
  if ((ok)); then log "check $1 $2: OK${4:+ ($4 framed, same bytes)}"; else log "check $1 $2: FAILED$why"; rec "check tier=$1 ok=0 why=answer_check_failed:${why// /_}"; fi
}
for framing in cl chunked; do
  for tier in floor nginx; do
    port=$UP; [[ $tier == nginx ]] && port=$REF
    check_answer "$tier" "http://127.0.0.1:$port${PREFIX[$framing]}/v1/responses" responses.sse "$framing"
    check_answer "$tier" "http://127.0.0.1:$port${PREFIX[$framing]}/v1/chat/completions" chat.sse "$framing"
  done
done

# the codex-shield tiers: the current build twice (the spread between the two copies is the
# run-to-run noise), the baseline and the static musl build (what `make static` ships; on
# the Content-Length upstream only); one process per (tier, framing)
declare -A TBIN=() TPORT=() TPID=()
if [[ -n "$BIN" ]]; then TBIN[codex-shield]=$BIN; TBIN[codex-shield-again]=$BIN; fi
[[ -n "$BASE_BIN" ]] && TBIN[baseline]=$BASE_BIN
if [[ -n "$BIN" && -x "$MUSL_BIN" && -z "${BENCH_BIN:-}" && "${BENCH_STATIC_TIER:-1}" == 1 ]]; then
  TBIN[codex-shield-static]=$MUSL_BIN
fi
start_tier() { # tier framing: (re)start its process on its port
  local key=$1/$2
  [[ -n "${TPORT[$key]:-}" ]] || TPORT[$key]=$(free_ports 1)
  START_BIN=${TBIN[$1]} start_shield "${TPORT[$key]}" "${PREFIX[$2]}/v1" || return 1
  TPID[$key]=$SHIELD_PID
}
# the tiers run in this order in odd rounds and in the reverse order in even ones (so no
# tier always follows the same one), the baseline between the two copies of the current
# build, so that a drift during the round shows up in the noise figure
in_round_order() { # round tier... -> the tiers in that round's order, one a line
  local r=$1
  shift
  if ((r % 2)); then printf '%s\n' "$@"; else printf '%s\n' "$@" | tac; fi
}
TIERS_cl=(floor nginx) TIERS_chunked=(floor nginx)
for tier in codex-shield baseline codex-shield-static codex-shield-again; do
  [[ -n "${TBIN[$tier]:-}" ]] || continue
  for framing in cl chunked; do
    [[ $tier == codex-shield-static && $framing == chunked ]] && continue
    start_tier "$tier" "$framing" || continue
    declare -n tiers=TIERS_$framing
    tiers+=("$tier")
    unset -n tiers
    port=${TPORT[$tier/$framing]}
    if [[ $tier == codex-shield && $framing == cl ]]; then
      sleep 0.3
      rec "metric idle_rss_kb=$(status_kb "${TPID[$tier/$framing]}" VmRSS) threads=$(status_kb "${TPID[$tier/$framing]}" Threads)"
    fi
    check_answer "$tier" "http://127.0.0.1:$port/v1/responses" responses.sse
    [[ $framing == cl ]] && check_answer "$tier" "http://127.0.0.1:$port/v1/chat/completions" chat.sse
  done
done
SHIELD_MAIN=${TPID[codex-shield/cl]:-} SH=${TPORT[codex-shield/cl]:-}
[[ -n "$BIN" && -z "$SHIELD_MAIN" ]] && BUILD_NOTE="codex-shield did not become ready on /healthz"
sleep 0.3
[[ -n "${TPID[codex-shield-static/cl]:-}" ]] && rec "metric static_idle_rss_kb=$(status_kb "${TPID[codex-shield-static/cl]}" VmRSS)"
[[ -n "${TPID[baseline/cl]:-}" ]] && rec "metric baseline_idle_rss_kb=$(status_kb "${TPID[baseline/cl]}" VmRSS)"

# a codex-shield that vanished: record how it ended (exit status / signal) and its last words
declare -A REPORTED_DEAD=()
check_alive() { # pid where
  kill -0 "$1" 2>/dev/null && return 0
  [[ -n "${REPORTED_DEAD[$1]:-}" ]] && return 1
  REPORTED_DEAD[$1]=1
  local st=0
  wait "$1" 2>/dev/null || st=$?
  log "codex-shield (pid $1) DIED (noticed at $2): exit status $st$( ((st > 128)) && echo " (signal $((st - 128)))")"
  grep -v '^  ' "$TMP"/shield-*.log | tail -3 >&2 || true
  rec "died scenario=$2 status=$st"
  return 1
}

# ----------------------------------------------------------------- load ---
run_wrk() { # scenario tier url threads conns dur [rate] [body] [timeout]; FRAMING, ROUND, SHIELD_PID
  local sc=$1 tier=$2 url=$3 t=$4 c=$5 d=$6 rate=${7:-0} body=${8:-$FIX/request_responses.json} to=${9:-$TIMEOUT}
  local pid="" before after out
  case $tier in
    floor) pid=$UP_PID ;;
    nginx) pid=$REF_PID ;;
    *) pid=$SHIELD_PID ;;
  esac
  local st0 st1
  st0=$(up_status)
  before=$(cpu_ticks "$pid")
  out=$(BENCH_BODY="$body" BENCH_RATE="$rate" BENCH_THREADS="$t" timeout $((d + 30)) \
    wrk -t"$t" -c"$c" -d"${d}s" --timeout "$to" --latency -s "$BENCH_DIR/wrk_post.lua" "$url" 2>&1) || true
  after=$(cpu_ticks "$pid")
  st1=$(up_status)
  if [[ $tier != floor && $tier != nginx ]]; then check_alive "$pid" "$sc/$tier" || true; fi
  local line
  line=$(grep '^BENCH ' <<<"$out" | tail -1) || true
  if [[ -z "$line" ]]; then
    log "wrk failed for $sc/$tier: $(tail -3 <<<"$out")"
    rec "run scenario=$sc tier=$tier framing=${FRAMING:-cl} round=${ROUND:-1} failed=1"
    return
  fi
  rec "run scenario=$sc tier=$tier framing=${FRAMING:-cl} round=${ROUND:-1} threads=$t conns=$c rate=$rate cpu_ticks=$((after - before)) clk_tck=$CLK_TCK up_accepts=$((${st1% *} - ${st0% *} - 1)) up_requests=$((${st1#* } - ${st0#* } - 1)) ${line#BENCH }"
  log "$sc $tier: ${line#BENCH }"
}

url_of() { # tier framing path
  case $1 in
    floor) echo "http://127.0.0.1:$UP${PREFIX[$2]}$3" ;;
    nginx) echo "http://127.0.0.1:$REF${PREFIX[$2]}$3" ;;
    *) echo "http://127.0.0.1:${TPORT[$1/$2]}$3" ;;
  esac
}

log "warm-up"
for framing in cl chunked; do
  declare -n tiers=TIERS_$framing
  for tier in "${tiers[@]}"; do
    BENCH_BODY="$FIX/request_responses.json" timeout 30 wrk -t2 -c32 -d"${WARM}s" -s "$BENCH_DIR/wrk_post.lua" \
      "$(url_of "$tier" "$framing" /v1/responses)" >/dev/null 2>&1 || true
    if [[ $tier != floor && $tier != nginx ]]; then check_alive "${TPID[$tier/$framing]}" "warm-up/$tier/$framing" || true; fi
  done
  unset -n tiers
done

# scenario  framing threads conns rate path
SCENARIOS=(
  "c1 cl 1 1 0 /v1/responses"
  "chunked-c1 chunked 1 1 0 /v1/responses"
  "c32 cl 2 32 0 /v1/responses"
  "chunked-c32 chunked 2 32 0 /v1/responses"
  "c256 cl 2 256 0 /v1/responses"
  "chunked-c256 chunked 2 256 0 /v1/responses"
  "rate$RATE cl 1 32 $RATE /v1/responses"
  "chat-c32 cl 2 32 0 /v1/chat/completions"
)
for s in "${SCENARIOS[@]}"; do
  read -r sc framing t c rate path <<<"$s"
  body="$FIX/request_responses.json"
  [[ $path == */chat/completions ]] && body="$FIX/request_chat.json"
  declare -n tiers=TIERS_$framing
  for ((round = 1; round <= ROUNDS; round++)); do
    for tier in $(in_round_order "$round" "${tiers[@]}"); do
      SHIELD_PID=""
      if [[ $tier != floor && $tier != nginx ]]; then
        if ! kill -0 "${TPID[$tier/$framing]}" 2>/dev/null; then
          check_alive "${TPID[$tier/$framing]}" "before:$sc/$tier" || true
          log "restarting $tier ($framing) for $sc"
          start_tier "$tier" "$framing" || continue
        fi
        SHIELD_PID=${TPID[$tier/$framing]}
      fi
      FRAMING=$framing ROUND=$round run_wrk "$sc" "$tier" "$(url_of "$tier" "$framing" "$path")" "$t" "$c" "$RDUR" "$rate" "$body"
    done
  done
  unset -n tiers
done
# ------------------------------------------------------ per request (issue 19) ---
# The same chunked upstream and c=32 load, for nginx with one worker, the baseline and the
# current build (twice): each round runs every tier once plain (req/s, p99) and once under
# `perf stat` (task-clock, syscalls, context switches of the whole process, all threads),
# counted from just before wrk starts to just after it ends, divided by the requests served.
# (A counted tracepoint slows every syscall a little, so req/s and p99 come from the plain run.)
PERF_EVENTS=raw_syscalls:sys_enter,context-switches,task-clock
PERF_OK=0
if command -v perf >/dev/null 2>&1 && perf stat -x, -e "$PERF_EVENTS" -- true >/dev/null 2>&1; then PERF_OK=1; else
  log "perf stat unavailable (no perf, or no access to the raw_syscalls tracepoint): the per-request table will say n/a"
  rec "check tier=perf ok=0 why=perf_stat_unavailable:_the_per-request_table_is_n/a"
fi
run_perf() { # scenario tier url pids body: one wrk run with perf stat on the pids
  local sc=$1 tier=$2 url=$3 pids=$4 body=$5 out perfout="$TMP/perf.out"
  rm -f "$perfout"
  perf stat -x, -e "$PERF_EVENTS" -p "$pids" -o "$perfout" >/dev/null 2>&1 &
  local pp=$!
  sleep 0.3 # attached (an idle process adds nothing meanwhile)
  out=$(BENCH_BODY="$body" BENCH_RATE=0 BENCH_THREADS=2 timeout $((RDUR + 30)) \
    wrk -t2 -c32 -d"${RDUR}s" --timeout "$TIMEOUT" -s "$BENCH_DIR/wrk_post.lua" "$url" 2>&1) || true
  kill -INT "$pp" 2>/dev/null || true
  wait "$pp" 2>/dev/null || true
  local line n
  line=$(grep '^BENCH ' <<<"$out" | tail -1) || true
  n=$(grep -o 'requests=[0-9]*' <<<"$line" | cut -d= -f2) || n=""
  if [[ -z "$n" || ! -s "$perfout" ]]; then
    log "perf run failed for $sc/$tier"
    return
  fi
  rec "perf scenario=$sc tier=$tier round=${ROUND:-1} requests=$n $(awk -F, '
    $3 == "task-clock" {printf "task_ms=%s ", $1}
    $3 == "raw_syscalls:sys_enter" {printf "syscalls=%s ", $1}
    $3 == "context-switches" {printf "cs=%s ", $1}' "$perfout")"
}
PR_TIERS=(nginx1)
for tier in codex-shield baseline codex-shield-again; do [[ -n "${TPID[$tier/chunked]:-}" ]] && PR_TIERS+=("$tier"); done
NG1_PIDS="$NG1_PID$(ps -o pid= --ppid "$NG1_PID" | tr -d ' ' | sed 's/^/,/' | tr -d '\n')"
if ((${#PR_TIERS[@]} > 1)); then
  log "per request: ${PR_TIERS[*]}, chunked upstream, c=32"
  BENCH_BODY="$FIX/request_responses.json" timeout 30 wrk -t2 -c32 -d"${WARM}s" -s "$BENCH_DIR/wrk_post.lua" \
    "http://127.0.0.1:$NG1/chunked/v1/responses" >/dev/null 2>&1 || true
  for s in "per-responses /v1/responses request_responses.json" "per-chat /v1/chat/completions request_chat.json"; do
    read -r sc path body <<<"$s"
    for ((round = 1; round <= ROUNDS; round++)); do
      for tier in $(in_round_order "$round" "${PR_TIERS[@]}"); do
        if [[ $tier == nginx1 ]]; then
          url="http://127.0.0.1:$NG1/chunked$path" SHIELD_PID=$NG1_PID pids=$NG1_PIDS
        else
          url="http://127.0.0.1:${TPORT[$tier/chunked]}$path" SHIELD_PID=${TPID[$tier/chunked]} pids=${TPID[$tier/chunked]}
          kill -0 "$SHIELD_PID" 2>/dev/null || { check_alive "$SHIELD_PID" "$sc/$tier" || true; continue; }
          wait_drained "${TPORT[$tier/chunked]}"
        fi
        FRAMING=chunked ROUND=$round run_wrk "$sc" "$tier" "$url" 2 32 "$RDUR" 0 "$FIX/$body"
        [[ $tier == nginx1 ]] || wait_drained "${TPORT[$tier/chunked]}"
        ((PERF_OK)) && ROUND=$round run_perf "$sc" "$tier" "$url" "$pids" "$FIX/$body"
      done
    done
  done
fi

SHIELD_MAIN=${TPID[codex-shield/cl]:-}
if [[ -n "$SHIELD_MAIN" ]]; then
  sleep 1
  rec "metric rss_after_load_kb=$(status_kb "$SHIELD_MAIN" VmRSS) hwm_after_load_kb=$(status_kb "$SHIELD_MAIN" VmHWM)"
  # metrics are always on: what the proxy's own /metrics counted over the load runs
  counted=$(curl -s --max-time 5 "http://127.0.0.1:$SH/metrics" \
    | awk '/^codex_shield_requests_total\{/ {n += $2} /^codex_shield_upstream_attempts_total\{/ {a += $2} END {printf "%d %d", n, a}') || counted=""
  [[ -n "$counted" ]] && rec "metric metrics_requests=${counted% *} metrics_attempts=${counted#* }"
fi
# the load scenarios' other processes are done (the main one serves routing and translated)
for key in "${!TPID[@]}"; do
  [[ $key == codex-shield/cl ]] || stop_pid "${TPID[$key]}"
done

# --------------------------------------------------------------- memory ---
# 256 clients on a mock that sends 1 MiB answers at 512 KB/s, so that all 256 answers are in
# flight at once; the current build twice and the baseline, rounds interleaved, on each framing
MEM_TIERS=()
for tier in codex-shield baseline codex-shield-again; do [[ -n "${TBIN[$tier]:-}" ]] && MEM_TIERS+=("$tier"); done
declare -A MEM_PATH=([cl]=/big/v1 [chunked]=/bigchunked/v1)
for framing in cl chunked; do
  ((${#MEM_TIERS[@]})) || break
  log "memory: 256 in-flight 1 MiB answers, $framing upstream (${MEM_TIERS[*]})"
  declare -A MPID=() MPORT=()
  for tier in "${MEM_TIERS[@]}"; do
    port=$(free_ports 1)
    START_BIN=${TBIN[$tier]} start_shield "$port" "${MEM_PATH[$framing]}" || continue
    MPID[$tier]=$SHIELD_PID MPORT[$tier]=$port
  done
  sleep 0.3
  for tier in "${!MPID[@]}"; do
    rec "metric mem_idle=1 tier=$tier framing=$framing idle_kb=$(status_kb "${MPID[$tier]}" VmRSS)"
  done
  for ((round = 1; round <= ROUNDS; round++)); do
    for tier in $(in_round_order "$round" "${MEM_TIERS[@]}"); do
      [[ -n "${MPID[$tier]:-}" ]] || continue
      pid=${MPID[$tier]} port=${MPORT[$tier]}
      wait_drained "$port"
      echo 0 >"$TMP/inflight"
      # sample how many upstream answers are really in flight at once (established
      # connections from this codex-shield to the mock), every 50 ms during the run
      (max=0; while :; do
        n=$(ss -Htnp state established "( dport = :$UP )" 2>/dev/null | grep -c "pid=$pid,") || n=0
        ((n > max)) && { max=$n; echo "$max" >"$TMP/inflight"; }
        sleep 0.05
      done) &
      SAMPLER=$!
      PIDS+=("$SAMPLER")
      SHIELD_PID=$pid FRAMING=$framing ROUND=$round run_wrk "mem-$framing" "$tier" \
        "http://127.0.0.1:$port/v1/responses" 2 256 "$((DUR < 3 ? 3 : DUR))" 0 "" 10s
      kill "$SAMPLER" 2>/dev/null || true
      wait "$SAMPLER" 2>/dev/null || true
      wait_drained "$port"
      rec "metric mem_round=$round tier=$tier framing=$framing hwm_kb=$(status_kb "$pid" VmHWM) rss_after_kb=$(status_kb "$pid" VmRSS) max_inflight=$(cat "$TMP/inflight")"
    done
  done
  for pid in "${MPID[@]}"; do stop_pid "$pid"; done
  unset MPID MPORT
done

if [[ -n "$BIN" ]]; then
  # ------------------------------------------------------ cost under failure ---
  for mode in flaky flakystream; do
    log "failure cost: $mode"
    : >"$TMP/up/flaky.log"
    if start_shield "$SH3" "/$mode/v1" RETRY_WAIT_SECONDS=0.001 RETRY_MAX_WAIT_SECONDS=0.01 RETRY_ATTEMPTS=40; then
      FP=$SHIELD_PID
      run_wrk "fail-$mode" codex-shield-$mode "http://127.0.0.1:$SH3/v1/responses" 2 32 "$DUR"
      stop_pid "$FP"
      # counts of upstream attempts by outcome
      ups_429=$(grep -c '^429 ' "$TMP/up/flaky.log" || true)
      ups_failed=$(grep -c 'responses_failed.sse' "$TMP/up/flaky.log" || true)
      ups_ok=$(grep -c ' /_fl/responses.sse' "$TMP/up/flaky.log" || true)
      rec "metric fail_mode=$mode ups_429=$ups_429 ups_failed_stream=$ups_failed ups_ok=$ups_ok"
    fi
    SH3=$SH4
  done

  # ------------------------------------------------------------ start-up ---
  log "start-up x$STARTUP_RUNS"
  rec "metric $(python3 "$BENCH_DIR/startup.py" "$BIN" "$STARTUP_RUNS" "http://127.0.0.1:$UP/v1" "$TMP" | sed 's/^STARTUP /startup_/; s/ / startup_/g')"
  rec "metric release_bytes=$(stat -c %s "$BIN")"
fi

# ------------------------------------------- routing: 1 vs 3 upstreams ---
if [[ -n "$BIN" ]]; then source "$BENCH_DIR/routing.sh"; fi
# ------------------------------------------------- translated path (issue 9) ---
# A Responses client on a chat-only upstream (UPSTREAM_API=chat, picked by `auto` for a full
# .../chat/completions endpoint): the same chat.sse answer as the Chat Completions pass-through,
# translated into a Responses stream. Rounds interleave three codex-shield tiers, so the
# translation's cost is the translated row minus the chat pass-through row.
if [[ -n "$BIN" && -n "$SHIELD_MAIN" ]]; then
  read -r SHT SHT2 SHR <<<"$(free_ports 3)"
  # the other direction (issue 20): a chat client on a Responses-only upstream, the same
  # responses.sse answer as the Responses pass-through translated into a chat stream
  REV_PID=""
  if start_shield "$SHR" /v1 UPSTREAM_API=responses-only; then
    REV_PID=$SHIELD_PID
    rcode=$(curl -s --max-time 10 -o "$TMP/reverse.sse" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
      --data-binary @"$FIX/request_chat.json" "http://127.0.0.1:$SHR/v1/chat/completions") || rcode=000
    if [[ $rcode != 200 ]] || ! grep -q '^data: \[DONE\]' "$TMP/reverse.sse" || ! grep -q 'chat.completion.chunk' "$TMP/reverse.sse"; then
      log "check codex-shield-chat-on-responses: FAILED (status $rcode)"
      rec "check tier=codex-shield-chat-on-responses ok=0 why=no_chat_stream_(status_$rcode)"
    fi
    rec "metric reverse_answer_bytes=$(stat -c %s "$TMP/reverse.sse") reverse_responses_bytes=$(stat -c %s "$FIX/responses.sse")"
  else
    log "no chat-on-Responses tier: this build does not start with UPSTREAM_API=responses-only"
  fi
  if start_shield "$SHT" /v1/chat/completions; then
    TRANS_PID=$SHIELD_PID
    sleep 0.3
    rec "metric translate_idle_rss_kb=$(status_kb "$TRANS_PID" VmRSS)"
    tcode=$(curl -s --max-time 10 -o "$TMP/translated.sse" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
      --data-binary @"$FIX/request_responses.json" "http://127.0.0.1:$SHT/v1/responses") || tcode=000
    if [[ $tcode != 200 ]] || ! grep -q '^event: response.completed' "$TMP/translated.sse"; then
      log "check codex-shield-translated: FAILED (status $tcode)"
      rec "check tier=codex-shield-translated ok=0 why=no_response.completed_(status_$tcode)"
    fi
    rec "metric translate_answer_bytes=$(stat -c %s "$TMP/translated.sse") translate_chat_bytes=$(stat -c %s "$FIX/chat.sse")"
    for s in "translate-c1 1 1" "translate-c32 2 32"; do
      read -r sc t c <<<"$s"
      for ((round = 1; round <= ROUNDS; round++)); do
        SHIELD_PID=$SHIELD_MAIN
        ROUND=$round run_wrk "$sc" codex-shield "http://127.0.0.1:$SH/v1/responses" "$t" "$c" "$RDUR"
        ROUND=$round run_wrk "$sc" codex-shield-chat "http://127.0.0.1:$SH/v1/chat/completions" "$t" "$c" "$RDUR" 0 "$FIX/request_chat.json"
        SHIELD_PID=$TRANS_PID
        ROUND=$round run_wrk "$sc" codex-shield-translated "http://127.0.0.1:$SHT/v1/responses" "$t" "$c" "$RDUR"
        if [[ -n "$REV_PID" ]]; then
          SHIELD_PID=$REV_PID
          ROUND=$round run_wrk "$sc" codex-shield-chat-on-responses "http://127.0.0.1:$SHR/v1/chat/completions" "$t" "$c" "$RDUR" 0 "$FIX/request_chat.json"
        fi
      done
    done
    sleep 1
    rec "metric translate_rss_after_load_kb=$(status_kb "$TRANS_PID" VmRSS) translate_hwm_after_load_kb=$(status_kb "$TRANS_PID" VmHWM)"
    stop_pid "$TRANS_PID"
  fi
  [[ -n "$REV_PID" ]] && stop_pid "$REV_PID"
  log "memory: 256 in-flight 1 MiB chat answers, translated"
  if start_shield "$SHT2" /big/v1/chat/completions; then
    TBIG=$SHIELD_PID
    sleep 0.3
    rec "metric translate_big_idle_rss_kb=$(status_kb "$TBIG" VmRSS)"
    run_wrk translate-mem codex-shield-translated-1mb "http://127.0.0.1:$SHT2/v1/responses" 2 256 "$((DUR < 3 ? 3 : DUR))" 0 "" 10s
    wait_drained "$SHT2"
    rec "metric translate_big_hwm_kb=$(status_kb "$TBIG" VmHWM) translate_big_rss_after_kb=$(status_kb "$TBIG" VmRSS)"
    stop_pid "$TBIG"
  fi
fi

# ------------------------------------------ small in-flight answers (issue 19) ---
# BENCH_LONG (2000; 0 skips) concurrent answers that each take 10 s upstream, on one process:
# RSS per in-flight answer for the glibc build, the static build and the baseline, by the
# `make longstreams` load generator (examples/longstreams.rs) at one level.
LONG_N="${BENCH_LONG:-2000}"
[[ "${BENCH_QUICK:-0}" == 1 && -z "${BENCH_LONG:-}" ]] && LONG_N=200
if [[ "$LONG_N" != 0 ]] && (cd "$ROOT" && cargo build --quiet --example longstreams) >"$TMP/long-build.log" 2>&1; then
  for tier in codex-shield codex-shield-static baseline; do
    [[ -n "${TBIN[$tier]:-}" ]] || continue
    log "memory: $LONG_N concurrent 10 s answers, $tier"
    row=$( (ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"; cd "$ROOT" && \
      SHIELD_BIN="${TBIN[$tier]}" LONG_LEVELS="$LONG_N" timeout --signal=KILL 300s target/debug/examples/longstreams) 2>"$TMP/long-$tier.log" \
      | grep "^| $LONG_N |" | head -1) || true
    if [[ -z "$row" ]]; then
      log "longstreams failed for $tier: $(tail -2 "$TMP/long-$tier.log")"
      continue
    fi
    IFS='|' read -r _ n ok errors wall idle peak per threads fds cpu _ <<<"$row"
    rec "metric long=1 tier=$tier n=${n// /} ok=${ok// /} errors=${errors// /} idle_mb=${idle// /} peak_mb=${peak// /} kb_per=${per// /} threads=${threads// /}"
  done
elif [[ "$LONG_N" != 0 ]]; then
  log "examples/longstreams did not build: $(tail -1 "$TMP/long-build.log")"
fi

# --------------------------------------------------------------- report ---
CPU_MODEL=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
BENCH_DATE="$(date -u '+%Y-%m-%d %H:%M UTC')"
BENCH_NPROC="$(nproc)"
BENCH_KERNEL="$(uname -r)"
BENCH_NGINX="$("$NGINX" -v 2>&1 | sed 's/.*: //' || true)"
BENCH_WRK="$(wrk -v 2>&1 | head -1 | awk '{print $1, $2}' || true)"
BENCH_REV="$(cd "$ROOT" && { git rev-parse --short HEAD 2>/dev/null || echo uncommitted; } | tr -d '\n'; git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock vendor 2>/dev/null || echo "+local changes" || true)"
export BENCH_DATE BENCH_NPROC BENCH_CPU="$CPU_MODEL" BENCH_KERNEL BENCH_CMD="$CMDLINE" BENCH_DUR="$DUR" \
  BENCH_ROUNDS="$ROUNDS" BENCH_RDUR="$RDUR" BENCH_BUILD_NOTE="$BUILD_NOTE" BENCH_STATIC_NOTE="$STATIC_NOTE" \
  BENCH_NGINX BENCH_WRK BENCH_REV
# what the metrics calls of one request cost, in a loop (bench/metrics_cost.rs)
if [[ -z "${BENCH_BIN:-}" ]]; then
  log "metrics cost per request"
  (cd "$ROOT" && cargo run --release --quiet --example metrics_cost) >"$TMP/metrics_cost.md" 2>"$TMP/metrics_cost.log" \
    || echo "metrics_cost failed: $(tail -1 "$TMP/metrics_cost.log")" >"$TMP/metrics_cost.md"
fi
export BENCH_METRICS_COST="$TMP/metrics_cost.md"
# routing's section goes in before the report's last one (the regressions against the baseline)
export BENCH_ROUTING_MD="$TMP/routing.md" BENCH_BASE_REV="$BASE_REV" BENCH_BASE_NOTE="$BASE_NOTE"
python3 "$BENCH_DIR/report.py" "$RES" >"$TMP/RESULTS.md"
cat "$TMP/RESULTS.md"
cp "$TMP/RESULTS.md" "$BENCH_DIR/RESULTS.md"
log "wrote $BENCH_DIR/RESULTS.md"
[[ -n "$BIN" ]] || exit 1
