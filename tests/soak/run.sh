#!/usr/bin/env bash
# make soak: build the release proxy, then fire thousands of requests at it through
# fault-injecting mocks (examples/soak.rs, tests/soak/multi.rs): one upstream with planned
# faults, then three upstreams with independent random faults. Exits non-zero on any lost,
# partial or wrong answer, an error before the budget was spent, an attempt sent into a rest,
# or thread/RSS growth. About 2 minutes. Knobs: SOAK_PHASES, SOAK_REQUESTS,
# SOAK_MULTI_REQUESTS, SOAK_CLIENTS, SOAK_SEED, SOAK_ROUTING, SOAK_CAP_SECONDS.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet --bin codex-shield --example soak
export SHIELD_BIN="$PWD/target/release/codex-shield"
# The soak stops itself at SOAK_CAP_SECONDS; this is the backstop if it cannot.
exec timeout --signal=KILL "$(( ${SOAK_CAP_SECONDS:-240} + 30 ))s" target/release/examples/soak
