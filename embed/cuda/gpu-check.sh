#!/bin/bash
# Builds and runs the CUDA backend's golden test and throughput bench on a
# machine with a GPU, without meson or the rest of the project: it compiles
# common/error.c, the model loader, tokenizer and CPU backend, the CUDA
# backend and embed/cuda/gpu_check.c straight with gcc and nvcc; and, when
# .gpu/gen holds the generated wire code, embed/cuda/server_check.c: the
# embedding server's batcher in process on the GPU (GPU_CHECK_SERVER=0 skips
# it).
#
# What it needs beside nvcc, cuBLAS and gcc: the Debian packages of cJSON,
# utf8proc, OpenBLAS and xxHash as .deb files in .gpu/debs/ (unpacked into a
# prefix under /tmp, never into /), the model in .gpu/model/ and golden.jsonl
# in .gpu/ (both defaults; arguments override them). See the end of this
# file for how to fill .gpu/ on a development machine.
#
#   embed/cuda/gpu-check.sh [MODEL_DIR [GOLDEN]]
#
# Results (JSON lines) go to stdout and, when $OUT is set, to $OUT/check.jsonl
# (and the sanitizers' reports to $OUT/sanitize-*.txt); the exit status is
# gpu_check's (0: every check passed), else 9 when a sanitizer reported.
# Knobs: GPU_CHECK_ARGS (more gpu_check flags), GPU_CHECK_PROFILE=0 (no ncu),
# GPU_CHECK_SANITIZE=0 (no compute-sanitizer), GPU_CHECK_TOOLS (its tools;
# default "memcheck racecheck initcheck").
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
gpu=$root/.gpu
model=${1:-$gpu/model}
golden=${2:-$gpu/golden.jsonl}
cuda=${CUDA_HOME:-/usr/local/cuda}
nvcc=$cuda/bin/nvcc
out=${OUT:-}
work=$(mktemp -d /tmp/shoal-gpu.XXXXXX)
prefix=$work/prefix
jobs=$(nproc 2>/dev/null || echo 4)

