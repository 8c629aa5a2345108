#!/usr/bin/env python3
"""chatgpt.sh gives its caller back control and leaves nothing behind (issue 16, items 1 and 2).

Called by tests/e2e/wrapper.sh, once with a fake client (a shell script that prints the
answer) and once with the real Codex CLI, against the mock upstream. Stdlib only.

Pipes: the wrapper is run exactly as CI harnesses and editors run it,
`subprocess.run([...], capture_output=True, timeout=...)`, which reads both pipes to the end
before it reaps the child: a helper that holds a pipe until the child is reaped hangs it.
  pipe-answer        the answer, and the call returns
  pipe-proxy-died    the proxy is killed during the session, then the client ends (the fake
                     one exits; Codex, which would wait "for network" for ever, gets a SIGINT):
                     the note about the proxy on stderr, and the call returns; the proxy
                     never holds the caller's pipes and the wrapper's helpers never hold its
                     stdout
  pipe-closed        as pipe-proxy-died, but the caller closes its end of stderr first
                     (`2>&1 | head -n 1`): the note meets a closed pipe, and the folder and
                     the processes are gone all the same
  pipe-ctrl-c        Ctrl-C (SIGINT to the process group) during the session: the call
                     returns, with Codex before the proxy has stopped (it takes its 2 s
                     shutdown grace for Codex's request in flight)

Leftovers: each run in a private TMPDIR; afterwards no `codex-shield.*` folder is left in
it and no process of the run is left (zombies ignored), within 6 s of the wrapper's exit.
These run under a reaping parent (this process is a child subreaper that reaps the orphans
it adopts, as systemd or tini do; PID 1 here does not), stdout and stderr to files:
  exit               a normal exit
  ctrl-c             SIGINT to the process group (as a terminal sends it) during the session
  ctrl-c-startup     the same while the wrapper waits for the proxy's /healthz
  proxy-fails        the proxy cannot start (AZURE_ENDPOINT is not a URL)
  proxy-not-healthy  the proxy never answers /healthz (CODEX_SHIELD_STARTUP_TIMEOUT=1)
  term, hup          SIGTERM / SIGHUP to the wrapper's PID during the session
  term-startup, hup-startup   the same during start-up
Start-up is held where wanted by a `curl` on PATH that the wrapper's health check uses: it
waits up to 2 s (the wrapper's curl --max-time) or fails at once.

Prints `ok   ...` / `FAIL ...` lines; exits 1 when any check failed.
"""

import argparse
import ctypes
import glob
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

ANSWER = "SHIELD-OK-7431: the mock upstream answered after every failure."
NOTE = "the codex-shield proxy stopped during the session"
PR_SET_CHILD_SUBREAPER = 36
failures = 0


def ok(text):
    print("ok   %s" % text, flush=True)


def fail(text, *details):
    global failures
    failures += 1
    print("FAIL %s" % text, flush=True)
    for line in details:
        print("     %s" % line, flush=True)


# --- processes ---------------------------------------------------------------------
def stat(pid):
    """(state, ppid) of a process, or None once it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[1])
    except (OSError, IndexError, ValueError):
        return None


def comm(pid):
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return "?"


def exe(pid):
    """The binary a process runs (None once it is gone)."""
    try:
        return os.path.realpath(os.readlink("/proc/%d/exe" % pid))
    except OSError:
        return None


def tagged(tag):
    """Live (not zombie) processes started by one run: they carry its tag in their env."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % entry, "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        state = stat(int(entry))
        if ("CODEX_SHIELD_E2E_TAG=%s" % tag).encode() in env and state and state[0] not in "ZX":
            pids.append(int(entry))
    return pids


def pipe_inodes(pid):
    """The pipe inodes a process holds open."""
    inodes = set()
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if target.startswith("pipe:["):
                inodes.add(int(target[6:-1]))
    except OSError:
        pass
    return inodes


def kill(pids):
    """SIGKILL these processes of ours, by PID; one already gone is fine."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Reaper:
    """Make this process the child subreaper of everything it starts, and reap the orphans
    it adopts (never its own direct children, which their Popen waits for)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.direct = set()
        self.stop = threading.Event()
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
        threading.Thread(target=self.loop, daemon=True).start()

    def popen(self, *args, **kwargs):
        with self.lock:
            process = subprocess.Popen(*args, **kwargs)
            self.direct.add(process.pid)
            return process

    def loop(self):
        me = os.getpid()
        while not self.stop.wait(0.02):
            with self.lock:
                for entry in os.listdir("/proc"):
                    if not entry.isdigit() or int(entry) in self.direct:
                        continue
                    state = stat(int(entry))
                    if state and state[0] == "Z" and state[1] == me:
                        try:
                            os.waitpid(int(entry), os.WNOHANG)
                        except ChildProcessError:
                            pass


