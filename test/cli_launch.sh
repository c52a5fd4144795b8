#!/usr/bin/env bash
# launch/mpirun.sh on a one-node hostfile: the job runs with the requested ranks and
# bad launcher input is a one-line error with exit code 2.
#   cli_launch.sh REPO_ROOT EFSIGN_TRAIN
set -u
root=$1
work=$(mktemp -d /tmp/efsign-launch-XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "localhost slots=2" >"$work/hosts"
failures=0 passed=0
check() { local n=$1; shift; if "$@"; then passed=$((passed + 1)); else echo "FAIL $n"; failures=$((failures + 1)); fi; }
rc=0
EFSIGN_TRAIN=$2 timeout 120 "$root/launch/mpirun.sh" --hostfile "$work/hosts" --ranks-per-node 2 -- \
  --dataset synthetic --model mlp --steps-per-epoch 3 >"$work/out" 2>&1 || rc=$?
check "launcher run: exit 0 (got $rc)" test "$rc" -eq 0
check "launcher run: 2 ranks agree" grep -q "all 2 replicas identical" "$work/out"
EFSIGN_TRAIN=$2 "$root/launch/mpirun.sh" --hostfile "$work/hosts" --ranks-per-node 2 --dry-run -- --epochs 1 >"$work/dry" 2>/dev/null
check "dry run: ppr mapping and env" grep -q -- "--map-by ppr:2:node --bind-to none -x OMP_NUM_THREADS" "$work/dry"
rc=0; "$root/launch/mpirun.sh" --ranks-per-node 2 >/dev/null 2>"$work/err" || rc=$?
check "no hostfile: exit 2 (got $rc)" test "$rc" -eq 2
check "no hostfile: one line" test "$(grep -c . "$work/err")" -eq 1
check "slurm script parses" bash -n "$root/launch/slurm.sbatch"
echo "$passed passed, $failures failed"
[[ $failures -eq 0 ]]
