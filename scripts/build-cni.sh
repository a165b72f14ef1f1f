#!/usr/bin/env bash
# Builds the CNI plugin `weft` as a static executable (glibc static-pie) and prints its
# path. The plugin is copied onto every node's /opt/cni/bin and runs in the host's
# userland, whose glibc may be older than the image's: a static binary runs anywhere.
# It also starts faster (no dynamic loader, no shared-library relocations), which is
# about 0.3-0.7 ms of the ~3 ms an ADD takes (see `weft-e2e bench cni`).
#
# A separate cargo invocation with an explicit --target, so that crt-static applies to
# the plugin only (build scripts and proc-macros stay dynamic, as they must) and the
# workspace's normal target/release artifacts are untouched. Output:
# target/<host triple>/release/weft.
set -euo pipefail
cd "$(dirname "$0")/.."
triple=$(rustc -vV | sed -n 's/^host: //p')
target_dir=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
# Whole-program LTO in one unit at opt-level "s": a third smaller (2.8 MB), so fewer
# pages to fault in on every start; about 0.1 ms less per ADD.
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked -p weft-cni --bin weft --target "$triple" \
    --config 'profile.release.lto="fat"' --config 'profile.release.codegen-units=1' \
    --config 'profile.release.opt-level="s"' >&2
out=$target_dir/$triple/release/weft
# A static-pie has no program interpreter; refuse to hand out anything else.
if readelf -lW "$out" | grep -q 'Requesting program interpreter'; then
    echo "build-cni: $out is dynamically linked" >&2
    exit 1
fi
echo "$out"
