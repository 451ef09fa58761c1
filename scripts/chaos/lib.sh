# shellcheck shell=bash
# Shared helpers of the chaos scenarios (scripts/chaos/*.sh). Two backends run the same scenarios:
# - loopback (the default, defined here): real runnel-broker processes on 127.0.0.1, each with its own data dir
#   under one temp dir, faults by signal (kill -9, SIGSTOP, SIGCONT) and restart;
# - docker (CHAOS_BACKEND=docker, docker-lib.sh, sourced at the end of this file, redefines the backend
#   functions): the 3 brokers of docker-compose.yml under the compose project runnel-chaos, faults by
#   `docker kill -s KILL`, `docker pause`/`unpause`, `docker start`, and network faults (iptables, tc) inside
#   a broker's network namespace, which only this backend has (isolate-leader.sh, slow-network.sh).
# The backend functions: backend_init, backend_cleanup, addr, cluster_start, node_alive, node_log_tail,
# kill9_node, stop_node, cont_node, restart_node, heal_node. Everything else (workload, convergence, check,
# result line) is shared.
#
# Sourced, not run. A scenario calls `chaos_init NAME`, `cluster_start`, `topic_create`, `verify_start`, injects
# its faults, then `chaos_finish`, which heals every node (SIGCONT, restart), waits for convergence, runs
# `runnel-verify check` and prints the one result line on stdout:
#   NAME: attempted=.. acked=.. lost=.. duplicates=.. inconsistent=.. max_unavailability_s=.. verdict=PASS|FAIL
# Progress goes to stderr. Exit status: 0 on PASS, 1 on FAIL.
#
# Invariants:
# - every wait is a bounded poll of a condition (named *_WAIT_S bounds, POLL_S between tries); the only bare
#   sleeps are the paces between faults (`pace`), which are the schedule, not a condition;
# - every process started here (brokers, runnel-verify, consumers) is recorded and killed by pid (SIGCONT
#   first, then kill -9, then reaped) by the EXIT trap, whatever happens (docker: every fault healed and the
#   compose project removed with `down -v`);
# - the temp dir is removed on PASS and kept on FAIL (its path goes to stderr) or when CHAOS_KEEP=1;
# - traffic goes only to 127.0.0.1 (docker: and to the project's own containers).
#
# Environment: CHAOS_PROFILE=release|debug (which target/<profile> binaries; default release), RUNNEL_BIN_DIR
# (overrides the directory), CHAOS_QUICK=1 (the shortened schedule, set by `run-all.sh --quick`),
# CHAOS_KEEP=1 (keep the temp dir), CHAOS_VERIFY_ARGS (more `runnel-verify run` flags, e.g.
# "--batches-in-flight 1"), CHAOS_RATE (records/s per producer, default 100), CHAOS_BACKEND=loopback
# (default) | docker.

set -uo pipefail

CHAOS_BACKEND=${CHAOS_BACKEND:-loopback}

CHAOS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CHAOS_PROFILE=${CHAOS_PROFILE:-release}
BIN_DIR=${RUNNEL_BIN_DIR:-$CHAOS_ROOT/target/$CHAOS_PROFILE}
BROKER="$BIN_DIR/runnel-broker"
CLI="$BIN_DIR/runnel"
VERIFY="$BIN_DIR/runnel-verify"

# Bounds (seconds).
NODE_READY_WAIT_S=60      # a (re)started broker answers `cluster health`
CONVERGE_WAIT_S=90        # every broker sees 3 brokers, no leaderless / under-replicated partition
TOPIC_CREATE_WAIT_S=60    # topic create retried while the controller is elected
CALL_TIMEOUT_S=10         # one CLI call
VERIFY_GRACE_S=120        # runnel-verify run beyond its --duration-s (drain, close, setup)
CHECK_TIMEOUT_S=180       # runnel-verify check
POLL_S=0.5

NODES=3
TOPIC=chaos
PARTITIONS=3
GROUP=runnel-verify
RATE=${CHAOS_RATE:-100}
PRODUCERS=2
CONSUMERS=2
# The smallest segment the broker accepts (16 MiB; the default 128 MiB makes each run's data dir ~600 MB).
SEGMENT_BYTES=16777216

SCENARIO=""
WORK=""
BOOT=""
PEERS=""
declare -a PORT=() PID=() EXTRA_PIDS=()
VERIFY_PID=""
RUN_RC=""
NOTE=""

log() { echo "[$SCENARIO $(date +%T)] $*" >&2; }

# quick: true under `run-all.sh --quick`.
quick() { [ "${CHAOS_QUICK:-0}" = 1 ]; }

