#!/usr/bin/env bash
# netem.sh: run efsign (and its PyTorch DDP peer) across an emulated Ethernet cluster
# (network namespaces + veth + bridge + tbf/netem) on one machine, or on shared memory.
# See bench/NETEM.md and bench/PEER.md; `bench/netem.sh --help` lists every option.
#
# Everything it creates (namespaces efs<pid>-<i>, bridge efb<pid>, veths
# efv<i>r<pid>/efv<i>n<pid>) is removed on every exit path.
set -u -o pipefail

usage() {
  cat <<'EOF'
usage: sudo bench/netem.sh [MODE] [OPTIONS]

Modes (default: efsign-bench comm sweep + step breakdown per W and rate):
  --peer              efsign-train rows and PyTorch DDP rows (bench/ddp_peer.py) on the same
                      link, interleaved in rounds; one JSONL per row and round
                      (OUT/peer_MODEL_WW_RATE_ROW_rK.jsonl) and the side-by-side table
                      (bench/plot.py --print OUT, also in OUT/peer_table.txt)
  --alpha             per-message latency: a 1-byte TCP ping-pong between two emulated hosts,
                      and efsign-bench comm's fp32 allreduce of 1 element (4 B) per W
  --check-bindings    launch W ranks of a probe for every --ranks; print each rank's allowed
                      CPUs; exit 1 if two ranks are pinned to the same single CPU while
                      W <= CPUs (or more than ceil(W/CPUs) ranks share one when W > CPUs)
  --launch-test N     N launches per W and rate of a tiny efsign-bench run, no retries; counts
                      the launches whose ranks never all start (an emulated host's orted that
                      never calls back) and prints the timings
  --print-launch      print the hostfiles, the per-host CPUs and the mpirun command of each W
                      and rate; runs nothing and needs no root

Launch (every mode):
  --bind MODE         cores (default): emulated host i, i.e. rank i-1, runs on CPU (i-1) mod N
                      of the N CPUs this script may use (the rsh agent starts that host's orted
                      under taskset; mpirun --bind-to none keeps its ranks there); on shm:
                      --map-by core --bind-to core. none: --bind-to none only (the scheduler
                      places the ranks). mpi-default: Open MPI's default binding, the old
                      launch: on emulated hosts it pins the rank of EVERY host to core 0 when
                      W <= 2 (each orted thinks it owns the machine); kept to show the
                      difference with --check-bindings
  --ranks "2 4"       world sizes (default "2 4")
  --rates "1gbit 10gbit"  link rates in tc syntax; "shm" = plain mpirun, shared memory, no
                      namespaces
  --delay 0.1ms       one-way delay with netem (kernels without sch_netem: warned, not applied)
  --subnet 10.213.47  first three octets of the private /24 (refused if in use)
  --out runs/netem    output directory
  --timeout 600       seconds per mpirun (each runs under timeout)
  --keep-going        carry on after a failed run (exit 1 at the end)
  --launch-verbose    add --mca plm_base_verbose 10 to every mpirun (launch diagnostics)
  --shared-tmp        let every emulated host use the machine's /tmp (the old launch). By
                      default host i has its own TMPDIR, /tmp/efs<pid>-<i>.tmp, as a real node
                      has its own /tmp: the hosts share one hostname, so Open MPI's session
                      directories /tmp/ompi.HOST.UID/... of all daemons would be one tree
  --launch-args "..."   the efsign-bench arguments --launch-test runs (default
                      "comm -b 1e3 -e 1e3 -f 10 --iters 1 --warmup 0")

Default mode (efsign-bench):
  --sizes "-b 1e4 -e 1e7 -f 10"  --comm-args "--iters 5 --warmup 1"  --no-comm (step only)
  --model convnet  --batch-size 64  --steps 10  --step-args "..." (more `step` options)

Peer mode (efsign-train and ddp_peer.py; the same data, per-rank batch and steps):
  --models "convnet resnet18"   convnet (and mlp): Fashion-MNIST; resnet18: efsign's synthetic
                      data (1x28x28, 10 classes; --synthetic-test images for evaluation)
  --rows "ROW ..."    from: ef-signsgd ef-signsgd+overlap sgdm compute ddp-fp32 ddp-fp16
                      ddp-powersgd-r1 ddp-powersgd-r4 ddp-compute (default: all).
                      compute = W copies of efsign-train --optimizer sgdm with W = 1, run at
                      the same time on the same CPUs (forward + backward + update, no
                      exchange); ddp-compute = ddp_peer.py --hook compute under mpirun
  --rounds 2          rows in order in odd rounds, reversed in even ones
  --peer-batch "convnet=64 resnet18=16"   per-rank batch (a bare number: every model)
  --peer-steps "convnet=100 resnet18=10"  steps per epoch
  --peer-epochs "convnet=5 resnet18=3"    epochs; the table's ms/step is the median of the
                      per-epoch ms/step over epochs 2.. (epoch 1 is warm-up)
  --synthetic-test 512  --seed 42
  --ef-lr X --sgdm-lr X   learning rates (defaults: efsign's, 0.3 and 0.05); --sgdm-lr is
                      also the DDP rows' (same SGD with momentum 0.9)
  --ef-args, --overlap-args, --sgdm-args, --ddp-args "..."   more options for those rows
  --python /usr/bin/python3   the interpreter with Debian's python3-torch

Binaries: EFSIGN_BENCH (default build/efsign-bench), EFSIGN_TRAIN (build/efsign-train).
Missing tools or not root (except --print-launch): a message and exit 2.
EOF
}

MODE=bench
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
LAUNCH_WAIT=30      # seconds for every rank of a launch to appear in its namespace
SUBNET_PREFIX="10.213.47"   # private /24 used only inside the namespaces and on the bridge
BIND=cores
LAUNCH_TESTS=0
LAUNCH_VERBOSE=0
SHARED_TMP=0
LAUNCH_ARGS="comm -b 1e3 -e 1e3 -f 10 --iters 1 --warmup 0"
PEER_MODELS="convnet resnet18"
ALL_ROWS="ef-signsgd ef-signsgd+overlap sgdm compute ddp-fp32 ddp-fp16 ddp-powersgd-r1 ddp-powersgd-r4 ddp-compute"
PEER_ROWS=$ALL_ROWS
ROUNDS=2
PEER_BATCH="convnet=64 mlp=64 resnet18=16"
PEER_STEPS="convnet=100 mlp=100 resnet18=10"
PEER_EPOCHS="convnet=5 mlp=5 resnet18=3"
SYNTH_TEST=512
SEED=42
EF_LR=""
SGDM_LR=""
EF_ARGS=""
OVERLAP_ARGS=""
SGDM_ARGS=""
DDP_ARGS=""
PY=/usr/bin/python3

need() { [ $# -ge 2 ] || { echo "netem.sh: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --peer) MODE=peer; shift ;;
    --alpha) MODE=alpha; shift ;;
    --check-bindings) MODE=check-bindings; shift ;;
    --launch-test) need "$@"; MODE=launch-test; LAUNCH_TESTS=$2; shift 2 ;;
    --print-launch) MODE=print-launch; shift ;;
    --bind) need "$@"; BIND=$2; shift 2 ;;
    --launch-verbose) LAUNCH_VERBOSE=1; shift ;;
    --shared-tmp) SHARED_TMP=1; shift ;;
    --launch-args) need "$@"; LAUNCH_ARGS=$2; shift 2 ;;
    --ranks) need "$@"; RANKS=$2; shift 2 ;;
    --rates) need "$@"; RATES=$2; shift 2 ;;
    --delay) need "$@"; DELAY=$2; shift 2 ;;
    --sizes) need "$@"; SIZES=$2; shift 2 ;;
    --comm-args) need "$@"; COMM_ARGS=$2; shift 2 ;;
    --model) need "$@"; MODEL=$2; shift 2 ;;
    --batch-size) need "$@"; BATCH=$2; shift 2 ;;
    --steps) need "$@"; STEPS=$2; shift 2 ;;
    --step-args) need "$@"; STEP_ARGS=$2; shift 2 ;;
    --no-comm) RUN_COMM=0; shift ;;
    --out) need "$@"; OUT=$2; shift 2 ;;
    --timeout) need "$@"; TMO=$2; shift 2 ;;
    --subnet) need "$@"; SUBNET_PREFIX=$2; shift 2 ;;
    --keep-going) KEEP_GOING=1; shift ;;
    --models) need "$@"; PEER_MODELS=$2; shift 2 ;;
    --rows) need "$@"; PEER_ROWS=$2; shift 2 ;;
    --rounds) need "$@"; ROUNDS=$2; shift 2 ;;
    --peer-batch) need "$@"; PEER_BATCH=$2; shift 2 ;;
    --peer-steps) need "$@"; PEER_STEPS=$2; shift 2 ;;
    --peer-epochs) need "$@"; PEER_EPOCHS=$2; shift 2 ;;
    --synthetic-test) need "$@"; SYNTH_TEST=$2; shift 2 ;;
    --seed) need "$@"; SEED=$2; shift 2 ;;
    --ef-lr) need "$@"; EF_LR=$2; shift 2 ;;
    --sgdm-lr) need "$@"; SGDM_LR=$2; shift 2 ;;
    --ef-args) need "$@"; EF_ARGS=$2; shift 2 ;;
    --overlap-args) need "$@"; OVERLAP_ARGS=$2; shift 2 ;;
    --sgdm-args) need "$@"; SGDM_ARGS=$2; shift 2 ;;
    --ddp-args) need "$@"; DDP_ARGS=$2; shift 2 ;;
    --python) need "$@"; PY=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "netem.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "netem.sh: $*" >&2; exit 2; }
