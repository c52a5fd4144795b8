#!/usr/bin/env bash
# Bad input to efsign-train: a one-line error on stderr, exit code 2, never a hang.
#   cli_bad_input.sh EFSIGN_TRAIN "MPIRUN [FLAGS]"
set -u
train=$1
mpirun=$2
work=$(mktemp -d /tmp/efsign-cli-XXXXXX)
trap 'rm -rf "$work"' EXIT
failures=0
passed=0

# expect_error NAME PATTERN -- COMMAND...
expect_error() {
  local name=$1 pattern=$2
  shift 3
  local rc=0
  timeout 120 "$@" >"$work/out" 2>"$work/err" || rc=$?
  local lines
  lines=$(grep -c . "$work/err" || true)
  if [[ $rc -eq 2 ]] && grep -q -- "$pattern" "$work/err" && [[ $lines -eq 1 ]]; then
    echo "ok   $name: $(cat "$work/err")"
    passed=$((passed + 1))
  else
    echo "FAIL $name: exit $rc (want 2), $lines stderr lines (want 1), want /$pattern/"
    sed 's/^/     | /' "$work/err" | head -20
    failures=$((failures + 1))
  fi
}

# A Fashion-MNIST-shaped directory whose training images stop after 100 of 7840 bytes.
mkdir -p "$work/trunc"
{ printf '\x00\x00\x08\x03\x00\x00\x00\x0a\x00\x00\x00\x1c\x00\x00\x00\x1c'; head -c 100 /dev/zero; } | gzip >"$work/trunc/train-images-idx3-ubyte.gz"
{ printf '\x00\x00\x08\x01\x00\x00\x00\x0a'; head -c 10 /dev/zero; } | gzip >"$work/trunc/train-labels-idx1-ubyte.gz"
cp "$work/trunc/train-images-idx3-ubyte.gz" "$work/trunc/t10k-images-idx3-ubyte.gz"
cp "$work/trunc/train-labels-idx1-ubyte.gz" "$work/trunc/t10k-labels-idx1-ubyte.gz"

expect_error "unknown optimizer" "unknown optimizer 'adam'" -- "$train" --optimizer adam
expect_error "negative lr" "--lr must be a positive number" -- "$train" --lr=-0.1
expect_error "zero lr" "--lr must be a positive number" -- "$train" --lr 0
expect_error "unknown flag" "see --help" -- "$train" --no-such-flag
expect_error "non-numeric epochs" "--epochs: 'many' is not a whole number" -- "$train" --epochs many
expect_error "negative seed names the flag" "--seed: '-1' is not a non-negative whole number" -- "$train" --seed -1
expect_error "NaN lr names the flag" "--lr: nan is not a finite number" -- "$train" --lr nan
expect_error "infinite lr names the flag" "--lr: inf is not a finite number" -- "$train" --lr inf
expect_error "epochs in float notation" "--epochs: '1e9' is not a whole number" -- "$train" --epochs 1e9
expect_error "empty milestone" "--lr-milestones: '1,,2' has an empty item" -- "$train" --lr-milestones 1,,2
expect_error "zero epochs" "--epochs: 0 is out of range \\[1, 100000\\]" -- "$train" --epochs 0
expect_error "zero batch" "--batch-size: 0 is out of range" -- "$train" --batch-size 0
expect_error "unknown model" "unknown model" -- "$train" --model resnet1000
expect_error "unknown dataset" "unknown dataset" -- "$train" --dataset imagenet
expect_error "momentum out of range" "--momentum must be in" -- "$train" --momentum 1.5
expect_error "decreasing milestones" "--lr-milestones must increase" -- "$train" --lr-milestones 5,3
expect_error "unknown exchange" "unknown exchange 'ring'" -- "$train" --exchange ring
expect_error "sgdm with an exchange" "sgdm always exchanges by fp32 allreduce" -- "$train" --optimizer sgdm --exchange two-phase
expect_error "vote with error feedback" "--exchange vote is signSGD/signum with majority vote" -- "$train" --optimizer ef-signsgd --exchange vote
expect_error "nccl without a GPU device" "--comm nccl moves GPU memory: it needs --device cuda" -- "$train" --device cpu --comm nccl
expect_error "--backend with --device" "--backend is shorthand for --device and --comm" -- "$train" --backend mpi --device cpu
expect_error "metrics on a full disk" "/dev/full: cannot write metrics (No space left on device)" -- "$train" --dataset synthetic --synthetic-train 64 --synthetic-test 16 --batch-size 16 --metrics-out /dev/full
expect_error "checkpoint folder that cannot be made" "cannot create the checkpoint folder" -- "$train" --dataset synthetic --checkpoint-dir /proc/efsign-nope/ck
expect_error "checkpoint folder is a file" "not a folder" -- "$train" --dataset synthetic --checkpoint-dir /etc/hostname
expect_error "zero bucket size" "--bucket-mb must be a positive number" -- "$train" --overlap --bucket-mb 0
expect_error "unknown codec path" "--isa must be auto, avx512, avx2 or portable" -- "$train" --isa neon
expect_error "unknown EFSIGN_ISA" "EFSIGN_ISA: unknown codec path 'sse9'" -- env EFSIGN_ISA=sse9 "$train" --dataset synthetic
expect_error "stray argument" "unexpected argument" -- "$train" stray
expect_error "missing data dir" "does not exist" -- "$train" --data-dir "$work/nope"
expect_error "truncated IDX file" "truncated file" -- "$train" --data-dir "$work/trunc"
expect_error "unwritable metrics file" "cannot open for writing" -- "$train" --dataset synthetic --metrics-out "$work/nope/m.jsonl"

