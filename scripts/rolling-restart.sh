#!/usr/bin/env bash
# Restarts a running Runnel cluster one broker at a time: restart node i, wait until its /health/ready
# answers 200 and no partition is under-replicated, then the next. A broker receiving SIGTERM hands its
# leaderships to caught-up replicas before it drains, so clients see retriable NOT_LEADER answers, not errors.
#
# Usage: scripts/rolling-restart.sh [--nodes "1 2 3"] [--admin "127.0.0.1:9644 127.0.0.1:9645 127.0.0.1:9646"]
#          [--brokers 127.0.0.1:9292] [--restart-cmd 'docker compose restart runnel-{id}'] [--timeout-s 120]
# Defaults fit the repository's docker-compose.yml. `{id}` in the restart command is the node id.
set -euo pipefail
nodes="1 2 3"
admin="127.0.0.1:9644 127.0.0.1:9645 127.0.0.1:9646"
brokers="127.0.0.1:9292"
restart_cmd='docker compose restart runnel-{id}'
docker compose version >/dev/null 2>&1 || restart_cmd='docker-compose restart runnel-{id}'
timeout_s=120
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) nodes=$2; shift 2 ;;
    --admin) admin=$2; shift 2 ;;
    --brokers) brokers=$2; shift 2 ;;
    --restart-cmd) restart_cmd=$2; shift 2 ;;
    --timeout-s) timeout_s=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
RUNNEL=${RUNNEL:-runnel}
command -v "$RUNNEL" >/dev/null || RUNNEL="cargo run -q --release --bin runnel --"
read -r -a admins <<<"$admin"
i=0
for id in $nodes; do
  addr=${admins[$i]:?"no --admin address for node $id"}
  i=$((i + 1))
  echo "restarting node $id"
  start=$(date +%s)
  sh -c "${restart_cmd//\{id\}/$id}"
  deadline=$((start + timeout_s))
  until curl -fsS "http://$addr/health/ready" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "node $id not ready after ${timeout_s}s" >&2; exit 1; }
    sleep 1
  done
  until $RUNNEL --brokers "$brokers" --output json cluster info 2>/dev/null \
      | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d.get("under_replicated_partitions", 1) == 0 else 1)'; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "partitions still under-replicated after node $id" >&2; exit 1; }
    sleep 1
  done
  echo "node $id back and in sync after $(( $(date +%s) - start ))s"
done
echo "rolling restart done"
