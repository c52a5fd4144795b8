# bench/gpu_env.sh — sourced (never run) by bench/gpu_check.sh on the GPU machine and
# by bench/device_rehearsal.sh here: the ONE copy of everything both must do alike.
#
#   gpu_env_unpack      unpack the carried Debian packages (.carry/debs, from
#                       bench/fetch_gpu_deps.sh) into $EFSIGN_SYS as dpkg would leave
#                       them (the alternatives links its scripts make: mpirun, mpicxx,
#                       libmpi.so, ...), and write the environment a relocated OpenMPI
#                       needs to $EFSIGN_SYS/env.sh
#   gpu_env_discover    LibTorch and NCCL from python3's packages (importlib find_spec:
#                       never `import torch`, and nvidia.nccl has no __init__.py), nvcc;
#                       appended to $EFSIGN_SYS/env.sh (gpu_env_commit: now complete)
#   gpu_env_load        source $EFSIGN_SYS/env.sh (every stage after the set-up)
#   gpu_env_configure   the CMake configure of build dir $GPU_BUILD
#   gpu_env_build T...  build only the targets T (ninja -k 0: as many as can be)
#   gpu_stage ...       the stage runner: per-stage timeout, overall deadline, timing,
#                       one PASS / FAIL / TIMEOUT / NOT RUN line per stage
#
# Needs bash, dpkg-deb, python3, cmake, ninja, nvcc (PATH or /usr/local/cuda/bin).
# Variables (defaults): EFSIGN_SYS (/tmp/efsign-sys), GPU_BUILD (build-gpu),
# TORCH_CUDA_ARCH_LIST (9.0: the H200 only, fastest to build), EFSIGN_JOBS (nproc).

EFSIGN_ROOT=${EFSIGN_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
EFSIGN_SYS=${EFSIGN_SYS:-/tmp/efsign-sys}
GPU_BUILD=${GPU_BUILD:-build-gpu}
GPU_ENV_FILE=$EFSIGN_SYS/env.sh
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
# Debian's multiarch folder: the carried packages are amd64, as the GPU machine.
GPU_ARCH_DIR=x86_64-linux-gnu

gpu_fail() {
  echo "FAILED: $*" >&2
  return 1
}

# Appends `export NAME=value` for each NAME to the environment file being written;
# gpu_env_commit makes it the environment file (so a set-up killed half-way leaves none).
gpu_env_save() {
  local v
  for v in "$@"; do printf 'export %s=%q\n' "$v" "${!v}" >>"$GPU_ENV_FILE.partial"; done
}
gpu_env_commit() { mv "$GPU_ENV_FILE.partial" "$GPU_ENV_FILE"; }

gpu_env_load() {
  [[ -f $GPU_ENV_FILE ]] || gpu_fail "$GPU_ENV_FILE is missing: the set-up stage did not run or failed" || return
  # shellcheck disable=SC1090
  source "$GPU_ENV_FILE"
}

# Symlinks made by the update-alternatives calls in a package's postinst (dpkg -x runs
# no scripts): every "--install LINK NAME PATH PRIO" and "--slave LINK NAME PATH".
gpu_env_alternatives() {
  local deb=$1 link path
  dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./postinst 2>/dev/null | sed -e ':a' -e '/\\$/{N;s/\\\n//;ba}' |
    awk '/update-alternatives/ { for (i = 1; i <= NF; ++i) {
           if ($i == "--install" || $i == "--slave") print $(i + 1), $(i + 3) } }' |
    while read -r link path; do
      if [[ -e $EFSIGN_SYS$path ]]; then
        mkdir -p "$(dirname "$EFSIGN_SYS$link")"
        ln -sfn "$EFSIGN_SYS$path" "$EFSIGN_SYS$link"
      fi
    done
}

