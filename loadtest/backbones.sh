#!/usr/bin/env bash
# Mesh mode against NATS mode: for each relay count, starts that many relays on loopback
# (release builds) with the built-in mesh, then with the NATS JetStream backbone (a
# three-server nats-server cluster, relays spread over its servers, 3 replicas), runs
# `loadtest mesh` (publish on the first relay, subscribers on every relay), and reads each
# relay's CPU time from /proc before and after. Prints one line per run and writes the
# reports (and each relay's Prometheus metrics after the run) to OUT.
#
#   loadtest/backbones.sh                      RELAYS="3 8" RATE=2000 MESSAGES=10000 SUBS=10
#
# Environment: RELAYS ("3 8"), MODES ("mesh nats"), RATE (2000/s), MESSAGES (10000), SUBS (10 subscribers per
# relay), SIZE (256 B), NO_BUILD (skip cargo build), OUT (reports; temporary by default).
# Needs nats-server on PATH (scripts/test-deps.sh installs it). Every process it starts
# is killed on exit, failure included.
set -euo pipefail

RELAYS=${RELAYS:-"3 8"}
MODES=${MODES:-"mesh nats"}
RATE=${RATE:-2000}
MESSAGES=${MESSAGES:-10000}
SUBS=${SUBS:-10}
SIZE=${SIZE:-256}
OUT=${OUT:-$(mktemp -d)}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release

if [[ -z ${NO_BUILD:-} ]]; then
    cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" -p loadtest -p sdk_relay
fi
mkdir -p "$OUT"

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# User + system CPU seconds of a process (fields 14 and 15 of /proc/<pid>/stat).
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }

start_nats() {
    local dir=$1
    nats_urls=()
    local ports=() cports=()
    for i in 1 2 3; do ports+=("$(free_port)"); cports+=("$(free_port)"); done
    local routes="nats-route://127.0.0.1:${cports[0]}, nats-route://127.0.0.1:${cports[1]}, nats-route://127.0.0.1:${cports[2]}"
    for i in 0 1 2; do
        cat >"$dir/n$i.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:${ports[$i]}
jetstream { store_dir: "$dir/n$i" }
cluster { name: bench, listen: 127.0.0.1:${cports[$i]}, routes: [$routes] }
CONF
        nats-server -c "$dir/n$i.conf" 2>"$dir/n$i.log" &
        pids+=($!)
        nats_pids+=($!)
        nats_urls+=("nats://127.0.0.1:${ports[$i]}")
    done
}

run_one() {
    local mode=$1 n=$2
    local dir="$OUT/$mode-$n"
    rm -rf "$dir"; mkdir -p "$dir"
    nats_pids=()
    [[ $mode == nats ]] && start_nats "$dir"
    local ws=() http=() relay_pids=()
    for ((i = 0; i < n; i++)); do ws+=("127.0.0.1:$(free_port)"); http+=("127.0.0.1:$(free_port)"); done
    for ((i = 0; i < n; i++)); do
        {
            echo "relay_id = \"r$i\""
            echo "ws_url = \"${ws[$i]}\""
            echo "http_url = \"${http[$i]}\""
            echo "data_dir = \"$dir/data$i\""
            echo "[limits]"
            echo "ws_messages_per_second_max = 1000000"
            echo "ws_messages_burst_max = 1000000"
            if [[ $mode == mesh ]]; then
                # Each relay seeds with the next; gossip completes the mesh.
                echo "[mesh]"
                echo "peers = [\"${ws[$(((i + 1) % n))]}\"]"
            else
                echo "[backbone]"
                echo "kind = \"nats\""
                echo "urls = [\"${nats_urls[$((i % 3))]}\"]"
                echo "replicas = 3"
            fi
        } >"$dir/r$i.toml"
        "$BIN/sdk_relay" --config "$dir/r$i.toml" 2>"$dir/r$i.log" &
        pids+=($!)
        relay_pids+=($!)
    done
    # Every relay lists every relay (mesh: linked; NATS: records in the bucket).
    local deadline=$((SECONDS + 90))
    for ((i = 0; i < n; i++)); do
        until [[ $(curl -s --max-time 2 "http://${http[$i]}/relays" | grep -o '"relay_id"' | wc -l) -ge $n ]]; do
            ((SECONDS < deadline)) || { echo "r$i never saw $n relays ($mode)" >&2; exit 1; }
            sleep 0.5
        done
    done
    sleep 2
    local before=() nats_before=0
    for pid in "${relay_pids[@]}"; do before+=("$(cpu_ticks "$pid")"); done
    for pid in "${nats_pids[@]}"; do nats_before=$((nats_before + $(cpu_ticks "$pid"))); done
    local args=()
    for addr in "${ws[@]}"; do args+=(--relay "ws://$addr/"); done
    "$BIN/loadtest" --json mesh "${args[@]}" --subscribers-per-relay "$SUBS" \
        --messages "$MESSAGES" --rate "$RATE" --size "$SIZE" --drain-secs 3 >"$dir/report.json"
    for ((i = 0; i < n; i++)); do
        curl -s --max-time 5 "http://${http[$i]}/metrics/prometheus" >"$dir/metrics-r$i.txt" || true
    done
    local cpu=() nats_after=0
    for ((i = 0; i < n; i++)); do cpu+=($(($(cpu_ticks "${relay_pids[$i]}") - before[i]))); done
    for pid in "${nats_pids[@]}"; do nats_after=$((nats_after + $(cpu_ticks "$pid"))); done
    printf '%s\n' "${cpu[@]}" >"$dir/cpu_ticks"
    python3 - "$dir/report.json" "$dir/cpu_ticks" "$mode" "$n" "$((nats_after - nats_before))" <<'PY'
import json, statistics, sys
report = json.load(open(sys.argv[1]))
ticks = [int(t) for t in open(sys.argv[2]).read().split()]
mode, n, nats_ticks = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
relays = report["relays"]
missing = sum(r["missing"] for r in relays)
dups = sum(r["duplicates"] for r in relays)
p50 = statistics.median(r["latency"]["p50_us"] for r in relays) / 1000
p99 = max(r["latency"]["p99_us"] for r in relays) / 1000
cpu = [t / 100 for t in ticks]
line = (f"{mode:4} {n} relays: published {report['published']}/{report['messages']} at {report['rate_per_sec']}/s; "
        f"p50 {p50:.2f} ms (median over relays), p99 {p99:.2f} ms (worst relay); "
        f"CPU s/relay mean {statistics.mean(cpu):.2f} (origin {cpu[0]:.2f}, max other {max(cpu[1:]):.2f}); "
        f"missing {missing}, duplicates {dups}")
if mode == "nats":
    line += f"; nats-servers CPU s total {nats_ticks / 100:.2f}"
print(line, flush=True)
PY
    cleanup
}

for n in $RELAYS; do
    for mode in $MODES; do
        run_one "$mode" "$n"
    done
done
echo "reports in $OUT"