isnum() { case "$1" in ''|*[!0-9]*) return 1 ;; esac; return 0; }

case "$BIND" in cores|none|mpi-default) ;; *) die "--bind must be cores, none or mpi-default (got '$BIND')" ;; esac
for w in $RANKS; do isnum "$w" && [ "$w" -ge 1 ] || die "--ranks: '$w' is not a world size"; done
[ -n "$RANKS" ] || die "--ranks is empty"
[ -n "$RATES" ] || die "--rates is empty"
isnum "$ROUNDS" && [ "$ROUNDS" -ge 1 ] || die "--rounds must be >= 1"
isnum "$LAUNCH_TESTS" || die "--launch-test needs a count"
[ "$MODE" != launch-test ] || [ "$LAUNCH_TESTS" -ge 1 ] || die "--launch-test needs a count >= 1"
isnum "$TMO" && [ "$TMO" -ge 1 ] || die "--timeout must be a number of seconds"
for r in $PEER_ROWS; do
  case " $ALL_ROWS " in *" $r "*) ;; *) die "--rows: unknown row '$r' (choose from: $ALL_ROWS)" ;; esac
done
for m in $PEER_MODELS; do
  case "$m" in mlp|convnet|resnet18) ;; *) die "--models: '$m' has no DDP twin (mlp, convnet, resnet18)" ;; esac
done

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
AGENT="$HERE/netem_agent.sh"
BENCH="${EFSIGN_BENCH:-$ROOT/build/efsign-bench}"
TRAIN="${EFSIGN_TRAIN:-$ROOT/build/efsign-train}"
SUBNET="$SUBNET_PREFIX.0/24"
BR_ADDR="$SUBNET_PREFIX.254"
TAG="$$"
BR="efb$TAG"

