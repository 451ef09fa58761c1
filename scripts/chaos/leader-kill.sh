#!/usr/bin/env bash
# Chaos scenario: kill -9 the leader of partition 0 in a loop (kill, stay down a while, restart, wait until it
# answers again), under a runnel-verify workload; then heal, converge, check. See lib.sh for the result line.
# shellcheck source=scripts/chaos/lib.sh
. "$(dirname "$0")/lib.sh"
chaos_init leader-kill
if quick; then DURATION=20 FAULTS=2 DOWN_S=4 GAP_S=3; else DURATION=60 FAULTS=5 DOWN_S=6 GAP_S=5; fi
cluster_start
topic_create
verify_start "$DURATION"
for n in $(seq 1 "$FAULTS"); do
  pace "$GAP_S"
  [ "$(remaining)" -gt $((DOWN_S + 2)) ] || break
  l=$(leader_of 0) || { NOTE+=" no leader of partition 0 before fault $n;"; break; }
  kill9_node "$l"
  pace "$DOWN_S"
  restart_node "$l"
  wait_node_ready "$l" || NOTE+=" broker $l not ready after restart $n;"
done
chaos_finish
