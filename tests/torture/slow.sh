#!/usr/bin/env bash
# tests/torture/slow.sh: clients that take their answers slowly or not at all, and shutdown.
#
#   BIN=target/release/codex-shield bash tests/torture/slow.sh
#
# Its own mock upstream on 127.0.0.1 (a tiny Python server: 8 MB answers at once, or a
# short answer after a long wait), then three runs of the proxy:
#   1. MAX_CONCURRENT=10 and 60 clients (SO_RCVBUF 4 KiB) that never read their 8 MB answer:
#      how many answers the proxy fetched and held (at most 10), RSS while they hold and
#      after they close;
#   2. SHUTDOWN_GRACE_SECONDS=8, KEEPALIVE_SECONDS=1: a client reading 2 KB every 2 s of its
#      8 MB answer, three requests waiting on the upstream, one streaming client with
#      keepalives; SIGTERM: when the waiting ones get their 503, the longest silence of the
#      keepalive client, when the process exits (at most the grace + 3 s);
#   3. the same with a grace of 60 s and a second SIGTERM 1 s after the first: the wait ends
#      at once (exit and 503s within 3 s of the second signal).
# Prints what held; exits non-zero if anything did not. Bounded: 90 s.
set -euo pipefail
BIN="${BIN:-$(dirname "$0")/../../target/release/codex-shield}"
[ -x "$BIN" ] || { echo "slow.sh: no proxy binary at $BIN (cargo build --release, or set BIN)" >&2; exit 2; }
BIN="$(readlink -f "$BIN")"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/codex-shield-slow.XXXXXX")"
cleanup() { # the proxies the driver started and could not stop itself (still this binary)
    local pid
    if [ -f "$WORK/pids" ]; then
        while read -r pid; do
            if [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$BIN" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
        done <"$WORK/pids"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
cat >"$WORK/slow.py" <<'PY'
import json, os, signal, socket, subprocess, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BIN, WORK = sys.argv[1], sys.argv[2]
MB8 = 8 * 1024 * 1024

def sse(kind, data):
    data["type"] = kind
    return "event: %s\ndata: %s\n\n" % (kind, json.dumps(data))

def answer(size):
    """A complete Responses stream of about `size` bytes."""
    resp = {"id": "resp_slow", "object": "response", "status": "in_progress", "error": None, "output": []}
    out = [sse("response.created", {"response": resp})]
    delta = "x" * 16000
    n = 0
    while n < size:
        event = sse("response.output_text.delta", {"item_id": "msg_1", "output_index": 0,
                                                   "content_index": 0, "delta": delta})
        out.append(event)
        n += len(event)
    done = dict(resp, status="completed")
    out.append(sse("response.completed", {"response": done}))
    return "".join(out).encode()

BIG, SMALL = answer(MB8), answer(100)
asked = [0]

class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        asked[0] += 1
        model = body.get("model", "")
        if model.startswith("wait-"):
            time.sleep(float(model[5:]))
        data = BIG if model == "big" else SMALL
        try:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass

ThreadingHTTPServer.daemon_threads = True
upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
threading.Thread(target=upstream.serve_forever, daemon=True).start()
failures = []

def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)

class Proxy:
    def __init__(self, name, env):
        self.log = open(os.path.join(WORK, name + ".log"), "w+")
        full = {"PATH": os.environ.get("PATH", ""), "AZURE_ENDPOINT": "http://127.0.0.1:%d/v1" % upstream.server_port,
                "AZURE_API_KEY": "", "PORT": "0", "LOG_LEVEL": "info", "RETRY_ATTEMPTS": "1"}
        full.update(env)
        self.p = subprocess.Popen([BIN], env=full, stdout=subprocess.DEVNULL, stderr=self.log, cwd=WORK)
        with open(os.path.join(WORK, "pids"), "a") as pids:
            pids.write("%d\n" % self.p.pid)
        self.port = None
        for _ in range(500):
            text = self.text()
            if "listening on http://" in text:
                self.port = int(text.split("listening on http://")[1].split()[0].rsplit(":", 1)[1])
                return
            time.sleep(0.02)
        raise SystemExit("proxy did not start:\n" + self.text())
    def text(self):
        self.log.seek(0)
        return self.log.read()
    def rss_mb(self):
        with open("/proc/%d/status" % self.p.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0
    def signal(self):
        self.p.send_signal(signal.SIGTERM)
    def wait(self, limit):
        try:
            self.p.wait(limit)
            return True
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            return False

def connect(proxy, model, stream, rcvbuf=None):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(("127.0.0.1", proxy.port))
    body = json.dumps({"model": model, "input": "hi", "stream": stream}).encode()
    s.sendall(b"POST /v1/responses HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
              b"content-length: %d\r\n\r\n%s" % (len(body), body))
    return s

def status_of(s, limit=5.0):
    s.settimeout(limit)
    try:
        head = s.recv(12)
        return int(head[9:12]) if head.startswith(b"HTTP/1.1 ") else 0
    except (OSError, ValueError):
        return 0

def wait_until(cond, limit):
    end = time.time() + limit
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()

# 1. 60 clients that never read, MAX_CONCURRENT=10.
asked[0] = 0
proxy = Proxy("flood", {"MAX_CONCURRENT": "10"})
base = proxy.rss_mb()
refused = lambda: proxy.text().count("refused POST")
clients = []
for i in range(60):  # one after the other: each is fetched or refused before the next comes
    clients.append(connect(proxy, "big", True, 4096))
    wait_until(lambda: asked[0] + refused() > i, 2)
during = 0.0
for _ in range(5):
    time.sleep(0.1)
    during = max(during, proxy.rss_mb())
held = asked[0]
statuses = [status_of(s) for s in clients]
for s in clients:
    s.close()
after = []  # RSS every half second for 10 s (glibc gives memory back at once, mimalloc later)
for _ in range(20):
    time.sleep(0.5)
    after.append(proxy.rss_mb())
print("flood: 60 non-reading clients, MAX_CONCURRENT=10, 8 MB answers: %d answers held, "
      "%d got 503, %d got 200; RSS %.0f MB idle, %.0f MB held, %.0f MB 3 s and %.0f MB 10 s after "
      "they closed" % (held, statuses.count(503), statuses.count(200), base, during, after[5], after[-1]),
      flush=True)
check(held <= 10, "at most MAX_CONCURRENT answers fetched for clients that do not read (%d)" % held)
check(statuses.count(503) >= 50, "the others got 503 (%d)" % statuses.count(503))
check(during <= base + 10 * 2 * 8 + 40, "RSS while held: %.0f MB" % during)
check(after[-1] <= base + 40, "RSS 10 s after they closed: %.0f MB" % after[-1])
proxy.signal()
proxy.wait(10)

def shutdown_run(name, grace, second):
    asked[0] = 0
    proxy = Proxy(name, {"SHUTDOWN_GRACE_SECONDS": str(grace), "KEEPALIVE_SECONDS": "1"})
    slow = connect(proxy, "big", True, 4096)
    got = [0]
    def read_slowly():
        slow.settimeout(1)
        while True:
            try:
                piece = slow.recv(2048)
            except socket.timeout:
                continue
            except OSError:
                return
            if not piece:
                return
            got[0] += len(piece)
            time.sleep(2)
    threading.Thread(target=read_slowly, daemon=True).start()
    waiting, answered = [connect(proxy, "wait-120", False) for _ in range(3)], []
    def await_answer(s):
        answered.append((status_of(s, grace + 20), time.time()))
    for s in waiting:
        threading.Thread(target=await_answer, args=(s,), daemon=True).start()
    keep, beats = connect(proxy, "wait-120", True), []
    def heartbeat():
        keep.settimeout(grace + 20)
        while True:
            try:
                piece = keep.recv(65536)
            except OSError:
                return
            if not piece:
                return
            beats.append((time.time(), piece))
    threading.Thread(target=heartbeat, daemon=True).start()
    wait_until(lambda: got[0] > 0 and asked[0] >= 5 and len(beats) >= 2, 15)
    t0 = time.time()
    proxy.signal()
    if second:
        time.sleep(1)
        proxy.signal()
    exited = proxy.wait((1 if second else grace) + 6)
    took = time.time() - t0
    end = t0 + (1 if second else grace) + 3
    wait_until(lambda: len(answered) == 3, 3)
    late = [round(t - t0, 1) for status, t in answered if status != 503 or t > end]
    after = [t for t, _ in beats if t >= t0]
    gaps = [b - a for a, b in zip([t0] + after, after)]
    failed = any(b"response.failed" in p for _, p in beats)
    print("%s: slow reader had %d KB of 8 MB; exit %.1f s after SIGTERM%s (grace %d s); 503s at %s s; "
          "keepalive client: %d events after SIGTERM, longest silence %.1f s, response.failed %s"
          % (name, got[0] // 1024, took, " (second SIGTERM at 1 s)" if second else "", grace,
             [round(t - t0, 1) for _, t in answered], len(after), max(gaps, default=float("inf")), failed), flush=True)
    check(exited and took <= (1 if second else grace) + 3, "%s: exit within %s + 3 s (%.1f s)" % (name, "1 s" if second else "the grace", took))
    check(len(answered) == 3 and not late, "%s: the waiting requests got their 503 by then (late: %s)" % (name, late))
    if not second:
        check(bool(after) and max(gaps) <= 3 and failed, "%s: keepalives went on while draining, then response.failed" % name)

# 2. A slow reader and SIGTERM; 3. and a second SIGTERM.
shutdown_run("drain", 8, False)
shutdown_run("second", 60, True)
sys.exit(1 if failures else 0)
PY
timeout --signal=KILL 90s python3 -u "$WORK/slow.py" "$BIN" "$WORK"
