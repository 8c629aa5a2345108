#!/usr/bin/env python3
"""Render bench/run.sh's raw results (key=value lines) as the markdown report."""
import os
import sys

MB = 1_000_000  # targets are in MB = 10^6 bytes (stricter than MiB)


def parse(path):
    runs, metrics, checks = [], {}, []
    metrics["perf"], metrics["long"] = [], {}
    with open(path) as f:
        for line in f:
            kind, *kvs = line.split()
            d = dict(kv.split("=", 1) for kv in kvs if "=" in kv)
            if kind == "run":
                runs.append(d)
            elif kind == "perf":
                metrics["perf"].append(d)
            elif kind == "metric" and "long" in d:
                metrics["long"][d["tier"]] = d
            elif kind == "metric":
                if "mem_round" in d:
                    metrics.setdefault("mem_rounds", []).append(d)
                elif "mem_idle" in d:
                    metrics.setdefault("mem_idle", {})[(d["tier"], d["framing"])] = float(d["idle_kb"])
                elif "fail_mode" in d:
                    metrics.setdefault("fail", {})[d["fail_mode"]] = d
                else:
                    metrics.update(d)
            elif kind == "check":
                checks.append(d)
            elif kind == "died":
                checks.append({"tier": "codex-shield", "why": "the process DIED (noticed at %s; exit status %s, 128+N = signal N)"
                               % (d.get("scenario"), d.get("status"))})
    return runs, metrics, checks


def aggregate(rounds):
    """One row from several rounds of the same (scenario, tier): the median of each rate and
    percentile, sums of requests, errors, CPU and upstream counters."""
    ok = [r for r in rounds if not r.get("failed")]
    if not ok:
        return rounds[0]
    if len(ok) == 1:
        return ok[0]
    import statistics
    out = dict(ok[0])
    for k in ("rps", "p50", "p90", "p99", "mean"):
        out[k] = str(statistics.median(float(r[k]) for r in ok))
    out["max"] = str(max(float(r["max"]) for r in ok))
    for k in ("requests", "cpu_ticks", "up_accepts", "up_requests", "err_connect", "err_read",
              "err_write", "err_status", "err_timeout", "bytes"):
        out[k] = str(sum(int(float(r.get(k, 0))) for r in ok))
    out["rounds"] = str(len(ok))
    if len(ok) < len(rounds):
        out["failed_rounds"] = str(len(rounds) - len(ok))
    return out


def num(d, k, default=None):
    try:
        return float(d[k])
    except (KeyError, ValueError, TypeError):
        return default


def errs(r):
    sock = sum(int(r.get(k, 0)) for k in ("err_connect", "err_read", "err_write", "err_timeout"))
    return int(r.get("err_status", 0)), sock


def cpu_us_per_req(r, successes=None):
    req = successes if successes is not None else num(r, "requests", 0)
    if not req:
        return None
    return num(r, "cpu_ticks", 0) / num(r, "clk_tck", 100) * 1e6 / req


def fmt(x, nd=0, suffix=""):
    if x is None:
        return "n/a"
    return ("{:,.%df}" % nd).format(x) + suffix


def kb_mb(kb):
    return None if kb is None else kb * 1024 / MB


SCEN_LABEL = {
    "c1": "c=1 (1 conn)", "c32": "c=32", "c256": "c=256",
    "chat-c32": "Chat Completions, c=32",
}
FRAMING = {"cl": "Content-Length", "chunked": "chunked"}
# the tiers in the order of the report's rows, and their names there
TIER_NAMES = (("floor", "floor"), ("nginx", "nginx"), ("baseline", "baseline"),
              ("codex-shield", "**codex-shield**"), ("codex-shield-again", "codex-shield (again)"),
              ("codex-shield-static", "**codex-shield-static**"))


def label(sc, r):
    sc = sc[len("chunked-"):] if sc.startswith("chunked-") else sc
    if sc.startswith("rate"):
        return "fixed %s req/s (%s conns)" % (sc[4:], r.get("conns", "?"))
    return SCEN_LABEL.get(sc, sc)


