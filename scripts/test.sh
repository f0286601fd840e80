#!/usr/bin/env bash
# The test suite, from a fresh machine: installs what it needs, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Toolchain components the checks use.
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# The real OpenID provider the integration tests log in against, from its lock file.
npm ci --prefix tests/idp --no-audit --no-fund --loglevel=error

cargo fmt --all -- --check
cargo test --locked --all-targets
