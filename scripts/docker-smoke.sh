#!/usr/bin/env bash
# Smoke check of the 3-broker docker-compose cluster, by hand (not part of CI: CI has no guarantee of docker).
#
# Builds runnel:dev (scripts/docker-build.sh; SKIP_BUILD=1 skips it), starts docker-compose.yml under its own
# project name (runnel-smoke, so it never touches a cluster started with a plain `docker compose up`), waits for
# three healthy brokers, checks that the host reaches every advertised container address, creates a topic with
# replication factor 3, produces and consumes records, kills runnel-1 and checks produce/consume through the
# survivors, restarts runnel-1 and checks that it rejoins and catches up. Every wait is bounded; the project is
# always torn down with `down -v` on exit. Prints one verdict line on stdout: "docker-smoke: PASS ..." or
# "docker-smoke: FAIL: ..." (exit 1); progress goes to stderr.
#
# The CLI on the host is the static binary the build just made (the same code as `cargo run --release --bin
# runnel`); RUNNEL_CLI overrides it. Traffic goes only to 127.0.0.1 and to this project's own containers.
set -euo pipefail
cd "$(dirname "$0")/.."

PROJECT=${PROJECT:-runnel-smoke}
CLI=${RUNNEL_CLI:-target/static/x86_64-unknown-linux-gnu/release/runnel}
TOPIC=smoke
RECORDS=20
PARTITIONS=3
BOOTSTRAP=127.0.0.1:9292,127.0.0.1:9293,127.0.0.1:9294
ADVERTISED=(172.29.50.11:9292 172.29.50.12:9292 172.29.50.13:9292)
SERVICES=(runnel-1 runnel-2 runnel-3)
# Bounds: the longest wait for containers to turn healthy / for the cluster to settle, and per CLI call.
HEALTHY_WAIT_S=120
SETTLE_WAIT_S=60
CALL_TIMEOUT_S=20
POLL_INTERVAL_S=1

WORK=$(mktemp -d /tmp/runnel-docker-smoke.XXXXXX)
STEP="setup"
log() { echo "docker-smoke: $*" >&2; }
fail() {
  echo "docker-smoke: FAIL: $STEP: $*"
  exit 1
}

if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null; then
  COMPOSE=(docker-compose)
else
  fail "neither 'docker compose' nor 'docker-compose' is installed"
fi
compose() { "${COMPOSE[@]}" -p "$PROJECT" -f docker-compose.yml "$@"; }

STARTED=0
cleanup() {
  local rc=$?
  if [ "$STARTED" = 1 ]; then
    if [ "$rc" != 0 ]; then
      log "last broker logs:"
      compose logs --no-color --tail=20 >&2 2>/dev/null || true
    fi
    compose down -v --remove-orphans >/dev/null 2>&1 || log "WARNING: '${COMPOSE[*]} -p $PROJECT down -v' failed"
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

cli() { timeout "$CALL_TIMEOUT_S" "$CLI" "$@"; }

# health_of SERVICE: the container's health status (starting, healthy, unhealthy) while it runs, else its state
# (exited, created, ...), or "absent".
health_of() {
  local id
  id=$(compose ps -q "$1" 2>/dev/null || true)
  [ -n "$id" ] || { echo absent; return; }
  docker inspect --format '{{if ne .State.Status "running"}}{{.State.Status}}{{else if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' \
    "$id" 2>/dev/null || echo absent
}

# wait_healthy SERVICE...: until every one reports healthy, at most HEALTHY_WAIT_S.
wait_healthy() {
  local end=$((SECONDS + HEALTHY_WAIT_S)) s all
  while [ "$SECONDS" -lt "$end" ]; do
    all=1
    for s in "$@"; do
      case "$(health_of "$s")" in
        healthy) ;;
        exited | dead) log "$s has stopped"; return 1 ;;
        *) all=0 ;;
      esac
    done
    [ "$all" = 1 ] && return 0
    sleep "$POLL_INTERVAL_S"
  done
  for s in "$@"; do log "$s: $(health_of "$s")"; done
  return 1
}

# settled BROKERS N: `cluster info` through BROKERS shows N brokers, a controller, no leaderless and no
# under-replicated partition.
settled() {
  local json
  json=$(cli --brokers "$1" --output json cluster info 2>/dev/null) || return 1
  python3 -c '
import json, sys
i = json.loads(sys.argv[1]); n = int(sys.argv[2])
ok = (len(i["brokers"]) == n and i["controller_id"] is not None
      and i["leaderless_partitions"] == 0 and i["under_replicated_partitions"] == 0)
sys.exit(0 if ok else 1)' "$json" "$2"
}

