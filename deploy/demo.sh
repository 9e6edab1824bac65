#!/usr/bin/env bash
# The README's first command: installs what is missing, builds shoal, brings
# up a local cluster (a router and 3 nodes on loopback), loads real product
# data into it — Debian's Fashion-MNIST, 60,000 Zalando article images as
# 784-d vectors with their class as a `category` payload and a synthetic
# `price` — and runs searches with and without a category filter, printing
# recall@10 against exact ground truth and qps / p50 / p99. Then it compares
# shoal's index with hnswlib and FAISS on the same vectors, in process.
# With the embedding server up (built, model installed), it also loads a
# text catalogue (Debian's WordNet: ~10,700 artefacts, clothing, footwear,
# bags and furniture, name + gloss) through the embedding tier and searches
# it by text, with and without a category filter. The cluster is stopped at
# the end (its data stays in ./shoal-cluster).
#
#   deploy/demo.sh              everything
#   deploy/demo.sh --no-peers   skip the in-process comparison
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
peers=1
[[ ${1:-} == --no-peers ]] && peers=0

deploy/install-deps.sh --quiet
[[ -d build/meson-private ]] || meson setup build >/dev/null
ninja -C build >/dev/null

data=${SHOAL_DATA:-/var/tmp/shoal-data}/fmnist
mkdir -p "$(dirname "$data")"
build/bench/shoal-bench fmnist --out "$data" --queries 1000

cluster=${SHOAL_CLUSTER_DIR:-$here/shoal-cluster}
deploy/local-cluster.sh down --dir "$cluster" >/dev/null 2>&1 || true
deploy/local-cluster.sh up --nodes 3 --dir "$cluster"
trap 'deploy/local-cluster.sh down --dir "$cluster"' EXIT
router=$(deploy/local-cluster.sh url --dir "$cluster")
deploy/local-cluster.sh status --dir "$cluster"

echo "demo: loading Fashion-MNIST into the cluster and searching it" >&2
build/bench/shoal-bench cluster --router "$router" --data "$data" \
  --collection products --efs 16,32,64,128 --threads 1,4 --seconds 3 \
  >"$cluster/demo-results.jsonl"
echo "demo: JSON results in $cluster/demo-results.jsonl" >&2

if embed=$(deploy/local-cluster.sh embed-url --dir "$cluster" 2>/dev/null) &&
   [[ -f $cluster/embed.pid ]]; then
  echo "demo: a text catalogue from WordNet, searched by text" >&2
  /usr/bin/env python3 bench/wordnet_catalogue.py "$cluster/catalogue.jsonl" \
    --queries "$cluster/queries.jsonl" --nqueries 200
  PYTHONPATH=$here/client/python SHOAL_LIB=$here/build/client/libshoal.so \
    /usr/bin/env python3 bench/text_search.py --router "$router" --embed "$embed" \
    --catalogue "$cluster/catalogue.jsonl" --queries "$cluster/queries.jsonl" \
    >>"$cluster/demo-results.jsonl"
fi

if ((peers)); then
  engines=shoal
  grep -q 'HAVE_HNSWLIB 1' build/shoal_config.h && engines+=,hnswlib
  grep -q 'HAVE_FAISS 1' build/shoal_config.h && engines+=,faiss
  out=$(mktemp)
  common=(--base "$data/base.fvecs" --queries "$data/query.fvecs"
          --groundtruth "$data/groundtruth.ivecs" --ef 10,16,24,32,48,64,96,128)
  echo "demo: the index in process: $engines (float32), then shoal int8" >&2
  build/bench/shoal-bench hnsw --engine "$engines" "${common[@]}" >"$out"
  build/bench/shoal-bench hnsw --engine shoal --quantize int8 "${common[@]}" >>"$out"
  python3 bench/compare.py "$out"
  rm -f "$out"
fi
