#!/usr/bin/env python3
"""Why the Codex-only answer forms of src/codex.rs must stay Codex-only (openai SDK, mock direct).

Against the mock upstream (no proxy), with max_retries=0:
  - an SSE comment as keep-alive: `client.responses.stream(...).get_final_response()` works;
  - the Codex keep-alive / progress data events before `response.created`: the stream helper
    raises, while plain iteration (`create(stream=True)`) still yields the answer;
  - the Codex give-up form (400 text/plain) is an `openai.BadRequestError` without an
    OpenAI-shaped body, so other clients must keep getting the JSON error.
Environment: MOCK_URL (http://127.0.0.1:PORT). Prints one line per case, exits 1 on a mismatch.
"""

import json
import os
import sys
import urllib.request

import openai

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mock_upstream as m  # noqa: E402

MOCK_URL = os.environ["MOCK_URL"]
client = openai.OpenAI(base_url=MOCK_URL + "/v1", api_key="sk-placeholder", max_retries=0, timeout=30)


def post(path, data):
    urllib.request.urlopen(urllib.request.Request(MOCK_URL + path, data=data.encode(), method="POST"),
                           timeout=5).read()


def serve(prefix):
    """The next model request gets PREFIX then the mock's complete answer."""
    answer = "".join(m.sse(name, dict({"type": name, "sequence_number": 100 + i}, **payload))
                     for i, (name, payload) in enumerate(m.responses_events("ok", "mock-model", 1)))
    post("/__script", "raw")
    post("/__raw", json.dumps([{"status": 200, "headers": {"content-type": "text/event-stream"},
                                "chunks": [{"data": prefix}, {"data": answer}]}]))


def helper():
    with client.responses.stream(model="mock-model", input="hi") as stream:
        return stream.get_final_response().output_text


def iterate():
    text = [e.delta for e in client.responses.create(model="mock-model", input="hi", stream=True)
            if e.type == "response.output_text.delta"]
    return "".join(text)


def outcome(call):
    try:
        return "answer" if call() == m.ANSWER else "wrong answer"
    except openai.BadRequestError as e:
        return "BadRequestError body=%r" % (e.body,)
    except RuntimeError as e:
        return "RuntimeError: %s" % e


CASES = [
    # (name, prefix before the answer, call, expected outcome prefix)
    ("comment keep-alive, stream helper", ": keepalive\n\n", helper, "answer"),
    ("data keep-alive, stream helper", m.keepalive(0), helper, "RuntimeError: Expected to have received `response.created`"),
    ("progress events, stream helper", m.progress_events(m.PROGRESS[0], 0), helper, "RuntimeError: Expected to have received `response.created`"),
    ("data keep-alive + progress, plain iteration", m.keepalive(0) + m.progress_events(m.PROGRESS[0], 0), iterate, "answer"),
]


def main():
    failed = 0
    for name, prefix, call, expected in CASES:
        serve(prefix)
        got = outcome(call)
        ok = got.startswith(expected)
        failed += not ok
        print("%s %s: %s" % ("ok  " if ok else "FAIL", name, got))
    post("/__script", "giveup400")
    got = outcome(helper)
    ok = got.startswith("BadRequestError body=") and "'error'" not in got
    failed += not ok
    print("%s give-up 400 text/plain is not an OpenAI error for the SDK: %s" % ("ok  " if ok else "FAIL", got))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