# The CPUs this script may use ("0-1" -> 0 1); emulated host i gets CPUS[(i-1) % N].
CPUS=($(awk -F'[: \t]+' '/^Cpus_allowed_list/ { n = split($2, p, ",");
  for (k = 1; k <= n; k++) { m = split(p[k], r, "-"); for (c = r[1]; c <= (m > 1 ? r[2] : r[1]); c++) print c } }' /proc/self/status))
NCPU=${#CPUS[@]}
[ "$NCPU" -ge 1 ] || die "cannot read this process's CPUs from /proc/self/status"
host_cpus() {  # host_cpus I: the taskset list of emulated host I, or "-" (no restriction)
  if [ "$BIND" = cores ]; then echo "${CPUS[$((($1 - 1) % NCPU))]}"; else echo "-"; fi
}

# mpi_cmd W RATE: the mpirun command (without the program) into MPI_CMD. The one place
# where launch flags are chosen; --print-launch prints exactly this.
MPI_CMD=()
EXTRA_X=()      # more -x VAR=value for the next launch (DDP's rendezvous)
EXTRA_MPI=()    # more mpirun flags for the next launch (--report-bindings)
mpi_cmd() {
  local w=$1 rate=$2
  MPI_CMD=(mpirun --allow-run-as-root --oversubscribe -np "$w")
  if [ "$rate" = shm ]; then
    MPI_CMD+=(--mca btl self,vader)
    case "$BIND" in
      cores) MPI_CMD+=(--map-by core:OVERSUBSCRIBE --bind-to core:overload-allowed) ;;
      none) MPI_CMD+=(--bind-to none) ;;
    esac
  else
    MPI_CMD+=(--hostfile "$OUT/.hosts_W$w"
      --mca plm_rsh_agent "$AGENT" --mca plm_rsh_no_tree_spawn 1
      --mca btl tcp,self --mca btl_tcp_if_include "$SUBNET" --mca oob_tcp_if_include "$SUBNET")
    # Without this, each emulated host's orted binds its rank to "core 0" of what it
    # believes is its own machine (W <= 2: Open MPI binds to core), i.e. all on CPU 0.
    [ "$BIND" = mpi-default ] || MPI_CMD+=(--bind-to none)
  fi
  # (not --debug-daemons: it keeps the daemons attached, which changes how they start)
  # More ranks than CPUs: a rank busy-polling for a message from a rank on its own CPU
  # holds that CPU until the scheduler's next tick (4 ms here). On shared memory Open MPI
  # sees the oversubscription and yields; each emulated host sees one rank on "its"
  # machine and does not, so say it (seen: 4-byte allreduce at W = 4 on 2 CPUs 16 ms
  # without, bench/PEER.md).
  [ "$w" -gt "$NCPU" ] && [ "$BIND" != mpi-default ] && MPI_CMD+=(--mca mpi_yield_when_idle 1)
  [ "$LAUNCH_VERBOSE" -eq 1 ] && MPI_CMD+=(--mca plm_base_verbose 10)
  MPI_CMD+=(-x OMP_NUM_THREADS=1 -x PATH)
  [ -n "${LD_LIBRARY_PATH:-}" ] && MPI_CMD+=(-x LD_LIBRARY_PATH)
  return 0
}
write_hostfile() {  # write_hostfile W
  local i
  : > "$OUT/.hosts_W$1"
  for i in $(seq 1 "$1"); do echo "$SUBNET_PREFIX.$i slots=1" >> "$OUT/.hosts_W$1"; done
}

if [ "$MODE" = print-launch ]; then
  echo "# netem.sh --print-launch: --bind $BIND, this process's CPUs: ${CPUS[*]} (N = $NCPU)"
  for rate in $RATES; do
    for w in $RANKS; do
      mpi_cmd "$w" "$rate"
      echo "== W=$w rate=$rate"
      if [ "$rate" != shm ]; then
        for i in $(seq 1 "$w"); do
          echo "host $i: $SUBNET_PREFIX.$i slots=1 netns efs$TAG-$i cpus $(host_cpus "$i") (rank $((i - 1))) TMPDIR $([ "$SHARED_TMP" -eq 0 ] && echo "/tmp/efs$TAG-$i.tmp" || echo "(shared)")"
        done
      fi
      printf '%q ' "${MPI_CMD[@]}"
      echo "PROGRAM ARGS..."
    done
  done
  exit 0
fi

[ "$(id -u)" -eq 0 ] || die "must run as root (network namespaces and tc need it)"
for t in ip tc mpirun timeout awk taskset; do
  command -v "$t" >/dev/null 2>&1 || die "'$t' not found (install iproute2 / openmpi-bin / coreutils / util-linux)"
done
[ -x "$AGENT" ] || die "$AGENT is missing or not executable"
case "$MODE" in
  bench|alpha|launch-test) [ -x "$BENCH" ] || die "$BENCH not built (cmake --build build), or set EFSIGN_BENCH" ;;
  peer)
    [ -x "$TRAIN" ] || die "$TRAIN not built (cmake --build build --target efsign-train), or set EFSIGN_TRAIN"
    "$PY" -c 'import torch, torch.distributed' 2>/dev/null ||
      die "$PY cannot import torch: apt-get install python3-torch (Debian's PyTorch), or pass --python"
    ;;
esac
mkdir -p "$OUT" || die "cannot create $OUT"
OUT=$(cd "$OUT" && pwd)

for rate in $RATES; do
  [ "$rate" = shm ] && continue
  if ip -4 -o addr show | grep -q "inet $SUBNET_PREFIX\."; then
    die "$SUBNET is already in use on this host; choose another with --subnet"
  fi
  if ip -4 route show | grep -q "^$SUBNET_PREFIX\."; then
    die "$SUBNET is already routed on this host; choose another with --subnet"
  fi
  break
done

NSES=()
VETHS=()
TMPS=()
MAP=$(mktemp /tmp/efsign-netem-map.XXXXXX)
export EFSIGN_NETEM_MAP="$MAP"

MPI_PID=
BG_PIDS=()
kill_ns_procs() {  # every process left inside our namespaces (orted, ranks)
  local ns pids
  for ns in "${NSES[@]}"; do
    pids=$(ip netns pids "$ns" 2>/dev/null)
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null
  done
  return 0
}
cleanup() {
  local ns v pids p
  if [ -n "$MPI_PID" ]; then   # our mpirun, still running after INT/TERM
    kill -TERM "$MPI_PID" 2>/dev/null
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$MPI_PID" 2>/dev/null || break; sleep 0.3; done
    kill -KILL "$MPI_PID" 2>/dev/null
    MPI_PID=
  fi
  for p in "${BG_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  BG_PIDS=()
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
  for v in "${TMPS[@]}"; do case "$v" in /tmp/efs*.tmp) rm -rf "$v" ;; esac; done
  NSES=(); VETHS=(); TMPS=()
  rm -f "$OUT"/.hosts_W*
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

