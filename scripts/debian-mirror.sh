#!/usr/bin/env bash
# Prints the Debian mirror debootstrap should use: $WEFT_DEBIAN_MIRROR, else the first
# .../debian URI in /etc/apt (deb822 .sources or one-line .list). Fails when there is none.
set -euo pipefail
mirror=${WEFT_DEBIAN_MIRROR:-}
if [[ -z $mirror ]]; then
    mirror=$( { grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}'
                grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
                    | awk '{print $2}'; } 2>/dev/null | grep -E '/debian/?$' | head -n1 || true)
fi
if [[ -z $mirror ]]; then
    echo "no Debian mirror found in /etc/apt; set WEFT_DEBIAN_MIRROR" >&2
    exit 1
fi
echo "$mirror"
