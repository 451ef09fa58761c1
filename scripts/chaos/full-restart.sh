#!/usr/bin/env bash
# Chaos scenario: kill -9 every broker at once, then restart them all (acknowledged writes must survive a
# whole-cluster crash: acks=all means fsynced on a majority); repeated on a bounded schedule under a
# runnel-verify workload; then heal, converge, check. See lib.sh for the result line.
# shellcheck source=scripts/chaos/lib.sh
. "$(dirname "$0")/lib.sh"
chaos_init full-restart
if quick; then DURATION=20 FAULTS=1 DOWN_S=3 GAP_S=5; else DURATION=60 FAULTS=3 DOWN_S=4 GAP_S=8; fi
cluster_start
topic_create
verify_start "$DURATION"
for n in $(seq 1 "$FAULTS"); do
  pace "$GAP_S"
  [ "$(remaining)" -gt $((DOWN_S + 2)) ] || break
  for i in $(seq 1 "$NODES"); do kill9_node "$i"; done
  pace "$DOWN_S"
  for i in $(seq 1 "$NODES"); do restart_node "$i"; done
  for i in $(seq 1 "$NODES"); do wait_node_ready "$i" || NOTE+=" broker $i not ready after restart $n;"; done
done
chaos_finish
