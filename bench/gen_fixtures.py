#!/usr/bin/env python3
"""Generate the benchmark fixtures in bench/fixtures/ (deterministic; output is committed).

  responses.sse      ~15 KB Responses API stream (created, in_progress, output_item.added,
                     content_part.added, 40 output_text.delta, output_text.done,
                     content_part.done, output_item.done, completed)
  responses_1mb.sse  the same shape with enough deltas to make ~1 MiB (memory test)
  chat_1mb.sse       a ~1 MiB chat stream (memory test of the translated path)
  chat.sse           Azure-style Chat Completions stream: a first chunk with "choices": []
                     and prompt_filter_results, 40 content chunks, a finish chunk, data: [DONE]
  request_responses.json / request_chat.json   the POST bodies (stream: true)
  responses_failed.sse  a stream ending in response.failed with a retryable server_error
"""
import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures")
CREATED = 1764072000
MODEL = "gpt-4.1-2025-04-14"
WORDS = ("the proxy buffers every upstream event until the terminal event arrives then checks "
         "for errors and retries transient failures before the client sees a single byte of "
         "output so that flaky upstreams look reliable from the outside while latency stays "
         "low and memory per request stays bounded by the size of one answer").split()


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def sse(event, obj):
    return "event: %s\ndata: %s\n\n" % (event, dumps(obj))


def response_obj(rid, status, output, usage, error=None):
    return {
        "id": rid, "object": "response", "created_at": CREATED, "status": status,
        "background": False, "error": error, "incomplete_details": None,
        "instructions": "You are a helpful assistant.", "max_output_tokens": None,
        "max_tool_calls": None, "model": MODEL, "output": output,
        "parallel_tool_calls": True, "previous_response_id": None,
        "prompt_cache_key": None,
        "reasoning": {"effort": None, "summary": None}, "safety_identifier": None,
        "service_tier": "default", "store": True, "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto", "tools": [], "top_logprobs": 0, "top_p": 1.0,
        "truncation": "disabled", "usage": usage, "user": None, "metadata": {},
    }


def deltas(rng, n, words_per_delta):
    out = []
    for _ in range(n):
        k = rng.randint(max(1, words_per_delta - 2), words_per_delta + 2)
        out.append(" " + " ".join(rng.choice(WORDS) for _ in range(k)))
    return out


def obfuscation(rng, delta):
    # OpenAI pads deltas with a random "obfuscation" string (stream_options.include_obfuscation)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "".join(rng.choice(alphabet) for _ in range(max(2, 16 - len(delta) % 16)))


