#!/usr/bin/env bash
# Prints the directory of the Gateway API standard-channel CRDs, from the
# sigs.k8s.io/gateway-api Go module at the version the Rust bindings were generated
# from (downloaded once into Go's module cache).
set -euo pipefail
VERSION=v1.6.3
dir="$(go mod download -json "sigs.k8s.io/gateway-api@${VERSION}" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
# PORTCULLIS_GATEWAY_CHANNEL=experimental: the experimental channel's CRDs instead
# (HTTPRoute `retry` is only there).
echo "$dir/config/crd/${PORTCULLIS_GATEWAY_CHANNEL:-standard}"
