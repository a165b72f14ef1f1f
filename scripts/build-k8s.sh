#!/usr/bin/env bash
# Build Kubernetes v1.34.4 components, etcd, the CNI reference plugins and
# cnitool from Go modules (e2e/go/go.mod, e2e/go/cni/go.mod) into a cache
# outside the git tree. Idempotent: a binary is rebuilt only when its stamp
# (sha256 of the module's go.mod + go.sum + sources + this script + Go
# version) changes or the binary is missing.
#
# Usage: scripts/build-k8s.sh [--force] [name...]
#   name: any of the targets below (default: all)
# Env:   WEFT_CACHE (default /var/cache/weft), GO (default: go in PATH, else
#        /usr/local/go/bin/go), BUILD_JOBS (go build -p, default 2)
#
# Output:
#   $WEFT_CACHE/bin: kube-apiserver kube-controller-manager kube-scheduler
#                    kubelet kube-proxy kubectl etcd cnitool
#   $WEFT_CACHE/cni: bridge host-local portmap loopback
set -euo pipefail

K8S_VERSION=v1.34.4
ETCD_SHA=v3.6.4           # etcd has no git SHA in a module build; show the tag
CNI_PLUGINS_VERSION=v1.9.0
# Timestamp of k8s.io/kubernetes@v1.34.4 on the module proxy; a fixed value
# keeps the build reproducible.
K8S_BUILD_DATE=2026-02-10T12:53:36Z

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRIPT="$ROOT/scripts/build-k8s.sh"
K8S_MOD="$ROOT/e2e/go"
CNI_MOD="$ROOT/e2e/go/cni"
CACHE=${WEFT_CACHE:-/var/cache/weft}
BIN="$CACHE/bin"
CNIBIN="$CACHE/cni"
STAMPS="$CACHE/stamps"
JOBS=${BUILD_JOBS:-2}

if [[ -z "${GO:-}" ]]; then
    if command -v go >/dev/null 2>&1; then GO=$(command -v go); else GO=/usr/local/go/bin/go; fi
fi

log() { echo "[build-k8s] $*"; }
die() { echo "[build-k8s] ERROR: $*" >&2; exit 1; }

[[ -x "$GO" ]] || die "go not found (set GO=/path/to/go)"

FORCE=0
WANT=()
for a in "$@"; do
    case "$a" in
        --force) FORCE=1 ;;
        -h|--help) sed -n '2,16p' "$SCRIPT"; exit 0 ;;
        -*) die "unknown option $a" ;;
        *) WANT+=("$a") ;;
    esac
done

# name | module dir | package | output dir | ldflags kind
TARGETS=(
    "kube-apiserver|$K8S_MOD|k8s.io/kubernetes/cmd/kube-apiserver|$BIN|k8s"
    "kube-controller-manager|$K8S_MOD|k8s.io/kubernetes/cmd/kube-controller-manager|$BIN|k8s"
    "kube-scheduler|$K8S_MOD|k8s.io/kubernetes/cmd/kube-scheduler|$BIN|k8s"
    "kubelet|$K8S_MOD|k8s.io/kubernetes/cmd/kubelet|$BIN|k8s"
    "kube-proxy|$K8S_MOD|k8s.io/kubernetes/cmd/kube-proxy|$BIN|k8s"
    "kubectl|$K8S_MOD|k8s.io/kubernetes/cmd/kubectl|$BIN|k8s"
    "etcd|$K8S_MOD|./cmd/etcd|$BIN|etcd"
    "cnitool|$CNI_MOD|github.com/containernetworking/cni/cnitool|$BIN|none"
    "bridge|$CNI_MOD|github.com/containernetworking/plugins/plugins/main/bridge|$CNIBIN|cni"
    "host-local|$CNI_MOD|github.com/containernetworking/plugins/plugins/ipam/host-local|$CNIBIN|cni"
    "portmap|$CNI_MOD|github.com/containernetworking/plugins/plugins/meta/portmap|$CNIBIN|cni"
    "loopback|$CNI_MOD|github.com/containernetworking/plugins/plugins/main/loopback|$CNIBIN|cni"
)

