#!/usr/bin/env bash
# efsign-bench under mpirun with 2 ranks: the comm sweep's own correctness check
# reports no wrong element, JSON has the documented fields; step lists every optimizer.
#   cli_bench.sh EFSIGN_BENCH "MPIRUN [FLAGS]"
set -u
bench=$1
mpirun=$2
work=$(mktemp -d /tmp/efsign-bench-XXXXXX)
trap 'rm -rf "$work"' EXIT
failures=0
passed=0
check() {
  local name=$1
  shift
  if "$@"; then passed=$((passed + 1)); else echo "FAIL $name"; failures=$((failures + 1)); fi
}
rc=0
timeout 120 $mpirun -np 2 "$bench" comm -b 31 -e 31000 -f 10 --iters 3 --warmup 1 --json "$work/comm.jsonl" \
  >"$work/comm.out" 2>&1 || rc=$?
cat "$work/comm.out"
check "comm: exit 0" test "$rc" -eq 0
check "comm: 4 sizes x 5 methods" test "$(wc -l <"$work/comm.jsonl")" -eq 20
check "comm: no wrong element" test "$(grep -c '"wrong":0}' "$work/comm.jsonl")" -eq 20
for m in fp32-allreduce compressed two-phase vote allgather; do
  check "comm: method $m at every size" test "$(grep -c "\"method\":\"$m\"" "$work/comm.jsonl")" -eq 4
done
for f in method elements bytes_per_rank wire_bytes_per_rank time_ms_median algbw busbw wrong; do
  check "comm: field $f" grep -q "\"$f\":" "$work/comm.jsonl"
done
# 31 elements: 1 word + 1 scale = 8 bytes compressed, 124 bytes fp32.
check "comm: bytes of 31 elements" grep -Eq '"method":"compressed","elements":31,"world":2,"backend":"mpi","codec":"cpu [a-z0-9]+","bytes_per_rank":8,' "$work/comm.jsonl"
rc=0
timeout 120 $mpirun -np 2 "$bench" step --model mlp --steps 2 --warmup 1 --json "$work/step.jsonl" >"$work/step.out" 2>&1 || rc=$?
cat "$work/step.out"
check "step: exit 0" test "$rc" -eq 0
check "step: one record per optimizer and ef-signsgd exchange" test "$(wc -l <"$work/step.jsonl")" -eq 6
rc=0
timeout 120 $mpirun -np 2 "$bench" step --model mlp --steps 2 --warmup 1 --optimizers sgdm,ef-signsgd \
  --exchanges allgather --overlap --bucket-mb 0.05 --json "$work/overlap.jsonl" >"$work/overlap.out" 2>&1 || rc=$?
cat "$work/overlap.out"
check "step --overlap: exit 0" test "$rc" -eq 0
check "step --overlap: sgdm, ef-signsgd, ef-signsgd+overlap" test "$(wc -l <"$work/overlap.jsonl")" -eq 3
check "step --overlap: the overlapped row says so" grep -q '"label":"ef-signsgd+overlap","overlap":true' "$work/overlap.jsonl"
rc=0
timeout 120 "$bench" loader --model mlp --batch-size 32 --batches 2 >"$work/loader.out" 2>&1 || rc=$?
cat "$work/loader.out"
check "loader: exit 0" test "$rc" -eq 0
check "loader: reports both rates" grep -q "loader / training:" "$work/loader.out"
rc=0
timeout 120 "$bench" codec --iters 2 --warmup 0 --json "$work/codec.jsonl" >"$work/codec.out" 2>&1 || rc=$?
cat "$work/codec.out"
check "codec: exit 0" test "$rc" -eq 0
paths=$(grep -o '"path":"[a-z0-9]*"' "$work/codec.jsonl" | grep -v '"-"' | sort -u | cut -d'"' -f4)
check "codec: the portable path is measured" grep -q '"path":"portable"' "$work/codec.jsonl"
for p in $paths; do
  for op in "compress (EF)" "decode-average" "decode-average-apply" "compress + decode-average" \
    "compress + decode-average-apply"; do
    check "codec: $p / $op" grep -q "\"path\":\"$p\",\"operation\":\"$op\"," "$work/codec.jsonl"
  done
done
for f in time_ms_median memcpy_ms_median ratio_to_memcpy ratio_min ratio_max; do
  check "codec: field $f" grep -q "\"$f\":[0-9]" "$work/codec.jsonl"
done
# bench/plot.py's numbers (its --print mode needs no matplotlib): every sign row is
# compared with sgdm by its own label (a two-phase row once overwrote the allgather one).
plot=$(dirname "$0")/../bench/plot.py
if command -v python3 >/dev/null; then
  mkdir -p "$work/netem"
  printf '%s\n' '{"label":"sgdm","optimizer":"sgdm","step_ms":100}' \
    '{"label":"ef-signsgd","optimizer":"ef-signsgd","step_ms":50}' \
    '{"label":"ef-signsgd/two-phase","optimizer":"ef-signsgd","step_ms":80}' >"$work/netem/step_W2_1gbit.jsonl"
  printf '%s\n' '{"optimizer":"sgdm","step_ms":90}' '{"optimizer":"ef-signsgd","step_ms":60}' \
    >"$work/netem/step_W4_10gbit.jsonl"  # a file from before rows had labels
  python3 "$plot" --print "$work/netem" >"$work/plot.out" 2>&1
  cat "$work/plot.out"
  check "plot.py: W=2 allgather speedup 2.00" grep -qx "2 1gbit allgather 2.00" "$work/plot.out"
  check "plot.py: W=2 two-phase speedup 1.25" grep -qx "2 1gbit two-phase 1.25" "$work/plot.out"
  check "plot.py: unlabelled rows read by optimizer" grep -qx "4 10gbit allgather 1.50" "$work/plot.out"
else
  echo "SKIPPED plot.py checks: no python3 on this machine (not counted)"
fi
rc=0
"$bench" nonsense >/dev/null 2>&1 || rc=$?
check "unknown subcommand: exit 2" test "$rc" -eq 2
echo "$passed passed, $failures failed"
[[ $failures -eq 0 ]]
