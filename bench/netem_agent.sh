#!/bin/sh
# netem_agent.sh: the "remote shell" Open MPI uses to start its daemons on the
# emulated hosts of bench/netem.sh (--mca plm_rsh_agent /abs/path/netem_agent.sh).
#
# Called as:  netem_agent.sh [options] HOST COMMAND...
# Options (anything starting with '-', as ssh would get) are skipped. HOST is an
# IPv4 address of one of the namespaces; COMMAND is run, like ssh does, as one
# shell command line, inside the namespace that owns HOST:
#     ip netns exec NS /bin/sh -c "COMMAND..."
# The namespace is looked up in $EFSIGN_NETEM_MAP (lines "ADDR NS", written by
# netem.sh); failing that, every namespace is searched for HOST.
set -u
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
if [ -n "${EFSIGN_NETEM_MAP:-}" ] && [ -r "$EFSIGN_NETEM_MAP" ]; then
  ns=$(awk -v h="$host" '$1 == h { print $2; exit }' "$EFSIGN_NETEM_MAP")
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
exec ip netns exec "$ns" /bin/sh -c "$*"
