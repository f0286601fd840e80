#!/usr/bin/env bash
# End to end in a kind cluster (needs Docker, kind, kubectl, helm, Node.js, Chromium):
# build and load the image, `helm install` the chart, deploy the test provider and an
# echo app with the same scenario as tests/cluster.rs (tests/scenario/app.yaml), log
# in through HTTPS in headless Chromium, and check the identity headers.
# Usage: tests/kind/e2e.sh   (KEEP=1 keeps the cluster afterwards)
set -euo pipefail
cd "$(dirname "$0")/../.."
name=portcullis-e2e
work=$(mktemp -d)
cleanup() { [[ "${KEEP:-}" == 1 ]] || kind delete cluster --name "$name" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

kind create cluster --name "$name" --config kind-config.yaml --wait 120s
docker build -t portcullis:e2e .
docker build -t portcullis-test-idp:e2e -f tests/kind/idp.Dockerfile .
kind load docker-image --name "$name" portcullis:e2e portcullis-test-idp:e2e

# One certificate authority for the provider and the application host.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=e2e-ca \
  -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null
for host in idp.example.com app.example.com; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$host" \
    -keyout "$work/$host.key" -out "$work/$host.csr" 2>/dev/null
  openssl x509 -req -in "$work/$host.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial \
    -days 2 -extfile <(printf "subjectAltName=DNS:%s" "$host") -out "$work/$host.crt" 2>/dev/null
done
node_ip=$(kubectl get nodes -o jsonpath='{.items[0].status.addresses[?(@.type=="InternalIP")].address}')

kubectl create namespace portcullis-system
kubectl -n portcullis-system create secret generic idp-ca --from-file=ca.crt="$work/ca.crt"
helm install portcullis charts/portcullis --namespace portcullis-system --wait --timeout 5m \
  --set image.repository=portcullis --set image.tag=e2e --set image.pullPolicy=Never \
  --set service.type=NodePort --set service.httpNodePort=30080 --set service.httpsNodePort=30443 \
  --set "hostAliases[0].ip=$node_ip" --set "hostAliases[0].hostnames[0]=idp.example.com" \
  --set "extraVolumes[0].name=idp-ca" --set "extraVolumes[0].secret.secretName=idp-ca" \
  --set "extraVolumeMounts[0].name=idp-ca" --set "extraVolumeMounts[0].mountPath=/etc/idp-ca" \
  --set "extraArgs[0]=--idp-ca-file=/etc/idp-ca/ca.crt"

kubectl create namespace idp
kubectl -n idp create secret tls idp-tls --cert="$work/idp.example.com.crt" --key="$work/idp.example.com.key"
sed 's#ISSUER#https://idp.example.com:30943#' tests/scenario/app.yaml | kubectl apply --server-side -f -
kubectl -n apps create secret tls app-tls --cert="$work/app.example.com.crt" --key="$work/app.example.com.key"
kubectl -n apps patch ingress web --type merge -p '{"spec":{"tls":[{"hosts":["app.example.com"],"secretName":"app-tls"}]}}'
kubectl apply --server-side -f tests/kind/cluster-extras.yaml
kubectl -n idp rollout status deploy/idp --timeout 3m
kubectl -n apps rollout status deploy/echo --timeout 3m

# The scenario applied twice changes nothing (GitOps sees no drift).
sed 's#ISSUER#https://idp.example.com:30943#' tests/scenario/app.yaml | kubectl diff --server-side -f - \
  --field-manager kubectl >/dev/null || { echo "re-applying the scenario would change it" >&2; exit 1; }

for _ in $(seq 60); do
  ready=$(kubectl -n apps get authrule sso -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')
  [[ "$ready" == True ]] && break
  sleep 2
done
[[ "$ready" == True ]] || { kubectl -n apps get authrule sso -o yaml >&2; exit 1; }

npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
out=$(IGNORE_HTTPS_ERRORS=1 node tests/browser/login.mjs https://app.example.com/e2e ellen \
  "MAP app.example.com 127.0.0.1, MAP idp.example.com 127.0.0.1")
echo "$out" | python3 -c '
import json, sys
seen = json.load(sys.stdin)
body = seen["body"]
echoed = json.loads(body[body.index("{"):body.rindex("}") + 1])
headers = {k.lower(): v for k, v in echoed["headers"].items()}
assert headers["x-amzn-oidc-identity"] == "ellen", headers
assert headers["x-amzn-oidc-accesstoken"] and headers["x-amzn-oidc-data"], headers
print("kind e2e: logged in as ellen; the echo app received the three identity headers")
'
