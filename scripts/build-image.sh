#!/usr/bin/env bash
# Builds the weft image on this machine without pulling anything from a registry.
#
#   1. cargo build --release of weft-agent and weft-controller, and the static CNI
#      plugin (scripts/build-cni.sh) (skip both with WEFT_SKIP_CARGO=1);
#   2. a Debian bookworm base (debootstrap --variant=minbase, plus nftables and
#      iptables for the agent's `nft` and `iptables`) imported with `docker import`;
#      cached in $WEFT_CACHE/image and rebuilt only when its recipe changes;
#   3. `docker build -f Dockerfile.local` on top of it with the host-built binaries.
#
# Environment: WEFT_IMAGE (default weft.dev/weft:<workspace version>), WEFT_CACHE
# (default /var/cache/weft), WEFT_DEBIAN_MIRROR (default: the first Debian mirror in
# /etc/apt/sources.list(.d)). Prints the image reference on stdout.
#
# The image carries the label dev.weft.stamp: a hash of its binaries, Dockerfile.local and
# base recipe. `build-image.sh --stamp` prints that hash for the binaries now in
# target/ (and fails when they are missing) without building anything:
# `weft-e2e up` rebuilds the image when the two differ.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
log() { echo "build-image: $*" >&2; }

version=$(cargo metadata --format-version 1 --no-deps \
    | jq -r '.packages[] | select(.name == "weft-agent") | .version')
image=${WEFT_IMAGE:-weft.dev/weft:$version}
cache=${WEFT_CACHE:-/var/cache/weft}/image
docker=/usr/bin/docker
[[ -x $docker ]] || docker=docker

stamp_only=0
[[ ${1:-} == --stamp ]] && stamp_only=1
[[ $stamp_only == 1 ]] || "$root/scripts/start-docker.sh"

# --- 1. binaries ---------------------------------------------------------------------
target_dir=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
triple=$(rustc -vV | sed -n 's/^host: //p')
if [[ ${WEFT_SKIP_CARGO:-0} != 1 && $stamp_only != 1 ]]; then
    log "cargo build --release"
    cargo build --release --locked -p weft-agent -p weft-controller --bins >&2
    "$root/scripts/build-cni.sh" >/dev/null
fi
# The plugin is the static build: it runs on the nodes' own userland.
bins=("$target_dir/$triple/release/weft" "$target_dir/release/weft-agent"
      "$target_dir/release/weft-controller")
for b in "${bins[@]}"; do
    [[ -x $b ]] || { log "missing $b (run scripts/build-cni.sh and cargo build --release)"; exit 1; }
done

# --- 2. base image ---------------------------------------------------------------------
suite=bookworm
packages=nftables,iptables
mirror=$("$root/scripts/debian-mirror.sh")

# The recipe's hash names the base: change the recipe, get a new base.
recipe="suite=$suite variant=minbase packages=$packages prune=v1"
key=$(printf '%s' "$recipe" | sha256sum | cut -c1-12)
image_stamp=$( { sha256sum "${bins[@]}" | awk '{print $1}'
                 cat "$root/Dockerfile.local"; echo "$recipe"; } | sha256sum | cut -c1-16)
if [[ $stamp_only == 1 ]]; then
    echo "$image_stamp"
    exit 0
fi
base=weft.dev/base:$suite-$key
tarball=$cache/base-$key.tar
stamp=$cache/base-$key.stamp
mkdir -p "$cache"

if ! $docker image inspect "$base" >/dev/null 2>&1; then
    if [[ ! -f $stamp || ! -f $tarball ]]; then
        command -v debootstrap >/dev/null || { log "apt-get install -y debootstrap"; exit 1; }
        rootfs=$(mktemp -d "$cache/rootfs.XXXXXX")
        trap 'rm -rf "$rootfs"' EXIT
        log "debootstrap $suite from $mirror (minbase + $packages)"
        debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >&2
        # Nothing in the running image needs docs, locales or package indexes.
        rm -rf "$rootfs"/usr/share/{doc,man,info,locale,lintian} \
            "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* \
            "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/log/*
        tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        echo "$recipe mirror=$mirror" >"$stamp"
        rm -rf "$rootfs"
        trap - EXIT
    fi
    log "docker import $base"
    $docker import "$tarball" "$base" >/dev/null
fi

# --- 3. the image ----------------------------------------------------------------------
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "${bins[@]}" "$ctx/"
cp "$root/Dockerfile.local" "$ctx/Dockerfile"
log "docker build $image"
$docker build -q --build-arg "BASE=$base" --label "dev.weft.stamp=$image_stamp" -t "$image" "$ctx" >&2
echo "$image"
