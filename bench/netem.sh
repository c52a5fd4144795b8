#!/usr/bin/env bash
# netem.sh: run efsign-bench comm and step across an emulated Ethernet cluster
# (network namespaces + veth + bridge + tbf/netem) on one machine. See bench/NETEM.md.
#
#   sudo bench/netem.sh [--ranks "2 4"] [--rates "1gbit 10gbit"] [--delay 0.1ms]
#        [--sizes "-b 1e4 -e 1e7 -f 10"] [--comm-args "--iters 5 --warmup 1"]
#        [--model convnet] [--batch-size 64] [--steps 10] [--step-args "--overlap"]
#        [--no-comm] [--out runs/netem] [--timeout 600] [--keep-going]
#
# Writes OUT/comm_W{W}_{rate}.jsonl, OUT/step_W{W}_{rate}.jsonl, OUT/link_{rate}.txt
# (a one-stream TCP throughput check of the shaped link, when python3 is available)
# and logs OUT/*.log; prints a summary at the end. Everything it creates (namespaces
# efs<pid>-<i>, bridge efb<pid>, veths efv<i>r<pid>/efv<i>n<pid>) is removed on exit.
set -u -o pipefail

RANKS="2 4"
RATES="1gbit 10gbit"
DELAY="0.1ms"
SIZES="-b 1e4 -e 1e7 -f 10"
COMM_ARGS="--iters 5 --warmup 1"
MODEL="convnet"
BATCH=64
STEPS=10
STEP_ARGS=""
RUN_COMM=1
OUT="runs/netem"
KEEP_GOING=0
TMO=600
LAUNCH_WAIT=30
SUBNET_PREFIX="10.213.47"   # private /24 used only inside the namespaces and on the bridge

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --ranks) RANKS=$2; shift 2 ;;
    --rates) RATES=$2; shift 2 ;;
    --delay) DELAY=$2; shift 2 ;;
    --sizes) SIZES=$2; shift 2 ;;
    --comm-args) COMM_ARGS=$2; shift 2 ;;
    --model) MODEL=$2; shift 2 ;;
    --batch-size) BATCH=$2; shift 2 ;;
    --steps) STEPS=$2; shift 2 ;;
    --step-args) STEP_ARGS=$2; shift 2 ;;   # more efsign-bench step options, e.g. "--overlap --bucket-mb 4"
    --no-comm) RUN_COMM=0; shift ;;          # step only
    --out) OUT=$2; shift 2 ;;
    --timeout) TMO=$2; shift 2 ;;
    --subnet) SUBNET_PREFIX=$2; shift 2 ;;   # first three octets, e.g. 10.213.47
    --keep-going) KEEP_GOING=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "netem.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

die() { echo "netem.sh: $*" >&2; exit 2; }

[ "$(id -u)" -eq 0 ] || die "must run as root (network namespaces and tc need it)"
for t in ip tc mpirun timeout awk; do
  command -v "$t" >/dev/null 2>&1 || die "'$t' not found (install iproute2 / openmpi-bin / coreutils)"
done

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
AGENT="$HERE/netem_agent.sh"
BENCH="${EFSIGN_BENCH:-$ROOT/build/efsign-bench}"
[ -x "$AGENT" ] || die "$AGENT is missing or not executable"
[ -x "$BENCH" ] || die "$BENCH not built (cmake --build build), or set EFSIGN_BENCH"
mkdir -p "$OUT" || die "cannot create $OUT"
OUT=$(cd "$OUT" && pwd)

SUBNET="$SUBNET_PREFIX.0/24"
BR_ADDR="$SUBNET_PREFIX.254"
if ip -4 -o addr show | grep -q "inet $SUBNET_PREFIX\."; then
  die "$SUBNET is already in use on this host; choose another with --subnet"
fi
if ip -4 route show | grep -q "^$SUBNET_PREFIX\."; then
  die "$SUBNET is already routed on this host; choose another with --subnet"
fi

TAG="$$"
BR="efb$TAG"
NSES=()
VETHS=()
MAP=$(mktemp /tmp/efsign-netem-map.XXXXXX)
export EFSIGN_NETEM_MAP="$MAP"

