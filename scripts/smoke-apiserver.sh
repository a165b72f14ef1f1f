#!/usr/bin/env bash
# Smoke test for the binaries from scripts/build-k8s.sh: start etcd and
# kube-apiserver on 127.0.0.1 only, wait for /readyz, run `kubectl get ns`,
# then stop both and remove the temp dir. Reference for the Rust e2e harness.
#
# Env: WEFT_CACHE (default /var/cache/weft), ETCD_CLIENT_PORT (23790),
#      ETCD_PEER_PORT (23800), APISERVER_PORT (26443), KEEP=1 keeps the temp dir.
set -euo pipefail

BIN=${WEFT_CACHE:-/var/cache/weft}/bin
ETCD_CLIENT_PORT=${ETCD_CLIENT_PORT:-23790}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-23800}
APISERVER_PORT=${APISERVER_PORT:-26443}
log() { echo "[smoke] $*"; }

TMP=$(mktemp -d /tmp/weft-smoke.XXXXXX)
ETCD_PID= APISERVER_PID=
cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    # Stop the apiserver before etcd so it does not log etcd errors on the way out.
    if [[ -n "$APISERVER_PID" ]]; then kill "$APISERVER_PID" 2>/dev/null; wait "$APISERVER_PID" 2>/dev/null; fi
    if [[ -n "$ETCD_PID" ]]; then kill "$ETCD_PID" 2>/dev/null; wait "$ETCD_PID" 2>/dev/null; fi
    if ((rc != 0)); then
        log "FAILED (rc=$rc); last log lines:"
        tail -n 20 "$TMP/etcd.log" "$TMP/apiserver.log" 2>/dev/null || true
    fi
    if [[ "${KEEP:-0}" == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit $rc
}
trap cleanup EXIT INT TERM

# --- etcd (plain http on loopback, single member) ---------------------------
"$BIN/etcd" \
    --name=weft-smoke \
    --data-dir="$TMP/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --advertise-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="weft-smoke=http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster-state=new \
    --log-level=warn \
    >"$TMP/etcd.log" 2>&1 &
ETCD_PID=$!
t0=$SECONDS
until curl -fsS "http://127.0.0.1:$ETCD_CLIENT_PORT/health" 2>/dev/null | grep -q '"health":"true"'; do
    kill -0 "$ETCD_PID" 2>/dev/null || { log "etcd exited"; exit 1; }
    ((SECONDS - t0 < 30)) || { log "etcd not healthy after 30s"; exit 1; }
    sleep 0.2
done
log "etcd healthy after $((SECONDS - t0))s"

# --- credentials ------------------------------------------------------------
openssl genrsa -out "$TMP/sa.key" 2048 2>/dev/null
openssl rsa -in "$TMP/sa.key" -pubout -out "$TMP/sa.pub" 2>/dev/null
TOKEN=$(openssl rand -hex 16)
# token,user,uid,"group1,group2"
echo "$TOKEN,admin,admin,system:masters" >"$TMP/tokens.csv"

# --- kube-apiserver ---------------------------------------------------------
"$BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --secure-port="$APISERVER_PORT" \
    --cert-dir="$TMP/certs" \
    --service-cluster-ip-range=10.96.0.0/16 \
    --service-account-issuer="https://127.0.0.1:$APISERVER_PORT" \
    --service-account-key-file="$TMP/sa.pub" \
    --service-account-signing-key-file="$TMP/sa.key" \
    --token-auth-file="$TMP/tokens.csv" \
    --authorization-mode=Node,RBAC \
    --allow-privileged=true \
    >"$TMP/apiserver.log" 2>&1 &
APISERVER_PID=$!
t0=$SECONDS
until [[ "$(curl -ksS -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$APISERVER_PORT/readyz" 2>/dev/null)" == ok ]]; do
    kill -0 "$APISERVER_PID" 2>/dev/null || { log "kube-apiserver exited"; exit 1; }
    ((SECONDS - t0 < 90)) || { log "kube-apiserver not ready after 90s"; exit 1; }
    sleep 0.5
done
log "kube-apiserver ready after $((SECONDS - t0))s"

# --- kubectl ----------------------------------------------------------------
# --cert-dir gets a self-signed apiserver.crt (serving cert + its CA) valid
# for 127.0.0.1/localhost, so it doubles as the CA bundle.
cat >"$TMP/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: smoke
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $TMP/certs/apiserver.crt
users:
- name: admin
  user:
    token: $TOKEN
contexts:
- name: smoke
  context: {cluster: smoke, user: admin}
current-context: smoke
EOF
"$BIN/kubectl" --kubeconfig="$TMP/kubeconfig" get ns
"$BIN/kubectl" --kubeconfig="$TMP/kubeconfig" version
log "OK"
