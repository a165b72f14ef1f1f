#!/usr/bin/env bash
# Builds everything the kind path (e2e/kind/run.sh) needs, on this machine, with no
# container registry: kind itself, a kind base image and a kind node image for
# Kubernetes v1.34.4. What kind expects of each was read in kind's own source
# (sigs.k8s.io/kind v0.33.0: images/base, pkg/build/nodeimage,
# pkg/cluster/internal/providers/docker); e2e/kind/README.md lists it.
#
#   tools   kind (its Go module), kubeadm and crictl (e2e/kind/go), and kind's
#           local-path-provisioner v0.0.30 (its Go module) into
#           $WEFT_CACHE/kind/bin.
#   base    weft.dev/kind-base:<key>: a Debian bookworm rootfs (debootstrap) with
#           systemd and the packages of kind's base image, containerd 2 and its shim
#           (scripts/build-containerd.sh), Debian's runc, crictl, the CNI reference
#           plugins (scripts/build-k8s.sh), and kind's base files (entrypoint, systemd
#           units, containerd config) from the kind module. Rootfs cached as a tarball.
#   node    weft.dev/kind-node:v1.34.4-<key>: `kind build node-image --type file` of a
#           Kubernetes server tarball assembled here (kubeadm, kubelet, kubectl and the
#           control-plane image archives, built from the binaries of build-k8s.sh).
#           Cached with `docker save`.
#
# Each stage is rebuilt only when its key (a hash of its inputs and of its recipe
# version below) changes; a warm run checks the keys and exits. Prints the node image
# reference on stdout.
#
# Usage: scripts/build-kind.sh [--force]
# Env:   WEFT_CACHE (default /var/cache/weft), GO, WEFT_DEBIAN_MIRROR.
set -euo pipefail

KIND_VERSION=v0.33.0
K8S_VERSION=v1.34.4
LPP_VERSION=v0.0.30        # the local-path-provisioner the Go proxy serves
SUITE=bookworm             # systemd 252: still boots on this host's cgroup v1
# The packages of kind's base image (images/base/Dockerfile) that a node here uses, plus
# Debian's runc. Left out: nfs-common, open-iscsi, e2fsprogs (storage e2e tests) and
# fuse-overlayfs (rootless).
BASE_PACKAGES=systemd,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,bash,ca-certificates,curl,jq,procps,runc
# kube-proxy's image and local-path-helper's: a shell and the firewall tools.
SLIM_PACKAGES=nftables,iptables,conntrack
# Bump to rebuild a stage when its recipe (the code below) changes.
BASE_RECIPE=2
NODE_RECIPE=1

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${WEFT_CACHE:-/var/cache/weft}
OUT=$CACHE/kind
BIN=$OUT/bin
TOOLS_MOD=$ROOT/e2e/kind/go
log() { echo "[build-kind] $*" >&2; }
die() { echo "[build-kind] ERROR: $*" >&2; exit 1; }

if [[ -z "${GO:-}" ]]; then
    if command -v go >/dev/null 2>&1; then GO=$(command -v go); else GO=/usr/local/go/bin/go; fi
fi
[[ -x "$GO" ]] || die "go not found (set GO=/path/to/go)"
FORCE=0
[[ ${1:-} == --force ]] && FORCE=1
docker=/usr/bin/docker
[[ -x $docker ]] || docker=docker

mkdir -p "$BIN"
exec 9>"$OUT/.lock"
flock 9

export GOTOOLCHAIN=local GOOS=linux
GOVER=$("$GO" env GOVERSION)
fresh() { # fresh FILE KEY: FILE exists and was built from KEY
    ((FORCE == 0)) && [[ -e $1 && -f $1.stamp && "$(cat "$1.stamp")" == "$2" ]]
}
sha() { sha256sum | cut -c1-16; }