MPI_PID=
kill_ns_procs() {  # every process left inside our namespaces (orted, ranks)
  local ns pids
  for ns in "${NSES[@]}"; do
    pids=$(ip netns pids "$ns" 2>/dev/null)
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null
  done
  return 0
}
cleanup() {
  local ns v pids
  if [ -n "$MPI_PID" ]; then   # our timeout+mpirun, still running after INT/TERM
    kill -TERM "$MPI_PID" 2>/dev/null
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$MPI_PID" 2>/dev/null || break; sleep 0.3; done
    kill -KILL "$MPI_PID" 2>/dev/null
    MPI_PID=
  fi
  for ns in "${NSES[@]}"; do
    pids=$(ip netns pids "$ns" 2>/dev/null)
    [ -n "$pids" ] && kill $pids 2>/dev/null
  done
  [ ${#NSES[@]} -gt 0 ] && sleep 0.2
  for ns in "${NSES[@]}"; do
    pids=$(ip netns pids "$ns" 2>/dev/null)
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null
    ip netns del "$ns" 2>/dev/null
  done
  for v in "${VETHS[@]}"; do
    ip link show "$v" >/dev/null 2>&1 && ip link del "$v" 2>/dev/null
  done
  ip link show "$BR" >/dev/null 2>&1 && ip link del "$BR" 2>/dev/null
  NSES=(); VETHS=()
  : > "$MAP"
}
on_exit() { local rc=$?; cleanup; rm -f "$MAP"; exit $rc; }
trap on_exit EXIT
trap 'echo "netem.sh: interrupted, tearing down" >&2; exit 130' INT TERM HUP

# rate string (tc syntax) -> bits per second
rate_bps() {
  awk -v r="$1" 'BEGIN {
    n = r + 0; u = tolower(substr(r, length(n "") + 1));
    m = 1;
    if (u ~ /^k/) m = 1e3; else if (u ~ /^m/) m = 1e6; else if (u ~ /^g/) m = 1e9; else if (u ~ /^t/) m = 1e12;
    if (u ~ /bps$/) m *= 8;   # tc: "bps" means bytes per second
    printf "%.0f", n * m }'
}

# setup RATE N: bridge + N namespaces with shaped veths
setup() {
  local rate=$1 n=$2 i ns vr vn addr bps burst
  bps=$(rate_bps "$rate")
  # burst: 1 ms of traffic at the link rate, at least 128 KiB (veth GSO packets are up to 64 KiB)
  burst=$(awk -v b="$bps" 'BEGIN { x = b / 8 / 1000; if (x < 131072) x = 131072; printf "%d", x }')
  ip link add "$BR" type bridge || return 1
  ip addr add "$BR_ADDR/24" dev "$BR" || return 1
  ip link set "$BR" up || return 1
  for i in $(seq 1 "$n"); do
    ns="efs$TAG-$i"; vr="efv${i}r$TAG"; vn="efv${i}n$TAG"; addr="$SUBNET_PREFIX.$i"
    ip netns add "$ns" || return 1
    NSES+=("$ns")
    ip link add "$vr" type veth peer name "$vn" || return 1
    VETHS+=("$vr")
    ip link set "$vn" netns "$ns" || return 1
    ip link set "$vr" master "$BR" up || return 1
    ip -n "$ns" link set lo up || return 1
    ip -n "$ns" addr add "$addr/24" dev "$vn" || return 1
    ip -n "$ns" link set "$vn" up || return 1
    # egress of the emulated host: token bucket at the link rate, netem delay as its child
    ip netns exec "$ns" tc qdisc add dev "$vn" root handle 1: tbf rate "$rate" burst "$burst" latency 50ms || return 1
    if [ -n "$DELAY" ] && [ "$DELAY" != "0" ] && [ "$DELAY" != "0ms" ]; then
      if ! ip netns exec "$ns" tc qdisc add dev "$vn" parent 1:1 handle 10: netem delay "$DELAY" limit 100000 2>/dev/null; then
        [ "$NO_NETEM_WARNED" -eq 1 ] || echo "netem.sh: WARNING: this kernel has no netem qdisc (sch_netem); --delay $DELAY is NOT applied, links are rate-limited only" >&2
        NO_NETEM_WARNED=1; DELAY_APPLIED=0
      fi
    else
      DELAY_APPLIED=0
    fi
    # ingress of the emulated host (the switch port towards it): same rate, no extra delay
    tc qdisc add dev "$vr" root tbf rate "$rate" burst "$burst" latency 50ms || return 1
    echo "$addr $ns" >> "$MAP"
  done
  # wait until every namespace answers from the bridge
  for i in $(seq 1 "$n"); do
    ping -c 1 -W 2 "$SUBNET_PREFIX.$i" >/dev/null 2>&1 || ip netns exec "efs$TAG-1" ping -c 1 -W 2 "$SUBNET_PREFIX.$i" >/dev/null 2>&1 || true
  done
  return 0
}

# one-stream TCP throughput host 2 -> host 1, about 0.5 s worth of traffic at the nominal rate
measure_link() {
  local rate=$1 py bytes
  py=$(command -v python3) || { echo "no python3: link not measured" > "$OUT/link_$rate.txt"; return 0; }
  bytes=$(awk -v b="$(rate_bps "$rate")" 'BEGIN { printf "%d", b / 16 }')
  timeout 30 ip netns exec "efs$TAG-1" "$py" - "$SUBNET_PREFIX.1" "$bytes" > "$OUT/link_$rate.txt" 2>&1 <<'PY' &
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5201)); s.listen(1)
c, _ = s.accept(); n = 0; t0 = None
while True:
    b = c.recv(1 << 20)
    if not b: break
    if t0 is None: t0 = time.perf_counter()
    n += len(b)
