#!/usr/bin/env bash
# scripts/image.sh: build the codex-shield container image (make image).
#
#   bash scripts/image.sh            -> localhost/codex-shield:VERSION and :latest
#   IMAGE=registry/codex-shield bash scripts/image.sh
#
# Builds the static binary (scripts/static.sh), then the Containerfile FROM scratch with
# buildah (installed from Debian's packages when missing and apt-get exists). On this kind of
# machine buildah needs `--storage-driver vfs --isolation chroot` (no overlay mounts, no
# user namespaces); BUILDAH_FLAGS and BUD_FLAGS override that. `--format docker` keeps the HEALTHCHECK
# (the OCI image format has no such field). Then a smoke test with podman: the image must
# refuse to start on 0.0.0.0 without PROXY_API_KEY, and answer /healthz with one
# (SMOKE=0 skips it).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="${IMAGE:-localhost/codex-shield}"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)"
read -r -a BUILDAH_FLAGS <<<"${BUILDAH_FLAGS:---storage-driver vfs}"
read -r -a BUD_FLAGS <<<"${BUD_FLAGS:---isolation chroot}"

say() { printf 'image: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# shellcheck source=scripts/containers.sh
. "$ROOT/scripts/containers.sh"
need_container_tools

bash "$ROOT/scripts/static.sh"
say "buildah ${BUILDAH_FLAGS[*]} bud ${BUD_FLAGS[*]} -t $IMAGE:$VERSION"
(cd "$ROOT" && buildah "${BUILDAH_FLAGS[@]}" bud "${BUD_FLAGS[@]}" --format docker --build-arg "VERSION=$VERSION" \
    -f Containerfile -t "$IMAGE:$VERSION" -t "$IMAGE:latest" .)
buildah "${BUILDAH_FLAGS[@]}" images --format '{{.Name}}:{{.Tag}} {{.Size}}' | grep -F "$IMAGE" >&2 || true

[ "${SMOKE:-1}" = 0 ] && exit 0
say "smoke test with podman"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
name="codex-shield-smoke-$$"
trap 'podman_cmd rm -f "$name" >/dev/null 2>&1 || true' EXIT
# 0.0.0.0 (the image's default) without PROXY_API_KEY: refused, exit 2, naming HOST
set +e
refused="$(podman_cmd run --rm --no-healthcheck -e AZURE_ENDPOINT=http://127.0.0.1:9/v1 -e PORT="$port" "$IMAGE:$VERSION" 2>&1)"
code=$?
set -e
[ "$code" -eq 2 ] && [[ "$refused" == *HOST* ]] || die "expected a refusal (exit 2, HOST), got $code: $refused"
say "refused without PROXY_API_KEY: ok ($refused)"
healthcheck="$(podman_cmd image inspect -f '{{.Healthcheck.Test}}' "$IMAGE:$VERSION" 2>/dev/null ||
    podman_cmd image inspect -f '{{.Config.Healthcheck.Test}}' "$IMAGE:$VERSION")"
[[ "$healthcheck" == *--healthcheck* ]] || die "the image lost its HEALTHCHECK: $healthcheck"
# The image's health check, pointed at this port, run by hand (no systemd timers here).
podman_cmd run -d --name "$name" --health-interval disable \
    --health-cmd "[\"/codex-shield\",\"--healthcheck\",\"http://127.0.0.1:$port/healthz\"]" \
    -e AZURE_ENDPOINT=http://127.0.0.1:9/v1 -e HOST=127.0.0.1 \
    -e PORT="$port" -e PROXY_API_KEY=smoke "$IMAGE:$VERSION" >/dev/null
for _ in $(seq 100); do
    "$ROOT/target/x86_64-unknown-linux-musl/release/codex-shield" --healthcheck "http://127.0.0.1:$port/healthz" 2>/dev/null && break
    sleep 0.1
done
podman_cmd healthcheck run "$name" ||
    die "the health check inside the container failed: $(podman_cmd logs "$name" 2>&1)"
user="$(podman_cmd exec "$name" /codex-shield --version >/dev/null && podman_cmd inspect -f '{{.Config.User}}' "$name")"
[ "$user" = "65532:65532" ] || die "runs as $user, not 65532:65532"
podman_cmd stop -t 10 "$name" >/dev/null
code="$(podman_cmd inspect -f '{{.State.ExitCode}}' "$name")"
[ "$code" = 0 ] || die "SIGTERM exit code $code, not 0"
say "ok: $IMAGE:$VERSION runs as $user, answers its health check, stops with 0 on SIGTERM"
