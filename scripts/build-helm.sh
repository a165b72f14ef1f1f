#!/usr/bin/env bash
# Build the helm CLI (Helm v3) from its Go module (pinned in e2e/go/helm/go.mod +
# go.sum) into $WEFT_CACHE/bin/helm, for the chart's tests (e2e/tests/helm/: lint,
# render, compare with manifests/) and `weft-e2e up --helm`.
#
# Static (CGO off) and stamped as Helm's Makefile does: the version, and the
# Kubernetes version `helm template` and `helm lint` assume without a cluster (one
# minor above the client-go module Helm is built with).
#
# Idempotent: rebuilt only when the stamp (sha256 of the module's go.mod, go.sum,
# tools.go, this script and the Go version) changes or the binary is missing;
# --force rebuilds.
#
# Usage: scripts/build-helm.sh [--force]
# Env:   WEFT_CACHE (default /var/cache/weft), GO (default: go in PATH, else
#        /usr/local/go/bin/go), BUILD_JOBS (go build -p, default 2)
# Prints the binary's path on stdout.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRIPT="$ROOT/scripts/build-helm.sh"
MOD="$ROOT/e2e/go/helm"
CACHE=${WEFT_CACHE:-/var/cache/weft}
BIN="$CACHE/bin"
STAMPS="$CACHE/stamps"
JOBS=${BUILD_JOBS:-2}

if [[ -z "${GO:-}" ]]; then
    if command -v go >/dev/null 2>&1; then GO=$(command -v go); else GO=/usr/local/go/bin/go; fi
fi

log() { echo "[build-helm] $*" >&2; }
die() { echo "[build-helm] ERROR: $*" >&2; exit 1; }

[[ -x "$GO" ]] || die "go not found (set GO=/path/to/go)"

FORCE=0
for a in "$@"; do
    case "$a" in
        --force) FORCE=1 ;;
        -h|--help) sed -n '2,17p' "$SCRIPT"; exit 0 ;;
        *) die "unknown argument $a" ;;
    esac
done

export GOTOOLCHAIN=local      # never fetch another toolchain
export GOFLAGS=-mod=readonly  # build exactly what go.mod/go.sum pin
export CGO_ENABLED=0
export GOOS=linux

mkdir -p "$BIN" "$STAMPS"
# One build at a time per cache (tests may call us concurrently).
exec 9>"$CACHE/.build-helm.lock"
flock 9

stamp_file="$STAMPS/helm.sha256"
stamp=$( { "$GO" env GOVERSION; cat "$MOD/go.mod" "$MOD/go.sum" "$MOD/tools.go" "$SCRIPT"; } \
    | sha256sum | cut -d' ' -f1)
if ((!FORCE)) && [[ -x "$BIN/helm" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" ]]; then
    log "helm up to date in $BIN"
    echo "$BIN/helm"
    exit 0
fi

t0=$SECONDS
log "downloading modules for ${MOD#"$ROOT"/} ..."
(cd "$MOD" && nice -n 10 "$GO" list -deps helm.sh/helm/v3/cmd/helm >/dev/null) \
    || die "module download/resolution failed in $MOD"
version=$(cd "$MOD" && "$GO" list -m -f '{{.Version}}' helm.sh/helm/v3)
client_go=$(cd "$MOD" && "$GO" list -m -f '{{.Version}}' k8s.io/client-go)
# client-go v0.X.Y goes with Kubernetes 1.X (Helm's Makefile: major = 0 + 1).
k8s_minor=${client_go#v0.}; k8s_minor=${k8s_minor%%.*}
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$k8s_minor"
done

log "building helm $version (Kubernetes 1.$k8s_minor by default) ..."
tmp="$BIN/.helm.tmp.$$"
if ! (cd "$MOD" && nice -n 10 "$GO" build -p "$JOBS" -trimpath -buildvcs=false \
        -ldflags="$ldflags" -o "$tmp" helm.sh/helm/v3/cmd/helm); then
    rm -f "$tmp"
    die "building helm failed"
fi
mv -f "$tmp" "$BIN/helm"
echo "$stamp" >"$stamp_file"
log "helm $version in $BIN ($((SECONDS - t0))s)"
echo "$BIN/helm"
