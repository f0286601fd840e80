#!/usr/bin/env bash
# Builds the Gateway API conformance suite (the test binary of the
# sigs.k8s.io/gateway-api/conformance module) and its echo backend (echo-basic) at the
# version the CRDs and the Rust bindings come from. Prints the output directory; a
# second run with the same version does nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
VERSION=v1.6.3
out=".cache/gateway-conformance-${VERSION}"
if [[ -x "$out/conformance.test" && -x "$out/echo-basic" ]]; then
  echo "$out"
  exit 0
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The conformance module replaces sigs.k8s.io/gateway-api with its parent directory;
# as a dependency that replace does not apply, so the wrapper names the release.
cat >"$work/go.mod" <<MOD
module portcullis.test/conformance
go 1.25.0
require sigs.k8s.io/gateway-api/conformance ${VERSION}
replace sigs.k8s.io/gateway-api => sigs.k8s.io/gateway-api ${VERSION}
MOD
(
  cd "$work"
  export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
  # -t: the suite is a test binary, so its test-only dependencies are needed too.
  go get -t "sigs.k8s.io/gateway-api/conformance@${VERSION}" "sigs.k8s.io/gateway-api/conformance/echo-basic@${VERSION}" >&2
  go test -c -o "$out/conformance.test.partial" sigs.k8s.io/gateway-api/conformance >&2
  go build -o "$out/echo-basic.partial" sigs.k8s.io/gateway-api/conformance/echo-basic >&2
)
mv "$out/conformance.test.partial" "$out/conformance.test"
mv "$out/echo-basic.partial" "$out/echo-basic"
echo "$out"
