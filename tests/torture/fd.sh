#!/usr/bin/env bash
# tests/torture/fd.sh: codex-shield at the usual open-files limit of 1,024 (soft and hard, so
# its raise to the hard limit cannot lift it), against a local mock upstream: hundreds of idle
# connections, then 300 concurrent requests, then both at once. Prints what held: descriptors
# at the peak, connections turned away (503) and requests refused (503 proxy_busy), how long
# until a new request is served once the load is gone, whether the process lived and exited
# 0 on SIGTERM without a panic. Exits non-zero if any of that did not hold. About 30 s.
#
#   BIN=target/release/codex-shield tests/torture/fd.sh      (BIN defaults to that path)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${BIN:-target/release/codex-shield}"
case "$BIN" in /*) ;; *) BIN="$ROOT/$BIN" ;; esac
LIMIT="${FD_LIMIT:-1024}"
[ -x "$BIN" ] || { echo "fd.sh: no binary at $BIN (cargo build --release, or set BIN)" >&2; exit 2; }
WORK="$(mktemp -d "${TMPDIR:-/tmp}/codex-shield-fd.XXXXXX")"
pids=()
cleanup() {
    for pid in ${pids[@]+"${pids[@]}"}; do kill -KILL "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# The mock: every model request waits 3 s, then gets a complete answer (600 such steps).
steps="$(printf 'slow,%.0s' $(seq 600))ok"
python3 "$ROOT/tests/e2e/mock_upstream.py" --port-file "$WORK/mock.port" \
    --script "$steps" --max-seconds 110 >"$WORK/mock.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$WORK/mock.port" ] && break; sleep 0.05; done
MOCK_PORT="$(cat "$WORK/mock.port")"

# The proxy, under the limit; the raise is shown by a --check with only the soft limit low.
raised="$(prlimit --nofile="$LIMIT:$(ulimit -Hn)" env -i AZURE_ENDPOINT="http://127.0.0.1:$MOCK_PORT/v1" \
    "$BIN" --check 2>/dev/null | grep -E '^(RLIMIT_NOFILE|MAX_CONCURRENT) ' | tr -s ' ' || true)"
(
    ulimit -n "$LIMIT"
    exec env -i AZURE_ENDPOINT="http://127.0.0.1:$MOCK_PORT/v1" PORT=0 LOG_LEVEL=warn \
        RETRY_DEADLINE_SECONDS=20 "$BIN"
) >/dev/null 2>"$WORK/proxy.err" &
PROXY_PID=$!
pids+=("$PROXY_PID")
for _ in $(seq 100); do grep -q 'listening on' "$WORK/proxy.err" 2>/dev/null && break; sleep 0.05; done
PORT="$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$WORK/proxy.err" | head -1)"
[ -n "$PORT" ] || { echo "fd.sh: the proxy did not start"; cat "$WORK/proxy.err"; exit 1; }

set +e
python3 - "$PORT" "$PROXY_PID" "$LIMIT" <<'PY'
import json, os, socket, sys, threading, time
port, pid, limit = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
BODY = json.dumps({"model": "gpt-5-codex", "input": "hi", "stream": True}).encode()
POST = (b"POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n" % len(BODY)) + BODY
peak = [0]
bad = []

def fds():
    try:
        n = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1
    peak[0] = max(peak[0], n)
    return n

def alive():
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False

def answer(sock, limit_s=30):
    sock.settimeout(limit_s)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError as e:
        if not data:
            return "error " + type(e).__name__
    head = data.split(b"\r\n", 1)[0].split()
    return head[1].decode() if len(head) > 1 else "closed"

def hold_idle(n):
    """Open n connections and send nothing: held, turned away (503) or closed at once."""
    socks, tally = [], {"held": 0, "503": 0, "closed": 0, "connect error": 0}
    for _ in range(n):
        try:
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        except OSError:
            tally["connect error"] += 1
    time.sleep(1.0)
    fds()
    held = []
    for s in socks:
        s.setblocking(False)
        try:
            data = s.recv(64)
            tally["503" if b" 503 " in data else "closed"] += 1
            s.close()
        except BlockingIOError:
            tally["held"] += 1
            held.append(s)
        except OSError:
            tally["closed"] += 1
            s.close()
    return held, tally

def burst(n):
    """n concurrent POSTs on fresh connections: their statuses."""
    results = []
    lock = threading.Lock()
    def one():
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(POST)
            status = answer(s)
            s.close()
        except OSError as e:
            status = "error " + type(e).__name__
        with lock:
            results.append(status)
    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    sampler_stop = threading.Event()
    def sample():
        while not sampler_stop.is_set():
            fds()
            time.sleep(0.1)
    sampler = threading.Thread(target=sample)
    sampler.start()
    for t in threads:
        t.join(60)
    sampler_stop.set()
    sampler.join()
    tally = {}
    for r in results:
        tally[r] = tally.get(r, 0) + 1
    return tally

def healthz_in_flight():
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nconnection: close\r\n\r\n")
    s.settimeout(5)
    data = b""
    while True:
        c = s.recv(4096)
        if not c:
            break
        data += c
    return data

def recovery():
    """Seconds until a new connection is served (`/healthz` answers 200), and whether a
    model request then gets its answer (the mock holds it 3 s: not counted)."""
    start = time.time()
    while time.time() - start < 15:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nconnection: close\r\n\r\n")
            if answer(s, 5) == "200":
                took = time.time() - start
                s = socket.create_connection(("127.0.0.1", port), timeout=2)
                s.sendall(POST)
                return took if answer(s, 15) == "200" else None
        except OSError:
            pass
        time.sleep(0.01)
    return None

T0 = time.time()
base = fds()
print(f"descriptors: limit {limit}, {base} at start")

# 1. idle connections, far more than the limit has room for
held, tally = hold_idle(700)
print(f"700 idle connections: {tally}, descriptors {fds()}")
if tally["held"] < 345:
    bad.append(f"only {tally['held']} idle connections held (the old proxy broke at 345)")
if tally["503"] == 0:
    bad.append("no connection was turned away with a 503")
probe = burst(5)
print(f"  5 requests meanwhile: {probe}")
for s in held:
    s.close()
took = recovery()
print(f"  served again {took:.2f} s after the idle connections closed" if took is not None else "  NOT served again")
if took is None or took > 2:
    bad.append("not served again within 2 s")

# 2. 300 concurrent requests (each held 3 s by the mock)
peak[0] = 0
tally = burst(300)
in_flight = tally.get("200", 0)
per = (peak[0] - base) / in_flight if in_flight else 0
print(f"300 concurrent requests: {tally}, descriptors at the peak {peak[0]} ({per:.1f} per request in flight)")
if tally.get("200", 0) < 200 or set(tally) - {"200", "503"}:
    bad.append(f"concurrent requests: {tally}")

# 3. both: 300 idle connections and 256 concurrent requests (the issue's case)
time.sleep(0.5)
peak[0] = 0
held, idle_tally = hold_idle(300)
tally = burst(256)
print(f"300 idle + 256 concurrent: idle {idle_tally}, requests {tally}, descriptors at the peak {peak[0]}")
if set(tally) - {"200", "503"} or tally.get("200", 0) == 0:
    bad.append(f"mixed load: {tally}")
for s in held:
    s.close()
took = recovery()
print(f"  served again {took:.2f} s after the load ended" if took is not None else "  NOT served again")
if took is None or took > 2:
    bad.append("not served again within 2 s after the mixed load")
if peak[0] > limit:
    bad.append(f"descriptors {peak[0]} over the limit {limit}")
if not alive():
    bad.append("the proxy died")
print("alive" if alive() else "DEAD", f"(driver {time.time() - T0:.1f} s)")
for b in bad:
    print("FAIL", b)
sys.exit(1 if bad else 0)
PY
driver=$?
set -e

kill -TERM "$PROXY_PID" 2>/dev/null || true
for _ in $(seq 100); do kill -0 "$PROXY_PID" 2>/dev/null || break; sleep 0.05; done
wait "$PROXY_PID"; code=$?
echo "banner: $(grep -E '^  limits:' "$WORK/proxy.err" | sed 's/^ *//')"
echo "--check with soft $LIMIT, hard $(ulimit -Hn): $raised"
echo "log: $(grep -c 'turning connections away' "$WORK/proxy.err") lines about connections turned away," \
     "$(grep -c 'cannot accept' "$WORK/proxy.err") about accept errors"
status=0
if grep -q 'panicked' "$WORK/proxy.err"; then echo "FAIL a thread panicked:"; grep -A2 panicked "$WORK/proxy.err"; status=1; fi
if [ "$code" -ne 0 ]; then echo "FAIL exit code $code on SIGTERM"; status=1; else echo "exit code 0 on SIGTERM"; fi
[ "$driver" -eq 0 ] || status=1
[ "$status" -eq 0 ] && echo "fd: all held" || echo "fd: FAILED"
exit "$status"
