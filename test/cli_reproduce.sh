#!/usr/bin/env bash
# bench/reproduce.sh's bookkeeping, without training: a stand-in trainer writes metrics
# with known accuracies, so the table's numbers can be checked exactly (issue 16).
#   cli_reproduce.sh REPO_ROOT
# Checks: the best epoch of the seed-averaged curve (the paper's "best mean test
# accuracy") beside each seed's best (mean ± std) and the last epoch; gaps to SGDM;
# a second invocation skips complete runs; results made with other options (here
# another --epochs) are refused before anything runs, naming them, files untouched.
set -u
root=$1
script="$root/bench/reproduce.sh"
work=$(mktemp -d /tmp/efsign-reproduce-XXXXXX)
trap 'rm -rf "$work"' EXIT
pass=0 fail=0
check() { local what=$1; shift; if "$@"; then pass=$((pass + 1)); echo "ok   $what"; else fail=$((fail + 1)); echo "FAIL $what"; fi; }

# The stand-in trainer: test accuracy per epoch from a table keyed by optimizer and seed
# (sgdm; the others lower by a fixed offset); counts its calls.
cat >"$work/trainer" <<'T'
#!/usr/bin/env bash
out="" seed="" opt="" epochs=""
while [ $# -gt 0 ]; do
  case "$1" in --metrics-out) out=$2; shift ;; --seed) seed=$2; shift ;; --optimizer) opt=$2; shift ;;
               --epochs) epochs=$2; shift ;; esac; shift
done
echo "$opt $seed" >>"$(dirname "$0")/calls"
case "$seed" in 1) a=(0.50 0.80 0.70) ;; 2) a=(0.60 0.70 0.90) ;; *) a=(0.70 0.75 0.80) ;; esac
case "$opt" in sgdm) off=0 ;; signsgd) off=0.10 ;; signum) off=0.20 ;; *) off=0.05 ;; esac
for e in $(seq 1 "$epochs"); do
  acc=$(awk -v x="${a[$((e - 1))]}" -v o="$off" 'BEGIN { printf "%.4f", x - o }')
  echo "{\"event\":\"epoch\",\"epoch\":$e,\"test_acc\":$acc}" >>"$out"
done
echo "{\"event\":\"summary\",\"test_acc\":$acc,\"bytes_sent_per_step\":1000,\"stopped_early\":false}" >>"$out"
T
chmod +x "$work/trainer"
# mpirun stand-in: drop "-np W", run the rest.
printf '#!/usr/bin/env bash\nshift 2\nexec "$@"\n' >"$work/mpirun"; chmod +x "$work/mpirun"

out="$work/out"
run() { timeout 120 bash "$script" --quick --no-estimate --batches 128 --no-plots --trainer "$work/trainer" --mpirun "$work/mpirun" \
          --out "$out" "$@" >"$work/log" 2>&1; }
rc=0; run || rc=$?
check "first invocation: exit 0 (got $rc)" test "$rc" -eq 0
check "12 runs (4 optimizers x 3 seeds)" test "$(wc -l <"$work/calls")" -eq 12
t="$out/table.md"
# sgdm: mean curve 60.00 / 75.00 / 80.00 -> best mean 80.00 at epoch 3; each seed's best
# 80, 90, 80 -> 83.33 ± 5.77; last 70, 90, 80 -> 80.00 ± 10.00.
check "best of the mean curve: SGDM 80.00 (epoch 3), signSGD -10.00, signum -20.00, EF -5.00" \
  grep -q '| 128 (64) | 80.00 (epoch 3) | -10.00 (epoch 3) | -20.00 (epoch 3) | -5.00 (epoch 3) |' "$t"
check "each seed's best: SGDM 83.33 ± 5.77, gaps with zero spread" \
  grep -q '| 128 (64) | 83.33 ± 5.77 | -10.00 ± 0.00 | -20.00 ± 0.00 | -5.00 ± 0.00 |' "$t"
check "last epoch: SGDM 80.00 ± 10.00" grep -q '| 128 (64) | 80.00 ± 10.00 |' "$t"
check "the section order: mean curve first" bash -c "grep -n '^## ' '$t' | head -1 | grep -q 'mean curve'"
check "every run's options recorded" test "$(ls "$out"/*.args | wc -l)" -eq 12

: >"$work/calls"; rc=0; run || rc=$?
check "second invocation: exit 0, nothing re-run (got $rc, $(wc -l <"$work/calls") runs)" \
  bash -c "[ $rc -eq 0 ] && [ ! -s '$work/calls' ]"

before=$(cd "$out" && cat ./*.jsonl | md5sum)
rc=0; run --epochs 2 || rc=$?
check "other options (--epochs 2) over earlier results: exit 2 (got $rc)" test "$rc" -eq 2
check "... names the results and says what to do" \
  bash -c "grep -q 'sgdm_b128_s1: made with' '$work/log' && grep -q 'use another --out, or move them away' '$work/log'"
check "... nothing ran" test ! -s "$work/calls"
check "... the results untouched" test "$(cd "$out" && cat ./*.jsonl | md5sum)" = "$before"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
