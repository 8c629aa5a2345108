#!/usr/bin/env bash
# Upstreams that drip (issue 17, class 4): how long does each dripping attempt live, against
# IDLE_TIMEOUT_SECONDS? A python upstream on 127.0.0.1 answers each attempt according to the
# request's model:
#   drip-event   a 200 event stream, then one byte every 0.5 s of one event that never ends
#   drip-lines   a 200 event stream, then "x" and a line end in turn (lines that make no event)
#   drip-head    a status line, then one header line every 0.5 s (the head never ends)
# and reports, per connection, how long it lived until the proxy closed it. Every attempt
# must end within 2 x IDLE_TIMEOUT_SECONDS plus a little; a client that leaves must take its
# attempt with it within a few seconds, even with a long IDLE_TIMEOUT_SECONDS.
#
# Usage: tests/torture/upstream.sh   (BIN=path/to/codex-shield to test another build)
# Exits non-zero on a miss. Takes about 20 s (40 s when every attempt misses).
set -euo pipefail

BIN=${BIN:-target/release/codex-shield}
IDLE=2
# The upstream sees a close at its second write after it (0.5 s apart), and a head or an
# event starts a moment after the request: 2 s of slack.
SLACK=2
[[ -x $BIN ]] || { echo "no executable at $BIN (cargo build --release, or set BIN)" >&2; exit 2; }

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/upstream.py" <<'PY'
import json, socket, sys, threading, time

DRIP, HOLD = 0.5, 10.0
SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
EVENT = b'data: {"type":"response.output_text.delta","delta":"'

def chunk(b):
    return b"%x\r\n%s\r\n" % (len(b), b)

def drips(mode):
    if mode == "drip-head":
        yield b"HTTP/1.1 200 OK\r\n"
        i = 0
        while True:
            yield b"x-drip-%d: one line at a time\r\n" % i
            i += 1
    yield SSE_HEAD
    if mode == "drip-lines":
        while True:
            yield chunk(b"x")
            yield chunk(b"\n")
    for b in EVENT:
        yield chunk(bytes([b]))
    while True:
        yield chunk(b"a")

def read_request(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        more = conn.recv(65536)
        if not more:
            return None
        data += more
    head, body = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        more = conn.recv(65536)
        if not more:
            break
        body += more
    try:
        return json.loads(body).get("model", "drip-event")
    except ValueError:
        return "drip-event"

def serve(conn, out):
    mode = read_request(conn)
    if mode is None:
        return
    started = time.monotonic()
    lived = None
    for piece in drips(mode):
        try:
            conn.sendall(piece)
        except OSError:
            lived = time.monotonic() - started
            break
        if time.monotonic() - started > HOLD:
            break
        time.sleep(DRIP)
    conn.close()
    out.write("%s %s\n" % (mode, "held" if lived is None else "%.2f" % lived))
    out.flush()

def main():
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    with open(sys.argv[1], "w") as f:
        f.write(str(listener.getsockname()[1]))
    out = open(sys.argv[2], "a")
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve, args=(conn, out), daemon=True).start()

main()
PY

python3 "$work/upstream.py" "$work/upstream.port" "$work/lived" </dev/null >/dev/null &
pids+=($!)
for _ in $(seq 100); do [[ -s $work/upstream.port ]] && break; sleep 0.05; done
upstream_port=$(cat "$work/upstream.port")

# Start a proxy in front of the dripping upstream with IDLE_TIMEOUT_SECONDS=$1; sets $proxy
# to its port.
start_proxy() {
    local log=$work/proxy-$1.log
    env -i PATH="$PATH" AZURE_ENDPOINT="http://127.0.0.1:$upstream_port/v1" \
        AZURE_API_KEY=sk-torture-SECRET-0123456789 PORT=0 IDLE_TIMEOUT_SECONDS="$1" \
        RETRY_ATTEMPTS=1 LOG_LEVEL=debug \
        "$BIN" </dev/null >/dev/null 2>"$log" &
    pids+=($!)
    for _ in $(seq 200); do
        proxy=$(sed -n 's/.*listening on http:\/\/[^ ]*:\([0-9]*\).*/\1/p' "$log" | head -1)
        [[ -n $proxy ]] && return
        sleep 0.05
    done
    echo "the proxy did not start:" >&2
    cat "$log" >&2
    exit 2
}

ask() { # port model [max seconds]: prints the status the client got (000: it left first)
    curl -s -o /dev/null -w '%{http_code}' --max-time "${3:-15}" \
        -H 'content-type: application/json' \
        -d "{\"model\":\"$2\",\"input\":\"hi\",\"stream\":true}" \
        "http://127.0.0.1:$1/v1/responses" || true
}

# Wait until the upstream has reported $1 connections.
wait_lived() {
    for _ in $(seq 150); do
        (($(wc -l <"$work/lived") >= $1)) && return
        sleep 0.1
    done
}

misses=0
check() { # label seconds bound
    local verdict=ok
    if [[ $2 == held ]] || ! awk -v s="$2" -v b="$3" 'BEGIN { exit !(s <= b) }'; then
        verdict=MISS
        misses=$((misses + 1))
    fi
    local shown=$2
    [[ $2 == held ]] && shown=">10"
    printf '  %-44s lived %6ss  bound %5.1fs  %s\n' "$1" "$shown" "$3" "$verdict"
}

start_proxy "$IDLE"
bound=$(awk -v i="$IDLE" -v s="$SLACK" 'BEGIN { print 2 * i + s }')
echo "IDLE_TIMEOUT_SECONDS=$IDLE, one drip every 0.5 s: each attempt must end by 2 x idle + $SLACK s (the upstream gives up at 10 s)"
seen=0
for model in drip-event drip-lines drip-head; do
    started=$(date +%s.%N)
    status=$(ask "$proxy" "$model")
    took=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    seen=$((seen + 1))
    wait_lived "$seen"
    echo "$model: client got $status after ${took}s"
    [[ $status == 504 ]] || { echo "  expected 504 upstream_timeout"; misses=$((misses + 1)); }
    while read -r mode lived; do check "attempt ($mode)" "$lived" "$bound"; done < <(tail -n 1 "$work/lived")
done

long=30
start_proxy "$long"
echo "IDLE_TIMEOUT_SECONDS=$long: the client leaves after 1 s; its attempt must end within 5 s"
ask "$proxy" drip-event 1 >/dev/null
seen=$((seen + 1))
wait_lived "$seen"
read -r mode lived < <(tail -n 1 "$work/lived")
check "attempt after the client left ($mode)" "$lived" 5.0

if grep -q sk-torture-SECRET "$work"/proxy-*.log; then
    echo "the upstream key is in the proxy's log"
    misses=$((misses + 1))
fi
if ((misses > 0)); then
    echo "FAIL: $misses miss(es)"
    exit 1
fi
echo "PASS"
