#!/usr/bin/env bash
# make replicas: three codex-shield replicas behind nginx, a fault-injecting mock upstream,
# a few hundred Codex-like requests, and one replica stopped with SIGTERM mid-run and started
# again. Passes only if every request got a complete answer or a clear error.
#
# The replicas are containers of the image `make image` builds (podman, host network,
# 127.0.0.1 only); where podman cannot run containers they are processes of the same static
# binary (REPLICAS_MODE=process forces that). nginx (Debian's package) balances them and is
# configured as docs/deploy.md recommends for any load balancer in front of
# the proxy: a replica that refuses the connection, closes it, or answers 503 while draining
# gets the request passed to another (proxy_next_upstream ... http_503 non_idempotent; safe
# because the proxy sends nothing upstream before it answers that 503).
#
# Knobs: REPLICAS_REQUESTS (300), REPLICAS_CONCURRENCY (24), REPLICAS_SEED (13).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
REQUESTS="${REPLICAS_REQUESTS:-300}"
CONCURRENCY="${REPLICAS_CONCURRENCY:-24}"
ATTEMPTS=4
KEY="replicas-$$-$RANDOM$RANDOM"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/codex-shield-replicas.XXXXXX")"
BIN="$ROOT/target/x86_64-unknown-linux-musl/release/codex-shield"
TAG="replicas-$$"

