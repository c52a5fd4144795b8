#!/usr/bin/env bash
# Resuming (issue 15), 2 ranks, mlp on synthetic data:
#   - --metrics-out is appended to on resume: the earlier epochs stay, a "resumed" record;
#   - --resume of a finished run (or with --max-steps already reached) says so, exits 0,
#     runs no step and leaves the checkpoint and the metrics byte for byte as they were;
#   - a mid-epoch resume with a smaller --steps-per-epoch runs no step in that epoch,
#     prints no NaN/inf, and the summary's bytes per step are those of a real step;
#   - a changed --batch-size, data set or --num-classes is refused (exit 2, one line, the
#     layer named); a changed --threads is a warning and "bit_identical":false.
#   cli_resume.sh EFSIGN_TRAIN "MPIRUN [FLAGS]"
set -u
train=$1
mpirun=$2
work=$(mktemp -d /tmp/efsign-resume-XXXXXX)
trap '[[ -n "${KEEP:-}" ]] || rm -rf "$work"' EXIT
failures=0 passed=0
check() { local n=$1; shift; if "$@"; then passed=$((passed + 1)); else echo "FAIL $n"; failures=$((failures + 1)); fi; }
# Every multi-rank run under a timeout (a hang is a failure, never a stuck test).
run() { timeout "${RUN_TIMEOUT:-120}" $mpirun --bind-to none -np 2 "$train" --dataset synthetic --model mlp \
          --progress off "$@"; }
sum_of() { grep -o 'replicas identical (checksum [0-9a-f]*' "$1" | grep -o '[0-9a-f]*$'; }
tree_sum() { (cd "$1" && find . -type f | sort | xargs md5sum | md5sum); }
# field FILE EVENT KEY: KEY's value in the last EVENT record of a metrics file.
field() { grep "\"event\":\"$2\"" "$1" | tail -n 1 | grep -o "\"$3\":[^,}]*" | cut -d: -f2 | tr -d '"'; }
line_of() { grep -n "$2" "$1" | head -n 1 | cut -d: -f1; }
t_start=$(date +%s)

# ---- Metrics appended on resume.
S=(--epochs 2 --steps-per-epoch 6)
d="$work/app" m="$work/app.jsonl"
run "${S[@]}" --checkpoint-dir "$d" --metrics-out "$m" --max-steps 8 >"$work/b.out" 2>&1
first=$(grep '"event":"epoch","epoch":1,' "$m")
rc=0; run "${S[@]}" --checkpoint-dir "$d" --metrics-out "$m" --resume >"$work/c.out" 2>&1 || rc=$?
check "metrics on resume: exit 0 (got $rc)" test "$rc" -eq 0
check "metrics on resume: the first run's epoch 1 record is kept" test -n "$first" -a "$(grep -c -F "$first" "$m")" -eq 1
check "metrics on resume: a resumed record at epoch 2, step 2, global step 8" \
  grep -q '"event":"resumed","epoch":2,"step":2,"global_step":8,"bit_identical":true' "$m"
o=$(line_of "$m" '"event":"epoch","epoch":1,'); r=$(line_of "$m" '"event":"resumed"')
e=$(grep -n '"event":"epoch","epoch":2,' "$m" | tail -n 1 | cut -d: -f1)
s=$(grep -n '"event":"summary"' "$m" | tail -n 1 | cut -d: -f1)
check "metrics on resume: epoch 1, then resumed, then epoch 2 and the summary (lines $o < $r < $e < $s)" \
  test "${o:-0}" -gt 0 -a "${o:-0}" -lt "${r:-0}" -a "${r:-0}" -lt "${e:-0}" -a "${e:-0}" -lt "${s:-0}"
check "metrics on resume: the resumed summary counts 12 global steps, 4 run" \
  test "$(field "$m" summary global_steps)/$(field "$m" summary steps_run)" = "12/4"