def translated(runs, m, w):
    """The translated path (issue 9): a Responses client on a chat-only upstream."""
    rounds_of = {}
    for r in runs:
        if r["scenario"].startswith("translate-") and r["scenario"] != "translate-mem":
            rounds_of.setdefault((r["scenario"], r["tier"]), []).append(r)
    if not rounds_of and "translate_idle_rss_kb" not in m:
        return
    w("## Translated paths: Responses client → chat-only upstream (`UPSTREAM_API=chat`), "
      "chat client → Responses-only upstream (`UPSTREAM_API=responses-only`)")
    w("")
    w("The same upstream answer (chat.sse, %s bytes) three ways, rounds interleaved: "
      "**codex-shield** = Responses pass-through (responses.sse), **chat** = Chat Completions "
      "pass-through, **translated** = a Responses request translated to chat and the chat answer "
      "translated back into a %s-byte Responses stream. The translation's own cost is the "
      "translated row minus the chat row. The other direction: **chat client → Responses-only "
      "upstream** = a chat request translated to a Responses one, and the Responses answer "
      "(responses.sse, %s bytes) translated back into a %s-byte chat stream; its own cost is its row "
      "minus the Responses row." % (m.get("translate_chat_bytes", "?"), m.get("translate_answer_bytes", "?"),
                                    m.get("reverse_responses_bytes", "?"), m.get("reverse_answer_bytes", "?")))
    w("")
    w("| scenario | tier | req/s | p50 µs | p99 µs | server CPU µs/req | CPU ÷ chat pass-through | non-2xx | socket errors |")
    w("|---|---|--:|--:|--:|--:|--:|--:|--:|")
    for sc, lab in (("translate-c1", "c=1 (1 conn)"), ("translate-c32", "c=32")):
        chat = rounds_of.get((sc, "codex-shield-chat"))
        chat_cpu = cpu_us_per_req(aggregate(chat)) if chat else None
        resp = rounds_of.get((sc, "codex-shield"))
        resp_cpu = cpu_us_per_req(aggregate(resp)) if resp else None
        for tier, name in (("codex-shield", "codex-shield (Responses)"), ("codex-shield-chat", "codex-shield (chat)"),
                           ("codex-shield-translated", "**codex-shield translated**"),
                           ("codex-shield-chat-on-responses", "**chat client → Responses-only upstream**")):
            rs = rounds_of.get((sc, tier))
            if not rs:
                continue
            r = aggregate(rs)
            if r.get("failed"):
                w("| %s | %s | wrk failed | | | | | | |" % (lab, name))
                continue
            cpu = cpu_us_per_req(r)
            st, so = errs(r)
            # the reverse translation is measured against the Responses pass-through (same answer)
            ref = resp_cpu if tier == "codex-shield-chat-on-responses" else chat_cpu
            w("| %s | %s | %s | %s | %s | %s | %s | %d | %d |" % (
                lab, name, fmt(num(r, "rps")), fmt(num(r, "p50")), fmt(num(r, "p99")), fmt(cpu, 1),
                fmt(cpu / ref if cpu and ref else None, 2) + (" (÷ Responses)" if tier == "codex-shield-chat-on-responses" else ""), st, so))
    w("")
    w("| measure (translating proxy) | value |")
    w("|---|--:|")
    w("| idle RSS after start | %s MB |" % fmt(kb_mb(num(m, "translate_idle_rss_kb")), 2))
    w("| RSS after the load runs above (peak during them) | %s MB (%s MB) |" % (
        fmt(kb_mb(num(m, "translate_rss_after_load_kb")), 2), fmt(kb_mb(num(m, "translate_hwm_after_load_kb")), 2)))
    big = [r for r in runs if r["scenario"] == "translate-mem"]
    hwm, idle = num(m, "translate_big_hwm_kb"), num(m, "translate_big_idle_rss_kb")
    if big and hwm:
        st, so = errs(big[0])
        w("| 256 clients × 1 MiB chat answers translated (512 KB/s): peak RSS (VmHWM) | %s MB |" % fmt(kb_mb(hwm), 1))
        w("| … per in-flight answer, (VmHWM − idle RSS) / 256 | %s MB |" % fmt((hwm - (idle or 0)) * 1024 / 256 / MB, 2))
        w("| … RSS 1 s after the run; answers, errors (non-2xx / socket) | %s MB; %s, %d / %d |" % (
            fmt(kb_mb(num(m, "translate_big_rss_after_kb")), 1), fmt(num(big[0], "requests")), st, so))
    w("")


def spread(a, b):
    """How far apart two measurements of the same thing are: larger ÷ smaller − 1."""
    if a is None or b is None or min(a, b) <= 0:
        return None
    return max(a, b) / min(a, b) - 1


def mem_per_answer(m):
    """(tier, framing) -> memory per in-flight 1 MiB answer in MB, and the rows behind it."""
    out = {}
    by = {}
    for d in m.get("mem_rounds", []):
        by.setdefault((d.get("tier", "codex-shield"), d.get("framing", "cl")), []).append(d)
    for key, rounds in by.items():
        idle = m.get("mem_idle", {}).get(key, 0)
        hwm = max(num(d, "hwm_kb", 0) for d in rounds)
        inflight = max(num(d, "max_inflight", 0) for d in rounds) or 256
        out[key] = {"per": (hwm - idle) * 1024 / inflight / MB, "hwm": hwm, "idle": idle,
                    "inflight": inflight, "rounds": rounds}
    return out


