#!/usr/bin/env python3
"""A slow upstream for the keepalive checks: mock_upstream.py with one more step.

  sleepN   wait N seconds (a float) before the complete answer, e.g. "sleep6"

Every other step ("429", "500", "cut", "ok", ...) and the control routes (/__script,
/__log) are mock_upstream.py's. Listens on 127.0.0.1 only; stdlib only.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mock_upstream  # noqa: E402  (the directory is put on the path just above)


class SlowHandler(mock_upstream.Handler):
    def answer(self, step, path, req, n):
        if step.startswith("sleep"):
            time.sleep(float(step[len("sleep"):]))
            step = "ok"
        super().answer(step, path, req, n)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--script", default="ok")
    ap.add_argument("--max-seconds", type=float, default=600)
    args = ap.parse_args()
    server = mock_upstream.Server(("127.0.0.1", 0), SlowHandler)
    server.script = mock_upstream.Script(args.script)
    server.verbose = False
    mock_upstream.serve(server, args.port_file, args.max_seconds, "keepalive mock")

if __name__ == "__main__":
    main()
