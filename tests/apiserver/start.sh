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
etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port)

openssl ecparam -genkey -name prime256v1 -noout -out "$dir/sa.key" 2>/dev/null
admin_token=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
controller_token=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
cat > "$dir/tokens.csv" <<CSV
$admin_token,admin,admin,"system:masters,system:authenticated"
$controller_token,system:serviceaccount:portcullis-system:portcullis,portcullis,"system:serviceaccounts,system:serviceaccounts:portcullis-system,system:authenticated"
CSV

"$bin/etcd" --name default --data-dir "$dir/etcd" --unsafe-no-fsync \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "default=http://127.0.0.1:$peer_port" --log-level warn >"$dir/etcd.log" 2>&1 &
echo $! >"$dir/pids"

# A script of its own, so a test can stop the API server and start it again.
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
"$dir/apiserver.sh" &
echo $! >"$dir/apiserver.pid"


for _ in $(seq 600); do
  if curl -skf -H "Authorization: Bearer $admin_token" "https://127.0.0.1:$api_port/readyz" >/dev/null 2>&1; then
    break
  fi
  sleep 0.1
done
curl -skf -H "Authorization: Bearer $admin_token" "https://127.0.0.1:$api_port/readyz" >/dev/null || {
  echo "kube-apiserver did not become ready; see $dir/apiserver.log" >&2
  tail -20 "$dir/apiserver.log" >&2
  exit 1
}

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
