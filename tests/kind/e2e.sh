#!/usr/bin/env bash
# End to end in a kind cluster, as the cluster quickstart goes
# (deploy/examples/quickstart/README.md): install cert-manager, build and load the image,
# install the chart, deploy the test provider, apply exactly the quickstart's files with
# the test provider's issuer and client put in where its README says, log in through
# HTTPS in headless Chromium, and check the identity headers the echo app received.
#
# Needs: Docker, kind v0.29 or later, kubectl, helm v3.19.0 (HELM=/path/to/helm for
# another binary), Node.js 22 with npm, openssl, python3, and Chromium or Google Chrome
# (found on PATH or in the usual places; CHROMIUM=/path/to/browser to choose). Host
# ports 80, 443 and 30943 on 127.0.0.1.
#
# Usage: tests/kind/e2e.sh
#   KEEP=1 keeps the cluster afterwards; a rerun reuses it, and the certificates kept
#   in .cache/kind-e2e.
#   CONFORMANCE=1 also installs the Gateway API CRDs (v1.6.3, standard channel) and
#   a GatewayClass, and runs the Gateway API conformance suite against the cluster as
#   tests/conformance.rs runs it (the GATEWAY-HTTP, -GRPC and -TLS profiles, each Gateway at an address
#   of its own), with the suite's own echo backends as Pods; every test listed in
#   tests/gateway/conformance-passing.txt must pass. Needs Go 1.25 or later too.
#   Its report is written to .cache/kind-e2e/conformance-report.yaml.
# The cluster's kubeconfig is .cache/kind-e2e/kubeconfig: your own contexts are never
# touched. On failure, pods, controller logs, AuthRules and `kind export logs` are
# written to .cache/kind-e2e/failure before the cluster is deleted.
set -euo pipefail
cd "$(dirname "$0")/../.."

readonly name=portcullis-e2e
# kind v0.29.0's image for Kubernetes 1.33, the version k8s-openapi's v1_33 feature
# speaks and the chart's kubeVersion accepts (tests/packaging.rs checks both).
readonly node_image=kindest/node:v1.33.1@sha256:050072256b9a903bd914c0b2866828150cb229cea0efe5892e2b644d5dd3b34f
readonly helm_version=v3.19.0
readonly cert_manager_version=v1.18.2
readonly issuer=https://idp.example.com:30943
state=$(mkdir -p .cache/kind-e2e && cd .cache/kind-e2e && pwd)
readonly state
export KUBECONFIG="$state/kubeconfig"
helm=${HELM:-helm}

fail() { echo "kind e2e: $*" >&2; exit 1; }

find_chromium() {
  local candidate
  for candidate in "${CHROMIUM:-}" chromium chromium-browser google-chrome-stable google-chrome \
    /snap/bin/chromium \
    "/Applications/Chromium.app/Contents/MacOS/Chromium" \
    "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome"; do
    [[ -n "$candidate" ]] || continue
    if [[ -x "$candidate" ]]; then echo "$candidate"; return 0; fi
    if command -v "$candidate" >/dev/null; then command -v "$candidate"; return 0; fi
  done
  return 1
}

# Everything this script needs, checked before anything is created.
for tool in docker kind kubectl node npm openssl python3; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (see the list at the top of $0)"
done
command -v "$helm" >/dev/null || fail "helm is not installed; install $helm_version"
[[ "$("$helm" version --template '{{.Version}}')" == "$helm_version" ]] ||
  fail "helm is $("$helm" version --template '{{.Version}}'), this test is pinned to $helm_version (HELM=/path/to/helm-$helm_version)"
chromium=$(find_chromium) || fail "no Chromium or Google Chrome found; install one or set CHROMIUM=/path/to/browser"
docker info >/dev/null 2>&1 || fail "Docker is not running (docker info failed)"

dump() {
  local out="$state/failure"
  rm -rf "$out" && mkdir -p "$out"
  echo "kind e2e: failed; diagnostics in $out" >&2
  kubectl get pods -A -o wide >"$out/pods.txt" 2>&1 || true
  kubectl get events -A --sort-by=.lastTimestamp >"$out/events.txt" 2>&1 || true
  kubectl -n portcullis-system logs -l app.kubernetes.io/name=portcullis --all-containers --prefix --tail=-1 \
    >"$out/controller.log" 2>&1 || true
  kubectl get authrules -A -o yaml >"$out/authrules.yaml" 2>&1 || true
  kubectl get ingresses -A -o yaml >"$out/ingresses.yaml" 2>&1 || true
  kind export logs "$out/kind" --name "$name" >/dev/null 2>&1 || true
  cat "$out/pods.txt" >&2
  tail -n 50 "$out/controller.log" >&2 || true
}

