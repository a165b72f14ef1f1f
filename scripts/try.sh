#!/usr/bin/env bash
# Try weft on one Linux machine (root): installs what it needs, builds Kubernetes from
# source once (cached), builds weft, and runs the demo: three netns nodes against a real
# kube-apiserver, pods talking across nodes by pod IP. Extra arguments go to the demo
# (e.g. --keep to leave it running until Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build-k8s.sh
cargo build --release --workspace
exec target/release/weft-e2e demo "$@"