# the figures held against the baseline: (name, key, higher is better)
COMPARED = (("req/s", "rps", True), ("p99", "p99", False), ("CPU/req", "cpu", False))


def figure(r, key):
    if r is None or r.get("failed"):
        return None
    return cpu_us_per_req(r) if key == "cpu" else num(r, key)


def compare(by, mem):
    """Every figure of codex-shield next to the baseline's, with the noise: the spread between
    the two copies of the current build on the same row, but never less than the median spread
    of that figure over all rows (one lucky row does not make a hair trigger). The current
    build's figure is the mean of its two copies. Returns rows
    (scenario, figure, baseline, current, again, ratio, noise, verdict)."""
    rows = []
    for sc, tiers in by.items():
        b, c, a = tiers.get("baseline"), tiers.get("codex-shield"), tiers.get("codex-shield-again")
        if not (b and c):
            continue
        for name, key, higher in COMPARED:
            if key == "rps" and sc.startswith("rate"):
                continue  # a fixed rate: every tier serves it
            rows.append([sc, name, figure(b, key), figure(c, key), figure(a, key), higher])
        ur = lambda r: None if r is None or r.get("failed") or not num(r, "up_requests") else num(r, "up_accepts") / num(r, "up_requests")
        rows.append([sc, "new upstream conns/req", ur(b), ur(c), ur(a), False])
        e = lambda r: None if r is None or r.get("failed") else float(sum(errs(r)))
        rows.append([sc, "errors", e(b), e(c), e(a), False])
    for framing in ("cl", "chunked"):
        b, c, a = (mem.get((t, framing)) for t in ("baseline", "codex-shield", "codex-shield-again"))
        if b and c:
            rows.append(["mem-" + framing, "MB per in-flight answer", b["per"], c["per"], a and a["per"], False])
    import statistics
    floors = {}
    for name in {r[1] for r in rows}:
        sp = [spread(r[3], r[4]) for r in rows if r[1] == name and spread(r[3], r[4]) is not None]
        floors[name] = statistics.median(sp) if sp else 0.0
    out = []
    for sc, name, base, cur1, again, higher in rows:
        if base is None or cur1 is None:
            out.append((sc, name, base, cur1, again, None, None, "n/a"))
            continue
        cur = cur1 if again is None else (cur1 + again) / 2
        if name in ("new upstream conns/req", "errors"):
            # counts: an absolute difference; 0.01 conns/req (1 in 100) and 0 errors are the floor
            noise = max(abs(cur1 - again) if again is not None else 0, 0.01 if name != "errors" else 0)
            worse, better = cur - base > noise, base - cur > noise
            ratio = None
        else:
            if cur <= 0 or base <= 0:
                out.append((sc, name, base, cur1, again, None, None, "n/a"))
                continue
            noise = max(spread(cur1, again) or 0, floors[name])
            ratio = cur / base
            # worse (better) by: the worse (better) one ÷ the other − 1, the measure of the noise
            worse = (1 / ratio if higher else ratio) - 1 > noise
            better = (ratio if higher else 1 / ratio) - 1 > noise
        out.append((sc, name, base, cur1, again, ratio, noise, "worse" if worse else "better" if better else "within noise"))
    return out


def targets_table(w, heading, met, missed):
    """Write a targets table's heading and head; return the function that writes one of its
    rows: a target, its figure, and `met`, `missed` or n/a (`ok` None: not measured)."""
    w(heading)
    w("")
    w("| target | measured | result |")
    w("|---|---|---|")

    def target(name, measured, ok):
        w("| %s | %s | %s |" % (name, measured, "n/a" if ok is None else (met if ok else missed)))
    return target


PER_TIERS = (("nginx1", "nginx (1 worker)"), ("baseline", "baseline"), ("codex-shield", "**codex-shield**"),
             ("codex-shield-again", "codex-shield (again)"))
PER_STREAMS = (("per-responses", "Responses stream (responses.sse)"), ("per-chat", "Chat Completions stream (chat.sse)"))


def per_request(runs, m):
    """{(scenario, tier): {"rps", "p99", "cpu", "sys", "cs"}}: req/s and p99 the median of the
    plain rounds, CPU µs, syscalls and context switches per request the median of the perf
    rounds."""
    import statistics
    plain, perf = {}, {}
    for r in runs:
        if r["scenario"].startswith("per-") and not r.get("failed"):
            plain.setdefault((r["scenario"], r["tier"]), []).append(r)
    for d in m.get("perf", []):
        n = num(d, "requests", 0)
        if n and all(k in d for k in ("task_ms", "syscalls", "cs")):
            perf.setdefault((d["scenario"], d["tier"]), []).append(
                (num(d, "task_ms") * 1000 / n, num(d, "syscalls") / n, num(d, "cs") / n))
    out = {}
    for key in set(plain) | set(perf):
        row = {}
        if key in plain:
            row["rps"] = statistics.median(num(r, "rps") for r in plain[key])
            row["p99"] = statistics.median(num(r, "p99") for r in plain[key])
            row["p50"] = statistics.median(num(r, "p50") for r in plain[key])
        if key in perf:
            for i, k in enumerate(("cpu", "sys", "cs")):
                row[k] = statistics.median(x[i] for x in perf[key])
        out[key] = row
    return out


