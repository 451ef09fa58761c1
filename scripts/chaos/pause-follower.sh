#!/usr/bin/env bash
# Chaos scenario: SIGSTOP a follower of partition 0 for a while, then SIGCONT it (writes must go on with the
# two others, and the follower must catch up); repeated on a bounded schedule under a runnel-verify workload;
# then heal, converge, check. See lib.sh for the result line.
# shellcheck source=scripts/chaos/lib.sh
. "$(dirname "$0")/lib.sh"
chaos_init pause-follower
if quick; then DURATION=20 FAULTS=2 PAUSE_S=5 GAP_S=3; else DURATION=60 FAULTS=5 PAUSE_S=8 GAP_S=4; fi
cluster_start
topic_create
verify_start "$DURATION"
for n in $(seq 1 "$FAULTS"); do
  pace "$GAP_S"
  [ "$(remaining)" -gt $((PAUSE_S + 2)) ] || break
  f=$(follower_of 0) || { NOTE+=" no follower of partition 0 before fault $n;"; break; }
  stop_node "$f"
  pace "$PAUSE_S"
  cont_node "$f"
done
chaos_finish