# pace S: the schedule's pause between faults (not a wait for a condition). In the background, so that INT/TERM
# interrupt it at once (bash runs a trap only after a foreground command ends); the EXIT trap kills it.
PACE_PID=""
pace() {
  sleep "$1" &
  PACE_PID=$!
  wait "$PACE_PID"
  PACE_PID=""
}

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1]);s.close()'; }

cli() { timeout "$CALL_TIMEOUT_S" "$CLI" "$@"; }

# own PID: PID is a live child of this script (so a recorded pid that exited and was reused is never signalled).
own() { [ -n "${1:-}" ] && [ "$(ps -o ppid= -p "$1" 2>/dev/null | tr -d ' ')" = "$$" ]; }

# sig SIGNAL PID: signals PID only if it is still a child of this script.
sig() { own "$2" && { kill "-$1" "$2"; } 2>/dev/null; }

# kill_own PID...: SIGCONT then kill -9 each pid that is still a child of this script, then reap them.
kill_own() {
  local p
  # bash reports each killed background job on stderr ("Killed ..."): not news here.
  exec 3>&2 2>/dev/null
  for p in "$@"; do
    sig CONT "$p" && sig KILL "$p"
  done
  for p in "$@"; do
    [ -n "$p" ] && { wait "$p"; } 2>/dev/null
  done
  exec 2>&3 3>&-
}

chaos_cleanup() {
  local rc=$?
  trap '' INT TERM
  kill_own "${EXTRA_PIDS[@]:-}" "$VERIFY_PID" "$PACE_PID"
  backend_cleanup "$rc"
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    if [ "$rc" != 0 ] || [ "${CHAOS_KEEP:-0}" = 1 ]; then
      log "kept $WORK (history: $WORK/history.jsonl)"
    else
      rm -rf "$WORK"
    fi
  fi
  exit "$rc"
}

# chaos_init NAME: checks the binaries (and the backend's prerequisites), makes the temp dir, installs the
# cleanup trap.
chaos_init() {
  SCENARIO=$1
  backend_init
  WORK=$(mktemp -d "/tmp/runnel-chaos-$SCENARIO.XXXXXX")
  trap chaos_cleanup EXIT
  trap 'exit 130' INT TERM
  log "work dir $WORK, binaries $BIN_DIR, backend $CHAOS_BACKEND"
}

# require_docker: a scenario that needs a network per broker prints a SKIP line and exits 0 on loopback.
require_docker() {
  [ "$CHAOS_BACKEND" = docker ] && return 0
  echo "$1: verdict=SKIP (needs CHAOS_BACKEND=docker: a network namespace per broker)"
  exit 0
}

# ---- loopback backend (docker-lib.sh redefines these under CHAOS_BACKEND=docker) ----

backend_init() {
  local b
  for b in "$BROKER" "$CLI" "$VERIFY"; do
    [ -x "$b" ] || { echo "$SCENARIO: no binary $b (cargo build --$CHAOS_PROFILE --bins, or set RUNNEL_BIN_DIR)" >&2; exit 2; }
  done
}

backend_cleanup() { kill_own "${PID[@]:-}"; }

addr() { echo "127.0.0.1:${PORT[$1]}"; }

# start_node I: starts broker I (1-based) in the background, appending to its log.
start_node() {
  local i=$1
  mkdir -p "$WORK/n$i"
  "$BROKER" --listen "$(addr "$i")" --advertise "$(addr "$i")" --admin-listen 127.0.0.1:0 \
    --data-dir "$WORK/n$i/data" --node-id "$i" --peers "$PEERS" --segment-bytes "$SEGMENT_BYTES" >>"$WORK/n$i.log" 2>&1 </dev/null &
  PID[i]=$!
}

# cluster_start: NODES brokers on free loopback ports; waits until each answers.
cluster_start() {
  local i
  for i in $(seq 1 "$NODES"); do PORT[i]=$(free_port); done
  PEERS=$(for i in $(seq 1 "$NODES"); do printf '%s@%s,' "$i" "$(addr "$i")"; done)
  PEERS=${PEERS%,}
  BOOT=$(for i in $(seq 1 "$NODES"); do printf '%s,' "$(addr "$i")"; done)
  BOOT=${BOOT%,}
  for i in $(seq 1 "$NODES"); do start_node "$i"; done
  for i in $(seq 1 "$NODES"); do
    wait_node_ready "$i" || die "broker $i not ready within ${NODE_READY_WAIT_S}s"
  done
  log "cluster up: $BOOT"
}

