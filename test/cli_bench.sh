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
# bench/plot.py's peer table (netem.sh --peer files): ms/step is the median over epochs
# 2.. of a run, then over rounds; the targets are judged from it.
if command -v python3 >/dev/null; then
  mkdir -p "$work/peer"
  peer_file() {  # peer_file ROW ROUND MS_EPOCH1 MS_LATER ACC BYTES
    local f="$work/peer/peer_convnet_W2_1gbit_$1_r$2.jsonl"
    printf '%s\n' "{\"event\":\"epoch\",\"epoch\":1,\"step_time_ms\":$3}" \
      "{\"event\":\"epoch\",\"epoch\":2,\"step_time_ms\":$4}" "{\"event\":\"epoch\",\"epoch\":3,\"step_time_ms\":$4}" \
      "{\"event\":\"summary\",\"test_acc\":$5,\"bytes_sent_per_step\":$6,\"batch_size\":64,\"global_steps\":30}" >"$f"
  }
  for r in 1 2; do
    peer_file compute $r 90 25 0.5 0
    peer_file ef-signsgd $r 99 27 0.8 26960
    peer_file ef-signsgd+overlap $r 99 $((28 + r)) 0.8 26960   # rounds 29 and 30: median 29.5
    peer_file sgdm $r 99 36 0.81 861480
    peer_file ddp-fp32 $r 99 33.75 0.81 861480
    peer_file ddp-powersgd-r4 $r 99 30 0.79 20000
  done
  python3 "$plot" --print "$work/peer" >"$work/peer.out" 2>&1
  cat "$work/peer.out"
  check "plot.py peer: ef-signsgd row (27 ms, 1.08x compute, 1.25x ddp-fp32)" \
    grep -Eq '^convnet +2 1gbit +ef-signsgd +27\.00 +\[27\.00-27\.00\] +2 +4741 +80\.00% +26960 +1\.08x +1\.25x$' "$work/peer.out"
  check "plot.py peer: median over rounds, range shown" grep -Eq 'ef-signsgd\+overlap +29\.50 +\[29\.00-30\.00\]' "$work/peer.out"
  check "plot.py peer: targets" grep -qF 'convnet W=2 1gbit: ef-signsgd ms / compute ms = 1.08 (<= 1.10: met); ddp-fp32 ms / ef-signsgd ms = 1.25 (faster: met; acc -1.00 pt); ddp-powersgd-r4 ms / ef-signsgd ms = 1.11 (faster: met; acc +1.00 pt); ef-signsgd ms / +overlap ms = 0.92 (never slower: NOT met); ddp-fp32 ms / sgdm ms = 0.94 (at least as fast: NOT met)' "$work/peer.out"
else
  echo "SKIPPED plot.py peer checks: no python3 on this machine (not counted)"
fi

# bench/netem.sh must never again pin two ranks of its emulated hosts to one core (issue
# 14: with Open MPI's default binding each emulated host's orted bound its rank to core 0,
# so every rank ran on CPU 0). (1) The launch it prints: --bind-to none on every emulated-
# host mpirun and one CPU per host, distinct while W <= CPUs; the old launch (--bind
# mpi-default) must fail the same check. (2) A real 2-rank launch on the emulated hosts
# (root and network namespaces needed; skipped with a message otherwise): each rank's
# Cpus_allowed_list, again with the old launch as the negative control.
netem=$(dirname "$0")/../bench/netem.sh
ncpu=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # nproc alone obeys OMP_NUM_THREADS (1 in ctest)
launch_spreads_ranks() {  # launch_spreads_ranks PRINT_LAUNCH_OUTPUT: 0 if no two ranks share one core
  awk -v n="$ncpu" '
    /^== W=/ { w = substr($2, 3) + 0; delete used; blocks++ }
    /^host [0-9]+: / { c = $8; if (w <= n && (c == "-" || (c in used))) bad = 1; used[c] = 1 }
    /^mpirun / && / --hostfile / { launches++; if (!/ --bind-to none /) bad = 1 }
    END { exit bad || blocks == 0 || launches != blocks }' "$1"
}
rc=0
bash "$netem" --print-launch --ranks "2 4" --rates 1gbit >"$work/launch.out" 2>&1 || rc=$?
cat "$work/launch.out"
check "netem.sh --print-launch: exit 0 without root or namespaces" test "$rc" -eq 0
check "netem.sh --print-launch: one core per rank, --bind-to none" launch_spreads_ranks "$work/launch.out"
bash "$netem" --print-launch --ranks "2 4" --rates 1gbit --bind mpi-default >"$work/launch_old.out" 2>&1
fails() { ! "$@"; }
check "netem.sh --print-launch: the old launch (Open MPI's default binding) fails that check" \
  fails launch_spreads_ranks "$work/launch_old.out"
