#!/usr/bin/env bash
# Idle cost of many replicated partitions: starts 3 release brokers on loopback, creates one topic of
# PARTITIONS partitions with replication factor 3, waits until every partition has a leader and the cluster
# is quiet, then samples each broker's CPU time (utime + stime from /proc) over SAMPLE_S seconds and prints
# one line: partitions, heartbeat, % of one core per broker. Extra broker flags via CLUSTER_BROKER_ARGS
# (e.g. CLUSTER_BROKER_ARGS="--raft-heartbeat-ms 500"). Build first: cargo build --release --bins.
#
#   scripts/idle-cpu.sh [PARTITIONS] [SAMPLE_S]        # defaults: 1000 partitions, 30 s
#
# Cleans up its brokers and data (each partition replica preallocates a 1 MiB segment: ~3 GB for 1,000).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/cluster-lib.sh
PARTITIONS=${1:-1000}
SAMPLE_S=${2:-30}
SETTLE_S=10 # after the last leader is elected: let the preferred-replica campaigns and catch-ups finish
BIN=target/release
[ -x "$BIN/runnel-broker" ] || { echo "build first: cargo build --release --bins" >&2; exit 2; }
DIR=$(mktemp -d /tmp/runnel-idle.XXXXXX)
trap 'cluster_stop; rm -rf "$DIR"' EXIT
CLUSTER_HEALTHY_WAIT_S=300
cluster_start "$BIN" "$DIR" 3
# A create that timed out on the client side may still have been applied (then the retry says it exists).
cluster_runnel topic create idle --partitions "$PARTITIONS" --replication-factor 3 >/dev/null 2>&1 ||
  cluster_runnel topic describe idle >/dev/null
cluster_wait_healthy
sleep "$SETTLE_S" # a settling pause before the sample window, not a wait for a condition
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
declare -a before=()
for p in "${CLUSTER_PIDS[@]}"; do before+=("$(ticks "$p")"); done
sleep "$SAMPLE_S" # the sample window
line="idle: partitions=$PARTITIONS rf=3 ${CLUSTER_BROKER_ARGS:-(default flags)} cpu_per_broker="
i=0
for p in "${CLUSTER_PIDS[@]}"; do
  after=$(ticks "$p")
  line+=$(python3 -c "print(f'{($after - ${before[$i]}) / $hz / $SAMPLE_S * 100:.0f}%', end='')")
  i=$((i + 1))
  [ "$i" -lt "${#CLUSTER_PIDS[@]}" ] && line+=","
done
echo "$line"
