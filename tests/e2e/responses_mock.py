#!/usr/bin/env python3
"""A Responses-only upstream that plays a scripted model (stdlib only).

For tests/e2e/chatclients.sh: chat-completions clients (the openai SDKs, the Vercel AI SDK,
LangChain, the OpenAI Agents SDK) talk to the proxy started with UPSTREAM_API=responses-only,
and this server only knows the Responses API: `/v1/chat/completions` and `/chat/completions`
answer 404 `OperationNotSupported`, as Azure OpenAI does for its codex models.

The "model" reads the Responses request and decides what it says next:
  - a `function_call_output` among the input items: the final answer, quoting every output
    after the last user message ("FINAL-ANSWER: out1 | out2");
  - otherwise, tools offered: it calls them, in parallel, up to two (its arguments fill
    every required string parameter with "Paris");
  - otherwise: PLAIN_ANSWER.
When the request asks `include: ["reasoning.encrypted_content"]`, every answer starts with
a reasoning item (a summary and an `encrypted_content` unique to the turn).

Faults: every distinct request (same body but `stream` = same model turn) first gets the
fault sequence, one fault per attempt (default "429,cut": a 429 with `retry-after-ms`, then a
200 stream cut after half of its events), and only then its answer: chunked SSE with
`event:`/`data:` lines, CRLF, `sequence_number`, full response objects (`"error": null`).

Control routes (for the test driver, never used by clients):
  POST /__faults  body = new fault sequence ("" for none); clears the log and the turns
  GET  /__log     JSON list: path, step ("404", "429", "cut", "ok"), turn, the request body,
                  the encrypted_content the answer carried (null without reasoning) and the
                  call_ids of its function calls

Listens on 127.0.0.1 only. Writes the bound port to --port-file when given.
"""

import hashlib
import json
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mock_upstream import MockHandler, USAGE, faults_main, message_item, response_object  # noqa: E402

RESPONSES_PATHS = ("/v1/responses", "/responses")
PLAIN_ANSWER = "PLAIN-ANSWER-4711: the Responses-only mock answered."
REASONING = "The user asked something; I decide what to do next."


class State:
    """Fault sequence, turns seen and the log, shared by all handler threads."""

    def __init__(self, faults):
        self.lock = threading.Lock()
        self.reset(faults)

    def reset(self, faults):
        with self.lock:
            self.faults = [f.strip() for f in faults.split(",") if f.strip()]
            self.turns = {}
            self.log = []

    def record(self, entry):
        with self.lock:
            self.log.append(entry)
            return len(self.log)

    def step(self, path, req):
        """The fault (or "ok") for this attempt of its turn, logged with the request."""
        body = {k: v for k, v in req.items() if k != "stream"}
        key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]
        with self.lock:
            n = self.turns.get(key, 0)
            self.turns[key] = n + 1
            step = self.faults[n] if n < len(self.faults) else "ok"
            entry = {"path": path, "step": step, "turn": key, "request": req, "encrypted": None, "calls": []}
            self.log.append(entry)
            return step, key, entry


# ---- the scripted model ----------------------------------------------------------------------

def items(req):
    """The input as a list of items (a string input is one user message)."""
    inp = req.get("input")
    if isinstance(inp, str):
        return [{"type": "message", "role": "user", "content": inp}]
    return inp if isinstance(inp, list) else []


def text_of(content):
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def arguments(tool):
    """Arguments for a function tool: every required string parameter is "Paris"."""
    params = tool.get("parameters") or {}
    props = params.get("properties") or {}
    return {name: "Paris" for name in params.get("required") or [] if props.get(name, {}).get("type") == "string"}


def decide(req):
    """What the model says next: ("text", text) or ("calls", [(name, arguments JSON)])."""
    found = items(req)
    last_user = max([i for i, it in enumerate(found) if it.get("role") == "user"] or [-1])
    outputs = [it.get("output") for it in found[last_user + 1:] if it.get("type") == "function_call_output"]
    if outputs:
        return ("text", "FINAL-ANSWER: " + " | ".join(text_of(o) for o in outputs))
    tools = [t for t in req.get("tools") or [] if t.get("type") == "function"]
    if tools:
        return ("calls", [(t["name"], json.dumps(arguments(t))) for t in tools[:2]])
    return ("text", PLAIN_ANSWER)


def output_items(decision, turn, n, reasoning):
    """The finished output items for a decision (the reasoning item first when asked)."""
    out = []
    if reasoning:
        out.append({"id": "rs_%s%04d" % (turn, n), "type": "reasoning",
                    "summary": [{"type": "summary_text", "text": REASONING}],
                    "encrypted_content": "ENC-%s-%04d" % (turn, n)})
    if decision[0] == "text":
        out.append(message_item("msg_%s%04d" % (turn, n), decision[1], "completed"))
    else:
        for k, (name, args) in enumerate(decision[1]):
            out.append({"id": "fc_%s%04d_%d" % (turn, n, k), "type": "function_call",
                        "status": "completed", "arguments": args,
                        "call_id": "call_%s%04d_%d" % (turn, n, k), "name": name})
    return out


