#!/usr/bin/env bash
# Chaos scenario: consumers crash during a rebalance. runnel-verify's `run` hosts its group consumers inside its
# own process (they cannot be killed one by one), so this scenario runs extra `runnel consume --group` processes
# in the same group as runnel-verify's consumers: each round starts two of them (which triggers a rebalance of
# the whole group), kills -9 one of them while the rebalance is under way, and the other a round later; the
# group's partitions move between runnel-verify's consumers and the extra ones throughout. Brokers stay up.
#
# The extra consumers' records (--output json) are appended to the history as polls before the check, so every
# record they printed must be in the final read at the same offset (lost / unexpected / inconsistent). They are
# recorded without group and with a new proc name whenever a consumer's offsets of a partition stop increasing
# (a re-assignment the CLI does not report), so poll monotonicity is not checked for them; the number of such
# restarts is logged. Committed-offset regressions are checked for runnel-verify's own commits only.
# shellcheck source=scripts/chaos/lib.sh
. "$(dirname "$0")/lib.sh"
chaos_init consumer-crash
if quick; then DURATION=20 ROUNDS=3 GAP_S=4 REBALANCE_S=1; else DURATION=60 ROUNDS=8 GAP_S=5 REBALANCE_S=1; fi
# A killed member's partitions move after its session timeout.
SESSION_TIMEOUT_MS=3000
# An extra consumer left running exits after this long without a record.
IDLE_EXIT_MS=30000

declare -a XNAMES=()
start_consumer() {
  "$CLI" --brokers "$BOOT" --output json consume "$TOPIC" --group "$GROUP" --from-beginning \
    --session-timeout-ms "$SESSION_TIMEOUT_MS" --timeout-ms "$IDLE_EXIT_MS" \
    >"$WORK/$1.jsonl" 2>"$WORK/$1.err" </dev/null &
  EXTRA_PIDS+=("$!")
  XNAMES+=("$1")
  eval "XPID_$1=$!"
  log "started consumer $1 (pid $!)"
}
kill_consumer() {
  local pid
  eval "pid=\$XPID_$1"
  own "$pid" || return 0
  log "kill -9 consumer $1 (pid $pid, $(wc -l <"$WORK/$1.jsonl") records printed)"
  { sig KILL "$pid"; wait "$pid"; } 2>/dev/null
}

pre_check() {
  local x
  for x in "${XNAMES[@]}"; do
    kill_consumer "$x"
  done
  python3 - "$WORK" "${XNAMES[@]}" >>"$WORK/history.jsonl" <<'PY'
import json, sys, time
work, names = sys.argv[1], sys.argv[2:]
t = int(time.time() * 1000)
records = restarts = 0
for n in names:
    last, seg = {}, {}
    for line in open(f"{work}/{n}.jsonl", errors="replace"):
        try:
            r = json.loads(line)
            p, o, v = int(r["partition"]), int(r["offset"]), r["value"]
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line of a killed consumer
        if p in last and o <= last[p]:
            seg[p] = seg.get(p, 0) + 1
            restarts += 1
        last[p] = o
        records += 1
        print(json.dumps({"op": "poll", "t": t, "proc": f"{n}.{p}.{seg.get(p, 0)}", "partition": p,
                          "offsets": [o], "values": [v if v is not None else ""]}))
print(f"extra consumers: {records} records from {len(names)} processes, {restarts} offset restarts",
      file=sys.stderr)
PY
}

cluster_start
topic_create
verify_start "$DURATION"
for n in $(seq 1 "$ROUNDS"); do
  pace "$GAP_S"
  [ "$(remaining)" -gt $((REBALANCE_S + 2)) ] || break
  # Last round's survivor dies now, also mid-rebalance.
  [ "$n" -gt 1 ] && kill_consumer "x$((n - 1))b"
  start_consumer "x${n}a"
  start_consumer "x${n}b"
  pace "$REBALANCE_S"
  kill_consumer "x${n}a"
done
chaos_finish
