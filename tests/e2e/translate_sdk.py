#!/usr/bin/env python3
"""The official `openai` SDK accepts the Responses streams that codex-shield synthesises
from chat answers.

The golden files tests/fixtures/translate/*.responses.sse are byte for byte what
`translate::events::to_responses` produces (tests/translate.rs checks that). This script
serves each one from a local HTTP server on 127.0.0.1 and reads it with
`client.responses.stream(...).get_final_response()`, whose accumulator is strict about
event order, item identities and sequence numbers, then checks the final response.

Usage: python3 tests/e2e/translate_sdk.py   (with `openai` importable; prints "N passed, N failed")
"""

import glob
import http.server
import os
import sys
import threading
import traceback

import openai

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "translate")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    body = b""

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(Handler.body)))
        self.end_headers()
        self.wfile.write(Handler.body)


# What each fixture's final response must hold: status, and (type, name or text) per item.
EXPECTED = {
    "text_azure_crlf": ("completed", [("message", "Hello, world!")]),
    "parallel_tools": ("completed", [("message", "Reading and patching."), ("function_call", "read"),
                                     ("custom_tool_call", "apply_patch"), ("function_call", "shell")]),
    "reasoning": ("completed", [("reasoning", None), ("message", "Hi!")]),
    "raw_patch": ("completed", [("custom_tool_call", "apply_patch")]),
    "length": ("incomplete", [("message", "The answer is cut")]),
    "final_error": ("failed", []),
}


def summary(item):
    if item.type == "message":
        return (item.type, "".join(c.text for c in item.content if c.type == "output_text"))
    return (item.type, getattr(item, "name", None))


def check(client, name):
    status, items = EXPECTED[name]
    with client.responses.stream(model="m", input="q") as stream:
        if status == "completed":
            final = stream.get_final_response()
        else:
            # The accumulator still checks every event; the terminal one carries the response.
            terminal = [e for e in stream if e.type in ("response.incomplete", "response.failed")]
            assert len(terminal) == 1, [e.type for e in terminal]
            final = terminal[0].response
    assert final.status == status, final.status
    assert [summary(i) for i in final.output] == items, [summary(i) for i in final.output]
    if status == "failed":
        assert final.error.code == "context_length_exceeded", final.error
        assert "maximum context length" in final.error.message, final.error
    if status == "completed":
        assert final.usage is None or final.usage.total_tokens >= 0
    again = client.responses.create(model="m", input="q", stream=True)
    kinds = [e.type for e in again]
    assert kinds[0] == "response.created" and kinds[-1].startswith("response."), kinds


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = openai.OpenAI(base_url="http://127.0.0.1:%d/v1" % server.server_address[1],
                           api_key="sk-placeholder", max_retries=0, timeout=20)
    passed = failed = 0
    paths = sorted(glob.glob(os.path.join(FIXTURES, "*.responses.sse")))
    for path in paths:
        name = os.path.basename(path)[: -len(".responses.sse")]
        with open(path, "rb") as f:
            Handler.body = f.read()
        try:
            check(client, name)
            passed += 1
            print("ok   sdk accepts %s" % name)
        except Exception:  # noqa: BLE001
            failed += 1
            print("FAIL sdk accepts %s" % name)
            traceback.print_exc()
    server.shutdown()
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed or not paths else 0)


if __name__ == "__main__":
    main()
