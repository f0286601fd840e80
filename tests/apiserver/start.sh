#!/usr/bin/env bash
# Starts a real Kubernetes control plane on loopback for the integration tests:
# etcd and kube-apiserver (built by build.sh), RBAC on, static tokens for an admin and
# for the controller's ServiceAccount. Writes into DIR:
#   admin.kubeconfig       system:masters
#   controller.kubeconfig  system:serviceaccount:portcullis-system:portcullis (RBAC applies)
#   pids, apiserver.pid    etcd's and kube-apiserver's process ids, for the caller to stop
#   apiserver.sh           starts kube-apiserver again (same port, certificates and data)
# Usage: tests/apiserver/start.sh DIR   (prints DIR's admin kubeconfig path when ready)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="$(mkdir -p "$1" && cd "$1" && pwd)"
bin="$("$here/build.sh")"
case "$bin" in /*) ;; *) bin="$here/../../$bin" ;; esac

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

openssl ecparam -genkey -name prime256v1 -noout -out "$dir/sa.key" 2>/dev/null
admin_token=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
controller_token=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
cat > "$dir/tokens.csv" <<CSV
$admin_token,admin,admin,"system:masters,system:authenticated"
$controller_token,system:serviceaccount:portcullis-system:portcullis,portcullis,"system:serviceaccounts,system:serviceaccounts:portcullis-system,system:authenticated"
CSV

# Waits until URL answers (0), the process PID has exited (1) or 60 s have passed (2).
wait_ready() { # pid url [curl flags]
  local pid=$1 url=$2 deadline=$((SECONDS + 60)); shift 2
  while [ "$SECONDS" -lt "$deadline" ]; do
    curl -sf --max-time 2 "$@" "$url" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 2
}

# A free port is only free until someone else binds it: the other tests of the run
# take ports and the kernel hands out ephemeral ones. A server that lost the race
# exits, and is started again on fresh ports.
start_etcd() {
  for attempt in 1 2 3; do
    etcd_port=$(free_port); peer_port=$(free_port)
    rm -rf "$dir/etcd"
    "$bin/etcd" --name default --data-dir "$dir/etcd" --unsafe-no-fsync \
      --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
      --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
      --initial-cluster "default=http://127.0.0.1:$peer_port" --log-level warn >>"$dir/etcd.log" 2>&1 &
    etcd_pid=$!
    echo "$etcd_pid" >"$dir/pids"
    local status=0
    wait_ready "$etcd_pid" "http://127.0.0.1:$etcd_port/health" || status=$?
    [ "$status" = 0 ] && return 0
    kill "$etcd_pid" 2>/dev/null || true
    echo "etcd did not start (attempt $attempt, ports $etcd_port/$peer_port)" >>"$dir/etcd.log"
  done
  echo "etcd did not start; see $dir/etcd.log" >&2
  tail -20 "$dir/etcd.log" >&2
  exit 1
}

# A script of its own, so a test can stop the API server and start it again.
write_apiserver_script() {
  cat >"$dir/apiserver.sh" <<SH
#!/usr/bin/env bash
exec "$bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \\
  --bind-address 127.0.0.1 --secure-port "$api_port" --cert-dir "$dir/certs" \\
  --authorization-mode RBAC --token-auth-file "$dir/tokens.csv" \\
  --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$dir/sa.key" \\
  --service-account-signing-key-file "$dir/sa.key" --service-cluster-ip-range 10.96.0.0/16 \\
  --disable-admission-plugins ServiceAccount --enable-priority-and-fairness=false \\
  --v 1 >>"$dir/apiserver.log" 2>&1
SH
  chmod +x "$dir/apiserver.sh"
}

start_apiserver() {
  for attempt in 1 2 3; do
    api_port=$(free_port)
    write_apiserver_script
    "$dir/apiserver.sh" &
    api_pid=$!
    echo "$api_pid" >"$dir/apiserver.pid"
    local status=0
    wait_ready "$api_pid" "https://127.0.0.1:$api_port/readyz" -k -H "Authorization: Bearer $admin_token" || status=$?
    [ "$status" = 0 ] && return 0
    kill "$api_pid" 2>/dev/null || true
    echo "kube-apiserver did not become ready (attempt $attempt, port $api_port)" >>"$dir/apiserver.log"
    # Not a lost port race: a slow or broken start, which a retry would not mend.
    [ "$status" = 2 ] && break
  done
  echo "kube-apiserver did not become ready; see $dir/apiserver.log" >&2
  tail -20 "$dir/apiserver.log" >&2
  exit 1
}

start_etcd
start_apiserver

kubeconfig() { # user token
  cat <<KC
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $(base64 -w0 <"$dir/certs/apiserver.crt")
users:
- name: $1
  user: {token: $2}
contexts:
- name: test
  context: {cluster: test, user: $1}
current-context: test
KC
}
kubeconfig admin "$admin_token" >"$dir/admin.kubeconfig"
kubeconfig portcullis "$controller_token" >"$dir/controller.kubeconfig"
echo "$dir/admin.kubeconfig"
