#!/usr/bin/env bash
# Builds Kubernetes v1.34.4's own network e2e specs and the test images they run, for
# `weft-e2e conformance`. Nothing is pulled from a container registry.
#
#   e2e-network.test  `go test -c` of e2e/upstream: upstream's suite setup with only the
#                     network spec packages ([sig-network], the networking
#                     NodeConformance checks, NetworkPolicy); a few minutes to compile
#                     instead of upstream's whole e2e.test.
#   agnhost           k8s.io/kubernetes/test/images/agnhost from the same module.
#   ginkgo            the ginkgo CLI of the same module, which runs the specs in
#                     parallel processes (as upstream's hack/ginkgo-e2e.sh does).
#   test-images.tar   one `docker save` of the images the specs name, under the exact
#                     references the suite asks for (e2e/upstream/images/Dockerfile):
#                       registry.k8s.io/e2e-test-images/agnhost:2.56
#                       registry.k8s.io/e2e-test-images/jessie-dnsutils:1.7
#                       registry.k8s.io/e2e-test-images/busybox:1.37.0-1, :1.36.1-1
#                       registry.k8s.io/pause:3.10.1
#                     on a Debian bookworm minbase rootfs (debootstrap) with the tools
#                     the specs' shell commands call.
#
# Idempotent: each output is rebuilt only when its stamp (hash of its inputs) changes.
# Usage: scripts/build-conformance.sh [--force]
# Env:   WEFT_CACHE (default /var/cache/weft), GO, BUILD_JOBS (default 2),
#        WEFT_DEBIAN_MIRROR (default: the first Debian mirror in /etc/apt).
# Output: $WEFT_CACHE/conformance/{e2e-network.test,ginkgo,agnhost,test-images.tar}; prints
#         that directory on stdout.
set -euo pipefail

K8S_VERSION=v1.34.4
K8S_BUILD_DATE=2026-02-10T12:53:36Z   # as scripts/build-k8s.sh: the module's timestamp
IMAGES=(
    "agnhost|registry.k8s.io/e2e-test-images/agnhost:2.56"
    "dnsutils|registry.k8s.io/e2e-test-images/jessie-dnsutils:1.7"
    "busybox|registry.k8s.io/e2e-test-images/busybox:1.37.0-1"
    "busybox|registry.k8s.io/e2e-test-images/busybox:1.36.1-1"
    "pause|registry.k8s.io/pause:3.10.1"
)
# What the specs' commands call: dig/nslookup (DNS), curl, nc, wget, ip/ss, iperf, ping,
# ps, bash; passwd for the image's user.
PACKAGES=bind9-dnsutils,curl,netcat-openbsd,iproute2,iperf,iputils-ping,wget,procps,bash,passwd

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MOD=$ROOT/e2e/upstream
OUT=${WEFT_CACHE:-/var/cache/weft}/conformance
JOBS=${BUILD_JOBS:-2}
log() { echo "[build-conformance] $*" >&2; }
die() { echo "[build-conformance] ERROR: $*" >&2; exit 1; }

if [[ -z "${GO:-}" ]]; then
    if command -v go >/dev/null 2>&1; then GO=$(command -v go); else GO=/usr/local/go/bin/go; fi
fi
[[ -x "$GO" ]] || die "go not found (set GO=/path/to/go)"
FORCE=0
[[ ${1:-} == --force ]] && FORCE=1

mkdir -p "$OUT"
exec 9>"$OUT/.lock"
flock 9

export GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0 GOOS=linux

fresh() { # fresh FILE HASH: the output exists and was built from HASH
    ((FORCE == 0)) && [[ -e $1 && -f $1.stamp && "$(cat "$1.stamp")" == "$2" ]]
}

