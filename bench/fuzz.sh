#!/usr/bin/env bash
# Builds the libFuzzer targets with clang + ASan in build-fuzz/ and fuzzes the IDX,
# CIFAR-10, CIFAR-100 and checkpoint readers for a bounded time each (default 60 s). Not part of
# CI (it takes minutes); run it by hand:  bench/fuzz.sh [SECONDS]
# Needs Debian's clang and libclang-rt-dev (libFuzzer). Crashes land in build-fuzz/crashes/.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECONDS_EACH=${1:-60}
BUILD=$ROOT/build-fuzz
command -v clang++ >/dev/null || { echo "bench/fuzz.sh: needs clang++ (apt-get install clang libclang-rt-14-dev)" >&2; exit 2; }
CXX=clang++ CC=clang cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DEFSIGN_BUILD_FUZZ=ON -DEFSIGN_BUILD_TESTS=OFF -DEFSIGN_WITH_CUDA=OFF >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target fuzz_readers
mkdir -p "$BUILD/crashes"
# LibTorch is not instrumented; its allocator pairs trip ASan's mismatch check.
export ASAN_OPTIONS=alloc_dealloc_mismatch=0:detect_leaks=1 OMP_NUM_THREADS=1
# Valid seeds, so the fuzzer starts past the size checks: a 2x2 IDX file (first byte
# 0x00 selects expected rank 0; the rank byte says 3), one CIFAR-10 and one CIFAR-100 record.
mkdir -p "$BUILD/corpus-idx" "$BUILD/corpus-cifar10" "$BUILD/corpus-cifar100" "$BUILD/corpus-checkpoint"
{ printf '\x00\x00\x08\x03\x00\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x02'; printf '\x01\x02\x03\x04'; } >"$BUILD/corpus-idx/seed"
{ printf '\x03'; head -c 3072 /dev/zero; } >"$BUILD/corpus-cifar10/seed"
{ printf '\x01\x2a'; head -c 3072 /dev/zero; } >"$BUILD/corpus-cifar100/seed"
# A valid checkpoint seed, written by the library itself.
"$BUILD/fuzz/fuzz_readers" -help=1 >/dev/null 2>&1 || true
EFSIGN_FUZZ_WRITE_SEED="$BUILD/corpus-checkpoint/seed" EFSIGN_FUZZ_TARGET=checkpoint "$BUILD/fuzz/fuzz_readers" -runs=1 /dev/null >/dev/null 2>&1 || true
status=0
for target in idx cifar10 cifar100 checkpoint; do
  mkdir -p "$BUILD/corpus-$target"
  echo "== fuzzing the $target reader for ${SECONDS_EACH}s"
  if ! EFSIGN_FUZZ_TARGET=$target "$BUILD/fuzz/fuzz_readers" -max_total_time="$SECONDS_EACH" -max_len=8192 \
       -rss_limit_mb=4096 -artifact_prefix="$BUILD/crashes/$target-" "$BUILD/corpus-$target" 2>"$BUILD/fuzz-$target.log"; then
    echo "FAIL: $target reader (see $BUILD/fuzz-$target.log and $BUILD/crashes/)"; status=1
  fi
  tail -2 "$BUILD/fuzz-$target.log"
done
exit $status
