#!/usr/bin/env bash
# Installs what is missing, builds, then trains the small convnet on the real
# Fashion-MNIST with 2 MPI ranks twice — EF-SignSGD and the fp32-allreduce SGDM
# baseline — and prints a side-by-side table. A few minutes on 2 cores.
# Environment: RANKS (2), EPOCHS (1), RUN_DIR (runs/quickstart), extra flags in EXTRA.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
efsign_install_packages
efsign_build
RANKS=${RANKS:-2}
EPOCHS=${EPOCHS:-1}
RUN_DIR=${RUN_DIR:-$EFSIGN_ROOT/runs/quickstart}
mkdir -p "$RUN_DIR"
for opt in ef-signsgd sgdm; do
  echo
  echo "=== $opt: $RANKS ranks, $EPOCHS epoch(s), convnet on Fashion-MNIST"
  efsign_mpirun -np "$RANKS" "$BUILD_DIR/efsign-train" --optimizer "$opt" --model convnet \
    --dataset fashion-mnist --epochs "$EPOCHS" --metrics-out "$RUN_DIR/$opt.jsonl" ${EXTRA:-}
done
echo
echo "=== EF-SignSGD vs fp32 allreduce (metrics in $RUN_DIR)"
"$BUILD_DIR/efsign-report" "$RUN_DIR/ef-signsgd.jsonl" "$RUN_DIR/sgdm.jsonl"
