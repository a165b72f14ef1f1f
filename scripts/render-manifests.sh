#!/usr/bin/env bash
# Regenerates manifests/weft.yaml (for `kubectl apply -f`) from the kustomize base.
# e2e/tests/manifests.rs fails when the two differ.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
kubectl=${KUBECTL:-${WEFT_CACHE:-/var/cache/weft}/bin/kubectl}
[[ -x $kubectl ]] || { echo "no kubectl at $kubectl: run scripts/build-k8s.sh" >&2; exit 1; }
out=$root/manifests/weft.yaml
"$kubectl" kustomize "$root/manifests" >"$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out" >&2
