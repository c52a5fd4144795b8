#!/usr/bin/env bash
# Checkpoints: a run stopped and resumed ends bit-identical to the uninterrupted run
# (ef-signsgd and sgdm, 2 ranks, mid-epoch and at an epoch boundary); a mismatched,
# corrupt or foreign checkpoint is a one-line error with exit code 2; failed runs
# never change an existing checkpoint.
#   cli_checkpoint.sh EFSIGN_TRAIN "MPIRUN [FLAGS]"
set -u
train=$1
mpirun=$2
work=$(mktemp -d /tmp/efsign-ckpt-XXXXXX)
trap '[[ -n "${KEEP:-}" ]] || rm -rf "$work"' EXIT
failures=0 passed=0
check() { local n=$1; shift; if "$@"; then passed=$((passed + 1)); else echo "FAIL $n"; failures=$((failures + 1)); fi; }
run() { timeout 240 $mpirun -np "$1" "$train" --dataset synthetic --model mlp --epochs 2 --steps-per-epoch 6 \
          --progress off "${@:2}"; }
sum_of() { grep -o 'replicas identical (checksum [0-9a-f]*' "$1" | grep -o '[0-9a-f]*$'; }
gen_of() { printf 'gen-%06d' "$(grep -o '"generation":[0-9]*' "$1/manifest.json" | grep -o '[0-9]*$')"; }
tree_sum() { (cd "$1" && find . -type f | sort | xargs md5sum | md5sum); }

for opt in ef-signsgd sgdm; do
  for stop in 4 6; do  # 4: mid-epoch 1; 6: the end of epoch 1
    d="$work/ck-$opt-$stop"
    run 2 --optimizer "$opt" >"$work/a.out" 2>&1
    run 2 --optimizer "$opt" --checkpoint-dir "$d" --checkpoint-every 3 --max-steps "$stop" >"$work/b.out" 2>&1
    rc=0; run 2 --optimizer "$opt" --checkpoint-dir "$d" --resume >"$work/c.out" 2>&1 || rc=$?
    a=$(sum_of "$work/a.out"); c=$(sum_of "$work/c.out")
    check "$opt stop@$stop: resumed run exits 0 (got $rc)" test "$rc" -eq 0
    check "$opt stop@$stop: resumed from step $stop" grep -q "resumed from .*, $stop in total" "$work/c.out"
    check "$opt stop@$stop: bit-identical to the uninterrupted run ($a vs $c)" test -n "$a" -a "$a" = "$c"
  done
done
# Two-phase keeps a server-side error per rank: it is checkpointed too, and --overlap
# (which changes no bit) may differ between the stopped and the resumed run. 3 ranks.
d="$work/ck-two-phase"
run 3 --optimizer ef-signsgd --exchange two-phase >"$work/a.out" 2>&1
run 3 --optimizer ef-signsgd --exchange two-phase --checkpoint-dir "$d" --max-steps 4 >"$work/b.out" 2>&1
rc=0; run 3 --optimizer ef-signsgd --exchange two-phase --overlap --bucket-mb 0.1 --checkpoint-dir "$d" --resume \
  >"$work/c.out" 2>&1 || rc=$?
a=$(sum_of "$work/a.out"); c=$(sum_of "$work/c.out")
check "two-phase: resumed run (with --overlap) exits 0 (got $rc)" test "$rc" -eq 0
check "two-phase: bit-identical to the uninterrupted run ($a vs $c)" test -n "$a" -a "$a" = "$c"

d="$work/ck-ef-signsgd-4"
check "manifest names world size, model, optimizer" grep -q '"world_size":2,"model":"mlp","optimizer":"ef-signsgd"' "$d/manifest.json"
g=$(gen_of "$d")
check "one file per rank in the current generation $g" test -f "$d/$g/rank-0.ckpt" -a -f "$d/$g/rank-1.ckpt"
before=$(tree_sum "$d")

expect2() {  # expect2 NAME PATTERN RANKS ARGS...
  local name=$1 pattern=$2 ranks=$3
  shift 3
  local rc=0
  run "$ranks" "$@" >"$work/e.out" 2>"$work/e.err" || rc=$?
  local line
  line=$(grep "efsign-train: error" "$work/e.err")
  check "$name: exit 2 (got $rc)" test "$rc" -eq 2
  check "$name: one line saying /$pattern/ (got: $line)" bash -c "[[ \$(grep -c 'efsign-train: error' '$work/e.err') -eq 1 ]] && grep -q -- '$pattern' '$work/e.err'"
}
expect2 "other world size" "checkpoint was written with world size 2, this run has 3" 3 --optimizer ef-signsgd --checkpoint-dir "$d" --resume
expect2 "other optimizer" "checkpoint was written with optimizer ef-signsgd, this run has sgdm" 2 --optimizer sgdm --checkpoint-dir "$d" --resume
expect2 "other model" "checkpoint was written with model mlp, this run has convnet" 2 --optimizer ef-signsgd --model convnet --checkpoint-dir "$d" --resume
expect2 "other seed" "checkpoint was written with seed 42, this run has 7" 2 --optimizer ef-signsgd --seed 7 --checkpoint-dir "$d" --resume
expect2 "other exchange" "checkpoint was written with optimizer ef-signsgd/two-phase, this run has ef-signsgd" 3 --optimizer ef-signsgd --checkpoint-dir "$work/ck-two-phase" --resume
check "failed resumes left the checkpoint unchanged" test "$(tree_sum "$d")" = "$before"
cp -r "$d" "$work/corrupt"
printf '\xff' | dd of="$work/corrupt/$g/rank-1.ckpt" bs=1 seek=200 conv=notrunc status=none
expect2 "corrupt checkpoint" "rank-1.ckpt: corrupt checkpoint (checksum mismatch)" 2 --optimizer ef-signsgd --checkpoint-dir "$work/corrupt" --resume
cp -r "$d" "$work/foreign"
echo "not a checkpoint" >"$work/foreign/$g/rank-0.ckpt"
expect2 "foreign file" "rank-0.ckpt: not an efsign checkpoint" 2 --optimizer ef-signsgd --checkpoint-dir "$work/foreign" --resume
cp -r "$d" "$work/short"; head -c 1000 "$d/$g/rank-0.ckpt" >"$work/short/$g/rank-0.ckpt"
expect2 "truncated checkpoint" "rank-0.ckpt: corrupt checkpoint" 2 --optimizer ef-signsgd --checkpoint-dir "$work/short" --resume
expect2 "missing checkpoint" "no checkpoint here" 2 --optimizer ef-signsgd --checkpoint-dir "$work/none" --resume
echo "$passed passed, $failures failed"
[[ $failures -eq 0 ]]