# wait_leaders BROKERS: until `cluster health` passes (every partition has a leader), at most SETTLE_WAIT_S.
wait_leaders() {
  local end=$((SECONDS + SETTLE_WAIT_S))
  while [ "$SECONDS" -lt "$end" ]; do
    cli --brokers "$1" cluster health >/dev/null 2>&1 && return 0
    sleep "$POLL_INTERVAL_S"
  done
  return 1
}

# wait_settled BROKERS N: until settled, at most SETTLE_WAIT_S.
wait_settled() {
  local end=$((SECONDS + SETTLE_WAIT_S))
  while [ "$SECONDS" -lt "$end" ]; do
    settled "$1" "$2" && return 0
    sleep "$POLL_INTERVAL_S"
  done
  return 1
}

# produce_range FIRST LAST: produces records "smoke-FIRST".."smoke-LAST" with acks=all; all must be acknowledged.
produce_range() {
  local out="$WORK/produce-$1.out"
  seq -f "smoke-%g" "$1" "$2" | cli --brokers "$BOOTSTRAP" produce "$TOPIC" --acks all >"$out" \
    || fail "produce exited non-zero: $(tail -3 "$out" | tr '\n' ' ')"
  local acks
  acks=$(grep -cE '^[0-9]+ [0-9]+$' "$out" || true)
  [ "$acks" = $(($2 - $1 + 1)) ] || fail "expected $(($2 - $1 + 1)) acks, got $acks"
}

# consume_all N: consumes the topic from the beginning; exactly smoke-1..smoke-N must come back (any order).
consume_all() {
  local out="$WORK/consume.out"
  cli --brokers "$BOOTSTRAP" consume "$TOPIC" --from-beginning --max-messages "$1" --timeout-ms 10000 \
    >"$out" || fail "consume exited non-zero"
  if ! diff <(sort "$out") <(seq -f "smoke-%g" 1 "$1" | sort) >"$WORK/diff" 2>&1; then
    fail "consumed records differ from produced: $(head -5 "$WORK/diff" | tr '\n' ' ')"
  fi
}

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  STEP="build"
  scripts/docker-build.sh >&2 || fail "scripts/docker-build.sh failed"
fi
[ -x "$CLI" ] || fail "no CLI binary at $CLI (run scripts/docker-build.sh or set RUNNEL_CLI)"

STEP="up"
STARTED=1
compose up -d >&2 || fail "compose up failed"
wait_healthy "${SERVICES[@]}" || fail "brokers not healthy (one stopped, or not within ${HEALTHY_WAIT_S}s)"

STEP="cluster info"
cli --brokers 127.0.0.1:9292 cluster info >&2 || fail "cluster info failed"
wait_settled 127.0.0.1:9292 3 || fail "cluster info does not show 3 brokers and a controller"
info=$(cli --brokers 127.0.0.1:9292 --output json cluster info) || fail "cluster info --output json failed"
for addr in "${ADVERTISED[@]}"; do
  python3 -c '
import json, sys
i = json.loads(sys.argv[1])
sys.exit(0 if sys.argv[2] in ["%s:%d" % (b["host"], b["port"]) for b in i["brokers"]] else 1)' "$info" "$addr" \
    || fail "broker $addr not advertised"
  # The host must reach each advertised container address directly (clients follow leaders there).
  cli --brokers "$addr" cluster health >/dev/null || fail "host cannot reach advertised address $addr"
done

STEP="topic create"
cli --brokers "$BOOTSTRAP" topic create "$TOPIC" --partitions "$PARTITIONS" --replication-factor 3 >&2 \
  || fail "topic create failed"
wait_settled 127.0.0.1:9292 3 || fail "partitions not fully replicated within ${SETTLE_WAIT_S}s"

HALF=$((RECORDS / 2))
STEP="produce/consume (3 brokers)"
produce_range 1 "$HALF"
consume_all "$HALF"

STEP="kill runnel-1"
compose kill runnel-1 >&2 || fail "compose kill runnel-1 failed"
wait_leaders 127.0.0.1:9293 || fail "partitions without a leader ${SETTLE_WAIT_S}s after killing runnel-1"
STEP="produce/consume (runnel-1 down)"
produce_range $((HALF + 1)) "$RECORDS"
consume_all "$RECORDS"

STEP="restart runnel-1"
compose start runnel-1 >&2 || fail "compose start runnel-1 failed"
wait_healthy runnel-1 || fail "runnel-1 not healthy after its restart (stopped, or not within ${HEALTHY_WAIT_S}s)"
wait_settled 127.0.0.1:9292 3 || fail "runnel-1 did not rejoin and catch up within ${SETTLE_WAIT_S}s"
consume_all "$RECORDS"

echo "docker-smoke: PASS (3 brokers healthy, advertised addresses reachable, $RECORDS records with RF=3 across a kill and restart of runnel-1)"
