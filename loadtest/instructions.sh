#!/usr/bin/env bash
# User-space instructions per ping round trip, counted by valgrind's callgrind: for the
# relay, for the baseline server, and for a second relay build if OTHER_BIN names one.
#
#   loadtest/instructions.sh
#   OTHER_BIN=/path/to/older/sdk_relay loadtest/instructions.sh
#
# Round-trip rates on a shared 2-core machine swing by ±20 % between identical runs (see
# loadtest/README.md); instruction counts move by under 1 %, so a change to the relay's hot
# path shows here when a throughput comparison cannot see it. Kernel work (TCP over
# loopback, most of a round trip's CPU) is not counted: this measures the relay's own code.
#
# Each server runs under callgrind (about 50 times slower) with 2 worker threads; a warm-up
# run, then the counters are zeroed, CONNECTIONS connections ping for SECS seconds, and the
# counters are dumped: instructions / round trips. Connection set-up and tokio's idle
# polling are in the count; at ~100,000 round trips they add a few instructions each.
# Environment: CONNECTIONS (20), SECS (6), RELAY_BIN, OTHER_BIN, NO_BUILD (skip cargo
# build), OUT (callgrind files and reports; temporary by default). Needs valgrind
# (`apt-get install valgrind`).
set -euo pipefail

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

CONNECTIONS=${CONNECTIONS:-20}
SECS=${SECS:-6}
OUT=${OUT:-$(mktemp -d)}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
RELAY_BIN=${RELAY_BIN:-$BIN/sdk_relay}

command -v valgrind >/dev/null && command -v callgrind_control >/dev/null || {
    echo "instructions.sh: valgrind is needed (apt-get install valgrind)" >&2
    exit 2
}
if [ -z "${NO_BUILD:-}" ]; then
    cargo build --release --locked -p sdk_relay -p loadtest -p bench --bins \
        --manifest-path "$ROOT/Cargo.toml" >&2
fi
mkdir -p "$OUT"

server=
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT

# count NAME KIND BINARY: prints "NAME <instructions per round trip> <round trips>".
count() {
    local name=$1 kind=$2 binary=$3 port dir extra=()
    port=$(free_port)
    dir="$OUT/$name"
    rm -rf "$dir" && mkdir -p "$dir"
    if [ "$kind" = baseline ]; then
        valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" \
            "$binary" --addr "127.0.0.1:$port" --mode echo --threads 2 2>"$dir/valgrind.log" &
        extra=(--baseline)
    else
        # No workload here may be rate limited.
        printf '[limits]\nws_messages_per_second_max = 1000000\nws_messages_burst_max = 1000000\n' \
            >"$dir/relay.toml"
        TOKIO_WORKER_THREADS=2 valgrind --tool=callgrind \
            --callgrind-out-file="$dir/callgrind.out" \
            "$binary" --config "$dir/relay.toml" --ws-addr "127.0.0.1:$port" \
            --http-addr "127.0.0.1:$(free_port)" --data-dir "$dir/data" --log-level warn \
            2>"$dir/valgrind.log" &
    fi
    server=$!
    # Under valgrind the server takes seconds to start listening.
    for _ in $(seq 100); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" \
            2>/dev/null && break
        sleep 0.3
    done
    local run=("$BIN/loadtest" --json run "${extra[@]}" --mode ping --size 64
        --connections "$CONNECTIONS" --ws-url "ws://127.0.0.1:$port/")
    "${run[@]}" --duration-secs 2 >/dev/null
    callgrind_control --zero "$server" >/dev/null
    "${run[@]}" --duration-secs "$SECS" >"$dir/report.json"
    callgrind_control --dump "$server" >/dev/null
    kill "$server" && wait "$server" 2>/dev/null || true
    server=
    python3 - "$name" "$dir" <<'PY'
import glob, json, os, sys
name, directory = sys.argv[1], sys.argv[2]
dumps = [p for p in glob.glob(f"{directory}/callgrind.out.*")]
dump = max(dumps, key=os.path.getmtime)
instructions = next(int(line.split()[1]) for line in open(dump) if line.startswith("summary:"))
round_trips = json.load(open(f"{directory}/report.json"))["messages"]
print(f"{name} {instructions / round_trips:.0f} {round_trips}")
PY
}

{
    count relay relay "$RELAY_BIN"
    count baseline baseline "$BIN/baseline"
    if [ -n "${OTHER_BIN:-}" ]; then count other relay "$OTHER_BIN"; fi
} | tee "$OUT/instructions.txt" | python3 -c '
import sys
rows = [line.split() for line in sys.stdin]
base = next(int(r[1]) for r in rows if r[0] == "baseline")
print("%-10s %28s %20s %11s" % ("server", "instructions per round trip", "round trips counted", "/ baseline"))
for name, per, n in rows:
    print(f"{name:10} {int(per):>28,} {int(n):>20,} {int(per) / base:>11.2f}")
'
echo "reports: $OUT" >&2
