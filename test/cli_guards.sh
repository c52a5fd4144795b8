#!/usr/bin/env bash
# Guards users expect (issue 15), mlp on synthetic data:
#   - --lr 1e30: every step after the first is non-finite and skipped; the run ends after
#     --max-skipped-steps (default 50) consecutive skips with a clear message (exit 1),
#     and the done line always counts the skipped steps;
#   - ranks started with different options (an MPMD launch) fail at start with one clear
#     line (exit 1), for the options that change what is computed and for those that
#     decide which collectives a rank enters (checkpoint folder, --keep-checkpoints,
#     --overwrite-checkpoint, --save-model): never a hang;
#   - --batch-size beyond each rank's share says what is used; --threads beyond the cores
#     warns; --metrics-out /dev/full under 2 ranks: exit 2, said once, no hang;
#   - step times and images/s do not count the test-set evaluation.
#   cli_guards.sh EFSIGN_TRAIN "MPIRUN [FLAGS]"
set -u
train=$1
mpirun=$2
work=$(mktemp -d /tmp/efsign-guards-XXXXXX)
trap '[[ -n "${KEEP:-}" ]] || rm -rf "$work"' EXIT
failures=0 passed=0
check() { local n=$1; shift; if "$@"; then passed=$((passed + 1)); else echo "FAIL $n"; failures=$((failures + 1)); fi; }
B=(--dataset synthetic --model mlp --progress off --epochs 1)
run() { timeout "${RUN_TIMEOUT:-120}" $mpirun --bind-to none -np 2 "$train" "${B[@]}" "$@"; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
errors() { grep -c 'efsign-train: error' "$1"; }
t_start=$(date +%s)

# ---- Consecutive skipped steps.
t0=$(date +%s.%N) rc=0
run --steps-per-epoch 60 --lr 1e30 >"$work/s.out" 2>"$work/s.err" || rc=$?
took=$(elapsed "$t0")
check "--lr 1e30: exit 1 (got $rc)" test "$rc" -eq 1
check "--lr 1e30: one line: 50 consecutive steps skipped, what to do ($(grep error "$work/s.err"))" \
  bash -c "[[ \$(grep -c 'efsign-train: error' '$work/s.err') -eq 1 ]] && grep -q 'error: 50 consecutive steps skipped (the last, step 51: non-finite.*lower --lr' '$work/s.err'"
check "--lr 1e30: stopped at step 51, not at the end of the epoch" bash -c "! grep -q 'step 5[2-9] skipped' '$work/s.err'"
echo "     (--lr 1e30: the job ended after 50 skipped steps, $took s after its start)"
rc=0; run --steps-per-epoch 20 --lr 1e30 --max-skipped-steps 3 >"$work/s.out" 2>"$work/s.err" || rc=$?
check "--max-skipped-steps 3: exit 1 (got $rc), 3 consecutive steps skipped at step 4" \
  bash -c "[[ $rc -eq 1 ]] && grep -q 'error: 3 consecutive steps skipped (the last, step 4:' '$work/s.err'"
rc=0; run --steps-per-epoch 8 --lr 1e30 --max-skipped-steps 0 >"$work/s.out" 2>"$work/s.err" || rc=$?
check "--max-skipped-steps 0 (never): exit 0 (got $rc); the done line counts 7 skipped of 8 steps" \
  bash -c "[[ $rc -eq 0 ]] && grep -q '^done:.* 8 steps, 7 skipped' '$work/s.out'"
rc=0; run --steps-per-epoch 4 >"$work/s.out" 2>"$work/s.err" || rc=$?
check "a healthy run: exit 0 (got $rc); the done line says 0 skipped" \
  bash -c "[[ $rc -eq 0 ]] && grep -q '^done:.* 4 steps, 0 skipped' '$work/s.out'"

# ---- Ranks that were given different options (MPMD): exit 1 at start, one line, no hang.
mpmd() {  # mpmd NAME "RANK 0 FLAGS" "RANK 1 FLAGS"
  local name=$1 rc=0 t0
  t0=$(date +%s.%N)
  timeout "${RUN_TIMEOUT:-120}" $mpirun --bind-to none -np 1 "$train" "${B[@]}" --steps-per-epoch 4 $2 : \
    -np 1 "$train" "${B[@]}" --steps-per-epoch 4 $3 >"$work/m.out" 2>"$work/m.err" || rc=$?
  check "MPMD $name: exit 1 (got $rc, after $(elapsed "$t0") s)" test "$rc" -eq 1
  check "MPMD $name: one line: ranks disagree on the training options ($(grep -a error "$work/m.err"))" \
    bash -c "[[ \$(grep -c 'efsign-train: error' '$work/m.err') -eq 1 ]] && grep -q 'ranks disagree on the training options' '$work/m.err'"
  check "MPMD $name: no step was run" bash -c "! grep -q -e '^epoch' -e '^done:' '$work/m.out'"
}
mpmd "--lr 0.1 vs 0.2" "--lr 0.1" "--lr 0.2"
mpmd "--seed" "--seed 1" "--seed 2"
mpmd "--batch-size" "--batch-size 32" "--batch-size 64"
mpmd "--keep-checkpoints" "--checkpoint-dir $work/k0 --checkpoint-every 1 --keep-checkpoints 1" \
  "--checkpoint-dir $work/k1 --checkpoint-every 1"
mpmd "a checkpoint folder on one rank only" "--checkpoint-dir $work/c0" ""
mpmd "--overwrite-checkpoint on one rank only" "--checkpoint-dir $work/o0 --overwrite-checkpoint" "--checkpoint-dir $work/o1"
mpmd "--save-model on one rank only" "" "--save-model $work/model.safetensors"

# ---- --batch-size beyond each rank's share: what is used is said.
rc=0; run --synthetic-train 512 --synthetic-test 64 --batch-size 99999999 >"$work/b.out" 2>&1 || rc=$?
check "--batch-size 99999999: exit 0 (got $rc) and says 256 per rank is used ($(grep data: "$work/b.out"))" \
  bash -c "[[ $rc -eq 0 ]] && grep -q '^  data: .*1 steps/epoch of 2 x 256 images (the batch of 99999999 per rank is more than each rank.s share of the data: 256 is used)' '$work/b.out'"

# ---- --threads beyond the cores: a warning (as soon as the run starts; the run itself is
# then slow, so it is stopped once the warning is there).
cores=$(getconf _NPROCESSORS_ONLN)
timeout 120 "$train" "${B[@]}" --synthetic-train 64 --synthetic-test 16 --batch-size 16 --threads 1000 \
  >"$work/t.out" 2>"$work/t.err" &
job=$!
for _ in $(seq 1 600); do grep -q warning "$work/t.err" 2>/dev/null && break; kill -0 "$job" 2>/dev/null || break; sleep 0.1; done
kill "$job" 2>/dev/null; wait "$job" 2>/dev/null
check "--threads 1000: a warning naming the threads and the $cores cores ($(grep warning "$work/t.err"))" \
  grep -q "warning: 1 ranks on this host x 1000 threads = 1000 threads on $cores cores" "$work/t.err"

# ---- A metrics file that cannot be written, under 2 ranks.
t0=$(date +%s.%N) rc=0
run --steps-per-epoch 2 --metrics-out /dev/full >"$work/f.out" 2>"$work/f.err" || rc=$?
check "--metrics-out /dev/full, 2 ranks: exit 2 (got $rc, after $(elapsed "$t0") s)" test "$rc" -eq 2
check "--metrics-out /dev/full, 2 ranks: said once, with the OS's reason" \
  bash -c "[[ \$(grep -c 'efsign-train: error' '$work/f.err') -eq 1 ]] && grep -q '/dev/full: cannot write metrics (No space left on device)' '$work/f.err'"

# ---- Step times and images/s count the training steps, not the test-set evaluation that
# ends the epoch (1 rank; 10 convnet steps evaluated on 64 or on 20000 test images).
step_ms() { grep '"event":"epoch"' "$1" | grep -o '"step_time_ms":[^,]*' | cut -d: -f2; }
for t in 64 20000; do
  timeout 300 "$train" --dataset synthetic --model convnet --epochs 1 --steps-per-epoch 10 --synthetic-test "$t" \
    --progress off --metrics-out "$work/eval$t.jsonl" >/dev/null 2>&1
done
small=$(step_ms "$work/eval64.jsonl") big=$(step_ms "$work/eval20000.jsonl")
check "step time without the evaluation: $small ms/step with 64 test images, $big ms/step with 20000" \
  awk -v a="${small:-0}" -v b="${big:-0}" 'BEGIN { exit !(a > 0 && b > 0 && b < 4 * a) }'

echo "$passed passed, $failures failed ($(( $(date +%s) - t_start )) s)"
[[ $failures -eq 0 ]]