# setup RATE N: bridge + N namespaces with shaped veths. Inside every namespace the
# host's NIC is called eth0 (one GLOO_SOCKET_IFNAME for every host).
setup() {
  local rate=$1 n=$2 i ns vr vn addr bps burst
  bps=$(rate_bps "$rate")
  [ "$bps" -gt 0 ] 2>/dev/null || { echo "netem.sh: '$rate' is not a tc rate (e.g. 1gbit, 500mbit)" >&2; return 1; }
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
    ip -n "$ns" link set "$vn" name eth0 || return 1
    ip link set "$vr" master "$BR" up || return 1
    ip -n "$ns" link set lo up || return 1
    ip -n "$ns" addr add "$addr/24" dev eth0 || return 1
    ip -n "$ns" link set eth0 up || return 1
    # egress of the emulated host: token bucket at the link rate, netem delay as its child
    ip netns exec "$ns" tc qdisc add dev eth0 root handle 1: tbf rate "$rate" burst "$burst" latency 50ms || return 1
    if [ -n "$DELAY" ] && [ "$DELAY" != "0" ] && [ "$DELAY" != "0ms" ]; then
      if ! ip netns exec "$ns" tc qdisc add dev eth0 parent 1:1 handle 10: netem delay "$DELAY" limit 100000 2>/dev/null; then
        [ "$NO_NETEM_WARNED" -eq 1 ] || echo "netem.sh: WARNING: this kernel has no netem qdisc (sch_netem); --delay $DELAY is NOT applied, links are rate-limited only" >&2
        NO_NETEM_WARNED=1; DELAY_APPLIED=0
      fi
    else
      DELAY_APPLIED=0
    fi
    # ingress of the emulated host (the switch port towards it): same rate, no extra delay
    tc qdisc add dev "$vr" root tbf rate "$rate" burst "$burst" latency 50ms || return 1
    local tmp=-
    if [ "$SHARED_TMP" -eq 0 ]; then
      tmp="/tmp/efs$TAG-$i.tmp"
      mkdir -m 700 "$tmp" || return 1
      TMPS+=("$tmp")
    fi
    echo "$addr $ns $(host_cpus "$i") $tmp" >> "$MAP"
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

# 1-byte TCP ping-pong host 2 -> host 1 and back (median round trip of 2000, after 200)
measure_rtt() {
  local rate=$1 py
  py=$(command -v python3) || { echo "no python3: round trip not measured" > "$OUT/rtt_$rate.txt"; return 0; }
  timeout 60 ip netns exec "efs$TAG-1" "$py" -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5202)); s.listen(1)
c, _ = s.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while True:
    b = c.recv(1)
    if not b: break
    c.sendall(b)' "$SUBNET_PREFIX.1" &
  local srv=$!
  sleep 0.5
  timeout 60 ip netns exec "efs$TAG-2" taskset -c "${CPUS[$((1 % NCPU))]}" "$py" -c '
import socket, sys, time
s = socket.create_connection((sys.argv[1], 5202)); s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
t = []
for i in range(2200):
    t0 = time.perf_counter(); s.sendall(b"x"); s.recv(1); t.append(time.perf_counter() - t0)
t = sorted(t[200:]); n = len(t)
print(f"tcp_rtt_us_median {1e6 * t[n // 2]:.1f} p10 {1e6 * t[n // 10]:.1f} p90 {1e6 * t[9 * n // 10]:.1f} round_trips {n}")
s.close()' "$SUBNET_PREFIX.1" > "$OUT/rtt_$rate.txt" 2>&1
  wait $srv 2>/dev/null
  echo "link $rate: 1-byte TCP ping-pong host 2 <-> host 1: $(cat "$OUT/rtt_$rate.txt")"
}

# watch_launch W COMM: wait until every emulated host 1..W has shown a process named
# COMM (the rank), or mpirun has ended (0), or LAUNCH_WAIT seconds have passed (1).
# Sets LAUNCH_UP_S to the seconds it took.
LAUNCH_UP_S=
watch_launch() {
  local w=$1 comm=$2 i p seen=() up=0 t0 now
  t0=$(date +%s.%N)
  for i in $(seq 1 "$w"); do seen[$i]=0; done
  while kill -0 "$MPI_PID" 2>/dev/null; do
    for i in $(seq 1 "$w"); do
      [ "${seen[$i]}" -eq 1 ] && continue
      for p in $(ip netns pids "efs$TAG-$i" 2>/dev/null); do
        if [ "$(cat /proc/"$p"/comm 2>/dev/null)" = "$comm" ]; then seen[$i]=1; up=$((up + 1)); break; fi
      done
    done
    now=$(date +%s.%N)
    LAUNCH_UP_S=$(awk -v a="$t0" -v b="$now" 'BEGIN { printf "%.2f", b - a }')
    [ "$up" -eq "$w" ] && return 0
    awk -v s="$LAUNCH_UP_S" -v l="$LAUNCH_WAIT" 'BEGIN { exit !(s >= l) }' && return 1
    sleep 0.2
  done
  LAUNCH_UP_S=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
  return 0
}

