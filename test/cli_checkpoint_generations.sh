#!/usr/bin/env bash
# Checkpoint generations (issue 15), 2 ranks, mlp on synthetic data:
#   - a write that fails on one rank (the issue's reproduction, the failure planted where
#     rank 1's next .tmp goes) ends the job with one line (exit 2), leaves the previous
#     generation current and every file as it was, no .tmp; the next resume is
#     bit-identical to an uninterrupted run;
#   - --keep-checkpoints K (default 2) keeps the newest K generations, each complete;
#   - a new run refuses a folder holding a checkpoint (exit 2, nothing touched) unless
#     --overwrite-checkpoint;
#   - a checkpoint folder that cannot be created or written is found at start, before any
#     step, with the OS's reason (and the time the job took to end is printed).
#   cli_checkpoint_generations.sh EFSIGN_TRAIN "MPIRUN [FLAGS]"
set -u
train=$1
mpirun=$2
work=$(mktemp -d /tmp/efsign-gen-XXXXXX)
trap '[[ -n "${KEEP:-}" ]] || rm -rf "$work"' EXIT
failures=0 passed=0
check() { local n=$1; shift; if "$@"; then passed=$((passed + 1)); else echo "FAIL $n"; failures=$((failures + 1)); fi; }
run() { timeout "${RUN_TIMEOUT:-120}" $mpirun --bind-to none -np "$1" "$train" --dataset synthetic --model mlp \
          --epochs 2 --steps-per-epoch 6 --progress off "${@:2}"; }
sum_of() { grep -o 'replicas identical (checksum [0-9a-f]*' "$1" | grep -o '[0-9a-f]*$'; }
gen_of() { printf 'gen-%06d' "$(grep -o '"generation":[0-9]*' "$1/manifest.json" | grep -o '[0-9]*$')"; }
tree_sum() { (cd "$1" && find . -type f | sort | xargs md5sum | md5sum); }
expect2() {  # expect2 NAME PATTERN RANKS ARGS...
  local name=$1 pattern=$2 ranks=$3
  shift 3
  local rc=0
  run "$ranks" "$@" >"$work/e.out" 2>"$work/e.err" || rc=$?
  check "$name: exit 2 (got $rc)" test "$rc" -eq 2
  check "$name: one line saying /$pattern/ (got: $(grep 'efsign-train: error' "$work/e.err" | head -n 2))" \
    bash -c "[[ \$(grep -c 'efsign-train: error' '$work/e.err') -eq 1 ]] && grep -q -- \"\$0\" '$work/e.err'" "$pattern"
}
t_start=$(date +%s)
# ---- Issue 15: a write that fails on one rank. The reproduction of the issue, with the
# failure planted where rank 1's next .tmp file goes (a folder there: open fails on rank 1
# only). The failed save must leave the previous generation current and intact on both
# ranks, with no .tmp file, and a later resume must end bit-identical to an uninterrupted run.
U=(--optimizer ef-signsgd --epochs 1 --steps-per-epoch 20)
F=("${U[@]}" --checkpoint-every 5)
d="$work/failed-write"
run 2 "${U[@]}" >"$work/u.out" 2>&1
run 2 "${F[@]}" --checkpoint-dir "$d" --max-steps 5 >"$work/b.out" 2>&1
if grep -q '"generation"' "$d/manifest.json" 2>/dev/null; then
  planted="$d/$(printf 'gen-%06d' $(( $(grep -o '"generation":[0-9]*' "$d/manifest.json" | grep -o '[0-9]*$') + 1 )))/rank-1.ckpt.tmp"
else
  planted="$d/rank-1.ckpt.tmp"  # the layout before generations
fi
mkdir -p "$planted"
before=$(tree_sum "$d") manifest=$(cat "$d/manifest.json")
t0=$(date +%s.%N) rc=0
timeout 120 $mpirun --bind-to none -np 2 "$train" --dataset synthetic --model mlp --progress off "${F[@]}" \
  --checkpoint-dir "$d" --resume >"$work/f.out" 2>"$work/f.err" || rc=$?
took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
check "failed write on rank 1: exit 2 (got $rc)" test "$rc" -eq 2
check "failed write on rank 1: one line naming rank 1's file and the OS's reason ($(grep error "$work/f.err"))" \
  bash -c "[[ \$(grep -c 'efsign-train: error' '$work/f.err') -eq 1 ]] && grep -q 'rank 1: .*rank-1.ckpt.tmp: cannot write checkpoint (Is a directory)' '$work/f.err'"
check "failed write on rank 1: the previous generation is current (manifest unchanged)" \
  test "$(cat "$d/manifest.json")" = "$manifest"
check "failed write on rank 1: every checkpoint file as it was" test "$(tree_sum "$d")" = "$before"
check "failed write on rank 1: no .tmp file left ($(find "$d" -name '*.tmp' -type f | tr '\n' ' '))" \
  test -z "$(find "$d" -name '*.tmp' -type f)"
