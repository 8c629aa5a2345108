#!/usr/bin/env python3
"""A chat-completions-only upstream that plays a scripted model (stdlib only).

For the adapter end-to-end test (tests/e2e/adapter.sh): Codex speaks the Responses API,
the proxy runs with UPSTREAM_API=chat, and this server only knows Chat Completions:
`/v1/responses` and `/responses` answer 404, as on llama.cpp's server or an older vLLM.

The "model" reads the chat request's messages and decides what it says next:
  - the scenario is the `[[scenario:NAME]]` marker in a user message;
  - no `tool` message after the last user message: the scenario's first move (a plain
    answer, or a call of the tool the scenario needs, found among the request's `tools`);
  - otherwise: the final answer, quoting what the last `tool` message said.
Scenarios: plain, shell (runs `cat shell-token.txt` with whatever shell tool Codex
declares), patch (an apply_patch call that adds created-by-patch.txt), mcp (calls the
declared tool whose name ends in `echo`, i.e. an MCP server's echo tool, after a
`tool_search` for it when Codex deferred its MCP tools), text (a plain
answer, no reasoning), tool (calls the `get_weather` function, for SDK tests).

Faults: every distinct request (same messages = same model turn) first gets the fault
sequence, one fault per attempt (default "429,cut": a 429, then a stream cut after half of
its events), and only then its answer. A retrying proxy hides them; a client alone would not.

Control routes (for the test driver, never used by clients):
  POST /__faults  body = new fault sequence ("" for none); clears the log and the turns
  GET  /__log     JSON list of what was served: path, fault or answer, the request body

Listens on 127.0.0.1 only. Writes the bound port to --port-file when given.
"""

import hashlib
import json
import os
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mock_upstream import MockHandler, faults_main  # noqa: E402  (the directory is put on the path just above)

CHAT_PATHS = ("/v1/chat/completions", "/chat/completions")
SHELL_TOOLS = ("exec_command", "shell_command", "shell")
PATCH = "*** Begin Patch\n*** Add File: created-by-patch.txt\n+PATCH-CONTENT-5150\n+second line\n*** End Patch\n"


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

    def step(self, path, req):
        """The fault (or "ok") for this attempt of its turn, logged with the request."""
        key = hashlib.sha256(json.dumps(req.get("messages"), sort_keys=True).encode()).hexdigest()
        with self.lock:
            n = self.turns.get(key, 0)
            self.turns[key] = n + 1
            step = self.faults[n] if n < len(self.faults) else "ok"
            self.log.append({"path": path, "step": step, "turn": key[:12], "request": req})
            return step, len(self.log)


# ---- the scripted model ----------------------------------------------------------------------

def text_of(content):
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def tool_names(req):
    return [t.get("function", {}).get("name", "") for t in req.get("tools") or []]


def searched(messages):
    """Whether the model called `tool_search` in these messages (Codex defers MCP tools
    behind it for the models it knows: the search result is not yet the final tool)."""
    return any(c.get("function", {}).get("name") == "tool_search"
               for m in messages for c in m.get("tool_calls") or [])


def decide(req):
    """What the model says next: ("text", reasoning, text) or ("call", name, arguments)."""
    messages = req.get("messages") or []
    scenario = None
    for m in messages:
        if m.get("role") == "user":
            found = re.search(r"\[\[scenario:(\w+)\]\]", text_of(m.get("content")))
            if found:
                scenario = found.group(1)
    if scenario is None:
        return ("text", None, "MOCK: no [[scenario:...]] marker in the user messages")
    last = messages[-1] if messages else {}
    if last.get("role") == "tool" and not searched(messages[-2:]):
        said = text_of(last.get("content"))
        if scenario == "shell":
            token = re.search(r"SHELL-TOKEN-[0-9a-f]+", said)
            said = token.group(0) if token else said
        return ("text", None, "DONE-%s. The tool said: %s" % (scenario, said.strip()[:400]))
    names = tool_names(req)
    if scenario == "plain":
        return ("text", "The user wants the plain answer; no tool needed.",
                "PLAIN-ANSWER-2718: the chat-only mock answered through the adapter.")
    if scenario == "text":
        return ("text", None, "SDK-TEXT-ANSWER: hello from the chat mock.")
    if scenario == "tool":
        return ("call", "get_weather", json.dumps({"city": "Paris"}))
    if scenario == "shell":
        for name in SHELL_TOOLS:
            if name in names:
                if name == "exec_command":
                    return ("call", name, json.dumps({"cmd": "cat shell-token.txt"}))
                if name == "shell_command":
                    return ("call", name, json.dumps({"command": "cat shell-token.txt"}))
                return ("call", name, json.dumps({"command": ["bash", "-lc", "cat shell-token.txt"]}))
        return ("text", None, "MOCK: no shell tool among %s" % names)
    if scenario == "patch":
        if "apply_patch" in names:
            return ("call", "apply_patch", json.dumps({"input": PATCH}))
        return ("text", None, "MOCK: no apply_patch tool among %s" % names)
    if scenario == "mcp":
        echo = [n for n in names if n.endswith("echo") and n != "echo"]
        if echo:
            return ("call", echo[0], json.dumps({"message": "MCP-ECHO-4242"}))
        if "tool_search" in names and not searched(messages):
            return ("call", "tool_search", json.dumps({"query": "echo", "limit": 8}))
        return ("text", None, "MOCK: no MCP echo tool among %s" % names)
    return ("text", None, "MOCK: unknown scenario %s" % scenario)


