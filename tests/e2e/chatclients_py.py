#!/usr/bin/env python3
"""Python chat-completions clients through codex-shield on a Responses-only upstream.

Run by tests/e2e/chatclients.sh with PROXY_URL (the proxy's /v1, started with
UPSTREAM_API=responses-only in front of tests/e2e/responses_mock.py, which answers every new
turn with a 429 and a cut stream before the real answer) and one argument, the client:
  openai     the `openai` SDK's chat.completions: create streamed and not, a tool round trip
             with create and with the stream helper (`chat.completions.stream`, whose
             accumulator is strict about chunk order);
  langchain  langchain-openai's ChatOpenAI: invoke, stream, a bind_tools round trip;
  agents     the OpenAI Agents SDK with OpenAIChatCompletionsModel: an agent that calls two
             tools (in one turn, in parallel) and then answers, run and run_streamed.
With SUMMARIES=1 (a proxy with REASONING_SUMMARIES=true) the openai SDK and the Agents SDK
also get the mock's reasoning summary as `reasoning_content` (the Agents SDK turns it into a
reasoning item per model turn); without it, none.
Every client's own retries are off: each fault must be absorbed by the proxy.
Prints one line per check and "N passed, N failed"; exits 1 on any failure.
"""

import asyncio
import json
import os
import sys
import traceback

MODEL = "gpt-5.1-codex"
PLAIN = "PLAIN-ANSWER-4711: the Responses-only mock answered."
REASONING = "The user asked something; I decide what to do next."  # the mock's summary
SUMMARIES = os.environ.get("SUMMARIES") == "1"
WEATHER_OUT = "18C and sunny in Paris"
TIME_OUT = "12:00 in Paris"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"], "additionalProperties": False}}}

passed = failed = 0


def check(name, fn):
    global passed, failed
    try:
        fn()
        passed += 1
        print("ok   %s: %s" % (sys.argv[1], name))
    except Exception:  # report every failure, then go on with the next check
        failed += 1
        print("FAIL %s: %s" % (sys.argv[1], name))
        traceback.print_exc(file=sys.stdout)


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


# ---- openai ----------------------------------------------------------------------------------

def openai_checks():
    import openai

    client = openai.OpenAI(base_url=os.environ["PROXY_URL"], api_key="client-placeholder",
                           max_retries=0, timeout=60)
    chat = client.chat.completions

    def create_text():
        r = chat.create(model=MODEL, messages=[{"role": "user", "content": "[create] hi"}])
        expect(r.choices[0].message.content == PLAIN, r)
        expect(r.choices[0].finish_reason == "stop", r.choices[0].finish_reason)
        reasoning = getattr(r.choices[0].message, "reasoning_content", None)
        expect(reasoning == (REASONING if SUMMARIES else None), "reasoning_content %r" % reasoning)

    def stream_text():
        got, reasoning, finish, usage = [], [], None, None
        for c in chat.create(model=MODEL, messages=[{"role": "user", "content": "[stream] hi"}], stream=True,
                             stream_options={"include_usage": True}):
            usage = c.usage or usage
            for choice in c.choices:
                got.append(choice.delta.content or "")
                reasoning.append(getattr(choice.delta, "reasoning_content", None) or "")
                finish = choice.finish_reason or finish
        expect("".join(got) == PLAIN, got)
        expect(finish == "stop", finish)
        expect("".join(reasoning) == (REASONING if SUMMARIES else ""), "reasoning_content %r" % reasoning)
        expect(usage is not None and usage.total_tokens > 0, "usage %r" % usage)

    def round_trip(first):
        def run():
            history = [{"role": "user", "content": "[%s] weather in Paris?" % first.__name__}]
            message, finish = first(history)
            expect(finish == "tool_calls", finish)
            calls = message.tool_calls or []
            expect(len(calls) == 1 and calls[0].function.name == "get_weather", message)
            expect(json.loads(calls[0].function.arguments) == {"city": "Paris"}, calls[0].function.arguments)
            history += [message.model_dump(exclude_none=True),
                        {"role": "tool", "tool_call_id": calls[0].id, "content": WEATHER_OUT}]
            r = chat.create(model=MODEL, messages=history, tools=[WEATHER])
            expect(r.choices[0].message.content == "FINAL-ANSWER: " + WEATHER_OUT, r.choices[0].message)
        return run

    def by_create(history):
        r = chat.create(model=MODEL, messages=history, tools=[WEATHER])
        return r.choices[0].message, r.choices[0].finish_reason

    def by_stream_helper(history):
        with chat.stream(model=MODEL, messages=history, tools=[WEATHER]) as s:
            r = s.get_final_completion()
        return r.choices[0].message, r.choices[0].finish_reason

    check("chat.completions.create, not streamed: text", create_text)
    check("chat.completions.create, streamed: text", stream_text)
    check("tool round trip, create", round_trip(by_create))
    check("tool round trip, chat.completions.stream helper", round_trip(by_stream_helper))


