#!/usr/bin/env bash
# The whole test suite, as CI runs it: dependencies, Rust tests, deployment checks.
# Every suite runs: a missing prerequisite stops the run (test-deps.sh names it).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/test-deps.sh
cargo test --workspace --locked
# The criterion benches, compiled and run briefly: --quick on the test build (no second,
# optimized build of every dependency), so they keep building and running; figures are
# printed, never asserted (the speed of the machine decides nothing). About 30 s of CPU.
cargo bench -p bench --profile dev --locked -- --quick --noplot
# The negative controls of the simulator's checks: a relay broken on purpose, one thing
# at a time (feature `mutations`, never in a production build), each named by the verdict.
cargo test -p sim --features mutations --locked --test mutations
# The HTTP API against its OpenAPI description, on a live relay (bounded run).
bash scripts/schemathesis.sh
# Alert rules and their tests, dashboard queries, metric names, the compose file.
bash docker/check.sh
# The Kubernetes manifests: schema-valid, and the PrometheusRule generated from the
# alert rules above is up to date.
bash deploy/kubernetes/check.sh
# The operators' dashboard in headless chromium against a three-relay mesh (bounded:
# about a minute); screenshots in target/browser-artifacts/.
cargo build --locked -p sdk_relay --bin sdk_relay
python3 scripts/browser-test.py "${CARGO_TARGET_DIR:-target}/debug/sdk_relay" \
  --artifacts "${CARGO_TARGET_DIR:-target}/browser-artifacts"