def chunks(decision, model, n):
    """The chat stream for a decision: pieces of text or of arguments, usage, [DONE]."""
    base = {"id": "chatcmpl-mock%04d" % n, "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model, "system_fingerprint": "fp_mock"}

    def chunk(delta, finish=None):
        return dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": finish,
                                    "logprobs": None}])

    out = [chunk({"role": "assistant", "content": ""})]
    if decision[0] == "text":
        _, reasoning, text = decision
        for piece in split(reasoning or ""):
            out.append(chunk({"reasoning_content": piece}))
        for piece in split(text):
            out.append(chunk({"content": piece}))
        out.append(chunk({}, "stop"))
    else:
        _, name, arguments = decision
        call = {"index": 0, "id": "call_mock%04d" % n, "type": "function",
                "function": {"name": name, "arguments": ""}}
        out.append(chunk({"tool_calls": [call]}))
        for piece in split(arguments):
            out.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
        out.append(chunk({}, "tool_calls"))
    out.append(dict(base, choices=[], usage={"prompt_tokens": 50, "completion_tokens": 20,
                                             "total_tokens": 70}))
    return ["data: %s\n\n" % json.dumps(c) for c in out] + ["data: [DONE]\n\n"]


def split(text, size=9):
    return [text[i:i + size] for i in range(0, len(text), size)]


def completion(decision, model, n):
    """The non-streaming chat.completion for a decision."""
    message = {"role": "assistant", "content": None}
    finish = "stop"
    if decision[0] == "text":
        message["content"] = decision[2]
    else:
        finish = "tool_calls"
        message["tool_calls"] = [{"id": "call_mock%04d" % n, "type": "function",
                                  "function": {"name": decision[1], "arguments": decision[2]}}]
    return {"id": "chatcmpl-mock%04d" % n, "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70}}


# ---- HTTP ------------------------------------------------------------------------------------

class Handler(MockHandler):
    name = "chat mock"

    def not_found(self):
        self.send_json(404, {"error": {"message": "Not Found: this server speaks only Chat Completions",
                                       "type": "invalid_request_error", "code": None}})

    def do_GET(self):
        if self.path == "/__log":
            self.send_json(200, self.server.state.log)
        else:
            self.not_found()

    def do_POST(self):
        raw = self.body()
        if self.path == "/__faults":
            self.server.state.reset(raw.decode())
            self.send_json(200, {"ok": True})
            return
        path = self.path.split("?")[0]
        if path not in CHAT_PATHS:
            try:
                body = json.loads(raw or b"null")
            except ValueError:
                body = None
            self.server.state.log.append({"path": path, "step": "404", "turn": "", "request": body})
            self.not_found()
            return
        req = json.loads(raw or b"{}")
        step, n = self.server.state.step(path, req)
        if step == "429":
            self.send_json(429, {"error": {"message": "Rate limit reached (chat mock).",
                                           "type": "rate_limit_exceeded", "code": "rate_limit_exceeded"}},
                           [("retry-after-ms", "30")])
            return
        if step == "500":
            self.send_json(500, {"error": {"message": "upstream unavailable (chat mock)",
                                           "type": "server_error", "code": None}})
            return
        decision = decide(req)
        model = req.get("model") or "chat-mock"
        if not req.get("stream"):
            self.send_json(200, completion(decision, model, n))
            return
        frames = chunks(decision, model, n)
        if step == "cut":
            frames = frames[: len(frames) // 2]
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for frame in frames:
            data = frame.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()
        if step == "cut":
            self.cut()
            return
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def main():
    faults_main(Handler, State, "chat mock", __doc__)


if __name__ == "__main__":
    main()