def per_request_section(w, runs, m, by):
    """The issue 19 table: per request against nginx with one worker, and the targets."""
    per = per_request(runs, m)
    if not per:
        return
    w("## Per request against nginx (1 worker), chunked upstream, c=32")
    w("")
    w("wrk -t2 -c32, the chunked mock; each round runs every tier once plain (req/s, p99) and once "
      "under `perf stat -e raw_syscalls:sys_enter,context-switches,task-clock -p PID` (the whole "
      "process, every thread; nginx: master and worker), divided by the requests served; medians "
      "over %s rounds. nginx has one worker here, as the proxy is one process." % os.environ.get("BENCH_ROUNDS", "?"))
    w("")
    w("| stream | per request | " + " | ".join(n for _, n in PER_TIERS) + " | codex-shield ÷ nginx | ÷ baseline |")
    w("|---|---|" + "--:|" * (len(PER_TIERS) + 2))
    for sc, lab in PER_STREAMS:
        for k, what, nd in (("cpu", "CPU (task-clock) µs", 1), ("sys", "syscalls", 1), ("cs", "context switches", 2),
                            ("rps", "throughput req/s", 0), ("p99", "p99 µs", 0)):
            vals = [per.get((sc, t), {}).get(k) for t, _ in PER_TIERS]
            ng, bl, me = (per.get((sc, t), {}).get(k) for t in ("nginx1", "baseline", "codex-shield"))
            w("| %s | %s | %s | %s | %s |" % (lab, what, " | ".join(fmt(v, nd) for v in vals),
                                          fmt(me / ng if me and ng else None, 2), fmt(me / bl if me and bl else None, 2)))
    w("")

    # targets of issue 19, each with its figure
    target = targets_table(w, "### Targets (issue 19)", "met", "**missed**")

    r = per.get(("per-responses", "codex-shield"), {})
    n = per.get(("per-responses", "nginx1"), {})

    def ratio_target(name, k, limit, nd, unit):
        if k in r and k in n and n[k]:
            q = r[k] / n[k]
            target(name, "%s vs %s %s (%s×)" % (fmt(r[k], nd), fmt(n[k], nd), unit, fmt(q, 2)), q <= limit)
        else:
            target(name, "n/a", None)

    ratio_target("CPU per request ≤ 1.5× nginx's", "cpu", 1.5, 1, "µs")
    ratio_target("syscalls per request ≤ nginx's", "sys", 1.0, 1, "")
    if "cs" in r:
        target("context switches per request ≤ 2", fmt(r["cs"], 2), r["cs"] <= 2)
    else:
        target("context switches per request ≤ 2", "n/a", None)
    if "rps" in r and n.get("rps"):
        q = r["rps"] / n["rps"]
        target("c=32 throughput ≥ 1.0× nginx", "%s vs %s req/s (%s×)" % (fmt(r["rps"]), fmt(n["rps"]), fmt(q, 2)), q >= 1.0)
    else:
        target("c=32 throughput ≥ 1.0× nginx", "n/a", None)
    ratio_target("c=32 p99 ≤ 1.2× nginx's", "p99", 1.2, 0, "µs")
    c1 = by.get("chunked-c1", {})
    me1, fl1 = c1.get("codex-shield"), c1.get("floor")
    if me1 and fl1 and not me1.get("failed") and not fl1.get("failed"):
        a = num(me1, "p50") - num(fl1, "p50")
        target("c=1 added p50 ≤ 0.05 ms over the floor (chunked)", "%s µs (%s vs %s)" % (
            fmt(a), fmt(num(me1, "p50")), fmt(num(fl1, "p50"))), a <= 50)
    else:
        target("c=1 added p50 ≤ 0.05 ms over the floor (chunked)", "n/a", None)
    long = m.get("long", {})
    for tier, name in (("codex-shield", "glibc build"), ("codex-shield-static", "static musl build")):
        d = long.get(tier)
        if d:
            kb, bl = num(d, "kb_per"), long.get("baseline")
            extra = " (baseline %s KB)" % fmt(num(bl, "kb_per")) if bl else ""
            bad = int(num(d, "errors", 0) or 0)
            target("memory per small in-flight answer ≤ 64 KB, %s" % name,
                   "%s KB at %s concurrent 10 s answers, %d errors%s" % (fmt(kb), d.get("n"), bad, extra),
                   kb <= 64 and bad == 0)
        else:
            target("memory per small in-flight answer ≤ 64 KB, %s" % name, "n/a (not measured)", None)
    tr = {}
    for x in runs:
        if x["scenario"] == "translate-c32":
            tr.setdefault(x["tier"], []).append(x)
    t, c = tr.get("codex-shield-translated"), tr.get("codex-shield-chat")
    tc = cpu_us_per_req(aggregate(t)) if t else None
    cc = cpu_us_per_req(aggregate(c)) if c else None
    if tc and cc:
        target("translated CPU ≤ 1.5× chat pass-through (c=32)", "%s vs %s µs (%s×)" % (fmt(tc, 1), fmt(cc, 1), fmt(tc / cc, 2)),
               tc / cc <= 1.5)
    else:
        target("translated CPU ≤ 1.5× chat pass-through (c=32)", "n/a", None)
    w("")


