#!/usr/bin/env bash
# Runs schemathesis against a live relay with docs/openapi.yaml: every generated
# request must get a documented, conforming answer and never a 5xx. The relay runs on
# free loopback ports with basic auth on (so `ignored_auth` is checked too) and a rate
# limit high enough for the run; it is stopped by its PID whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${SDK_RELAY_BIN:-target/debug/sdk_relay}
[ -x "$BIN" ] || cargo build --locked -p sdk_relay --bin sdk_relay
WORK=$(mktemp -d)
RELAY_PID=
# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
  if [ -n "$RELAY_PID" ]; then kill "$RELAY_PID" 2>/dev/null || true; wait "$RELAY_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
WS_PORT=$(free_port)
HTTP_PORT=$(free_port)
cat >"$WORK/relay.toml" <<TOML
relay_id = "schemathesis"
data_dir = "$WORK/data"
[limits]
http_requests_per_minute_max = 1000000
[auth]
http_basic_user = "schemathesis"
http_basic_password = "schemathesis-password"
TOML

"$BIN" --config "$WORK/relay.toml" --ws-addr "127.0.0.1:$WS_PORT" --http-addr "127.0.0.1:$HTTP_PORT" \
  >"$WORK/relay.log" 2>&1 &
RELAY_PID=$!
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$HTTP_PORT/health" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$HTTP_PORT/health" >/dev/null || { cat "$WORK/relay.log"; exit 1; }

status=0
# `POST /admin/drain` would drain the relay under test (every later request 503, then
# it exits): its contract is checked by the integration tests instead.
timeout 600 schemathesis run "${SCHEMATHESIS_SCHEMA:-docs/openapi.yaml}" \
  --url "http://127.0.0.1:$HTTP_PORT" \
  --auth schemathesis:schemathesis-password \
  --checks all \
  --exclude-path /admin/drain \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-25}" \
  --seed 1 \
  --generation-database none \
  --request-timeout 10 \
  --no-color || status=$?
if [ "$status" -ne 0 ]; then
  echo "schemathesis failed ($status); relay log tail:" >&2
  tail -n 50 "$WORK/relay.log" >&2
fi
exit "$status"
