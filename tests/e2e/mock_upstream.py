#!/usr/bin/env python3
"""Scripted OpenAI-compatible upstream for the end-to-end tests (stdlib only).

Serves the Responses API (POST /v1/responses, /responses) and Chat Completions
(POST /v1/chat/completions, /chat/completions) as real SSE over HTTP/1.1 with
chunked transfer encoding, `event:` and `data:` lines, and full response
objects (including "error": null).  Each model request consumes the next step
of a failure script; once the script is used up every request is answered.

Steps (comma separated, e.g. "429,429ms,error,cut,failed,ok"):
  429      429 with `retry-after: 1`           429ms   429 with `retry-after-ms: 40`
  500/503  5xx JSON error                       error   200, in-stream `error` event
  cut      200, connection closed mid-stream   failed  200, `response.failed` event
  ok       complete answer (LF)                okcrlf  complete answer, CRLF lines
  slow     complete answer after a 3 s pause (for the concurrency and signal tests)
  progress 200 head, two progress lines as Codex shows them (codex::progress_event), data
           keep-alives for 3 s (codex::keepalive_event), then the complete answer
  giveup400     the proxy's give-up message for Codex before a head: 400 text/plain
  giveupfailed  the same after a 200 head: response.failed with code invalid_prompt
  raw      the next reply posted to /__raw: {"status", "headers", "chunks": [{"data", "delay"}]}

Per-request plans (tests/replicas): a request with an `x-mock-plan: KEY STEPS` header follows
its own STEPS (same words), one per attempt carrying that KEY, whichever proxy replica sends
it; then `ok`. A numeric KEY also numbers the answer's ids (resp_mock0042), so a client can
tell its own answer from another's.

Control routes (for the test driver, never used by clients):
  POST /__script  body = new script; resets the step counter and the log
  POST /__raw     body = JSON list of replies for the `raw` steps
  GET  /__log     JSON list of the model requests seen so far
  GET  /__plans   JSON {KEY: attempts so far} for the per-request plans

Listens on 127.0.0.1 only.  Writes the bound port to --port-file when given.
"""

import argparse
import json
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWER = "SHIELD-OK-7431: the mock upstream answered after every failure."
PROGRESS = ["upstream rate-limited, retrying in 2 s (attempt 2 of 10)",
            "upstream answered 503, retrying in 1 s (attempt 3 of 10)"]
GIVE_UP = ("codex-shield: gave up after 3 attempts over 4.2 s; "
           "last failure: upstream answered 429 Too Many Requests")


def sse(name, payload):
    return "event: %s\ndata: %s\n\n" % (name, json.dumps(payload))


def progress_events(text, n):
    """The events of src/codex.rs `progress_event(text, n)`."""
    rid = "rs_codex_shield_progress_%d" % n
    return (sse("response.output_item.added",
                {"type": "response.output_item.added", "sequence_number": 2 * n,
                 "output_index": 0, "item": {"type": "reasoning", "id": rid, "summary": []}})
            + sse("response.reasoning_summary_text.delta",
                  {"type": "response.reasoning_summary_text.delta", "sequence_number": 2 * n + 1,
                   "item_id": rid, "output_index": 0, "summary_index": 0,
                   "delta": "**%s**" % text}))


def keepalive(n):
    """The events of src/codex.rs `keepalive_event(n)`."""
    return 'data: {"type":"keepalive","sequence_number":%d}\n\n' % n


def give_up_failed(message):
    """The events of src/codex.rs `give_up_event(message, 0)`."""
    return sse("response.failed", {"type": "response.failed", "sequence_number": 0, "response": {
        "id": "resp_codex_shield", "object": "response", "status": "failed", "output": [],
        "error": {"code": "invalid_prompt", "message": message}}})
MODEL_PATHS = ("/v1/responses", "/responses", "/v1/chat/completions", "/chat/completions")


class Script:
    """The failure script and the request log, shared by all handler threads."""

    def __init__(self, steps):
        self.lock = threading.Lock()
        self.reset(steps)

    def reset(self, steps):
        with self.lock:
            self.steps = [s.strip() for s in steps.split(",") if s.strip()]
            self.index = 0
            self.log = []
            self.raw = []

    def set_raw(self, replies):
        with self.lock:
            self.raw = list(replies)

    def next_raw(self):
        with self.lock:
            return self.raw.pop(0) if self.raw else None

    def next(self, record):
        with self.lock:
            step = self.steps[self.index] if self.index < len(self.steps) else "ok"
            self.index += 1
            record["step"] = step
            self.log.append(record)
            return step