gpu_env_unpack() {
  local debs=$EFSIGN_ROOT/.carry/debs f l t soname found
  compgen -G "$debs/*.deb" >/dev/null ||
    gpu_fail "no Debian packages in $debs: run bench/fetch_gpu_deps.sh here and carry .carry" || return
  command -v dpkg-deb >/dev/null || gpu_fail "dpkg-deb not found: cannot unpack $debs" || return
  rm -rf "$EFSIGN_SYS"
  mkdir -p "$EFSIGN_SYS/fallback" "$EFSIGN_SYS/fallback-lib" || return
  for f in "$debs"/*.deb; do dpkg-deb -x "$f" "$EFSIGN_SYS" || gpu_fail "dpkg-deb -x $f" || return; done
  for f in "$debs"/fallback/*.deb; do
    [[ -e $f ]] || continue
    dpkg-deb -x "$f" "$EFSIGN_SYS/fallback" || gpu_fail "dpkg-deb -x $f" || return
  done
  for f in "$debs"/*.deb; do gpu_env_alternatives "$f"; done
  # Absolute links (zlib1g-dev's libz.so -> /lib/...) point into the unpacked tree.
  while IFS= read -r l; do
    t=$(readlink "$l")
    if [[ -e $EFSIGN_SYS$t ]]; then ln -sfn "$EFSIGN_SYS$t" "$l"
    elif [[ -e $EFSIGN_SYS/fallback$t ]]; then ln -sfn "$EFSIGN_SYS/fallback$t" "$l"
    fi
  done < <(find "$EFSIGN_SYS" -type l -lname '/*')
  # Fallback libraries only for a soname this machine lacks (or whose file is gone).
  while IFS= read -r f; do
    soname=$(basename "$f")
    found=$(ldconfig -p 2>/dev/null | awk -v s="$soname" '$1 == s && /x86-64/ {print $NF}' |
            while read -r p; do [[ -e $p ]] && echo "$p"; done | head -1)
    [[ -n $found ]] || ln -sfn "$f" "$EFSIGN_SYS/fallback-lib/$soname"
  done < <(find "$EFSIGN_SYS/fallback" -name 'lib*.so.[0-9]*' | grep -E '\.so\.[0-9]+$')

  local S=$EFSIGN_SYS A=$GPU_ARCH_DIR
  [[ -x $S/usr/bin/mpirun && -e $S/usr/lib/$A/libmpi.so ]] ||
    gpu_fail "no mpirun or libmpi.so after unpacking (alternatives not made?)" || return
  : >"$GPU_ENV_FILE.partial"
  PATH=$S/usr/bin:$PATH
  LD_LIBRARY_PATH=$S/usr/lib/$A:$S/lib/$A${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}:$S/fallback-lib
  # A relocated OpenMPI: its prefix (libdir, wrapper data, MCA components and help
  # follow it), its config folder (not under the prefix in Debian's build), and PMIx,
  # which reads only its own variables: the component path and the help files.
  OPAL_PREFIX=$S/usr
  OPAL_SYSCONFDIR=$S/etc/openmpi
  PMIX_MCA_mca_base_component_path=$S/usr/lib/$A/pmix2/lib/pmix
  PMIX_PKGDATADIR=$S/usr/lib/$A/pmix2/share/pmix
  # One machine: shared memory between ranks (no UCX/OFI/verbs probing and warnings);
  # no single-copy (CMA needs ptrace rights a VM or container may refuse).
  OMPI_MCA_pml=ob1
  OMPI_MCA_btl=self,vader
  OMPI_MCA_btl_vader_single_copy_mechanism=none
  # The device runs commands as root.
  OMPI_ALLOW_RUN_AS_ROOT=1
  OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  # Every carried library and program must load here (a missing soname, or a glibc
  # older than Debian 12's 2.36 that libevent needs, fails now with the loader's words).
  local bad
  bad=$(export LD_LIBRARY_PATH
        for f in "$S"/usr/bin/{orterun,orted,opal_wrapper} "$S"/usr/lib/$A/*.so.* "$S"/lib/$A/*.so.* "$S"/usr/lib/$A/openmpi/lib/openmpi3/mca_pmix_*.so \
                 "$S"/usr/lib/$A/pmix2/lib/pmix/*.so; do
          [[ -f $f && ! -L $f ]] || continue  # scripts: ldd says "not a dynamic executable"
          ldd "$f" 2>&1 | grep -E "not found" | sed "s|^|$(basename "$f"): |"
        done | sort -u)
  [[ -z $bad ]] || gpu_fail "carried libraries that do not load on this machine:"$'\n'"$bad" || return
  gpu_env_save PATH LD_LIBRARY_PATH OPAL_PREFIX OPAL_SYSCONFDIR PMIX_MCA_mca_base_component_path PMIX_PKGDATADIR \
    OMPI_MCA_pml OMPI_MCA_btl OMPI_MCA_btl_vader_single_copy_mechanism OMPI_ALLOW_RUN_AS_ROOT \
    OMPI_ALLOW_RUN_AS_ROOT_CONFIRM
  echo "efsign-note: unpacked $(ls "$debs"/*.deb | wc -l) packages into $S; fallback libraries used: $(ls "$S/fallback-lib" | tr '\n' ' ')"
}

# Prints the folder of python3's package $1 (dotted), or nothing. find_spec imports
# only the parent packages (nvidia is a namespace package), never torch itself.
gpu_env_package_dir() {
  python3 - "$1" <<'EOF'
import importlib.util, sys
try:
    spec = importlib.util.find_spec(sys.argv[1])
except ImportError:
    spec = None
if spec and spec.submodule_search_locations:
    print(list(spec.submodule_search_locations)[0])
EOF
}

gpu_env_discover() {
  local torch_dir nvcc
  command -v python3 >/dev/null || gpu_fail "no python3 on PATH" || return
  torch_dir=$(gpu_env_package_dir torch)
  [[ -n $torch_dir ]] || gpu_fail "$(command -v python3) has no torch package (PYTHONPATH=${PYTHONPATH:-})" || return
  TORCH_PREFIX=$torch_dir/share/cmake  # = torch.utils.cmake_prefix_path
  [[ -f $TORCH_PREFIX/Torch/TorchConfig.cmake ]] || gpu_fail "no $TORCH_PREFIX/Torch/TorchConfig.cmake" || return
  TORCH_VERSION=$(sed -n "s/^__version__ = '\(.*\)'/\1/p" "$torch_dir/version.py")
  TORCH_CUDA=$(sed -n "s/^cuda: Optional\[str\] = '\(.*\)'/\1/p" "$torch_dir/version.py")
  NCCL_HOME=$(gpu_env_package_dir nvidia.nccl)
  [[ -n $NCCL_HOME ]] || gpu_fail "$(command -v python3) has no nvidia.nccl package (nvidia-nccl-cu13)" || return
  [[ -f $NCCL_HOME/include/nccl.h ]] || gpu_fail "no $NCCL_HOME/include/nccl.h" || return
  compgen -G "$NCCL_HOME/lib/libnccl.so*" >/dev/null || gpu_fail "no $NCCL_HOME/lib/libnccl.so.2" || return
  nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
  [[ -x $nvcc ]] || gpu_fail "no nvcc on PATH or in /usr/local/cuda/bin" || return
  CUDACXX=$nvcc
  CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$nvcc")")")
  PATH=$CUDA_HOME/bin:$PATH
  gpu_env_save TORCH_PREFIX TORCH_VERSION TORCH_CUDA NCCL_HOME CUDACXX CUDA_HOME PATH
  echo "efsign-note: torch $TORCH_VERSION (CUDA ${TORCH_CUDA:-none}) at $torch_dir"
  echo "efsign-note: NCCL $(sed -n 's/^#define NCCL_\(MAJOR\|MINOR\|PATCH\) *\([0-9]*\).*/\2/p' "$NCCL_HOME/include/nccl.h" | paste -sd.) at $NCCL_HOME"
  echo "efsign-note: $("$nvcc" --version | tail -1) ($nvcc); python3 $(python3 -c 'import sys; print(sys.version.split()[0])')"
}

