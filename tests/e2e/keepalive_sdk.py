#!/usr/bin/env python3
"""The `openai` Python SDK through a proxy with KEEPALIVE_SECONDS=1 and a slow upstream.

The SDK is not Codex, so its keepalives are SSE comments (`: keepalive`): the SDK's
`responses.stream()` helper raises on any data event before `response.created`, and comments
reset its read timeout all the same. Asserted:
  - responses.create(stream=True), iterated: the answer's events only (no keepalive event
    leaks to the caller), the whole text;
  - responses.stream() + get_final_response(): completed, the whole text;
  - after an exhausted retry budget once the head is out (three 429s with `retry-after: 1`,
    the proxy's RETRY_ATTEMPTS=3): both raise an APIError carrying the proxy's message (the
    failure event's top-level `error`), with no event before it.

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


def stream_helper():
    """responses.stream() + get_final_response() on a slow answer."""
    script("sleep%g" % SLOW)
    start = time.monotonic()
    with client.responses.stream(model="mock-model", input="say the magic words") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    took = time.monotonic() - start
    assert final.status == "completed" and final.output_text == ANSWER, (final.status, final.output_text)
    assert "keepalive" not in kinds, kinds[:5]
    assert took >= SLOW - 0.5, "answered after %.1fs: the upstream was not slow" % took
    return "responses.stream(): completed after %.1fs, %d events, the whole text" % (took, len(kinds))


def stream_helper_exhausted():
    script("429,429,429")
    try:
        with client.responses.stream(model="mock-model", input="say the magic words") as stream:
            kinds = [event.type for event in stream]
    except openai.APIError as e:
        assert "3 attempt(s)" in str(e.message), e.message
        return "responses.stream(): APIError %.90s" % e.message
    raise AssertionError("no APIError after an exhausted budget; events: %s" % kinds)


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
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed", (kinds[:2], kinds[-2:])
    assert "keepalive" not in kinds, "a keepalive event reached the SDK's caller"
    assert first >= SLOW - 0.5, "first event after %.1fs: the upstream was not slow" % first
    return "create(stream=True): the answer's %d events, the first after %.1fs" % (len(kinds), first)


def exhausted_budget():
    script("429,429,429")
    kinds = []
    try:
        for event in client.responses.create(model="mock-model", input="say the magic words", stream=True):
            kinds.append(event.type)
    except openai.APIError as e:
        message = str(e.message)
        assert "3 attempt(s)" in message, message
        assert not kinds, "events before the failure: %s" % kinds
        return "APIError: %.90s" % message
    raise AssertionError("no APIError after an exhausted budget; events: %s" % kinds)


def main():
    passed = failed = 0
    for case in (create_streamed, exhausted_budget, stream_helper, stream_helper_exhausted):
        try:
            print("ok   %s: %s" % (case.__name__, case()))
            passed += 1
        except Exception:
            failed += 1
            print("FAIL %s" % case.__name__)
            traceback.print_exc(file=sys.stdout)
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