class Plans:
    """Per-request plans, keyed by the client's `x-mock-plan` KEY, shared by all threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.attempts = {}

    def next(self, header):
        key, _, steps = header.strip().partition(" ")
        steps = [s.strip() for s in steps.split(",") if s.strip()]
        with self.lock:
            index = self.attempts.get(key, 0)
            self.attempts[key] = index + 1
        step = steps[index] if index < len(steps) else "ok"
        return step, (int(key) if key.isdigit() else 0)


def response_object(resp_id, model, status, output, error=None, usage=None):
    """A Responses API `response` object with every documented top-level field."""
    return {
        "id": resp_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "max_tool_calls": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "prompt_cache_key": None,
        "reasoning": {"effort": None, "summary": None},
        "safety_identifier": None,
        "service_tier": "default",
        "store": False,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_logprobs": 0,
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": None,
        "metadata": {},
    }


def message_item(item_id, text, status):
    content = [] if text is None else [
        {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    ]
    return {"id": item_id, "type": "message", "status": status, "role": "assistant",
            "content": content}


USAGE = {
    "input_tokens": 21,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 14,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 35,
}


def responses_events(step, model, n):
    """(event name, payload) pairs for one Responses API stream."""
    rid, mid = "resp_mock%04d" % n, "msg_mock%04d" % n
    events = [
        ("response.created", {"response": response_object(rid, model, "in_progress", [])}),
        ("response.in_progress", {"response": response_object(rid, model, "in_progress", [])}),
        ("response.output_item.added",
         {"output_index": 0, "item": message_item(mid, None, "in_progress")}),
        ("response.content_part.added",
         {"item_id": mid, "output_index": 0, "content_index": 0,
          "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
    ]
    words = ANSWER.split(" ")
    for i, word in enumerate(words):
        delta = word if i == 0 else " " + word
        events.append(("response.output_text.delta",
                       {"item_id": mid, "output_index": 0, "content_index": 0,
                        "delta": delta, "logprobs": [], "obfuscation": "x"}))
        if i == 3 and step in ("error", "cut", "failed"):
            break
    if step == "error":
        events.append(("error", {"code": "server_error", "param": None,
                                 "message": "The server had an error while processing your "
                                            "request. (mock in-stream error)"}))
        return events
    if step == "cut":
        return events
    if step == "failed":
        err = {"code": "server_error", "message": "The model failed to generate a response "
                                                  "(mock response.failed)."}
        events.append(("response.failed",
                       {"response": response_object(rid, model, "failed", [], error=err)}))
        return events
    item = message_item(mid, ANSWER, "completed")
    events += [
        ("response.output_text.done",
         {"item_id": mid, "output_index": 0, "content_index": 0, "text": ANSWER,
          "logprobs": []}),
        ("response.content_part.done",
         {"item_id": mid, "output_index": 0, "content_index": 0,
          "part": {"type": "output_text", "text": ANSWER, "annotations": [], "logprobs": []}}),
        ("response.output_item.done", {"output_index": 0, "item": item}),
        ("response.completed",
         {"response": response_object(rid, model, "completed", [item], usage=USAGE)}),
    ]
    return events


def chat_chunks(step, model, n):
    """data payloads (dicts, or the literal "[DONE]") for one Chat Completions stream."""
    base = {"id": "chatcmpl-mock%04d" % n, "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model,
            "system_fingerprint": "fp_mock", "service_tier": "default"}

    def chunk(delta, finish=None):
        return dict(base, choices=[{"index": 0, "delta": delta, "logprobs": None,
                                    "finish_reason": finish}])

    out = [chunk({"role": "assistant", "content": "", "refusal": None})]
    for i, word in enumerate(ANSWER.split(" ")):
        out.append(chunk({"content": word if i == 0 else " " + word}))
        if i == 3 and step in ("error", "cut", "failed"):
            break
    if step in ("error", "failed"):
        out.append({"error": {"message": "The server had an error while processing your "
                                         "request. (mock in-stream error)",
                              "type": "server_error", "param": None, "code": "server_error"}})
        return out
    if step == "cut":
        return out
    out.append(chunk({}, "stop"))
    out.append(dict(base, choices=[], usage={"prompt_tokens": 21, "completion_tokens": 14,
                                             "total_tokens": 35}))
    out.append("[DONE]")
    return out


class MockHandler(BaseHTTPRequestHandler):
    """What every mock's handler shares (this one, chat_mock.py, responses_mock.py): HTTP/1.1,
    its log lines named, the request body, JSON answers, chunks, a cut."""
    protocol_version = "HTTP/1.1"
    name = "mock"
    # the x-request-id of its answers, if any
    request_id = None

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("%s: %s\n" % (self.name, fmt % args))

    def body(self):
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def send_json(self, status, obj, extra=()):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        if self.request_id:
            self.send_header("x-request-id", self.request_id)
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def cut(self):
        """Close the socket mid-answer (no terminating chunk, or short of content-length)."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Handler(MockHandler):
    server_version = "mock-upstream/1.0"
    request_id = "req_mock"

    def start_sse(self):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("cache-control", "no-cache")
        self.send_header("x-request-id", "req_mock")
        self.end_headers()

    def send_sse(self, frames, nl, cut):
        self.start_sse()
        for i, frame in enumerate(frames):
            data = frame.replace("\n", nl).encode()
            if i % 3 == 1 and len(data) > 8:
                # split an event across two chunks, as real servers do
                self.chunk(data[:7])
                time.sleep(0.002)
                self.chunk(data[7:])
            else:
                self.chunk(data)
        if cut:
            self.cut()
            return
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def send_raw(self, reply):
        """A scripted answer: status, headers, then body chunks with pauses before them."""
        self.send_response(reply.get("status", 200))
        for k, v in reply.get("headers", {"content-type": "text/event-stream"}).items():
            self.send_header(k, v)
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        for part in reply.get("chunks", []):
            time.sleep(part.get("delay", 0))
            self.chunk(part["data"].encode())
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # --- routes ---------------------------------------------------------
    def do_GET(self):
        if self.path == "/__log":
            self.send_json(200, self.server.script.log)
        elif self.path == "/__plans":
            with self.server.plans.lock:
                self.send_json(200, dict(self.server.plans.attempts))
        elif self.path.rstrip("/") in ("/v1/models", "/models"):
            self.send_json(200, {"object": "list", "data": [
                {"id": "mock-model", "object": "model", "created": 0, "owned_by": "mock"}]})
        else:
            self.send_json(404, {"error": {"message": "no route " + self.path,
                                           "type": "invalid_request_error", "code": None}})

    def do_POST(self):
        raw = self.body()
        if self.path == "/__script":
            self.server.script.reset(raw.decode())
            self.send_json(200, {"ok": True})
            return
        if self.path == "/__raw":
            self.server.script.set_raw(json.loads(raw))
            self.send_json(200, {"ok": True})
            return
        path = self.path.split("?")[0]
        if path not in MODEL_PATHS:
            self.send_json(404, {"error": {"message": "no route " + path,
                                           "type": "invalid_request_error", "code": None}})
            return
        try:
            req = json.loads(raw or b"{}")
        except ValueError:
            self.send_json(400, {"error": {"message": "invalid JSON", "type":
                                           "invalid_request_error", "code": None}})
            return
        record = {"path": path, "model": req.get("model"), "stream": req.get("stream"),
                  "authorization": self.headers.get("authorization"),
                  "api_key": self.headers.get("api-key"), "time": time.time(),
                  "headers": {k.lower(): v for k, v in self.headers.items()}, "body": req}
        plan = self.headers.get("x-mock-plan")
        if plan:
            step, n = self.server.plans.next(plan)
        else:
            step = self.server.script.next(record)
            n = len(self.server.script.log)
        self.answer(step, path, req, n)

    def answer(self, step, path, req, n):
        model = req.get("model") or "mock-model"
        if step == "raw":
            self.send_raw(self.server.script.next_raw() or {"status": 500, "chunks": []})
            return
        if step in ("giveup400", "giveupfailed", "progress"):
            self.send_raw(codex_form(step, model, n))
            return
        if step in ("429", "429ms"):
            hint = ("retry-after", "1") if step == "429" else ("retry-after-ms", "40")
            self.send_json(429, {"error": {"message": "Rate limit reached (mock). Please retry.",
                                           "type": "rate_limit_exceeded", "param": None,
                                           "code": "rate_limit_exceeded"}}, [hint])
            return
        if step in ("500", "502", "503"):
            self.send_json(int(step), {"error": {"message": "upstream unavailable (mock)",
                                                 "type": "server_error", "param": None,
                                                 "code": None}})
            return
        if step == "slow":
            time.sleep(3)
        nl = "\r\n" if step == "okcrlf" else "\n"
        kind = "ok" if step in ("okcrlf", "slow") else step
        chat = "chat/completions" in path
        if not req.get("stream"):
            if kind != "ok":
                self.send_json(500, {"error": {"message": "mock failure " + step,
                                               "type": "server_error", "code": None}})
            elif chat:
                self.send_json(200, chat_object(model, n))
            else:
                item = message_item("msg_mock%04d" % n, ANSWER, "completed")
                self.send_json(200, response_object("resp_mock%04d" % n, model, "completed",
                                                    [item], usage=USAGE))
            return
        if chat:
            frames = ["data: %s\n\n" % (c if c == "[DONE]" else json.dumps(c))
                      for c in chat_chunks(kind, model, n)]
        else:
            frames = []
            for seq, (name, payload) in enumerate(responses_events(kind, model, n)):
                payload = dict({"type": name, "sequence_number": seq}, **payload)
                frames.append("event: %s\ndata: %s\n\n" % (name, json.dumps(payload)))
        self.send_sse(frames, nl, cut=(kind == "cut"))