if ((${#WANT[@]})); then
    sel=()
    for w in "${WANT[@]}"; do
        found=0
        for t in "${TARGETS[@]}"; do
            if [[ "${t%%|*}" == "$w" ]]; then sel+=("$t"); found=1; fi
        done
        ((found)) || die "unknown target '$w'"
    done
    TARGETS=("${sel[@]}")
fi

ldflags_for() {
    local kind=$1 f="-s -w"
    case "$kind" in
        k8s)
            local major=${K8S_VERSION#v}; major=${major%%.*}
            local minor=${K8S_VERSION#v*.}; minor=${minor%%.*}
            local p
            for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
                f+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
                f+=" -X $p.gitCommit= -X $p.gitTreeState=clean -X $p.buildDate=$K8S_BUILD_DATE"
            done ;;
        etcd) f+=" -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_SHA" ;;
        cni)  f+=" -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$CNI_PLUGINS_VERSION" ;;
        none) ;;
    esac
    printf '%s' "$f"
}

# Stamp for a module: everything that determines its binaries.
GOVER=$("$GO" env GOVERSION)
mod_hash() {
    local dir=$1
    {
        echo "$GOVER"
        cat "$dir/go.mod" "$dir/go.sum" "$SCRIPT"
        find "$dir" -path "$dir/cni" -prune -o -name '*.go' -type f -print | LC_ALL=C sort | xargs cat
    } | sha256sum | cut -d' ' -f1
}

mkdir -p "$BIN" "$CNIBIN" "$STAMPS"

# One build at a time per cache (the e2e harness may call us concurrently).
exec 9>"$CACHE/.build-k8s.lock"
flock 9

export GOTOOLCHAIN=local      # never fetch another toolchain
export GOFLAGS=-mod=readonly  # build exactly what go.mod/go.sum pin
export CGO_ENABLED=0
export GOOS=linux

declare -A HASH
HASH[$K8S_MOD]=$(mod_hash "$K8S_MOD")
HASH[$CNI_MOD]=$(mod_hash "$CNI_MOD")

# Work out what is stale first so module download is a separate, timed step.
TODO=()
declare -A TODO_MODS
for t in "${TARGETS[@]}"; do
    IFS='|' read -r name dir pkg out kind <<<"$t"
    stamp="$STAMPS/$name.sha256"
    if ((FORCE)) || [[ ! -x "$out/$name" || ! -f "$stamp" || "$(cat "$stamp")" != "${HASH[$dir]}" ]]; then
        TODO+=("$t"); TODO_MODS[$dir]+=" $pkg"
    fi
done

total=${#TARGETS[@]}
if ((${#TODO[@]} == 0)); then
    log "all $total binaries up to date in $CACHE"
    exit 0
fi

t0=$SECONDS
for dir in "${!TODO_MODS[@]}"; do
    log "downloading modules for ${dir#"$ROOT"/} ..."
    # shellcheck disable=SC2086
    (cd "$dir" && nice -n 10 "$GO" list -deps ${TODO_MODS[$dir]} >/dev/null) \
        || die "module download/resolution failed in $dir"
done
log "modules ready ($((SECONDS - t0))s)"

i=0
for t in "${TARGETS[@]}"; do
    i=$((i + 1))
    IFS='|' read -r name dir pkg out kind <<<"$t"
    stamp="$STAMPS/$name.sha256"
    stale=0
    for d in "${TODO[@]}"; do [[ "$d" == "$t" ]] && stale=1; done
    if ((!stale)); then
        log "$name ($i/$total) up to date"
        continue
    fi
    log "$name ($i/$total) ..."
    b0=$SECONDS
    tmp="$out/.$name.tmp.$$"
    # -buildvcs=false: cmd/etcd lives in this git repo; stamping its commit and
    # dirty state would make the binary depend on unrelated repo changes.
    if ! (cd "$dir" && nice -n 10 "$GO" build -p "$JOBS" -trimpath -buildvcs=false \
            -ldflags="$(ldflags_for "$kind")" -o "$tmp" "$pkg"); then
        rm -f "$tmp"
        die "building $name failed"
    fi
    mv -f "$tmp" "$out/$name"
    echo "${HASH[$dir]}" >"$stamp"
    log "$name ($i/$total) done in $((SECONDS - b0))s"
done
log "finished in $((SECONDS - t0))s; binaries in $BIN and $CNIBIN"
