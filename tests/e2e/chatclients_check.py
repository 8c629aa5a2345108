#!/usr/bin/env python3
"""What tests/e2e/responses_mock.py saw, judged for tests/e2e/chatclients.sh (stdlib only).

Reads the mock's /__log (JSON) on stdin; prints one line saying what it found; exits 1 when
the check fails:
  faults TURNS      exactly TURNS model turns reached the upstream, each as a 429, a cut
                    stream, then its answer (the proxy retried both; the client saw neither),
                    and nothing was sent to /chat/completions (the upstream's 404);
  reasoning LOOPS   at least LOOPS requests carried function_call_output items, and in each
                    every run of function_call items comes right after the reasoning item
                    (same encrypted_content) of the answer that made those calls, with their
                    outputs after them.
"""

import json
import sys


def faults(log, want):
    chat = [e["path"] for e in log if e["step"] == "404"]
    turns = {}
    for e in log:
        if e["step"] != "404":
            turns.setdefault(e["turn"], []).append(e["step"])
    bad = {t: s for t, s in turns.items() if s != ["429", "cut", "ok"]}
    if chat or bad or len(turns) != want:
        return False, "turns %d (want %d), not 429,cut,ok: %s, sent to chat: %s" % (len(turns), want, bad, chat)
    return True, "%d turns, each a 429, a cut and the answer (%d attempts), none sent to chat" % (want, len(log))


def placement(entry, by_call):
    """Problems with where the reasoning items sit in one request's input ([] when right)."""
    items = entry["request"].get("input") or []
    problems = []
    for i, item in enumerate(items):
        if item.get("type") != "function_call" or (i > 0 and items[i - 1].get("type") == "function_call"):
            continue  # only the first call of a run of calls
        end = i
        while end < len(items) and items[end].get("type") == "function_call":
            end += 1
        run = items[i:end]
        source = by_call.get(run[0].get("call_id"))
        before = items[i - 1] if i > 0 else {}
        if source is None:
            problems.append("call %s was not made by the mock" % run[0].get("call_id"))
        elif source["encrypted"] is None:
            problems.append("the answer that made call %s had no reasoning (no include?)" % run[0].get("call_id"))
        elif before.get("type") != "reasoning" or before.get("encrypted_content") != source["encrypted"]:
            problems.append("item before call %s is %s, want reasoning %s" % (
                run[0].get("call_id"), json.dumps(before)[:200], source["encrypted"]))
        ids = [c.get("call_id") for c in run]
        outputs = [it.get("call_id") for it in items[end:] if it.get("type") == "function_call_output"]
        if not set(ids) <= set(outputs):
            problems.append("outputs of %s not after the calls: %s" % (ids, outputs))
    return problems


def reasoning(log, want):
    by_call = {c: e for e in log if e["step"] == "ok" for c in e["calls"]}
    loops = [e for e in log if e["step"] == "ok" and any(
        it.get("type") == "function_call_output" for it in e["request"].get("input") or [])]
    problems = [p for e in loops for p in placement(e, by_call)]
    if len(loops) < want or problems:
        return False, "%d tool-loop requests (want %d): %s" % (len(loops), want, problems or "too few")
    runs = sum(1 for e in loops for it in e["request"]["input"] if it.get("type") == "reasoning")
    return True, "%d tool-loop requests, each call run right after its turn's reasoning item (%d reasoning items)" % (
        len(loops), runs)


def main():
    log = json.load(sys.stdin)
    good, line = {"faults": faults, "reasoning": reasoning}[sys.argv[1]](log, int(sys.argv[2]))
    print(line)
    sys.exit(0 if good else 1)


if __name__ == "__main__":
    main()
