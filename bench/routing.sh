# bench/routing.sh: the cost of choosing an upstream (issue 10), sourced by bench/run.sh after
# its other scenarios, with its helpers (start_shield, run_wrk, stop_pid...) and variables.
#
# Three codex-shield processes in front of the same nginx mock: one upstream; three upstreams
# (AZURE_ENDPOINT_2/_3, each with its own key) with ROUTING=failover (every answer still comes
# from upstream 1); three with ROUTING=round-robin (each request starts at the next one, so
# the answers come from all three). Responses, c=32, ROUNDS rounds of RDUR s, the three
# interleaved in each round. Writes "routing ..." lines to $RES (report.py ignores them) and
# the markdown section to $TMP/routing.md, which run.sh appends to the report.

routing_bench() {
  local p1 p3 p3rr round tier pid
  read -r p1 p3 p3rr <<<"$(free_ports 3)"
  local extra=(AZURE_ENDPOINT_2="http://127.0.0.1:$UP/v1" AZURE_API_KEY_2=bench2
    AZURE_ENDPOINT_3="http://127.0.0.1:$UP/v1" AZURE_API_KEY_3=bench3)
  declare -A port=([codex-shield-1up]=$p1 [codex-shield-3up]=$p3 [codex-shield-3up-rr]=$p3rr)
  declare -A pids=()
  log "routing: one upstream, three (failover), three (round-robin)"
  start_shield "$p1" /v1 || return 0
  pids[codex-shield-1up]=$SHIELD_PID
  start_shield "$p3" /v1 "${extra[@]}" ROUTING=failover || return 0
  pids[codex-shield-3up]=$SHIELD_PID
  start_shield "$p3rr" /v1 "${extra[@]}" ROUTING=round-robin || return 0
  pids[codex-shield-3up-rr]=$SHIELD_PID
  for tier in codex-shield-1up codex-shield-3up codex-shield-3up-rr; do # warm-up
    BENCH_BODY="$FIX/request_responses.json" timeout 30 wrk -t2 -c32 -d"${WARM}s" -s "$BENCH_DIR/wrk_post.lua" \
      "http://127.0.0.1:${port[$tier]}/v1/responses" >/dev/null 2>&1 || true
  done
  for ((round = 1; round <= ROUNDS; round++)); do
    for tier in codex-shield-1up codex-shield-3up codex-shield-3up-rr; do
      SHIELD_PID=${pids[$tier]}
      ROUND=$round run_wrk routing "$tier" "http://127.0.0.1:${port[$tier]}/v1/responses" 2 32 "$RDUR"
    done
  done
  for pid in "${pids[@]}"; do stop_pid "$pid"; done
  # run_wrk wrote "run scenario=routing ..." lines; keep them apart from report.py's rows
  grep '^run scenario=routing ' "$RES" | sed 's/^run /routing /' >>"$TMP/routing.txt" || true
  sed -i '/^run scenario=routing /d' "$RES"
  python3 - "$TMP/routing.txt" >"$TMP/routing.md" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    d = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
    rows.setdefault(d["tier"], []).append(d)
label = {"codex-shield-1up": "1 upstream", "codex-shield-3up": "3 upstreams, failover",
         "codex-shield-3up-rr": "3 upstreams, round-robin"}
print("## Routing: one upstream or three (issue 10)")
print()
print("Three codex-shield processes in front of the same mock (upstreams 2 and 3 point at it "
      "too, with their own keys), Responses at c=32, the three interleaved in each round; "
      "req/s and percentiles are medians over the rounds, CPU is the total over them.")
print()
print("| upstreams configured | req/s | p50 µs | p99 µs | server CPU µs/req | CPU ÷ 1 upstream | errors |")
print("|---|--:|--:|--:|--:|--:|--:|")
base = None
for tier in ("codex-shield-1up", "codex-shield-3up", "codex-shield-3up-rr"):
    ok = [r for r in rows.get(tier, []) if not r.get("failed")]
    if not ok:
        print("| %s | wrk failed | | | | | |" % label[tier])
        continue
    med = lambda k: statistics.median(float(r[k]) for r in ok)
    req = sum(float(r["requests"]) for r in ok)
    cpu = sum(float(r["cpu_ticks"]) for r in ok) / float(ok[0]["clk_tck"]) * 1e6 / req if req else float("nan")
    base = base or cpu
    errors = sum(int(float(r.get(k, 0))) for r in ok
                 for k in ("err_status", "err_connect", "err_read", "err_write", "err_timeout"))
    print("| %s | %s | %s | %s | %.1f | %.2f | %d |" % (
        label[tier], "{:,.0f}".format(med("rps")), "{:,.0f}".format(med("p50")),
        "{:,.0f}".format(med("p99")), cpu, cpu / base, errors))
print()
EOF
}
routing_bench
