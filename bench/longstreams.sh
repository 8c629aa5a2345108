#!/usr/bin/env bash
# make longstreams: one proxy holding 500, 1,000 and 2,000 concurrent answers that each take
# about 10 s upstream (examples/longstreams.rs). Prints one table row per level: errors, RSS,
# RSS per in-flight answer, threads, file descriptors, CPU, /healthz latency meanwhile.
#
#   bash bench/longstreams.sh                     # the static build (what the image ships)
#   SHIELD_BIN=$PWD/target/release/codex-shield bash bench/longstreams.sh   # absolute: the proxy runs in a temp dir
#   LONG_LEVELS=500,1000,2000,4000 LONG_SECONDS=10 bash bench/longstreams.sh
#
# Each in-flight answer holds a thread and 4 file descriptors in the proxy, and the bench's
# own clients and mock hold as many again: the script raises its open-file limit first.
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
if [ -z "${SHIELD_BIN:-}" ]; then
    bash scripts/static.sh
    SHIELD_BIN="$PWD/target/x86_64-unknown-linux-musl/release/codex-shield"
fi
export SHIELD_BIN
# The load generator only sleeps and copies bytes: a debug build is enough and reuses the
# test build's dependencies.
cargo build --quiet --example longstreams
echo "open-file limit: $(ulimit -n); threads-max: $(cat /proc/sys/kernel/threads-max); cores: $(nproc)"
exec timeout --signal=KILL 900s target/debug/examples/longstreams