# --- tools -----------------------------------------------------------------------------
kind_dir=$(cd "$ROOT" && "$GO" mod download -json "sigs.k8s.io/kind@$KIND_VERSION" | jq -r .Dir)
[[ -d $kind_dir ]] || die "downloading sigs.k8s.io/kind@$KIND_VERSION failed"
key=$(echo "$GOVER $KIND_VERSION" | sha)
if ! fresh "$BIN/kind" "$key"; then
    t0=$SECONDS
    log "go build kind $KIND_VERSION ..."
    (cd "$kind_dir" && CGO_ENABLED=0 GOFLAGS=-mod=readonly nice -n 10 "$GO" build -trimpath \
        -buildvcs=false -ldflags="-s -w" -o "$BIN/.kind.tmp" .) || die "building kind failed"
    mv -f "$BIN/.kind.tmp" "$BIN/kind"
    echo "$key" >"$BIN/kind.stamp"
    log "kind built in $((SECONDS - t0))s"
fi

key=$( { echo "$GOVER"; cat "$TOOLS_MOD/go.mod" "$TOOLS_MOD/go.sum" "$TOOLS_MOD/tools.go"; } | sha)
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=34"
    ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=2026-02-10T12:53:36Z"
done
for t in "kubeadm|k8s.io/kubernetes/cmd/kubeadm" "crictl|sigs.k8s.io/cri-tools/cmd/crictl"; do
    IFS='|' read -r name pkg <<<"$t"
    fresh "$BIN/$name" "$key" && continue
    t0=$SECONDS
    log "go build $name ..."
    (cd "$TOOLS_MOD" && CGO_ENABLED=0 GOFLAGS=-mod=readonly nice -n 10 "$GO" build -trimpath \
        -buildvcs=false -ldflags="$ldflags" -o "$BIN/.$name.tmp" "$pkg") || die "building $name failed"
    mv -f "$BIN/.$name.tmp" "$BIN/$name"
    echo "$key" >"$BIN/$name.stamp"
    log "$name built in $((SECONDS - t0))s"
done

lpp_dir=$(cd "$ROOT" && "$GO" mod download -json "github.com/rancher/local-path-provisioner@$LPP_VERSION" | jq -r .Dir)
[[ -f $lpp_dir/go.mod ]] || die "downloading local-path-provisioner@$LPP_VERSION failed"
key=$(echo "$GOVER $LPP_VERSION" | sha)
if ! fresh "$BIN/local-path-provisioner" "$key"; then
    t0=$SECONDS
    log "go build local-path-provisioner $LPP_VERSION ..."
    (cd "$lpp_dir" && CGO_ENABLED=0 GOFLAGS=-mod=readonly nice -n 10 "$GO" build -trimpath \
        -buildvcs=false -ldflags="-s -w -X main.VERSION=$LPP_VERSION" \
        -o "$BIN/.local-path-provisioner.tmp" .) || die "building local-path-provisioner failed"
    mv -f "$BIN/.local-path-provisioner.tmp" "$BIN/local-path-provisioner"
    echo "$key" >"$BIN/local-path-provisioner.stamp"
    log "local-path-provisioner built in $((SECONDS - t0))s"
fi

# --- what the images are made of -------------------------------------------------------
"$ROOT/scripts/build-k8s.sh" kube-apiserver kube-controller-manager kube-scheduler kubelet \
    kube-proxy kubectl etcd host-local loopback portmap >&2
"$ROOT/scripts/build-containerd.sh"
coredns_bin=$("$ROOT/scripts/build-coredns.sh")
"$ROOT/scripts/start-docker.sh" 9>&-
# kind runs its build container and its nodes with `--privileged`: see the script.
"$ROOT/scripts/build-kind-runtime.sh" 9>&-
mirror=$("$ROOT/scripts/debian-mirror.sh") || die "no Debian mirror"
command -v debootstrap >/dev/null || die "debootstrap missing (scripts/install-deps.sh)"
K8SBIN=$CACHE/bin
CNIBIN=$CACHE/cni
files=$kind_dir/images/base/files

work=$(mktemp -d "$OUT/work.XXXXXX")
trap 'rm -rf "$work"' EXIT

