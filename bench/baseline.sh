#!/usr/bin/env bash
# bench/baseline.sh: build the baseline codex-shield that make bench measures next to the
# current build, and print the path of its binary on stdout (logs go to stderr).
#
#   bash bench/baseline.sh                       # the rev in bench/BASELINE
#   BENCH_BASELINE=<rev> bash bench/baseline.sh  # any rev git knows (sha, tag, branch)
#
# The rev gets a detached git worktree of its own, target/bench-baseline/<12-hex sha>/, with
# its own cargo target dir inside it. Keyed by the full sha, so the second run of the same rev
# finds the worktree and its release binary and `cargo build` has nothing to do; a moving name
# (a branch) builds again only when it points elsewhere. `make clean` removes it all (the
# stale worktree registration is pruned on the next run).
set -euo pipefail
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH_DIR/.." && pwd)"
log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

rev="${BENCH_BASELINE:-}"
if [[ -z "$rev" && -f "$BENCH_DIR/BASELINE" ]]; then
  rev=$(grep -v '^[[:space:]]*\(#\|$\)' "$BENCH_DIR/BASELINE" | head -1 | awk '{print $1}')
fi
[[ -n "$rev" ]] || { log "baseline: no rev (bench/BASELINE is empty, BENCH_BASELINE unset)"; exit 1; }
sha=$(git -C "$ROOT" rev-parse --verify --quiet "$rev^{commit}") \
  || { log "baseline: git does not know the rev '$rev'"; exit 1; }
dir="$ROOT/target/bench-baseline/${sha:0:12}"

if [[ -f "$dir/.git" && "$(git -C "$dir" rev-parse HEAD 2>/dev/null)" == "$sha" ]]; then
  # a tracked file edited by hand there would be measured as the baseline: put it back
  git -C "$dir" diff --quiet HEAD || { log "baseline: resetting edited files in $dir"; git -C "$dir" reset -q --hard "$sha"; }
else
  log "baseline: git worktree for $rev ($sha) at ${dir#"$ROOT"/}"
  rm -rf "$dir"
  git -C "$ROOT" worktree prune
  mkdir -p "$(dirname "$dir")"
  git -C "$ROOT" worktree add -q --detach "$dir" "$sha" >&2
fi

log "baseline: cargo build --release in ${dir#"$ROOT"/} (a no-op when already built)"
# CARGO_TARGET_DIR would make both builds share one target/release/codex-shield
(cd "$dir" && env -u CARGO_TARGET_DIR cargo build --release --locked --quiet) >&2 \
  || { log "baseline: cargo build --release failed in $dir"; exit 1; }
[[ -x "$dir/target/release/codex-shield" ]] || { log "baseline: no binary in $dir/target/release"; exit 1; }
echo "$dir/target/release/codex-shield"
