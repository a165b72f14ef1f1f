#!/usr/bin/env bash
# Installs what weft's build and test suite need on a fresh Debian 12 machine (as root).
# Idempotent: packages already present are skipped quickly.
set -euo pipefail

need=(iproute2 nftables iperf3 iputils-ping tcpdump openssl procps ethtool ca-certificates
      docker.io debootstrap jq runc conntrack iptables util-linux gcc libc6-dev binutils python3)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "[install-deps] apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

for tool in cargo go; do
  command -v "$tool" >/dev/null || { echo "[install-deps] $tool is required but not on PATH" >&2; exit 1; }
done
for comp in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$comp" || rustup component add "$comp"
done
echo "[install-deps] ok"
