#!/usr/bin/env bash
# Try weft on one Linux machine (root): installs what it needs, builds Kubernetes,
# containerd and CoreDNS from source once (cached), builds weft and its image, brings up
# a local 3-node cluster whose nodes are NotReady until `kubectl apply -k manifests/`
# makes them Ready (`weft-e2e up`), then runs the connectivity suite against it without
# the disruptive checks (`weft-e2e test --no-disrupt`). The cluster stays up; remove it
# with `sudo target/release/weft-e2e down`.
# `scripts/try.sh demo` instead runs the lighter demo: netns nodes, a real kube-apiserver,
# no kubelet (`weft-e2e demo`, torn down at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build-k8s.sh
cargo build --release --workspace
scripts/build-cni.sh >/dev/null
if [[ ${1:-} == demo ]]; then
  shift
  exec target/release/weft-e2e demo "$@"
fi
scripts/build-containerd.sh
scripts/start-docker.sh
target/release/weft-e2e up "$@"
target/release/weft-e2e test --no-disrupt
cat <<'EOT'

weft is up on a local cluster (the host as control-plane node, 3 workers):
  export KUBECONFIG=/var/lib/weft-e2e/admin.kubeconfig
  /var/cache/weft/bin/kubectl get nodes -o wide
  /var/cache/weft/bin/kubectl -n weft-system get pods -o wide
Remove it with: sudo target/release/weft-e2e down
EOT