# Diagnostics of a launch whose ranks did not all start, appended to LOG.
launch_diagnostics() {
  local w=$1 log=$2 i p
  {
    echo "---- netem.sh launch diagnostics ($(date +%T))"
    for i in $(seq 1 "$w"); do
      echo "host $i (efs$TAG-$i): processes:"
      for p in $(ip netns pids "efs$TAG-$i" 2>/dev/null); do
        echo "  $p $(tr '\0' ' ' < /proc/"$p"/cmdline 2>/dev/null | cut -c1-160)"
      done
      echo "host $i: neighbours: $(ip -n "efs$TAG-$i" neigh show 2>/dev/null | tr '\n' ';')"
      echo "host $i: tcp sockets:"
      ip netns exec "efs$TAG-$i" ss -tanp 2>/dev/null | sed 's/^/  /'
    done
    echo "root namespace: neighbours on $BR: $(ip neigh show dev "$BR" 2>/dev/null | tr '\n' ';')"
    echo "processes under mpirun (pid ppid pgid sid state seconds wchan command):"
    ps -eo pid=,ppid=,pgid=,sid=,stat=,etimes=,wchan:24=,args= | awk -v root="$MPI_PID" '
      { line[$1] = $0; parent[$1] = $2 }
      END { for (p in line) { q = p; while (q in parent && q != root && q > 1) q = parent[q]; if (q == root) print "  " substr(line[p], 1, 220) } }'
    echo "orted processes anywhere: $(pgrep -a orted | cut -c1-120 | tr '\n' ';')"
  } >> "$log"
}

