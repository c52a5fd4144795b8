# Sourced by launch/quickstart.sh and launch/test.sh: install what is missing, build.
# Environment: BUILD_DIR (default build), EFSIGN_JOBS (default nproc), EFSIGN_CMAKE_ARGS.
set -euo pipefail
EFSIGN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$EFSIGN_ROOT/build}

efsign_install_packages() {
  local missing=()
  while read -r pkg; do
    [[ -z $pkg || $pkg == \#* ]] && continue
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done <"$EFSIGN_ROOT/launch/packages.txt"
  if ((${#missing[@]})); then
    echo "efsign: installing ${missing[*]}"
    local sudo=""
    [[ $(id -u) -ne 0 ]] && sudo="sudo"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
}

efsign_build() {
  cmake -S "$EFSIGN_ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release ${EFSIGN_CMAKE_ARGS:-}
  cmake --build "$BUILD_DIR" -j "${EFSIGN_JOBS:-$(nproc)}"
}

# mpirun flags: oversubscribe (more ranks than cores is fine for these sizes) and,
# as root (containers, CI), permission to run.
efsign_mpirun() {
  local flags=(--oversubscribe)
  [[ $(id -u) -eq 0 ]] && flags+=(--allow-run-as-root)
  mpirun "${flags[@]}" "$@"
}

# One intra-op thread per rank, so ranks do not fight over the cores.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
