#!/usr/bin/env bash
# A local shoal cluster on this machine: one router and N nodes on loopback,
# each with its data dir and log under one folder, and one shoal-embed
# (the embedding server, with the MiniLM model of deploy/fetch-model.sh)
# when it is built and the model is installed.
#
#   deploy/local-cluster.sh up [--nodes N] [--dir DIR]   start (default 3 nodes)
#   deploy/local-cluster.sh status [--dir DIR]           who runs, health
#   deploy/local-cluster.sh down [--dir DIR]             stop cleanly (SIGTERM)
#   deploy/local-cluster.sh url [--dir DIR]              print the router URL
#   deploy/local-cluster.sh embed-url [--dir DIR]        print shoal-embed's URL
#   deploy/local-cluster.sh kafka-url [--dir DIR]        print the Kafka bootstrap
#   deploy/local-cluster.sh etcd-url [--dir DIR]         print etcd's client URL
#
# `up --kafka [--topic T]` also starts shoal-kafka-mock, a TEST Kafka cluster
# (librdkafka's in-memory mock brokers: no durability, gone when stopped;
# topic T, default "products", with 8 partitions), and one shoal-ingest
# worker that consumes T into the cluster (dead letters to T.dlq). Point a
# producer at `kafka-url`. For a real Kafka, run shoal-ingest yourself
# (docs/ingest.md). Once given, --kafka sticks to DIR.
#
# `up --etcd` also starts a local etcd (Debian's etcd-server, data in
# DIR/etcd) and keeps the router's cluster map there instead of in
# DIR/router/cluster.json, as a cluster of several routers does
# (docs/rebalancing.md); `etcd-url` prints its client URL. It sticks to DIR
# too.
#
# DIR defaults to ./shoal-cluster. The first `up` picks free ports and
# writes them to DIR/cluster.env; later `up`s reuse them, so the router's
# cluster map (DIR/router/cluster.json) keeps pointing at the nodes. The
# binaries come from $SHOAL_BUILD_DIR (default: build).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${SHOAL_BUILD_DIR:-$here/build}
cmd=${1:-}
shift || true
dir=./shoal-cluster
nodes=3
kafka=0
etcd=0
topic=products
while (($#)); do
  case $1 in
    --nodes) nodes=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --kafka) kafka=1; shift ;;
    --etcd) etcd=1; shift ;;
    --topic) topic=$2; shift 2 ;;
    *) echo "local-cluster: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ $nodes =~ ^[0-9]+$ ]] && ((nodes >= 1 && nodes <= 64)) ||
  { echo "local-cluster: --nodes must be 1..64" >&2; exit 2; }
