# shellcheck shell=bash
# Sourced (not run) by scripts/bench.sh and scripts/profile-rf3.sh: starts and stops a local loopback cluster
# of release brokers. Invariants: every broker gets its own free port, data dir and log under the given
# directory; every wait is bounded by a named deadline; cluster_stop kills exactly the pids started here.
#
#   cluster_start BIN DIR N   start N brokers (node ids 1..N), wait until every node names a controller
#   cluster_stop              kill -9 the brokers started by cluster_start (safe to call twice)
#   cluster_leader TOPIC P    print the node id leading partition P of TOPIC
#   cluster_wait_healthy      wait until `runnel cluster health` exits 0 (controller + every partition led)
# CLUSTER_BROKER_ARGS (optional, word-split): extra flags for every broker, e.g. "--raft-heartbeat-ms 500".
# After cluster_start: CLUSTER_BROKERS (the --brokers list), CLUSTER_PIDS[i] / CLUSTER_PORTS[i] for node i+1.

CLUSTER_CONTROLLER_WAIT_S=60 # a fresh cluster elects its controller within a few seconds
CLUSTER_HEALTHY_WAIT_S=60    # every partition of the topics just created has a leader
CLUSTER_POLL_S=0.2
CLUSTER_PIDS=()
CLUSTER_PORTS=()
CLUSTER_BROKERS=""
CLUSTER_BIN=""
CLUSTER_DIR=""

cluster_free_port() {
  python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1]);s.close()'
}

cluster_runnel() { "$CLUSTER_BIN/runnel" --brokers "$CLUSTER_BROKERS" "$@"; }

# True when every node answers Metadata naming a controller.
cluster_all_have_controller() {
  local port
  for port in "${CLUSTER_PORTS[@]}"; do
    "$CLUSTER_BIN/runnel" --brokers "127.0.0.1:$port" --output json cluster info 2>/dev/null |
      python3 -c 'import sys,json;sys.exit(0 if json.loads(sys.stdin.readline()).get("controller_id") is not None else 1)' \
      || return 1
  done
}

cluster_start() {
  CLUSTER_BIN=$1 CLUSTER_DIR=$2
  local n=$3 i peers=""
  CLUSTER_PIDS=() CLUSTER_PORTS=()
  for i in $(seq 1 "$n"); do CLUSTER_PORTS+=("$(cluster_free_port)"); done
  for i in $(seq 1 "$n"); do peers+="${peers:+,}$i@127.0.0.1:${CLUSTER_PORTS[$((i - 1))]}"; done
  CLUSTER_BROKERS=$(printf '127.0.0.1:%s,' "${CLUSTER_PORTS[@]}"); CLUSTER_BROKERS=${CLUSTER_BROKERS%,}
  for i in $(seq 1 "$n"); do
    local port=${CLUSTER_PORTS[$((i - 1))]}
    mkdir -p "$CLUSTER_DIR/n$i"
    "$CLUSTER_BIN/runnel-broker" --node-id "$i" --listen "127.0.0.1:$port" --advertise "127.0.0.1:$port" \
      --admin-listen 127.0.0.1:0 --data-dir "$CLUSTER_DIR/n$i/data" --peers "$peers" \
      ${CLUSTER_BROKER_ARGS:-} > "$CLUSTER_DIR/n$i/broker.log" 2>&1 &
    CLUSTER_PIDS+=("$!")
  done
  local deadline=$((SECONDS + CLUSTER_CONTROLLER_WAIT_S))
  until cluster_all_have_controller; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      for i in $(seq 1 "$n"); do echo "--- node $i" >&2; tail -5 "$CLUSTER_DIR/n$i/broker.log" >&2; done
      echo "the cluster did not elect a controller within ${CLUSTER_CONTROLLER_WAIT_S} s" >&2
      return 1
    fi
    sleep "$CLUSTER_POLL_S"
  done
}

cluster_wait_healthy() {
  local deadline=$((SECONDS + CLUSTER_HEALTHY_WAIT_S))
  until cluster_runnel cluster health >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      cluster_runnel cluster health >&2 || true
      echo "the cluster was not healthy within ${CLUSTER_HEALTHY_WAIT_S} s" >&2
      return 1
    fi
    sleep "$CLUSTER_POLL_S"
  done
}

cluster_leader() {
  cluster_runnel --output json topic describe "$1" |
    python3 -c 'import sys,json
for l in sys.stdin:
    d=json.loads(l)
    if d["partition"]==int(sys.argv[1]) and d["leader"] is not None: print(d["leader"]); break
else: sys.exit(1)' "$2"
}

cluster_stop() {
  local pid
  for pid in "${CLUSTER_PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for pid in "${CLUSTER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  CLUSTER_PIDS=()
}
