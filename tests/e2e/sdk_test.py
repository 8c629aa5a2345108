#!/usr/bin/env python3
"""The official `openai` Python SDK through codex-shield against the failing mock.

Each case scripts the mock to fail several times (429 with a retry hint, an
in-stream `error` event, a cut stream, `response.failed`) before it answers,
turns the SDK's own retries off (max_retries=0), and asserts that the SDK gets
the mock's whole answer at the first try: streamed and not streamed, for both
the Responses and the Chat Completions APIs.

Environment: PROXY_URL (http://127.0.0.1:PORT/v1), MOCK_URL (http://127.0.0.1:PORT),
PROXY_API_KEY (optional key the proxy expects).  Prints "N passed, N failed".
"""

import json
import os
import sys
import traceback
import urllib.request

import openai

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mock_upstream import ANSWER  # noqa: E402

PROXY_URL = os.environ["PROXY_URL"]
MOCK_URL = os.environ["MOCK_URL"]
FAILURES = os.environ.get("SDK_FAILURES", "429ms,error,cut,failed")  # "" checks the mock alone
ATTEMPTS = len([s for s in FAILURES.split(",") if s]) + 1

client = openai.OpenAI(base_url=PROXY_URL, api_key=os.environ.get("PROXY_API_KEY") or "sk-placeholder",
                       max_retries=0, timeout=60)


def script(steps):
    req = urllib.request.Request(MOCK_URL + "/__script", data=steps.encode(), method="POST")
    urllib.request.urlopen(req, timeout=5).read()


def mock_log():
    return json.loads(urllib.request.urlopen(MOCK_URL + "/__log", timeout=5).read())


def check_upstream(path, attempts):
    log = mock_log()
    assert len(log) == attempts, "upstream saw %d requests, expected %d: %s" % (
        len(log), attempts, [r["step"] for r in log])
    assert all(r["path"] == path for r in log), [r["path"] for r in log]
    assert all(r["stream"] is True for r in log), "proxy did not force stream:true upstream"


def responses_plain():
    script(FAILURES + ("," if FAILURES else "") + "ok")
    resp = client.responses.create(model="mock-model", input="say the magic words")
    assert resp.status == "completed", resp.status
    assert resp.output_text == ANSWER, repr(resp.output_text)
    check_upstream("/v1/responses", ATTEMPTS)


def responses_streamed():
    script(FAILURES + ("," if FAILURES else "") + "okcrlf")
    text, types = [], []
    with client.responses.create(model="mock-model", input="say the magic words",
                                 stream=True) as stream:
        for event in stream:
            types.append(event.type)
            if event.type == "response.output_text.delta":
                text.append(event.delta)
    assert "".join(text) == ANSWER, repr("".join(text))
    assert types[0] == "response.created" and types[-1] == "response.completed", types
    assert "error" not in types and "response.failed" not in types, types
    check_upstream("/v1/responses", ATTEMPTS)


def chat_plain():
    script(FAILURES + ("," if FAILURES else "") + "ok")
    resp = client.chat.completions.create(
        model="mock-model", messages=[{"role": "user", "content": "say the magic words"}])
    assert resp.choices[0].message.content == ANSWER, repr(resp.choices[0].message.content)
    assert resp.choices[0].finish_reason == "stop", resp.choices[0].finish_reason
    check_upstream("/v1/chat/completions", ATTEMPTS)


def chat_streamed():
    script(FAILURES + ("," if FAILURES else "") + "okcrlf")
    text, finish = [], None
    stream = client.chat.completions.create(
        model="mock-model", messages=[{"role": "user", "content": "say the magic words"}],
        stream=True)
    for chunk in stream:
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(text) == ANSWER, repr("".join(text))
    assert finish == "stop", finish
    check_upstream("/v1/chat/completions", ATTEMPTS)


def main():
    cases = [responses_plain, responses_streamed, chat_plain, chat_streamed]
    passed = failed = 0
    for case in cases:
        try:
            case()
            passed += 1
            print("ok   sdk %s" % case.__name__)
        except Exception:  # report every case, then fail the run
            failed += 1
            print("FAIL sdk %s" % case.__name__)
            traceback.print_exc(file=sys.stdout)
    print("openai %s: %d passed, %d failed" % (openai.__version__, passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
