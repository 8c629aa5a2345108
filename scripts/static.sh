#!/usr/bin/env bash
# scripts/static.sh: build a fully static codex-shield for any x86_64 Linux server.
#
#   bash scripts/static.sh      (or: make static)
#   -> target/x86_64-unknown-linux-musl/release/codex-shield
#
# The musl target links statically. ureq's rustls uses ring, whose C and assembly
# parts are compiled for the target by the cc crate, so a musl C compiler
# (musl-gcc, Debian package musl-tools) must be present; this script installs it
# with apt-get when it can. Then it proves the result is static.
set -euo pipefail

TARGET="x86_64-unknown-linux-musl"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/target/$TARGET/release/codex-shield"

say() { printf 'static: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

if command -v rustup >/dev/null 2>&1; then
    rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET"
else
    say "no rustup: assuming the $TARGET standard library is installed"
fi

if ! command -v musl-gcc >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || die "musl-gcc is missing: install musl-tools (or your distro's musl C compiler)"
    say "installing musl-tools (musl-gcc) for ring's C code"
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get install -y musl-tools >&2 ||
        { "${sudo_cmd[@]}" apt-get update >&2 && "${sudo_cmd[@]}" apt-get install -y musl-tools >&2; }
fi

locked=()
[ -f "$ROOT/Cargo.lock" ] && locked=(--locked)
say "cargo build --release ${locked[*]:-} --target $TARGET"
(cd "$ROOT" && CC_x86_64_unknown_linux_musl="${CC_x86_64_unknown_linux_musl:-musl-gcc}" \
    cargo build --release ${locked[@]+"${locked[@]}"} --target "$TARGET")

[ -x "$BIN" ] || die "no binary at $BIN"
# `file` says "static-pie linked" or "statically linked"; ldd says "not a dynamic
# executable" (glibc) or "statically linked": accept either, reject any .so.
if command -v file >/dev/null 2>&1; then
    description="$(file -b "$BIN")"
    say "file: $description"
    case "$description" in *"static"*) ;; *) die "not static according to file(1)" ;; esac
fi
if command -v ldd >/dev/null 2>&1; then
    ldd_out="$(ldd "$BIN" 2>&1 || true)"
    say "ldd: $ldd_out"
    case "$ldd_out" in *"=>"* | *".so"*) die "ldd lists shared libraries" ;; esac
fi
# jemalloc's configuration is compiled in from .cargo/config.toml ([env]); without it every
# thread, one per answer in flight, would keep a cache of its own (docs/limits.md).
grep -aq 'tcache:false' "$BIN" || die "jemalloc was built without tcache:false (.cargo/config.toml)"
"$BIN" --version >/dev/null || die "the static binary does not run"
say "ok: $BIN ($(du -h "$BIN" | cut -f1), $("$BIN" --version))"
