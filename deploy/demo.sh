#!/usr/bin/env bash
# The README's first command: installs what is missing, builds shoal, makes
# a clustered data set with exact ground truth, and runs shoal's HNSW side by
# side with hnswlib (and FAISS when built) on it, then prints a comparison at
# equal recall. Later this launches a local cluster instead.
#
#   deploy/demo.sh [N] [DIM]     (default 50000 x 128)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
n=${1:-50000}; dim=${2:-128}

deploy/install-deps.sh
[[ -d build/meson-private ]] || meson setup build >/dev/null
ninja -C build bench/shoal-bench >/dev/null

data=${SHOAL_DATA:-/var/tmp/shoal-data}/gen-$n-$dim
if [[ ! -f $data/groundtruth.ivecs ]]; then
  echo "demo: generating $n x $dim clustered vectors into $data" >&2
  build/bench/shoal-bench gen --n "$n" --dim "$dim" --queries 1000 --out "$data"
fi

engines=shoal
grep -q 'HAVE_HNSWLIB 1' build/shoal_config.h && engines+=,hnswlib
grep -q 'HAVE_FAISS 1' build/shoal_config.h && engines+=,faiss
out=$(mktemp)
common=(--base "$data/base.fvecs" --queries "$data/query.fvecs"
        --groundtruth "$data/groundtruth.ivecs" --ef 10,16,24,32,48,64,96,128)
echo "demo: running $engines (float32), then shoal int8" >&2
build/bench/shoal-bench hnsw --engine "$engines" "${common[@]}" | tee "$out"
build/bench/shoal-bench hnsw --engine shoal --quantize int8 "${common[@]}" | tee -a "$out"
echo >&2
python3 bench/compare.py "$out"
rm -f "$out"
