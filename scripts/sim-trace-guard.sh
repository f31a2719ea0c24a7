#!/usr/bin/env bash
# Refactoring guard for the deterministic simulator: record the traces of every scenario
# for seeds 1..N with one simulator binary, then check that another binary (the
# refactored relay) replays them byte for byte.
#
#   scripts/sim-trace-guard.sh record  DIR [--seeds N] [--relays R] [--sim BIN] [--jobs J] [--force]
#   scripts/sim-trace-guard.sh compare DIR [--seeds N] [--relays R] [--sim BIN] [--jobs J]
#
# record:  runs every scenario that `BIN list` lists (first column) for seeds 1..N
#          (default 20) on R relays (default 4) and writes DIR/<scenario>-<seed>.trace with
#          `BIN run --scenario S --relays R --seed K --trace FILE --quiet`. The verdict line
#          is part of the trace; a failing verdict (exit 1, expected for the negative
#          control `partition-permanent`) is recorded, not an error. Also writes
#          DIR/guard.manifest (parameters, binary checksum). Refuses a DIR that already
#          holds traces unless --force (which deletes them first).
# compare: runs the same set into a temporary directory and compares each trace with
#          DIR: one `same` / `DIFFERENT` / `MISSING` line per run, a summary
#          `N identical, M different, K missing`, the first differing lines of up to 3
#          differing traces; exit 1 if any trace differs or is missing. The new traces are
#          kept (path printed) when something differs.
#
# BIN defaults to target/release/sim of the repository (build it with
# `cargo build --release -p sim`). Runs go J at a time (default 2); output order is
# deterministic (scenario as listed, then seed). Exit status: 0 ok, 1 differences,
# 2 usage error, missing binary or a run that produced no verdict.

set -u -o pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROG="scripts/sim-trace-guard.sh"

usage() {
    grep '^#   scripts/' "${BASH_SOURCE[0]}" | sed 's/^#   /usage: /' >&2
    exit 2
}

die() {
    echo "$PROG: $*" >&2
    exit 2
}

(( $# >= 2 )) || usage
MODE="$1"
DIR="$2"
shift 2
case "$MODE" in
    record | compare) ;;
    *) usage ;;
esac

SEEDS=20
RELAYS=4
SIM="$REPO_ROOT/target/release/sim"
JOBS=2
FORCE=0
while (( $# )); do
    case "$1" in
        --seeds) SEEDS="${2:-}"; shift 2 || usage ;;
        --relays) RELAYS="${2:-}"; shift 2 || usage ;;
        --sim) SIM="${2:-}"; shift 2 || usage ;;
        --jobs) JOBS="${2:-}"; shift 2 || usage ;;
        --force) FORCE=1; shift ;;
        -h | --help) usage ;;
        *) die "unknown option '$1'" ;;
    esac
done
[[ "$SEEDS" =~ ^[1-9][0-9]*$ ]] || die "--seeds wants a positive integer, not '$SEEDS'"
[[ "$RELAYS" =~ ^[1-9][0-9]*$ ]] || die "--relays wants a positive integer, not '$RELAYS'"
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || die "--jobs wants a positive integer, not '$JOBS'"

