#!/usr/bin/env bash
# The performance figures of the relay against the baseline server, in one go: each
# workload below through compare.sh (alternating baseline and relay, RUNS each), then one
# table of relay/baseline ratios over all of them (`loadtest summarize`), then the mesh
# (3 relays, 2000 notifications/s, 100 subscribers per relay) through backbones.sh.
#
#   loadtest/suite.sh                    all of it (about 10 minutes on 2 cores)
#   WORKLOADS="ping100 idle10k" loadtest/suite.sh
#
# Environment: WORKLOADS (all of: ping100 ping1000 fanout16 large idle10k mesh), RUNS (3),
# OUT (reports; temporary by default), RELAY_BIN, NO_BUILD: as in compare.sh.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
OUT=${OUT:-$(mktemp -d)}
WORKLOADS=${WORKLOADS:-"ping100 ping1000 fanout16 large idle10k mesh"}
export RUNS=${RUNS:-3}

if [[ -z ${NO_BUILD:-} ]]; then
    cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" \
        -p loadtest -p bench -p sdk_relay
fi
export NO_BUILD=1
mkdir -p "$OUT"

# name -> compare.sh arguments
declare -A ARGS=(
    [ping100]="--mode ping --connections 100 --size 64 --duration-secs 5"
    [ping1000]="--mode ping --connections 1000 --size 64 --duration-secs 5"
    [fanout16]="--mode fanout --connections 1001 --size 128 --in-flight 16 --duration-secs 5"
    [large]="--mode ping --connections 10 --size 1048576 --duration-secs 5"
    [idle10k]="connections --connections 10000 --hold-secs 2"
)

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for name in $WORKLOADS; do
    [[ $name == mesh ]] && continue
    [[ -n ${ARGS[$name]:-} ]] || { echo "unknown workload $name" >&2; exit 2; }
    echo "== $name: compare.sh ${ARGS[$name]}" >&2
    # shellcheck disable=SC2086 # the arguments are words
    OUT="$OUT/$name" "$ROOT/loadtest/compare.sh" ${ARGS[$name]} >"$OUT/$name.txt"
done
reports=()
for name in $WORKLOADS; do
    [[ $name == mesh ]] || reports+=("$OUT/$name/baseline.jsonl" "$OUT/$name/relay.jsonl")
done
if ((${#reports[@]})); then
    "$BIN/loadtest" summarize "${reports[@]}" | tee "$OUT/summary.txt"
fi
if [[ " $WORKLOADS " == *" mesh "* ]]; then
    echo "== mesh: 3 relays, 2000/s, 100 subscribers per relay, $RUNS runs" >&2
    OUT="$OUT/mesh" RELAYS=3 MODES=mesh RATE=2000 MESSAGES=10000 SUBS=100 \
        "$ROOT/loadtest/backbones.sh" | tee "$OUT/mesh.txt"
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "reports: $OUT"
