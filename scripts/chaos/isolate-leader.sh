#!/usr/bin/env bash
# Chaos scenario (docker backend only; SKIP on loopback): cut the leader of partition 0 off from its two peers
# (iptables DROP in its network namespace of everything from/to their addresses; clients on the host still
# reach it) for longer than an election timeout, so the majority side elects a new leader while the old one
# still believes it leads, then heal (flush the rules); repeated on a bounded schedule under a runnel-verify
# workload; then heal, converge, check. The old leader must acknowledge nothing while cut off: an ack from it
# would be a value missing from the final read (lost) or one at an offset the new leader gave to another
# (inconsistent). See lib.sh for the result line.
# shellcheck source=scripts/chaos/lib.sh
. "$(dirname "$0")/lib.sh"
require_docker isolate-leader
chaos_init isolate-leader
if quick; then DURATION=20 FAULTS=2 CUT_S=5 GAP_S=3; else DURATION=60 FAULTS=4 CUT_S=8 GAP_S=4; fi
cluster_start
topic_create
verify_start "$DURATION"
for n in $(seq 1 "$FAULTS"); do
  pace "$GAP_S"
  [ "$(remaining)" -gt $((CUT_S + 2)) ] || break
  l=$(leader_of 0) || { NOTE+=" no leader of partition 0 before fault $n;"; break; }
  since=$(date +%s)
  isolate_node "$l" || { NOTE+=" could not isolate broker $l;"; heal_net "$l"; break; }
  pace "$CUT_S"
  # Evidence, not a condition: whom the majority side elected while broker l was cut off (their logs).
  seen=""
  for i in $(seq 1 "$NODES"); do [ "$i" != "$l" ] && seen+=" broker $i: $(leader_seen_by "$i" "$since" 0);"; done
  log "cut $n of broker $l (led partition 0): new leader of partition 0 as logged since the cut:$seen"
  log "heal broker $l's network"
  heal_net "$l"
  wait_node_ready "$l" || NOTE+=" broker $l not ready after heal $n;"
done
chaos_finish
