#!/usr/bin/env bash
# weft on kind: create the cluster (kind-config.yaml), build the weft and probe images
# with docker, load them into the nodes, apply weft's manifests and run the connectivity
# suite (`weft-e2e test`). Untested here: kind needs its node image from a registry,
# and this project's build machine reaches none (see README.md).
#
# Needs: kind, docker, kubectl, cargo. Env: KIND_CLUSTER (default weft), KEEP=1 keeps
# the cluster afterwards, WEFT_IMAGE (default weft.dev/weft:kind).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cluster=${KIND_CLUSTER:-weft}
image=${WEFT_IMAGE:-weft.dev/weft:kind}
probe=weft.dev/probe:0.1.0     # the suite's probe pods name this image
kubeconfig=$(mktemp)
work=$(mktemp -d)
log() { echo "[kind] $*" >&2; }
cleanup() {
    rm -rf "$work"
    if [[ ${KEEP:-0} != 1 ]]; then
        kind delete cluster --name "$cluster" || true
        rm -f "$kubeconfig"
    else
        log "cluster kept: export KUBECONFIG=$kubeconfig"
    fi
}
trap cleanup EXIT

log "create cluster $cluster"
kind create cluster --name "$cluster" --config "$here/kind-config.yaml" \
    --kubeconfig "$kubeconfig" --wait 0s

log "build binaries"
(cd "$root" && cargo build --release --locked --workspace --bins)
target=$(cd "$root" && cargo metadata --format-version 1 --no-deps | jq -r .target_directory)/release

# The images are built FROM debian:bookworm-slim (pulled, unlike on the build machine),
# on the host's bookworm-built binaries.
log "build $image"
cp "$target"/{weft,weft-agent,weft-controller} "$work/"
cat >"$work/Dockerfile.weft" <<'DOCKERFILE'
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends nftables iptables \
    && rm -rf /var/lib/apt/lists/*
COPY weft /weft
COPY weft-agent weft-controller /usr/local/bin/
RUN ln -s /weft /usr/local/bin/weft
DOCKERFILE
docker build -q -f "$work/Dockerfile.weft" -t "$image" "$work"

log "build $probe"
cp "$target/weft-e2e" "$work/"
cat >"$work/Dockerfile.probe" <<'DOCKERFILE'
FROM debian:bookworm-slim
COPY weft-e2e /weft-e2e
ENTRYPOINT ["/weft-e2e", "probe", "serve", "0.0.0.0:7000"]
DOCKERFILE
docker build -q -f "$work/Dockerfile.probe" -t "$probe" "$work"

log "load images"
kind load docker-image --name "$cluster" "$image" "$probe"

# kind nodes ship the reference loopback, host-local and portmap plugins in
# /opt/cni/bin: weft's conflist chains portmap, and containerd runs loopback itself.
for node in $(kind get nodes --name "$cluster"); do
    for p in loopback portmap; do
        docker exec "$node" test -x "/opt/cni/bin/$p" \
            || { log "$node lacks /opt/cni/bin/$p"; exit 1; }
    done
done

log "apply weft ($image)"
name=${image%:*}
tag=${image##*:}
overlay="$work/overlay"
mkdir -p "$overlay"
cp -r "$root/manifests" "$overlay/base"
cat >"$overlay/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [base]
images:
  - name: weft.dev/weft
    newName: $name
    newTag: "$tag"
YAML
kubectl --kubeconfig "$kubeconfig" apply -k "$overlay"

log "wait for nodes Ready and CoreDNS"
kubectl --kubeconfig "$kubeconfig" wait --for=condition=Ready node --all --timeout=300s
kubectl --kubeconfig "$kubeconfig" -n kube-system rollout status deployment/coredns --timeout=300s

log "weft-e2e test"
"$target/weft-e2e" test --kubeconfig "$kubeconfig"
