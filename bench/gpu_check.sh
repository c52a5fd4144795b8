#!/usr/bin/env bash
# Builds efsign on a GPU machine and runs, in one go, every GPU test and benchmark:
#   all [gpu] tests (kernels vs their CPU twins; NCCL vs CPU training), the kernel
#   benchmark, short one-rank NCCL training runs of the convnet (allgather, two-phase,
#   vote) and the one-GPU `efsign-bench comm --backend nccl` sweep.
# Logs and JSON go to $OUT (default ./gpu-results). Meant to finish in < 8 minutes.
#
# Needs: nvcc, NCCL, python3 with torch (LibTorch from torch.utils.cmake_prefix_path).
# MPI, fmt, cxxopts and Catch2 are taken from the system if present, else from
# Debian .debs in .carry/debs (bench/fetch_gpu_deps.sh), unpacked with dpkg -x.
#   device run: bench/gpu_check.sh   with carry: [".carry"]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-results}
mkdir -p "$OUT"
log() { echo "[gpu_check $(date +%T)] $*" | tee -a "$OUT/summary.txt"; }
status=0

# ---- dependencies
SYS=/tmp/efsign-sys
if ! command -v mpirun >/dev/null || [[ ! -f /usr/include/cxxopts.hpp ]]; then
  if compgen -G ".carry/debs/*.deb" >/dev/null; then
    mkdir -p "$SYS"
    for f in .carry/debs/*.deb; do dpkg -x "$f" "$SYS"; done
    export PATH=$SYS/usr/bin:$PATH
    export LD_LIBRARY_PATH=$SYS/usr/lib/x86_64-linux-gnu:$SYS/usr/lib/x86_64-linux-gnu/openmpi/lib:${LD_LIBRARY_PATH:-}
    export OPAL_PREFIX=$SYS/usr          # relocated OpenMPI finds its own files
    export CPATH=$SYS/usr/include:${CPATH:-}
    # Debian's mpicc wrapper data point at /usr; hand the paths to CMake instead.
    MPI_ARGS=(-DMPI_CXX_COMPILER="$SYS/usr/bin/mpicxx.openmpi"
              -DMPI_CXX_ADDITIONAL_INCLUDE_DIRS="$SYS/usr/lib/x86_64-linux-gnu/openmpi/include"
              -DMPI_CXX_LIB_NAMES="mpi_cxx;mpi" -DMPI_mpi_LIBRARY="$SYS/usr/lib/x86_64-linux-gnu/libmpi.so"
              -DMPI_mpi_cxx_LIBRARY="$SYS/usr/lib/x86_64-linux-gnu/libmpi_cxx.so")
    log "using carried Debian packages from .carry/debs ($(ls .carry/debs | wc -l) files)"
  else
    log "FAIL: no mpirun/cxxopts here and no .carry/debs (run bench/fetch_gpu_deps.sh first)"
    exit 1
  fi
fi
TORCH_PREFIX=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
log "torch $(python3 -c 'import torch; print(torch.__version__)') at $TORCH_PREFIX; $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null)"
NCCL_HOME=$(python3 -c 'import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__))' 2>/dev/null || true)
[[ -n $NCCL_HOME ]] && export NCCL_HOME

# ---- build (Hopper only here: faster)
BUILD=build-gpu
if ! cmake -S . -B $BUILD -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
      -DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$SYS/usr;$SYS/usr/lib/cmake" -DEFSIGN_USE_PCH=ON "${MPI_ARGS[@]}" \
      >"$OUT/configure.log" 2>&1; then
  log "FAIL: configure (see configure.log)"; tail -30 "$OUT/configure.log"; exit 1
fi
grep -q "CUDA kernels + NCCL backend: ON" "$OUT/configure.log" || { log "FAIL: CUDA/NCCL not found"; exit 1; }
if ! cmake --build $BUILD -j "$(nproc)" >"$OUT/build.log" 2>&1; then
  log "FAIL: build (see build.log)"; grep -E "error" "$OUT/build.log" | head -30; exit 1
fi
log "built"

MPIRUN=(mpirun --allow-run-as-root --oversubscribe)
export OMP_NUM_THREADS=4
# ---- [gpu] tests
for t in test_kernels test_gpu_optim; do
  bin=$(find $BUILD -name $t -type f -executable | head -1)
  if timeout 300 "${MPIRUN[@]}" -np 1 "$bin" "[gpu]" -s -r compact >"$OUT/$t.log" 2>&1; then
    log "PASS $t: $(tail -1 "$OUT/$t.log")"
  else
    log "FAIL $t (see $t.log)"; tail -20 "$OUT/$t.log"; status=1
  fi
  grep -E "SKIPPED|max \|cpu - gpu\|" "$OUT/$t.log" | sed 's/^/    /' | tee -a "$OUT/summary.txt"
done
# ---- kernel benchmark
if timeout 300 $BUILD/efsign-bench-kernels --json "$OUT/kernels.json" >"$OUT/bench_kernels.log" 2>&1; then
  log "kernel benchmark:"; cat "$OUT/bench_kernels.log" | tee -a "$OUT/summary.txt"
else
  log "FAIL kernel benchmark"; tail -20 "$OUT/bench_kernels.log"; status=1
fi
# ---- one-rank NCCL training run of the convnet (synthetic data: no data set on that machine)
if timeout 240 "${MPIRUN[@]}" -np 1 $BUILD/efsign-train --backend nccl --dataset synthetic --model convnet \
     --optimizer ef-signsgd --epochs 2 --metrics-out "$OUT/nccl_train.jsonl" >"$OUT/nccl_train.log" 2>&1; then
  log "NCCL training: $(grep '^done' "$OUT/nccl_train.log")"
else
  log "FAIL NCCL training"; tail -20 "$OUT/nccl_train.log"; status=1
fi
# ---- the same run with --overlap: must end on the same checksum
if timeout 240 "${MPIRUN[@]}" -np 1 $BUILD/efsign-train --backend nccl --dataset synthetic --model convnet \
     --optimizer ef-signsgd --epochs 2 --overlap --bucket-mb 0.1 >"$OUT/nccl_train_overlap.log" 2>&1; then
  a=$(grep -o 'checksum [0-9a-f]*' "$OUT/nccl_train.log"); b=$(grep -o 'checksum [0-9a-f]*' "$OUT/nccl_train_overlap.log")
  if [[ -n $a && $a == "$b" ]]; then log "NCCL training --overlap: same $b"; else log "FAIL --overlap: $a vs $b"; status=1; fi
else
  log "FAIL NCCL training --overlap"; tail -20 "$OUT/nccl_train_overlap.log"; status=1
fi
# ---- the same with the two-phase and vote exchanges (device gathers, alltoallv/allgatherv)
for ex in two-phase vote; do
  if timeout 240 "${MPIRUN[@]}" -np 1 $BUILD/efsign-train --backend nccl --dataset synthetic --model convnet \
       --optimizer ef-signsgd --exchange $ex --epochs 1 >"$OUT/nccl_train_$ex.log" 2>&1; then
    log "NCCL training, $ex: $(grep '^done' "$OUT/nccl_train_$ex.log")"
  else
    log "FAIL NCCL training, $ex"; tail -20 "$OUT/nccl_train_$ex.log"; status=1
  fi
done
# ---- nccl-tests-style sweep on one GPU (W = 1: kernel and launch costs, not the network)
if timeout 240 "${MPIRUN[@]}" -np 1 $BUILD/efsign-bench comm --backend nccl -b 1e4 -e 1e8 -f 10 --iters 10 \
     --json "$OUT/comm_nccl.jsonl" >"$OUT/comm_nccl.log" 2>&1; then
  log "comm --backend nccl:"; cat "$OUT/comm_nccl.log" | tee -a "$OUT/summary.txt"
  grep -q '"wrong":[1-9]' "$OUT/comm_nccl.jsonl" && { log "FAIL comm --backend nccl: wrong elements"; status=1; }
else
  log "FAIL comm --backend nccl"; tail -20 "$OUT/comm_nccl.log"; status=1
fi
log "exit $status"
exit $status
