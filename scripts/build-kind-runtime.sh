#!/usr/bin/env bash
# Makes `docker run --privileged` (and `docker exec --privileged`) work on a host whose
# processes lack some capabilities in their bounding set, which kind's nodes need.
#
# Why: on this project's VMs every process, dockerd included, runs without
# CAP_SYS_RESOURCE in its bounding set (CapBnd 000001fffeffffff). Docker 20.10 gives a
# privileged container every capability the kernel knows (up to cap_last_cap), not the
# ones it has, so runc fails with "unable to apply caps: operation not permitted" and
# no kind node, nor kind's node-image build container, starts.
#
# What: an OCI runtime `weft-bounded` (a wrapper around runc) that removes from a
# container's or exec process's capability sets those outside its own bounding set, then
# runs runc; registered in /etc/docker/daemon.json as docker's default runtime and loaded
# with SIGHUP (dockerd reloads `runtimes` and `default-runtime` without a restart).
# Containers asking only for capabilities the host has are passed through unchanged.
# Idempotent; does nothing when the bounding set is full.
# Env: WEFT_RUNTIME_DIR (default /usr/local/libexec/weft).
set -euo pipefail

log() { echo "[build-kind-runtime] $*" >&2; }
dir=${WEFT_RUNTIME_DIR:-/usr/local/libexec/weft}
wrapper=$dir/runc-bounded
conf=/etc/docker/daemon.json

bnd=$(awk '/^CapBnd/ {print $2}' /proc/self/status)
last=$(cat /proc/sys/kernel/cap_last_cap)
full=$(printf '%016x' $(( (1 << (last + 1)) - 1 )))
if [[ $((16#$bnd)) -eq $((16#$full)) && ${WEFT_FORCE_RUNTIME:-0} != 1 ]]; then
    log "the bounding set is full ($bnd): docker's own runc is enough"
    exit 0
fi
command -v capsh >/dev/null || { log "capsh missing: apt-get install -y libcap2-bin"; exit 1; }
runc=$(command -v runc) || { log "runc missing"; exit 1; }

mkdir -p "$dir"
cat >"$wrapper.tmp" <<WRAPPER
#!/bin/bash
# Written by scripts/build-kind-runtime.sh: runc, with capability sets cut down to the
# bounding set this runtime runs with.
set -euo pipefail
file= path=
args=("\$@")
for ((i = 0; i < \${#args[@]}; i++)); do
    case \${args[i]} in
        --bundle|-b) file=\${args[i+1]}/config.json; path='["process","capabilities"]' ;;
        --bundle=*) file=\${args[i]#--bundle=}/config.json; path='["process","capabilities"]' ;;
        --process|-p) file=\${args[i+1]}; path='["capabilities"]' ;;
        --process=*) file=\${args[i]#--process=}; path='["capabilities"]' ;;
    esac
done
if [[ -n \$file && -f \$file ]]; then
    have=\$(capsh --decode="\$(awk '/^CapBnd/ {print \$2}' /proc/self/status)" | sed 's/.*=//' | tr a-z A-Z)
    jq --arg have "\$have" --argjson p "\$path" '
        (\$have | split(",")) as \$ok
        | if getpath(\$p) == null then . else
            setpath(\$p; getpath(\$p) | with_entries(
                .value |= (if type == "array" then map(select(. as \$c | \$ok | index(\$c))) else . end)))
          end' "\$file" >"\$file.weft-tmp"
    mv -f "\$file.weft-tmp" "\$file"
fi
exec $runc "\$@"
WRAPPER
chmod 0755 "$wrapper.tmp"
mv -f "$wrapper.tmp" "$wrapper"

mkdir -p /etc/docker
current='{}'
[[ -s $conf ]] && current=$(cat "$conf")
want=$(jq --arg w "$wrapper" '.runtimes["weft-bounded"] = {path: $w} | ."default-runtime" = "weft-bounded"' <<<"$current")
if [[ $(jq -S . <<<"$current") != $(jq -S . <<<"$want") ]]; then
    log "docker default runtime: weft-bounded ($wrapper) in $conf"
    echo "$want" >"$conf.tmp"
    mv -f "$conf.tmp" "$conf"
    if pid=$(pgrep -x dockerd); then
        kill -HUP "$pid"
        for _ in $(seq 1 50); do
            docker info --format '{{.DefaultRuntime}}' 2>/dev/null | grep -qx weft-bounded && break
            sleep 0.1
        done
    fi
fi
log "ok: default runtime $(docker info --format '{{.DefaultRuntime}}' 2>/dev/null || echo '(docker not running)')"
