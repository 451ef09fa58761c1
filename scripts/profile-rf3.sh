#!/usr/bin/env bash
# Profiles the LEADER broker of a 3-broker loopback cluster (release binaries, which carry debuginfo) with
# `perf record -g` for PERF_S seconds, and prints `perf report --stdio --no-children` plus the self time
# grouped by component (scripts/perf-group.py). Two modes:
#   produce (default): topic p-rf3 (1 partition, RF=3) under
#       runnel bench produce --topic p-rf3 --records RECORDS --acks all --record-size 1024 --replication-factor 3
#       perf attaches WARMUP_S after the bench starts; the bench is stopped once perf is done.
#       ROLE=follower profiles a follower instead of the leader; RECORD_SIZE and BATCH_SIZE_BYTES change the
#       records (default 1024 B) and batches (default 256 KiB).
#   idle: topic p-idle with 1000 partitions, RF=3, nothing produced; perf records the broker with node id 1.
# Bounded: perf runs PERF_S seconds, the bench at most BENCH_TIMEOUT_S; brokers and data are removed on exit.
# Output (perf.data, report, grouped summary) goes to OUT (default target/profile-MODE). Needs root or
# perf_event_paranoid <= 1. Usage: scripts/profile-rf3.sh [produce|idle]
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-produce}
PERF_S=${PERF_S:-10}
WARMUP_S=2            # let the producer reach steady state before perf attaches
BENCH_TIMEOUT_S=120   # the bench never outlives this, whatever RECORDS is
RECORDS=${RECORDS:-2000000}
IDLE_PARTITIONS=1000
PERF=${PERF:-/usr/bin/perf}
CALL_GRAPH=${CALL_GRAPH:--g} # frame pointers; CALL_GRAPH="--call-graph dwarf" for callers (large perf.data)
OUT=${OUT:-target/profile-$MODE}
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/runnel-profile.XXXXXX")
BENCH_PID=""
# shellcheck source=scripts/cluster-lib.sh
source scripts/cluster-lib.sh
cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ] && [ -d "$WORK/cluster" ]; then # keep the broker logs of a failed run
    for d in "$WORK"/cluster/n*; do [ -f "$d/broker.log" ] && cp "$d/broker.log" "$OUT/$(basename "$d").log"; done
  fi
  if [ -n "$BENCH_PID" ]; then kill "$BENCH_PID" 2>/dev/null || true; wait "$BENCH_PID" 2>/dev/null || true; fi
  cluster_stop
  rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release -q --bins
BIN=target/release
cluster_start "$BIN" "$WORK/cluster" 3
case "$MODE" in
  produce) TOPIC=p-rf3 PARTS=1 ;;
  idle) TOPIC=p-idle PARTS=$IDLE_PARTITIONS ;;
  *) echo "unknown mode $MODE (produce|idle)" >&2; exit 2 ;;
esac
cluster_runnel topic create "$TOPIC" --partitions "$PARTS" --replication-factor 3 >/dev/null
cluster_wait_healthy

if [ "$MODE" = produce ]; then
  NODE=$(cluster_leader "$TOPIC" 0)
  # ROLE=follower profiles the next node instead (a replica of the single partition: all 3 nodes are).
  if [ "${ROLE:-leader}" = follower ]; then NODE=$((NODE % 3 + 1)); fi
  timeout "$BENCH_TIMEOUT_S" "$BIN/runnel" --brokers "$CLUSTER_BROKERS" bench produce --topic "$TOPIC" \
    --records "$RECORDS" --acks all --record-size "${RECORD_SIZE:-1024}" --replication-factor 3 --output json \
    --batch-size-bytes "${BATCH_SIZE_BYTES:-262144}" \
    > "$OUT/bench.json" 2> "$OUT/bench-progress.log" &
  BENCH_PID=$!
  sleep "$WARMUP_S"
  kill -0 "$BENCH_PID" || { echo "the bench ended before perf attached; raise RECORDS" >&2; exit 1; }
else
  NODE=1
fi
PID=${CLUSTER_PIDS[$((NODE - 1))]}
echo "perf record $CALL_GRAPH on node $NODE (pid $PID) for ${PERF_S}s..." >&2
# shellcheck disable=SC2086
"$PERF" record $CALL_GRAPH -o "$OUT/perf.data" -p "$PID" -- sleep "$PERF_S" 2> "$OUT/perf-record.log"
if [ -n "$BENCH_PID" ]; then
  if kill -0 "$BENCH_PID" 2>/dev/null; then
    echo "bench still running after the profile window; stopping it (the profile covers steady state)" >&2
    kill "$BENCH_PID" 2>/dev/null || true
  fi
  wait "$BENCH_PID" 2>/dev/null || true
  BENCH_PID=""
  echo "producer progress at the end of the window: $(tr '\r' '\n' < "$OUT/bench-progress.log" | grep -v '^$' | tail -1)"
fi
"$PERF" report -i "$OUT/perf.data" --stdio --no-children 2>/dev/null > "$OUT/report.txt"
"$PERF" report -i "$OUT/perf.data" --stdio --no-children -g none --sort dso,sym --percent-limit 0 2>/dev/null \
  > "$OUT/flat.txt"
echo "=== perf report --stdio --no-children | head -60"
head -60 "$OUT/report.txt"
echo "=== self time by component"
python3 scripts/perf-group.py "$OUT/flat.txt"
