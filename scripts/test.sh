#!/usr/bin/env bash
# The whole test suite: installs what it needs, builds the Kubernetes components from
# source (cached), checks format and lints, and runs every test (unit, network-namespace
# tests against the real kernel, real kube-apiserver tests). Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) -ne 0 && "${WEFT_SKIP_PRIVILEGED:-}" != 1 ]]; then
  echo "scripts/test.sh needs root (network namespaces, netlink). Set WEFT_SKIP_PRIVILEGED=1 to skip those tests." >&2
  exit 1
fi

step() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }
t0=$(date +%s)

step "install dependencies"
scripts/install-deps.sh

step "build Kubernetes components and CNI reference tools"
scripts/build-k8s.sh
scripts/build-containerd.sh
scripts/build-helm.sh

step "start docker engine"
scripts/start-docker.sh

step "format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "release binaries (image, benchmarks, e2e)"
cargo build --release --workspace --locked
scripts/build-cni.sh

step "tests"
cargo test --workspace --locked -- --test-threads="${WEFT_TEST_THREADS:-4}" --skip local_cluster_up_test_down

step "Kubernetes' network e2e specs and test images (scripts/build-conformance.sh)"
scripts/build-conformance.sh >/dev/null

step "local cluster: weft-e2e up, test, conformance ([sig-network] Conformance), down"
cargo test -p weft-e2e --locked --test cluster -- --nocapture

step "local cluster with Helm: up --helm, test, helm upgrade under a stream, uninstall"
cargo test -p weft-e2e --locked --test helm -- local_cluster --nocapture

step "kind: a kind cluster from images built here (scripts/build-kind.sh, cached), weft applied, the suite, delete"
e2e/kind/run.sh

printf '\n== all tests passed in %ss\n' "$(( $(date +%s) - t0 ))"