def codex_form(step, model, n):
    """The answers only Codex clients get from the proxy (src/codex.rs), as raw replies."""
    if step == "giveup400":
        return {"status": 400, "headers": {"content-type": "text/plain; charset=utf-8"},
                "chunks": [{"data": GIVE_UP}]}
    sse_head = {"content-type": "text/event-stream"}
    if step == "giveupfailed":
        return {"status": 200, "headers": sse_head,
                "chunks": [{"data": keepalive(0)}, {"data": give_up_failed(GIVE_UP)}]}
    chunks = []
    for i, text in enumerate(PROGRESS):
        chunks.append({"data": progress_events(text, i), "delay": 0.2})
        chunks += [{"data": keepalive(10 * i + k), "delay": 0.5} for k in range(3)]
    answer = "".join(sse(name, dict({"type": name, "sequence_number": 100 + seq}, **payload))
                     for seq, (name, payload) in enumerate(responses_events("ok", model, n)))
    chunks.append({"data": answer, "delay": 0.2})
    return {"status": 200, "headers": sse_head, "chunks": chunks}


def chat_object(model, n):
    return {"id": "chatcmpl-mock%04d" % n, "object": "chat.completion",
            "created": int(time.time()), "model": model, "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": ANSWER,
                                     "refusal": None, "annotations": []}}],
            "usage": {"prompt_tokens": 21, "completion_tokens": 14, "total_tokens": 35}}


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # several proxies open connections in bursts

    def handle_error(self, request, client_address):
        """A client that hangs up mid-answer is normal here; report anything else."""
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def serve(server, port_file, max_seconds, name):
    """Write the port to `port_file` (if any; atomically), say where `name` listens, and serve
    until shut down or `max_seconds` have passed (the tests are bounded)."""
    port = server.server_address[1]
    if port_file:
        with open(port_file + ".tmp", "w") as f:
            f.write(str(port))
        os.replace(port_file + ".tmp", port_file)
    sys.stderr.write("%s listening on http://127.0.0.1:%d\n" % (name, port))
    timer = threading.Timer(max_seconds, server.shutdown)
    timer.daemon = True
    timer.start()
    server.serve_forever()


def faults_main(handler, state, name, doc):
    """The command line of a mock driven by a fault sequence (chat_mock.py, responses_mock.py):
    `--faults` for `state`, the port file, serve as `name`."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--port-file")
    ap.add_argument("--faults", default="429,cut")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--max-seconds", type=float, default=900,
                    help="exit by itself after this long (the tests are bounded)")
    args = ap.parse_args()
    server = Server(("127.0.0.1", 0), handler)
    server.state = state(args.faults)
    server.verbose = args.verbose
    serve(server, args.port_file, args.max_seconds, name)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    ap.add_argument("--script", default="ok")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--max-seconds", type=float, default=900,
                    help="exit by itself after this long (the tests are bounded)")
    args = ap.parse_args()
    server = Server(("127.0.0.1", args.port), Handler)
    server.script = Script(args.script)
    server.plans = Plans()
    server.verbose = args.verbose
    serve(server, args.port_file, args.max_seconds, "mock upstream")

if __name__ == "__main__":
    main()
