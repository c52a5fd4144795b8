#!/usr/bin/env bash
# efsign-train --save-model: short 2-rank runs (convnet on Fashion-MNIST, mlp on efsign's
# synthetic set, ResNet-18 on tiny CIFAR-10 files made here), then the file read back by
# readers written from the safetensors specification, not from efsign's writer.
#   cli_save_model.sh format EFSIGN_TRAIN "MPIRUN [FLAGS]" SAFETENSORS_EDGE
#     test/safetensors_check.py (json + struct only): format, names, dtypes, shapes, the
#     checksum efsign printed, and its negative controls (--selftest); the writer's edge
#     cases and failure paths (safetensors_edge); the trainer's failure paths (exit 2, the
#     OS's reason, no .tmp left).
#   cli_save_model.sh torch EFSIGN_TRAIN "MPIRUN [FLAGS]"
#     test/safetensors_torch.py under /usr/bin/python3: strict load_state_dict into the
#     PyTorch twins and efsign's test accuracy and loss; prints "SKIPPED: no python3-torch"
#     and exits 0 (ctest: skipped) when that interpreter ($EFSIGN_TORCH_PYTHON if set) has
#     no torch.
set -u
mode=$1
train=$2
mpirun=$3
edge=${4:-}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/efsign-save-XXXXXX)
trap 'rm -rf "$work"' EXIT
verdicts=$work/verdicts
check() {  # check NAME COMMAND...: one "ok" or "FAIL" line, here and in $verdicts
  local name=$1 verdict="FAIL"
  shift
  "$@" && verdict="ok  "
  echo "$verdict $name" | tee -a "$verdicts"
}
py() {  # py NAME COMMAND...: a reader; its own ok/FAIL lines indented, then one verdict on its exit status
  local name=$1 rc=0
  shift
  "$@" >"$work/py.out" 2>&1 || rc=$?
  sed 's/^/    /' "$work/py.out"
  check "$name (exit $rc)" test "$rc" -eq 0
}

case $mode in
  format)
    python=$(command -v /usr/bin/python3 || command -v python3)
    # libtorch-dev depends on python3, so it is there wherever efsign builds from Debian's packages.
    if [[ -z $python ]]; then echo "SKIPPED: no python3 for the readers"; exit 0; fi
    ;;
  torch)
    python=${EFSIGN_TORCH_PYTHON:-/usr/bin/python3}  # Debian's python3-torch; PATH's python3 may lack it
    if ! "$python" -c "import torch, numpy" >/dev/null 2>&1; then
      echo "SKIPPED: no python3-torch ($python cannot import torch; apt-get install python3-torch)"
      exit 0
    fi
    ;;
  *) echo "usage: cli_save_model.sh format|torch EFSIGN_TRAIN MPIRUN [SAFETENSORS_EDGE]" >&2; exit 2 ;;
esac

fmnist=/usr/share/datasets/fashion-mnist
if [[ -e $fmnist/t10k-labels-idx1-ubyte.gz || -e $fmnist/t10k-labels-idx1-ubyte ]]; then
  conv_data=(--dataset fashion-mnist)
  conv_ds=fashion-mnist
else
  echo "SKIPPED Fashion-MNIST ($fmnist missing): convnet runs on the synthetic set instead"
  conv_data=(--dataset synthetic)
  conv_ds=synthetic