[[ $topic =~ ^[A-Za-z0-9._-]{1,200}$ ]] ||
  { echo "local-cluster: --topic must be 1..200 of [A-Za-z0-9._-]" >&2; exit 2; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
env_file=$dir/cluster.env

die() { echo "local-cluster: $*" >&2; exit 1; }

# Free TCP ports on 127.0.0.1, asked from the kernel.
free_ports() {
  /usr/bin/env python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

health() { # URL -> prints the HTTP status of /healthz, or "-"
  /usr/bin/env python3 - "$1" <<'PY'
import sys, urllib.request, urllib.error
try:
    print(urllib.request.urlopen(sys.argv[1] + "/healthz", timeout=2).status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print("-")
PY
}

# Starts one process in the background with its own session (so a Ctrl-C
# in this shell does not reach it), logging to DIR/NAME.log.
launch() { # NAME BINARY ARGS...
  local name=$1; shift
  rm -f "$dir/$name.ready"
  setsid "$@" --ready-file "$dir/$name.ready" >>"$dir/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/$name.pid"
}

wait_ready() { # NAME
  for _ in $(seq 1 600); do
    [[ -f $dir/$1.ready ]] && return 0
    alive "$dir/$1.pid" || die "$1 exited while starting; see $dir/$1.log"
    sleep 0.1
  done
  die "$1 did not start within 60 s; see $dir/$1.log"
}

cmd_up() {
  [[ -x $build/node/shoal-node && -x $build/router/shoal-router ]] ||
    die "no binaries in $build (run: meson setup build && ninja -C build)"
  if [[ ! -f $env_file ]]; then
    read -r -a p <<<"$(free_ports $((2 * nodes + 2)))"
    {
      echo "NODES=$nodes"
      echo "ROUTER_PORT=${p[0]}"
      echo "ROUTER_METRICS=${p[1]}"
      for ((i = 1; i <= nodes; i++)); do
        echo "NODE${i}_PORT=${p[$((2 * i))]}"
        echo "NODE${i}_METRICS=${p[$((2 * i + 1))]}"
      done
    } >"$env_file"
  fi
  if ! grep -q '^EMBED_PORT=' "$env_file"; then
    read -r -a p <<<"$(free_ports 2)"
    { echo "EMBED_PORT=${p[0]}"; echo "EMBED_METRICS=${p[1]}"; } >>"$env_file"
  fi
  if ((etcd)) && ! grep -q '^ETCD_PORT=' "$env_file"; then
    read -r -a p <<<"$(free_ports 2)"
    { echo "ETCD_PORT=${p[0]}"; echo "ETCD_PEER_PORT=${p[1]}"; } >>"$env_file"
  fi
  # shellcheck disable=SC1090
  source "$env_file"
  local etcd_args=()
  if [[ -n ${ETCD_PORT:-} ]]; then
    local etcd_bin
    etcd_bin=$(command -v etcd || true)
    [[ -x $etcd_bin ]] || die "no etcd (apt-get install etcd-server)"
    local curl=http://127.0.0.1:$ETCD_PORT purl=http://127.0.0.1:$ETCD_PEER_PORT
    if ! alive "$dir/etcd.pid"; then
      setsid "$etcd_bin" --name shoal-local --data-dir "$dir/etcd" \
        --listen-client-urls "$curl" --advertise-client-urls "$curl" \
        --listen-peer-urls "$purl" --initial-advertise-peer-urls "$purl" \
        --initial-cluster "shoal-local=$purl" >>"$dir/etcd.log" 2>&1 </dev/null &
      echo $! >"$dir/etcd.pid"
    fi
    local up=0
    for _ in $(seq 1 300); do
      alive "$dir/etcd.pid" || die "etcd exited while starting; see $dir/etcd.log"
      if /usr/bin/env python3 -c "import sys,urllib.request; sys.exit(0 if b'true' in urllib.request.urlopen('$curl/health', timeout=1).read() else 1)" 2>/dev/null; then
        up=1; break
      fi
      sleep 0.1
    done
    ((up)) || die "etcd did not start within 30 s; see $dir/etcd.log"
    etcd_args=(--etcd "$curl")
  fi
  local list=""
  for ((i = 1; i <= NODES; i++)); do
    local port_var=NODE${i}_PORT metrics_var=NODE${i}_METRICS
    local url=tcp://127.0.0.1:${!port_var}
    list+=${list:+,}$url
    if alive "$dir/node$i.pid"; then continue; fi
    launch "node$i" "$build/node/shoal-node" --listen "$url" \
      --metrics "127.0.0.1:${!metrics_var}" --data-dir "$dir/node$i"
  done
  for ((i = 1; i <= NODES; i++)); do wait_ready "node$i"; done
  if ! alive "$dir/router.pid"; then
    launch router "$build/router/shoal-router" \
      --listen "tcp://127.0.0.1:$ROUTER_PORT" \
      --metrics "127.0.0.1:$ROUTER_METRICS" --data-dir "$dir/router" \
      --nodes "$list" "${etcd_args[@]}"
  fi
  wait_ready router
  for _ in $(seq 1 100); do
    [[ $(health "http://127.0.0.1:$ROUTER_METRICS") == 200 ]] && break
    sleep 0.1
  done
  local model=$here/models/all-MiniLM-L6-v2
  if [[ -x $build/embed/shoal-embed && -f $model/config.json ]]; then
    if ! alive "$dir/embed.pid"; then
      launch embed "$build/embed/shoal-embed" \
        --listen "tcp://127.0.0.1:$EMBED_PORT" \
        --metrics "127.0.0.1:$EMBED_METRICS" --model "minilm=$model" \
        --router "tcp://127.0.0.1:$ROUTER_PORT"
    fi
    wait_ready embed
  fi
  if ((kafka)) && ! grep -q '^KAFKA_TOPIC=' "$env_file"; then
    read -r -a p <<<"$(free_ports 1)"
    { echo "KAFKA_TOPIC=$topic"; echo "INGEST_METRICS=${p[0]}"; } >>"$env_file"
    # shellcheck disable=SC1090
    source "$env_file"
  fi
  if [[ -n ${KAFKA_TOPIC:-} ]]; then
    [[ -x $build/deploy/kafka-mock/shoal-kafka-mock && -x $build/ingest/shoal-ingest ]] ||
      die "no shoal-kafka-mock or shoal-ingest in $build"
    if ! alive "$dir/kafka.pid"; then
      launch kafka "$build/deploy/kafka-mock/shoal-kafka-mock" --brokers 3 \
        --topic "$KAFKA_TOPIC:8" --topic "$KAFKA_TOPIC.dlq:1"
    fi
    wait_ready kafka
    local bootstrap
    bootstrap=$(sed -n 's/^bootstrap=//p' "$dir/kafka.ready")
    if ! alive "$dir/ingest.pid"; then
      local embed_args=()
      alive "$dir/embed.pid" && embed_args=(--embed "tcp://127.0.0.1:$EMBED_PORT")
      launch ingest "$build/ingest/shoal-ingest" --brokers "$bootstrap" \
        --topic "$KAFKA_TOPIC" --router "tcp://127.0.0.1:$ROUTER_PORT" \
        --metrics "127.0.0.1:$INGEST_METRICS" "${embed_args[@]}"
    fi
    wait_ready ingest
  fi
  echo "local-cluster: up: router tcp://127.0.0.1:$ROUTER_PORT" \
    "(metrics http://127.0.0.1:$ROUTER_METRICS), $NODES nodes," \
    "$(alive "$dir/embed.pid" && echo "shoal-embed tcp://127.0.0.1:$EMBED_PORT," )" \
    "$(alive "$dir/ingest.pid" && echo "Kafka (TEST) $(cmd_kafka_url) topic $KAFKA_TOPIC -> shoal-ingest (metrics http://127.0.0.1:$INGEST_METRICS)," )" \
    "$(alive "$dir/etcd.pid" && echo "the map in etcd http://127.0.0.1:$ETCD_PORT," )" \
    "data in $dir" >&2
}

cmd_down() {
  [[ -f $env_file ]] || { echo "local-cluster: nothing in $dir" >&2; return 0; }
  # shellcheck disable=SC1090
  source "$env_file"
  local names=(ingest kafka embed router)
  for ((i = 1; i <= NODES; i++)); do names+=("node$i"); done
  names+=(etcd)
  for n in "${names[@]}"; do
    alive "$dir/$n.pid" && kill -TERM "$(cat "$dir/$n.pid")" 2>/dev/null || true
  done
  for n in "${names[@]}"; do
    for _ in $(seq 1 200); do alive "$dir/$n.pid" || break; sleep 0.05; done
    if alive "$dir/$n.pid"; then
      echo "local-cluster: $n did not stop in 10 s; killing it" >&2
      kill -KILL "$(cat "$dir/$n.pid")" 2>/dev/null || true
    fi
    rm -f "$dir/$n.pid" "$dir/$n.ready"
  done
  echo "local-cluster: down (data kept in $dir)" >&2
}

cmd_status() {
  [[ -f $env_file ]] || die "no cluster in $dir"
  # shellcheck disable=SC1090
  source "$env_file"
  local rc=0
  printf '%-8s %-8s %-26s %s\n' NAME PID ADDRESS HEALTH
  local pid h
  pid=$(alive "$dir/router.pid" && cat "$dir/router.pid" || echo -)
  h=$(health "http://127.0.0.1:$ROUTER_METRICS")
  [[ $h == 200 ]] || rc=1
  printf '%-8s %-8s %-26s %s\n' router "$pid" "tcp://127.0.0.1:$ROUTER_PORT" "$h"
  if [[ -n ${EMBED_PORT:-} && -f $dir/embed.pid ]]; then
    pid=$(alive "$dir/embed.pid" && cat "$dir/embed.pid" || echo -)
    h=$(health "http://127.0.0.1:$EMBED_METRICS")
    [[ $h == 200 ]] || rc=1
    printf '%-8s %-8s %-26s %s\n' embed "$pid" "tcp://127.0.0.1:$EMBED_PORT" "$h"
  fi
  if [[ -n ${KAFKA_TOPIC:-} ]]; then
    pid=$(alive "$dir/kafka.pid" && cat "$dir/kafka.pid" || echo -)
    [[ $pid != - ]] || rc=1
    printf '%-8s %-8s %-26s %s\n' kafka "$pid" "$(cmd_kafka_url 2>/dev/null || echo -)" "(TEST broker)"
    pid=$(alive "$dir/ingest.pid" && cat "$dir/ingest.pid" || echo -)
    h=$(health "http://127.0.0.1:$INGEST_METRICS")
    [[ $h == 200 ]] || rc=1
    printf '%-8s %-8s %-26s %s\n' ingest "$pid" "topic $KAFKA_TOPIC" "$h"
  fi
  if [[ -n ${ETCD_PORT:-} ]]; then
    pid=$(alive "$dir/etcd.pid" && cat "$dir/etcd.pid" || echo -)
    [[ $pid != - ]] || rc=1
    printf '%-8s %-8s %-26s %s\n' etcd "$pid" "http://127.0.0.1:$ETCD_PORT" "(the cluster map)"
  fi
  for ((i = 1; i <= NODES; i++)); do
    local port_var=NODE${i}_PORT metrics_var=NODE${i}_METRICS
    pid=$(alive "$dir/node$i.pid" && cat "$dir/node$i.pid" || echo -)
    h=$(health "http://127.0.0.1:${!metrics_var}")
    [[ $h == 200 ]] || rc=1
    printf '%-8s %-8s %-26s %s\n' "node$i" "$pid" "tcp://127.0.0.1:${!port_var}" "$h"
  done
  return $rc
}

cmd_url() {
  [[ -f $env_file ]] || die "no cluster in $dir"
  # shellcheck disable=SC1090
  source "$env_file"
  echo "tcp://127.0.0.1:$ROUTER_PORT"
}

cmd_embed_url() {
  [[ -f $env_file ]] || die "no cluster in $dir"
  # shellcheck disable=SC1090
  source "$env_file"
  [[ -n ${EMBED_PORT:-} ]] || die "no shoal-embed in $dir"
  echo "tcp://127.0.0.1:$EMBED_PORT"
}

cmd_etcd_url() {
  [[ -f $env_file ]] || die "no cluster in $dir"
  # shellcheck disable=SC1090
  source "$env_file"
  [[ -n ${ETCD_PORT:-} ]] || die "no etcd in $dir (up --etcd)"
  echo "http://127.0.0.1:$ETCD_PORT"
}

cmd_kafka_url() {
  [[ -f $dir/kafka.ready ]] && alive "$dir/kafka.pid" || die "no Kafka in $dir"
  sed -n 's/^bootstrap=//p' "$dir/kafka.ready"
}

case $cmd in
  up) cmd_up ;;
  kafka-url) cmd_kafka_url ;;
  etcd-url) cmd_etcd_url ;;
  embed-url) cmd_embed_url ;;
  down) cmd_down ;;
  status) cmd_status ;;
  url) cmd_url ;;
  *) echo "usage: $0 up|down|status|url|embed-url|kafka-url|etcd-url [--nodes N] [--dir DIR] [--kafka [--topic T]] [--etcd]" >&2; exit 2 ;;
esac
