#!/usr/bin/env python3
"""Fault-injecting Responses upstream for tests/monitoring/run.sh (stdlib only).

Each POST takes the next step of the script given on the command line (comma separated);
once it is used up every request is answered. Steps:
  ok     a complete Responses stream (chunked SSE)     429   429 with retry-after-ms: 10
  500    500 JSON error                                 503   503 JSON error
  cut    200, the stream closes before its end          error 200, an in-stream rate_limit error
  400    400 JSON error (final: passed to the client)
Writes the bound port to the file named by --port-file. Listens on 127.0.0.1 only.
"""
import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
STEPS = []


def event(kind, data):
    data = dict(data, type=kind)
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


# What each complete answer cost: 75 % of its input from the prompt cache.
USAGE = {"input_tokens": 1000, "input_tokens_details": {"cached_tokens": 750},
         "output_tokens": 40, "output_tokens_details": {"reasoning_tokens": 16}, "total_tokens": 1040}


def response(status):
    return {"id": "resp_mon", "object": "response", "status": status, "error": None, "output": []}


def stream(complete=True, error=False):
    out = event("response.created", {"response": response("in_progress")})
    out += event("response.output_text.delta", {"item_id": "msg_1", "delta": "monitoring answer"})
    if error:
        out += event("error", {"code": "rate_limit_exceeded", "message": "slow down", "param": None})
    elif complete:
        done = dict(response("completed"), usage=USAGE)
        out += event("response.completed", {"response": done})
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        with LOCK:
            step = STEPS.pop(0) if STEPS else "ok"
        if step in ("429", "500", "503", "400"):
            body = json.dumps({"error": {"message": "mock " + step, "type": "mock", "code": step}}).encode()
            self.send_response(int(step))
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            if step == "429":
                self.send_header("retry-after-ms", "10")
            self.end_headers()
            self.wfile.write(body)
            return
        body = stream(complete=step != "cut", error=step == "error")
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(body), body))
        if step == "cut":
            self.close_connection = True
            return
        self.wfile.write(b"0\r\n\r\n")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("script")
    p.add_argument("--port-file", required=True)
    args = p.parse_args()
    STEPS.extend(s.strip() for s in args.script.split(",") if s.strip())
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(args.port_file, "w") as f:
        f.write(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main()
