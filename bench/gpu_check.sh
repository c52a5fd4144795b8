#!/usr/bin/env bash
# bench/gpu_check.sh — builds efsign on the GPU machine (one H200) and runs every GPU
# test and measurement, in ONE call of at most 9 minutes including the build.
#
# The device command (exactly; carry only the Debian packages, ~10 MB: the machine
# has torch, the nvidia wheels, CUDA 13.0, cmake and ninja, but no MPI/fmt/cxxopts/Catch2):
#   run  command: "bench/gpu_check.sh"   carry: [".carry"]   timeout_s: 600
# Before spending device time, here: bench/fetch_gpu_deps.sh && bench/device_rehearsal.sh
# (the rehearsal runs this script's setup/configure/build stages with this machine's own
# MPI, NCCL and LibTorch hidden). A second call on the same warm machine reuses the build.
#
# Stages, each a function below with its command in one place, each under `timeout`,
# all under an overall deadline of 540 s (a stage that would start past it is NOT RUN);
# a stage that fails or hangs does not stop the ones after it. `--list` prints them.
# Results: at most 8 files in $OUT (default ./gpu-results): summary.txt (one screen),
# results.json (stage table + numbers), logs.tar.gz (every stage's full log),
# bench_kernels.json, comm_nccl.jsonl, train_metrics.jsonl.
#
# Usage: bench/gpu_check.sh [--stages a,b,...] [--list] [--targets] [--help]
#        bench/gpu_check.sh --stage NAME   run one stage's body (what the runner calls)
# Needs: see bench/gpu_env.sh. Exit 0 only if every stage passed.
set -uo pipefail
SELF=$(readlink -f "${BASH_SOURCE[0]}")
EFSIGN_ROOT=$(cd "$(dirname "$SELF")/.." && pwd)
cd "$EFSIGN_ROOT" || exit 1
# shellcheck source=bench/gpu_env.sh
source "$EFSIGN_ROOT/bench/gpu_env.sh"

GPU_DEADLINE_S=540
# name:limit_s; the limits add up to the deadline (checked in main). Measured: the
# build took 496 s on 2 busy cores of a development machine (the precompiled LibTorch
# header alone 142 s; 963 s of compiler time in all), so ~2-3 min on the device's 16;
# set-up took 5-15 s there (unpack + a load check of every carried library); each
# run below takes seconds plus CUDA start-up, once LibTorch is in the page cache
# (gpu_env_warm_cache, from set-up on).
STAGES=(setup:25 configure:40 build:230 kernels_test:20 kernels_bench:40 gpu_test:25 gpu_test_w2:20 gpu_test_w4:20
        train_nccl:20 train_nccl_overlap:15 train_two_phase:10 train_vote:10 mpi_w2:25 mpi_w4:25 comm_nccl:15)

# Targets and where they land.
declare -A BIN=([test_kernels]=kernels/test_kernels [efsign-bench-kernels]=kernels/efsign-bench-kernels
                [test_gpu]=test/test_gpu [efsign-train]=efsign-train [efsign-bench]=efsign-bench)
GPU_TARGETS=(test_kernels efsign-bench-kernels test_gpu efsign-train efsign-bench)

# The trainer's device/transport flags.
TRAIN_NCCL=(--device cuda --comm nccl)
TRAIN_MPI_CUDA=(--device cuda --comm mpi)
TRAIN_MPI_CPU=(--device cpu --comm mpi)
TRAIN_COMMON=(--dataset synthetic --model convnet --optimizer ef-signsgd --comm-timeout 60)

MPIRUN=(mpirun --bind-to none --oversubscribe)
export OUT=${OUT:-$EFSIGN_ROOT/gpu-results}
export WORK=${EFSIGN_GPU_WORK:-/tmp/efsign-gpu-check}

bin() { echo "$GPU_BUILD/${BIN[$1]}"; }
need_bin() { [[ -x $(bin "$1") ]] || gpu_fail "$(bin "$1") was not built (see the build stage)"; }
result() { echo "efsign-result: $1 $2"; }  # collected into results.json
note() { echo "efsign-note: $*"; }         # copied into summary.txt

# ---- stages ---------------------------------------------------------------------------
stage_setup() {
  gpu_env_unpack && gpu_env_discover && gpu_env_commit || return
  gpu_env_load
  if command -v nvidia-smi >/dev/null; then
    note "GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
  else
    note "GPU: no nvidia-smi on PATH"
  fi
  result torch "$TORCH_VERSION"
  gpu_env_warm_cache
  # uname -n: a bare image may lack the hostname program.
  mpirun -np 2 uname -n || gpu_fail "mpirun -np 2 uname -n (the unpacked OpenMPI)"
}

stage_configure() { gpu_env_configure; }

stage_build() { gpu_env_build "${GPU_TARGETS[@]}"; }

