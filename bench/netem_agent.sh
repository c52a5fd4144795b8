#!/bin/sh
# netem_agent.sh: the "remote shell" Open MPI uses to start its daemons on the
# emulated hosts of bench/netem.sh (--mca plm_rsh_agent /abs/path/netem_agent.sh).
#
# Called as:  netem_agent.sh [options] HOST COMMAND...
# Options (anything starting with '-', as ssh would get) are skipped. HOST is an
# IPv4 address of one of the namespaces; COMMAND is run, like ssh does, as one
# shell command line, inside the namespace that owns HOST:
#     ip netns exec NS env TMPDIR=DIR [taskset -c CPUS] /bin/sh -c "COMMAND..."
# The namespace is looked up in $EFSIGN_NETEM_MAP (lines "ADDR NS [CPUS [TMP]]",
# written by netem.sh); failing that, every namespace is searched for HOST. CPUS (a
# taskset list such as "1" or "0-3"; "-" or absent: no restriction) is the emulated
# host's own share of the machine: the daemon is started on it, and with mpirun's
# --bind-to none its ranks inherit it. (Open MPI's default binding would instead put
# the first rank of EVERY emulated host on core 0: each daemon believes it owns the
# whole machine.) TMP ("-" or absent: the machine's) is the host's own temporary
# directory, as a real node has its own /tmp: Open MPI keeps its per-node session
# directory (/tmp/ompi.HOSTNAME.UID/...) and PMIx its files there, and the emulated
# hosts share one hostname and one /tmp. See bench/PEER.md.
set -u
case "${1:-}" in
  -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
while [ $# -gt 0 ]; do
  case "$1" in
    -o|-l|-p|-i|-F|-E|-J|-b|-c|-e|-m|-S|-W|-w) shift 2 ;;  # ssh options that take a value
    -*) shift ;;
    *) break ;;
  esac
done
if [ $# -lt 2 ]; then
  echo "netem_agent.sh: usage: netem_agent.sh [options] HOST COMMAND..." >&2
  exit 2
fi
host=$1
shift
ns=
cpus=-
tmp=-
if [ -n "${EFSIGN_NETEM_MAP:-}" ] && [ -r "$EFSIGN_NETEM_MAP" ]; then
  line=$(awk -v h="$host" '$1 == h { print $2, ($3 == "" ? "-" : $3), ($4 == "" ? "-" : $4); exit }' "$EFSIGN_NETEM_MAP")
  [ -z "$line" ] || read -r ns cpus tmp <<EOF
$line
EOF
fi
if [ -z "$ns" ]; then
  for n in $(ip netns list | awk '{print $1}'); do
    if ip -n "$n" -4 -o addr show 2>/dev/null | grep -q "inet $host/"; then ns=$n; break; fi
  done
fi
if [ -z "$ns" ]; then
  echo "netem_agent.sh: no network namespace owns $host" >&2
  exit 255
fi
env=
[ "$tmp" != "-" ] && env="TMPDIR=$tmp"
if [ "$cpus" != "-" ]; then
  exec ip netns exec "$ns" env $env taskset -c "$cpus" /bin/sh -c "$*"
fi
exec ip netns exec "$ns" env $env /bin/sh -c "$*"
