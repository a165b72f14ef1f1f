#!/usr/bin/env bash
# weft on kind, as a user runs it: create a three-node kind cluster without its default
# CNI (kind-config.yaml), load the weft and probe images into it, `kubectl apply -k` weft
# (overlay/: the manifests with the image loaded here), wait until the nodes turn from
# NotReady to Ready, run the connectivity suite (`weft-e2e test`, disruptive checks
# included), delete the cluster. Prints the time of every step and a summary line.
#
# Usage: e2e/kind/run.sh [--image NODE_IMAGE] [--name NAME] [--keep] [-- WEFT_E2E_TEST_ARGS...]
#   --image  the kind node image. Default: built on this machine, without any registry,
#            by scripts/build-kind.sh (cached in $WEFT_CACHE/kind). On a machine with
#            registry access, a public one works the same: --image kindest/node:v1.34.3
#   --name   the kind cluster's name (default weft)
#   --keep   leave the cluster up afterwards (its kubeconfig is printed)
#   after --, arguments for `weft-e2e test` (e.g. --no-disrupt)
# Needs: docker, root (or docker access), cargo, gcc, jq. kind and kubectl: the ones
# scripts/build-kind.sh and scripts/build-k8s.sh build, else from PATH ($KIND, $KUBECTL).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${WEFT_CACHE:-/var/cache/weft}
cluster=weft
node_image=
keep=0
suite_args=()
while (($#)); do
    case $1 in
        --image) node_image=${2:?--image needs a value}; shift 2 ;;
        --name) cluster=${2:?--name needs a value}; shift 2 ;;
        --keep) keep=1; shift ;;
        --) shift; suite_args=("$@"); break ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

log() { echo "[kind] $*" >&2; }
die() { echo "[kind] ERROR: $*" >&2; exit 1; }
times=()
ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
step_start() { step_name=$1; step_t0=$(ms); log "== $1"; }
step_end() {
    local d=$(($(ms) - step_t0))
    local s=$((d / 1000)).$((d % 1000 / 100))
    times+=("$step_name: ${s}s")
    log "== $step_name: ${s}s"
}

"$root/scripts/start-docker.sh"
# Privileged containers on hosts without a full capability bounding set (README.md).
"$root/scripts/build-kind-runtime.sh"
docker=/usr/bin/docker
[[ -x $docker ]] || docker=docker
KIND=${KIND:-}
[[ -n $KIND ]] || { [[ -x $cache/kind/bin/kind ]] && KIND=$cache/kind/bin/kind; } || KIND=$(command -v kind || true)
KUBECTL=${KUBECTL:-}
[[ -n $KUBECTL ]] || { [[ -x $cache/bin/kubectl ]] && KUBECTL=$cache/bin/kubectl; } || KUBECTL=$(command -v kubectl || true)

work=$(mktemp -d)
kubeconfig=$work/kubeconfig
created=0
cleanup() {
    local rc=$?
    if ((created)) && ((keep == 0)); then
        step_start "kind delete cluster"
        "$KIND" delete cluster --name "$cluster" >&2 || true
        step_end
    elif ((created)); then
        cp "$kubeconfig" "$root/target/kind-$cluster.kubeconfig"
        log "cluster kept: export KUBECONFIG=$root/target/kind-$cluster.kubeconfig"
    fi
    rm -rf "$work"
    local IFS=,
    log "times: ${times[*]}"
    exit "$rc"
}
trap cleanup EXIT

# --- images ----------------------------------------------------------------------------
step_start "images"
if [[ -z $node_image ]]; then
    node_image=$("$root/scripts/build-kind.sh")
    KIND=$cache/kind/bin/kind
fi
[[ -n $KIND && -x $KIND ]] || die "no kind binary (scripts/build-kind.sh builds one; or set KIND)"
[[ -n $KUBECTL && -x $KUBECTL ]] || die "no kubectl (scripts/build-k8s.sh kubectl builds one; or set KUBECTL)"
$docker image inspect "$node_image" >/dev/null 2>&1 || $docker pull "$node_image" >&2 \
    || die "node image $node_image is neither local nor pullable"
# weft's image (built here from Debian packages and the release binaries), under the tag
# the overlay names.
weft_ref=$("$root/scripts/build-image.sh")
$docker tag "$weft_ref" weft.dev/weft:kind
# The suite's probe pods run weft.dev/probe:0.1.0 (never pulled).
(cd "$root" && cargo build --release --locked -p weft-e2e >&2)
target=$(cd "$root" && cargo metadata --format-version 1 --no-deps | jq -r .target_directory)/release
"$root/scripts/build-node-images.sh" "$work/images" "$target/weft-e2e"
step_end

# --- cluster ---------------------------------------------------------------------------
if "$KIND" get clusters 2>/dev/null | grep -qx "$cluster"; then
    log "deleting a kind cluster $cluster left from an earlier run"
    "$KIND" delete cluster --name "$cluster" >&2
fi
step_start "kind create cluster"
created=1
# --wait 0s: without a CNI the nodes stay NotReady until weft is applied.
"$KIND" create cluster --name "$cluster" --image "$node_image" --config "$here/kind-config.yaml" \
    --kubeconfig "$kubeconfig" --wait 0s >&2
step_end
k() { "$KUBECTL" --kubeconfig "$kubeconfig" "$@"; }
k get nodes -o wide >&2
notready=$(k get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -vc True || true)
log "nodes NotReady before weft is applied: $notready of $(k get nodes --no-headers | wc -l)"

step_start "kind load"
"$KIND" load docker-image --name "$cluster" weft.dev/weft:kind >&2
"$KIND" load image-archive --name "$cluster" "$work/images/probe.tar" >&2
# weft's conflist chains portmap; containerd runs loopback itself. kind nodes ship both.
for node in $("$KIND" get nodes --name "$cluster"); do
    for p in loopback portmap; do
        $docker exec "$node" test -x "/opt/cni/bin/$p" || die "$node lacks /opt/cni/bin/$p"
    done
done
step_end

# --- weft --------------------------------------------------------------------------------
step_start "apply to Ready"
k apply -k "$here/overlay" >&2
k wait --for=condition=Ready node --all --timeout=300s >&2
k -n weft-system rollout status daemonset/weft-agent --timeout=300s >&2
k -n weft-system rollout status deployment/weft-controller --timeout=300s >&2
k -n kube-system rollout status deployment/coredns --timeout=300s >&2
step_end
k get nodes -o wide >&2

step_start "weft-e2e test"
"$target/weft-e2e" test --kubeconfig "$kubeconfig" "${suite_args[@]}"
step_end
