#!/usr/bin/env bash
# Mesh mode against NATS mode: for each relay count, starts that many relays on loopback
# (release builds) with the built-in mesh, then with the NATS JetStream backbone (a
# three-server nats-server cluster, relays spread over its servers, 3 replicas), runs
# `loadtest mesh` (publish on the first relay, subscribers on every relay; each relay's
# pid passed as --relay-pid, so the report has its CPU from /proc over the run). Prints
# one line per run (latency p50, p99, p99.9 and max one hop away from the origin, CPU per
# delivered notification, missing, duplicates), with RUNS > 1 the medians over the runs,
# and writes the reports (and each relay's Prometheus metrics after the run) to OUT.
#
#   loadtest/backbones.sh                      RELAYS="3 8" RATE=2000 MESSAGES=10000 SUBS=10
#
# Environment: RELAYS ("3 8"), MODES ("mesh nats"), RATE (2000/s), MESSAGES (10000), SUBS (10 subscribers per
# relay), SIZE (256 B), RUNS (1; runs of each mode and relay count, alternating modes),
# NO_BUILD (skip cargo build), OUT (reports; temporary by default), RELAY_BIN (the relay
# binary; default the release build here), RELAY_WORKERS (worker threads per relay,
# `TOKIO_WORKER_THREADS`; default 1: the relays and the load generator share this machine's
# cores, and one thread each spends less CPU per delivery; `RELAY_WORKERS=` leaves tokio's
# default, one per core).
# Needs nats-server on PATH (scripts/test-deps.sh installs it). Every process it starts
# is killed on exit, failure included.
set -euo pipefail

RELAYS=${RELAYS:-"3 8"}
MODES=${MODES:-"mesh nats"}
RATE=${RATE:-2000}
MESSAGES=${MESSAGES:-10000}
SUBS=${SUBS:-10}
SIZE=${SIZE:-256}
RUNS=${RUNS:-1}
RELAY_WORKERS=${RELAY_WORKERS-1}
OUT=${OUT:-$(mktemp -d)}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
RELAY_BIN=${RELAY_BIN:-$BIN/sdk_relay}

if [[ -z ${NO_BUILD:-} ]]; then
    cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" -p loadtest -p sdk_relay
fi
mkdir -p "$OUT"
# Each relay holds SUBS wallet connections and its links; the load generator all of them.
ulimit -n "$(ulimit -Hn)"

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
    local mode=$1 n=$2 run=$3
    local dir="$OUT/$mode-$n-run$run"
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
            # Every subscriber, the publisher and the peer links come from 127.0.0.1.
            echo "ws_connections_per_address_max = $((SUBS + 100))"
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
        if [[ -n $RELAY_WORKERS ]]; then
            TOKIO_WORKER_THREADS=$RELAY_WORKERS "$RELAY_BIN" --config "$dir/r$i.toml" 2>"$dir/r$i.log" &
        else
            "$RELAY_BIN" --config "$dir/r$i.toml" 2>"$dir/r$i.log" &
        fi
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
    local nats_before=0
    for pid in "${nats_pids[@]}"; do nats_before=$((nats_before + $(cpu_ticks "$pid"))); done
    local args=()
    for addr in "${ws[@]}"; do args+=(--relay "ws://$addr/"); done
    for pid in "${relay_pids[@]}"; do args+=(--relay-pid "$pid"); done
    "$BIN/loadtest" --json mesh "${args[@]}" --subscribers-per-relay "$SUBS" \
        --messages "$MESSAGES" --rate "$RATE" --size "$SIZE" --drain-secs 3 >"$dir/report.json"
    for ((i = 0; i < n; i++)); do
        curl -s --max-time 5 "http://${http[$i]}/metrics/prometheus" >"$dir/metrics-r$i.txt" || true
    done
    local nats_after=0
    for pid in "${nats_pids[@]}"; do nats_after=$((nats_after + $(cpu_ticks "$pid"))); done
    echo "$((nats_after - nats_before))" >"$dir/nats_cpu_ticks"
    python3 "$SUMMARY" line "$dir" "$mode" "$n"
    cleanup
}

# One line per run, and medians over runs, from the reports (loadtest mesh --json).
SUMMARY="$OUT/summary.py"
cat >"$SUMMARY" <<'PY'
import glob, json, statistics, sys

def figures(d):
    report = json.load(open(f"{d}/report.json"))
    relays = report["relays"]
    hop = [r for r in relays if not r["origin"]] or relays
    worst = lambda key: max(r["latency"][key] for r in hop) / 1000
    cpu = [r["cpu"]["cpu_secs"] for r in relays]
    return {
        "published": report["published"], "messages": report["messages"],
        "rate": report["rate_per_sec"],
        "p50": statistics.median(r["latency"]["p50_us"] for r in hop) / 1000,
        "p99": worst("p99_us"), "p99_9": worst("p99_9_us"), "max": worst("max_us"),
        "cpu_mean": statistics.mean(cpu), "cpu_origin": cpu[0], "cpu_other": max(cpu[1:] or [0]),
        "cpu_us_per_delivery": report["cpu_total"]["cpu_us_per_delivery"],
        "missing": sum(r["missing"] for r in relays),
        "duplicates": sum(r["duplicates"] for r in relays),
        "nats_cpu": int(open(f"{d}/nats_cpu_ticks").read()) / 100,
        "client_cpu": (report.get("client_cpu") or {}).get("cpu_secs", 0.0),
        "window": report["messages"] / report["rate_per_sec"] + 3.2,
    }

def line(f, mode, n, label):
    text = (f"{mode:4} {n} relays{label}: published {f['published']:.0f}/{f['messages']:.0f} at {f['rate']:.0f}/s; "
            f"one hop away: p50 {f['p50']:.2f} ms (median over relays), p99 {f['p99']:.2f}, "
            f"p99.9 {f['p99_9']:.2f}, max {f['max']:.2f} ms (worst relay); "
            f"CPU s/relay mean {f['cpu_mean']:.2f} (origin {f['cpu_origin']:.2f}, max other {f['cpu_other']:.2f}), "
            f"{f['cpu_us_per_delivery']:.2f} CPU µs per delivery (all relays); "
            f"missing {f['missing']:.0f}, duplicates {f['duplicates']:.0f}; "
            f"load generator {f['client_cpu']:.1f} CPU s in {f['window']:.1f} s")
    if mode == "nats":
        text += f"; nats-servers CPU s total {f['nats_cpu']:.2f}"
    print(text, flush=True)

if sys.argv[1] == "line":
    line(figures(sys.argv[2]), sys.argv[3], sys.argv[4], "")
else:
    out, mode, n = sys.argv[2:5]
    runs = [figures(d) for d in sorted(glob.glob(f"{out}/{mode}-{n}-run*"))]
    if len(runs) > 1:
        medians = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        line(medians, mode, n, f", median of {len(runs)} runs")
PY

for n in $RELAYS; do
    for run in $(seq "$RUNS"); do
        for mode in $MODES; do
            run_one "$mode" "$n" "$run"
        done
    done
    for mode in $MODES; do
        python3 "$SUMMARY" medians "$OUT" "$mode" "$n"
    done
done
echo "reports in $OUT"
