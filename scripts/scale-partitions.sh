#!/usr/bin/env bash
# Acked RF=3 produce throughput as the partition count grows: starts 3 release brokers on loopback and, for
# each partition count (default 1 10 100), runs `runnel bench produce` (1 KiB records, acks=all, 1 producer,
# default batching) for DURATION_S seconds against a fresh RF=3 topic, then prints one markdown table.
# Build first: cargo build --release --bins. Removes its brokers and data on exit.
#
#   scripts/scale-partitions.sh [DURATION_S] [COUNTS...]      # defaults: 15 s, 1 10 100
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/cluster-lib.sh
DURATION_S=${1:-15}
shift || true
COUNTS=("$@")
[ "${#COUNTS[@]}" -gt 0 ] || COUNTS=(1 10 100)
BIN=target/release
[ -x "$BIN/runnel-broker" ] || { echo "build first: cargo build --release --bins" >&2; exit 2; }
DIR=$(mktemp -d /tmp/runnel-scale.XXXXXX)
trap 'cluster_stop; rm -rf "$DIR"' EXIT
cluster_start "$BIN" "$DIR" 3
rows=()
for n in "${COUNTS[@]}"; do
  cluster_runnel topic create "scale-$n" --partitions "$n" --replication-factor 3 >/dev/null
  cluster_wait_healthy
  json=$(cluster_runnel --output json bench produce --topic "scale-$n" --duration-s "$DURATION_S" --quiet | grep "mb_per_s" | tail -1)
  [ -n "$json" ] || { echo "bench on $n partitions printed no summary" >&2; exit 1; }
  rows+=("$(python3 -c '
import json, sys
d = json.loads(sys.argv[2])
print("| %s | %.1f | %s | %.2f | %.2f |" % (sys.argv[1], d["mb_per_s"], format(round(d["records_per_s"]), ","),
                                          d["p50_ms"], d["p99_ms"]))' "$n" "$json")")
done
echo "| partitions (RF=3) | MB/s | records/s | p50 ms | p99 ms |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
