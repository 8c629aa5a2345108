#!/usr/bin/env bash
# make torture: the exhaustion scenarios at full size against the release build, each a
# script of its own in this folder that prints what held and exits non-zero on a miss:
#   fd.sh        descriptors at the 1,024 limit, turned-away connections, recovery
#   slow.sh      clients that never read, a 2 KB / 2 s reader, shutdown time
#   memory.sh    peak memory per request against its body size, the overload guard
#   upstream.sh  upstreams that drip a header line or an event a byte at a time
# Runs every script, then says which failed. BIN=path tests another build.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
export BIN="${BIN:-$ROOT/target/release/codex-shield}"
if [[ "$BIN" == "$ROOT/target/release/codex-shield" ]]; then
    cargo build --release --quiet || exit 1
fi
failed=()
for scenario in fd slow memory upstream; do
    script="tests/torture/$scenario.sh"
    [[ -f "$script" ]] || { echo "torture: $script is missing" >&2; failed+=("$scenario"); continue; }
    echo "== torture: $scenario"
    started=$SECONDS
    if bash "$script"; then
        echo "== torture: $scenario held ($((SECONDS - started)) s)"
    else
        echo "== torture: $scenario FAILED ($((SECONDS - started)) s)"
        failed+=("$scenario")
    fi
done
if ((${#failed[@]})); then
    echo "torture: failed: ${failed[*]}"
    exit 1
fi
echo "torture: every scenario held"