echo "     (the failed save ended the job $took s after its start)"
rmdir "$planted"
rc=0; run 2 "${F[@]}" --checkpoint-dir "$d" --resume >"$work/r.out" 2>&1 || rc=$?
u=$(sum_of "$work/u.out"); r=$(sum_of "$work/r.out")
check "after the failed write: the resume exits 0 (got $rc)" test "$rc" -eq 0
check "after the failed write: both ranks resume from step 5" grep -q "resumed from .*, 5 in total" "$work/r.out"
check "after the failed write: bit-identical to the uninterrupted run ($u vs $r)" test -n "$u" -a "$u" = "$r"
check "after the failed write: no .tmp anywhere" test -z "$(find "$d" -name '*.tmp')"

# ---- Keep K generations (--keep-checkpoints, default 2), each with every rank's file.
gens() { find "$1" -maxdepth 1 -name 'gen-*' -type d -printf '%f\n' 2>/dev/null | sort | tr '\n' ' '; }
K=(--epochs 1 --steps-per-epoch 10 --checkpoint-every 1)
run 2 "${K[@]}" --checkpoint-dir "$work/keep3" --keep-checkpoints 3 >"$work/k.out" 2>&1
run 2 "${K[@]}" --checkpoint-dir "$work/keep2" >>"$work/k.out" 2>&1
for k in 2 3; do
  g=$(gen_of "$work/keep$k" 2>/dev/null)
  n=$((10#${g#gen-}))
  want=$(for i in $(seq $((n - k + 1)) "$n"); do printf 'gen-%06d ' "$i"; done)
  check "keep $k: the newest $k generations ($want) and no other (got $(gens "$work/keep$k"))" \
    test -n "$g" -a "$(gens "$work/keep$k")" = "$want"
  check "keep $k: 10 saves (9 every step, 1 at the epoch's end) made $g" test "$g" = gen-000010
  for x in $want; do
    check "keep $k: $x holds both ranks' files" test -f "$work/keep$k/$x/rank-0.ckpt" -a -f "$work/keep$k/$x/rank-1.ckpt"
  done
done
# --max-steps at a --checkpoint-every step saves once (a second copy would push the
# previous generation out of the kept ones).
run 2 --epochs 1 --steps-per-epoch 20 --checkpoint-every 5 --checkpoint-dir "$work/once" --max-steps 10 >"$work/k.out" 2>&1
check "--max-steps on a --checkpoint-every step: one save per step (generations $(gens "$work/once"))" \
  test "$(gens "$work/once")" = "gen-000001 gen-000002 "

# ---- A new run refuses a folder that holds a checkpoint; --overwrite-checkpoint replaces it.
d="$work/refuse"
run 2 --optimizer ef-signsgd --checkpoint-dir "$d" --max-steps 4 >"$work/b.out" 2>&1
before=$(tree_sum "$d")
expect2 "new run into a checkpoint" "holds a checkpoint.*--resume.*--overwrite-checkpoint" 2 --optimizer ef-signsgd --checkpoint-dir "$d"
check "refused new run: checkpoint unchanged" test "$(tree_sum "$d")" = "$before"
rc=0; run 2 --optimizer ef-signsgd --checkpoint-dir "$d" --overwrite-checkpoint --max-steps 2 >"$work/o.out" 2>&1 || rc=$?
check "--overwrite-checkpoint: exit 0 (got $rc)" test "$rc" -eq 0
check "--overwrite-checkpoint: the new run's checkpoint (step 2) is current" grep -q '"global_step":2}' "$d/manifest.json"
check "--overwrite-checkpoint: the old generations are gone (left: $(gens "$d"))" test "$(gens "$d")" = "gen-000001 "

# ---- A checkpoint folder that cannot be used is found at start, with the OS's reason,
# before any step (measured), on every rank's behalf.
start_fail() {  # start_fail NAME REASON DIR [PREFIX...]
  local name=$1 reason=$2 dir=$3
  shift 3
  local rc=0 t0 took
  t0=$(date +%s.%N)
  timeout 120 "$@" $mpirun --bind-to none -np 2 "$train" --dataset synthetic --model mlp --progress off --epochs 3 \
    --checkpoint-dir "$dir" >"$work/s.out" 2>"$work/s.err" || rc=$?
  took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  check "$name: exit 2 (got $rc)" test "$rc" -eq 2
  check "$name: one line with the OS's reason '$reason' (got: $(grep error "$work/s.err" | head -n 2))" \
    bash -c "[[ \$(grep -c 'efsign-train: error' '$work/s.err') -eq 1 ]] && grep -q \"\$0\" '$work/s.err'" "${dir%/*}.*($reason)"
  check "$name: found before the first epoch" bash -c "! grep -q '^epoch' '$work/s.out'"
  echo "     ($name: the job ended $took s after its start)"
}
start_fail "uncreatable checkpoint folder (/proc)" "No such file or directory" /proc/efsign-nope/ck
echo "a file" >"$work/plainfile"
start_fail "checkpoint folder under a file" "Not a directory" "$work/plainfile/ck"
mkdir -p "$work/ro"
if unshare -rm true 2>/dev/null; then  # a read-only file system, mounted in a private namespace
  start_fail "read-only file system" "Read-only file system" "$work/ro" unshare -rm sh -c 'mount -t tmpfs -o ro none "$0" && exec "$@"' "$work/ro"
else
  echo "SKIP read-only file system: unshare -rm is not available here"
fi

echo "$passed passed, $failures failed ($(( $(date +%s) - t_start )) s)"
[[ $failures -eq 0 ]]