# catch_gpu TARGET [RANKS [TAGS]]: its [gpu] cases (compact report: failures and a total),
# under mpirun with RANKS ranks (1). No device, or any skipped case, is a failure here.
catch_gpu() {
  local out rc
  need_bin "$1" || return
  out=$("${MPIRUN[@]}" -np "${2:-1}" "$(bin "$1")" "${3:-[gpu]}" -r compact --use-colour no 2>&1)
  rc=$?
  echo "$out"
  note "$1: $(tail -1 <<<"$out" | cut -c1-100)"
  ! grep -q "SKIPPED" <<<"$out" || gpu_fail "$1: a [gpu] case was skipped" || return
  return "$rc"
}

# The CUDA kernels against their CPU twins (bit for bit where exact).
stage_kernels_test() { catch_gpu test_kernels; }

# GB/s of compress and decode-apply against a copy kernel. W = 2, 4, 8 and the
# weight-decay case are measured inside the benchmark (the other engineer's change);
# should it grow a flag for them, it goes here.
stage_kernels_bench() {
  need_bin efsign-bench-kernels || return
  rm -f "$OUT/bench_kernels.json"
  # Up to 3e8 elements (1.2 GB per float buffer, 20x the L2): past launch costs and
  # caches, and inside this stage's time with host-side set-up included.
  "$(bin efsign-bench-kernels)" --max-elements 3e8 --json "$OUT/bench_kernels.json" || return
  [[ -s $OUT/bench_kernels.json ]] || gpu_fail "no results written (no device?)"
}

# The CUDA codec against the host codec (test/codec_conformance.h), then the optimizers
# on the GPU (NCCL and host communicator, with and without --overlap) against the host
# codec's run from the same dyadic gradients: bit-identical.
stage_gpu_test() { catch_gpu test_gpu 1 "[gpu]~[mpi]"; }
# 2 and 4 ranks sharing the one GPU over MPI (pinned host staging): replicas identical,
# and the same bits as the host codec's run from the same gradients.
stage_gpu_test_w2() { catch_gpu test_gpu 2 "[gpu][mpi]"; }
stage_gpu_test_w4() { catch_gpu test_gpu 4 "[gpu][mpi]"; }

# train NAME NP FLAGS...: one efsign-train run under mpirun; its metrics go to
# $WORK/NAME.jsonl, its final checksum to $WORK/NAME.checksum and results.json.
train() {
  local name=$1 np=$2 sum rc
  shift 2
  need_bin efsign-train || return
  "${MPIRUN[@]}" -np "$np" "$(bin efsign-train)" "$@" --metrics-out "$WORK/$name.jsonl" 2>&1 | tee "$WORK/$name.out"
  rc=${PIPESTATUS[0]}
  ((rc == 0)) || gpu_fail "$name: efsign-train exited with $rc" || return
  sum=$(sed -n 's/.*(checksum \([0-9a-f]*\)).*/\1/p' "$WORK/$name.out" | tail -1)
  [[ -n $sum ]] || gpu_fail "$name: no 'checksum' in the done line" || return
  echo "$sum" >"$WORK/$name.checksum"
  result "$name.checksum" "$sum"
  note "$name: $(grep '^done' "$WORK/$name.out" | tail -1 | cut -c1-110)"
}
checksum_of() { cat "$WORK/$1.checksum" 2>/dev/null; }

stage_train_nccl() { train train_nccl 1 "${TRAIN_NCCL[@]}" "${TRAIN_COMMON[@]}" --epochs 2; }

# Same run with --overlap: the same bits (buckets change no bit), given deterministic
# cuDNN/cuBLAS (CUBLAS_WORKSPACE_CONFIG below; cuDNN's choice is the trainer's).
stage_train_nccl_overlap() {
  train train_nccl_overlap 1 "${TRAIN_NCCL[@]}" "${TRAIN_COMMON[@]}" --epochs 2 --overlap --bucket-mb 0.1 || return
  local a b
  a=$(checksum_of train_nccl)
  b=$(checksum_of train_nccl_overlap)
  note "checksum without --overlap ${a:-?}, with ${b:-?}"
  [[ -n $a && $a == "$b" ]] || gpu_fail "--overlap changed the checksum (${a:-no run} vs $b)"
}

stage_train_two_phase() { train train_two_phase 1 "${TRAIN_NCCL[@]}" "${TRAIN_COMMON[@]}" --exchange two-phase --epochs 1; }
# vote is signSGD/signum with majority vote (ef-signsgd refuses it).
stage_train_vote() {
  train train_vote 1 "${TRAIN_NCCL[@]}" "${TRAIN_COMMON[@]}" --optimizer signsgd --exchange vote --epochs 1
}

# W ranks sharing the one GPU over MPI, end to end, next to the same run on the CPU.
# The trainer itself fails unless its W replicas end identical. The two checksums are
# printed, not compared: the GPU's convolutions (cuDNN) round differently from the
# CPU's, so the gradients differ; that the GPU path sends the same messages as the CPU
# path for the same gradients is what stage gpu_test_w2/w4 checks, bit for bit.
compare_device_runs() {
  local cuda=$1 cpu=$2
  note "$cuda checksum $(checksum_of "$cuda"), $cpu checksum $(checksum_of "$cpu")"
  [[ -n $(checksum_of "$cuda") && -n $(checksum_of "$cpu") ]]
}

