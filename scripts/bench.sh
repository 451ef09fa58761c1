#!/usr/bin/env bash
# The standard benchmark matrix (issue "Benchmark tool and performance targets"), run against release builds,
# with the physical baselines measured in the same run on the same machine and file system:
#   * disk: the same batch bytes written with pwrite + a looping fdatasync (runnel-storage-bench "raw group");
#   * network: loopback TCP bandwidth between two processes (scripts/loopback-bandwidth.py).
# Prints one markdown table (median of RUNS runs per row) with the ratios. Bounded: every run has a fixed
# record count or duration; the broker and its data dir are removed on exit. Usage: scripts/bench.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/runnel-bench.XXXXXX")
BROKER_PID=""
cleanup() {
  if [ -n "$BROKER_PID" ]; then kill -9 "$BROKER_PID" 2>/dev/null || true; wait "$BROKER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "building release binaries..." >&2
cargo build --release -q --bins
BIN=target/release
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1]);s.close()'; }
median() { python3 -c 'import sys,statistics;v=[float(x) for x in sys.argv[1:]];print(f"{statistics.median(v):.2f}")' "$@"; }
field() { python3 -c 'import sys,json;print(json.loads(sys.stdin.readline())[sys.argv[1]])' "$1"; }

echo "baseline: fdatasync'd sequential writes (256 MiB per batch size, same file system)..." >&2
"$BIN/runnel-storage-bench" --dir "$WORK/disk" --total-mib 256 --batch-kib 256,1024 --sync-each-mib 8 --repeat 1 \
  > "$WORK/disk.txt" 2>&1
raw_at() { # MB/s of the raw group-commit write at batch size $1 KiB
  awk -v kib="$1" '/^batch /{cur=$2} /raw write\+fdatasync\(group\)/{ if (cur==kib) print $3 }' "$WORK/disk.txt" | head -1
}
RAW_256=$(raw_at 256); RAW_1024=$(raw_at 1024)
echo "baseline: loopback TCP bandwidth..." >&2
LOOPBACK=$(python3 scripts/loopback-bandwidth.py 2000)

PORT=$(free_port)
"$BIN/runnel-broker" --listen "127.0.0.1:$PORT" --admin-listen 127.0.0.1:0 --data-dir "$WORK/data" \
  > "$WORK/broker.log" 2>&1 &
BROKER_PID=$!
R="$BIN/runnel --brokers 127.0.0.1:$PORT"
for _ in $(seq 1 100); do $R cluster health >/dev/null 2>&1 && break; sleep 0.1; done
$R cluster health >/dev/null || { tail -5 "$WORK/broker.log"; echo "broker did not start" >&2; exit 1; }

# run NAME FIELD ARGS...: RUNS runs of `runnel bench ARGS --output json --quiet`, prints the median of FIELD.
run() {
  local name=$1 fieldname=$2; shift 2
  local vals=()
  for i in $(seq 1 "$RUNS"); do
    echo "  $name ($i/$RUNS)" >&2
    vals+=("$($R bench "$@" --output json --quiet | field "$fieldname")")
  done
  median "${vals[@]}"
}

echo "matrix (RF=1; median of $RUNS)..." >&2
P_LARGE=$(run "1 producer, 1 MiB batches" mb_per_s produce --topic b-large --records 300000 --batch-size-bytes 1048576)
P_DEFAULT=$(run "1 producer, default batches" mb_per_s produce --topic b-default --records 300000)
CONSUME=$(run "consume 1 partition" mb_per_s consume --topic b-large --records 300000)
SMALL=$(run "100 B records" records_per_s produce --topic b-small --record-size 100 --records 1000000 --batch-size-bytes 1048576)
FIXED_P99=$(run "fixed 10k records/s p99" p99_ms produce --topic b-fixed --rate 10000 --duration-s 10 --linger-ms 1)
FIXED_P999=$(run "fixed 10k records/s p999" p999_ms produce --topic b-fixed --rate 10000 --duration-s 10 --linger-ms 1)
E2E_P99=$(run "e2e 10k records/s p99" p99_ms e2e --topic b-e2e --rate 10000 --duration-s 10 --linger-ms 1)
ONE_P50=$(run "one record in flight p50" p50_ms produce --topic b-one --records 3000 --in-flight 1 --linger-ms 0)
MULTI=$(run "6 partitions, 4 producers" mb_per_s produce --topic b-multi --partitions 6 --producers 4 --records 300000)

ratio() { python3 -c 'import sys;a,b=float(sys.argv[1]),float(sys.argv[2]);print(f"{a/b:.2f}" if b>0 else "n/a")' "$1" "$2"; }
cat <<TABLE

Runnel benchmark — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, 1 KiB records unless stated, acks=all, median of $RUNS runs.
Baselines measured in this run: fdatasync'd sequential write ${RAW_256} MB/s at 256 KiB batches and ${RAW_1024} MB/s at 1 MiB; loopback TCP ${LOOPBACK} MB/s.

| run | measured | target | baseline ratio |
|---|---|---|---|
| RF=1, 1 producer, 1 MiB batches | ${P_LARGE} MB/s | ≥ 250 MB/s, ≥ 0.7 × raw | $(ratio "$P_LARGE" "$RAW_1024") × raw fdatasync @1 MiB |
| RF=1, 1 producer, default 256 KiB batches | ${P_DEFAULT} MB/s | — | $(ratio "$P_DEFAULT" "$RAW_256") × raw fdatasync @256 KiB |
| RF=1, fixed 10,000 records/s | p99 ${FIXED_P99} ms, p999 ${FIXED_P999} ms | p99 ≤ 5 ms, p999 ≤ 20 ms (RF=3) | — |
| RF=1, e2e at 10,000 records/s | p99 ${E2E_P99} ms | ≤ 10 ms (RF=3) | — |
| RF=1, one record in flight | p50 ${ONE_P50} ms | ≤ 0.5 ms (RF=3) | — |
| consume, 1 partition, page cache | ${CONSUME} MB/s | ≥ 1000 MB/s | $(ratio "$CONSUME" "$LOOPBACK") × loopback TCP |
| RF=1, 100 B records | ${SMALL} records/s | ≥ 1,000,000 records/s (RF=3) | — |
| RF=1, 6 partitions, 4 producers | ${MULTI} MB/s | ≥ single-producer figure | $(ratio "$MULTI" "$P_DEFAULT") × 1 producer |
| RF=3 rows | not run | — | replication is not implemented yet |
TABLE
