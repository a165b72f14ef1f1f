#!/usr/bin/env bash
# Build flanneld v0.28.10 from its Go module (pinned in e2e/go/flannel/go.mod +
# go.sum) into $WEFT_CACHE/bin/flanneld, for `weft-e2e bench flannel`.
#
# The Tencent Cloud module: flanneld's main imports every backend for its init(),
# among them pkg/backend/tencentvpc, which needs the Go module
# github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/vpc; the module proxy
# refuses that module's zip (403). e2e/go/flannel/go.mod replaces it with the local
# stub module e2e/go/flannel/stubs/tencentcloud-vpc, which declares only the names
# the backend uses (written for weft, no SDK code; every call returns an error).
# flannel's own sources build unchanged, from the proxy; only its "tencent-vpc"
# backend cannot work, and the benchmark uses "vxlan". To reproduce the module:
# `go mod tidy` in e2e/go/flannel (GOTOOLCHAIN=local).
#
# cgo on, as flannel's Makefile does on amd64 (its "udp" backend has a C proxy there
# and main imports it); linked against the host's libc, since it only runs here.
# Version stamped as flannel's Makefile does.
#
# Idempotent: rebuilt only when the stamp (sha256 of the module's go.mod, go.sum,
# tools.go, the stub's sources, this script and the Go version) changes or the
# binary is missing; --force rebuilds.
#
# Usage: scripts/build-flannel.sh [--force]
# Env:   WEFT_CACHE (default /var/cache/weft), GO (default: go in PATH, else
#        /usr/local/go/bin/go), BUILD_JOBS (go build -p, default 2)
# Prints the binary's path on stdout.
set -euo pipefail

FLANNEL_VERSION=v0.28.10

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRIPT="$ROOT/scripts/build-flannel.sh"
MOD="$ROOT/e2e/go/flannel"
CACHE=${WEFT_CACHE:-/var/cache/weft}
BIN="$CACHE/bin"
STAMPS="$CACHE/stamps"
JOBS=${BUILD_JOBS:-2}

if [[ -z "${GO:-}" ]]; then
    if command -v go >/dev/null 2>&1; then GO=$(command -v go); else GO=/usr/local/go/bin/go; fi
fi

log() { echo "[build-flannel] $*" >&2; }
die() { echo "[build-flannel] ERROR: $*" >&2; exit 1; }

[[ -x "$GO" ]] || die "go not found (set GO=/path/to/go)"

FORCE=0
for a in "$@"; do
    case "$a" in
        --force) FORCE=1 ;;
        -h|--help) sed -n '2,25p' "$SCRIPT"; exit 0 ;;
        *) die "unknown argument $a" ;;
    esac
done

mkdir -p "$BIN" "$STAMPS"
# One build at a time per cache.
exec 9>"$CACHE/.build-flannel.lock"
flock 9

export GOTOOLCHAIN=local      # never fetch another toolchain
export GOFLAGS=-mod=readonly  # build exactly what go.mod/go.sum pin
export CGO_ENABLED=1
[[ "$("$GO" env GOARCH)" == amd64 ]] || CGO_ENABLED=0  # as flannel's Makefile
export GOOS=linux

stamp_file="$STAMPS/flanneld.sha256"
stamp=$( {
    "$GO" env GOVERSION
    cat "$MOD/go.mod" "$MOD/go.sum" "$MOD/tools.go" "$SCRIPT"
    find "$MOD/stubs" -type f | LC_ALL=C sort | xargs cat
} | sha256sum | cut -d' ' -f1)

if ((!FORCE)) && [[ -x "$BIN/flanneld" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" ]]; then
    log "flanneld $FLANNEL_VERSION up to date in $BIN"
    echo "$BIN/flanneld"
    exit 0
fi

pinned=$(cd "$MOD" && "$GO" list -m -f '{{.Version}}' github.com/flannel-io/flannel)
[[ "$pinned" == "$FLANNEL_VERSION" ]] \
    || die "e2e/go/flannel/go.mod pins flannel $pinned, this script says $FLANNEL_VERSION"

t0=$SECONDS
log "downloading modules for e2e/go/flannel ..."
(cd "$MOD" && nice -n 10 "$GO" list -deps github.com/flannel-io/flannel >/dev/null) \
    || die "module download/resolution failed in $MOD"
log "building flanneld $FLANNEL_VERSION ..."
tmp="$BIN/.flanneld.tmp.$$"
if ! (cd "$MOD" && nice -n 10 "$GO" build -p "$JOBS" -trimpath -buildvcs=false \
        -ldflags "-s -w -X github.com/flannel-io/flannel/pkg/version.Version=$FLANNEL_VERSION" \
        -o "$tmp" github.com/flannel-io/flannel); then
    rm -f "$tmp"
    die "building flanneld failed"
fi
mv -f "$tmp" "$BIN/flanneld"
echo "$stamp" >"$stamp_file"
log "flanneld $FLANNEL_VERSION in $BIN ($((SECONDS - t0))s)"
echo "$BIN/flanneld"
