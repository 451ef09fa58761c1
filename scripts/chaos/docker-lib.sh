# shellcheck shell=bash
# The docker backend of the chaos scenarios: sourced by lib.sh under CHAOS_BACKEND=docker, after the loopback
# backend, whose functions it redefines (backend_init, backend_cleanup, addr, cluster_start, node_alive,
# node_log_tail, kill9_node, stop_node, cont_node, restart_node, heal_node); the workload, convergence, check and
# result line stay in lib.sh.
#
# The cluster is docker-compose.yml (3 brokers at 172.29.50.11-13:9292, image runnel:dev from
# scripts/docker-build.sh) plus docker-compose.chaos.yml (16 MiB segments), under the compose project
# CHAOS_PROJECT (default runnel-chaos; no other project is ever touched). Each scenario starts it fresh
# (`up -d`, every broker answering `cluster health` and healthy in docker), and the EXIT trap always removes it
# (`down -v`: containers, network, volumes), after saving each broker's `docker logs` as WORK/nI.log.
# Clients (runnel, runnel-verify: the static host binaries in target/static/...) talk to the advertised
# container addresses directly; the host routes to 172.29.50.0/24. The subnet and the published loopback ports
# are fixed by docker-compose.yml, so only one such cluster can run at a time (docker-smoke.sh, a plain
# `docker compose up` and this project exclude each other: `up` fails, the scenario reports FAIL).
#
# Faults: kill -9 = `docker kill -s KILL`, SIGSTOP/SIGCONT = `docker pause`/`unpause` (the cgroup freezer),
# restart = `docker start` (same container, address and volume). Network faults, only here, are set from the
# host inside a broker's network namespace (`nsenter -t PID -n`; the image has no shell or tools):
# - isolate_node I: iptables DROP of everything from/to the other brokers' addresses (chains RUNNEL-CHAOS-IN /
#   -OUT, jumped to from INPUT / OUTPUT); the host (172.29.50.1) still reaches it;
# - lossy_node I P: iptables `-m statistic --mode random --probability P -j DROP` on eth0, in and out;
# - shape_node I RATE LATENCY: `tc qdisc replace dev eth0 root tbf rate RATE burst 32kbit latency LATENCY`
#   (a rate limit with a bounded queue; this kernel has no netem, so no added delay or jitter);
# - heal_net I: flushes both chains and deletes the root qdisc.
# heal_node (and so chaos_finish's heal) unpauses, restarts and removes every network fault.

CHAOS_PROJECT=${CHAOS_PROJECT:-runnel-chaos}
BIN_DIR=${RUNNEL_BIN_DIR:-$CHAOS_ROOT/target/static/x86_64-unknown-linux-gnu/release}
CLI="$BIN_DIR/runnel"
VERIFY="$BIN_DIR/runnel-verify"
IMAGE=runnel:dev
NET_PREFIX=172.29.50
CLIENT_PORT=9292
CHAIN_IN=RUNNEL-CHAOS-IN
CHAIN_OUT=RUNNEL-CHAOS-OUT

# Bounds (seconds).
COMPOSE_TIMEOUT_S=180   # one docker-compose call (up, down)
DOCKER_TIMEOUT_S=30     # one docker call (kill, pause, start, inspect)
STATE_WAIT_S=20         # a killed container is reported exited
HEALTHY_WAIT_S=60       # docker reports a started broker healthy (healthcheck every 5 s)

declare -a CID=()
COMPOSE_UP=0

if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
else
  COMPOSE=(docker-compose)
fi

compose() {
  timeout "$COMPOSE_TIMEOUT_S" "${COMPOSE[@]}" -p "$CHAOS_PROJECT" -f "$CHAOS_ROOT/docker-compose.yml" \
    -f "$CHAOS_ROOT/scripts/chaos/docker-compose.chaos.yml" "$@"
}

dk() { timeout "$DOCKER_TIMEOUT_S" docker "$@"; }

backend_init() {
  local b t
  for t in docker nsenter iptables tc timeout; do
    command -v "$t" >/dev/null || { echo "$SCENARIO: $t is required by the docker backend" >&2; exit 2; }
  done
  "${COMPOSE[@]}" version >/dev/null 2>&1 || { echo "$SCENARIO: neither 'docker compose' nor docker-compose works" >&2; exit 2; }
  dk info >/dev/null 2>&1 || { echo "$SCENARIO: the docker daemon is not reachable" >&2; exit 2; }
  dk image inspect "$IMAGE" >/dev/null 2>&1 || { echo "$SCENARIO: no image $IMAGE (run scripts/docker-build.sh)" >&2; exit 2; }
  for b in "$CLI" "$VERIFY"; do
    [ -x "$b" ] || { echo "$SCENARIO: no binary $b (run scripts/docker-build.sh, or set RUNNEL_BIN_DIR)" >&2; exit 2; }
  done
}