# ---- the libraries, from .debs ----------------------------------------------
mkdir -p "$prefix"
for f in "$gpu"/debs/*.deb; do
	dpkg-deb -x "$f" "$prefix"
done
lib=$prefix/usr/lib/x86_64-linux-gnu
blas=$lib/openblas-pthread
inc=$prefix/usr/include
export LD_LIBRARY_PATH=$lib:$blas:$cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

# ---- build --------------------------------------------------------------------
cflags=(-std=c17 -O2 -g -D_GNU_SOURCE -fno-strict-aliasing -Wall -Wextra
	-Wno-unused-parameter -I"$root/embed" -I"$root/common" -I"$work"
	-I"$inc" -I"$inc/x86_64-linux-gnu/openblas-pthread")
kargs=(-fno-signed-zeros -fno-trapping-math -fassociative-math)
printf '#define HAVE_CUDA 1\n#define SHOAL_VERSION "0.1.0"\n' >"$work/shoal_config.h"

objs=()
cc_obj() { # name, source, extra flags...
	local name=$1 src=$2
	shift 2
	gcc "${cflags[@]}" "$@" -c "$src" -o "$work/$name.o" &
	objs+=("$work/$name.o")
}
cc_obj error "$root/common/error.c"
cc_obj model "$root/embed/model.c"
cc_obj tokenizer "$root/embed/tokenizer.c"
cc_obj kgeneric "$root/embed/cpu_kernels.c" "${kargs[@]}" -DEMBED_KVARIANT=generic
cc_obj kavx2 "$root/embed/cpu_kernels.c" "${kargs[@]}" -mavx2 -mfma \
	-DEMBED_KVARIANT=avx2
cc_obj kavx512 "$root/embed/cpu_kernels.c" "${kargs[@]}" -mavx512f \
	-mavx512vl -mavx2 -mfma -mprefer-vector-width=512 \
	-DEMBED_KVARIANT=avx512
cc_obj cpu "$root/embed/cpu.c" -DEMBED_HAVE_AVX2=1 -DEMBED_HAVE_AVX512=1
cc_obj gpu_check "$root/embed/cuda/gpu_check.c"
if [ -f "$root/embed/bert_bench.c" ]; then
	gcc "${cflags[@]}" -DEMBED_HAVE_CUDA_BACKEND=1 \
		-c "$root/embed/bert_bench.c" -o "$work/bert_bench.o" &
fi
# the same nvcc flags as embed/cuda/meson.build, warnings fatal
"$nvcc" -std=c++17 -O3 --use_fast_math \
	-gencode arch=compute_80,code=sm_80 \
	-gencode arch=compute_90,code=sm_90 \
	-gencode arch=compute_80,code=compute_80 \
	-Xcompiler -fPIC,-fno-exceptions,-fno-rtti,-Wall,-Wextra,-Wno-unused-parameter,-fno-strict-aliasing \
	-Werror all-warnings -I"$root/embed" -I"$root/common" -I"$work" \
	-c "$root/embed/cuda/bert_cuda.cu" -o "$work/bert_cuda.o" &
objs+=("$work/bert_cuda.o")
wait_all() {
	local rc=0
	for p in $(jobs -p); do
		wait "$p" || rc=1
	done
	return $rc
}
wait_all
gcc -o "$work/gpu_check" "${objs[@]}" -L"$lib" -L"$blas" -L"$cuda/lib64" \
	-Wl,-rpath,"$lib:$blas:$cuda/lib64" -lopenblas -lcjson -lutf8proc \
	-lxxhash -lcublas -lcudart -lstdc++ -lm -lpthread
if [ -f "$work/bert_bench.o" ]; then
	objs_bb=("${objs[@]/$work\/gpu_check.o/$work/bert_bench.o}")
	gcc -o "$work/bert_bench" "${objs_bb[@]}" -L"$lib" -L"$blas" \
		-L"$cuda/lib64" -Wl,-rpath,"$lib:$blas:$cuda/lib64" -lopenblas \
		-lcjson -lutf8proc -lxxhash -lcublas -lcudart -lstdc++ -lm \
		-lpthread
fi

# the embedding server's batcher, in process (embed/cuda/server_check.c):
# needs the wire code generated here (.gpu/gen) and nng / protobuf-c .debs
if [ "${GPU_CHECK_SERVER:-1}" = 1 ] && [ -f "$gpu/gen/shoal.pb-c.c" ]; then
	sflags=("${cflags[@]}" -DEMBED_HAVE_CUDA_BACKEND=1 -I"$root/common/serve" -I"$root/common/index"
		-I"$gpu/gen")
	srcs=("$root/embed/embed_server.c" "$root/embed/batcher.c"
		"$root/embed/cache.c" "$root/common/serve/wire.c"
		"$root/common/serve/wire_filter.c" "$root/common/serve/arena.c"
		"$root/common/serve/dispatch.c" "$root/common/serve/metrics.c"
		"$root/common/serve/log.c" "$root/common/serve/rpc.c"
		"$root/common/index/pid.c" "$root/common/index/filter.c"
		"$root/common/index/filter_parse.c" "$gpu/gen/shoal.pb-c.c"
		"$root/embed/cuda/server_check.c")
	sobjs=()
	for f in "${srcs[@]}"; do
		o=$work/s_$(basename "$f" .c).o
		gcc "${sflags[@]}" -c "$f" -o "$o" &
		sobjs+=("$o")
	done
	wait_all
	base=()
	for o in "${objs[@]}"; do
		[ "$o" = "$work/gpu_check.o" ] || base+=("$o")
	done
	gcc -o "$work/server_check" "${sobjs[@]}" "${base[@]}" -L"$lib" \
		-L"$blas" -L"$cuda/lib64" -Wl,-rpath,"$lib:$blas:$cuda/lib64" \
		-lnng -lprotobuf-c -lopenblas -lcjson -lutf8proc -lxxhash \
		-lcublas -lcudart -lstdc++ -lm -lpthread ||
		echo "server_check: build failed"
fi

# ---- run ------------------------------------------------------------------------
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm \
	--format=csv,noheader || true
log() {
	if [ -n "$out" ]; then
		tee -a "$out/check.jsonl"
	else
		cat
	fi
}
rc=0
"$work/gpu_check" "$model" "$golden" ${GPU_CHECK_ARGS:-} | log ||
	rc=$?

# the embedding tier's own bench (embed/bert_bench.c), CPU and CUDA rows
if [ -f "$root/embed/bert_bench.c" ]; then
	echo "== bert_bench"
	timeout 180 "$work/bert_bench" "$model" 1 1 8 64 256 1024 | log || true
fi

if [ -x "$work/server_check" ]; then
	echo "== server_check: the batcher in process, cache off"
	timeout 240 "$work/server_check" "$model" "${SERVER_CHECK_SECONDS:-3}" |
		log || true
fi

# per-kernel GPU time of three forward passes of 1024 short queries
if [ "${GPU_CHECK_PROFILE:-1}" = 1 ] && command -v ncu >/dev/null; then
	echo "== ncu: kernel time, 3 forwards of 1024 short queries"
	timeout 300 ncu --metrics gpu__time_duration.sum --csv \
		"$work/gpu_check" "$model" "$golden" --profile \
		>"$work/ncu.csv" 2>"$work/ncu.err" || tail -5 "$work/ncu.err"
	python3 - "$work/ncu.csv" <<'EOF' | log
import csv, collections, json, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
if rows:
    h = rows[0]
    kn, mv, mu = h.index("Kernel Name"), h.index("Metric Value"), h.index("Metric Unit")
    tot = collections.defaultdict(float)
    cnt = collections.Counter()
    for r in rows[1:]:
        v = float(r[mv].replace(",", ""))
        v *= {"nsecond": 1e-3, "usecond": 1, "msecond": 1e3}.get(r[mu], 1)
        name = r[kn].split("(")[0][:60]
        tot[name] += v
        cnt[name] += 1
    for name, us in sorted(tot.items(), key=lambda x: -x[1])[:25]:
        print(json.dumps({"profile": name, "calls": cnt[name],
                          "us_per_forward": round(us / 3, 1)}))
    print(json.dumps({"profile": "TOTAL",
                      "us_per_forward": round(sum(tot.values()) / 3, 1)}))
EOF
fi
# compute-sanitizer over the golden checks (no bench): out-of-bounds
# accesses, shared-memory races and uninitialised reads; the summary counts
# the reports by kernel (cuBLAS's own kernels are named nvjet_* / *gemm*)
if [ "${GPU_CHECK_SANITIZE:-1}" = 1 ] && command -v compute-sanitizer >/dev/null; then
	for tool in ${GPU_CHECK_TOOLS:-memcheck racecheck initcheck}; do
		echo "== compute-sanitizer --tool $tool"
		srep=$work/sanitize-$tool.txt
		timeout 150 compute-sanitizer --tool "$tool" --print-limit 100000 \
			--error-exitcode 9 "$work/gpu_check" "$model" "$golden" \
			--no-bench --no-cpu >"$srep" 2>&1 || rc=$((rc ? rc : 9))
		grep -E '^\{"check":"(golden|done)' "$srep" || true
		grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$srep" || true
		grep -oE '^=+ +(at|Error: Race reported between [A-Za-z]+ access at) [A-Za-z_0-9<>:]+' "$srep" |
			sed -E 's/.* at //' | sort | uniq -c | sort -rn | head -20 || true
		[ -n "$out" ] && head -c 2000000 "$srep" >"$out/sanitize-$tool.txt"
	done
fi
exit $rc

# ---- filling .gpu/ (on the development machine) ----------------------------------
#   mkdir -p .gpu/debs .gpu/model && echo /.gpu/ >>.git/info/exclude
#   (cd .gpu/debs && apt-get download libcjson1 libcjson-dev libutf8proc2 \
#       libutf8proc-dev libopenblas0-pthread libopenblas-pthread-dev \
#       libopenblas-dev libopenblas0 libgfortran5 libquadmath0 libxxhash0 \
#       libxxhash-dev)
#   cp models/all-MiniLM-L6-v2/* .gpu/model/
#   cp ../shared/data/minilm/golden.jsonl .gpu/
# and for the server check (embed/cuda/server_check.c):
#   (cd .gpu/debs && apt-get download libnng1 libnng-dev libprotobuf-c1 \
#       libprotobuf-c-dev libmbedtls14 libmbedx509-1 libmbedcrypto7)
#   mkdir -p .gpu/gen && cp build/proto/shoal.pb-c.[ch] .gpu/gen/