node_alive() { own "${PID[$1]:-}" && [ "$(ps -o stat= -p "${PID[$1]}" | cut -c1)" != Z ]; }

# node_log_tail I: the last lines of broker I's log, on one line.
node_log_tail() { tail -2 "$WORK/n$1.log" | tr '\n' ' '; }

kill9_node() {
  log "kill -9 broker $1 (pid ${PID[$1]})"
  { sig KILL "${PID[$1]}"; wait "${PID[$1]}"; } 2>/dev/null
  PID[$1]=""
}

stop_node() { log "SIGSTOP broker $1"; sig STOP "${PID[$1]}"; }
cont_node() { log "SIGCONT broker $1"; sig CONT "${PID[$1]}"; }

restart_node() {
  log "restart broker $1"
  start_node "$1"
}

# heal_node I: SIGCONT broker I if it runs, else restart it.
heal_node() {
  if node_alive "$1"; then sig CONT "${PID[$1]}"; else restart_node "$1"; fi
}

# ---- shared ----

# wait_node_ready I: until broker I answers `cluster health` (joined, controller, leaders), bounded.
wait_node_ready() {
  local i=$1 end=$((SECONDS + NODE_READY_WAIT_S))
  while [ "$SECONDS" -lt "$end" ]; do
    node_alive "$i" || { log "broker $i has exited: $(node_log_tail "$i")"; return 1; }
    cli --brokers "$(addr "$i")" cluster health >/dev/null 2>&1 && return 0
    sleep "$POLL_S"
  done
  return 1
}

# describe_field P FIELD [BROKERS]: FIELD (leader | leader_term | replicas) of partition P of the topic, as one broker
# of BROKERS (default BOOT) sees it.
describe_field() {
  local json
  json=$(cli --brokers "${3:-$BOOT}" --output json topic describe "$TOPIC" 2>/dev/null) || return 1
  python3 -c '
import json, sys
p, f = int(sys.argv[1]), sys.argv[2]
for line in sys.stdin:
    d = json.loads(line)
    if d.get("partition") == p and d.get(f) is not None:
        v = d[f]
        print(" ".join(map(str, v)) if isinstance(v, list) else v)
        sys.exit(0)
sys.exit(1)' "$1" "$2" <<<"$json"
}

# leader_of P: the node id leading partition P (polls until one is known, bounded).
leader_of() {
  local end=$((SECONDS + NODE_READY_WAIT_S)) l
  while [ "$SECONDS" -lt "$end" ]; do
    l=$(describe_field "$1" leader) && [ -n "$l" ] && { echo "$l"; return 0; }
    sleep "$POLL_S"
  done
  return 1
}

# follower_of P: a replica of partition P that is not its leader.
follower_of() {
  local l r
  l=$(leader_of "$1") || return 1
  for r in $(describe_field "$1" replicas); do
    [ "$r" != "$l" ] && { echo "$r"; return 0; }
  done
  return 1
}

# settled_via I: broker I sees NODES brokers, a controller, no leaderless and no under-replicated partition.
settled_via() {
  local json
  json=$(cli --brokers "$(addr "$1")" --output json cluster info 2>/dev/null) || return 1
  python3 -c '
import json, sys
i = json.loads(sys.argv[1]); n = int(sys.argv[2])
ok = (len(i["brokers"]) == n and i["controller_id"] is not None
      and i["leaderless_partitions"] == 0 and i["under_replicated_partitions"] == 0)
sys.exit(0 if ok else 1)' "$json" "$NODES"
}

# wait_converged: every broker settled (bounded).
wait_converged() {
  local end=$((SECONDS + CONVERGE_WAIT_S)) i all
  while [ "$SECONDS" -lt "$end" ]; do
    all=1
    for i in $(seq 1 "$NODES"); do settled_via "$i" || { all=0; break; }; done
    [ "$all" = 1 ] && return 0
    sleep "$POLL_S"
  done
  return 1
}

# topic_create: the RF=3 topic, retried while the controller is elected; then waits until it is settled.
topic_create() {
  local end=$((SECONDS + TOPIC_CREATE_WAIT_S))
  while [ "$SECONDS" -lt "$end" ]; do
    cli --brokers "$BOOT" topic create "$TOPIC" --partitions "$PARTITIONS" --replication-factor "$NODES" \
      >/dev/null 2>&1 && break
    # An attempt that timed out may still have been applied.
    cli --brokers "$BOOT" topic describe "$TOPIC" >/dev/null 2>&1 && break
    sleep "$POLL_S"
  done
  wait_converged || die "topic $TOPIC not settled within ${CONVERGE_WAIT_S}s"
}