# --- Go: the spec binary and agnhost ---------------------------------------------------
go_hash=$( { "$GO" env GOVERSION; cat "$MOD/go.mod" "$MOD/go.sum" "$MOD"/*.go "${BASH_SOURCE[0]}"; } \
    | sha256sum | cut -d' ' -f1)
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=34"
    ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=$K8S_BUILD_DATE"
done
if ! fresh "$OUT/e2e-network.test" "$go_hash"; then
    t0=$SECONDS
    log "go test -c e2e/upstream (the network specs) ..."
    (cd "$MOD" && nice -n 10 "$GO" test -c -p "$JOBS" -trimpath -ldflags="$ldflags" \
        -o "$OUT/.e2e-network.test.tmp" .) || die "building e2e-network.test failed"
    mv -f "$OUT/.e2e-network.test.tmp" "$OUT/e2e-network.test"
    echo "$go_hash" >"$OUT/e2e-network.test.stamp"
    log "e2e-network.test built in $((SECONDS - t0))s"
fi
if ! fresh "$OUT/ginkgo" "$go_hash"; then
    log "go build ginkgo ..."
    (cd "$MOD" && nice -n 10 "$GO" build -p "$JOBS" -trimpath -ldflags="-s -w" \
        -o "$OUT/.ginkgo.tmp" github.com/onsi/ginkgo/v2/ginkgo) || die "building ginkgo failed"
    mv -f "$OUT/.ginkgo.tmp" "$OUT/ginkgo"
    echo "$go_hash" >"$OUT/ginkgo.stamp"
fi
if ! fresh "$OUT/agnhost" "$go_hash"; then
    t0=$SECONDS
    log "go build agnhost ..."
    (cd "$MOD" && nice -n 10 "$GO" build -p "$JOBS" -trimpath -ldflags="-s -w" \
        -o "$OUT/.agnhost.tmp" k8s.io/kubernetes/test/images/agnhost) || die "building agnhost failed"
    mv -f "$OUT/.agnhost.tmp" "$OUT/agnhost"
    echo "$go_hash" >"$OUT/agnhost.stamp"
    log "agnhost built in $((SECONDS - t0))s"
fi

# --- the images ------------------------------------------------------------------------
img_hash=$( { cat "$OUT/agnhost.stamp" "$MOD/images/Dockerfile" "$ROOT/e2e/images/pause.c"
              echo "$PACKAGES"; printf '%s\n' "${IMAGES[@]}"; cat "${BASH_SOURCE[0]}"; } \
    | sha256sum | cut -d' ' -f1)
if ! fresh "$OUT/test-images.tar" "$img_hash"; then
    t0=$SECONDS
    "$ROOT/scripts/start-docker.sh" 9>&-
    docker=/usr/bin/docker
    [[ -x $docker ]] || docker=docker
    mirror=$("$ROOT/scripts/debian-mirror.sh") || die "no Debian mirror"
    command -v debootstrap >/dev/null || die "debootstrap missing (scripts/install-deps.sh)"
    ctx=$(mktemp -d "$OUT/ctx.XXXXXX")
    trap 'rm -rf "$ctx"' EXIT
    log "debootstrap bookworm from $mirror (minbase + $PACKAGES)"
    nice -n 10 debootstrap --variant=minbase --include="$PACKAGES" bookworm "$ctx/rootfs" "$mirror" \
        >"$ctx/debootstrap.log" 2>&1 || { tail -20 "$ctx/debootstrap.log" >&2; die "debootstrap failed"; }
    rm -rf "$ctx"/rootfs/usr/share/{doc,man,info,locale,lintian} \
        "$ctx"/rootfs/var/lib/apt/lists/* "$ctx"/rootfs/var/cache/apt/* "$ctx"/rootfs/var/log/*
    # Checked here, not found missing in the middle of a spec.
    for t in sh bash dig nslookup curl nc wget ip ss iperf ping ps awk hostname seq sleep; do
        chroot "$ctx/rootfs" sh -c "command -v $t" >/dev/null || die "the test rootfs lacks $t"
    done
    tar -C "$ctx/rootfs" --numeric-owner -cf "$ctx/rootfs.tar" .
    rm -rf "$ctx/rootfs"
    cp "$OUT/agnhost" "$ctx/agnhost"
    cp "$(go env GOMODCACHE)/k8s.io/kubernetes@$K8S_VERSION/test/images/agnhost/porter/"localhost.{crt,key} "$ctx/"
    chmod u+w "$ctx"/localhost.*
    gcc -static -Os -s -o "$ctx/pause" "$ROOT/e2e/images/pause.c"
    cp "$MOD/images/Dockerfile" "$ctx/Dockerfile"
    refs=()
    for i in "${IMAGES[@]}"; do
        IFS='|' read -r target ref <<<"$i"
        log "docker build $ref"
        $docker build -q --target "$target" -t "$ref" "$ctx" >/dev/null || die "docker build $ref failed"
        refs+=("$ref")
    done
    # The specs' shells run in the images as they will on the nodes: check one.
    $docker run --rm --network none --entrypoint /bin/sh "${refs[0]}" -c \
        'dig -v 2>&1 | grep -q DiG && /agnhost --help >/dev/null' \
        || die "agnhost image does not run dig and agnhost"
    $docker save -o "$OUT/.test-images.tar.tmp" "${refs[@]}"
    mv -f "$OUT/.test-images.tar.tmp" "$OUT/test-images.tar"
    echo "$img_hash" >"$OUT/test-images.tar.stamp"
    rm -rf "$ctx"
    trap - EXIT
    log "test images built in $((SECONDS - t0))s"
fi
echo "$OUT"
