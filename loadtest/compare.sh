#!/usr/bin/env bash
# Runs one workload against the baseline server (hyper + fastwebsockets alone) and against
# sdk_relay, alternating, RUNS times each, and prints the medians and the relay/baseline
# ratios (`loadtest summarize`): throughput, p50/p99/p99.9/max latency, the server's CPU
# per message and per delivery (each server's pid is passed as --relay-pid, its CPU read
# from /proc over the measured window), memory per connection; then one table of ratios.
#
#   loadtest/compare.sh [RUN FLAGS...]                 a `loadtest run` workload, e.g.
#       loadtest/compare.sh --mode ping --connections 100 --size 64
#   loadtest/compare.sh connections [CONNECTIONS FLAGS...]   idle memory per connection, e.g.
#       loadtest/compare.sh connections --connections 10000
#
# Servers are started here on loopback (release builds) and stopped at the end. For
# `connections` each run gets freshly started servers: an allocator keeps freed memory,
# so a second ramp on the same process would measure nothing.
# Environment: RUNS (3), BASELINE_ADDR, RELAY_WS_ADDR, RELAY_HTTP_ADDR (free loopback
# ports by default), RELAY_CONNECTIONS_MAX (19000: the relay's
# ws_connections_max, above any workload here), RELAY_MESSAGES_PER_SECOND_MAX (1000000:
# the relay's ws_messages_per_second_max and ws_messages_burst_max, so that no workload
# here is rate limited), SERVER_THREADS (2), NO_BUILD (skip
# cargo build), OUT (directory for the JSON reports and logs; temporary by default),
# RELAY_BIN (the relay binary; default the release build here: point it at another build
# to measure that one against the same baseline).
# The open-file limit is raised to the hard limit (10,000 connections need 10,000
# descriptors in the server and as many in the load generator).
set -euo pipefail

# A free loopback port (another run of this script, or a test, may hold any fixed one).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

RUNS=${RUNS:-3}
BASELINE_ADDR=${BASELINE_ADDR:-127.0.0.1:$(free_port)}
RELAY_WS_ADDR=${RELAY_WS_ADDR:-127.0.0.1:$(free_port)}
RELAY_HTTP_ADDR=${RELAY_HTTP_ADDR:-127.0.0.1:$(free_port)}
RELAY_CONNECTIONS_MAX=${RELAY_CONNECTIONS_MAX:-19000}
RELAY_MESSAGES_PER_SECOND_MAX=${RELAY_MESSAGES_PER_SECOND_MAX:-1000000}
SERVER_THREADS=${SERVER_THREADS:-2}
OUT=${OUT:-$(mktemp -d)}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
RELAY_BIN=${RELAY_BIN:-$BIN/sdk_relay}
ulimit -n "$(ulimit -Hn)"

kind=run
if [[ ${1:-} == connections ]]; then
    kind=connections
    shift
fi
mode=echo
for arg in "$@"; do
    [[ $arg == fanout ]] && mode=broadcast
done

if [[ -z ${NO_BUILD:-} ]]; then
    cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" \
        -p loadtest -p bench -p sdk_relay
fi
mkdir -p "$OUT"
# The relay's per-connection message rate (100/s, bursts of 200 by default) would refuse
# most of a ping or fan-out workload, which sends as fast as answers come (hundreds to
# thousands of messages a second per connection): measure the relay's work, not its
# refusals. RELAY_MESSAGES_PER_SECOND_MAX overrides (used as the burst too).
cat >"$OUT/relay.toml" <<TOML
[limits]
ws_connections_max = $RELAY_CONNECTIONS_MAX
# Load comes from few loopback addresses (up to 25,000 connections each): no per-address cap.
ws_connections_per_address_max = $RELAY_CONNECTIONS_MAX
http_connections_per_address_max = 100
ws_messages_per_second_max = $RELAY_MESSAGES_PER_SECOND_MAX
ws_messages_burst_max = $RELAY_MESSAGES_PER_SECOND_MAX
TOML

pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap cleanup EXIT

# Waits (bounded) until something listens on $1.
await_listening() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on $1" >&2
    return 1
}

start_baseline() {
    "$BIN/baseline" --addr "$BASELINE_ADDR" --mode "$mode" --threads "$SERVER_THREADS" \
        2>>"$OUT/baseline.log" &
    baseline_pid=$!
    pids+=("$baseline_pid")
    await_listening "$BASELINE_ADDR"
}

start_relay() {
    rm -rf "$OUT/relay-data"
    TOKIO_WORKER_THREADS=$SERVER_THREADS "$RELAY_BIN" --config "$OUT/relay.toml" \
        --ws-addr "$RELAY_WS_ADDR" --http-addr "$RELAY_HTTP_ADDR" \
        --data-dir "$OUT/relay-data" --log-level warn 2>>"$OUT/relay.log" &
    relay_pid=$!
    pids+=("$relay_pid")
    await_listening "$RELAY_WS_ADDR"
}

stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

if [[ $kind == run ]]; then
    start_baseline
    start_relay
fi
for run in $(seq "$RUNS"); do
    echo "run $run/$RUNS: baseline" >&2
    if [[ $kind == run ]]; then
        "$BIN/loadtest" --json run --baseline --ws-url "ws://$BASELINE_ADDR/" \
            --relay-pid "$baseline_pid" "$@" >>"$OUT/baseline.jsonl"
    else
        start_baseline
        "$BIN/loadtest" --json connections --baseline --ws-url "ws://$BASELINE_ADDR/" \
            --relay-pid "$baseline_pid" "$@" >>"$OUT/baseline.jsonl"
        stop "$baseline_pid"
    fi
    echo "run $run/$RUNS: relay" >&2
    if [[ $kind == run ]]; then
        "$BIN/loadtest" --json run --ws-url "ws://$RELAY_WS_ADDR/" --relay-pid "$relay_pid" \
            "$@" >>"$OUT/relay.jsonl"
    else
        start_relay
        "$BIN/loadtest" --json connections --ws-url "ws://$RELAY_WS_ADDR/" \
            --relay-pid "$relay_pid" "$@" >>"$OUT/relay.jsonl"
        stop "$relay_pid"
    fi
done

echo "workload: $kind $*"
"$BIN/loadtest" summarize "$OUT/baseline.jsonl" "$OUT/relay.jsonl"
echo "reports: $OUT"