MAX_ATTEMPTS=3
# run_mpi W RATE LOG PROGRAM ARGS...: one mpirun, its output in LOG. On emulated hosts a
# launch whose ranks have not all started after LAUNCH_WAIT s (an orted that never called
# back) is killed and retried, up to MAX_ATTEMPTS launches (each counted in LAUNCH_RETRIES).
# The cause of those hangs (bench/PEER.md): the emulated hosts shared one hostname and one
# /tmp, hence one Open MPI session-directory tree; a starting orted removed a directory
# another had just created, the victim exited in its session-dir set-up (its message lost:
# daemonized orteds write to /dev/null) and mpirun waited forever. Every host now has its
# own TMPDIR (setup); the watchdog stays as a guard and reports in LAUNCH_RETRIES.
LAUNCH_RETRIES=0
TRACK_FIRST_OUTPUT=0
FIRST_OUTPUT_S=
run_mpi() {
  local w=$1 rate=$2 log=$3; shift 3
  local attempt rc=1 comm t_launch
  comm=$(basename "$1" | cut -c1-15)
  mpi_cmd "$w" "$rate"
  [ "$rate" = shm ] || write_hostfile "$w"
  for attempt in $(seq 1 "$MAX_ATTEMPTS"); do
    t_launch=$(date +%s.%N)
    FIRST_OUTPUT_S=
    timeout --kill-after=10 "$TMO" "${MPI_CMD[@]}" "${EXTRA_MPI[@]}" "${EXTRA_X[@]}" "$@" > "$log" 2>&1 < /dev/null &
    MPI_PID=$!
    if [ "$rate" != shm ] && ! watch_launch "$w" "$comm"; then
      echo "netem.sh: launch attempt $attempt of W=$w ($comm): not every rank had started after ${LAUNCH_WAIT} s; killing it$([ "$attempt" -lt "$MAX_ATTEMPTS" ] && echo " and retrying")" >&2
      launch_diagnostics "$w" "$log"
      cp "$log" "$log.attempt$attempt" 2>/dev/null
      LAUNCH_RETRIES=$((LAUNCH_RETRIES + 1))
      pkill -P "$MPI_PID" 2>/dev/null; kill "$MPI_PID" 2>/dev/null; wait "$MPI_PID" 2>/dev/null
      kill_ns_procs
      rc=124
      continue
    fi
    if [ "$TRACK_FIRST_OUTPUT" -eq 1 ]; then  # seconds until the log is first non-empty
      FIRST_OUTPUT_S=never
      while kill -0 "$MPI_PID" 2>/dev/null; do
        [ -s "$log" ] && { FIRST_OUTPUT_S=$(awk -v a="$t_launch" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'); break; }
        sleep 0.2
      done
      [ "$FIRST_OUTPUT_S" = never ] && [ -s "$log" ] && FIRST_OUTPUT_S=end
    fi
    wait "$MPI_PID"   # a background job + wait lets INT/TERM traps run at once
    rc=$?
    break
  done
  MPI_PID=
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
case "$MODE" in
  bench|peer|alpha) [ "$maxw" -ge 2 ] || die "--ranks needs a world size >= 2" ;;
esac
for w in $RANKS; do
  [ "$w" -le "$NCPU" ] || echo "netem.sh: note: W=$w ranks on $NCPU CPUs: ranks share CPUs (time-sliced), so compute times at W=$w are shared-CPU times"
done

# with_rate RATE: network set-up for one rate (nothing for shm); 1 on failure.
with_rate() {
  local rate=$1
  if [ "$rate" = shm ]; then
    echo "== shared memory (plain mpirun, btl self,vader), --bind $BIND"
    return 0
  fi
  DELAY_APPLIED=1
  echo "== rate $rate, delay $DELAY: $maxw namespaces on $SUBNET (bridge $BR at $BR_ADDR), --bind $BIND"
  if ! setup "$rate" "$maxw"; then fail "network setup for $rate"; cleanup; return 1; fi
  echo "delay_applied $DELAY_APPLIED delay $DELAY" > "$OUT/netem_$rate.txt"
  return 0
}

# ---- --check-bindings ----------------------------------------------------------------
# verdict on "rank=R cpus=LIST" lines (stdin): W, N (CPUs); prints one line, exit 1 if
# a single CPU is the whole allowed set of more ranks than ceil(W/N) (1 when W <= N).
bindings_verdict() {
  awk -v w="$1" -v n="$2" '
    /^rank=[0-9]+ cpus=/ { split($1, a, "="); split($2, b, "="); r = a[2]; cpus[r] = b[2]; seen++
      if (b[2] ~ /^[0-9]+$/) { pinned[b[2]] = pinned[b[2]] (pinned[b[2]] == "" ? "" : ",") r; count[b[2]]++ } }
    END {
      line = ""
      for (r = 0; r < w; r++) line = line sprintf(" rank %d: %s;", r, (r in cpus) ? cpus[r] : "?")
      if (seen != w) { printf "FAIL: %d of %d ranks reported their CPUs:%s\n", seen, w, line; exit 1 }
      limit = int((w + n - 1) / n)
      bad = ""
      for (c in count) if (count[c] > limit) bad = bad sprintf(" ranks %s are all pinned to CPU %s;", pinned[c], c)
      if (bad != "") { printf "FAIL:%s (W=%d, %d CPUs: at most %d rank(s) per CPU)%s\n", bad, w, n, limit, line; exit 1 }
      printf "OK:%s\n", line
    }'
}
if [ "$MODE" = check-bindings ]; then
  # The rank itself ($$ of the shell mpirun starts) reports its allowed CPUs.
  probe='echo "rank=$OMPI_COMM_WORLD_RANK cpus=$(sed -n "s/^Cpus_allowed_list:[[:space:]]*//p" /proc/$$/status)"'
  EXTRA_MPI=(--report-bindings)
  MAX_ATTEMPTS=1
  for rate in $RATES; do
    with_rate "$rate" || continue
    for w in $RANKS; do
      log="$OUT/bindings_W${w}_${rate}.log"
      if ! run_mpi "$w" "$rate" "$log" /bin/sh -c "$probe"; then
        cat "$log" >&2; fail "bindings probe W=$w rate=$rate did not run (log $log)"; continue
      fi
      grep -i "bound\|MCW" "$log" | sed 's/^/   /'
      if v=$(bindings_verdict "$w" "$NCPU" < "$log"); then
        echo "bindings W=$w $rate --bind $BIND: $v"
      else
        echo "bindings W=$w $rate --bind $BIND: $v"; FAILED=1
      fi
    done
    cleanup
  done
  exit $FAILED
fi

# ---- --launch-test N -------------------------------------------------------------------
median_max() {  # median_max SECONDS...: "median M s, max X s" (or "-")
  printf '%s\n' "$@" | grep . | sort -g |
    awk '{ v[NR] = $1 } END { if (NR) printf "median %.2f s, max %.2f s", v[int((NR + 1) / 2)], v[NR]; else printf "-" }'
}
if [ "$MODE" = launch-test ]; then
  MAX_ATTEMPTS=1
  TRACK_FIRST_OUTPUT=1
  for rate in $RATES; do
    [ "$rate" = shm ] && { echo "(--launch-test: shm has no remote daemons; skipped)"; continue; }
    with_rate "$rate" || continue
    for w in $RANKS; do
      ups=(); firsts=(); hung=0; failed=0
      for k in $(seq 1 "$LAUNCH_TESTS"); do
        log="$OUT/launch_W${w}_${rate}_$k.log"
        t0=$(date +%s.%N)
        LAUNCH_RETRIES=0
        # shellcheck disable=SC2086
        run_mpi "$w" "$rate" "$log" "$BENCH" $LAUNCH_ARGS
        rc=$?
        t=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
        if [ "$LAUNCH_RETRIES" -gt 0 ]; then
          hung=$((hung + 1)); state="HUNG (ranks not all started after ${LAUNCH_WAIT} s; diagnostics in $log)"
        elif [ "$rc" -ne 0 ]; then
          failed=$((failed + 1)); state="FAILED rc=$rc (log $log)"; ups+=("$LAUNCH_UP_S")
        else
          state="ok"; ups+=("$LAUNCH_UP_S"); rm -f "$log"
        fi
        [ "$LAUNCH_RETRIES" -gt 0 ] || [ "$FIRST_OUTPUT_S" = never ] || [ "$FIRST_OUTPUT_S" = end ] ||
          firsts+=("$FIRST_OUTPUT_S")
        echo "launch $k/$LAUNCH_TESTS W=$w $rate: ranks up after ${LAUNCH_UP_S} s, first output after ${FIRST_OUTPUT_S:--} s, ended after $t s: $state"
      done
      stats=$(median_max "${ups[@]}")
      fstats=$(median_max "${firsts[@]}")
      echo "== launch test W=$w $rate --bind $BIND ($LAUNCH_ARGS): $LAUNCH_TESTS launches, $hung hung, $failed failed; ranks up: $stats; first output: $fstats"
      echo "W=$w rate=$rate bind=$BIND args=\"$LAUNCH_ARGS\" launches=$LAUNCH_TESTS hung=$hung failed=$failed ranks_up=\"$stats\" first_output=\"$fstats\"" >> "$OUT/launch_test.txt"
      [ "$hung" -eq 0 ] && [ "$failed" -eq 0 ] || FAILED=1
    done
    cleanup
  done
  exit $FAILED
fi

# ---- --alpha ---------------------------------------------------------------------------
if [ "$MODE" = alpha ]; then
  for rate in $RATES; do
    with_rate "$rate" || continue
    [ "$rate" = shm ] || measure_rtt "$rate"
    for w in $RANKS; do
      log="$OUT/alpha_W${w}_${rate}.log"; json="$OUT/alpha_W${w}_${rate}.jsonl"
      if run_mpi "$w" "$rate" "$log" "$BENCH" comm -b 1 -e 1 -f 10 --iters 2000 --warmup 200 --json "$json"; then
        t=$(grep '"method":"fp32-allreduce"' "$json" | sed 's/.*"time_ms_median":\([-0-9.eE+]*\).*/\1/')
        a=$(grep '"method":"allgather"' "$json" | sed 's/.*"time_ms_median":\([-0-9.eE+]*\).*/\1/')
        echo "alpha W=$w $rate: MPI_Allreduce of 4 B: median $(awk -v t="$t" 'BEGIN { printf "%.1f", t * 1e3 }') us; allgather of one 8-B message: median $(awk -v t="$a" 'BEGIN { printf "%.1f", t * 1e3 }') us"
      else
        tail -n 20 "$log" >&2; fail "alpha W=$w rate=$rate (log $log)"
      fi
    done
    cleanup
  done
  exit $FAILED
fi

# ---- --peer ----------------------------------------------------------------------------
kv() {  # kv "convnet=64 resnet18=16" MODEL: the model's value, or the bare number
  local spec=$1 m=$2 t
  for t in $spec; do
    case "$t" in "$m="*) echo "${t#*=}"; return 0 ;; *=*) ;; *) echo "$t"; return 0 ;; esac
  done
  return 1
}
summary_field() {  # summary_field FILE FIELD: FIELD of the last summary record
  grep '"event":"summary"' "$1" 2>/dev/null | tail -n1 | sed -n "s/.*\"$2\":\"\{0,1\}\([^,\"}]*\).*/\1/p"
}
epoch_median_ms() {  # median over epochs 2.. (all, with one epoch) of step_time_ms
  local rows
  rows=$(grep '"event":"epoch"' "$1" 2>/dev/null | sed -n 's/.*"epoch":\([0-9]*\),.*"step_time_ms":\([-0-9.eE+]*\).*/\1 \2/p')
  { echo "$rows" | awk 'NF == 2 && $1 > 1 { print $2 }' | grep . || echo "$rows" | awk 'NF == 2 { print $2 }'; } |
    sort -g | awk '{ s[++n] = $1 } END { if (!n) { print "NA"; exit }
      printf "%.2f", n % 2 ? s[(n + 1) / 2] : (s[n / 2] + s[n / 2 + 1]) / 2 }'
}
load1() { cut -d' ' -f1 /proc/loadavg; }

