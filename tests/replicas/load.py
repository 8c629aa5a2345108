#!/usr/bin/env python3
"""Codex-like load for tests/replicas/run.sh: every request must get a complete answer or a
clear error (stdlib only).

Each request gets a fault plan before the run (seeded): a few retryable upstream failures
(429 with a hint, 500, 503, an in-stream error, a cut, response.failed), then its answer,
sometimes a slow one (3 s, so that answers are in flight when a replica is stopped). The plan
travels in `x-mock-plan` to tests/e2e/mock_upstream.py, which follows it per request whichever
replica sends the attempt. A plan with as many failures as the replicas' RETRY_ATTEMPTS must
end in a clear error (OpenAI-shaped JSON; on /v1/responses, whose requests carry Codex's
`originator`, the 400 text Codex prints verbatim); every other request must get its own complete stream (its ids,
its terminal event, its Content-Length). Anything else — a connection error, a short body, a
wrong answer, an unplanned error — is a failure. Writes progress to --progress (requests
done) and prints `replicas: N passed, M failed`.
"""

import argparse
import http.client
import json
import os
import random
import sys
import threading
import time
from collections import Counter

RETRYABLE = ["429ms", "500", "503", "error", "cut", "failed"]
# The last failure of an over-budget plan becomes the proxy's final status; a 503 there would
# be retried by the load balancer on another replica (by design), so those plans end otherwise.
FINAL_OK = ["429ms", "500", "error", "cut", "failed"]


def plan_for(i, rng, attempts):
    roll = rng.random()
    if roll < 0.05:
        faults = [rng.choice(RETRYABLE) for _ in range(attempts - 1)] + [rng.choice(FINAL_OK)]
        return faults, "error"
    faults = [rng.choice(RETRYABLE) for _ in range(rng.choice([0, 0, 1, 1, 2, 3]))]
    final = "slow" if roll < 0.20 else "ok"
    return faults + [final], "answer"


def request_body(i, chat):
    text = "request %d: explain the failing test in src/lib.rs and propose a fix" % i
    if chat:
        return {"model": "gpt-5", "stream": True, "messages": [
            {"role": "system", "content": "You are a coding agent."},
            {"role": "user", "content": text}]}
    return {"model": "gpt-5", "stream": True, "store": False, "parallel_tool_calls": True,
            "instructions": "You are a coding agent running in the Codex CLI.",
            "input": [{"type": "message", "role": "user",
                       "content": [{"type": "input_text", "text": text}]}],
            "tools": [{"type": "function", "name": "shell", "strict": False,
                       "parameters": {"type": "object", "properties": {
                           "command": {"type": "array", "items": {"type": "string"}}}}}],
            "reasoning": {"effort": "medium", "summary": "auto"},
            "include": ["reasoning.encrypted_content"], "prompt_cache_key": "replicas-%d" % i}


def judge(i, chat, expect, status, body):
    """None if the outcome is right, else why not."""
    text = body.decode("utf-8", "replace")
    if expect == "error":
        if status < 400:
            return "planned to fail, got %d" % status
        if not chat and status == 400 and text.startswith("codex-shield: "):
            return None  # the give-up form Codex prints verbatim (the requests say originator: codex)
        try:
            err = json.loads(text)["error"]
            assert err["message"] and err["type"]
        except Exception:
            return "error %d without an OpenAI-shaped body: %r" % (status, text[:200])
        return None
    if status != 200:
        return "status %d: %s" % (status, text[:200])
    if chat:
        own = '"id": "chatcmpl-mock%04d"' % i in text
        complete = text.endswith("data: [DONE]\n\n")
    else:
        own = '"id": "resp_mock%04d"' % i in text
        complete = "event: response.completed\n" in text and text.endswith("\n\n")
    if not own:
        return "someone else's answer"
    if not complete:
        return "incomplete stream (%d bytes)" % len(body)
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=24)
    ap.add_argument("--attempts", type=int, default=4)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--progress")
    ap.add_argument("--max-seconds", type=float, default=300)
    args = ap.parse_args()

    rng = random.Random(args.seed)
    jobs = [(i, rng.random() < 0.2) + plan_for(i, rng, args.attempts) for i in range(args.requests)]
    lock = threading.Lock()
    outcomes, failures, replicas = Counter(), [], Counter()
    queue = list(reversed(jobs))
    done = [0]
    deadline = time.time() + args.max_seconds

    def worker():
        conn = None
        while time.time() < deadline:
            with lock:
                if not queue:
                    break
                i, chat, faults, expect = queue.pop()
            path = "/v1/chat/completions" if chat else "/v1/responses"
            body = json.dumps(request_body(i, chat)).encode()
            headers = {"authorization": "Bearer " + args.key, "content-type": "application/json",
                       "accept": "text/event-stream", "originator": "codex_cli_rs",
                       "session_id": "replicas-%d" % i, "x-mock-plan": "%d %s" % (i, ",".join(faults))}
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=120)
                conn.request("POST", path, body, headers)
                resp = conn.getresponse()
                data = resp.read()  # raises IncompleteRead on a short body
                status, replica = resp.status, resp.getheader("x-shield-replica", "?")
                if resp.will_close:
                    conn.close()
                    conn = None
                problem = judge(i, chat, expect, status, data)
            except Exception as e:  # lost or cut: the failures this test exists to catch
                if conn is not None:
                    conn.close()
                conn = None
                status, replica, problem = 0, "-", "%s: %s" % (type(e).__name__, e)
            with lock:
                done[0] += 1
                replicas[replica] += 1
                if problem:
                    failures.append((i, ",".join(faults), problem))
                else:
                    outcomes["answer" if expect == "answer" else "clear error %d" % status] += 1
                if args.progress:
                    with open(args.progress + ".tmp", "w") as f:
                        f.write(str(done[0]))
                    os.replace(args.progress + ".tmp", args.progress)

    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    started = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    unanswered = args.requests - done[0]
    for i, plan, problem in failures[:20]:
        print("replicas: request %d (plan %s): %s" % (i, plan, problem), file=sys.stderr)
    print("replicas: %d requests in %.1f s; outcomes %s; answered by %s"
          % (args.requests, time.time() - started, dict(sorted(outcomes.items())),
             dict(sorted(replicas.items()))))
    passed = sum(outcomes.values())
    print("replicas: %d passed, %d failed" % (passed, len(failures) + unanswered))
    sys.exit(1 if failures or unanswered else 0)


if __name__ == "__main__":
    main()
