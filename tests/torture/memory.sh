#!/usr/bin/env bash
# tests/torture/memory.sh: what one request costs in memory, measured on the real binary.
#
# Generates a 23 MB Responses body with 300,000 input items and a 3.6 MB one with 30,000
# tools, starts its own mock upstream on 127.0.0.1 (SSE answers, Responses and chat, of any
# size a request asks for with `x-answer-bytes`), and for each case starts a fresh proxy,
# sends the requests and reads its peak RSS (VmHWM in /proc/PID/status). The cost of a
# request is the peak minus the proxy's RSS after a small warm-up request, divided by the
# body size; the targets are 3x (pass-through) and 5x (translated to chat). The last case
# runs under MEMORY_BUDGET_MB=512 (the Kubernetes manifests' limit): a mix of big requests and
# big answers at once must leave the process under 512 MiB, each request answered with a
# 200 or a 503 with retry-after, and the proxy still answering afterwards.
#
#   BIN=target/release/codex-shield tests/torture/memory.sh
#
# Exits non-zero when a target is missed. Bounded: every request and wait has a timeout.
set -euo pipefail
BIN="${BIN:-target/release/codex-shield}"
PYTHON="${PYTHON:-python3}"
[ -x "$BIN" ] || { echo "memory.sh: no binary at $BIN (cargo build --release)" >&2; exit 2; }
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/codex-shield-memory.XXXXXX")"
pids=()
cleanup() {
    local pid
    for pid in ${pids[@]+"${pids[@]}"}; do kill "$pid" 2>/dev/null || true; done
    for pid in ${pids[@]+"${pids[@]}"}; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
deadline=$((SECONDS + 115))
missed=0

cat >"$WORK/mock.py" <<'PY'
"""Mock upstream: reads the whole request, answers a small SSE stream (Responses or chat by
path), or one of `x-answer-bytes` bytes of text. 127.0.0.1 only; writes its port to argv[1]."""
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

def sse(name, payload):
    return ("event: %s\ndata: %s\n\n" % (name, json.dumps(payload))).encode()

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def do_POST(self):
        left = int(self.headers.get("content-length") or 0)
        while left > 0:
            left -= len(self.rfile.read(min(left, 1 << 20)) or b"x" * left)
        size = int(self.headers.get("x-answer-bytes") or 16)
        piece = "x" * min(size, 1 << 16)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        def send(data):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        if "chat" in self.path:
            sent = 0
            while sent < size:
                chunk = {"id": "c1", "object": "chat.completion.chunk", "model": "m",
                         "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                send(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                sent += len(piece)
            done = {"id": "c1", "object": "chat.completion.chunk", "model": "m",
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
            send(b"data: " + json.dumps(done).encode() + b"\n\ndata: [DONE]\n\n")
        else:
            response = {"id": "resp_1", "object": "response", "status": "in_progress", "model": "m",
                        "output": [], "error": None}
            send(sse("response.created", {"type": "response.created", "response": response}))
            sent = 0
            while sent < size:
                send(sse("response.output_text.delta", {"type": "response.output_text.delta",
                                                          "item_id": "m1", "delta": piece}))
                sent += len(piece)
            response = dict(response, status="completed",
                            usage={"input_tokens": 1, "output_tokens": 1, "total_tokens": 2})
            send(sse("response.completed", {"type": "response.completed", "response": response}))
        self.wfile.write(b"0\r\n\r\n")

class Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # a proxy that gives up on an answer (over its memory budget) resets the connection

server = Server(("127.0.0.1", 0), Handler)
server.daemon_threads = True
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os; os.rename(sys.argv[1] + ".tmp", sys.argv[1])
server.serve_forever()
PY

cat >"$WORK/gen.py" <<'PY'
"""The two bodies: 300,000 input items (23 MB) and 30,000 tools (3.6 MB)."""
import json, sys
out = sys.argv[1]
items = []
for i in range(300_000):
    k = i % 4
    if k == 0:
        items.append({"role": "user", "content": "question %06d: what changed in f%d?" % (i, i)})
    elif k == 1:
        items.append({"type": "function_call", "call_id": "call_%06d" % i, "name": "shell",
                      "arguments": "{\"cmd\":\"cat f%d\"}" % i})
    elif k == 2:
        items.append({"type": "function_call_output", "call_id": "call_%06d" % (i - 1),
                      "output": "line %d" % i})
    else:
        items.append({"role": "assistant", "content": "answer %06d: none" % i})
tools = [{"type": "function", "name": "shell", "parameters": {"type": "object"}}]
with open(out + "/input.json", "w") as f:
    json.dump({"model": "m", "input": items, "tools": tools, "stream": False}, f, separators=(",", ":"))
tools = [{"type": "function", "name": "tool_%05d" % i, "description": "Tool %05d, one thing." % i,
          "parameters": {"type": "object", "properties": {}}} for i in range(30_000)]
with open(out + "/tools.json", "w") as f:
    json.dump({"model": "m", "input": "hi", "tools": tools, "stream": False}, f, separators=(",", ":"))
with open(out + "/tools-stream.json", "w") as f:
    json.dump({"model": "m", "input": "hi", "tools": tools, "stream": True}, f, separators=(",", ":"))
with open(out + "/small.json", "w") as f:
    json.dump({"model": "m", "input": "hi", "stream": False}, f)
PY

cat >"$WORK/send.py" <<'PY'
"""send.py PORT FILE N [ANSWER_BYTES]: N POSTs of FILE to /v1/responses at once; prints one
line per request: status, retry-after (or -), error code (or -)."""
import http.client, json, sys, threading
port, path, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
answer = sys.argv[4] if len(sys.argv) > 4 else "16"
body = open(path, "rb").read()
results = [None] * n
def one(i):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=90)
        c.request("POST", "/v1/responses", body, {"content-type": "application/json",
                                                   "x-answer-bytes": answer})
        r = c.getresponse()
        data = r.read()
        code = "-"
        if r.status != 200:
            try:
                code = json.loads(data)["error"]["code"]
            except Exception:
                code = "not-json"
        results[i] = "%d %s %s" % (r.status, r.getheader("retry-after") or "-", code)
    except Exception as e:
        results[i] = "000 - %s" % type(e).__name__
threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
for t in threads: t.start()
for t in threads: t.join()
print("\n".join(results))
PY

"$PYTHON" "$WORK/gen.py" "$WORK"
"$PYTHON" "$WORK/mock.py" "$WORK/mock.port" &
pids+=($!)
for _ in $(seq 100); do [ -s "$WORK/mock.port" ] && break; sleep 0.05; done
MOCK_PORT="$(cat "$WORK/mock.port")"

status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
size_of() { stat -c %s "$1"; }

proxy_pid="" proxy_port=""
start_proxy() { # start_proxy API [extra env...]: a fresh proxy, warmed up by one small request
    local api="$1" log="$WORK/proxy.log"
    shift
    : >"$log"
    env -i PATH="$PATH" AZURE_ENDPOINT="http://127.0.0.1:$MOCK_PORT/v1" UPSTREAM_API="$api" \
        PORT=0 LOG_LEVEL=warn MAX_CONCURRENT=64 RETRY_ATTEMPTS=1 MEMORY_BUDGET_MB=0 "$@" \
        "$BIN" 2>"$log" &
    proxy_pid=$!
    pids+=("$proxy_pid")
    proxy_port=""
    for _ in $(seq 200); do
        proxy_port="$(sed -n 's/.*listening on http:\/\/[^ ]*:\([0-9]*\).*/\1/p' "$log" | head -1)"
        [ -n "$proxy_port" ] && break
        sleep 0.05
    done
    [ -n "$proxy_port" ] || { echo "memory.sh: the proxy did not start:" >&2; cat "$log" >&2; exit 1; }
    "$PYTHON" "$WORK/send.py" "$proxy_port" "$WORK/small.json" 1 >/dev/null
}
stop_proxy() { kill "$proxy_pid" 2>/dev/null || true; wait "$proxy_pid" 2>/dev/null || true; }

printf '%-34s %9s %9s %9s %7s %7s  %s\n' case body_MB base_MB peak_MB ratio target result
row() { # row NAME BODY_BYTES BASE_KB PEAK_KB TARGET OK
    local ratio
    ratio="$(awk -v b="$2" -v base="$3" -v peak="$4" 'BEGIN {printf "%.2f", (peak - base) * 1024 / b}')"
    local verdict=ok
    if [ "$6" != ok ] || awk -v r="$ratio" -v t="$5" 'BEGIN {exit !(t > 0 && r > t)}'; then
        verdict="MISS${6#ok}"
        missed=$((missed + 1))
    fi
    printf '%-34s %9.1f %9.1f %9.1f %7s %7s  %s\n' "$1" "$(awk -v b="$2" 'BEGIN {print b / 1e6}')" \
        "$(awk -v k="$3" 'BEGIN {print k / 1024}')" "$(awk -v k="$4" 'BEGIN {print k / 1024}')" \
        "${ratio}x" "$( [ "$5" = 0 ] && echo - || echo "${5}x")" "$verdict"
}
case_one() { # case_one NAME API FILE COUNT TARGET [ANSWER_BYTES]: COUNT copies at once, all
    # must be 200; with ANSWER_BYTES the ratio is to the answer's size, not the body's
    local name="$1" api="$2" file="$3" count="$4" target="$5" answer="${6:-}" base peak answers ok=ok
    [ "$SECONDS" -lt "$deadline" ] || { echo "memory.sh: out of time before $name" >&2; exit 1; }
    start_proxy "$api"
    base="$(status_kb "$proxy_pid" VmRSS)"
    answers="$(timeout 100 "$PYTHON" "$WORK/send.py" "$proxy_port" "$file" "$count" "${answer:-16}")"
    peak="$(status_kb "$proxy_pid" VmHWM)"
    stop_proxy
    [ "$(grep -c '^200 ' <<<"$answers")" = "$count" ] || ok="ok (not all 200: $(sort <<<"$answers" | uniq -c | tr '\n' ';'))"
    row "$name" "${answer:-$(($(size_of "$file") * count))}" "$base" "$peak" "$target" "$ok"
}

case_one "input 300k items, pass-through" responses "$WORK/input.json" 1 3
case_one "input 300k items, translated" chat "$WORK/input.json" 1 5
case_one "tools 30k, pass-through" responses "$WORK/tools.json" 1 3
case_one "tools 30k, translated" chat "$WORK/tools.json" 1 5
case_one "tools 30k, translated, streamed" chat "$WORK/tools-stream.json" 1 5
case_one "8 x input 300k, pass-through" responses "$WORK/input.json" 8 3
case_one "8 x tools 30k, translated" chat "$WORK/tools.json" 8 5
# What an answer costs (ratio to the answer); the target is what memory.rs charges for it:
# the answer itself plus ASSEMBLED_ANSWER_COST / TRANSLATED_ANSWER_COST.
case_one "answer 48 MB, as JSON" responses "$WORK/small.json" 1 3 50000000
case_one "answer 48 MB, translated, as JSON" chat "$WORK/small.json" 1 10 50000000

# Under the guard: 8 big translated requests, 8 with many tools and 8 answers of 8 MB, all
# at once, with the manifests' 512 MiB limit as the budget.
[ "$SECONDS" -lt "$deadline" ] || { echo "memory.sh: out of time before the guard case" >&2; exit 1; }
start_proxy chat MEMORY_BUDGET_MB=512 MAX_RESPONSE_BYTES=67108864
base="$(status_kb "$proxy_pid" VmRSS)"
"$PYTHON" "$WORK/send.py" "$proxy_port" "$WORK/input.json" 8 >"$WORK/g1" &
p1=$!
"$PYTHON" "$WORK/send.py" "$proxy_port" "$WORK/tools.json" 8 >"$WORK/g2" &
p2=$!
"$PYTHON" "$WORK/send.py" "$proxy_port" "$WORK/small.json" 8 8000000 >"$WORK/g3" &
p3=$!
timeout 100 tail --pid=$p1 -f /dev/null || true
timeout 100 tail --pid=$p2 -f /dev/null || true
timeout 100 tail --pid=$p3 -f /dev/null || true
wait "$p1" "$p2" "$p3" || true
peak="$(status_kb "$proxy_pid" VmHWM)"
after="$("$PYTHON" "$WORK/send.py" "$proxy_port" "$WORK/small.json" 1)"
alive=$(kill -0 "$proxy_pid" 2>/dev/null && echo yes || echo no)
stop_proxy
answers="$(cat "$WORK/g1" "$WORK/g2" "$WORK/g3")"
summary="$(for g in g1 g2 g3; do
    awk -v g="$g" '{print g, $1, ($2 == "-" ? "" : "retry-after"), $3}' "$WORK/$g"
done | sort | uniq -c | awk '{$1 = $1 "x"; print}' | sed 's/ g1 / input: /; s/ g2 / tools: /; s/ g3 / 8 MB answers: /' | paste -sd ';' -)"
guard=ok
grep -qv -e '^200 ' -e '^503 [0-9]* proxy_overloaded$' <<<"$answers" && guard="ok (unexpected answers)"
grep -q '^503 ' <<<"$answers" || guard="ok (no 503: the guard never acted)"
[ "$alive" = yes ] && [ "${after%% *}" = 200 ] || guard="ok (dead or refusing afterwards: $after)"
[ "$peak" -lt $((512 * 1024)) ] || guard="ok (peak RSS over 512 MiB)"
total=$(($(size_of "$WORK/input.json") * 8 + $(size_of "$WORK/tools.json") * 8))
row "guard 512 MiB: 24 big at once" "$total" "$base" "$peak" 0 "$guard"
echo "guard answers: $summary"
echo "ratio = (peak RSS - RSS after warm-up) / bytes of the bodies (or the answer); targets: 3x pass-through, 5x translated"
if [ "$missed" -gt 0 ]; then
    echo "memory.sh: $missed case(s) missed their target" >&2
    exit 1
fi