finish() {
  local status=$?
  [[ $status -eq 0 ]] || dump
  if [[ "${KEEP:-}" != 1 ]]; then
    kind delete cluster --name "$name" >/dev/null 2>&1 || true
  else
    echo "kind e2e: cluster kept; KUBECONFIG=$KUBECONFIG" >&2
  fi
  exit "$status"
}
trap finish EXIT

if kind get clusters 2>/dev/null | grep -x "$name" >/dev/null; then
  kind export kubeconfig --name "$name" --kubeconfig "$KUBECONFIG"
else
  kind create cluster --name "$name" --image "$node_image" --config kind-config.yaml \
    --kubeconfig "$KUBECONFIG" --wait 120s
fi

# Images tagged by content, so a rerun with changed code rolls the pods.
docker build -t portcullis:e2e .
docker build -t portcullis-test-idp:e2e -f tests/kind/idp.Dockerfile .
image_tag() { local id; id=$(docker image inspect -f '{{.Id}}' "$1"); echo "e2e-${id:7:12}"; }
app_tag=$(image_tag portcullis:e2e)
idp_tag=$(image_tag portcullis-test-idp:e2e)
docker tag portcullis:e2e "portcullis:$app_tag"
docker tag portcullis-test-idp:e2e "portcullis-test-idp:$idp_tag"
kind load docker-image --name "$name" "portcullis:$app_tag" "portcullis-test-idp:$idp_tag"

# A certificate authority for the test provider (Portcullis trusts it with
# --idp-ca-file), kept with the cluster so a rerun serves the same certificate; the
# application's certificate comes from cert-manager, as in the quickstart.
if ! openssl x509 -checkend 3600 -noout -in "$state/ca.crt" >/dev/null 2>&1; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=e2e-ca \
    -keyout "$state/ca.key" -out "$state/ca.crt" 2>/dev/null
  host=idp.example.com
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$host" \
    -keyout "$state/$host.key" -out "$state/$host.csr" 2>/dev/null
  openssl x509 -req -in "$state/$host.csr" -CA "$state/ca.crt" -CAkey "$state/ca.key" -CAcreateserial \
    -days 30 -extfile <(printf "subjectAltName=DNS:%s" "$host") -out "$state/$host.crt" 2>/dev/null
fi
node_ip=$(kubectl get nodes -o jsonpath='{.items[0].status.addresses[?(@.type=="InternalIP")].address}')

# create-or-update, so a rerun finds everything in place.
upsert() { kubectl "$@" --dry-run=client -o yaml | kubectl apply -f - >/dev/null; }

kubectl apply --server-side -f \
  "https://github.com/cert-manager/cert-manager/releases/download/$cert_manager_version/cert-manager.yaml" >/dev/null
kubectl -n cert-manager rollout status deploy/cert-manager-webhook --timeout 3m

upsert create namespace portcullis-system
upsert -n portcullis-system create secret generic idp-ca --from-file=ca.crt="$state/ca.crt"
# Gateway API: the CRDs before the controller starts (it watches them when they exist).
# Each Gateway gets an address of its own, as in tests/conformance.rs: a loopback range
# of the node's network, where the controller runs (hostNetwork) and the suite too
# (docker exec, below). One replica: the pods' ports are the node's. The controller
# runs as a non-root user, so the node lets any user bind the listeners' ports 80 and
# 443.
readonly gateway_range=127.77.0.0/24
gateway_args=()
if [[ "${CONFORMANCE:-}" == 1 ]]; then
  kubectl apply --server-side -f "$(tests/gateway/crds.sh)" >/dev/null
  docker exec "$name-control-plane" sysctl -qw net.ipv4.ip_unprivileged_port_start=0
  gateway_args=(--set gatewayClass.create=true --set "gatewayAddresses=$gateway_range"
    --set hostNetwork=true --set replicaCount=1)
fi
"$helm" upgrade --install portcullis charts/portcullis --namespace portcullis-system --wait --timeout 5m \
  "${gateway_args[@]}" \
  --set image.repository=portcullis --set "image.tag=$app_tag" --set image.pullPolicy=Never \
  --set service.type=NodePort --set service.httpNodePort=30080 --set service.httpsNodePort=30443 \
  --set "hostAliases[0].ip=$node_ip" --set "hostAliases[0].hostnames[0]=idp.example.com" \
  --set "extraVolumes[0].name=idp-ca" --set "extraVolumes[0].secret.secretName=idp-ca" \
  --set "extraVolumeMounts[0].name=idp-ca" --set "extraVolumeMounts[0].mountPath=/etc/idp-ca" \
  --set "extraArgs[0]=--idp-ca-file=/etc/idp-ca/ca.crt"

