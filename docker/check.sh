#!/usr/bin/env bash
# Validates the deployment and alerting files of docker/ without a Docker engine:
#   - Prometheus configuration        (promtool check config)
#   - alert rules                     (promtool check rules)
#   - alert unit tests                (promtool test rules)
#   - Grafana dashboard: valid PromQL (promtool check rules on its queries)
#   - metric names used in alerts and dashboard exist in relay/src/metrics/names.rs
#   - compose file                    (docker-compose config -q)
# Needs the Debian packages `prometheus` (promtool) and `docker-compose`.
# Run from anywhere: bash docker/check.sh
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

prom_dir=docker/prometheus
dashboard=docker/grafana/sdk_relay-dashboard.json
names_rs=relay/src/metrics/names.rs
compose_file=docker/docker-compose.yml

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'docker/check.sh: %s\n' "$*" >&2; exit 1; }

type -P promtool >/dev/null \
  || die "missing promtool: install Debian's prometheus package (scripts/test-deps.sh does, as root)"
if type -P docker-compose >/dev/null; then
  compose=(docker-compose)
elif docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
else
  die "missing docker-compose: install Debian's docker-compose package (scripts/test-deps.sh does, as root)"
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

step "promtool check config $prom_dir/prometheus.yml"
promtool check config "$prom_dir/prometheus.yml"

step "promtool check rules $prom_dir/alerts.yml"
promtool check rules "$prom_dir/alerts.yml"

step "promtool test rules $prom_dir/alerts_test.yml"
promtool test rules "$prom_dir/alerts_test.yml"

step "dashboard queries are valid PromQL ($dashboard)"
# Each `"expr": "<JSON string>"` line becomes a recording rule; a JSON string literal is
# a valid YAML double-quoted scalar. Grafana's range variables become a fixed range.
{
  echo "groups:"
  echo "  - name: dashboard_queries"
  echo "    rules:"
  n=0
  while IFS= read -r line; do
    n=$((n + 1))
    expr="$(printf '%s\n' "$line" | sed -E 's/^[[:space:]]*"expr":[[:space:]]*//; s/,[[:space:]]*$//')"
    expr="${expr//\$__rate_interval/5m}"
    expr="${expr//\$__interval/1m}"
    expr="${expr//\$__range/1h}"
    printf '      - record: dashboard:query_%d\n        expr: %s\n' "$n" "$expr"
  done < <(grep -E '^[[:space:]]*"expr":' "$dashboard")
} > "$tmp/dashboard_rules.yml"
queries="$(grep -c 'record:' "$tmp/dashboard_rules.yml" || true)"
[ "$queries" -gt 0 ] || die "no \"expr\" found in $dashboard"
promtool check rules "$tmp/dashboard_rules.yml" >/dev/null \
  || { promtool check rules "$tmp/dashboard_rules.yml" || true; die "invalid PromQL in $dashboard"; }
echo "  SUCCESS: $queries dashboard queries parse"

step "metric names in alerts and dashboard exist in $names_rs"
[ -f "$names_rs" ] || die "$names_rs not found"
missing=0
checked=0
while IFS= read -r metric; do
  base="$(printf '%s\n' "$metric" | sed -E 's/_(bucket|sum|count)$//')"
  if grep -qE "\"($metric|$base)\"" "$names_rs"; then
    checked=$((checked + 1))
  else
    echo "  MISSING: $metric is not defined in $names_rs"
    missing=$((missing + 1))
  fi
done < <(grep -ohE 'sdk_relay_[a-z0-9_]+' "$prom_dir/alerts.yml" "$prom_dir/alerts_test.yml" "$dashboard" | sort -u)
[ "$missing" -eq 0 ] || die "$missing metric name(s) used in docker/ are not exported by the relay"
echo "  SUCCESS: $checked metric names found"

step "${compose[*]} -f $compose_file config -q"
# The compose file requires the mesh secret; any value validates the file.
SDK_RELAY_MESH_TOKEN="${SDK_RELAY_MESH_TOKEN:-check-only}" "${compose[@]}" -f "$compose_file" config -q
echo "  SUCCESS: $compose_file is valid"

printf '\nAll docker/ checks passed.\n'
