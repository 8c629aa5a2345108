#!/usr/bin/env bash
# deploy/kubernetes/validate.sh (make manifests): check the manifests offline.
#
# 1. kubernetes-validate (PyPI, pinned; it bundles the Kubernetes JSON schemas, so it needs no
#    cluster and no network) in strict mode, against the oldest version the manifests support
#    (1.30: the preStop `sleep` action) and the newest the package knows.
# 2. What no schema knows: kustomization.yaml lists every manifest but the Secret example,
#    terminationGracePeriodSeconds exceeds preStop + SHUTDOWN_GRACE_SECONDS, the probes use
#    /healthz, and the container runs as non-root with a read-only root and no capabilities.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VERSION=1.37.0
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/codex-shield/kubernetes-validate-$VERSION"
if [ ! -x "$VENV/bin/kubernetes-validate" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "kubernetes-validate==$VERSION"
fi
cd "$HERE"
manifests=(configmap.yaml deployment.yaml service.yaml pdb.yaml hpa.yaml secret.example.yaml)
for k8s in 1.30.0 "$VERSION"; do
    "$VENV/bin/kubernetes-validate" --strict --quiet -k "$k8s" "${manifests[@]}"
    echo "manifests: schemas of Kubernetes $k8s: ${#manifests[@]} files valid"
done
"$VENV/bin/python" - <<'PY'
import glob, sys, yaml

def load(name):
    with open(name) as f:
        return yaml.safe_load(f)

errors = []
kustomization = load("kustomization.yaml")
listed = set(kustomization["resources"])
present = set(glob.glob("*.yaml")) - {"kustomization.yaml", "secret.example.yaml"}
if listed != present:
    errors.append(f"kustomization resources {sorted(listed)} != manifests {sorted(present)}")
if "secret.example.yaml" in listed:
    errors.append("the Secret example must not be applied by kustomize")

config = load("configmap.yaml")["data"]
pod = load("deployment.yaml")["spec"]["template"]["spec"]
(container,) = pod["containers"]
grace = pod["terminationGracePeriodSeconds"]
pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
drain = float(config["SHUTDOWN_GRACE_SECONDS"])
if not grace > pause + drain:
    errors.append(f"terminationGracePeriodSeconds {grace} <= preStop {pause} + SHUTDOWN_GRACE_SECONDS {drain}")
for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
    if container[probe]["httpGet"]["path"] != "/healthz":
        errors.append(f"{probe} does not use /healthz")
security = container["securityContext"]
if not (pod["securityContext"]["runAsNonRoot"] and security["readOnlyRootFilesystem"]
        and security["capabilities"]["drop"] == ["ALL"] and not security["allowPrivilegeEscalation"]):
    errors.append("the container must run as non-root, read-only, without capabilities")
if load("hpa.yaml")["spec"]["minReplicas"] < 2 or load("pdb.yaml")["spec"]["minAvailable"] < 1:
    errors.append("at least 2 replicas, at least 1 available during disruptions")
for e in errors:
    print("manifests: " + e, file=sys.stderr)
if errors:
    sys.exit(1)
print(f"manifests: consistent (grace {grace} s > preStop {pause} s + drain {drain:g} s)")
PY
