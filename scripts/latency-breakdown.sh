#!/usr/bin/env bash
# Where the time of one RF=3 produce goes: starts 3 release brokers on loopback, creates a 1-partition RF=3
# topic, runs `runnel bench produce` with one record in flight (no batching, like bench.sh's "one record in
# flight" row), and reads the brokers' own histograms (/metrics, scraped before and after, so only the bench
# counts): the leader's produce request time (decode → response queued), the followers' AppendEntries
# handling (raft_rpc: decode → append → fdatasync → response queued) and every node's fdatasync. Prints one
# markdown table of p50 / p99. Histogram quantiles are interpolated inside the buckets (50 µs, doubling), so
# they are coarse; the client's figures come from its own hdrhistogram.
# Build first: cargo build --release --bins. Removes its brokers and data on exit.
#
#   scripts/latency-breakdown.sh [RECORDS]        # default 3000
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/cluster-lib.sh
RECORDS=${1:-3000}
BIN=target/release
[ -x "$BIN/runnel-broker" ] || { echo "build first: cargo build --release --bins" >&2; exit 2; }
DIR=$(mktemp -d /tmp/runnel-latency.XXXXXX)
trap 'cluster_stop; rm -rf "$DIR"' EXIT
cluster_start "$BIN" "$DIR" 3
cluster_runnel topic create lat --partitions 1 --replication-factor 3 >/dev/null 2>&1 ||
  cluster_runnel topic describe lat >/dev/null
cluster_wait_healthy
leader=$(cluster_leader lat 0)
admin() { grep -o 'admin=[0-9.:]*' "$DIR/n$1/broker.log" | head -1 | cut -d= -f2; }
scrape() { for i in 1 2 3; do curl -fsS "http://$(admin "$i")/metrics" >"$DIR/$1-n$i.prom"; done; }
# Warm up (connections, first segment pages), then measure.
cluster_runnel bench produce --topic lat --records 200 --in-flight 1 --linger-ms 0 --quiet >/dev/null
scrape before
client=$(cluster_runnel --output json bench produce --topic lat --records "$RECORDS" --in-flight 1 --linger-ms 0 \
  --quiet | grep p50_ms | tail -1)
scrape after
python3 - "$DIR" "$leader" "$client" <<'PY'
import json, re, sys
d, leader, client = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
line = re.compile(r'^(\w+)_bucket\{(.*)\} (\S+)$')
def buckets(path, name, want):
    out = {}
    for l in open(path):
        m = line.match(l.strip())
        if not m or m.group(1) != name:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        if any(labels.get(k) != v for k, v in want.items()):
            continue
        le = float("inf") if labels["le"] == "+Inf" else float(labels["le"])
        out[le] = out.get(le, 0) + float(m.group(3))
    return out
def delta(node, name, want):
    a = buckets(f"{d}/after-n{node}.prom", name, want)
    b = buckets(f"{d}/before-n{node}.prom", name, want)
    return sorted((le, a[le] - b.get(le, 0)) for le in a)
def quantile(cum, q):
    total = cum[-1][1] if cum else 0
    if total <= 0:
        return None
    rank, lo, prev = q * total, 0.0, 0.0
    for le, c in cum:
        if c >= rank:
            if le == float("inf"):
                return lo * 1000
            return (lo + (le - lo) * (rank - prev) / max(c - prev, 1e-9)) * 1000
        lo, prev = le, c
    return None
def row(stage, cum):
    n = cum[-1][1] if cum else 0
    f = lambda v: "-" if v is None else f"{v:.2f}"
    print(f"| {stage} | {f(quantile(cum, .5))} | {f(quantile(cum, .99))} | {int(n)} |")
followers = [n for n in (1, 2, 3) if n != leader]
print(f"leader: node {leader}; {client['records']} records, one in flight")
print("| stage | p50 ms | p99 ms | samples |")
print("|---|---|---|---|")
print(f"| client: send → ack (hdrhistogram) | {client['p50_ms']:.2f} | {client['p99_ms']:.2f} | {client['records']} |")
row(f"leader node {leader}: produce request", delta(leader, "runnel_request_duration_seconds", {"api": "produce"}))
row(f"leader node {leader}: fdatasync", delta(leader, "runnel_fsync_duration_seconds", {}))
for f in followers:
    row(f"follower node {f}: AppendEntries (raft_rpc)", delta(f, "runnel_request_duration_seconds", {"api": "raft_rpc"}))
    row(f"follower node {f}: fdatasync", delta(f, "runnel_fsync_duration_seconds", {}))
PY