# The simulator: as given (relative to the current directory), else relative to the repo.
if [[ ! -e "$SIM" && "$SIM" != /* && -e "$REPO_ROOT/$SIM" ]]; then
    SIM="$REPO_ROOT/$SIM"
fi
if [[ ! -x "$SIM" || -d "$SIM" ]]; then
    echo "$PROG: no simulator binary at $SIM" >&2
    echo "  build it with: cargo build --release -p sim   (then it is target/release/sim)" >&2
    echo "  or pass another one with --sim BIN" >&2
    exit 2
fi
SIM="$(cd "$(dirname "$SIM")" && pwd)/$(basename "$SIM")"

mapfile -t SCENARIOS < <("$SIM" list | awk 'NF { print $1 }')
(( ${#SCENARIOS[@]} )) || die "'$SIM list' listed no scenario"

START_NS=$(date +%s%N)
WORK="$(mktemp -d "${TMPDIR:-/tmp}/sim-trace-guard.XXXXXX")"
KEEP_OUT=0
cleanup() {
    local pid
    # Our own runs only: each background subshell and the simulator it started.
    for pid in $(jobs -pr); do
        pkill -TERM -P "$pid" 2>/dev/null
        kill -TERM "$pid" 2>/dev/null
    done
    wait 2>/dev/null
    if (( KEEP_OUT )); then
        rm -rf "$WORK/status" "$WORK/log"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'echo "$PROG: interrupted" >&2; exit 130' INT TERM
mkdir -p "$WORK/status" "$WORK/log"

if [[ "$MODE" == record ]]; then
    mkdir -p "$DIR" || die "cannot create $DIR"
    shopt -s nullglob
    existing=("$DIR"/*.trace)
    shopt -u nullglob
    if (( ${#existing[@]} )); then
        (( FORCE )) || die "$DIR already holds ${#existing[@]} trace(s); pass --force to replace them"
        rm -f "${existing[@]}" "$DIR/guard.manifest"
    fi
    OUT="$DIR"
else
    [[ -d "$DIR" ]] || die "no baseline directory $DIR (record one first)"
    OUT="$WORK/traces"
    mkdir -p "$OUT"
    if [[ -f "$DIR/guard.manifest" ]]; then
        rec_seeds=$(awk -F': ' '$1 == "seeds" { print $2 }' "$DIR/guard.manifest")
        rec_relays=$(awk -F': ' '$1 == "relays" { print $2 }' "$DIR/guard.manifest")
        [[ -n "$rec_relays" && "$rec_relays" != "$RELAYS" ]] &&
            echo "warning: $DIR was recorded with --relays $rec_relays, comparing with --relays $RELAYS" >&2
        [[ -n "$rec_seeds" && "$rec_seeds" != "$SEEDS" ]] &&
            echo "warning: $DIR was recorded with --seeds $rec_seeds, comparing with --seeds $SEEDS" >&2
    fi
fi

# The runs, in output order.
RUNS=()
for scenario in "${SCENARIOS[@]}"; do
    for (( seed = 1; seed <= SEEDS; seed++ )); do
        RUNS+=("$scenario $seed")
    done
done

echo "$MODE: ${#SCENARIOS[@]} scenarios x seeds 1..$SEEDS x $RELAYS relays = ${#RUNS[@]} runs, $JOBS at a time"
echo "  simulator: $SIM"
if [[ "$MODE" == record ]]; then
    echo "  traces: $DIR"
else
    echo "  baseline: $DIR"
    echo "  new traces: $OUT"
fi

# One run; its status file (exit code) appears atomically when it is over.
run_one() {
    local idx="$1" scenario="$2" seed="$3" name="$2-$3" rc
    "$SIM" run --scenario "$scenario" --relays "$RELAYS" --seed "$seed" \
        --trace "$OUT/$name.trace" --quiet >"$WORK/log/$name" 2>&1 </dev/null
    rc=$?
    echo "$rc" >"$WORK/status/$idx.tmp" && mv "$WORK/status/$idx.tmp" "$WORK/status/$idx"
}

declare -A PASS FAIL
IDENTICAL=0 DIFFERENT=0 MISSING=0 ERRORS=0
DIFFERING=()
NEXT=0

# Prints, in order, every finished run not printed yet.
report_done() {
    local scenario seed name rc trace verdict status errlog
    while (( NEXT < ${#RUNS[@]} )) && [[ -f "$WORK/status/$NEXT" ]]; do
        read -r scenario seed <<<"${RUNS[$NEXT]}"
        name="$scenario-$seed"
        rc=$(<"$WORK/status/$NEXT")
        trace="$OUT/$name.trace"
        verdict="" errlog=""
        [[ -f "$trace" ]] && verdict=$(grep '^verdict: ' "$trace" | tail -n 1)
        # exit 0 goes with `verdict: pass`, exit 1 with `verdict: fail: ...`; anything else
        # (a panic, a usage error, no trace) is an error, not a verdict.
        if [[ -z "$verdict" ]] || { [[ "$rc" != 0 && "$rc" != 1 ]]; } ||
            { [[ "$rc" == 0 && "$verdict" != "verdict: pass" ]]; } ||
            { [[ "$rc" == 1 && "$verdict" == "verdict: pass" ]]; }; then
            ERRORS=$((ERRORS + 1))
            status="ERROR (exit $rc, ${verdict:-no verdict in the trace})"
            errlog=$(sed 's/^/      | /' "$WORK/log/$name" | head -n 10)
        else
            if [[ "$verdict" == "verdict: pass" ]]; then
                PASS[$scenario]=$(( ${PASS[$scenario]:-0} + 1 ))
            else
                FAIL[$scenario]=$(( ${FAIL[$scenario]:-0} + 1 ))
            fi
            status="${verdict#verdict: }"
            (( ${#status} > 90 )) && status="${status:0:87}..."
        fi
        if [[ "$MODE" == compare ]]; then
            if [[ ! -f "$DIR/$name.trace" ]]; then
                MISSING=$((MISSING + 1))
                status="MISSING (no baseline trace $DIR/$name.trace)"
            elif [[ -f "$trace" ]] && cmp -s "$DIR/$name.trace" "$trace"; then
                IDENTICAL=$((IDENTICAL + 1))
                status="same       ($status)"
            else
                DIFFERENT=$((DIFFERENT + 1))
                DIFFERING+=("$name")
                status="DIFFERENT  (${status})"
            fi
        fi
        printf '  %-28s %s\n' "$name" "$status"
        [[ -n "$errlog" ]] && printf '%s\n' "$errlog"
        NEXT=$((NEXT + 1))
    done
}

for (( i = 0; i < ${#RUNS[@]}; i++ )); do
    while (( $(jobs -pr | wc -l) >= JOBS )); do
        wait -n
        report_done
    done
    read -r scenario seed <<<"${RUNS[$i]}"
    run_one "$i" "$scenario" "$seed" &
done
wait
report_done

if [[ "$MODE" == compare ]]; then
    # Baseline traces of listed seeds whose scenario the binary no longer lists.
    shopt -s nullglob
    for f in "$DIR"/*.trace; do
        base="$(basename "$f" .trace)"
        seed="${base##*-}"
        scenario="${base%-*}"
        [[ "$seed" =~ ^[0-9]+$ ]] && (( seed >= 1 && seed <= SEEDS )) || continue
        listed=0
        for s in "${SCENARIOS[@]}"; do [[ "$s" == "$scenario" ]] && listed=1 && break; done
        if (( ! listed )); then
            MISSING=$((MISSING + 1))
            printf '  %-28s %s\n' "$base" "MISSING (in the baseline, scenario not listed by this binary)"
        fi
    done
    shopt -u nullglob
fi

echo
echo "verdicts per scenario:"
for scenario in "${SCENARIOS[@]}"; do
    printf '  %-22s %3d pass, %3d fail\n' "$scenario" "${PASS[$scenario]:-0}" "${FAIL[$scenario]:-0}"
done

status=0
if (( ERRORS )); then
    echo "$PROG: $ERRORS run(s) ended in error: no verdict, or an exit status that does not match it (see above)" >&2
    status=2
fi

if [[ "$MODE" == record ]]; then
    {
        echo "mode: record"
        echo "seeds: $SEEDS"
        echo "relays: $RELAYS"
        echo "scenarios: ${SCENARIOS[*]}"
        echo "sim: $SIM"
        echo "sim sha256: $(sha256sum "$SIM" | awk '{ print $1 }')"
        echo "recorded: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "head of the repository holding this script: $(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    } >"$DIR/guard.manifest"
    echo
    shopt -s nullglob
    written=("$DIR"/*.trace)
    shopt -u nullglob
    echo "recorded ${#written[@]} traces in $DIR (${#RUNS[@]} runs, $ERRORS in error)"
else

    echo
    echo "$IDENTICAL identical, $DIFFERENT different, $MISSING missing"
    shown=0
    for name in "${DIFFERING[@]}"; do
        (( shown < 3 )) || break
        shown=$((shown + 1))
        echo
        echo "== first differences in $name.trace (baseline vs new):"
        if [[ -f "$OUT/$name.trace" ]]; then
            diff -U 2 --label "baseline/$name.trace" --label "new/$name.trace" \
                "$DIR/$name.trace" "$OUT/$name.trace" | head -n 24
        else
            echo "  (no new trace was written)"
        fi
    done
    if (( DIFFERENT + MISSING )); then
        (( DIFFERENT > 3 )) && echo && echo "($((DIFFERENT - 3)) more differing trace(s) not shown)"
        KEEP_OUT=1
        echo
        echo "new traces kept in $OUT"
        (( status )) || status=1
    fi
fi

elapsed_ms=$(( ($(date +%s%N) - START_NS) / 1000000 ))
printf 'elapsed: %d.%03d s\n' $((elapsed_ms / 1000)) $((elapsed_ms % 1000))
exit "$status"
