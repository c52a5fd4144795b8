#!/usr/bin/env bash
# Issue 16: a run stopped partway through the epoch after a learning-rate milestone, with
# --reset-state-at-milestones, resumes bit-identical to the uninterrupted run, for every
# optimizer (sgdm, signsgd, signum, ef-signsgd) and for ef-signsgd's two-phase exchange:
# the reset happens when that epoch starts, never again on the state a resume restores.
# 2 ranks, mlp on synthetic data, explicit flags (so that older builds run it as well).
#   cli_checkpoint_milestones.sh EFSIGN_TRAIN "MPIRUN [FLAGS]"
set -u
train=$1
mpirun=$2
work=$(mktemp -d /tmp/efsign-milestones-XXXXXX)
trap '[[ -n "${KEEP:-}" ]] || rm -rf "$work"' EXIT
failures=0 passed=0
check() { local n=$1; shift; if "$@"; then passed=$((passed + 1)); else echo "FAIL $n"; failures=$((failures + 1)); fi; }
run() { timeout "${RUN_TIMEOUT:-120}" $mpirun --bind-to none -np 2 "$train" --dataset synthetic --model mlp \
          --progress off --batch-size 64 "$@"; }
sum_of() { grep -o 'replicas identical (checksum [0-9a-f]*' "$1" | grep -o '[0-9a-f]*$'; }
t_start=$(date +%s)

# Milestone 1 of 2 epochs of 6 steps: the stop at global step 8 is step 2 of epoch 2.
M=(--epochs 2 --steps-per-epoch 6 --lr-milestones 1 --reset-state-at-milestones)
for variant in sgdm signsgd signum ef-signsgd ef-signsgd/two-phase; do
  opt=${variant%/*}
  ex=(); [[ $variant == */two-phase ]] && ex=(--exchange two-phase)
  d="$work/ms-${variant//\//-}"
  run --optimizer "$opt" "${ex[@]}" "${M[@]}" >"$work/a.out" 2>&1
  run --optimizer "$opt" "${ex[@]}" "${M[@]}" --checkpoint-dir "$d" --max-steps 8 >"$work/b.out" 2>&1
  rc=0; run --optimizer "$opt" "${ex[@]}" "${M[@]}" --checkpoint-dir "$d" --resume >"$work/c.out" 2>&1 || rc=$?
  a=$(sum_of "$work/a.out"); c=$(sum_of "$work/c.out")
  check "$variant: the stopped run stopped in epoch 2 at global step 8" grep -q "stopped after 8 steps" "$work/b.out"
  check "$variant: resumed run exits 0 (got $rc)" test "$rc" -eq 0
  check "$variant: resumed from global step 8" grep -q "resumed from .*, 8 in total" "$work/c.out"
  check "$variant: resumed bit-identical to the uninterrupted run ($a vs $c)" test -n "$a" -a "$a" = "$c"
done
echo "$passed passed, $failures failed ($(( $(date +%s) - t_start )) s)"
[[ $failures -eq 0 ]]
