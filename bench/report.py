#!/usr/bin/env python3
"""Render bench/run.sh's raw results (key=value lines) as the markdown report."""
import os
import sys

MB = 1_000_000  # targets are in MB = 10^6 bytes (stricter than MiB)


def parse(path):
    runs, metrics, checks = [], {}, []
    with open(path) as f:
        for line in f:
            kind, *kvs = line.split()
            d = dict(kv.split("=", 1) for kv in kvs if "=" in kv)
            if kind == "run":
                runs.append(d)
            elif kind == "metric":
                if "mem_round" in d:
                    metrics.setdefault("mem_rounds", []).append(d)
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


def label(sc, r):
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
    w("## Translated path: Responses client → chat-only upstream (`UPSTREAM_API=chat`)")
    w("")
    w("The same upstream answer (chat.sse, %s bytes) three ways, rounds interleaved: "
      "**codex-shield** = Responses pass-through (responses.sse), **chat** = Chat Completions "
      "pass-through, **translated** = a Responses request translated to chat and the chat answer "
      "translated back into a %s-byte Responses stream. The translation's own cost is the "
      "translated row minus the chat row." % (m.get("translate_chat_bytes", "?"), m.get("translate_answer_bytes", "?")))
    w("")
    w("| scenario | tier | req/s | p50 µs | p99 µs | server CPU µs/req | CPU ÷ chat pass-through | non-2xx | socket errors |")
    w("|---|---|--:|--:|--:|--:|--:|--:|--:|")
    for sc, lab in (("translate-c1", "c=1 (1 conn)"), ("translate-c32", "c=32")):
        chat = rounds_of.get((sc, "codex-shield-chat"))
        chat_cpu = cpu_us_per_req(aggregate(chat)) if chat else None
        for tier, name in (("codex-shield", "codex-shield (Responses)"), ("codex-shield-chat", "codex-shield (chat)"),
                           ("codex-shield-translated", "**codex-shield translated**")):
            rs = rounds_of.get((sc, tier))
            if not rs:
                continue
            r = aggregate(rs)
            if r.get("failed"):
                w("| %s | %s | wrk failed | | | | | | |" % (lab, name))
                continue
            cpu = cpu_us_per_req(r)
            st, so = errs(r)
            w("| %s | %s | %s | %s | %s | %s | %s | %d | %d |" % (
                lab, name, fmt(num(r, "rps")), fmt(num(r, "p50")), fmt(num(r, "p99")), fmt(cpu, 1),
                fmt(cpu / chat_cpu if cpu and chat_cpu else None, 2), st, so))
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