# Reads LibTorch's and the nvidia wheels' libraries once, in the background, so that the
# first efsign-train does not spend its stage time loading ~3 GB from disk (measured
# here: 15.5 s for `efsign-train --help` cold, 1.7 s warm). Started at set-up, it runs
# while configure and build keep the CPUs busy.
gpu_env_warm_cache() {
  local site
  site=$(dirname "$(dirname "$(dirname "$TORCH_PREFIX")")")
  find "$site/torch/lib" "$site/nvidia" -name '*.so*' -type f -exec cat {} + >/dev/null 2>&1 &
}

gpu_env_configure() {
  local rc
  mkdir -p "$GPU_BUILD" || return
  cmake -S "$EFSIGN_ROOT" -B "$GPU_BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DEFSIGN_USE_PCH=ON \
    -DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$EFSIGN_SYS/usr" -DTORCH_CUDA_ARCH_LIST="$TORCH_CUDA_ARCH_LIST" \
    -DNCCL_HOME="$NCCL_HOME" -DCMAKE_CUDA_COMPILER="$CUDACXX" 2>&1 | tee "$GPU_BUILD/configure.out"
  rc=${PIPESTATUS[0]}
  ((rc == 0)) || return "$rc"
  sed -n 's/^-- efsign: /efsign-note: /p' "$GPU_BUILD/configure.out"
  grep -q "CUDA kernels + NCCL backend: ON" "$GPU_BUILD/configure.out" ||
    gpu_fail "configured without the GPU path (see the efsign: lines above)"
}