PORT=29500
# run_compute W RATE LOG JSON ARGS...: W copies of efsign-train with W = 1 (MPI singletons),
# started together, copy i on emulated host i's CPUs (in its namespace). Copy 1 writes JSON,
# copy i > 1 JSON.h<i>; the copies' logs are concatenated into LOG.
run_compute() {
  local w=$1 rate=$2 log=$3 json=$4; shift 4
  local i cpus out rc=0 pids=()
  : > "$log"
  for i in $(seq 1 "$w"); do
    out="$json"; [ "$i" -gt 1 ] && out="$json.h$i"
    cpus=$(host_cpus "$i")
    local pre=()
    [ "$rate" = shm ] || pre=(ip netns exec "efs$TAG-$i")
    [ "$rate" = shm ] || [ "$SHARED_TMP" -eq 1 ] || pre+=(env TMPDIR="/tmp/efs$TAG-$i.tmp")
    [ "$cpus" = "-" ] || pre+=(taskset -c "$cpus")
    OMP_NUM_THREADS=1 timeout --kill-after=10 "$TMO" "${pre[@]}" "$TRAIN" "$@" --metrics-out "$out" \
      > "$log.h$i" 2>&1 < /dev/null &
    pids+=($!)
  done
  BG_PIDS=("${pids[@]}")
  for i in "${!pids[@]}"; do wait "${pids[$i]}" || rc=$?; done
  BG_PIDS=()
  for i in $(seq 1 "$w"); do { echo "---- copy $i"; cat "$log.h$i"; } >> "$log"; rm -f "$log.h$i"; done
  return $rc
}

# peer_row RATE W MODEL ROUND ROW
declare -A PARAMS=()
peer_row() {
  local rate=$1 w=$2 model=$3 round=$4 row=$5
  local base="$OUT/peer_${model}_W${w}_${rate}_${row}_r${round}"
  local json="$base.jsonl" log="$base.log" b s e data=() common=() rc=0 t0
  b=$(kv "$PEER_BATCH" "$model") && s=$(kv "$PEER_STEPS" "$model") && e=$(kv "$PEER_EPOCHS" "$model") ||
    die "--peer-batch/--peer-steps/--peer-epochs give no value for $model"
  if [ "$model" = resnet18 ]; then data=(--dataset synthetic --synthetic-test "$SYNTH_TEST"); else data=(--dataset fashion-mnist); fi
  common=(--model "$model" "${data[@]}" --batch-size "$b" --epochs "$e" --steps-per-epoch "$s" --seed "$SEED")
  rm -f "$json" "$json".h*
  EXTRA_X=()
  local ef_lr=() sgdm_lr=()
  [ -n "$EF_LR" ] && ef_lr=(--lr "$EF_LR")
  [ -n "$SGDM_LR" ] && sgdm_lr=(--lr "$SGDM_LR")
  t0=$(date +%s)
  local l0; l0=$(load1)
  # shellcheck disable=SC2086
  case "$row" in
    ef-signsgd) run_mpi "$w" "$rate" "$log" "$TRAIN" "${common[@]}" --optimizer ef-signsgd "${ef_lr[@]}" \
                  --progress off --metrics-out "$json" $EF_ARGS || rc=$? ;;
    ef-signsgd+overlap) run_mpi "$w" "$rate" "$log" "$TRAIN" "${common[@]}" --optimizer ef-signsgd "${ef_lr[@]}" \
                  --overlap $OVERLAP_ARGS --progress off --metrics-out "$json" $EF_ARGS || rc=$? ;;
    sgdm) run_mpi "$w" "$rate" "$log" "$TRAIN" "${common[@]}" --optimizer sgdm "${sgdm_lr[@]}" \
                  --progress off --metrics-out "$json" $SGDM_ARGS || rc=$? ;;
    compute) run_compute "$w" "$rate" "$log" "$json" "${common[@]}" --optimizer sgdm "${sgdm_lr[@]}" \
                  --progress off $SGDM_ARGS || rc=$? ;;
    ddp-*)
      local hook=() addr=127.0.0.1 ifname=lo
      case "$row" in
        ddp-fp32) hook=(--hook none) ;;
        ddp-fp16) hook=(--hook fp16) ;;
        ddp-powersgd-r*) hook=(--hook powersgd --powersgd-rank "${row#ddp-powersgd-r}") ;;
        ddp-compute) hook=(--hook compute) ;;
      esac
      [ "$rate" = shm ] || { addr=$SUBNET_PREFIX.1; ifname=eth0; }
      PORT=$((PORT + 1)); [ "$PORT" -gt 29999 ] && PORT=29501
      EXTRA_X=(-x MASTER_ADDR="$addr" -x MASTER_PORT="$PORT" -x GLOO_SOCKET_IFNAME="$ifname")
      run_mpi "$w" "$rate" "$log" "$PY" "$HERE/ddp_peer.py" "${common[@]}" "${hook[@]}" "${sgdm_lr[@]}" \
        --expect-params "${PARAMS[$model]}" --label "$row" --metrics-out "$json" $DDP_ARGS || rc=$?
      EXTRA_X=()
      ;;
  esac
  PEER_DONE=$((PEER_DONE + 1))
  if [ "$rc" -ne 0 ] || [ -z "$(summary_field "$json" step_time_ms)" ]; then
    tail -n 15 "$log" >&2
    fail "peer $row W=$w $rate $model round $round (rc $rc, log $log)"
    return 0
  fi
  printf '[%d/%d] %-8s W=%d %-9s r%d %-20s %8s ms/step  acc %s  %s B/step  (%d s, load %s -> %s)\n' \
    "$PEER_DONE" "$PEER_TOTAL" "$model" "$w" "$rate" "$round" "$row" "$(epoch_median_ms "$json")" \
    "$(summary_field "$json" test_acc | awk '{ printf "%.4f", $1 }')" \
    "$(summary_field "$json" bytes_sent_per_step | awk '{ printf "%.0f", $1 }')" "$(( $(date +%s) - t0 ))" "$l0" "$(load1)"
}

