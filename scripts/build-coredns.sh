#!/usr/bin/env bash
# Builds CoreDNS, the cluster DNS of `weft-e2e up`, from the Go module pinned in
# e2e/go/coredns (go.mod/go.sum) into $WEFT_CACHE/bin/coredns: static (CGO off), so the
# CoreDNS image (scripts/build-node-images.sh) needs nothing else.
#
# Idempotent: skipped when the stamp (sha256 of the module's go.mod, go.sum, tools.go,
# this script and the Go version) matches and the binary exists; --force rebuilds.
# Env: WEFT_CACHE (default /var/cache/weft), GO (default: go in PATH, else
# /usr/local/go/bin/go). Prints the binary's path on stdout.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
mod=$root/e2e/go/coredns
bin=${WEFT_CACHE:-/var/cache/weft}/bin
if [[ -z ${GO:-} ]]; then
    if command -v go >/dev/null 2>&1; then GO=$(command -v go); else GO=/usr/local/go/bin/go; fi
fi
log() { echo "[build-coredns] $*" >&2; }
[[ -x $GO ]] || { log "go not found (set GO=/path/to/go)"; exit 1; }

stamp_file=$bin/.coredns.stamp
stamp=$( { cat "$mod/go.mod" "$mod/go.sum" "$mod/tools.go" "$0"; "$GO" version; } \
    | sha256sum | cut -d' ' -f1)
if [[ ${1:-} != --force && -x $bin/coredns && -f $stamp_file \
      && $(cat "$stamp_file") == "$stamp" ]]; then
    log "coredns up to date in $bin"
    echo "$bin/coredns"
    exit 0
fi
mkdir -p "$bin"
version=$(cd "$mod" && "$GO" list -m -f '{{.Version}}' github.com/coredns/coredns)
log "building coredns $version"
(cd "$mod" && CGO_ENABLED=0 nice -n 10 "$GO" build -trimpath -buildvcs=false \
    -ldflags "-s -w" -o "$bin/.coredns.tmp" github.com/coredns/coredns)
mv -f "$bin/.coredns.tmp" "$bin/coredns"
echo "$stamp" >"$stamp_file"
log "coredns $version in $bin"
echo "$bin/coredns"
