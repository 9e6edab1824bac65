#!/usr/bin/env bash
# Builds and runs one libFuzzer target for a bounded time.
#
#   run-fuzz.sh NAME SECONDS WORKDIR -- SOURCES... [-I... -D...]
#
# Compiles tests/fuzz/fuzz_NAME.c (among SOURCES) with its own clang and
# -fsanitize=fuzzer,address,undefined, whatever compiler built the project,
# writes the target's seed corpus (SHOAL_FUZZ_SEEDS) into WORKDIR and fuzzes
# for SECONDS. Exits 0 when no finding, 1 on a finding (the crashing input
# is left in WORKDIR as crash-*), 77 (meson's SKIP) when clang or libFuzzer
# is missing. CLANG=... picks the compiler; FUZZ_SECONDS=... overrides
# SECONDS (e.g. for a long run by hand).
set -uo pipefail

if [ $# -lt 4 ] || [ "$4" != "--" ]; then
	echo "usage: $0 NAME SECONDS WORKDIR -- SOURCES... [FLAGS...]" >&2
	exit 2
fi
name=$1
seconds=${FUZZ_SECONDS:-$2}
work=$3
shift 4

clang=${CLANG:-}
if [ -z "$clang" ]; then
	for c in clang clang-19 clang-18 clang-17 clang-16 clang-15 clang-14; do
		if command -v "$c" >/dev/null 2>&1; then
			clang=$c
			break
		fi
	done
fi
if [ -z "$clang" ]; then
	echo "SKIP: no clang found (set CLANG=...)"
	exit 77
fi

mkdir -p "$work" || exit 1
probe=$work/probe.c
printf '%s\n' '#include <stdint.h>' '#include <stddef.h>' \
	'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);' \
	'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }' \
	>"$probe"
if ! "$clang" -fsanitize=fuzzer,address,undefined "$probe" -o "$work/probe" \
	>/dev/null 2>&1; then
	echo "SKIP: $clang cannot link -fsanitize=fuzzer (libclang-rt-*-dev missing?)"
	exit 77
fi

bin=$work/fuzz_$name
echo "building $bin with $clang"
if ! "$clang" -g -O1 -std=c17 -D_GNU_SOURCE -fno-omit-frame-pointer \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	"$@" -lprotobuf-c -lcjson -lxxhash -lm -o "$bin"; then
	echo "FAIL: could not build $bin"
	exit 1
fi

corpus=$work/corpus-$name
rm -rf "$corpus"
mkdir -p "$corpus" || exit 1
SHOAL_FUZZ_SEEDS=$corpus "$bin" -runs=0 "$corpus" >/dev/null 2>&1
echo "seed corpus: $(ls "$corpus" | wc -l) inputs; fuzzing for ${seconds}s"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
"$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
	-max_len=8192 -print_final_stats=1 -artifact_prefix="$work/" \
	"$corpus" 2>&1 | tail -n 40
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ]; then
	echo "FAIL: fuzz_$name found a problem (exit $rc); inputs: $work/crash-*"
	exit 1
fi
echo "OK: fuzz_$name ran ${seconds}s without findings"
exit 0
