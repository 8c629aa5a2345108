#!/usr/bin/env python3
"""The official `openai` SDK's Responses client through codex-shield on a chat-only upstream.

Run by tests/e2e/adapter.sh with PROXY_URL (the proxy's /v1, started with UPSTREAM_API=chat)
and UPSTREAM=chat_mock or UPSTREAM=echo:
  chat_mock  tests/e2e/chat_mock.py, which answers every new turn with a 429 and a cut
             stream before the real answer: text and tool calls, streamed
             (`responses.stream(...).get_final_response()`, whose accumulator is strict about
             event order) and not (`responses.create(stream=False)`), and a tool round trip;
  echo       a third-party chat server that echoes the last user message: text only.
The SDK's own retries are off (max_retries=0): every fault must be absorbed by the proxy.
Prints one line per check and "N passed, N failed"; exits 1 on any failure.
"""

import json
import os
import sys
import traceback

import openai

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather of a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"], "additionalProperties": False},
           "strict": True}

passed = failed = 0


def check(name, fn):
    global passed, failed
    try:
        fn()
        passed += 1
        print("ok   sdk: " + name)
    except Exception:  # report every failure, then go on with the next check
        failed += 1
        print("FAIL sdk: " + name)
        traceback.print_exc(file=sys.stdout)


def streamed(client):
    def get(**kw):
        with client.responses.stream(**kw) as stream:
            return stream.get_final_response()
    return get


def created(client):
    return lambda **kw: client.responses.create(stream=False, **kw)


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def text_answer(get, prompt, want, usage=True):
    def run():
        r = get(model="chat-model", input=prompt)
        expect(r.status == "completed", "status %s" % r.status)
        expect(r.output_text == want, "output_text %r, want %r" % (r.output_text, want))
        if usage:  # the echo server reports none
            expect(r.usage is not None and r.usage.total_tokens > 0, "usage %r" % r.usage)
    return run


def tool_call(get):
    def run():
        r = get(model="chat-model", input="[[scenario:tool]] weather in Paris?", tools=[WEATHER])
        calls = [i for i in r.output if i.type == "function_call"]
        expect(r.status == "completed", "status %s" % r.status)
        expect(len(calls) == 1 and calls[0].name == "get_weather", "output %r" % r.output)
        expect(json.loads(calls[0].arguments) == {"city": "Paris"}, calls[0].arguments)
        expect(calls[0].call_id, "no call_id")
    return run


def tool_round_trip(get):
    def run():
        history = [{"role": "user", "content": "[[scenario:tool]] weather in Paris?"}]
        r = get(model="chat-model", input=history, tools=[WEATHER])
        call = next(i for i in r.output if i.type == "function_call")
        history += [{"type": "function_call", "call_id": call.call_id, "name": call.name,
                     "arguments": call.arguments},
                    {"type": "function_call_output", "call_id": call.call_id,
                     "output": "18C and sunny"}]
        r = get(model="chat-model", input=history, tools=[WEATHER])
        expect(r.output_text == "DONE-tool. The tool said: 18C and sunny", r.output_text)
    return run


def main():
    client = openai.OpenAI(base_url=os.environ["PROXY_URL"], api_key="client-placeholder",
                           max_retries=0, timeout=60)
    if os.environ.get("UPSTREAM") == "echo":
        prompt = "ECHO-THIRD-PARTY-31337 says hello"
        check("echo server: responses.stream text", text_answer(streamed(client), prompt, prompt, False))
        check("echo server: responses.create text", text_answer(created(client), prompt, prompt, False))
    else:
        want = "SDK-TEXT-ANSWER: hello from the chat mock."
        for label, get in (("responses.stream", streamed(client)), ("responses.create", created(client))):
            check(label + " text", text_answer(get, "[[scenario:text]] hi", want))
            check(label + " tool call", tool_call(get))
            check(label + " tool round trip", tool_round_trip(get))
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