def main():
    runs, m, checks = parse(sys.argv[1])
    env = os.environ.get
    rounds_of = {}
    order = []
    for r in runs:
        sc = r["scenario"]
        if sc.startswith("mem") or sc.startswith("fail-") or sc.startswith("translate-"):
            continue  # their own sections
        if sc not in rounds_of:
            order.append(sc)
        rounds_of.setdefault(sc, {}).setdefault(r["tier"], []).append(r)
    by = {sc: {tier: aggregate(rs) for tier, rs in tiers.items()} for sc, tiers in rounds_of.items()}

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
      "(%s workers, proxy_buffering off, HTTP/1.1 keep-alive to the mock); **codex-shield** = "
      "target/release/codex-shield (glibc), LOG_LEVEL=error, metrics on (always counted), same mock; **codex-shield-static** = "
      "the same source built by scripts/static.sh (musl, static-pie), when present." % env("BENCH_NPROC"))
    if env("BENCH_BUILD_NOTE"):
        w("- **codex-shield not measured**: %s" % env("BENCH_BUILD_NOTE"))
    for c in checks:
        w("- **%s**: %s" % (c.get("tier"), c.get("why", "").replace("_", " ")))
    w("")
    w("## Throughput and latency")
    w("")
    w("| scenario | tier | req/s | p50 µs | p90 µs | p99 µs | added p50 µs | added p99 µs "
      "| req/s ÷ floor | req/s ÷ nginx | p99 ÷ nginx | server CPU µs/req | new upstream conns/req | non-2xx | socket errors |")
    w("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for sc in order:
        tiers = by[sc]
        fl, ng = tiers.get("floor"), tiers.get("nginx")
        for tier in ("floor", "nginx", "codex-shield", "codex-shield-static"):
            r = tiers.get(tier)
            if r is None:
                continue
            if r.get("failed"):
                w("| %s | %s | wrk failed | | | | | | | | | | | | |" % (label(sc, r), tier))
                continue
            rps, p50, p90, p99 = (num(r, k) for k in ("rps", "p50", "p90", "p99"))
            added50 = added99 = rf = rn = p99n = None
            if fl and tier != "floor" and not fl.get("failed"):
                added50, added99 = p50 - num(fl, "p50"), p99 - num(fl, "p99")
            if fl and not fl.get("failed"):
                rf = rps / num(fl, "rps")
            if ng and not ng.get("failed"):
                rn = rps / num(ng, "rps")
                p99n = p99 / num(ng, "p99")
            st, so = errs(r)
            ua, ur = num(r, "up_accepts"), num(r, "up_requests")
            conns = None if tier == "floor" or not ur else ua / ur
            so_s = "%d" % so + (" (+%s runs failed)" % r["failed_rounds"] if r.get("failed_rounds") else "")
            w("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d | %s |" % (
                label(sc, r), "**%s**" % tier if tier.startswith("codex-shield") else tier,
                fmt(rps), fmt(p50), fmt(p90), fmt(p99),
                "—" if tier == "floor" else fmt(added50), "—" if tier == "floor" else fmt(added99),
                fmt(rf, 2), fmt(rn, 2), fmt(p99n, 2), fmt(cpu_us_per_req(r), 1),
                "—" if tier == "floor" else fmt(conns, 3), st, so_s))
    w("")
    w("Added latency = tier minus floor at the same percentile and load (at c=32/c=256 the floor "
      "run saturates both cores with wrk and the mock alone, so its tail can exceed a proxied tier's "
      "and an added p99 can come out negative). Server CPU = utime+stime "
      "of the serving process (the mock for the floor, nginx's workers, codex-shield) over the run, "
      "per request. New upstream conns/req = connections the mock accepted ÷ requests it served (its stub_status), i.e. how well the proxy reuses upstream connections. The fixed-rate row uses wrk with a Lua `delay()` schedule (see wrk_post.lua): "
      "wrk2 is not packaged in Debian, and a Python load tool would be slower than what it measures.")
    w("")

    # ------------------------------------------------------------ resources
    w("## Memory, start-up, size, cost under failure (codex-shield)")
    w("")
    w("| measure | value |")
    w("|---|--:|")
    idle = num(m, "idle_rss_kb")
    w("| idle RSS after start (%s threads) | %s MB |" % (m.get("threads", "?"), fmt(kb_mb(idle), 2)))
    w("| RSS after the load runs above (peak during them) | %s MB (%s MB) |"
      % (fmt(kb_mb(num(m, "rss_after_load_kb")), 2), fmt(kb_mb(num(m, "hwm_after_load_kb")), 2)))
    rounds = m.get("mem_rounds", [])
    memruns = {r["scenario"]: r for r in runs if r["scenario"].startswith("mem")}
    big_idle = num(m, "big_idle_rss_kb")
    per_answer = None
    if rounds:
        hwm = max(num(d, "hwm_kb", 0) for d in rounds)
        inflight = max(num(d, "max_inflight", 0) for d in rounds) or 256
        per_answer = (hwm - (big_idle or 0)) * 1024 / inflight / MB
        w("| 256 clients × 1 MiB answers (mock sends at 512 KB/s, ~2 s per answer): peak RSS (VmHWM) | %s MB |"
          % fmt(kb_mb(hwm), 1))
        w("| … upstream answers in flight at once (max sampled, per round) | %s |"
          % ", ".join(d.get("max_inflight", "?") for d in rounds))
        w("| … memory per in-flight 1 MiB answer, (VmHWM − idle RSS %s MB) / %d | %s MB |"
          % (fmt(kb_mb(big_idle), 2), inflight, fmt(per_answer, 2)))
        w("| … RSS 1 s after each of %d rounds | %s MB |" % (
            len(rounds), " → ".join(fmt(kb_mb(num(d, "rss_after_kb")), 1) for d in rounds)))
        w("| … answers per round, errors (non-2xx / socket) | %s |" % "; ".join(
            "%s, %d / %d" % ((fmt(num(r, "requests")),) + errs(r)) for r in memruns.values()))
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
    w("## Metrics on: this run against the previous report")
    w("")
    if num(m, "metrics_requests") is not None:
        w("Counting is always on (no switch): after the load runs the main codex-shield's own "
          "`/metrics` reported %s requests and %s upstream attempts. The previous report "
          "(rev %s) is the reference; runs on this shared 2-core machine move by about 10 %% "
          "from one to the next, so only a larger gap means something."
          % (fmt(num(m, "metrics_requests")), fmt(num(m, "metrics_attempts")), m.get("prev_rev", "n/a")))
    else:
        w("The codex-shield measured here has no `/metrics` (a build before metrics).")
    w("")
    w("| codex-shield | req/s (previous → now) | p50 µs (previous → now) | server CPU µs/req (previous → now) |")
    w("|---|--:|--:|--:|")
    for sc, key in (("c1", "c=1"), ("c32", "c=32"), ("c256", "c=256")):
        r = by.get(sc, {}).get("codex-shield")
        now_cpu = cpu_us_per_req(r) if r else None
        w("| %s | %s → %s | %s → %s | %s → %s |" % (
            key, fmt(num(m, "prev_%s_rps" % sc)), fmt(num(r, "rps") if r else None),
            fmt(num(m, "prev_%s_p50" % sc)), fmt(num(r, "p50") if r else None),
            fmt(num(m, "prev_%s_cpu" % sc), 1), fmt(now_cpu, 1)))
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
    w("## Targets")
    w("")
    w("| target | measured | result |")
    w("|---|---|---|")

    def target(name, measured, ok):
        w("| %s | %s | %s |" % (name, measured, "n/a" if ok is None else ("PASS" if ok else "**FAIL**")))

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
        e = [errs(r) for r in [r256] + list(memruns.values())]
        bad = sum(a + b for a, b in e) + int(r256.get("failed_rounds", 0))
        target("256 concurrent clients served without errors",
               "%d errors (c=256 run and the 1 MiB rounds)" % bad, bad == 0)
    else:
        target("256 concurrent clients served without errors", "n/a", None)
    target("idle RSS < 6 MB", "%s MB" % fmt(kb_mb(idle), 2), None if idle is None else kb_mb(idle) < 6)
    st_ms = num(m, "startup_median_ms")
    target("start-up < 50 ms (median)", "%s ms" % fmt(st_ms, 2), None if st_ms is None else st_ms < 50)
    sb = num(m, "static_bytes")
    target("static binary < 6 MB", ("%s MB" % fmt(sb / MB, 2)) if sb else (env("BENCH_STATIC_NOTE") or "n/a"),
           None if sb is None else sb / MB < 6)
    w("")
    print("\n".join(out))


if __name__ == "__main__":
    main()
