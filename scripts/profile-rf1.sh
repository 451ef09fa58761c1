#!/usr/bin/env bash
# Profiles the RF=1 large-batch produce row of scripts/bench.sh (issue 6): one release broker on loopback
# (embedded defaults, own data dir), `runnel bench produce --batch-size-bytes 1048576` of 1 KiB records,
# and `perf record` of the BROKER and of the BENCH CLIENT at the same time for PERF_S seconds, then each one's
# CPU use over the window and its self time grouped by component (scripts/perf-group.py).
# Bounded: perf runs PERF_S seconds, the bench at most BENCH_TIMEOUT_S; broker and data removed on exit.
# Output goes to OUT (default target/profile-rf1). Needs root or perf_event_paranoid <= 1.
# Usage: scripts/profile-rf1.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PERF_S=${PERF_S:-8}
WARMUP_S=2           # let the producer reach steady state before perf attaches
BENCH_TIMEOUT_S=120  # the bench never outlives this
LISTEN_WAIT_S=30     # the broker answers within this
RECORDS=${RECORDS:-3000000}
PERF=${PERF:-/usr/bin/perf}
OUT=${OUT:-target/profile-rf1}
BIN=target/release
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/runnel-profile-rf1.XXXXXX")
BROKER_PID="" BENCH_PID=""
cleanup() {
  for p in "$BENCH_PID" "$BROKER_PID"; do
    if [ -n "$p" ]; then kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; fi
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release -q --bins
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1]);s.close()')
"$BIN/runnel-broker" --listen "127.0.0.1:$PORT" --admin-listen 127.0.0.1:0 --data-dir "$WORK/data" \
  > "$OUT/broker.log" 2>&1 &
BROKER_PID=$!
deadline=$((SECONDS + LISTEN_WAIT_S))
until "$BIN/runnel" --brokers "127.0.0.1:$PORT" cluster info > /dev/null 2>&1; do
  [ "$SECONDS" -lt "$deadline" ] || { echo "the broker did not answer within ${LISTEN_WAIT_S} s" >&2; exit 1; }
  sleep 0.2
done
timeout "$BENCH_TIMEOUT_S" "$BIN/runnel" --brokers "127.0.0.1:$PORT" bench produce --topic p-rf1 \
  --records "$RECORDS" --batch-size-bytes 1048576 --acks all --output json --quiet > "$OUT/bench.json" &
BENCH_PID=$!
sleep "$WARMUP_S"
# The bench process is the `runnel` child of `timeout`.
CLIENT_PID=$(pgrep -P "$BENCH_PID" -x runnel || echo "$BENCH_PID")
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
b0=$(cpu_ticks "$BROKER_PID") c0=$(cpu_ticks "$CLIENT_PID") t0=$(date +%s.%N)
"$PERF" record -g -o "$OUT/broker.data" -p "$BROKER_PID" -- sleep "$PERF_S" 2> /dev/null &
P1=$!
"$PERF" record -g -o "$OUT/client.data" -p "$CLIENT_PID" -- sleep "$PERF_S" 2> /dev/null &
P2=$!
wait "$P1" "$P2"
b1=$(cpu_ticks "$BROKER_PID") c1=$(cpu_ticks "$CLIENT_PID") t1=$(date +%s.%N)
wait "$BENCH_PID" || true
BENCH_PID=""
HZ=$(getconf CLK_TCK)
python3 - "$b0" "$b1" "$c0" "$c1" "$t0" "$t1" "$HZ" << 'EOF'
import sys
b0, b1, c0, c1 = map(int, sys.argv[1:5]); t0, t1, hz = float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
wall = t1 - t0
print(f"window {wall:.1f} s: broker {(b1 - b0) / hz / wall:.2f} of a core, bench client {(c1 - c0) / hz / wall:.2f} of a core")
EOF
echo "bench: $(cat "$OUT/bench.json")"
for who in broker client; do
  echo "== $who: top self frames"
  "$PERF" report -i "$OUT/$who.data" --stdio --no-children -g none --percent-limit 1.5 2> /dev/null |
    grep -E '^ +[0-9]' | head -15
  "$PERF" report -i "$OUT/$who.data" --stdio --no-children -g none --sort dso,sym --percent-limit 0 \
    2> /dev/null > "$OUT/$who-flat.txt"
  echo "== $who: grouped"
  python3 scripts/perf-group.py "$OUT/$who-flat.txt" 3
done
