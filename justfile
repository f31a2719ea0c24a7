# Everyday commands; the README names the same ones.

# Run a relay on the embedded defaults (WebSocket :8090, HTTP :8091).
run *ARGS:
    cargo run --release -p sdk_relay -- {{ARGS}}

# Install test prerequisites and run every test (what CI runs).
test:
    bash scripts/test.sh

# Format check and clippy with warnings denied.
lint:
    cargo fmt --all -- --check
    python3 scripts/check-module-cycles.py --quiet
    cargo clippy --workspace --all-targets -- -D warnings

fmt:
    cargo fmt --all

# Validate a configuration file and print the effective configuration.
check-config FILE="":
    cargo run -q -p sdk_relay -- check-config {{ if FILE != "" { "--config " + FILE } else { "" } }}

# promtool and docker-compose checks of docker/.
docker-check:
    bash docker/check.sh

# The Kubernetes manifests, offline: schemas, the generated PrometheusRule, consistency.
k8s-check:
    bash deploy/kubernetes/check.sh

# The dashboard in headless chromium against three relays; screenshots in target/browser-artifacts/.
browser-test:
    cargo build --locked -p sdk_relay --bin sdk_relay
    python3 scripts/browser-test.py target/debug/sdk_relay

# The HTTP API against docs/openapi.yaml with schemathesis, on a live relay.
schemathesis:
    bash scripts/schemathesis.sh

# Deterministic mesh simulation: every scenario (except the negative control) for seeds 1..N.
sim-soak N="20":
    cargo run --release -p sim -- soak --seeds {{N}}

# Refactoring guard: record the simulator's traces (seeds 1..20) before a change, compare after.
sim-traces-record DIR:
    cargo build --release -p sim
    bash scripts/sim-trace-guard.sh record {{DIR}}

sim-traces-compare DIR:
    cargo build --release -p sim
    bash scripts/sim-trace-guard.sh compare {{DIR}}