# debootstrap_tar NAME PACKAGES: a cached bookworm minbase rootfs tarball; prints its path.
debootstrap_tar() {
    local name=$1 packages=$2 key tarball rootfs
    key=$(echo "$SUITE minbase $packages prune=v1" | sha)
    tarball=$OUT/rootfs-$name-$key.tar
    if [[ ! -f $tarball ]]; then
        local t0=$SECONDS
        rootfs=$work/rootfs-$name
        log "debootstrap $SUITE from $mirror (minbase + $packages)"
        nice -n 10 debootstrap --variant=minbase --include="$packages" "$SUITE" "$rootfs" "$mirror" \
            >"$work/debootstrap-$name.log" 2>&1 \
            || { tail -20 "$work/debootstrap-$name.log" >&2; die "debootstrap failed"; }
        rm -rf "$rootfs"/usr/share/{doc,man,info,locale,lintian} "$rootfs"/var/lib/apt/lists/* \
            "$rootfs"/var/cache/apt/* "$rootfs"/var/log/*
        tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        rm -rf "$rootfs"
        log "rootfs $name in $((SECONDS - t0))s"
    fi
    echo "$tarball"
}

# --- base image ------------------------------------------------------------------------
base_key=$( { echo "recipe=$BASE_RECIPE suite=$SUITE packages=$BASE_PACKAGES"
              (cd "$files" && find . -type f | LC_ALL=C sort | xargs sha256sum)
              sha256sum "$K8SBIN"/{containerd,containerd-shim-runc-v2,ctr} "$BIN/crictl" \
                  "$CNIBIN"/{host-local,loopback,portmap}; } | sha)
base=weft.dev/kind-base:$SUITE-$base_key
if ((FORCE)) || ! $docker image inspect "$base" >/dev/null 2>&1; then
    t0=$SECONDS
    rootfs_tar=$(debootstrap_tar base "$BASE_PACKAGES")
    r=$work/base
    mkdir -p "$r"
    tar -C "$r" -xf "$rootfs_tar"
    # kind's static files, with the modes kind's Dockerfile gives them.
    install -m 0755 "$files"/usr/local/bin/* "$r/usr/local/bin/"
    mkdir -p "$r/kind/bin" "$r/etc/containerd" "$r/etc/default" "$r/etc/sysctl.d" \
        "$r/etc/systemd/system/kubelet.service.d" "$r/LICENSES" "$r/opt/cni/bin" \
        "$r/etc/kubernetes/manifests"
    chmod 0755 "$r/kind" "$r/kind/bin"
    install -m 0644 "$files"/kind/README.txt "$r/kind/"
    install -m 0755 "$files"/kind/bin/* "$r/kind/bin/"
    install -m 0644 "$files"/LICENSES/* "$r/LICENSES/"
    install -m 0644 "$files"/etc/crictl.yaml "$r/etc/"
    install -m 0644 "$files"/etc/containerd/* "$r/etc/containerd/"
    install -m 0644 "$files"/etc/default/* "$r/etc/default/"
    install -m 0644 "$files"/etc/sysctl.d/* "$r/etc/sysctl.d/"
    install -m 0644 "$files"/etc/systemd/system/*.service "$files"/etc/systemd/system/*.slice \
        "$r/etc/systemd/system/"
    install -m 0644 "$files"/etc/systemd/system/kubelet.service.d/* "$r/etc/systemd/system/kubelet.service.d/"
    # containerd 2 built here, Debian's runc (/usr/sbin/runc), crictl, the CNI plugins
    # kind ships (ptp is kindnet's only; kindnet is not used with weft).
    install -m 0755 "$K8SBIN"/{containerd,containerd-shim-runc-v2,ctr} "$BIN/crictl" "$r/usr/local/bin/"
    install -m 0755 "$CNIBIN"/{host-local,loopback,portmap} "$r/opt/cni/bin/"
    # What kind's Dockerfile does in its RUN steps, and one change: hosts here lack
    # CAP_SYS_RESOURCE, so nobody may lower an oom_score_adj and runc fails every pod
    # asking for a lower one than containerd's ("can't get final child's PID from pipe:
    # EOF"); restrict_oom_score_adj makes containerd clamp it (as kind does in a user
    # namespace). Under kind's unit containerd runs at -999: no change on other hosts.
    chroot "$r" /bin/sh -euc '
        ctr oci spec \
            | jq ".hooks.createContainer[.hooks.createContainer | length] |= . + {\"path\": \"/kind/bin/mount-product-files.sh\"}" \
            | jq "del(.process.rlimits)" >/etc/containerd/cri-base.json
        containerd --version >/dev/null
        runc --version >/dev/null
        find /lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete
        rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \
            /lib/systemd/system/local-fs.target.wants/* \
            /lib/systemd/system/sockets.target.wants/*udev* \
            /lib/systemd/system/sockets.target.wants/*initctl* \
            /lib/systemd/system/basic.target.wants/*
        echo ReadKMsg=no >>/etc/systemd/journald.conf
        ln -sf /usr/lib/systemd/systemd /sbin/init
        # restrict_oom_score_adj: see above this chroot.
        sed -i "s/restrict_oom_score_adj = false/restrict_oom_score_adj = true/" /etc/containerd/config.toml
        grep -q "restrict_oom_score_adj = true" /etc/containerd/config.toml
        systemctl enable kubelet.service containerd.service undo-mount-hacks.service
        systemctl mask systemd-binfmt.service
    ' >&2
    tar -C "$r" --numeric-owner -cf "$work/base.tar" .
    rm -rf "$r"
    $docker import "$work/base.tar" "$base-rootfs" >/dev/null
    rm -f "$work/base.tar"
    # The metadata kind's base image carries (ENV, STOPSIGNAL, ENTRYPOINT).
    cat >"$work/Dockerfile.base" <<EOF
FROM $base-rootfs
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]
EOF
    $docker build -q --label "dev.weft.kind-base=$base_key" -t "$base" -f "$work/Dockerfile.base" "$work" >/dev/null
    $docker rmi "$base-rootfs" >/dev/null
    log "base image $base in $((SECONDS - t0))s"
fi

# --- image archives for the node image -------------------------------------------------
# kind's file build type loads exactly four archives (kubernetes/server/bin/
# kube-{apiserver,controller-manager,scheduler,proxy}.tar) and pulls every other image the
# node image preloads: kubeadm's list (etcd, CoreDNS), the sandbox image of its containerd
# config, kindnetd and the local-path provisioner and helper. Nothing can be pulled here,
# so those images travel inside the archives: kind takes an archive's tags from its
# `repositories` file when that comes first, and `ctr images import` imports every image
# of an archive.

# layer_tar DIR: a reproducible layer of DIR; prints the layer's path in $work/layers.
layer_tar() {
    local dir=$1 tmp diff
    mkdir -p "$work/layers"
    tmp=$(mktemp "$work/layers/tmp.XXXXXX")
    tar -C "$dir" --numeric-owner --owner=0 --group=0 --mtime=@0 --sort=name -cf "$tmp" .
    diff=$(sha256sum "$tmp" | cut -d' ' -f1)
    mv -f "$tmp" "$work/layers/$diff.tar"
    echo "$work/layers/$diff.tar"
}
# archive_add ARCHIVE REF ENTRYPOINT_JSON LAYER...: one image (its config and layers) in
# the docker-archive directory $work/archive-ARCHIVE.
archive_add() {
    local name=$1 ref=$2 ep=$3 dir=$work/archive-$1 diffs=() layers=() l d cfg
    shift 3
    mkdir -p "$dir"
    for l in "$@"; do
        d=$(basename "$l" .tar)
        mkdir -p "$dir/$d"
        [[ -f $dir/$d/layer.tar ]] || cp "$l" "$dir/$d/layer.tar"
        diffs+=("sha256:$d"); layers+=("$d/layer.tar")
    done
    jq -cn --argjson ep "$ep" --args '{
        architecture: "amd64", os: "linux", created: "1970-01-01T00:00:00Z",
        config: {Entrypoint: $ep, Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], WorkingDir: "/"},
        rootfs: {type: "layers", diff_ids: $ARGS.positional}}' "${diffs[@]}" >"$dir/config.tmp"
    cfg=$(sha256sum "$dir/config.tmp" | cut -d' ' -f1)
    mv "$dir/config.tmp" "$dir/$cfg.json"
    jq -cn --arg cfg "$cfg.json" --arg ref "$ref" --args \
        '{Config: $cfg, RepoTags: [$ref], Layers: $ARGS.positional}' "${layers[@]}" >>"$dir/entries"
    jq -cn --arg repo "${ref%:*}" --arg tag "${ref##*:}" --arg id "$cfg" \
        '{($repo): {($tag): $id}}' >>"$dir/repos"
}
# archive_write ARCHIVE TARBALL: `repositories` first (for kind), then manifest.json.
archive_write() {
    local dir=$work/archive-$1
    jq -cs 'reduce .[] as $r ({}; . * $r)' "$dir/repos" >"$dir/repositories"
    jq -cs . "$dir/entries" >"$dir/manifest.json"
    rm "$dir/repos" "$dir/entries"
    (cd "$dir" && tar --numeric-owner --owner=0 --group=0 -cf "$2" repositories manifest.json \
        $(ls | grep -vxE 'repositories|manifest.json'))
}

node_key=$( { echo "recipe=$NODE_RECIPE k8s=$K8S_VERSION base=$base_key slim=$SLIM_PACKAGES"
              sha256sum "$K8SBIN"/{kube-apiserver,kube-controller-manager,kube-scheduler,kube-proxy,kubelet,kubectl,etcd} \
                  "$BIN"/{kubeadm,local-path-provisioner} "$coredns_bin" \
                  "$ROOT/e2e/images/pause.c" "$ROOT/e2e/kind/images/unavailable.c"
              sha256sum "$kind_dir"/pkg/build/nodeimage/const_*.go; } | sha)
node=weft.dev/kind-node:$K8S_VERSION-$node_key
node_tar=$OUT/node-$node_key.tar
if ((FORCE == 0)) && $docker image inspect "$node" >/dev/null 2>&1; then
    :
elif ((FORCE == 0)) && [[ -f $node_tar ]]; then
    log "docker load $node_tar"
    $docker load -q -i "$node_tar" >/dev/null
else
    t0=$SECONDS
    # The references the node image must hold, from kubeadm and kind themselves.
    mapfile -t kubeadm_images < <("$BIN/kubeadm" config images list --kubernetes-version "$K8S_VERSION")
    ref_of() { printf '%s\n' "${kubeadm_images[@]}" | grep -E "/$1:" || die "kubeadm lists no $1 image"; }
    etcd_ref=$(ref_of etcd)
    coredns_ref=$(ref_of coredns)
    pause_ref=$(ref_of pause)
    sandbox_ref=$(sed -nE 's/^ *sandbox_image *= *"([^"]+)".*/\1/p' "$files/etc/containerd/config.toml")
    const_ref() { sed -nE "s/^const $1 = \"([^\"]+)\"/\1/p" "$kind_dir"/pkg/build/nodeimage/const_*.go; }
    kindnetd_ref=$(const_ref kindnetdImage)
    lpp_ref=$(const_ref storageProvisionerImage)
    helper_ref=$(const_ref storageHelperImage)
    for v in etcd_ref coredns_ref pause_ref sandbox_ref kindnetd_ref lpp_ref helper_ref; do
        [[ -n ${!v} ]] || die "could not find $v in kubeadm's list or kind's source"
    done
    log "images: ${kubeadm_images[*]} $sandbox_ref $kindnetd_ref $lpp_ref $helper_ref"

    # One static binary per control-plane image, on PATH (kubeadm's manifests run the
    # command by name).
    bin_layer() { # bin_layer SRC [NAME]: SRC as /usr/local/bin/NAME, plus /tmp
        local d
        d=$(mktemp -d "$work/img.XXXXXX")
        mkdir -p "$d/usr/local/bin" "$d/tmp" "$d/etc"
        chmod 1777 "$d/tmp"
        install -m 0755 "$1" "$d/usr/local/bin/${2:-$(basename "$1")}"
        echo 'root:x:0:0:root:/root:/bin/sh' >"$d/etc/passwd"
        layer_tar "$d"
        rm -rf "$d"
    }
    for c in kube-apiserver kube-controller-manager kube-scheduler; do
        archive_add "$c" "registry.k8s.io/$c:$K8S_VERSION" "[\"/usr/local/bin/$c\"]" "$(bin_layer "$K8SBIN/$c")"
    done
    archive_add kube-apiserver "$etcd_ref" '["/usr/local/bin/etcd"]' "$(bin_layer "$K8SBIN/etcd")"
    # kube-proxy: Debian with nft, iptables and conntrack (any proxy mode), then the binary.
    d=$work/slim
    mkdir -p "$d"
    tar -C "$d" -xf "$(debootstrap_tar slim "$SLIM_PACKAGES")"
    slim_layer=$(layer_tar "$d")
    rm -rf "$d"
    archive_add kube-proxy "registry.k8s.io/kube-proxy:$K8S_VERSION" '["/usr/local/bin/kube-proxy"]' \
        "$slim_layer" "$(bin_layer "$K8SBIN/kube-proxy")"
    # The add-ons kind preloads travel with kube-proxy.
    d=$(mktemp -d "$work/img.XXXXXX")
    mkdir -p "$d/etc/coredns" "$d/tmp"
    chmod 1777 "$d/tmp"
    install -m 0755 "$coredns_bin" "$d/coredns"
    archive_add kube-proxy "$coredns_ref" '["/coredns"]' "$(layer_tar "$d")"
    rm -rf "$d"
    d=$(mktemp -d "$work/img.XXXXXX")
    gcc -static -Os -s -o "$d/pause" "$ROOT/e2e/images/pause.c"
    pause_layer=$(layer_tar "$d")
    rm -rf "$d"
    archive_add kube-proxy "$sandbox_ref" '["/pause"]' "$pause_layer"
    [[ $pause_ref == "$sandbox_ref" ]] || archive_add kube-proxy "$pause_ref" '["/pause"]' "$pause_layer"
    archive_add kube-proxy "$lpp_ref" '["/usr/local/bin/local-path-provisioner"]' \
        "$(bin_layer "$BIN/local-path-provisioner")"
    archive_add kube-proxy "$helper_ref" '["/bin/sh"]' "$slim_layer"
    d=$(mktemp -d "$work/img.XXXXXX")
    gcc -static -Os -s -o "$d/kindnetd" "$ROOT/e2e/kind/images/unavailable.c" \
        -DUNAVAILABLE="\"$kindnetd_ref is a stand-in: kindnetd's module (github.com/aojea/kindnet) is not served here and weft clusters disable kind's default CNI\""
    archive_add kube-proxy "$kindnetd_ref" '["/kindnetd"]' "$(layer_tar "$d")"
    rm -rf "$d"

    # The server tarball layout kind's file build type reads.
    k=$work/tree/kubernetes
    mkdir -p "$k/server/bin"
    echo "$K8S_VERSION" >"$k/version"
    install -m 0755 "$BIN/kubeadm" "$K8SBIN/kubelet" "$K8SBIN/kubectl" "$k/server/bin/"
    for c in kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
        archive_write "$c" "$k/server/bin/$c.tar"
    done
    rm -rf "$work/layers" "$work"/archive-*
    # kind reads a gzipped tarball; -1: it is unpacked once, right away.
    tar -C "$work/tree" -cf - kubernetes | gzip -1 >"$work/kubernetes-server.tar.gz"
    rm -rf "$work/tree"

    log "kind build node-image --type file ($node)"
    # kind first tries `docker pull` of the base image (4 retries, 10 s of back-off) and
    # goes on with the local one when that fails.
    TMPDIR=$work "$BIN/kind" build node-image --type file --base-image "$base" --image "$node" \
        "$work/kubernetes-server.tar.gz" >&2 || die "kind build node-image failed"
    $docker image inspect "$node" >/dev/null
    log "docker save $node"
    $docker save -o "$node_tar.tmp" "$node"
    mv -f "$node_tar.tmp" "$node_tar"
    # Older node images of this cache go.
    find "$OUT" -maxdepth 1 -name 'node-*.tar' ! -name "node-$node_key.tar" -delete
    log "node image $node in $((SECONDS - t0))s"
fi
echo "$node"