# verify_start DURATION_S: runnel-verify run in the background.
verify_start() {
  "$VERIFY" run --brokers "$BOOT" --topic "$TOPIC" --partitions "$PARTITIONS" --replication-factor "$NODES" \
    --producers "$PRODUCERS" --consumers "$CONSUMERS" --group "$GROUP" --rate "$RATE" --duration-s "$1" \
    --history "$WORK/history.jsonl" ${CHAOS_VERIFY_ARGS:-} >"$WORK/run.log" 2>&1 </dev/null &
  VERIFY_PID=$!
  VERIFY_END=$((SECONDS + $1))
  log "runnel-verify run for ${1}s (pid $VERIFY_PID)"
}

# remaining: seconds left of the run's producing window.
remaining() { echo $((VERIFY_END - SECONDS)); }

verify_running() { own "$VERIFY_PID" && [ "$(ps -o stat= -p "$VERIFY_PID" | cut -c1)" != Z ]; }

# verify_wait: until runnel-verify run exits (bounded by its duration + VERIFY_GRACE_S); sets RUN_RC.
verify_wait() {
  local end=$((VERIFY_END + VERIFY_GRACE_S))
  while verify_running && [ "$SECONDS" -lt "$end" ]; do sleep "$POLL_S"; done
  if verify_running; then
    log "runnel-verify run still going ${VERIFY_GRACE_S}s after its duration: killed"
    sig KILL "$VERIFY_PID"
  fi
  wait "$VERIFY_PID" 2>/dev/null
  RUN_RC=$?
  VERIFY_PID=""
  log "run: $(grep -E '^run:' "$WORK/run.log" || tail -2 "$WORK/run.log" | tr '\n' ' ') (exit $RUN_RC)"
}

# heal: heals every node (loopback: SIGCONT, or restart if dead; docker: also removes network faults).
heal() {
  local i
  for i in $(seq 1 "$NODES"); do heal_node "$i"; done
}

die() {
  echo "$SCENARIO: attempted=0 acked=0 lost=0 duplicates=0 inconsistent=0 max_unavailability_s=0 verdict=FAIL"
  log "FAIL: $*"
  exit 1
}

# chaos_finish: heal, wait for the run and for convergence, check, print the result line; exits.
chaos_finish() {
  heal
  verify_wait
  # A scenario may add to the history before the check (consumer-crash appends its consumers' records).
  if declare -F pre_check >/dev/null; then pre_check; fi
  local i
  for i in $(seq 1 "$NODES"); do wait_node_ready "$i" || NOTE+=" broker $i not ready;"; done
  wait_converged || NOTE+=" not converged within ${CONVERGE_WAIT_S}s;"
  timeout "$CHECK_TIMEOUT_S" "$VERIFY" check --brokers "$BOOT" --topic "$TOPIC" --history "$WORK/history.jsonl" \
    >"$WORK/check.log" 2>&1
  local check_rc=$? figures verdict=PASS
  figures=$(grep -E '^figures: ' "$WORK/check.log" | tail -1)
  figures=${figures#figures: }
  [ -n "$figures" ] || { figures="attempted=0 acked=0 lost=0 duplicates=0 inconsistent=0 max_unavailability_s=0"; NOTE+=" no figures;"; }
  [ "$check_rc" = 0 ] || { verdict=FAIL; NOTE+=" check exit $check_rc;"; }
  [ "$RUN_RC" = 0 ] || { verdict=FAIL; NOTE+=" run exit $RUN_RC;"; }
  case "$figures" in *" acked=0 "*) verdict=FAIL; NOTE+=" nothing acknowledged;" ;; esac
  echo "$SCENARIO: $figures verdict=$verdict"
  log "$(grep -E '^consumers ' "$WORK/check.log" | tr -s ' ')"
  if [ "$verdict" = PASS ]; then
    [ -z "$NOTE" ] || log "notes:$NOTE"
    exit 0
  fi
  log "FAIL:$NOTE see $WORK/check.log, $WORK/run.log"
  grep -vE '^(final read|$)' "$WORK/check.log" | head -30 >&2
  exit 1
}

case "$CHAOS_BACKEND" in
  loopback) ;;
  docker)
    # shellcheck source=scripts/chaos/docker-lib.sh
    . "$(dirname "${BASH_SOURCE[0]}")/docker-lib.sh"
    ;;
  *) echo "CHAOS_BACKEND must be loopback or docker, not '$CHAOS_BACKEND'" >&2; exit 2 ;;
esac
