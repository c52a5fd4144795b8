#!/usr/bin/env bash
# Multi-node launcher around OpenMPI's mpirun.
#   launch/mpirun.sh --hostfile HOSTS --ranks-per-node G [--dry-run] -- [efsign-train flags]
# HOSTS lists one node per line ("node1 slots=8"). Ranks are placed G per node
# (--map-by ppr:G:node); efsign-train gives each rank the GPU of its local rank
# (MPI_COMM_TYPE_SHARED), so G must not exceed the GPUs per node for --backend nccl.
# Environment passed to every rank: OMP_NUM_THREADS (default 1), NCCL_DEBUG (WARN),
# NCCL_SOCKET_IFNAME / NCCL_IB_HCA and EFSIGN_* when set, PATH and LD_LIBRARY_PATH.
# Network: EFSIGN_IFACE=eth0 restricts OpenMPI's TCP traffic to that interface.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
hostfile="" per_node=1 dry=0 bin=${EFSIGN_TRAIN:-$ROOT/build/efsign-train}
while [[ $# -gt 0 ]]; do
  case $1 in
    --hostfile) hostfile=$2; shift 2 ;;
    --ranks-per-node) per_node=$2; shift 2 ;;
    --dry-run) dry=1; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "launch/mpirun.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -n $hostfile && -r $hostfile ]] || { echo "launch/mpirun.sh: --hostfile FILE is required and must be readable" >&2; exit 2; }
[[ $per_node =~ ^[1-9][0-9]*$ ]] || { echo "launch/mpirun.sh: --ranks-per-node must be a positive integer" >&2; exit 2; }
nodes=$(grep -cvE '^\s*(#|$)' "$hostfile")
ranks=$((nodes * per_node))
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} NCCL_DEBUG=${NCCL_DEBUG:-WARN}
cmd=(mpirun --hostfile "$hostfile" -np "$ranks" --map-by "ppr:$per_node:node" --bind-to none
     -x OMP_NUM_THREADS -x NCCL_DEBUG -x PATH -x LD_LIBRARY_PATH)
for v in NCCL_SOCKET_IFNAME NCCL_IB_HCA $(compgen -e | grep '^EFSIGN_' || true); do
  [[ -n ${!v:-} ]] && cmd+=(-x "$v")
done
[[ -n ${EFSIGN_IFACE:-} ]] && cmd+=(--mca btl_tcp_if_include "$EFSIGN_IFACE" --mca oob_tcp_if_include "$EFSIGN_IFACE")
[[ $(id -u) -eq 0 ]] && cmd+=(--allow-run-as-root)
[[ $per_node -gt $(nproc) ]] && cmd+=(--oversubscribe)
cmd+=("$bin" "$@")
echo "launch/mpirun.sh: $nodes node(s) x $per_node = $ranks ranks" >&2
if [[ $dry -eq 1 ]]; then printf '%q ' "${cmd[@]}"; echo; exit 0; fi
exec "${cmd[@]}"