# ---- langchain -------------------------------------------------------------------------------

def langchain_checks():
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model=MODEL, base_url=os.environ["PROXY_URL"], api_key="client-placeholder",
                     max_retries=0, timeout=60, use_responses_api=False)

    def invoke_text():
        r = llm.invoke("[lc-invoke] hi")
        expect(r.content == PLAIN, r)

    def stream_text():
        got = "".join(c.content for c in llm.stream("[lc-stream] hi"))
        expect(got == PLAIN, got)

    def round_trip():
        with_tools = llm.bind_tools([WEATHER])
        history = [HumanMessage("[lc-tools] weather in Paris?")]
        ai = with_tools.invoke(history)
        expect(len(ai.tool_calls) == 1 and ai.tool_calls[0]["name"] == "get_weather", ai)
        expect(ai.tool_calls[0]["args"] == {"city": "Paris"}, ai.tool_calls)
        history += [ai, ToolMessage(WEATHER_OUT, tool_call_id=ai.tool_calls[0]["id"])]
        final = with_tools.invoke(history)
        expect(final.content == "FINAL-ANSWER: " + WEATHER_OUT, final)

    check("ChatOpenAI.invoke: text", invoke_text)
    check("ChatOpenAI.stream: text", stream_text)
    check("ChatOpenAI.bind_tools round trip", round_trip)


# ---- agents ----------------------------------------------------------------------------------

def agents_checks():
    from agents import Agent, OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)  # no trace upload to api.openai.com
    ran = []

    @function_tool
    def get_weather(city: str) -> str:
        """Weather of a city."""
        ran.append(("get_weather", city))
        return WEATHER_OUT

    @function_tool
    def get_time(city: str) -> str:
        """Local time in a city."""
        ran.append(("get_time", city))
        return TIME_OUT

    def agent(client):
        return Agent(name="Weather agent", instructions="Answer with the tools.",
                     model=OpenAIChatCompletionsModel(model=MODEL, openai_client=client),
                     tools=[get_weather, get_time])

    def with_client(go):
        """Run `go(client)` in its own event loop, the client closed before the loop is."""
        async def main():
            async with AsyncOpenAI(base_url=os.environ["PROXY_URL"], api_key="client-placeholder",
                                   max_retries=0, timeout=60) as client:
                return await go(client)
        return asyncio.run(main())

    want = "FINAL-ANSWER: %s | %s" % (WEATHER_OUT, TIME_OUT)

    def reasoned(result):
        """Each model turn's reasoning item (2) with SUMMARIES, none without."""
        texts = [s.text for i in result.new_items if i.type == "reasoning_item" for s in i.raw_item.summary]
        expect(texts == ([REASONING] * 2 if SUMMARIES else []), "reasoning items %r" % texts)

    def run():
        ran.clear()
        result = with_client(lambda client: Runner.run(agent(client), "[agents-run] weather and time in Paris?"))
        expect(result.final_output == want, result.final_output)
        expect(sorted(ran) == [("get_time", "Paris"), ("get_weather", "Paris")], ran)
        reasoned(result)

    def run_streamed():
        ran.clear()

        async def go(client):
            result = Runner.run_streamed(agent(client), "[agents-streamed] weather and time in Paris?")
            async for _ in result.stream_events():
                pass
            return result

        result = with_client(go)
        expect(result.final_output == want, result.final_output)
        expect(sorted(ran) == [("get_time", "Paris"), ("get_weather", "Paris")], ran)
        reasoned(result)

    check("Runner.run: two tool calls, then the answer", run)
    check("Runner.run_streamed: two tool calls, then the answer", run_streamed)


def main():
    {"openai": openai_checks, "langchain": langchain_checks, "agents": agents_checks}[sys.argv[1]]()
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