def main():
    runs, m, checks = parse(sys.argv[1])
    env = os.environ.get
    rounds_of = {}
    order = []
    for r in runs:
        sc = r["scenario"]
        if sc.startswith(("mem", "fail-", "translate-", "per-")):
            continue  # their own sections
        if sc not in rounds_of:
            order.append(sc)
        rounds_of.setdefault(sc, {}).setdefault(r["tier"], []).append(r)
    by = {sc: {tier: aggregate(rs) for tier, rs in tiers.items()} for sc, tiers in rounds_of.items()}
    mem = mem_per_answer(m)
    base_rev = env("BENCH_BASE_REV") or ""
    base_short = base_rev.split()[0] if base_rev else ""

    out = []
    w = out.append
    w("# codex-shield benchmark results")
    w("")
    w("- command: `%s` (bench/run.sh)" % env("BENCH_CMD", "make bench"))
    w("- date: %s; machine: %s cores, %s, Linux %s; %s, %s; codex-shield rev %s"
      % (env("BENCH_DATE"), env("BENCH_NPROC"), env("BENCH_CPU"), env("BENCH_KERNEL"),
         env("BENCH_NGINX"), env("BENCH_WRK"), env("BENCH_REV")))
    w("- every figure below comes from this one run, all on 127.0.0.1 and sharing the same %s cores "
      "(load generator, proxy and mock compete for CPU). Throughput/latency: %s rounds × %s s per "
      "(scenario, tier), tiers interleaved within each round; each req/s and percentile is the "
      "median over the rounds, errors/CPU/counters are totals. Memory and failure runs: %s s each."
      % (env("BENCH_NPROC"), env("BENCH_ROUNDS"), env("BENCH_RDUR"), env("BENCH_DUR")))
    w("- tiers: **floor** = wrk straight to the nginx mock upstream (1 worker, static ~17.7 KB "
      "Responses stream / ~20 KB Chat stream); **nginx** = nginx streaming reverse proxy "
      "(%s workers, proxy_buffering off, HTTP/1.1 keep-alive to the mock); **baseline** = %s, "
      "from bench/BASELINE, built in a git worktree of its own (bench/baseline.sh); **codex-shield** = "
      "target/release/codex-shield (glibc), LOG_LEVEL=error, metrics on (always counted), same mock; "
      "**codex-shield (again)** = the same binary as a second tier, the baseline between the two "
      "copies in each round (the order reversed every other round): their spread is the run-to-run noise; **codex-shield-static** = "
      "the same source built by scripts/static.sh (musl, static-pie), when present."
      % (env("BENCH_NPROC"), base_rev or "n/a"))
    w("- upstream framing: **Content-Length** = the mock's static files; **chunked** = the same bytes "
      "with `Transfer-Encoding: chunked` (as OpenAI and Azure send; one data chunk and the last "
      "chunk, nginx's addition filter with an empty `add_after_body`).")
    w("- the baseline is the reference, not the previous report: figures from another day or "
      "machine are not comparable. bench/README.md says how to move bench/BASELINE forward.")
    if env("BENCH_BUILD_NOTE"):
        w("- **codex-shield not measured**: %s" % env("BENCH_BUILD_NOTE"))
    if env("BENCH_BASE_NOTE"):
        w("- **%s**" % env("BENCH_BASE_NOTE"))
    for c in checks:
        w("- **%s**: %s" % (c.get("tier"), c.get("why", "").replace("_", " ")))
    w("")
    per_request_section(w, runs, m, by)
    w("## Throughput and latency")
    w("")
    w("| scenario | upstream | tier | req/s | req/s ÷ baseline | p50 µs | p99 µs | p99 ÷ baseline "
      "| server CPU µs/req | CPU ÷ baseline | req/s ÷ nginx | p99 ÷ nginx | added p50 µs "
      "| new upstream conns/req | non-2xx | socket errors |")
    w("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for sc in order:
        tiers = by[sc]
        fl, ng, bl = tiers.get("floor"), tiers.get("nginx"), tiers.get("baseline")
        bl = None if bl is None or bl.get("failed") else bl
        for tier, name in TIER_NAMES:
            r = tiers.get(tier)
            if r is None:
                continue
            up = FRAMING.get(r.get("framing", "cl"), "?")
            if r.get("failed"):
                w("| %s | %s | %s | wrk failed | | | | | | | | | | | | |" % (label(sc, r), up, name))
                continue
            rps, p50, p99 = (num(r, k) for k in ("rps", "p50", "p99"))
            cpu = cpu_us_per_req(r)
            added50 = rn = p99n = None
            if fl and tier != "floor" and not fl.get("failed"):
                added50 = p50 - num(fl, "p50")
            if ng and not ng.get("failed"):
                rn = rps / num(ng, "rps")
                p99n = p99 / num(ng, "p99")
            div = lambda x, k: fmt(x / figure(bl, k), 2) if bl and x and figure(bl, k) and tier not in ("floor", "nginx") else "—"
            st, so = errs(r)
            ua, ur = num(r, "up_accepts"), num(r, "up_requests")
            so_s = "%d" % so + (" (+%s runs failed)" % r["failed_rounds"] if r.get("failed_rounds") else "")
            w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d | %s |" % (
                label(sc, r), up, name, fmt(rps), div(rps, "rps"), fmt(p50), fmt(p99), div(p99, "p99"),
                fmt(cpu, 1), div(cpu, "cpu"), fmt(rn, 2), fmt(p99n, 2),
                "—" if tier == "floor" else fmt(added50), fmt(ua / ur if ur else None, 3), st, so_s))
    w("")
    w("÷ baseline = this tier's figure ÷ the baseline's on the same row (req/s: above 1 is better; "
      "p99 and CPU: below 1 is better). Added latency = tier minus floor at p50 and the same load. "
      "Server CPU = utime+stime of the serving process (the mock for the floor, nginx's workers, "
      "codex-shield) over the run, per request. New upstream conns/req = connections the mock "
      "accepted ÷ requests it served (its stub_status), i.e. how well the tier reuses upstream "
      "connections (the floor's are wrk's own). The fixed-rate row uses wrk with a Lua `delay()` "
      "schedule (see wrk_post.lua): wrk2 is not packaged in Debian, and a Python load tool would be "
      "slower than what it measures.")
    w("")

    # -------------------------------------------------------------- memory
    if mem:
        w("## Memory per in-flight answer")
        w("")
        w("256 clients, the mock sends 1 MiB answers at 512 KB/s (~2 s per answer), so that all "
          "256 answers are in flight at once; a process per tier, rounds interleaved. Per answer = "
          "(peak RSS − idle RSS) ÷ the most answers sampled in flight at once (established "
          "connections to the mock).")
        w("")
        w("| upstream | tier | idle RSS MB | peak RSS (VmHWM) MB | answers in flight | MB per in-flight answer "
          "| ÷ baseline | RSS after each round MB | answers per round, non-2xx / socket errors |")
        w("|---|---|--:|--:|--:|--:|--:|--:|---|")
        memruns = {}
        for r in runs:
            if r["scenario"].startswith("mem-"):
                memruns.setdefault((r["tier"], r.get("framing", "cl")), []).append(r)
        for framing in ("cl", "chunked"):
            bl = mem.get(("baseline", framing))
            for tier, name in TIER_NAMES:
                d = mem.get((tier, framing))
                if not d:
                    continue
                w("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                    FRAMING[framing], name, fmt(kb_mb(d["idle"]), 2), fmt(kb_mb(d["hwm"]), 1),
                    ", ".join(x.get("max_inflight", "?") for x in d["rounds"]), fmt(d["per"], 2),
                    fmt(d["per"] / bl["per"], 2) if bl and bl["per"] > 0 else "—",
                    " → ".join(fmt(kb_mb(num(x, "rss_after_kb")), 1) for x in d["rounds"]),
                    "; ".join("%s, %d / %d" % ((fmt(num(r, "requests")),) + errs(r)) for r in memruns.get((tier, framing), []))))
        w("")

    # ------------------------------------------------------------ resources
    w("## Start-up, size, cost under failure (codex-shield)")
    w("")
    w("| measure | value |")
    w("|---|--:|")
    idle = num(m, "idle_rss_kb")
    w("| idle RSS after start (%s threads) | %s MB |" % (m.get("threads", "?"), fmt(kb_mb(idle), 2)))
    if "baseline_idle_rss_kb" in m:
        w("| baseline: idle RSS after start | %s MB |" % fmt(kb_mb(num(m, "baseline_idle_rss_kb")), 2))
    w("| RSS after the load runs above (peak during them) | %s MB (%s MB) |"
      % (fmt(kb_mb(num(m, "rss_after_load_kb")), 2), fmt(kb_mb(num(m, "hwm_after_load_kb")), 2)))
    if "startup_median_ms" in m:
        w("| start-up to a ready /healthz, median of %s (min / p90) | %s ms (%s / %s ms) |" % (
            m.get("startup_n"), m["startup_median_ms"], m.get("startup_min_ms"), m.get("startup_p90_ms")))
    w("| release binary size | %s |" % (fmt(num(m, "release_bytes", None) and num(m, "release_bytes") / MB, 2, " MB")))
    if "static_idle_rss_kb" in m:
        w("| static (musl) binary: idle RSS after start | %s MB |" % fmt(kb_mb(num(m, "static_idle_rss_kb")), 2))
    if "static_bytes" in m:
        w("| static (musl) binary size | %s MB (%s) |" % (fmt(num(m, "static_bytes") / MB, 2),
                                                       m.get("static_linkage", "").replace("_", " ")))
    else:
        w("| static (musl) binary size | %s |" % (env("BENCH_STATIC_NOTE") or "n/a"))
    base = by.get("c32", {}).get("codex-shield")
    base_cpu = cpu_us_per_req(base) if base else None
    fails = m.get("fail", {})
    failruns = {r["scenario"]: r for r in runs if r["scenario"].startswith("fail-")}
    for mode, desc in (("flaky", "429 on ~half of the upstream attempts"),
                       ("flakystream", "200 + stream ending in response.failed (server_error) on ~half")):
        r, f = failruns.get("fail-" + mode), fails.get(mode)
        if not r or r.get("failed"):
            continue
        st, so = errs(r)
        ok = num(r, "requests", 0) - st
        att = sum(int(f.get(k, 0)) for k in ("ups_429", "ups_failed_stream", "ups_ok")) if f else 0
        cpu = cpu_us_per_req(r, ok)
        w("| failure cost, %s, c=32, RETRY_WAIT_SECONDS=0.001: CPU per successful answer | %s µs "
          "(%s× the %s µs/req without failures; %s upstream attempts/answer; %s answers, %d non-2xx, %d socket errors) |"
          % (desc, fmt(cpu, 1), fmt(cpu / base_cpu if cpu and base_cpu else None, 2), fmt(base_cpu, 1),
             fmt(att / ok if ok else None, 2), fmt(ok), st, so))
    w("")

    # -------------------------------------------------------------- metrics
    w("## Metrics")
    w("")
    if num(m, "metrics_requests") is not None:
        w("Counting is always on (no switch): after the load runs the main codex-shield's own "
          "`/metrics` reported %s requests and %s upstream attempts."
          % (fmt(num(m, "metrics_requests")), fmt(num(m, "metrics_attempts"))))
    else:
        w("The codex-shield measured here has no `/metrics` (a build before metrics).")
    cost = env("BENCH_METRICS_COST")
    if cost and os.path.exists(cost):
        w("")
        w("The metrics calls of one request alone (`bench/metrics_cost.rs`: `attempt` per attempt, "
          "`retry` per retry, one `request_done`; a loop, per request):")
        w("")
        out.extend(open(cost).read().strip().splitlines())
    w("")
    translated(runs, m, w)

    # -------------------------------------------------------------- targets
    target = targets_table(w, "## Targets", "PASS", "**FAIL**")

    sh = {sc: by[sc].get("codex-shield") for sc in by}
    r1, f1 = sh.get("c1"), by.get("c1", {}).get("floor")
    if r1 and f1:
        a = num(r1, "p50") - num(f1, "p50")
        target("added p50 latency at c=1 ≤ 0.1 ms", "%s µs" % fmt(a), a <= 100)
    else:
        target("added p50 latency at c=1 ≤ 0.1 ms", "n/a", None)
    r32, n32 = sh.get("c32"), by.get("c32", {}).get("nginx")
    if r32 and n32:
        target("throughput at c=32 ≥ nginx's", "%s vs %s req/s" % (fmt(num(r32, "rps")), fmt(num(n32, "rps"))),
               num(r32, "rps") >= num(n32, "rps"))
        target("p99 at c=32 ≤ 1.2× nginx's", "%s vs %s µs (%s×)" % (
            fmt(num(r32, "p99")), fmt(num(n32, "p99")), fmt(num(r32, "p99") / num(n32, "p99"), 2)),
            num(r32, "p99") <= 1.2 * num(n32, "p99"))
    else:
        target("throughput at c=32 ≥ nginx's", "n/a", None)
        target("p99 at c=32 ≤ 1.2× nginx's", "n/a", None)
    r256 = sh.get("c256")
    if r256:
        mine = [r for r in runs if r["scenario"].startswith("mem-") and r["tier"] == "codex-shield"]
        e = [errs(r) for r in [r256, sh.get("chunked-c256")] + mine if r]
        bad = sum(a + b for a, b in e) + int(r256.get("failed_rounds", 0))
        target("256 concurrent clients served without errors",
               "%d errors (c=256 runs and the 1 MiB rounds)" % bad, bad == 0)
    else:
        target("256 concurrent clients served without errors", "n/a", None)
    target("idle RSS < 6 MB", "%s MB" % fmt(kb_mb(idle), 2), None if idle is None else kb_mb(idle) < 6)
    st_ms = num(m, "startup_median_ms")
    target("start-up < 50 ms (median)", "%s ms" % fmt(st_ms, 2), None if st_ms is None else st_ms < 50)
    sb = num(m, "static_bytes")
    target("static binary < 6 MB", ("%s MB" % fmt(sb / MB, 2)) if sb else (env("BENCH_STATIC_NOTE") or "n/a"),
           None if sb is None else sb / MB < 6)
    w("")
    routing = env("BENCH_ROUTING_MD")
    if routing and os.path.exists(routing) and os.path.getsize(routing):
        out.extend(open(routing).read().rstrip("\n").splitlines())
        w("")
    against_baseline(w, by, mem, base_short)
    print("\n".join(out))