dt = time.perf_counter() - t0
print(f"bytes {n} seconds {dt:.4f} mbit_per_s {n * 8 / dt / 1e6:.1f}")
PY
  local srv=$!
  sleep 0.5
  timeout 30 ip netns exec "efs$TAG-2" "$py" -c '
import socket, sys
s = socket.create_connection((sys.argv[1], 5201)); buf = b"\0" * (1 << 20); left = int(sys.argv[2])
while left > 0:
    k = min(left, len(buf)); s.sendall(buf[:k]); left -= k
s.close()' "$SUBNET_PREFIX.1" "$bytes" 2>>"$OUT/link_$rate.txt"
  wait $srv
  echo "link $rate (nominal), one TCP stream: $(cat "$OUT/link_$rate.txt")"
}

run_mpi() {  # run_mpi W LOG ARGS...  (efsign-bench arguments)
  # Now and then (about 1 launch in 5 here) one emulated host's orted never calls
  # back and mpirun waits forever. Every efsign-bench command prints its header as
  # soon as MPI is up, so a log still empty after LAUNCH_WAIT seconds is a failed
  # launch: kill it and try again (up to 3 launches), instead of losing --timeout.
  local w=$1 log=$2; shift 2
  local hf="$OUT/.hosts_W$w" attempt rc
  : > "$hf"
  for i in $(seq 1 "$w"); do echo "$SUBNET_PREFIX.$i slots=1" >> "$hf"; done
  for attempt in 1 2 3; do
    timeout --kill-after=10 "$TMO" mpirun --allow-run-as-root --oversubscribe -np "$w" \
      --hostfile "$hf" \
      --mca plm_rsh_agent "$AGENT" --mca plm_rsh_no_tree_spawn 1 \
      --mca btl tcp,self \
      --mca btl_tcp_if_include "$SUBNET" --mca oob_tcp_if_include "$SUBNET" \
      -x OMP_NUM_THREADS=1 -x PATH ${LD_LIBRARY_PATH:+-x LD_LIBRARY_PATH} \
      "$BENCH" "$@" > "$log" 2>&1 < /dev/null &
    MPI_PID=$!
    local waited=0 hung=0
    while kill -0 "$MPI_PID" 2>/dev/null; do
      if [ ! -s "$log" ] && [ "$waited" -ge "$LAUNCH_WAIT" ]; then hung=1; break; fi
      sleep 1; waited=$((waited + 1))
    done
    if [ "$hung" -eq 1 ]; then
      echo "netem.sh: launch attempt $attempt of W=$w printed nothing in ${LAUNCH_WAIT} s: killing it and retrying" >&2
      pkill -P "$MPI_PID" 2>/dev/null; kill "$MPI_PID" 2>/dev/null; wait "$MPI_PID" 2>/dev/null
      kill_ns_procs
      rc=124
      continue
    fi
    wait "$MPI_PID"   # a background job + wait lets INT/TERM traps run at once
    rc=$?
    break
  done
  MPI_PID=
  rm -f "$hf"
  return $rc
}

NO_NETEM_WARNED=0
DELAY_APPLIED=1
FAILED=0
fail() {
  echo "netem.sh: FAILED: $*" >&2
  FAILED=1
  [ "$KEEP_GOING" -eq 1 ] || exit 1
}

maxw=0
for w in $RANKS; do [ "$w" -gt "$maxw" ] && maxw=$w; done
[ "$maxw" -ge 2 ] || die "--ranks needs a world size >= 2"