say() { printf 'replicas: %s\n' "$*" >&2; }
die() { say "FAIL: $*"; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# shellcheck source=scripts/containers.sh
. "$ROOT/scripts/containers.sh"

command -v nginx >/dev/null 2>&1 || {
    say "installing nginx from Debian's packages"
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >&2
}

MODE="${REPLICAS_MODE:-container}"
if [ "$MODE" = container ]; then
    if need_container_tools && SMOKE=0 bash scripts/image.sh >"$WORK/image.log" 2>&1 &&
        podman_cmd run --rm --network host --no-healthcheck localhost/codex-shield:latest --version >/dev/null 2>&1; then
        IMAGE=localhost/codex-shield:latest
        say "replicas are containers of $IMAGE"
    else
        say "podman cannot run the image here ($(tail -1 "$WORK/image.log" 2>/dev/null)); replicas are processes"
        MODE=process
    fi
fi
if [ "$MODE" = process ]; then
    bash scripts/static.sh >"$WORK/static.log" 2>&1 || { cat "$WORK/static.log" >&2; die "static build"; }
fi

PIDS=()
cleanup() {
    set +e
    local signal=KILL
    [ "$MODE" = process ] && signal=TERM # a killed job makes bash print a line
    for i in 1 2 3; do stop_replica "$i" "$signal"; done
    [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    wait 2>/dev/null
    if [ "${KEEP_WORK:-0}" = 1 ]; then say "logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# --- mock upstream ---------------------------------------------------------------------------
python3 tests/e2e/mock_upstream.py --port-file "$WORK/mock.port" --max-seconds 600 2>"$WORK/mock.log" &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/mock.port" ] && break; sleep 0.1; done
MOCK="$(cat "$WORK/mock.port")"

# --- replicas --------------------------------------------------------------------------------
PORTS=("" "$(free_port)" "$(free_port)" "$(free_port)")
ENVS=(AZURE_ENDPOINT="http://127.0.0.1:$MOCK/v1" HOST=127.0.0.1 PROXY_API_KEY="$KEY"
      RETRY_ATTEMPTS="$ATTEMPTS" RETRY_WAIT_SECONDS=0.05 RETRY_MAX_WAIT_SECONDS=0.2
      IDLE_TIMEOUT_SECONDS=5 SHUTDOWN_GRACE_SECONDS=20 LOG_LEVEL=info)
declare -A REPLICA_PID

start_replica() { # $1: 1..3
    local i="$1" env_flags=()
    if [ "$MODE" = container ]; then
        for e in "${ENVS[@]}" PORT="${PORTS[$i]}"; do env_flags+=(-e "$e"); done
        podman_cmd rm -f "$TAG-$i" >/dev/null 2>&1 || true
        podman_cmd run -d --name "$TAG-$i" --network host --no-healthcheck \
            "${env_flags[@]}" "$IMAGE" >/dev/null
    else
        env -i "${ENVS[@]}" PORT="${PORTS[$i]}" "$BIN" </dev/null 2>>"$WORK/replica$i.log" &
        REPLICA_PID[$i]=$!
    fi
    for _ in $(seq 100); do
        "$BIN" --healthcheck "http://127.0.0.1:${PORTS[$i]}/healthz" 2>/dev/null && return 0
        sleep 0.1
    done
    die "replica $i did not become healthy"
}

stop_replica() { # $1: 1..3, $2: signal
    local i="$1" signal="$2"
    if [ "$MODE" = container ]; then
        podman_cmd kill --signal "$signal" "$TAG-$i" >/dev/null 2>&1 || true
        [ "$signal" = KILL ] && podman_cmd rm -f "$TAG-$i" >/dev/null 2>&1
    else
        [ -n "${REPLICA_PID[$i]:-}" ] && kill "-$signal" "${REPLICA_PID[$i]}" 2>/dev/null
    fi
    return 0
}

wait_replica() { # $1: 1..3; sets EXIT_CODE (not in a subshell: `wait` needs this shell)
    local i="$1"
    EXIT_CODE=0
    if [ "$MODE" = container ]; then
        EXIT_CODE="$(podman_cmd wait "$TAG-$i")"
        podman_cmd logs "$TAG-$i" >>"$WORK/replica$i.log" 2>&1 || true
    else
        wait "${REPLICA_PID[$i]}" || EXIT_CODE=$?
    fi
}

for i in 1 2 3; do start_replica "$i"; done
say "mock on :$MOCK, replicas on :${PORTS[1]} :${PORTS[2]} :${PORTS[3]} ($MODE)"

# --- nginx -----------------------------------------------------------------------------------
LB="$(free_port)"
mkdir -p "$WORK/nginx-tmp"
user_line=""
[ "$(id -u)" = 0 ] && user_line="user root;"
cat >"$WORK/nginx.conf" <<NGINX
$user_line
worker_processes 1;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx-tmp/body;
    proxy_temp_path $WORK/nginx-tmp/proxy;
    fastcgi_temp_path $WORK/nginx-tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx-tmp/uwsgi;
    scgi_temp_path $WORK/nginx-tmp/scgi;
    upstream shield {
        server 127.0.0.1:${PORTS[1]} max_fails=1 fail_timeout=2s;
        server 127.0.0.1:${PORTS[2]} max_fails=1 fail_timeout=2s;
        server 127.0.0.1:${PORTS[3]} max_fails=1 fail_timeout=2s;
        keepalive 32;
    }
    server {
        listen 127.0.0.1:$LB;
        client_max_body_size 32m;
        location / {
            proxy_pass http://shield;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # the proxy is silent while it buffers and retries: wait as long as it may take
            proxy_read_timeout 300s;
            proxy_connect_timeout 2s;
            # refused, closed before an answer, or 503 while draining: try another replica
            proxy_next_upstream error timeout http_503 non_idempotent;
            proxy_next_upstream_tries 3;
            add_header X-Shield-Replica \$upstream_addr always;
        }
    }
}
NGINX
nginx -p "$WORK" -c "$WORK/nginx.conf" &
PIDS+=($!)
for _ in $(seq 100); do
    "$BIN" --healthcheck "http://127.0.0.1:$LB/healthz" 2>/dev/null && break
    sleep 0.1
done

# --- load, with replica 2 stopped and started again a third of the way in --------------------
started=$(date +%s.%N)
python3 tests/replicas/load.py --port "$LB" --key "$KEY" --requests "$REQUESTS" \
    --concurrency "$CONCURRENCY" --attempts "$ATTEMPTS" --seed "${REPLICAS_SEED:-13}" \
    --progress "$WORK/progress" >"$WORK/load.out" 2>&1 &
LOAD=$!
PIDS+=($LOAD)
progress() { local n; n="$(cat "$WORK/progress" 2>/dev/null || true)"; echo "${n:-0}"; }
until [ "$(progress)" -ge $((REQUESTS / 3)) ]; do
    kill -0 "$LOAD" 2>/dev/null || break
    sleep 0.05
done
say "SIGTERM to replica 2 after $(progress) requests"
stop_replica 2 TERM
wait_replica 2
[ "$EXIT_CODE" = 0 ] || die "replica 2 exited $EXIT_CODE after SIGTERM, not 0"
drained="$(grep -o 'waiting up to [0-9.]*s for [0-9]* request(s)' "$WORK/replica2.log" | head -1 || true)"
abandoned="$(grep -c 'abandoned' "$WORK/replica2.log" || true)"
say "replica 2 exited 0 after draining: ${drained:-no request was in flight}"
[ "$abandoned" = 0 ] || die "replica 2 abandoned requests: $(grep abandoned "$WORK/replica2.log")"
start_replica 2
say "replica 2 started again after $(progress) requests"
set +e
wait "$LOAD"
load_code=$?
set -e
cat "$WORK/load.out"
if [ -s "$WORK/nginx-error.log" ]; then
    say "nginx noticed (each line is a request it passed to another replica):"
    grep -o 'upstream[^,]*, client' "$WORK/nginx-error.log" | sort | uniq -c | sed 's/^/    /' >&2 || true
fi
say "took $(python3 -c "import time; print(round(time.time() - $started, 1))") s"
[ "$load_code" = 0 ] || { KEEP_WORK=1; die "some requests were lost, cut or wrong"; }
grep -q "${PORTS[2]}" "$WORK/load.out" || die "replica 2 answered nothing"
say "ok: every request got its complete answer or a clear error, with replica 2 restarted mid-run"