if [ "$MODE" = peer ]; then
  for model in $PEER_MODELS; do
    ds=fashion-mnist; [ "$model" = resnet18 ] && ds=synthetic
    PARAMS[$model]=$("$TRAIN" --model "$model" --dataset "$ds" --describe 2>/dev/null | sed -n 's/^total: [0-9]* layers, \([0-9]*\) parameters.*/\1/p')
    [ -n "${PARAMS[$model]}" ] || die "$TRAIN --model $model --describe printed no parameter count"
  done
  nrows=$(echo $PEER_ROWS | wc -w)
  PEER_TOTAL=$(( $(echo $RATES | wc -w) * $(echo $RANKS | wc -w) * $(echo $PEER_MODELS | wc -w) * ROUNDS * nrows ))
  PEER_DONE=0
  {
    echo "date $(date -Is)"
    echo "host $(uname -n) kernel $(uname -r) cpus ${CPUS[*]} model $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
    echo "git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+dirty')"
    echo "torch $("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)"
    echo "args --ranks '$RANKS' --rates '$RATES' --bind $BIND --models '$PEER_MODELS' --rows '$PEER_ROWS' --rounds $ROUNDS --peer-batch '$PEER_BATCH' --peer-steps '$PEER_STEPS' --peer-epochs '$PEER_EPOCHS' --synthetic-test $SYNTH_TEST --seed $SEED --ef-lr '$EF_LR' --sgdm-lr '$SGDM_LR' --ef-args '$EF_ARGS' --overlap-args '$OVERLAP_ARGS' --sgdm-args '$SGDM_ARGS' --ddp-args '$DDP_ARGS'"
    echo "loadavg_start $(cat /proc/loadavg)"
  } > "$OUT/peer_meta.txt"
  echo "peer: $PEER_TOTAL runs (rates x W x models x rounds x rows); parameters: $(for m in $PEER_MODELS; do printf '%s %s  ' "$m" "${PARAMS[$m]}"; done)"
  for rate in $RATES; do
    with_rate "$rate" || continue
    [ "$rate" = shm ] || measure_link "$rate"
    for w in $RANKS; do
      for model in $PEER_MODELS; do
        for round in $(seq 1 "$ROUNDS"); do
          rows=$PEER_ROWS
          [ $((round % 2)) -eq 0 ] && rows=$(echo $PEER_ROWS | tr ' ' '\n' | tac | tr '\n' ' ')
          for row in $rows; do peer_row "$rate" "$w" "$model" "$round" "$row"; done
        done
      done
    done
    cleanup
  done
  echo "loadavg_end $(cat /proc/loadavg)" >> "$OUT/peer_meta.txt"
  echo "launches retried after a hung start: $LAUNCH_RETRIES" | tee -a "$OUT/peer_meta.txt"
  echo
  if command -v "$PY" >/dev/null 2>&1; then
    "$PY" "$HERE/plot.py" --print "$OUT" | tee "$OUT/peer_table.txt"
  fi
  echo "JSON and logs in $OUT"
  [ "$FAILED" -eq 0 ] || exit 1
  exit 0
fi

# ---- default: efsign-bench comm + step -------------------------------------------------
[ "$maxw" -ge 2 ] || die "--ranks needs a world size >= 2"
for rate in $RATES; do
  with_rate "$rate" || continue
  [ "$rate" = shm ] || measure_link "$rate"
  for w in $RANKS; do
    cj="$OUT/comm_W${w}_${rate}.jsonl"; sj="$OUT/step_W${w}_${rate}.jsonl"
    rm -f "$cj" "$sj"
    echo "-- W=$w rate=$rate: comm $SIZES $COMM_ARGS"
    t0=$(date +%s)
    # shellcheck disable=SC2086
    if [ "$RUN_COMM" -eq 0 ]; then
      echo "   (comm skipped: --no-comm)"
    elif run_mpi "$w" "$rate" "$OUT/comm_W${w}_${rate}.log" "$BENCH" comm $SIZES $COMM_ARGS --json "$cj"; then
      grep -v '^#' "$OUT/comm_W${w}_${rate}.log" | sed 's/^/   /'
    else
      tail -n 20 "$OUT/comm_W${w}_${rate}.log" >&2; fail "comm W=$w rate=$rate (log $OUT/comm_W${w}_${rate}.log)"
    fi
    echo "-- W=$w rate=$rate: step --model $MODEL --batch-size $BATCH --steps $STEPS $STEP_ARGS ($(( $(date +%s) - t0 )) s so far)"
    # shellcheck disable=SC2086
    if run_mpi "$w" "$rate" "$OUT/step_W${w}_${rate}.log" "$BENCH" step --model "$MODEL" --batch-size "$BATCH" --steps "$STEPS" $STEP_ARGS --json "$sj"; then
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
