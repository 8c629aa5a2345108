#!/usr/bin/env python3
"""The `openai` Python SDK through a proxy with KEEPALIVE_SECONDS=1 and a slow upstream.

Asserted:
  - responses.create(stream=True), iterated: keepalive events first, then the answer's events
    and the whole text;
  - the same after an exhausted retry budget once the head is out (three 429s with
    `retry-after: 1`, the proxy's RETRY_ATTEMPTS=3): the SDK raises an APIError carrying the
    proxy's message (the failure event's top-level `error`).
Recorded (printed as "known", not counted): responses.stream() + get_final_response(). The
SDK's stream helper requires `response.created` before any other event and raises
RuntimeError on a keepalive event that comes first, which is where the proxy sends them.

Environment: PROXY_URL (http://127.0.0.1:PORT/v1), MOCK_URL (http://127.0.0.1:PORT), SLOW
(seconds the upstream waits). Prints "N passed, N failed" last.
"""

import os
import sys
import time
import traceback
import urllib.request

import openai

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mock_upstream import ANSWER  # noqa: E402

PROXY_URL = os.environ["PROXY_URL"]
MOCK_URL = os.environ["MOCK_URL"]
SLOW = float(os.environ.get("SLOW", "6"))

client = openai.OpenAI(base_url=PROXY_URL, api_key="sk-placeholder", max_retries=0, timeout=60)


def script(steps):
    req = urllib.request.Request(MOCK_URL + "/__script", data=steps.encode(), method="POST")
    urllib.request.urlopen(req, timeout=5).read()


def stream_helper(steps):
    """responses.stream() + get_final_response(); what happened, in one line."""
    script(steps)
    start = time.monotonic()
    try:
        with client.responses.stream(model="mock-model", input="say the magic words") as stream:
            kinds = [event.type for event in stream]
            final = stream.get_final_response()
    except RuntimeError as e:
        return "RuntimeError after %.1fs: %s" % (time.monotonic() - start, e)
    except openai.APIError as e:
        return "APIError after %.1fs: %.90s" % (time.monotonic() - start, e.message)
    return "%s after %.1fs, %d events (%d keepalive), text %s" % (
        final.status, time.monotonic() - start, len(kinds), kinds.count("keepalive"),
        "complete" if final.output_text == ANSWER else "WRONG")


def create_streamed():
    script("sleep%g" % SLOW)
    start = time.monotonic()
    kinds, text, first = [], "", None
    for event in client.responses.create(model="mock-model", input="say the magic words", stream=True):
        if first is None:
            first = time.monotonic() - start
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            text += event.delta
    assert text == ANSWER, repr(text)
    assert kinds[-1] == "response.completed", kinds[-3:]
    keepalives = kinds.count("keepalive")
    # The SDK hands the keepalive events to the caller like any other event: they come first.
    assert keepalives >= int(SLOW) - 2, "only %d keepalive events: %s" % (keepalives, kinds[:8])
    assert kinds[:keepalives] == ["keepalive"] * keepalives, kinds[:keepalives + 2]
    assert first < SLOW - 2, "first event after %.1fs: no keepalive" % first
    return "create(stream=True): %d keepalive events first (the first after %.1fs)" % (keepalives, first)


def exhausted_budget():
    script("429,429,429")
    kinds = []
    try:
        for event in client.responses.create(model="mock-model", input="say the magic words", stream=True):
            kinds.append(event.type)
    except openai.APIError as e:
        message = str(e.message)
        assert "3 attempt(s)" in message, message
        assert kinds and set(kinds) == {"keepalive"}, "before the failure: %s" % kinds
        return "APIError after %d keepalive events: %.90s" % (len(kinds), message)
    raise AssertionError("no APIError after an exhausted budget; events: %s" % kinds)


def main():
    passed = failed = 0
    for case in (create_streamed, exhausted_budget):
        try:
            print("ok   %s: %s" % (case.__name__, case()))
            passed += 1
        except Exception:
            failed += 1
            print("FAIL %s" % case.__name__)
            traceback.print_exc(file=sys.stdout)
    print("known stream() answer: %s" % stream_helper("sleep%g" % SLOW))
    print("known stream() failure: %s" % stream_helper("429,429,429"))
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