def item_events(index, item):
    """(event name, payload) pairs that stream one output item."""
    kind = item["type"]
    if kind == "reasoning":
        part = item["summary"][0]
        head = dict(item, summary=[], encrypted_content=None)
        where = {"item_id": item["id"], "output_index": index, "summary_index": 0}
        return [("response.output_item.added", {"output_index": index, "item": head}),
                ("response.reasoning_summary_part.added", dict(where, part={"type": "summary_text", "text": ""})),
                ("response.reasoning_summary_text.delta", dict(where, delta=part["text"][:20], obfuscation="x")),
                ("response.reasoning_summary_text.delta", dict(where, delta=part["text"][20:], obfuscation="x")),
                ("response.reasoning_summary_text.done", dict(where, text=part["text"])),
                ("response.reasoning_summary_part.done", dict(where, part=part)),
                ("response.output_item.done", {"output_index": index, "item": item})]
    if kind == "function_call":
        head = dict(item, arguments="", status="in_progress")
        args = item["arguments"]
        where = {"item_id": item["id"], "output_index": index}
        return [("response.output_item.added", {"output_index": index, "item": head}),
                ("response.function_call_arguments.delta", dict(where, delta=args[:5], obfuscation="x")),
                ("response.function_call_arguments.delta", dict(where, delta=args[5:], obfuscation="x")),
                ("response.function_call_arguments.done", dict(where, arguments=args)),
                ("response.output_item.done", {"output_index": index, "item": item})]
    text = item["content"][0]["text"]
    where = {"item_id": item["id"], "output_index": index, "content_index": 0}
    empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    words = text.split(" ")
    deltas = [("response.output_text.delta", dict(where, delta=w if i == 0 else " " + w, logprobs=[], obfuscation="x"))
              for i, w in enumerate(words)]
    return ([("response.output_item.added", {"output_index": index, "item": message_item(item["id"], None, "in_progress")}),
             ("response.content_part.added", dict(where, part=empty))]
            + deltas
            + [("response.output_text.done", dict(where, text=text, logprobs=[])),
               ("response.content_part.done", dict(where, part=dict(empty, text=text))),
               ("response.output_item.done", {"output_index": index, "item": item})])


def frames(model, rid, output):
    """The SSE frames (CRLF lines) of a whole Responses stream."""
    events = [("response.created", {"response": response_object(rid, model, "in_progress", [])}),
              ("response.in_progress", {"response": response_object(rid, model, "in_progress", [])})]
    for index, item in enumerate(output):
        events += item_events(index, item)
    events.append(("response.completed", {"response": response_object(rid, model, "completed", output, usage=USAGE)}))
    return ["event: %s\r\ndata: %s\r\n\r\n" % (name, json.dumps(dict({"type": name, "sequence_number": seq}, **payload)))
            for seq, (name, payload) in enumerate(events)]


# ---- HTTP ------------------------------------------------------------------------------------

class Handler(MockHandler):
    name = "responses mock"

    def do_GET(self):
        if self.path == "/__log":
            with self.server.state.lock:
                self.send_json(200, self.server.state.log)
        else:
            self.send_json(404, {"error": {"code": "404", "message": "Resource not found"}})

    def do_POST(self):
        raw = self.body()
        if self.path == "/__faults":
            self.server.state.reset(raw.decode())
            self.send_json(200, {"ok": True})
            return
        path = self.path.split("?")[0]
        try:
            req = json.loads(raw or b"{}")
        except ValueError:
            req = None
        if path not in RESPONSES_PATHS or not isinstance(req, dict):
            # Azure's answer on chat completions for a codex model (Responses API only)
            self.server.state.record({"path": path, "step": "404", "turn": "", "request": req,
                                      "encrypted": None, "calls": []})
            model = req.get("model") if isinstance(req, dict) else None
            self.send_json(404, {"error": {"code": "OperationNotSupported", "message": (
                "The chatCompletion operation does not work with the specified model, %s. Please "
                "choose different model and try again." % model)}})
            return
        step, turn, entry = self.server.state.step(path, req)
        if step == "429":
            self.send_json(429, {"error": {"message": "Rate limit reached (responses mock). Please retry.",
                                           "type": "rate_limit_exceeded", "param": None,
                                           "code": "rate_limit_exceeded"}}, [("retry-after-ms", "30")])
            return
        if step == "500":
            self.send_json(500, {"error": {"message": "upstream unavailable (responses mock)",
                                           "type": "server_error", "param": None, "code": None}})
            return
        n = len(self.server.state.log)
        reasoning = "reasoning.encrypted_content" in (req.get("include") or [])
        output = output_items(decide(req), turn, n, reasoning)
        entry["encrypted"] = output[0]["encrypted_content"] if reasoning else None
        entry["calls"] = [i["call_id"] for i in output if i["type"] == "function_call"]
        model = req.get("model") or "responses-mock"
        rid = "resp_%s%04d" % (turn, n)
        if not req.get("stream"):  # the proxy always streams: only a client alone gets here
            data = json.dumps(response_object(rid, model, "completed", output, usage=USAGE)).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2] if step == "cut" else data)
            if step == "cut":
                self.cut()
            return
        sse = frames(model, rid, output)
        if step == "cut":
            sse = sse[: len(sse) // 2]
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("x-request-id", "req_responses_mock")
        self.end_headers()
        for i, frame in enumerate(sse):
            data = frame.encode()
            if i % 3 == 1 and len(data) > 8:  # an event split across two chunks, as real servers do
                self.chunk(data[:7])
                self.chunk(data[7:])
            else:
                self.chunk(data)
        if step == "cut":
            self.cut()
            return
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def main():
    faults_main(Handler, State, "responses mock", __doc__)


if __name__ == "__main__":
    main()
