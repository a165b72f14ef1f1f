#!/usr/bin/env bash
# Starts Debian's dockerd in the background when none answers; idempotent.
# No systemd here: the daemon runs detached with its log in $WEFT_DOCKER_LOG.
set -euo pipefail

log=${WEFT_DOCKER_LOG:-/var/log/weft-dockerd.log}
# Debian's client matches Debian's daemon (engine 20.10); prefer it over other
# docker binaries earlier on PATH.
docker=/usr/bin/docker
[[ -x $docker ]] || docker=$(command -v docker || true)

if [[ -z $docker ]] || ! command -v dockerd >/dev/null; then
    echo "docker is not installed: apt-get install -y docker.io" >&2
    exit 1
fi
if "$docker" info >/dev/null 2>&1; then
    exit 0
fi
if [[ $(id -u) != 0 ]]; then
    echo "dockerd is not running and starting it needs root" >&2
    exit 1
fi

echo "starting dockerd (log: $log)" >&2
# setsid: the daemon must outlive this script's session and process group. It must not
# inherit our callers' other descriptors either: a build script's lock file left open in
# dockerd would stay locked for as long as dockerd runs.
(
    for fd in /proc/$BASHPID/fd/*; do
        fd=${fd##*/}
        ((fd > 2)) && eval "exec $fd>&-"
    done 2>/dev/null
    exec setsid dockerd >>"$log" 2>&1 </dev/null
) &

for _ in $(seq 1 300); do
    if "$docker" info >/dev/null 2>&1; then
        exit 0
    fi
    sleep 0.1
done
echo "dockerd did not answer within 30 s; last lines of $log:" >&2
tail -n 20 "$log" >&2
exit 1