# Data folders and files the OS refuses (issue 15): the OS's reason, not "no ... here"
# although the files are there.
ln -s loop "$work/loop"
echo "not a folder" >"$work/afile"
mkdir -p "$work/isdir"
cp "$work"/trunc/*.gz "$work/isdir/" && rm "$work/isdir/train-images-idx3-ubyte.gz" && mkdir "$work/isdir/train-images-idx3-ubyte.gz"
mkdir -p "$work/fileloop"
cp "$work"/trunc/*.gz "$work/fileloop/" && rm "$work/fileloop/train-labels-idx1-ubyte.gz"
ln -s train-labels-idx1-ubyte.gz "$work/fileloop/train-labels-idx1-ubyte.gz.x"
ln -s train-labels-idx1-ubyte.gz.x "$work/fileloop/train-labels-idx1-ubyte.gz"
expect_error "data dir is a symlink loop" "data directory $work/loop: Too many levels of symbolic links" -- \
  "$train" --data-dir "$work/loop"
expect_error "data dir is a file" "data directory $work/afile: Not a directory" -- "$train" --data-dir "$work/afile"
expect_error "data file is a folder" "$work/isdir/train-images-idx3-ubyte.gz: Is a directory" -- \
  "$train" --data-dir "$work/isdir"
expect_error "data file is a symlink loop" "$work/fileloop/train-labels-idx1-ubyte.gz: Too many levels of symbolic links" -- \
  "$train" --data-dir "$work/fileloop"
expect_error "CIFAR-10 data dir is a symlink loop" "CIFAR-10 data directory $work/loop: Too many levels of symbolic links" -- \
  "$train" --dataset cifar10 --data-dir "$work/loop"
expect_error "CIFAR-100 data dir is a file" "CIFAR-100 data directory $work/afile: Not a directory" -- \
  "$train" --dataset cifar100 --data-dir "$work/afile"
# CIFAR-10 with data_batch_1.bin in place but data_batch_2.bin a symlink loop.
mkdir -p "$work/cifar"
head -c 3073 /dev/zero >"$work/cifar/data_batch_1.bin"
ln -s data_batch_2.bin "$work/cifar/data_batch_2.bin"
expect_error "CIFAR-10 batch file is a symlink loop" "$work/cifar/data_batch_2.bin: Too many levels of symbolic links" -- \
  "$train" --dataset cifar10 --data-dir "$work/cifar"
rm "$work/cifar/data_batch_2.bin" && mkdir "$work/cifar/data_batch_2.bin"
for i in 3 4 5; do cp "$work/cifar/data_batch_1.bin" "$work/cifar/data_batch_$i.bin"; done
cp "$work/cifar/data_batch_1.bin" "$work/cifar/test_batch.bin"
expect_error "CIFAR-10 batch file is a folder" "$work/cifar/data_batch_2.bin: Is a directory" -- \
  "$train" --dataset cifar10 --data-dir "$work/cifar"
# A folder that may not be searched (chmod 000). Root reads it anyway: run unprivileged in
# a user namespace (unshare -U) then; where neither is possible, say so.
mkdir -p "$work/noperm"
cp "$work"/trunc/*.gz "$work/noperm/"
cp "$work"/cifar/data_batch_1.bin "$work/noperm/"
chmod 000 "$work/noperm"
as_user=()
if [[ $(id -u) -eq 0 ]]; then
  if unshare -U true 2>/dev/null && ! unshare -U ls "$work/noperm" >/dev/null 2>&1; then as_user=(unshare -U)
  else as_user=(none); fi
fi
if [[ ${as_user[0]:-} == none ]]; then
  echo "SKIP unreadable data dir: running as root and unshare -U is not available here"
else
  chmod o+x "$work"  # the user namespace's nobody must reach the folder to be refused by it
  expect_error "unreadable data dir" "$work/noperm/train-images-idx3-ubyte.gz: Permission denied" -- \
    "${as_user[@]}" "$train" --data-dir "$work/noperm"
  expect_error "unreadable CIFAR-10 data dir" "$work/noperm/data_batch_1.bin: Permission denied" -- \
    "${as_user[@]}" "$train" --dataset cifar10 --data-dir "$work/noperm"
fi
chmod 755 "$work/noperm"

# Under mpirun with 2 ranks: the job ends (no hang) with a non-zero code and the message once.
rc=0
timeout 120 $mpirun -np 2 "$train" --data-dir "$work/trunc" >"$work/out" 2>"$work/err" || rc=$?
if [[ $rc -ne 0 && $rc -ne 124 ]] && [[ $(grep -c "truncated file" "$work/err") -eq 1 ]]; then
  echo "ok   2 ranks, truncated file: mpirun exit $rc, message printed once"
  passed=$((passed + 1))
else
  echo "FAIL 2 ranks, truncated file: mpirun exit $rc"; cat "$work/err"; failures=$((failures + 1))
fi

# The paper's global batch of 128 cannot be split over 3 ranks: exit 2, said once.
rc=0
timeout 120 $mpirun -np 3 "$train" --preset convnet-fashion-mnist --dataset synthetic >"$work/out" 2>"$work/err" || rc=$?
if [[ $rc -eq 2 ]] && [[ $(grep -c "the global batch 128 (the paper's, --preset convnet-fashion-mnist) is not divisible by 3 ranks" "$work/err") -eq 1 ]]; then
  echo "ok   3 ranks, preset batch 128: exit 2, message printed once"
  passed=$((passed + 1))
else
  echo "FAIL 3 ranks, preset batch 128: exit $rc"; cat "$work/err"; failures=$((failures + 1))
fi

echo "$passed passed, $failures failed"
[[ $failures -eq 0 ]]
