#!/usr/bin/env bash
# Runs every chaos scenario in turn and prints their result lines (one per scenario, see lib.sh), then a total
# line; exits 1 if any scenario failed. Progress goes to stderr.
#
#   run-all.sh [--quick] [--docker]
#
# --quick shortens each scenario (the CI smoke: about 4-5 minutes in all on loopback).
# Loopback (default): the 5 scenarios against runnel-broker processes on 127.0.0.1; binaries from
# target/$CHAOS_PROFILE (release unless CHAOS_PROFILE=debug) or RUNNEL_BIN_DIR (`cargo build --release --bins`).
# --docker (or CHAOS_BACKEND=docker): the same 5 plus isolate-leader and slow-network against the
# docker-compose cluster (compose project runnel-chaos, started fresh and removed with `down -v` by each
# scenario); image and host binaries from scripts/docker-build.sh. The two network scenarios need a network
# namespace per broker, which the loopback processes do not have.
set -uo pipefail
cd "$(dirname "$0")" || exit 2
SCENARIOS=(leader-kill pause-leader pause-follower full-restart consumer-crash)
# Bound on one scenario (its own waits are bounded; this is the backstop).
SCENARIO_TIMEOUT_S=600

for arg in "$@"; do
  case "$arg" in
    --quick) export CHAOS_QUICK=1 ;;
    --docker) export CHAOS_BACKEND=docker ;;
    *) echo "usage: $0 [--quick] [--docker]" >&2; exit 2 ;;
  esac
done
[ "${CHAOS_BACKEND:-loopback}" = docker ] && SCENARIOS+=(isolate-leader slow-network)

# The scenario runs under `timeout` in its own process group, so a Ctrl-C at the terminal does not reach it:
# on INT/TERM this script passes TERM on (timeout forwards it), waits for the scenario's trap to heal and tear
# down (docker: `down -v`), and exits.
OUT=$(mktemp /tmp/runnel-chaos-run-all.XXXXXX)
CHILD=""
on_signal() {
  trap '' INT TERM
  echo "[run-all] interrupted: stopping ${CHILD:+the running scenario (pid $CHILD)}" >&2
  [ -n "$CHILD" ] && kill -TERM "$CHILD" 2>/dev/null && wait "$CHILD"
  exit 130
}
trap on_signal INT TERM
trap 'rm -f "$OUT"' EXIT

failed=0
start=$SECONDS
for s in "${SCENARIOS[@]}"; do
  t0=$SECONDS
  # TERM on timeout: the scenario's trap still heals and tears down; KILL 120 s later if it does not end.
  timeout -s TERM -k 120 "$SCENARIO_TIMEOUT_S" "./$s.sh" >"$OUT" &
  CHILD=$!
  wait "$CHILD"
  rc=$?
  CHILD=""
  line=$(cat "$OUT")
  [ -n "$line" ] || line="$s: verdict=FAIL (no result line, exit $rc)"
  echo "$line"
  echo "[run-all] $s took $((SECONDS - t0))s" >&2
  [ "$rc" = 0 ] || failed=$((failed + 1))
done
echo "chaos (${CHAOS_BACKEND:-loopback}): ${#SCENARIOS[@]} scenarios, $failed failed, $((SECONDS - start))s"
[ "$failed" = 0 ]
