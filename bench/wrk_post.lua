-- wrk script: POST a fixed JSON body (BENCH_BODY, a file) and print exact results.
-- Optional fixed rate: BENCH_RATE=<requests/s in total> with BENCH_THREADS=<wrk -t>;
-- each thread keeps an absolute send schedule (clock_gettime via LuaJIT ffi) and
-- delay() holds each connection until its slot, so the offered load is constant
-- as long as there are enough connections (latency is measured from the actual send).
local body_file = os.getenv("BENCH_BODY") or error("BENCH_BODY not set")
local f = assert(io.open(body_file, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench"

local rate = tonumber(os.getenv("BENCH_RATE") or "0")
if rate > 0 then
  local ffi = require("ffi")
  ffi.cdef[[
    typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
    int clock_gettime(int clk_id, bench_timespec *tp);
  ]]
  local ts = ffi.new("bench_timespec")
  local function now_ms()
    ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
  end
  local threads = tonumber(os.getenv("BENCH_THREADS") or "1")
  local interval = 1000 * threads / rate -- ms between sends of this thread
  local next_t = nil
  function delay()
    local t = now_ms()
    if next_t == nil then next_t = t end
    next_t = next_t + interval
    local d = next_t - t
    if d < 0 then return 0 end
    return d -- wrk truncates to whole ms; the schedule itself stays exact
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d rps=%.1f p50=%d p90=%d p99=%d max=%d mean=%.1f " ..
    "err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d bytes=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50.0), latency:percentile(90.0), latency:percentile(99.0),
    latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout, summary.bytes))
end