gpu_env_build() {
  # Not plain nproc: it follows OMP_NUM_THREADS, which the stages set to 1.
  cmake --build "$GPU_BUILD" -j "${EFSIGN_JOBS:-$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)}" --target "$@" -- -k 0
}

# ---- the stage runner ----------------------------------------------------------------
# gpu_stage_init DEADLINE_S LOGDIR SUMMARY_FILE: the deadline counts from now.
gpu_stage_init() {
  GPU_DEADLINE=$(($(date +%s) + $1))
  GPU_LOGDIR=$2
  GPU_SUMMARY=$3
  GPU_STAGES_FAILED=0
  mkdir -p "$GPU_LOGDIR"
  : >"$GPU_LOGDIR/stages.tsv"
}

# gpu_stage NAME LIMIT_S CMD...: runs CMD under `timeout` (LIMIT_S, or what is left
# before the deadline if less; NOT RUN if under 5 s are left), output to
# LOGDIR/NAME.log, lines starting "efsign-note: " also to the summary. One line per stage:
#   PASS|FAIL|TIMEOUT|NOT RUN  name  seconds  (reason)
gpu_stage() {
  local name=$1 limit=$2 t0 t1 rc status left secs
  shift 2
  left=$((GPU_DEADLINE - $(date +%s)))
  if ((left < 5)); then
    printf '%-8s %-28s %7s  (past the overall deadline)\n' "NOT RUN" "$name" "-" | tee -a "$GPU_SUMMARY"
    printf '%s\t%s\t%s\t%s\n' "$name" "NOT RUN" 0 "" >>"$GPU_LOGDIR/stages.tsv"
    GPU_STAGES_FAILED=$((GPU_STAGES_FAILED + 1))
    return 1
  fi
  ((limit > left)) && limit=$left
  t0=$(date +%s.%N)
  timeout -k 10 "$limit" "$@" >"$GPU_LOGDIR/$name.log" 2>&1 </dev/null
  rc=$?
  t1=$(date +%s.%N)
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}')
  case $rc in
    0) status=PASS ;;
    124 | 137) status=TIMEOUT ;;
    *) status=FAIL ;;
  esac
  printf '%-8s %-28s %6ss  %s\n' "$status" "$name" "$secs" \
    "$( ((rc == 0)) || echo "(rc $rc, limit ${limit}s; see logs/$name.log)")" | tee -a "$GPU_SUMMARY"
  sed -n 's/^efsign-note: /    /p' "$GPU_LOGDIR/$name.log" | tee -a "$GPU_SUMMARY"
  if ((rc != 0)); then
    # The first error lines (not mpirun's boilerplate after them) and the last line.
    { grep -v '^efsign-note' "$GPU_LOGDIR/$name.log" | grep -i -m3 -E 'error|fatal|exception|cannot|not found|skipped'
      grep -v '^efsign-note' "$GPU_LOGDIR/$name.log" | tail -n 1; } | uniq | cut -c1-160 | sed 's/^/    | /' | tee -a "$GPU_SUMMARY"
    GPU_STAGES_FAILED=$((GPU_STAGES_FAILED + 1))
  fi
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$secs" "$rc" >>"$GPU_LOGDIR/stages.tsv"
  return "$rc"
}

# The stage table as JSON: [{"stage":..,"status":..,"seconds":..,"rc":..}, ...]
gpu_stage_json() {
  awk -F'\t' 'BEGIN {printf "["} {printf "%s{\"stage\":\"%s\",\"status\":\"%s\",\"seconds\":%s,\"rc\":%s}",
    (NR > 1 ? "," : ""), $1, $2, ($3 == "" ? 0 : $3), ($4 == "" ? "null" : $4)} END {print "]"}' "$GPU_LOGDIR/stages.tsv"
}
