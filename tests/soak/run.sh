#!/usr/bin/env bash
# make soak: build the release proxy, then fire thousands of requests at it through a
# fault-injecting mock (examples/soak.rs). Exits non-zero on any lost, partial or wrong answer,
# or on thread/RSS growth. Knobs: SOAK_REQUESTS, SOAK_CLIENTS, SOAK_SEED, SOAK_CAP_SECONDS.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet --bin codex-shield --example soak
export SHIELD_BIN="$PWD/target/release/codex-shield"
# The soak stops itself at SOAK_CAP_SECONDS; this is the backstop if it cannot.
exec timeout --signal=KILL "$(( ${SOAK_CAP_SECONDS:-240} + 30 ))s" target/release/examples/soak