mpi_pair() {
  local w=$1 rc=0
  train "mpi_w${w}_cuda" "$w" "${TRAIN_MPI_CUDA[@]}" "${TRAIN_COMMON[@]}" --epochs 1 --steps-per-epoch 50 || rc=1
  train "mpi_w${w}_cpu" "$w" "${TRAIN_MPI_CPU[@]}" "${TRAIN_COMMON[@]}" --epochs 1 --steps-per-epoch 50 || rc=1
  compare_device_runs "mpi_w${w}_cuda" "mpi_w${w}_cpu" || rc=1
  return "$rc"
}
stage_mpi_w2() { mpi_pair 2; }
stage_mpi_w4() { mpi_pair 4; }

# nccl-tests-style sweep on one GPU (W = 1: kernel and launch costs, not a network).
stage_comm_nccl() {
  need_bin efsign-bench || return
  "${MPIRUN[@]}" -np 1 "$(bin efsign-bench)" comm --backend nccl -b 1e4 -e 1e8 -f 10 --iters 10 \
    --json "$OUT/comm_nccl.jsonl" || return
  ! grep -q '"wrong":[1-9]' "$OUT/comm_nccl.jsonl" || gpu_fail "wrong elements in comm_nccl.jsonl"
}

# ---- main -------------------------------------------------------------------------------
usage() { awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$SELF"; }

# Environment of every stage: one intra-op thread per rank; cuBLAS reproducible from run
# to run (CUBLAS_WORKSPACE_CONFIG=:4096:8 gives each stream its own fixed workspaces,
# which cuBLAS needs for a fixed reduction order and LibTorch's deterministic mode
# requires), so that the --overlap checksum comparison can be exact (cuDNN has no such
# variable: deterministic cuDNN algorithms are the trainer's choice, in code); NCCL
# warnings, and only those, in the logs.
stage_env() {
  export OMP_NUM_THREADS=1 CUBLAS_WORKSPACE_CONFIG=:4096:8 NCCL_DEBUG=${NCCL_DEBUG:-WARN}
}

finish() {
  gpu_stage_json >"$WORK/stages.json"
  python3 - "$WORK/stages.json" "$GPU_LOGDIR" "$OUT/results.json" <<'EOF'
import glob, json, os, sys
stages = json.load(open(sys.argv[1]))
results = {}
for log in sorted(glob.glob(os.path.join(sys.argv[2], "*.log"))):
    for line in open(log, errors="replace"):
        if line.startswith("efsign-result: "):
            k, _, v = line[len("efsign-result: "):].strip().partition(" ")
            results[k] = v
json.dump({"stages": stages, "results": results}, open(sys.argv[3], "w"), indent=1)
EOF
  : >"$OUT/train_metrics.jsonl"
  for f in "$WORK"/*.jsonl; do
    [[ -e $f ]] || continue
    echo "{\"run\":\"$(basename "$f" .jsonl)\"}" >>"$OUT/train_metrics.jsonl"
    cat "$f" >>"$OUT/train_metrics.jsonl"
  done
  tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs
  echo "$GPU_STAGES_FAILED of $(wc -l <"$GPU_LOGDIR/stages.tsv") stages did not pass; in $OUT: $(ls "$OUT" | tr '\n' ' ')" |
    tee -a "$GPU_SUMMARY"
}

main() {
  local selected="" s name limit
  while (($#)); do
    case $1 in
      -h | --help) usage; return 0 ;;
      --list) printf '%s\n' "${STAGES[@]}"; return 0 ;;
      --targets) echo "${GPU_TARGETS[*]}"; return 0 ;;
      --stages) selected=$2; shift ;;
      --stage)
        stage_env
        [[ $2 == setup ]] || gpu_env_load || return 1
        declare -F "stage_$2" >/dev/null || gpu_fail "no stage '$2' (see --list)" || return 1
        "stage_$2"
        return ;;
      *) echo "unknown argument '$1' (see --help)" >&2; return 2 ;;
    esac
    shift
  done
  local total=0
  for s in "${STAGES[@]}"; do total=$((total + ${s##*:})); done
  ((total <= GPU_DEADLINE_S)) || gpu_fail "stage limits add up to ${total} s > the ${GPU_DEADLINE_S} s deadline" || return 1
  mkdir -p "$OUT" && rm -rf "$WORK" && mkdir -p "$WORK" || return 1
  gpu_stage_init "$GPU_DEADLINE_S" "$WORK/logs" "$OUT/summary.txt"
  export GPU_LOGDIR
  : >"$GPU_SUMMARY"
  echo "efsign gpu_check $(git -C "$EFSIGN_ROOT" rev-parse --short HEAD 2>/dev/null) on $(uname -n), $(date -u +%FT%TZ)" |
    tee -a "$GPU_SUMMARY"
  for s in "${STAGES[@]}"; do
    name=${s%%:*} limit=${s##*:}
    [[ -z $selected || ,$selected, == *,$name,* ]] || continue
    gpu_stage "$name" "$limit" bash "$SELF" --stage "$name"
  done
  finish
  ((GPU_STAGES_FAILED == 0))
}

main "$@"