for rate in $RATES; do
  echo "== rate $rate, delay $DELAY: $maxw namespaces on $SUBNET (bridge $BR at $BR_ADDR)"
  if ! setup "$rate" "$maxw"; then fail "network setup for $rate"; cleanup; continue; fi
  echo "delay_applied $DELAY_APPLIED delay $DELAY" > "$OUT/netem_$rate.txt"
  measure_link "$rate"
  for w in $RANKS; do
    cj="$OUT/comm_W${w}_${rate}.jsonl"; sj="$OUT/step_W${w}_${rate}.jsonl"
    rm -f "$cj" "$sj"
    echo "-- W=$w rate=$rate: comm $SIZES $COMM_ARGS"
    t0=$(date +%s)
    # shellcheck disable=SC2086
    if [ "$RUN_COMM" -eq 0 ]; then
      echo "   (comm skipped: --no-comm)"
    elif run_mpi "$w" "$OUT/comm_W${w}_${rate}.log" comm $SIZES $COMM_ARGS --json "$cj"; then
      grep -v '^#' "$OUT/comm_W${w}_${rate}.log" | sed 's/^/   /'
    else
      tail -n 20 "$OUT/comm_W${w}_${rate}.log" >&2; fail "comm W=$w rate=$rate (log $OUT/comm_W${w}_${rate}.log)"
    fi
    echo "-- W=$w rate=$rate: step --model $MODEL --batch-size $BATCH --steps $STEPS $STEP_ARGS ($(( $(date +%s) - t0 )) s so far)"
    # shellcheck disable=SC2086
    if run_mpi "$w" "$OUT/step_W${w}_${rate}.log" step --model "$MODEL" --batch-size "$BATCH" --steps "$STEPS" $STEP_ARGS --json "$sj"; then
      grep -v '^#' "$OUT/step_W${w}_${rate}.log" | sed 's/^/   /'
    else
      tail -n 20 "$OUT/step_W${w}_${rate}.log" >&2; fail "step W=$w rate=$rate (log $OUT/step_W${w}_${rate}.log)"
    fi
    echo "   ($(( $(date +%s) - t0 )) s for W=$w)"
  done
  cleanup
done

# ---- summary (awk only) ----
jnum() { # jnum FIELD: print numeric field of each JSON line on stdin
  awk -v f="$1" '{ if (match($0, "\"" f "\":[-0-9.eE+]+")) { s = substr($0, RSTART, RLENGTH); sub(/^[^:]*:/, "", s); print s } else print "" }'
}
echo
echo "== summary: ef-signsgd over sgdm (end-to-end step) and compressed over fp32 allreduce (largest size)"
printf '%4s %8s %12s %14s %10s %10s %14s %12s\n' W rate "sgdm step ms" "ef-sign step ms" "step spdup" elements "comm fp32 ms" "comm spdup"
for rate in $RATES; do
  for w in $RANKS; do
    sj="$OUT/step_W${w}_${rate}.jsonl"; cj="$OUT/comm_W${w}_${rate}.jsonl"
    s_sgdm=NA; s_ef=NA; sp=NA; el=NA; f32=NA; csp=NA
    if [ -s "$sj" ]; then
      s_sgdm=$(grep '"optimizer":"sgdm"' "$sj" | jnum step_ms | head -n1)
      s_ef=$(grep '"label":"ef-signsgd"' "$sj" | jnum step_ms | head -n1)
      [ -n "$s_sgdm" ] && [ -n "$s_ef" ] && sp=$(awk -v a="$s_sgdm" -v b="$s_ef" 'BEGIN { printf "%.2fx", a / b }')
      s_sgdm=$(awk -v a="${s_sgdm:-NA}" 'BEGIN { if (a == "NA") print a; else printf "%.1f", a }')
      s_ef=$(awk -v a="${s_ef:-NA}" 'BEGIN { if (a == "NA") print a; else printf "%.1f", a }')
    fi
    if [ -s "$cj" ]; then
      el=$(jnum elements < "$cj" | sort -g | tail -n1)
      f32=$(grep '"method":"fp32-allreduce"' "$cj" | grep "\"elements\":$el," | jnum time_ms_median | head -n1)
      csp=$(grep '"method":"compressed"' "$cj" | grep "\"elements\":$el," | jnum speedup_vs_fp32 | head -n1)
      f32=$(awk -v a="${f32:-NA}" 'BEGIN { if (a == "NA") print a; else printf "%.2f", a }')
      csp=$(awk -v a="${csp:-NA}" 'BEGIN { if (a == "NA") print a; else printf "%.2fx", a }')
    fi
    printf '%4s %8s %12s %14s %10s %10s %14s %12s\n' "$w" "$rate" "$s_sgdm" "$s_ef" "$sp" "$el" "$f32" "$csp"
  done
done
echo "JSON and logs in $OUT"
[ "$FAILED" -eq 0 ] || exit 1
