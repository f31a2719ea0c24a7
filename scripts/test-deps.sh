#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain: the third-party WebSocket
# clients (Python `websockets`, Node `ws`), schemathesis (pinned) for the HTTP API's
# OpenAPI conformance run, curl for the specification's cURL examples, and Prometheus'
# promtool + docker-compose for the deployment checks. Idempotent: skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import websockets' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check -r relay/tests/clients/requirements.txt
fi
SCHEMATHESIS_VERSION=4.32.5
if [ "$(schemathesis --version 2>/dev/null)" != "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
  python3 -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
if ! command -v curl >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl >/dev/null
fi
if [ ! -d relay/tests/clients/node_modules/ws ]; then
  npm ci --prefix relay/tests/clients --silent --no-audit --no-fund
fi
if ! command -v promtool >/dev/null || ! command -v docker-compose >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus docker-compose >/dev/null
  else
    echo "note: promtool/docker-compose missing and not root; deployment checks will be skipped" >&2
  fi
fi
