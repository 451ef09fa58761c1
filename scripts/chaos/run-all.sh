#!/usr/bin/env bash
# Runs every loopback chaos scenario in turn and prints their result lines (one per scenario, see lib.sh), then
# a total line; exits 1 if any scenario failed. `--quick` shortens each one (the CI smoke: about 4-5 minutes in
# all). Binaries: target/$CHAOS_PROFILE (release unless CHAOS_PROFILE=debug) or RUNNEL_BIN_DIR; build them
# first (`cargo build --release --bins`). Progress goes to stderr.
#
# Not here: the isolation of a leader from its peers and slow-network (netem) scenarios need a network per
# broker (docker or network namespaces with tc netem), which these loopback processes do not have.
set -uo pipefail
cd "$(dirname "$0")" || exit 2
SCENARIOS=(leader-kill pause-leader pause-follower full-restart consumer-crash)
# Bound on one scenario (its own waits are bounded; this is the backstop).
SCENARIO_TIMEOUT_S=600

case "${1:-}" in
  --quick) export CHAOS_QUICK=1 ;;
  "") ;;
  *) echo "usage: $0 [--quick]" >&2; exit 2 ;;
esac

failed=0
start=$SECONDS
for s in "${SCENARIOS[@]}"; do
  t0=$SECONDS
  line=$(timeout -s TERM "$SCENARIO_TIMEOUT_S" "./$s.sh")
  rc=$?
  [ -n "$line" ] || line="$s: verdict=FAIL (no result line, exit $rc)"
  echo "$line"
  echo "[run-all] $s took $((SECONDS - t0))s" >&2
  [ "$rc" = 0 ] || failed=$((failed + 1))
done
echo "chaos: ${#SCENARIOS[@]} scenarios, $failed failed, $((SECONDS - start))s"
[ "$failed" = 0 ]