# ---- Resume of a finished run: nothing to do, nothing touched.
d="$work/fin" m="$work/fin.jsonl"
run "${S[@]}" --checkpoint-dir "$d" --metrics-out "$m" >"$work/a.out" 2>&1
before=$(tree_sum "$d") mbefore=$(md5sum <"$m")
t0=$(date +%s.%N); rc=0
run "${S[@]}" --checkpoint-dir "$d" --metrics-out "$m" --resume >"$work/c.out" 2>"$work/c.err" || rc=$?
check "finished run: exit 0 (got $rc)" test "$rc" -eq 0
check "finished run: says it is already complete" grep -q "already complete.*nothing to do" "$work/c.out"
check "finished run: no step, no epoch, no summary line" bash -c "! grep -q -e '^epoch' -e '^done:' '$work/c.out'"
check "finished run: no nan/inf printed" bash -c "! grep -qiw -e nan -e '-nan' -e inf -e infx '$work/c.out' '$work/c.err'"
check "finished run: checkpoint files byte-identical" test "$(tree_sum "$d")" = "$before"
check "finished run: metrics file untouched" test "$(md5sum <"$m")" = "$mbefore"
echo "     (finished-run resume took $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s)"

# ---- --max-steps already reached: resume from step 20 with --max-steps 10.
L=(--epochs 4 --steps-per-epoch 6)
d="$work/max"
run "${L[@]}" --checkpoint-dir "$d" --max-steps 20 >"$work/b.out" 2>&1
before=$(tree_sum "$d")
rc=0; run "${L[@]}" --checkpoint-dir "$d" --max-steps 10 --resume >"$work/c.out" 2>&1 || rc=$?
check "--max-steps 10 from step 20: exit 0 (got $rc)" test "$rc" -eq 0
check "--max-steps 10 from step 20: already complete, no step run" \
  bash -c "grep -q 'already complete' '$work/c.out' && ! grep -q -e 'stopped after' -e '^epoch' '$work/c.out'"
check "--max-steps 10 from step 20: checkpoint unchanged" test "$(tree_sum "$d")" = "$before"

# ---- Mid-epoch resume with a smaller --steps-per-epoch than the steps already done.
d="$work/spe"
run "${S[@]}" --checkpoint-dir "$d" --max-steps 5 --metrics-out "$work/spe0.jsonl" >"$work/b.out" 2>&1
step_bytes=$(field "$work/spe0.jsonl" summary bytes_sent_per_step)  # 5 real steps
step_ratio=$(field "$work/spe0.jsonl" summary compression_ratio)
cp -r "$d" "$work/spe1"
rc=0; run --epochs 2 --steps-per-epoch 3 --checkpoint-dir "$d" --resume --metrics-out "$work/spe.jsonl" \
  >"$work/c.out" 2>"$work/c.err" || rc=$?
check "smaller --steps-per-epoch: exit 0 (got $rc)" test "$rc" -eq 0
check "smaller --steps-per-epoch: epoch 1 says it has no steps left" grep -q "^epoch   1 .*no steps left" "$work/c.out"
check "smaller --steps-per-epoch: no nan/inf printed or recorded" \
  bash -c "! grep -qiw -e nan -e '-nan' -e inf -e infx -e null '$work/c.out' '$work/c.err' '$work/spe.jsonl'"
check "smaller --steps-per-epoch: the summary's bytes per step are a real step's ($(field "$work/spe.jsonl" summary bytes_sent_per_step) vs $step_bytes)" \
  test -n "$step_bytes" -a "$(field "$work/spe.jsonl" summary bytes_sent_per_step)" = "$step_bytes"
check "smaller --steps-per-epoch: the summary's ratio is a real step's ($(field "$work/spe.jsonl" summary compression_ratio) vs $step_ratio)" \
  test -n "$step_ratio" -a "$(field "$work/spe.jsonl" summary compression_ratio)" = "$step_ratio"
