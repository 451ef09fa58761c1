#!/usr/bin/env bash
# Chaos scenario (docker backend only; SKIP on loopback): a slow, lossy network for the whole producing window.
# This kernel has no netem qdisc, so what stands in for it on every broker's eth0 is a tbf rate limit (egress,
# CHAOS_SLOW_RATE, default 20mbit; queue bounded at 100 ms, beyond which tbf drops) plus random packet loss
# (iptables `-m statistic --mode random`, CHAOS_SLOW_LOSS, default 0.02 in and 0.02 out of each broker: about
# 4 % between two brokers, 2 % each way between a broker and a client). No added delay or jitter (that needs
# netem). Then heal (qdisc and rules removed), converge, check. See lib.sh for the result line.
# shellcheck source=scripts/chaos/lib.sh
. "$(dirname "$0")/lib.sh"
require_docker slow-network
chaos_init slow-network
if quick; then DURATION=20; else DURATION=60; fi
SLOW_RATE=${CHAOS_SLOW_RATE:-20mbit}
SLOW_LATENCY=100ms
SLOW_LOSS=${CHAOS_SLOW_LOSS:-0.02}
cluster_start
topic_create
verify_start "$DURATION"
for i in $(seq 1 "$NODES"); do
  shape_node "$i" "$SLOW_RATE" "$SLOW_LATENCY" || NOTE+=" tbf on broker $i failed;"
  lossy_node "$i" "$SLOW_LOSS" || NOTE+=" packet loss on broker $i failed;"
done
# The faults stay for the rest of the producing window (bounded by DURATION).
left=$(($(remaining) - 1))
[ "$left" -gt 0 ] && pace "$left"
for i in $(seq 1 "$NODES"); do log "$(net_stats "$i")"; done
log "heal: tbf and iptables rules removed (netem is not available in this kernel: tbf + iptables statistic stood in)"
chaos_finish
