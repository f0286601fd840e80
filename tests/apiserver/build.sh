#!/usr/bin/env bash
# Builds the control plane the integration tests run against (etcd, kube-apiserver) and
# helm, from their Go modules at pinned versions. Binaries land in .cache/kube/<versions>/
# and a second run with the same versions does nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."

KUBERNETES=v1.33.13
ETCD=v3.5.35
HELM=v3.19.0

# "stamped": kube-apiserver reports its real version (Helm's kubeVersion check reads it).
out=".cache/kube/k8s-${KUBERNETES}-stamped-etcd-${ETCD}-helm-${HELM}"
if [[ -x "$out/kube-apiserver" && -x "$out/etcd" && -x "$out/helm" ]]; then
  echo "$out"
  exit 0
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

# Each binary is built inside a throwaway wrapper module: `go install pkg@version` refuses
# modules whose go.mod has replace directives (etcd and kubernetes point theirs at
# sibling directories). For kubernetes those siblings are required as v0.0.0, so the
# wrapper replaces each with its published twin.
build() { # module version package output [replace-lines] [ldflags]
  local module=$1 version=$2 package=$3 output=$4 replaces=${5:-} ldflags=${6:-}
  [[ -x "$output" ]] && return 0
  local work
  work="$(mktemp -d)"
  {
    echo "module portcullis.test/build"
    echo "go 1.24"
    echo "require $module $version"
    [[ -n "$replaces" ]] && printf 'replace (\n%s\n)\n' "$replaces"
  } >"$work/go.mod"
  (
    cd "$work"
    go mod download "$module" >&2
    go get "$package@$version" >&2
    go build -trimpath -ldflags="-s $ldflags" -o "$output.partial" "$package" >&2
  )
  mv "$output.partial" "$output"
  rm -rf "$work"
}

build go.etcd.io/etcd/server/v3 "$ETCD" go.etcd.io/etcd/server/v3 "$out/etcd"
build helm.sh/helm/v3 "$HELM" helm.sh/helm/v3/cmd/helm "$out/helm"

kube_gomod="$(go mod download -json "k8s.io/kubernetes@${KUBERNETES}" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
staging="v0${KUBERNETES#v1}"
kube_replaces="$(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/k8s.io/.*#\t\1 => \1 '"$staging"'#p' "$kube_gomod")"
# Built outside the kubernetes repository, the binary would say v0.0.0-master.
minor="${KUBERNETES#v1.}"
minor="${minor%%.*}"
version_flags="-X k8s.io/component-base/version.gitVersion=$KUBERNETES -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
build k8s.io/kubernetes "$KUBERNETES" k8s.io/kubernetes/cmd/kube-apiserver "$out/kube-apiserver" "$kube_replaces" "$version_flags"

echo "$out"
