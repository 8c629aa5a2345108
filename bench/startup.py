#!/usr/bin/env python3
"""Start-up time of codex-shield: fork/exec -> first 200 from GET /healthz, N times.

usage: startup.py BINARY N ENDPOINT WORKDIR
Prints: STARTUP n=.. median_ms=.. min_ms=.. p90_ms=.. max_ms=.. failures=..
Each run gets a fresh ephemeral port; the poll is a raw socket loop (no curl fork in the timing).
"""
import os
import socket
import statistics
import subprocess
import sys
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def healthz_ok(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data = s.recv(64)
            return data.startswith(b"HTTP/1.1 200") or data.startswith(b"HTTP/1.0 200")
    except OSError:
        return False


def main():
    binary, n, endpoint, workdir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    times, failures = [], 0
    for _ in range(n):
        port = free_port()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "AZURE_ENDPOINT": endpoint,
               "AZURE_API_KEY": "bench", "HOST": "127.0.0.1", "PORT": str(port),
               "LOG_LEVEL": "error", "NO_PROXY": "127.0.0.1,localhost"}
        t0 = time.perf_counter()
        p = subprocess.Popen([binary], env=env, cwd=workdir, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = t0 + 5.0
            ok = False
            while time.perf_counter() < deadline:
                if healthz_ok(port):
                    ok = True
                    break
                if p.poll() is not None:
                    break
                time.sleep(0.0002)
            t1 = time.perf_counter()
            if ok:
                times.append((t1 - t0) * 1000)
            else:
                failures += 1
        finally:
            p.terminate()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    if times:
        times.sort()
        p90 = times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]
        print("STARTUP n=%d median_ms=%.2f min_ms=%.2f p90_ms=%.2f max_ms=%.2f failures=%d"
              % (len(times), statistics.median(times), times[0], p90, times[-1], failures))
    else:
        print("STARTUP n=0 failures=%d" % failures)


if __name__ == "__main__":
    main()
