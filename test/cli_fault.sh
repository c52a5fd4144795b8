#!/usr/bin/env bash
# A rank killed mid-run (SIGKILL) ends the whole job, non-zero, within 60 s, and the
# message names the lost rank: nothing hangs.
#   cli_fault.sh EFSIGN_TRAIN "MPIRUN [FLAGS]"
set -u
train=$1
mpirun=$2
work=$(mktemp -d /tmp/efsign-fault-XXXXXX)
trap 'rm -rf "$work"; [ -n "${job:-}" ] && kill -9 "$job" 2>/dev/null' EXIT
start=$(date +%s)
# A tag in the ranks' environment tells this job's ranks from any other efsign-train.
export EFSIGN_TEST_TAG="fault-$$"
$mpirun -x EFSIGN_TEST_TAG -np 3 "$train" --dataset synthetic --model mlp --epochs 1000 --progress off \
  >"$work/out" 2>"$work/err" &
job=$!
# Wait until training runs (the header is printed after set-up), then find rank 1.
victim=""
for _ in $(seq 1 300); do
  if grep -q "^  data:" "$work/out" 2>/dev/null; then
    for p in $(pgrep -f "$train"); do
      env=$(tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null)
      if grep -qx "OMPI_COMM_WORLD_RANK=1" <<<"$env" && grep -qx "EFSIGN_TEST_TAG=$EFSIGN_TEST_TAG" <<<"$env"; then
        victim=$p
      fi
    done
    [ -n "$victim" ] && break
  fi
  sleep 0.2
done
if [ -z "$victim" ]; then echo "FAIL: training did not start or rank 1 not found"; cat "$work/err"; exit 1; fi
sleep 1
killed_at=$(date +%s.%N)
kill -9 "$victim"
rc=0
for _ in $(seq 1 600); do kill -0 "$job" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$job" 2>/dev/null; then echo "FAIL: the job still runs 60 s after rank 1 was killed"; exit 1; fi
wait "$job" || rc=$?
job=""
took=$(awk -v a="$killed_at" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
failures=0
if [ "$rc" -ne 0 ]; then echo "ok   job exit code $rc (non-zero)"; else echo "FAIL job exit code 0"; failures=1; fi
if grep -q "rank 1 .*exited on signal 9" "$work/err"; then echo "ok   the message names rank 1"; else
  echo "FAIL message does not name rank 1:"; cat "$work/err"; failures=1; fi
echo "ok   ended ${took} s after the kill (limit 60 s; whole test $(( $(date +%s) - start )) s)"
echo "$(( 3 - failures )) passed, $failures failed"
[ "$failures" -eq 0 ]
