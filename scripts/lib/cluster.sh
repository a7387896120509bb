# Starting Switchyard nodes and a 3-node cluster on one Redis, for the
# benchmark scripts (sourced by scripts/bench-cluster and scripts/compare;
# not run on its own).
#
# The caller sets, before calling:
#   ROUTER   the router binary;
#   SY_LOGS  a folder for the logs (node-PORT.log, redis.log) and cluster.toml;
#   SY_PIN   an array, the command prefix that pins a server to its core
#            (e.g. (taskset -c 0)); empty = unpinned.
# Every process started here is appended to SY_PIDS (sy_track); sy_stop_all
# ends them, and sy_traps makes it run on exit, error, Ctrl-C or SIGTERM.
# START_TIMEOUT_S (default 30) bounds the wait for a process to answer; a
# start that fails ends the script, it is never retried. SY_MAX_PROCS
# (default 16) caps how many processes one script may start: past it the
# script stops, so no loop can ever start servers without end.

SY_PIDS=()

# sy_traps → sy_stop_all on EXIT; INT, TERM and HUP exit (so EXIT runs too).
sy_traps() {
  trap sy_stop_all EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  trap 'exit 129' HUP
}

# sy_track PID → appends PID to SY_PIDS; exits when SY_MAX_PROCS is passed.
sy_track() {
  SY_PIDS+=("$1")
  if ((${#SY_PIDS[@]} > ${SY_MAX_PROCS:-16})); then
    echo "scripts/lib/cluster.sh: more than ${SY_MAX_PROCS:-16} server processes started: stopping them all" >&2
    exit 1
  fi
}

# sy_free_port → prints a free TCP port on 127.0.0.1.
sy_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# sy_fail MESSAGE LOG → the message and the log on stderr, then exit 1.
sy_fail() {
  echo "$1; log ($2):" >&2
  cat "$2" >&2 2>/dev/null || true
  exit 1
}

# sy_start_node CONFIG PORT → starts a router, waits until it answers HTTP;
# its pid in SY_LAST_PID.
sy_start_node() {
  local config=$1 port=$2 log="$SY_LOGS/node-$2.log" i
  "${SY_PIN[@]}" "$ROUTER" --config "$config" --listen "127.0.0.1:$port" >"$log" 2>&1 &
  SY_LAST_PID=$!
  sy_track "$SY_LAST_PID"
  for ((i = 0; i < ${START_TIMEOUT_S:-30} * 10; i++)); do
    curl -s --max-time 2 -o /dev/null "http://127.0.0.1:$port/health" && return 0
    kill -0 "$SY_LAST_PID" 2>/dev/null || sy_fail "the router on port $port exited" "$log"
    sleep 0.1
  done
  sy_fail "the router on port $port did not answer within ${START_TIMEOUT_S:-30}s" "$log"
}

# sy_start_redis → starts a throw-away Redis (no persistence) on a free port;
# sets REDIS_PORT and REDIS_PID.
sy_start_redis() {
  local i
  command -v redis-server >/dev/null || { echo "redis-server is needed for the cluster runs" >&2; exit 1; }
  REDIS_PORT=$(sy_free_port)
  "${SY_PIN[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    >"$SY_LOGS/redis.log" 2>&1 &
  REDIS_PID=$!
  sy_track "$REDIS_PID"
  for ((i = 0; i < ${START_TIMEOUT_S:-30} * 10; i++)); do
    timeout 2 redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0
    kill -0 "$REDIS_PID" 2>/dev/null || sy_fail "redis-server exited" "$SY_LOGS/redis.log"
    sleep 0.1
  done
  sy_fail "redis-server did not answer within ${START_TIMEOUT_S:-30}s" "$SY_LOGS/redis.log"
}

# sy_start_cluster BASE_CONFIG NODES → Redis, then NODES routers on
# BASE_CONFIG plus `[cluster] engine = "redis"` (SY_LOGS/cluster.toml), each on
# a free port. Sets CLUSTER_URLS (comma-separated base URLs, for the
# generator's --url) and CLUSTER_PIDS (the nodes' pids, then Redis's,
# comma-separated, for --server-pid: server CPU and RSS include Redis).
#
# (The loop counter is `k`: it was `_`, which bash resets to the last argument
# of every command, so the count never reached NODES and nodes were started
# until the machine ran out of inotify instances.)
sy_start_cluster() {
  local base=$1 nodes=$2 port urls=() pids=() k
  [[ "$nodes" =~ ^[1-9][0-9]?$ ]] || { echo "sy_start_cluster: bad node count '$nodes'" >&2; exit 2; }
  sy_start_redis
  { cat "$base"
    printf '\n[cluster]\nengine = "redis"\nredis_url = "redis://127.0.0.1:%s"\n' "$REDIS_PORT"
  } >"$SY_LOGS/cluster.toml"
  for ((k = 0; k < nodes; k++)); do
    port=$(sy_free_port)
    sy_start_node "$SY_LOGS/cluster.toml" "$port"
    urls+=("http://127.0.0.1:$port")
    pids+=("$SY_LAST_PID")
  done
  CLUSTER_URLS=$(IFS=,; echo "${urls[*]}")
  CLUSTER_PIDS=$(IFS=,; echo "${pids[*]},$REDIS_PID")
}

# sy_stop_all → ends every process started here (SIGTERM, then SIGKILL after 5 s).
sy_stop_all() {
  local p i
  ((${#SY_PIDS[@]})) || return 0
  for p in "${SY_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for ((i = 0; i < 50; i++)); do
    for p in "${SY_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && break; p=""; done
    [[ -z "${p:-}" ]] && break
    sleep 0.1
  done
  for p in "${SY_PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${SY_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  SY_PIDS=()
}