def responses_stream(rng, n_deltas, words_per_delta, tag, fail=False):
    rid = "resp_68%s%s" % (tag, "0123456789abcdef" * 3)
    mid = "msg_68%s%s" % (tag, "fedcba9876543210" * 3)
    seq = 0
    parts = []

    def ev(event, obj):
        nonlocal seq
        obj = dict({"type": event, "sequence_number": seq}, **obj)
        seq += 1
        parts.append(sse(event, obj))

    ev("response.created", {"response": response_obj(rid, "in_progress", [], None)})
    ev("response.in_progress", {"response": response_obj(rid, "in_progress", [], None)})
    item0 = {"id": mid, "type": "message", "status": "in_progress", "content": [], "role": "assistant"}
    ev("response.output_item.added", {"output_index": 0, "item": item0})
    empty_part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
    ev("response.content_part.added", {"item_id": mid, "output_index": 0, "content_index": 0, "part": empty_part})
    ds = deltas(rng, n_deltas, words_per_delta)
    if fail:
        ds = ds[: max(1, n_deltas // 2)]
    for d in ds:
        ev("response.output_text.delta", {"item_id": mid, "output_index": 0, "content_index": 0,
                                          "delta": d, "logprobs": [], "obfuscation": obfuscation(rng, d)})
    text = "".join(ds).strip()
    if fail:
        err = {"code": "server_error", "message": "The server had an error while processing your request. Sorry about that!"}
        ev("response.failed", {"response": response_obj(rid, "failed", [], None, error=err)})
        return "".join(parts)
    ev("response.output_text.done", {"item_id": mid, "output_index": 0, "content_index": 0, "text": text, "logprobs": []})
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
    ev("response.content_part.done", {"item_id": mid, "output_index": 0, "content_index": 0, "part": part})
    item = {"id": mid, "type": "message", "status": "completed", "content": [part], "role": "assistant"}
    ev("response.output_item.done", {"output_index": 0, "item": item})
    out_tokens = len(text.split())
    usage = {"input_tokens": 37, "input_tokens_details": {"cached_tokens": 0},
             "output_tokens": out_tokens, "output_tokens_details": {"reasoning_tokens": 0},
             "total_tokens": 37 + out_tokens}
    ev("response.completed", {"response": response_obj(rid, "completed", [item], usage)})
    return "".join(parts)


CF_SAFE = {k: {"filtered": False, "severity": "safe"} for k in ("hate", "self_harm", "sexual", "violence")}


def chat_stream(rng, n_chunks):
    cid = "chatcmpl-BX7bench0123456789abcdefGHIJ"
    base = {"created": CREATED, "id": cid, "model": "gpt-4o-2024-11-20",
            "object": "chat.completion.chunk", "system_fingerprint": "fp_ee1d74bde0"}
    lines = []

    def chunk(obj):
        lines.append("data: %s\n\n" % dumps(obj))

    # Azure: the first chunk carries only the prompt filter results, with no choices.
    chunk({"choices": [], "created": 0, "id": "", "model": "", "object": "",
           "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {
               "hate": {"filtered": False, "severity": "safe"},
               "jailbreak": {"filtered": False, "detected": False},
               "self_harm": {"filtered": False, "severity": "safe"},
               "sexual": {"filtered": False, "severity": "safe"},
               "violence": {"filtered": False, "severity": "safe"}}}]})
    chunk(dict(base, choices=[{"content_filter_results": {}, "delta": {"content": "", "refusal": None, "role": "assistant"},
                               "finish_reason": None, "index": 0, "logprobs": None}]))
    for d in deltas(rng, n_chunks, 3):
        chunk(dict(base, choices=[{"content_filter_results": CF_SAFE, "delta": {"content": d},
                                   "finish_reason": None, "index": 0, "logprobs": None}]))
    chunk(dict(base, choices=[{"content_filter_results": {}, "delta": {}, "finish_reason": "stop",
                               "index": 0, "logprobs": None}]))
    lines.append("data: [DONE]\n\n")
    return "".join(lines)


def write(name, text):
    path = os.path.join(OUT, name)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    print("%-24s %8d bytes" % (name, len(text.encode())))


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = random.Random(20251125)
    write("responses.sse", responses_stream(rng, 40, 2, "a1b2"))
    n = 4000
    for _ in range(6):  # converge on ~1 MiB (the text is repeated in the done events)
        big = responses_stream(random.Random(7), n, 2, "c3d4")
        n = max(1, int(n * (1 << 20) / len(big.encode())))
    while len(big.encode()) < 1 << 20:
        n += 10
        big = responses_stream(random.Random(7), n, 2, "c3d4")
    write("responses_1mb.sse", big)
    write("responses_failed.sse", responses_stream(rng, 40, 2, "e5f6", fail=True))
    write("chat.sse", chat_stream(rng, 40))
    # the translated path's memory test (issue 9): a ~1 MiB chat answer, its own generator so
    # that the fixtures above stay byte for byte what they were
    n = 8000
    for _ in range(6):
        big_chat = chat_stream(random.Random(11), n)
        n = max(1, int(n * (1 << 20) / len(big_chat.encode())))
    while len(big_chat.encode()) < 1 << 20:
        n += 10
        big_chat = chat_stream(random.Random(11), n)
    write("chat_1mb.sse", big_chat)
    write("request_responses.json", dumps({
        "model": "gpt-4.1", "stream": True, "store": False,
        "instructions": "You are a helpful assistant.",
        "input": [{"role": "user", "content": [{"type": "input_text",
                   "text": "Explain in a few sentences why a retrying proxy buffers the whole stream."}]}],
    }) + "\n")
    write("request_chat.json", dumps({
        "model": "gpt-4o", "stream": True,
        "messages": [{"role": "system", "content": "You are a helpful assistant."},
                     {"role": "user", "content": "Explain in a few sentences why a retrying proxy buffers the whole stream."}],
    }) + "\n")


if __name__ == "__main__":
    main()
