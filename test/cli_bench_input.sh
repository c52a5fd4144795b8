#!/usr/bin/env bash
# efsign-bench refuses what it cannot do, up front and cleanly: sizes larger than the
# memory of this host, a --json path it cannot open, a --json file it cannot write (a
# full disk: /dev/full), a missing data directory. Each: exit code 2, one line that says
# what was asked and why not (the OS's reason for files), no crash, no MPI abort noise.
#   cli_bench_input.sh EFSIGN_BENCH "MPIRUN [FLAGS]"
set -u
bench=$1
mpirun=$2
work=$(mktemp -d /tmp/efsign-bench-input-XXXXXX)
trap 'rm -rf "$work"' EXIT
failures=0
passed=0
ok() { echo "ok   $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }

# expect NAME NP -- ARGS... -- PATTERN...: efsign-bench ARGS on NP ranks (0: no mpirun)
# exits 2 with "efsign-bench: error: " and every extended regex PATTERN on stderr, and no
# sign of a crash or an abort.
expect() {
  local name=$1 np=$2 args=() rc=0
  shift 3
  while [ "$1" != "--" ]; do args+=("$1"); shift; done
  shift
  if [ "$np" -eq 0 ]; then
    timeout 120 "$bench" "${args[@]}" >"$work/out" 2>"$work/err" || rc=$?
  else
    timeout 120 $mpirun --bind-to none -np "$np" "$bench" "${args[@]}" >"$work/out" 2>"$work/err" || rc=$?
  fi
  local why=""
  [ "$rc" -eq 2 ] || why="exit $rc, want 2"
  grep -q "efsign-bench: error: " "$work/err" || why="$why; no 'efsign-bench: error: '"
  for p in "$@"; do grep -Eq -- "$p" "$work/err" || why="$why; no '$p'"; done
  for bad in bad_alloc "fatal" MPI_ABORT ORTE_ERROR_LOG "Segmentation"; do
    grep -q "$bad" "$work/err" && why="$why; '$bad' on stderr"
  done
  if [ -z "$why" ]; then ok "$name: $(grep "efsign-bench: error: " "$work/err")"; else
    fail "$name: $why"
    cat "$work/err"
  fi
}

# Sizes no machine has: 1e12 elements (~56 TB per rank), 1e6 ResNet-18 messages (1.4 TB).
expect "comm -b 1e12 -e 1e12, 2 ranks" 2 -- comm -b 1e12 -e 1e12 -- \
  "1000000000000 elements" "needs about [0-9.]+ GiB of memory, but only [0-9.]+ GiB is available"
expect "codec --world 1000000" 0 -- codec --world 1000000 -- \
  "--world 1000000" "needs about [0-9.]+ GiB of memory, but only [0-9.]+ GiB is available"
expect "comm --json DIRECTORY, 2 ranks" 2 -- comm -b 31 -e 31 --iters 1 --warmup 0 --json "$work" -- \
  "--json $work: .*Is a directory"
expect "comm --json in a missing directory" 2 -- comm -b 31 -e 31 --iters 1 --warmup 0 --json "$work/no/x.jsonl" -- \
  "--json $work/no/x.jsonl: .*No such file or directory"
expect "codec --json DIRECTORY" 0 -- codec --iters 1 --warmup 0 --json "$work" -- "--json $work: .*Is a directory"
if [ -w /dev/full ]; then
  expect "comm --json /dev/full (a full disk), 2 ranks" 2 -- comm -b 31 -e 31000 --iters 1 --warmup 0 --json /dev/full \
    -- "--json /dev/full: .*No space left on device"
  expect "codec --json /dev/full (a full disk)" 0 -- codec --iters 1 --warmup 0 --json /dev/full -- \
    "--json /dev/full: .*No space left on device"
else
  echo "SKIPPED /dev/full checks: no writable /dev/full here (not counted)"
fi
expect "loader --data-dir /nonexistent, 2 ranks" 2 -- loader --dataset cifar10 --data-dir "$work/none" -- \
  "$work/none"
expect "loader --data-dir /nonexistent" 0 -- loader --dataset cifar10 --data-dir "$work/none" -- "$work/none"
# A size that fits still runs: the checks refuse only what cannot work.
rc=0
timeout 120 $mpirun --bind-to none -np 2 "$bench" comm -b 31 -e 31 --iters 1 --warmup 0 --json "$work/ok.jsonl" >"$work/out" 2>&1 || rc=$?
if [ "$rc" -eq 0 ] && [ "$(wc -l <"$work/ok.jsonl")" -eq 5 ]; then ok "comm of 31 elements still runs"; else
  fail "comm of 31 elements: exit $rc"; cat "$work/out"; fi
echo "$passed passed, $failures failed"
[ "$failures" -eq 0 ]