fi
# CIFAR-10 files a ResNet-18 learns something from in 10 steps: every class a fixed random
# picture, every image 3/4 of it plus 1/4 noise (80 train, 50 test records).
mkdir -p "$work/cifar"
"$python" - "$work/cifar" <<'EOF'
import random, sys
rng = random.Random(1)
protos = [[rng.randrange(256) for _ in range(3072)] for _ in range(10)]
def write(path, n, first):
    with open(path, "wb") as f:
        for i in range(first, first + n):
            f.write(bytes([i % 10]) + bytes((3 * p + rng.randrange(256)) // 4 for p in protos[i % 10]))
for b in range(1, 6):
    write(f"{sys.argv[1]}/data_batch_{b}.bin", 16, 16 * b)
write(f"{sys.argv[1]}/test_batch.bin", 50, 0)
EOF

# run NAME MODEL ARGS...: a 2-rank efsign-train run saving NAME.safetensors; sets sum and acc.
run() {
  local name=$1 model=$2
  shift 2
  local rc=0
  timeout 300 $mpirun -np 2 --bind-to none "$train" --model "$model" --epochs 1 "$@" \
    --metrics-out "$work/$name.jsonl" --save-model "$work/$name.safetensors" \
    >"$work/$name.out" 2>"$work/$name.err" || rc=$?
  check "$name: efsign-train exit 0 (got $rc)" test "$rc" -eq 0
  [[ $rc -eq 0 ]] || sed 's/^/    /' "$work/$name.err" | tail -5
  sum=$(grep -o '"param_checksum":"[0-9a-f]*"' "$work/$name.jsonl" 2>/dev/null | cut -d'"' -f4)
  acc=$(grep '"event":"summary"' "$work/$name.jsonl" 2>/dev/null | grep -o '"test_acc":[^,]*' | cut -d: -f2)
  check "$name: replicas identical, checksum '$sum' printed" grep -q "all 2 replicas identical (checksum $sum)" \
    "$work/$name.out"
  check "$name: the file is there, no .tmp" test -s "$work/$name.safetensors" -a ! -e "$work/$name.safetensors.tmp"
}

run convnet convnet "${conv_data[@]}" --optimizer ef-signsgd --steps-per-epoch 40 --batch-size 64
conv_sum=$sum conv_acc=$acc
run mlp mlp --dataset synthetic --optimizer sgdm --steps-per-epoch 20 --batch-size 32 --synthetic-test 1000
mlp_sum=$sum mlp_acc=$acc
run resnet18 resnet18 --dataset cifar10 --data-dir "$work/cifar" --augment off --optimizer sgdm --lr 0.03 \
  --batch-size 4
res_sum=$sum res_acc=$acc

if [[ $mode == format ]]; then
  py "convnet: safetensors_check.py with negative controls" "$python" "$here/safetensors_check.py" \
    "$work/convnet.safetensors" --expect convnet --checksum "$conv_sum" --test-acc "$conv_acc" --selftest
  py "mlp: safetensors_check.py" "$python" "$here/safetensors_check.py" "$work/mlp.safetensors" --expect mlp \
    --checksum "$mlp_sum" --test-acc "$mlp_acc"
  py "resnet18: safetensors_check.py with negative controls" "$python" "$here/safetensors_check.py" \
    "$work/resnet18.safetensors" --expect resnet18 --in-shape 3,32,32 --checksum "$res_sum" --test-acc "$res_acc" \
    --selftest
  mkdir -p "$work/edge"
  py "safetensors_edge: the writer's edge cases and failure paths" "$edge" "$work/edge"
  py "edge.safetensors: safetensors_check.py with negative controls" "$python" "$here/safetensors_check.py" \
    "$work/edge/edge.safetensors" --expect edge --selftest

  # The trainer's failure paths: one line with the OS's reason, exit 2 on every rank's
  # behalf, nothing left behind.
  fail_run() {  # fail_run NAME PATH
    local rc=0
    timeout 300 $mpirun -np 2 --bind-to none "$train" --model mlp --dataset synthetic --epochs 1 \
      --steps-per-epoch 2 --batch-size 8 --synthetic-test 64 --save-model "$2" \
      >"$work/$1.out" 2>"$work/$1.err" || rc=$?
    check "$1: exit 2 (got $rc)" test "$rc" -eq 2
    check "$1: no $2.tmp left" test ! -e "$2.tmp"
  }
  fail_run missing-folder /nonexistent/dir/x.safetensors
  check "missing folder: the path and the OS's reason" \
    grep -q "/nonexistent/dir/x.safetensors.*No such file or directory" "$work/missing-folder.err"
  check "missing folder: one error line" test "$(grep -c 'No such file' "$work/missing-folder.err")" -eq 1
  mkdir "$work/a-folder"
  fail_run folder "$work/a-folder"
  check "target is a folder: the OS's reason" grep -q "Is a directory" "$work/folder.err"
  check "target is a folder: still an empty folder" test -d "$work/a-folder" -a -z "$(ls -A "$work/a-folder")"
else
  common=(--world 2 --eval-batch 1000)
  py "convnet ($conv_ds) in PyTorch" "$python" "$here/safetensors_torch.py" "$work/convnet.safetensors" \
    --model convnet --dataset "$conv_ds" "${common[@]}" --metrics "$work/convnet.jsonl"
  py "mlp (synthetic) in PyTorch" "$python" "$here/safetensors_torch.py" "$work/mlp.safetensors" --model mlp \
    --dataset synthetic --synthetic-test 1000 "${common[@]}" --metrics "$work/mlp.jsonl"
  py "resnet18 (CIFAR-10 files) in PyTorch" "$python" "$here/safetensors_torch.py" \
    "$work/resnet18.safetensors" --model resnet18 --dataset cifar10 --data-dir "$work/cifar" "${common[@]}" \
    --metrics "$work/resnet18.jsonl"
fi

touch "$verdicts"
failures=$(grep -c '^FAIL' "$verdicts")
echo "$(grep -c '^ok' "$verdicts") passed, $failures failed"
[[ $failures -eq 0 ]]