def where(sc):
    if sc.startswith("mem-"):
        return "1 MiB answers, %s upstream" % FRAMING[sc[4:]]
    up = "chunked" if sc.startswith("chunked-") else "Content-Length"
    return "%s, %s upstream" % (label(sc, {"conns": "32"}), up)


def show(name, x):
    if x is None:
        return "n/a"
    if name in ("req/s", "p99", "errors"):
        return fmt(x)
    return fmt(x, 3 if name == "new upstream conns/req" else 2 if name.startswith("MB") else 1)


def against_baseline(w, by, mem, base):
    """The last section: codex-shield against the baseline of the same run, beyond the noise."""
    w("## Against the baseline%s, beyond the noise" % (" (%s)" % base if base else ""))
    w("")
    rows = compare(by, mem)
    if not rows:
        w("No baseline tier in this run (see the notes at the top): nothing to compare.")
        w("")
        return
    import statistics
    w("Noise = how far apart the two copies of the current build came out on the same row "
      "(larger ÷ smaller − 1), but never less than that figure's median over all rows; for "
      "connection and error counts, their difference (at least 0.01 conns/req). The current "
      "build's figure is the mean of its two copies; ÷ baseline is that mean ÷ the baseline's. "
      "A figure is worse when it is further from the baseline, in the worse direction, than the noise.")
    w("")
    for name in ("req/s", "p99", "CPU/req", "MB per in-flight answer"):
        sp = [spread(r[3], r[4]) for r in rows if r[1] == name and spread(r[3], r[4]) is not None]
        if sp:
            w("- noise in %s: median %s %%, largest %s %% (%d rows)"
              % (name, fmt(100 * statistics.median(sp), 1), fmt(100 * max(sp), 1), len(sp)))
    w("")
    w("| where | figure | baseline | codex-shield | codex-shield (again) | mean ÷ baseline | noise | verdict |")
    w("|---|---|--:|--:|--:|--:|--:|---|")
    for sc, name, b, c, a, ratio, noise, verdict in rows:
        if name == "errors" and not (b or c or a):
            continue  # no errors anywhere: nothing to show
        nz = "n/a" if noise is None else (show(name, noise) if name in ("new upstream conns/req", "errors")
                                            else "%s %%" % fmt(100 * noise, 1))
        w("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            where(sc), name, show(name, b), show(name, c), show(name, a), fmt(ratio, 2), nz,
            "**worse**" if verdict == "worse" else verdict))
    w("")
    worse = [r for r in rows if r[7] == "worse"]
    better = [r for r in rows if r[7] == "better"]
    w("**Regressions vs baseline%s** (worse by more than the noise):%s" % (" " + base if base else "", " none." if not worse else ""))
    if worse:
        w("")
    for sc, name, b, c, a, ratio, noise, _ in worse:
        w("- %s: %s %s vs %s (%s)" % (
            where(sc), name, show(name, c) if a is None else "%s / %s" % (show(name, c), show(name, a)), show(name, b),
            "noise %s" % show(name, noise) if ratio is None else "÷ baseline %s, noise %s %%" % (fmt(ratio, 2), fmt(100 * noise, 1))))
    w("")
    w("Better than the baseline by more than the noise: %s" % (
        "; ".join("%s %s (%s / %s vs %s)" % (where(sc), name, show(name, c), show(name, a), show(name, b))
                  for sc, name, b, c, a, ratio, noise, _ in better) or "none."))
    w("")


if __name__ == "__main__":
    main()
