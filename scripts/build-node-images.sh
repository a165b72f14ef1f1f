#!/usr/bin/env bash
# Builds the two small images the local cluster (`weft-e2e up`) needs besides weft's own,
# as docker-archive tarballs that `ctr images import` reads. Nothing is pulled.
#
#   pause: e2e/images/pause.c compiled with `gcc -static`, alone in its image.
#   probe: the weft-e2e binary plus the shared libraries `ldd` names, entrypoint
#          `/weft-e2e probe serve 0.0.0.0:7000`.
#   coredns (when COREDNS_BIN is given): the static binary from scripts/build-coredns.sh,
#          entrypoint `/coredns`.
#
# Usage: build-node-images.sh OUT_DIR WEFT_E2E_BIN [COREDNS_BIN]
# Writes OUT_DIR/pause.tar, OUT_DIR/probe.tar (and OUT_DIR/coredns.tar); prints nothing
# else on stdout.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: build-node-images.sh OUT_DIR WEFT_E2E_BIN}
probe_bin=${2:?usage: build-node-images.sh OUT_DIR WEFT_E2E_BIN}
pause_ref=${WEFT_PAUSE_IMAGE:-weft.dev/pause:3.10}
probe_ref=${WEFT_PROBE_IMAGE:-weft.dev/probe:0.1.0}
coredns_bin=${3:-}
coredns_ref=${WEFT_COREDNS_IMAGE:-weft.dev/coredns:1.14.7}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# archive REF ROOTFS ENTRYPOINT_JSON TARBALL: one layer, docker-archive layout
# (manifest.json, <config digest>.json, <diff id>/layer.tar).
archive() {
    local ref=$1 rootfs=$2 entrypoint=$3 tarball=$4 dir
    dir=$(mktemp -d "$work/img.XXXXXX")
    tar -C "$rootfs" --numeric-owner --owner=0 --group=0 --mtime=@0 --sort=name \
        -cf "$dir/layer.tar" .
    local diff_id
    diff_id=$(sha256sum "$dir/layer.tar" | cut -d' ' -f1)
    mkdir "$dir/$diff_id"
    mv "$dir/layer.tar" "$dir/$diff_id/layer.tar"
    jq -cn --arg diff "sha256:$diff_id" --argjson ep "$entrypoint" '{
        architecture: "amd64", os: "linux", created: "1970-01-01T00:00:00Z",
        config: {Entrypoint: $ep, Env: ["PATH=/usr/local/bin:/usr/bin:/bin"], WorkingDir: "/"},
        rootfs: {type: "layers", diff_ids: [$diff]}
    }' >"$dir/config.json"
    local config_digest
    config_digest=$(sha256sum "$dir/config.json" | cut -d' ' -f1)
    mv "$dir/config.json" "$dir/$config_digest.json"
    jq -cn --arg cfg "$config_digest.json" --arg ref "$ref" --arg layer "$diff_id/layer.tar" \
        '[{Config: $cfg, RepoTags: [$ref], Layers: [$layer]}]' >"$dir/manifest.json"
    tar -C "$dir" --numeric-owner --owner=0 --group=0 -cf "$tarball.tmp" \
        manifest.json "$config_digest.json" "$diff_id"
    mv "$tarball.tmp" "$tarball"
}

# --- pause -------------------------------------------------------------------------------
mkdir -p "$work/pause"
gcc -static -Os -s -o "$work/pause/pause" "$root/e2e/images/pause.c"
archive "$pause_ref" "$work/pause" '["/pause"]' "$out/pause.tar"

# --- probe -------------------------------------------------------------------------------
rootfs=$work/probe
mkdir -p "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"
install -s -m 0755 "$probe_bin" "$rootfs/weft-e2e"
# Absolute library paths from ldd (the vdso has none), copied to the same place.
for lib in $(ldd "$probe_bin" | grep -oE '/[^ ]+'); do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
done
archive "$probe_ref" "$rootfs" '["/weft-e2e", "probe", "serve", "0.0.0.0:7000"]' "$out/probe.tar"

# --- coredns -----------------------------------------------------------------------------
if [[ -n $coredns_bin ]]; then
    mkdir -p "$work/coredns/etc/coredns" "$work/coredns/tmp"
    chmod 1777 "$work/coredns/tmp"
    install -m 0755 "$coredns_bin" "$work/coredns/coredns"
    archive "$coredns_ref" "$work/coredns" '["/coredns"]' "$out/coredns.tar"
fi
