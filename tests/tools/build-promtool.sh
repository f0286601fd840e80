#!/usr/bin/env bash
# Builds promtool from the Prometheus Go module at a pinned version into .cache/tools
# (once; later runs do nothing) and prints the directory that holds it.
# Usage: tests/tools/build-promtool.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
version=v0.316.0
dir=$PWD/.cache/tools/promtool-$version
if [ ! -x "$dir/promtool" ]; then
  mkdir -p "$dir"
  GOBIN="$dir" GOFLAGS=-mod=mod go install "github.com/prometheus/prometheus/cmd/promtool@$version" >&2
fi
echo "$dir"
