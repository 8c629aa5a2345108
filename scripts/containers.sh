# scripts/containers.sh: sourced by the scripts that build or run containers.
#
# need_container_tools installs buildah, podman and runc from Debian's packages when missing;
# podman_cmd runs podman the way this kind of machine needs it: vfs storage (no overlay
# mounts), runc, cgroupfs (no systemd), and a containers.conf without default ulimits (the
# sandbox refuses to raise them). PODMAN_FLAGS overrides the flags.

need_container_tools() {
    local missing=()
    command -v buildah >/dev/null 2>&1 || missing+=(buildah)
    command -v podman >/dev/null 2>&1 || missing+=(podman)
    command -v runc >/dev/null 2>&1 || missing+=(runc)
    [ "${#missing[@]}" -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 || { echo "install ${missing[*]} first" >&2; return 1; }
    echo "installing ${missing[*]} from Debian's packages" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

CONTAINERS_CONF_FILE="${CONTAINERS_CONF_FILE:-${TMPDIR:-/tmp}/codex-shield-containers.conf}"
if [ -z "${CONTAINERS_CONF:-}" ]; then
    printf '[containers]\ndefault_ulimits = []\n' >"$CONTAINERS_CONF_FILE"
    export CONTAINERS_CONF="$CONTAINERS_CONF_FILE"
fi
read -r -a PODMAN_FLAGS <<<"${PODMAN_FLAGS:---storage-driver vfs --runtime runc --cgroup-manager=cgroupfs}"

podman_cmd() {
    podman "${PODMAN_FLAGS[@]}" "$@"
}
