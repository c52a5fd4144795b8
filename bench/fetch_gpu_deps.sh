#!/usr/bin/env bash
# Run HERE (Debian 12, with apt) before a device run of bench/gpu_check.sh: downloads
# the Debian packages the GPU machine lacks into .carry/ (git-ignored; carry it with
# `run ... carry: [".carry"]`, about 10 MB). bench/gpu_env.sh unpacks them there.
#
#   .carry/debs/           always used: OpenMPI 4.1 (mpirun, libmpi, headers, the
#                          compiler wrappers), its leaf libraries, fmt, cxxopts,
#                          Catch2 and zlib's header (the GPU image may have none)
#   .carry/debs/fallback/  base-system libraries that OpenMPI needs and nearly every
#                          image has: used only for a soname the machine lacks
# Never libc or libstdc++: the GPU image has its own.
#
# Needs apt-get (Debian 12 lists; `apt-get update` first if a name is unknown).
# Takes a few seconds; packages already there are kept. --help prints this.
set -euo pipefail
if [[ ${1:-} == -h || ${1:-} == --help ]]; then sed -n '2,15p' "$0"; exit 0; fi
cd "$(dirname "$0")/.."

# Every name must exist in Debian 12: EFA's provider is in ibverbs-providers there
# (there is no libefa1 package).
carry=(libopenmpi-dev libopenmpi3 openmpi-bin openmpi-common libpmix2 libhwloc15 libevent-core-2.1-7
       libevent-pthreads-2.1-7 libfabric1 libucx0 libibverbs1 ibverbs-providers librdmacm1 libnl-3-200
       libnl-route-3-200 libpsm2-2 libpsm-infinipath1 libmunge2 libltdl7 libnuma1
       libfmt-dev libfmt9 libcxxopts-dev catch2 zlib1g-dev)
fallback=(zlib1g libudev1 libuuid1 libatomic1)

# apt-get download fetches nothing at all when one name has no candidate: check all
# names first (one apt-cache call) and name every missing one.
missing=$(apt-cache policy "${carry[@]}" "${fallback[@]}" 2>/dev/null |
  awk -v names="${carry[*]} ${fallback[*]}" '/^[^ ]/ {p = $1; sub(":$", "", p)} /Candidate:/ && $2 != "(none)" {ok[p] = 1}
       END {n = split(names, a, " "); for (i = 1; i <= n; ++i) if (!(a[i] in ok)) printf "%s ", a[i]}')
if [[ -n $missing ]]; then
  echo "fetch_gpu_deps: no Debian candidate for: $missing(run apt-get update, or fix the list)" >&2
  exit 1
fi

# Downloads $2... into $1, keeping files already there; removes .debs no longer listed.
fetch() {
  local dir=$1
  shift
  mkdir -p "$dir"
  local want f get=()
  want=$(apt-get download --print-uris "$@" | awk '{print $2}')
  for f in "$dir"/*.deb; do
    [[ -e $f ]] || continue
    grep -qxF "$(basename "$f")" <<<"$want" || rm -f "$f"
  done
  for f in $want; do [[ -f $dir/$f ]] || get+=("${f%%_*}"); done
  # apt's sandbox user may not write here; it then downloads as root (a warning only).
  if ((${#get[@]})); then
    (cd "$dir" && apt-get download "${get[@]}" 2>&1 | grep -v -e "Download is performed unsandboxed" -e "^Get:" || true)
  fi
  for f in $want; do
    [[ -f $dir/$f ]] || { echo "fetch_gpu_deps: $dir/$f was not downloaded" >&2; exit 1; }
  done
}
fetch .carry/debs "${carry[@]}"
fetch .carry/debs/fallback "${fallback[@]}"
echo "fetch_gpu_deps: $(ls .carry/debs/*.deb | wc -l) + $(ls .carry/debs/fallback/*.deb | wc -l) packages, $(du -sh .carry | cut -f1) in .carry"
