#!/usr/bin/env bash
# Renders the Helm chart into plain manifests for `kubectl apply` (deploy/portcullis.yaml):
# the namespace, the CRD and every chart object, with the chart's defaults.
# Usage: scripts/render-deploy.sh [OUT]   (default deploy/portcullis.yaml; a test checks it is current)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-deploy/portcullis.yaml}
helm="$(tests/apiserver/build.sh)/helm"
{
  echo "# Rendered from charts/portcullis by scripts/render-deploy.sh; do not edit."
  echo "apiVersion: v1"
  echo "kind: Namespace"
  echo "metadata: {name: portcullis-system}"
  "$helm" template portcullis charts/portcullis --namespace portcullis-system --include-crds --kube-version 1.33.0
} >"$out"