ip_of() { echo "$NET_PREFIX.$((10 + $1))"; }
addr() { echo "$(ip_of "$1"):$CLIENT_PORT"; }

# state_of I: the container's state (running, paused, exited, ...), or "absent".
state_of() { dk inspect -f '{{.State.Status}}' "${CID[$1]:-none}" 2>/dev/null || echo absent; }
health_of() { dk inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "${CID[$1]:-none}" 2>/dev/null || echo absent; }

node_alive() { case "$(state_of "$1")" in running | paused) return 0 ;; *) return 1 ;; esac; }

node_log_tail() { dk logs --tail 2 "${CID[$1]:-none}" 2>&1 | tr '\n' ' '; }

# netns I CMD...: runs CMD (a host binary) in broker I's network namespace.
netns() {
  local pid
  pid=$(dk inspect -f '{{.State.Pid}}' "${CID[$1]:-none}" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$pid" != 0 ] || return 1
  shift
  timeout "$DOCKER_TIMEOUT_S" nsenter -t "$pid" -n "$@"
}

# wait_healthy I: until docker reports broker I healthy, bounded.
wait_healthy() {
  local end=$((SECONDS + HEALTHY_WAIT_S))
  while [ "$SECONDS" -lt "$end" ]; do
    [ "$(health_of "$1")" = healthy ] && return 0
    node_alive "$1" || return 1
    sleep "$POLL_S"
  done
  return 1
}

cluster_start() {
  local i
  # A leftover of this project (a run killed with SIGKILL) would hold the addresses: remove it first.
  compose down -v --remove-orphans -t 1 >/dev/null 2>&1
  COMPOSE_UP=1
  compose up -d >"$WORK/compose-up.log" 2>&1 || die "compose up failed: $(tail -3 "$WORK/compose-up.log" | tr '\n' ' ')"
  for i in $(seq 1 "$NODES"); do
    CID[i]=$(compose ps -q "runnel-$i" 2>/dev/null)
    [ -n "${CID[i]}" ] || die "no container for runnel-$i"
  done
  BOOT=$(for i in $(seq 1 "$NODES"); do printf '%s,' "$(addr "$i")"; done)
  BOOT=${BOOT%,}
  for i in $(seq 1 "$NODES"); do
    wait_node_ready "$i" || die "broker $i not ready within ${NODE_READY_WAIT_S}s"
  done
  for i in $(seq 1 "$NODES"); do
    wait_healthy "$i" || die "broker $i not healthy in docker within ${HEALTHY_WAIT_S}s ($(health_of "$i"))"
  done
  log "cluster up (compose project $CHAOS_PROJECT): $BOOT"
}

# wait_state I STATE: until the container's state is STATE, bounded.
wait_state() {
  local end=$((SECONDS + STATE_WAIT_S))
  while [ "$SECONDS" -lt "$end" ]; do
    [ "$(state_of "$1")" = "$2" ] && return 0
    sleep "$POLL_S"
  done
  return 1
}

kill9_node() {
  log "docker kill -s KILL broker $1"
  dk kill -s KILL "${CID[$1]}" >/dev/null 2>&1 || log "docker kill of broker $1 failed"
  wait_state "$1" exited || log "broker $1 not exited ${STATE_WAIT_S}s after docker kill ($(state_of "$1"))"
}

stop_node() { log "docker pause broker $1"; dk pause "${CID[$1]}" >/dev/null || log "docker pause of broker $1 failed"; }
cont_node() { log "docker unpause broker $1"; dk unpause "${CID[$1]}" >/dev/null || log "docker unpause of broker $1 failed"; }

restart_node() {
  log "docker start broker $1"
  dk start "${CID[$1]}" >/dev/null || log "docker start of broker $1 failed"
}

# net_chains I: the chains RUNNEL-CHAOS-IN/-OUT exist in broker I's namespace and INPUT/OUTPUT jump to them.
net_chains() {
  local pair chain hook
  for pair in "INPUT:$CHAIN_IN" "OUTPUT:$CHAIN_OUT"; do
    hook=${pair%%:*} chain=${pair#*:}
    netns "$1" iptables -w 5 -L "$chain" -n >/dev/null 2>&1 || netns "$1" iptables -w 5 -N "$chain" || return 1
    netns "$1" iptables -w 5 -C "$hook" -j "$chain" 2>/dev/null || netns "$1" iptables -w 5 -I "$hook" 1 -j "$chain" || return 1
  done
}

# isolate_node I: drops everything between broker I and the other brokers (both directions).
isolate_node() {
  local j
  log "isolate broker $1 from its peers (iptables DROP in its netns)"
  net_chains "$1" || { log "cannot set up iptables chains in broker $1's netns"; return 1; }
  for j in $(seq 1 "$NODES"); do
    [ "$j" = "$1" ] && continue
    netns "$1" iptables -w 5 -A "$CHAIN_IN" -s "$(ip_of "$j")" -j DROP || return 1
    netns "$1" iptables -w 5 -A "$CHAIN_OUT" -d "$(ip_of "$j")" -j DROP || return 1
  done
}

# lossy_node I P: drops packets in and out of broker I's eth0 at random with probability P.
lossy_node() {
  log "packet loss $2 in and out of broker $1 (iptables statistic)"
  net_chains "$1" || return 1
  netns "$1" iptables -w 5 -A "$CHAIN_IN" -i eth0 -m statistic --mode random --probability "$2" -j DROP || return 1
  netns "$1" iptables -w 5 -A "$CHAIN_OUT" -o eth0 -m statistic --mode random --probability "$2" -j DROP
}

# shape_node I RATE LATENCY: a tbf rate limit on broker I's eth0 egress.
shape_node() {
  log "tbf rate $2 latency $3 on broker $1's eth0"
  netns "$1" tc qdisc replace dev eth0 root tbf rate "$2" burst 32kbit latency "$3"
}

# net_stats I: one line of broker I's fault counters (tbf sent/dropped/overlimits, packets the rules dropped).
net_stats() {
  local q d
  q=$(netns "$1" tc -s qdisc show dev eth0 2>/dev/null | grep -m1 -oE 'Sent [0-9]+ bytes [0-9]+ pkt \(dropped [0-9]+, overlimits [0-9]+' | tr -d '(,')
  d=$(netns "$1" iptables -w 5 -L "$CHAIN_IN" -v -n -x 2>/dev/null | awk '$3=="DROP"{s+=$1} END{print s+0}')
  d=$((d + $(netns "$1" iptables -w 5 -L "$CHAIN_OUT" -v -n -x 2>/dev/null | awk '$3=="DROP"{s+=$1} END{print s+0}')))
  echo "broker $1: tbf ${q:-none}; iptables dropped $d packets"
}

# leader_seen_by I SINCE P: the last leader (and term) of partition P of the topic that broker I logged since
# SINCE (a docker logs --since time, e.g. unix seconds), e.g. "3 term 4", or "none". From the broker's log, since a client request
# (topic describe) is not pinned to one broker: the client asks the first broker of its metadata.
leader_seen_by() {
  local line
  line=$(dk logs --since "$2" "${CID[$1]}" 2>&1 | grep -F "leadership changed topic=$TOPIC partition=$3 leader=Some" | tail -1)
  [ -n "$line" ] || { echo none; return; }
  sed -E 's/.* leader=Some\(([0-9]+)\) term=([0-9]+).*/\1 term \2/' <<<"$line"
}

# heal_net I: removes every network fault of broker I (no-op if there is none).
heal_net() {
  netns "$1" iptables -w 5 -F "$CHAIN_IN" 2>/dev/null
  netns "$1" iptables -w 5 -F "$CHAIN_OUT" 2>/dev/null
  # "Cannot delete qdisc with handle of zero" when there is no root qdisc of ours: nothing to remove.
  netns "$1" tc qdisc del dev eth0 root 2>/dev/null
  return 0
}

heal_node() {
  case "$(state_of "$1")" in
    paused) cont_node "$1"; heal_net "$1" ;;
    running) heal_net "$1" ;;
    absent) log "broker $1 has no container" ;;
    *) restart_node "$1" ;;
  esac
}

backend_cleanup() {
  local i
  [ "$COMPOSE_UP" = 1 ] || return 0
  for i in $(seq 1 "$NODES"); do
    [ -n "${CID[i]:-}" ] || continue
    [ "$(state_of "$i")" = paused ] && dk unpause "${CID[i]}" >/dev/null 2>&1
    [ -n "$WORK" ] && [ -d "$WORK" ] && dk logs "${CID[i]}" >"$WORK/n$i.log" 2>&1
  done
  compose down -v --remove-orphans -t 2 >/dev/null 2>&1 \
    || log "WARNING: '${COMPOSE[*]} -p $CHAOS_PROJECT down -v' failed: containers or volumes may be left"
  COMPOSE_UP=0
}