# --- the mock upstream ---------------------------------------------------------------
def mock(path, body=None):
    data = body.encode() if body is not None else None
    request = urllib.request.Request(args.mock + path, data=data, method="POST" if data else "GET")
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read().decode()


def until(predicate, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# --- one run of the wrapper -----------------------------------------------------------
class Run:
    def __init__(self, name, wait=False, **env):
        self.name = name
        self.tag = "%s-%s-%s" % (args.label, name, uuid.uuid4().hex[:8])
        self.dir = os.path.join(args.work, "wrapper-%s-%s" % (args.label, name))
        self.tmp = os.path.join(self.dir, "tmp")
        os.makedirs(self.tmp)
        self.ready = os.path.join(self.dir, "client.ready")
        self.curl_ready = os.path.join(self.dir, "curl.ready")
        self.go = os.path.join(self.dir, "client.go")
        self.env = dict(os.environ, TMPDIR=self.tmp, CODEX_SHIELD_E2E_TAG=self.tag,
                        FAKE_CLIENT_GO=self.go, FAKE_CURL_READY=self.curl_ready)
        if wait:   # the fake client waits in its session until told to go (or a signal)
            self.env["FAKE_CLIENT_READY"] = self.ready
        self.env.update(env)
        self.argv = [args.wrapper, "exec", "--skip-git-repo-check", "--ephemeral", "-s", "read-only",
                     "Reply with the magic words."]
        self.before = len(self.folders())   # 0: a fresh TMPDIR, counted all the same

    def folders(self):
        return glob.glob(os.path.join(self.tmp, "codex-shield.*"))

    def in_session(self, seconds=30):
        """Until the client is in its session: the fake client says so, Codex's request
        reached the mock (scripted `slow`)."""
        if args.label == "fake":
            return until(lambda: os.path.exists(self.ready), seconds)
        return until(lambda: json.loads(mock("/__log")), seconds)

    def proxies(self):
        return [pid for pid in tagged(self.tag) if exe(pid) == args.proxy]

    def leftovers(self):
        """Wait up to 6 s for the run to be clean; return (seconds waited, what is left)."""
        start = time.monotonic()
        until(lambda: len(self.folders()) == self.before and not tagged(self.tag), 6)
        left = ["%d folder(s) more than before: %s" % (len(self.folders()) - self.before,
                                                    " ".join(os.path.basename(f) for f in self.folders()))]
        left = left if len(self.folders()) != self.before else []
        for pid in tagged(self.tag):   # said, then stopped: a failing wrapper leaves nothing either
            left.append("%s (pid %d)" % (comm(pid), pid))
            kill([pid])
        return time.monotonic() - start, left


def clean(run, label, rc, secs, extra_ok=True, details=()):
    waited, left = run.leftovers()
    if extra_ok and not left:
        ok("%s: exit %s after %.1f s; folder and processes gone %.1f s later" % (label, rc, secs, waited))
    else:
        fail(label, "exit %s after %.1f s; left after %.1f s: %s" % (rc, secs, waited, ", ".join(left) or "nothing"),
             *details)


# --- pipes -----------------------------------------------------------------------------
def pipe_answer():
    mock("/__script", "ok")
    run = Run("pipe-answer")
    start = time.monotonic()
    try:
        result = subprocess.run(run.argv, capture_output=True, timeout=args.timeout, env=run.env, cwd=args.project)
    except subprocess.TimeoutExpired as e:
        fail("subprocess.run(capture_output=True): the wrapper returns",
             "timed out after %d s; stdout so far: %r" % (args.timeout, (e.stdout or b"")[-200:]))
        run.leftovers()
        return
    secs = time.monotonic() - start
    if result.returncode == 0 and ANSWER in result.stdout.decode(errors="replace"):
        ok("subprocess.run(capture_output=True): exit 0 with the answer, returned in %.1f s" % secs)
    else:
        fail("subprocess.run(capture_output=True): the answer", "exit %d after %.1f s" % (result.returncode, secs),
             "stdout: %r" % result.stdout[-300:], "stderr: %r" % result.stderr[-500:])
    run.leftovers()


def pipe_proxy_died():
    mock("/__script", "slow,slow,slow")
    run = Run("pipe-proxy-died", wait=True)
    start = time.monotonic()
    process = subprocess.Popen(run.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=run.env, cwd=args.project)
    try:
        held = []
        if run.in_session():
            out, err = os.fstat(process.stdout.fileno()).st_ino, os.fstat(process.stderr.fileno()).st_ino
            for pid in tagged(run.tag):
                state = stat(pid)
                is_proxy = exe(pid) == args.proxy
                if not state or state[1] != process.pid or not (is_proxy or comm(pid) == "bash"):
                    continue   # only the wrapper's own helpers: the proxy and the watchdog
                pipes = pipe_inodes(pid)
                if (is_proxy and pipes & {out, err}) or out in pipes:
                    held.append("%s (pid %d) holds %s" % (comm(pid), pid, "stdout" if out in pipes else "stderr"))
            proxies = run.proxies()
            kill(proxies)
            if args.label == "fake":
                open(run.go, "w").close()
            else:   # Codex 0.169 waits "for network" for ever once its provider is gone
                until(lambda: not run.proxies(), 5)
                process.send_signal(signal.SIGINT)
        else:
            proxies = []
        # the same read-to-the-end-then-reap as subprocess.run(capture_output=True, timeout=...)
        stdout, stderr = process.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired as e:
        process.kill()
        process.wait()
        fail("proxy killed during the session: the wrapper returns",
             "timed out after %d s; stderr so far: %r" % (args.timeout, (e.stderr or b"")[-300:]))
        run.leftovers()
        return
    secs = time.monotonic() - start
    if proxies and NOTE in stderr.decode(errors="replace") and not held:
        ok("proxy killed during the session: %r on the captured stderr, returned in %.1f s; "
           "the proxy held none of the caller's pipes, the watchdog no stdout" % (NOTE, secs))
    else:
        fail("proxy killed during the session: the note, through pipes",
             "proxies killed: %s, exit %s after %.1f s, pipes held: %s" % (proxies, process.returncode, secs, held or "none"),
             "stderr: %r" % stderr[-600:])
    run.leftovers()


def pipe_ctrl_c():
    mock("/__script", "slow,slow")
    run = Run("pipe-ctrl-c", wait=True)
    start = time.monotonic()
    process = subprocess.Popen(run.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=run.env, cwd=args.project, start_new_session=True)
    reached = run.in_session()
    os.killpg(process.pid, signal.SIGINT if reached else signal.SIGKILL)
    try:
        stdout, stderr = process.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        fail("Ctrl-C through pipes: the wrapper returns", "timed out after %d s" % args.timeout)
        run.leftovers()
        return
    secs = time.monotonic() - start
    # Codex's request is still in flight at the proxy, which takes its 2 s shutdown grace:
    # the caller has its EOF before that (the fake client's proxy has nothing in flight)
    stopping = bool(run.proxies())
    if reached and process.returncode != 0 and (stopping or args.label == "fake"):
        ok("Ctrl-C through pipes: exit %d, returned in %.1f s%s" % (
            process.returncode, secs, ", while the proxy was still stopping" if stopping else ""))
    else:
        fail("Ctrl-C through pipes: returns before the proxy has stopped",
             "session reached: %s, exit %d after %.1f s, proxy still stopping: %s" % (reached, process.returncode, secs, stopping),
             "stderr: %r" % stderr[-300:])
    run.leftovers()


def pipe_closed():
    """A caller that stops reading stderr during the session (`2>&1 | head -n 1`): the note
    then meets a closed pipe, and the watchdog must still clean up."""
    mock("/__script", "slow,slow,slow")
    run = Run("pipe-closed", wait=True)
    start = time.monotonic()
    process = subprocess.Popen(run.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env=run.env, cwd=args.project)
    reached = run.in_session()
    proxies = run.proxies()
    kill(proxies)
    process.stderr.close()   # (Codex may die of it at once: exit 101, failed printing to stderr)
    if args.label == "fake":
        open(run.go, "w").close()
    else:
        until(lambda: not run.proxies(), 5)
        process.send_signal(signal.SIGINT)
    try:
        rc = process.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        rc = "none (killed after %d s)" % args.timeout
        process.wait()
    clean(run, "proxy killed, then the caller's stderr closed: the note meets a closed pipe", rc,
          time.monotonic() - start, reached and bool(proxies))


# --- leftovers --------------------------------------------------------------------------
def leftover(name, label, expect, env=None, signal_to=None, when=None, reaper=None):
    """Run the wrapper (stdout, stderr to files), signal it if asked, then check that the
    folder and every process of the run are gone. expect: "ok" (exit 0 and the answer),
    "fail" (a non-zero exit), or a text the wrapper's stderr must hold with a non-zero exit."""
    run = Run(name, wait=bool(signal_to) and when != "startup", **(env or {}))
    out_path, err_path = os.path.join(run.dir, "out"), os.path.join(run.dir, "err")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        start = time.monotonic()
        process = reaper.popen(run.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=run.env,
                               cwd=args.project, start_new_session=True)
    reached = True
    if signal_to:
        sig, target = signal_to
        reached = (until(lambda: os.path.exists(run.curl_ready), 30) if when == "startup" else run.in_session())
        if reached and target == "group":
            os.killpg(process.pid, sig)
        elif reached:
            os.kill(process.pid, sig)
        else:
            os.killpg(process.pid, signal.SIGKILL)
    try:
        rc = process.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        rc = "none (killed after %d s)" % args.timeout
        process.wait()
    secs = time.monotonic() - start
    with open(out_path, "rb") as f:
        stdout = f.read().decode(errors="replace")
    with open(err_path, "rb") as f:
        stderr = f.read().decode(errors="replace")
    if expect == "ok":
        as_expected = rc == 0 and ANSWER in stdout
    else:
        as_expected = isinstance(rc, int) and rc != 0 and (expect == "fail" or expect in stderr)
    details = ["stderr tail: %r" % stderr[-400:]]
    if not reached:
        details.append("the %s was never reached" % ("start-up" if when == "startup" else "session"))
    clean(run, label, rc, secs, reached and as_expected, details)


def main():
    global args
    parser = argparse.ArgumentParser()
    parser.add_argument("--wrapper", required=True, help="chatgpt.sh under test")
    parser.add_argument("--label", required=True, choices=("fake", "codex"))
    parser.add_argument("--proxy", required=True, help="the codex-shield binary the wrapper starts")
    parser.add_argument("--mock", required=True, help="the mock upstream's URL")
    parser.add_argument("--work", required=True, help="scratch dir")
    parser.add_argument("--project", required=True, help="the cwd of every run")
    parser.add_argument("--fake-curl-dir", required=True, help="a dir holding the fake curl")
    parser.add_argument("--timeout", type=int, default=30)
    args = parser.parse_args()
    args.proxy = os.path.realpath(args.proxy)
    print("-- chatgpt.sh with %s" % ("a fake client" if args.label == "fake" else "the real Codex CLI"), flush=True)

    pipe_answer()
    pipe_proxy_died()
    pipe_ctrl_c()
    pipe_closed()

    reaper = Reaper()
    hold = {"PATH": args.fake_curl_dir + os.pathsep + os.environ["PATH"], "FAKE_CURL": "hang"}
    mock("/__script", "ok")
    leftover("exit", "normal exit", "ok", reaper=reaper)
    for name, label, sig, target in (("ctrl-c", "Ctrl-C (INT to the process group) during the session", signal.SIGINT, "group"),
                                     ("term", "SIGTERM to the wrapper during the session", signal.SIGTERM, "pid"),
                                     ("hup", "SIGHUP to the wrapper during the session", signal.SIGHUP, "pid")):
        mock("/__script", "slow,slow")
        leftover(name, label, "fail", signal_to=(sig, target), reaper=reaper)
    for name, label, sig, target in (("ctrl-c-startup", "Ctrl-C (INT to the process group) during start-up", signal.SIGINT, "group"),
                                     ("term-startup", "SIGTERM to the wrapper during start-up", signal.SIGTERM, "pid"),
                                     ("hup-startup", "SIGHUP to the wrapper during start-up", signal.SIGHUP, "pid")):
        leftover(name, label, "fail", env=hold, signal_to=(sig, target), when="startup", reaper=reaper)
    leftover("proxy-fails", "a proxy that fails to start (AZURE_ENDPOINT not a URL)", "AZURE_ENDPOINT",
             env={"AZURE_ENDPOINT": "not a url"}, reaper=reaper)
    leftover("proxy-not-healthy", "a proxy that never answers /healthz (start-up timeout 1 s)", "did not answer /healthz",
             env={"PATH": hold["PATH"], "FAKE_CURL": "fail", "CODEX_SHIELD_STARTUP_TIMEOUT": "1"}, reaper=reaper)
    reaper.stop.set()
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
