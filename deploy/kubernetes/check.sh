#!/usr/bin/env bash
# Validates deploy/kubernetes/ offline (no cluster):
#   - built-in kinds against the Kubernetes API schemas (kubernetes-validate --strict);
#   - the PrometheusRule is up to date with docker/prometheus/alerts.yml;
#   - the CRDs (ServiceMonitor, PrometheusRule), which kubernetes-validate has no schema
#     for, field by field; the manifests against each other and against the relay
#     (check.py, with promtool and the relay binary).
# Needs kubernetes-validate, PyYAML and promtool (scripts/test-deps.sh installs them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

BIN=${SDK_RELAY_BIN:-${CARGO_TARGET_DIR:-target}/debug/sdk_relay}
[ -x "$BIN" ] || cargo build --locked -p sdk_relay --bin sdk_relay

dir=deploy/kubernetes
echo "==> kubernetes-validate --strict (built-in kinds)"
kubernetes-validate --strict --quiet \
  "$dir/namespace.yaml" "$dir/configmap.yaml" "$dir/secret.yaml" "$dir/services.yaml" \
  "$dir/statefulset.yaml" "$dir/poddisruptionbudget.yaml"
echo "==> the PrometheusRule is generated from docker/prometheus/alerts.yml"
python3 "$dir/generate-prometheusrule.py" --check
echo "==> CRDs structurally; manifests consistent with each other and the relay"
python3 "$dir/check.py" "$BIN"
