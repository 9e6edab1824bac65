#!/usr/bin/env bash
# shoal's fault-injection suite, in the manner of Jepsen (docs/reliability.md).
#
#   jepsen/run.sh --workload W --nemesis N [--time-limit S] [--seed K] [--out DIR]
#   jepsen/run.sh --all [--time-limit S] [--seeds 1,2,3]   # the full matrix
#   jepsen/run.sh --all --jobs 3 ...                        # in 3 lanes
#   jepsen/run.sh --all --nemeses fsync,write-errors ...    # a part of it
#   jepsen/run.sh --ci                                      # the bounded CI sample
#   jepsen/run.sh --list                                    # workloads and nemeses
#
# Every run happens as root inside its own network, PID and mount namespaces
# (unshare --net --pid --mount --fork --kill-child) under an outer timeout,
# so nothing it starts can outlive it or reach beyond the loopback of that
# namespace: the router binds 127.0.0.10, the nodes 127.0.0.11-13. Each run
# writes history.jsonl, nemesis.jsonl, results.json and the processes' logs
# to its own folder (jepsen/store/... unless --out) and can be replayed from
# its seed. The exit status is 0 when every run checked valid, 1 when one
# did not (a control run that must find loss counts as valid when it does),
# 2 for a usage error, 77 when this machine cannot run it (not root, no
# unshare, no build).
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${SHOAL_BUILD_DIR:-$here/build}
py=/usr/bin/python3

if [[ ${SHOAL_JEPSEN_INNER:-} != 1 ]]; then
  # --list needs neither root nor a build.
  for a in "$@"; do
    [[ $a == --list ]] && exec "$py" "$here/jepsen/harness/jepsen.py" --list
  done
  # Outside: check what is needed, then enter the namespaces.
  [[ $(id -u) -eq 0 ]] || { echo "jepsen: must run as root (namespaces, iptables)" >&2; exit 77; }
  command -v unshare >/dev/null || { echo "jepsen: no unshare" >&2; exit 77; }
  unshare --net --pid --mount --fork --kill-child true 2>/dev/null ||
    { echo "jepsen: this machine does not allow new namespaces (unshare failed)" >&2; exit 77; }
  for b in node/shoal-node router/shoal-router ctl/shoalctl jepsen/client/shoal-jepsen-client; do
    [[ -x $build/$b ]] || { echo "jepsen: $build/$b is not built" >&2; exit 77; }
  done
  # --all --jobs J: the matrix in J lanes, each run in namespaces of its
  # own (so the lanes' addresses cannot collide), then one summary.
  lanes=1 all=0 out= tl=60 seeds=1,2 only=()
  args=("$@")
  for ((i = 0; i < ${#args[@]}; i++)); do
    case ${args[i]} in
      --jobs) lanes=${args[i + 1]:-} ;;
      --all) all=1 ;;
      --out) out=${args[i + 1]:-} ;;
      --time-limit) tl=${args[i + 1]:-} ;;
      --seeds) seeds=${args[i + 1]:-} ;;
      --workloads | --nemeses) only+=("${args[i]}" "${args[i + 1]:-}") ;;
    esac
  done
  if [[ $lanes != 1 ]]; then
    [[ $lanes =~ ^[1-9][0-9]?$ ]] || { echo "jepsen: --jobs takes a count" >&2; exit 2; }
    ((all)) || { echo "jepsen: --jobs goes with --all" >&2; exit 2; }
    out=${out:-$here/jepsen/store/$(date +%Y%m%d-%H%M%S)}
    mkdir -p "$out" || exit 2
    pairs=$("$py" "$here/jepsen/harness/jepsen.py" --pairs --seeds "$seeds" "${only[@]}") || exit 2
    while read -r w n k; do
      while (($(jobs -rp | wc -l) >= lanes)); do wait -n; done
      "$0" --workload "$w" --nemesis "$n" --seed "$k" --time-limit "$tl" \
        --out "$out/$w-$n-$k" >"$out/$w-$n-$k.log" 2>&1 &
    done <<<"$pairs"
    wait
    exec "$py" "$here/jepsen/harness/jepsen.py" --summarize "$out"
  fi
  # The outer bound: the harness's own estimate of the whole run, plus
  # room; a hung run is killed with everything in its namespace.
  limit=$("$py" "$here/jepsen/harness/jepsen.py" --budget "$@") || exit 2
  export SHOAL_JEPSEN_INNER=1 SHOAL_BUILD_DIR=$build
  exec timeout --kill-after=30 "$limit" \
    unshare --net --pid --mount --fork --kill-child --mount-proc \
    "$0" "$@"
fi

# Inside: a loopback of our own with the cluster's addresses.
ip link set lo up
for a in 10 11 12 13; do ip addr add "127.0.0.$a/8" dev lo 2>/dev/null || true; done
iptables -w -L INPUT >/dev/null 2>&1 ||
  echo "jepsen: warning: iptables does not work here: partitions and packet loss will not bite" >&2
exec "$py" "$here/jepsen/harness/jepsen.py" "$@"
