#!/usr/bin/env bash
# A frozen rank (SIGSTOP) ends the MPI job within --comm-timeout + a few seconds, non-zero,
# with one message that names the collective and the rank that did not arrive; no rank
# is left behind. Cases: a rank frozen while training (3 ranks), while training with
# --overlap (the communication thread's polite waits; 2 ranks), a rank frozen during
# set-up, before its first collective (rank 0 blocks opening --metrics-out, a FIFO
# nobody reads, and is stopped there; 2 ranks), and a rank stopped before MPI_Init.
#   cli_fault_mpi.sh EFSIGN_TRAIN "MPIRUN [FLAGS]"
set -u
train=$1
mpirun=$2
timeout_s=5
# timeout + the 2 s probe of the peers + start of the abort; generous for a loaded machine.
limit_s=30
work=$(mktemp -d /tmp/efsign-fault-mpi-XXXXXX)
# A tag in the ranks' environment tells this job's ranks from any other efsign-train.
export EFSIGN_TEST_TAG="fault-mpi-$$"
tagged_pids() {
  local p
  for p in $(pgrep -f "$train"); do
    if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "EFSIGN_TEST_TAG=$EFSIGN_TEST_TAG"; then echo "$p"; fi
  done
}
rank_pid() {  # rank_pid R: this job's process of rank R
  local p
  for p in $(tagged_pids); do
    if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$1"; then echo "$p"; fi
  done
}
cleanup() {
  [ -n "${job:-}" ] && kill -9 "$job" 2>/dev/null
  for p in $(tagged_pids); do kill -CONT "$p" 2>/dev/null; kill -9 "$p" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
failures=0
passed=0
ok() { echo "ok   $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }

# run_case NAME VICTIM_RANK NP WAIT_FOR MESSAGE ARGS...: starts the job, waits until
# WAIT_FOR ("training": the header is printed; "fifo": the victim blocks opening a FIFO;
# "start": the victim exists), stops the victim and checks how the job ends: non-zero,
# one message matching the extended regex MESSAGE, no process left. With STOP_AT_START=1
# the victim rank stops itself before it even starts efsign-train (so before MPI_Init).
run_case() {
  local name=$1 victim_rank=$2 np=$3 wait_for=$4 message=$5
  shift 5
  local out="$work/$name.out" err="$work/$name.err" victim="" rc=0
  local args=(--dataset synthetic --model mlp --progress off --comm-timeout "$timeout_s" "$@")
  if [ "${STOP_AT_START:-0}" = 1 ]; then
    # MPMD: ranks below the victim start normally, the victim's shell stops itself first.
    # shellcheck disable=SC2016
    $mpirun --bind-to none -x EFSIGN_TEST_TAG -np "$victim_rank" "$train" "${args[@]}" : \
      -np 1 bash -c 'kill -STOP $$; exec "$0" "$@"' "$train" "${args[@]}" >"$out" 2>"$err" &
  else
    $mpirun --bind-to none -x EFSIGN_TEST_TAG -np "$np" "$train" "${args[@]}" >"$out" 2>"$err" &
  fi
  job=$!
  for _ in $(seq 1 600); do
    if [ "$wait_for" != training ] || grep -q "^  data:" "$out" 2>/dev/null; then
      victim=$(rank_pid "$victim_rank")
      if [ -n "$victim" ] && [ "$wait_for" = fifo ] && ! grep -q wait_for_partner "/proc/$victim/wchan" 2>/dev/null; then
        victim=""
      fi
      [ -n "$victim" ] && break
    fi
    kill -0 "$job" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$victim" ]; then
    fail "$name: rank $victim_rank not found (the job did not start or reach the fault)"
    cat "$err"
    cleanup_job
    return
  fi
  [ "$wait_for" = training ] && sleep 1
  local stopped_at
  stopped_at=$(date +%s.%N)
  kill -STOP "$victim"
  for _ in $(seq 1 $((limit_s * 10))); do kill -0 "$job" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$job" 2>/dev/null; then
    fail "$name: the job still runs ${limit_s} s after rank $victim_rank was stopped"
    cat "$err"
    cleanup_job
    return
  fi
  wait "$job" || rc=$?
  job=""
  local took
  took=$(awk -v a="$stopped_at" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  if [ "$rc" -ne 0 ]; then ok "$name: job exit code $rc (non-zero)"; else fail "$name: job exit code 0"; fi
  local fatal
  fatal=$(grep -c ": fatal" "$err")
  if [ "$fatal" -eq 1 ]; then ok "$name: one message"; else fail "$name: $fatal messages (want 1)"; cat "$err"; fi
  if grep -Eq "$message" "$err"; then ok "$name: the message says what happened"; else
    fail "$name: no message matching: $message"; cat "$err"; fi
  sleep 1
  local left
  left=$(tagged_pids | wc -l)
  if [ "$left" -eq 0 ]; then ok "$name: no rank left behind (the stopped one too)"; else
    fail "$name: $left processes of the job left behind"; fi
  grep ": fatal" "$err"
  echo "ok   $name: ended ${took} s after rank $victim_rank was stopped (--comm-timeout ${timeout_s}, limit ${limit_s} s)"
}
cleanup_job() {
  kill -9 "$job" 2>/dev/null
  job=""
  for p in $(tagged_pids); do kill -CONT "$p" 2>/dev/null; kill -9 "$p" 2>/dev/null; done
}

# The collective and the rank, as the watchdog names them.
names() { echo "MPI [a-z_]+ \(collective #[0-9]+ on the [a-z]+ communicator\) timed out: .*rank $1 did not arrive"; }
run_case training 1 3 training "$(names 1)" --epochs 1000
# Rank 0 stopped: ranks 1 and 2 both time out; rank 1 reports, rank 2 stays silent.
run_case training-rank0 0 3 training "$(names 0)" --epochs 1000
run_case overlap 1 2 training "$(names 1)" --epochs 1000 --overlap --bucket-mb 0.2
# Rank 0 stops during set-up, after MPI_Init, before its first collective.
mkfifo "$work/metrics.fifo"
run_case setup 0 2 fifo "$(names 0)" --epochs 1 --metrics-out "$work/metrics.fifo"
# Rank 1 stops before MPI_Init: rank 0's MPI_Init has no deadline of its own.
STOP_AT_START=1 run_case before-init 1 2 start "MPI_Init did not complete within $timeout_s s" --epochs 1
echo "$passed passed, $failures failed"
[ "$failures" -eq 0 ]