upsert create namespace idp
upsert -n idp create secret tls idp-tls --cert="$state/idp.example.com.crt" --key="$state/idp.example.com.key"
sed "s#portcullis-test-idp:e2e#portcullis-test-idp:$idp_tag#" tests/kind/cluster-extras.yaml |
  kubectl apply --server-side -f -
kubectl -n idp rollout status deploy/idp --timeout 3m

# The quickstart's files, in the order `kubectl apply -f deploy/examples/quickstart/`
# takes them, with the issuer, client id and secret its README says to put in.
quickstart() {
  local file
  for file in deploy/examples/quickstart/*.yaml; do
    sed -e "s#https://login.example.com#$issuer#" -e 's#clientId: my-app#clientId: portcullis-test#' \
      -e 's#client-secret: change-me#client-secret: test-secret#' "$file"
    echo ---
  done
}
quickstart | kubectl apply --server-side -f -
kubectl -n apps wait certificate/app-tls --for=condition=Ready --timeout 2m
kubectl -n apps rollout status deploy/echo --timeout 3m

# The quickstart applied twice changes nothing (GitOps sees no drift).
quickstart | kubectl diff --server-side -f - --field-manager kubectl >/dev/null ||
  fail "re-applying the quickstart would change it"

ready=
for _ in $(seq 60); do
  ready=$(kubectl -n apps get authrule sso -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')
  [[ "$ready" == True ]] && break
  sleep 2
done
[[ "$ready" == True ]] || fail "AuthRule apps/sso is not Ready"
kubectl -n portcullis-system exec deploy/portcullis -- portcullis diagnose --rule apps/sso --idp-ca-file /etc/idp-ca/ca.crt ||
  fail "portcullis diagnose in the cluster found a problem"

npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
out=$(CHROMIUM="$chromium" IGNORE_HTTPS_ERRORS=1 node tests/browser/login.mjs https://app.localhost/e2e ellen \
  "MAP app.localhost 127.0.0.1, MAP idp.example.com 127.0.0.1")
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

# The Gateway API conformance suite: its features are read from the GatewayClass
# status. It runs in the node's network, where the Gateways' addresses are, with the
# flags tests/conformance.rs gives it; the tests it lists as passing must pass.
if [[ "${CONFORMANCE:-}" == 1 ]]; then
  kubectl -n portcullis-system rollout restart deploy/portcullis >/dev/null
  kubectl -n portcullis-system rollout status deploy/portcullis --timeout 3m
  suite="$(tests/gateway/build-conformance.sh)"
  node="$name-control-plane"
  docker cp "$suite/conformance.test" "$node:/usr/local/bin/conformance.test"
  status=0
  docker exec -e KUBECONFIG=/etc/kubernetes/admin.conf "$node" conformance.test \
    -test.run '^TestConformance$' -test.v -test.timeout 60m \
    -gateway-class portcullis -allow-crds-mismatch -conformance-profiles GATEWAY-HTTP,GATEWAY-GRPC,GATEWAY-TLS \
    -cleanup-base-resources=false \
    -usable-address "${gateway_range%.0/24}.250" -unusable-address 198.51.100.7 \
    -organization portcullis-dev -project portcullis -version "$app_tag" \
    -url https://github.com/portcullis-dev/portcullis \
    -contact https://github.com/portcullis-dev/portcullis/issues \
    -report-output /tmp/conformance-report.yaml >"$state/conformance.log" || status=$?
  docker cp "$node:/tmp/conformance-report.yaml" "$state/conformance-report.yaml" || true
  echo "kind e2e: conformance suite exited with $status; its output is in $state/conformance.log"
  missing=()
  while read -r test; do
    [[ -z "$test" || "$test" == \#* ]] && continue
    grep -q -- "--- PASS: TestConformance/$test " "$state/conformance.log" || missing+=("$test")
  done <tests/gateway/conformance-passing.txt
  ((${#missing[@]} == 0)) || fail "conformance tests listed as passing did not pass: ${missing[*]}"
  echo "kind e2e: every listed conformance test passed; report in $state/conformance-report.yaml"
fi