check "smaller --steps-per-epoch: 3 steps run (epoch 2)" test "$(field "$work/spe.jsonl" summary steps_run)" = 3
# The last epoch has no step left: the run ends with the epoch's evaluation; still no NaN or
# inf, and the done line does not claim another world size's traffic.
rc=0; run --epochs 1 --steps-per-epoch 3 --checkpoint-dir "$work/spe1" --resume --metrics-out "$work/spe1.jsonl" \
  >"$work/c.out" 2>"$work/c.err" || rc=$?
check "no step left at all: exit 0 (got $rc)" test "$rc" -eq 0
check "no step left at all: no nan/inf printed or recorded" \
  bash -c "! grep -qiw -e nan -e '-nan' -e inf -e infx -e null '$work/c.out' '$work/c.err' '$work/spe1.jsonl'"
check "no step left at all: the done line says 0 steps and does not claim W = 1" \
  bash -c "grep -q '^done:.* 0 steps' '$work/c.out' && ! grep -q 'W = 1' '$work/c.out'"

# ---- What a bit-identical resume needs: refused when changed; --threads warned and recorded.
d="$work/max"  # stopped at step 20 of 24
before=$(tree_sum "$d")
expect2() {  # expect2 NAME PATTERN ARGS...
  local name=$1 pattern=$2
  shift 2
  local rc=0
  run "$@" >"$work/e.out" 2>"$work/e.err" || rc=$?
  check "$name: exit 2 (got $rc)" test "$rc" -eq 2
  check "$name: one line saying /$pattern/ (got: $(grep 'efsign-train: error' "$work/e.err" | head -n 2))" \
    bash -c "[[ \$(grep -c 'efsign-train: error' '$work/e.err') -eq 1 ]] && grep -q -- \"\$0\" '$work/e.err'" "$pattern"
}
expect2 "changed --batch-size" "checkpoint was written with batch size per rank 64, this run has 32" \
  "${L[@]}" --checkpoint-dir "$d" --resume --batch-size 32
expect2 "changed --synthetic-train (another data set)" "checkpoint was written with data set synthetic.*8192.*this run has synthetic.*4096" \
  "${L[@]}" --checkpoint-dir "$d" --resume --synthetic-train 4096
fm=${EFSIGN_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
if [[ -r "$fm/train-images-idx3-ubyte.gz" || -r "$fm/train-images-idx3-ubyte" ]]; then
  expect2 "changed --dataset" "checkpoint was written with data set synthetic.*this run has fashion-mnist" \
    "${L[@]}" --checkpoint-dir "$d" --resume --dataset fashion-mnist --data-dir "$fm"
else
  echo "SKIP changed --dataset: no Fashion-MNIST in $fm"
fi
expect2 "--num-classes 12 names the layer" \
  "the layer table differs: the checkpoint has 'param\.[a-z0-9_.]*' (10x[0-9]*) where this run has 'param\.[a-z0-9_.]*' (12x" \
  "${L[@]}" --checkpoint-dir "$d" --resume --num-classes 12
check "refused resumes left the checkpoint unchanged" test "$(tree_sum "$d")" = "$before"
rc=0; run "${L[@]}" --checkpoint-dir "$d" --resume --threads 2 --metrics-out "$work/thr.jsonl" \
  >"$work/c.out" 2>"$work/c.err" || rc=$?
check "changed --threads: exit 0 (got $rc)" test "$rc" -eq 0
check "changed --threads: a warning that the run is not bit-identical" \
  grep -q "warning: the checkpoint was written with another --threads.*not bit-identical" "$work/c.err"
check "changed --threads: recorded as \"bit_identical\":false" grep -q '"event":"resumed".*"bit_identical":false' "$work/thr.jsonl"

echo "$passed passed, $failures failed ($(( $(date +%s) - t_start )) s)"
[[ $failures -eq 0 ]]