skip=""
if [ "$(id -u)" -ne 0 ]; then
  skip="not root"
elif [ "$ncpu" -lt 2 ]; then
  skip="$ncpu CPU: two ranks cannot have a core each"
elif ! ip netns add "efsprobe$$" 2>"$work/netns.err"; then
  skip="ip netns add is not permitted here ($(head -c 200 "$work/netns.err"))"
else
  ip netns del "efsprobe$$"
fi
if [ -n "$skip" ]; then
  echo "SKIPPED netem.sh real-launch binding check: $skip (not counted)"
else
  subnet="10.213.$((100 + $$ % 100))"
  rc=0
  timeout 120 bash "$netem" --check-bindings --ranks 2 --rates 1gbit --delay 0 --subnet "$subnet" \
    --out "$work/bindings" >"$work/bind.out" 2>&1 || rc=$?
  cat "$work/bind.out"
  check "netem.sh --check-bindings: exit 0" test "$rc" -eq 0
  check "netem.sh --check-bindings: the 2 ranks on CPUs of their own" \
    grep -Eq '^bindings W=2 1gbit --bind cores: OK: rank 0: [0-9]+; rank 1: [0-9]+;$' "$work/bind.out"
  rc=0
  timeout 120 bash "$netem" --check-bindings --ranks 2 --rates 1gbit --delay 0 --subnet "$subnet" \
    --bind mpi-default --out "$work/bindings_old" >"$work/bind_old.out" 2>&1 || rc=$?
  cat "$work/bind_old.out"
  check "netem.sh --check-bindings: the old launch is caught (exit 1)" test "$rc" -eq 1
  check "netem.sh --check-bindings: the old launch pins both ranks to one CPU" \
    grep -Eq '^bindings W=2 1gbit --bind mpi-default: FAIL: ranks [01],[01] are all pinned to CPU [0-9]+;' "$work/bind_old.out"
  tag=$(sed -n 's/.*(bridge efb\([0-9]*\) at .*/\1/p' "$work/bind.out" | head -n1)
  check "netem.sh --check-bindings: its namespaces are torn down" \
    bash -c "[ -n '$tag' ] && ! ip netns list | grep -q '^efs$tag-'"
fi

# The DDP peer: --help without torch; a 2-rank fp16-hook run where Debian's python3-torch
# is installed (bench/packages.txt; the trainer does not need it).
peer_py=$(dirname "$0")/../bench/ddp_peer.py
if [ -x /usr/bin/python3 ]; then
  check "ddp_peer.py --help" bash -c "/usr/bin/python3 $peer_py --help | grep -q -- '--hook'"
fi
if /usr/bin/python3 -c 'import torch, torch.distributed' 2>/dev/null; then
  rc=0
  timeout 180 $mpirun -np 2 -x OMP_NUM_THREADS=1 -x MASTER_ADDR=127.0.0.1 -x MASTER_PORT=$((30000 + $$ % 2000)) \
    /usr/bin/python3 "$peer_py" --model mlp --dataset synthetic --synthetic-train 256 --synthetic-test 64 \
    --batch-size 8 --epochs 2 --steps-per-epoch 3 --hook fp16 --expect-params 235146 \
    --metrics-out "$work/ddp.jsonl" >"$work/ddp.out" 2>&1 || rc=$?
  cat "$work/ddp.out"
  check "ddp_peer.py fp16 hook, 2 ranks: exit 0" test "$rc" -eq 0
  check "ddp_peer.py: two epoch records and a summary" test "$(grep -c '"event":' "$work/ddp.jsonl")" -eq 3
  # fp16 hook: 2 bytes per parameter handed to gloo per step (235,146 parameters).
  check "ddp_peer.py: fp16 hook hands 2 B per parameter" grep -Eq '"bytes_sent_per_step":470292(\.0)?,' "$work/ddp.jsonl"
  for f in world_size optimizer test_acc bytes_sent_per_step fp32_bytes_per_step step_time_ms images_per_sec \
    step_ms_median num_params; do
    check "ddp_peer.py: summary field $f" grep -q "\"$f\":" "$work/ddp.jsonl"
  done
else
  echo "SKIPPED ddp_peer.py run: /usr/bin/python3 has no torch (apt-get install python3-torch; not counted)"
fi

rc=0
"$bench" nonsense >/dev/null 2>&1 || rc=$?
check "unknown subcommand: exit 2" test "$rc" -eq 2
echo "$passed passed, $failures failed"
[[ $failures -eq 0 ]]
