#!/usr/bin/env bash
# The whole test suite, as CI runs it: dependencies, Rust tests, deployment checks.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/test-deps.sh
cargo test --workspace --locked
# The HTTP API against its OpenAPI description, on a live relay (bounded run).
bash scripts/schemathesis.sh
if command -v promtool >/dev/null && command -v docker-compose >/dev/null; then
  bash docker/check.sh
fi
