#!/usr/bin/env bash
# Builds containerd 2 (containerd, containerd-shim-runc-v2, ctr) from its Go module into
# $WEFT_CACHE/bin for the nodes of `weft-e2e up`. Why not Debian's containerd 1.6.20:
# it (and every 1.7.x) carries libcni 1.1, which rejects the CNI 1.1.0 results weft's
# conflist asks for ("unsupported CNI result version"); containerd 2.1 carries libcni 1.3.
# Kubernetes 1.34 also recommends containerd 2.x. runc stays Debian's.
#
# `go install pkg@version` refuses this module (its go.mod has exclude directives), so
# the module is downloaded and built in place. Idempotent: skipped when the binaries of
# this version exist. Env: WEFT_CACHE (default /var/cache/weft), GO, CONTAINERD_VERSION.
set -euo pipefail

version=${CONTAINERD_VERSION:-v2.1.9}
bin=${WEFT_CACHE:-/var/cache/weft}/bin
if [[ -z ${GO:-} ]]; then
    if command -v go >/dev/null 2>&1; then GO=$(command -v go); else GO=/usr/local/go/bin/go; fi
fi
log() { echo "[build-containerd] $*" >&2; }

stamp=$bin/.containerd.version
if [[ -f $stamp && $(cat "$stamp") == "$version" ]] \
    && [[ -x $bin/containerd && -x $bin/containerd-shim-runc-v2 && -x $bin/ctr ]]; then
    log "containerd $version up to date in $bin"
    exit 0
fi
mkdir -p "$bin"
dir=$("$GO" mod download -json "github.com/containerd/containerd/v2@$version" | jq -r .Dir)
[[ -d $dir ]] || { log "module download failed"; exit 1; }
cd "$dir"
# btrfs/devmapper/zfs snapshotters need C headers and are not used (overlayfs is).
tags="no_btrfs no_devmapper no_zfs"
ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=$version"
for cmd in containerd ctr containerd-shim-runc-v2; do
    log "building $cmd $version"
    # The shim is started for every pod: static, like upstream's release builds.
    cgo=1
    [[ $cmd == containerd-shim-runc-v2 ]] && cgo=0
    CGO_ENABLED=$cgo nice -n 10 "$GO" build -trimpath -buildvcs=false -tags "$tags" \
        -ldflags "$ldflags" -o "$bin/.$cmd.tmp" "./cmd/$cmd"
    mv -f "$bin/.$cmd.tmp" "$bin/$cmd"
done
echo "$version" >"$stamp"
log "containerd $version in $bin"
