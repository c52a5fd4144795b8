#!/usr/bin/env bash
# bench/device_rehearsal.sh — rehearses HERE, on a CPU machine, what the next device run
# of bench/gpu_check.sh will do, so that device time is spent measuring, not discovering.
#
#   wheels        the wheels the GPU machine's python3 has: torch 2.11.0 and every nvidia
#                 wheel it pins (read from its METADATA and cuda-toolkit's), cmake and ninja
#                 (pip download --no-deps into .whl/, git-ignored; what is there is reused)
#   site          pip installs them into .whl/site, laid out as on that machine
#   debs          bench/fetch_gpu_deps.sh: the Debian packages a device run carries
#   --- then, in a private mount namespace (unshare -m) where an overlay on /usr hides
#       this machine's OpenMPI, NCCL, cuDNN, LibTorch, fmt, cxxopts, Catch2, zlib.h and
#       the fallback libraries, so that nothing can silently come from here:
#   hidden        checks that they are gone and that python3 finds torch only in .whl/site
#   setup, configure, build
#                 bench/gpu_check.sh's own stages (the same code: bench/gpu_env.sh),
#                 with python3 -> .whl/site (PYTHONPATH) and the pip cmake/ninja
#   link          every GPU binary resolves every library, from the places the device uses
#   mpirun        mpirun -np 2 uname -n (hostname) from the unpacked OpenMPI
#   train_no_gpu  $REHEARSAL_TRAIN under mpirun -np 1 must stop with its "no GPU is
#                 visible" error (exit 2); any other outcome fails
# Prints one PASS/FAIL/TIMEOUT/NOT RUN line and the time of each stage; exit 0 only if
# every stage passed. Logs: $EFSIGN_REHEARSAL_DIR (default /tmp/efsign-rehearsal-<id>).
#
# Needs: Debian 12 with apt, python3 + pip and PyPI, root (unshare -m, mount), nvcc in
# /usr/local/cuda, ~2.5 GB of wheels (+3.9 GB unpacked), ~10 MB of .debs. Takes, measured
# on 2 cores shared with other builds: wheel download ~1 min and site 0.5-3.5 min (both
# skipped when done before), the build 496 s (the precompiled LibTorch header 142 s of
# it), seconds for each other stage: ~9 min in all once the wheels are there.
# Options: --help. Environment: EFSIGN_WHEEL_CACHE=DIR[:DIR] (wheels already downloaded
# elsewhere: hard-linked, not fetched again), EFSIGN_JOBS (build jobs, default nproc).
# --until STAGE stops after that stage (e.g. --until configure); the rest is not run.
set -uo pipefail
SELF=$(readlink -f "${BASH_SOURCE[0]}")
EFSIGN_ROOT=$(cd "$(dirname "$SELF")/.." && pwd)
cd "$EFSIGN_ROOT" || exit 1

# The efsign-train invocation that must reach the "no GPU visible" error. ONE place:
# when the trainer gains --device cuda --comm nccl, change it here.
REHEARSAL_TRAIN=(--device cuda --comm nccl --dataset synthetic --model convnet --epochs 1)
REHEARSAL_EXPECT="no GPU is visible"

WHL=$EFSIGN_ROOT/.whl
SITE=$WHL/site
RUN=${EFSIGN_REHEARSAL_DIR:-/tmp/efsign-rehearsal-$(echo "$EFSIGN_ROOT" | md5sum | cut -c1-8)}
export EFSIGN_SYS=$RUN/sys GPU_BUILD=build-gpu
# shellcheck source=bench/gpu_env.sh
source "$EFSIGN_ROOT/bench/gpu_env.sh"

# pip's view of the GPU machine: CPython 3.12 on x86-64 manylinux (the tags differ per
# wheel, and pip matches each manylinux_2_N exactly).
PIP_TARGET=(--only-binary=:all: --python-version 3.12 --implementation cp --platform linux_x86_64
            --platform manylinux1_x86_64 --platform manylinux2010_x86_64 --platform manylinux2014_x86_64)
for n in $(seq 5 39); do PIP_TARGET+=(--platform "manylinux_2_${n}_x86_64"); done
TORCH_PIN=torch==2.11.0
# The GPU machine's cmake and ninja are pip's (its python3 venv); versions not recorded
# anywhere, so the newest 4.x cmake (the strictest about old policies) and ninja.
TOOL_PINS=("cmake==4.*" "ninja==1.*")

# ---- outer stages (this machine as it is) --------------------------------------------
# Is a wheel for pin $1 (name==version or name==prefix.*) in folder $2? Prints it.
wheel_in() {
  local name=${1%%==*} ver=${1#*==}
  name=${name//-/_}
  if [[ $ver == *.\* ]]; then
    ver=${ver%.\*}
    compgen -G "$2/${name}-${ver}[-.]*.whl" | head -1
  else
    compgen -G "$2/${name}-${ver}-*.whl" | head -1
  fi
}

# The pins the GPU machine has: torch's Linux Requires-Dist on nvidia-* and the
# cuda-toolkit[extras]==V it names, expanded through cuda-toolkit's own METADATA.
torch_pins() {
  python3 - "$@" <<'EOF'
import re, sys, zipfile
def reqs(whl):
    z = zipfile.ZipFile(whl)
    meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    return [l.split(":", 1)[1].strip() for l in meta.splitlines() if l.startswith("Requires-Dist:")]
torch_whl, toolkit_whl = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)
for r in reqs(torch_whl):
    spec, _, marker = r.partition(";")
    if "extra ==" in marker or (marker and "Linux" not in marker):
        continue
    m = re.match(r"([A-Za-z0-9_.-]+)(\[([^\]]*)\])?\s*(==\s*\S+)", spec.strip())
    if not m:
        continue
    name, extras, pin = m.group(1), m.group(3), m.group(4).replace(" ", "")
    if name.startswith("nvidia-"):
        print(name + pin)
    elif name == "cuda-toolkit":
        if toolkit_whl is None:
            print("cuda-toolkit" + pin)
            continue
        want = set(e.strip() for e in extras.split(","))
        for t in reqs(toolkit_whl):
            s, _, mk = t.partition(";")
            e = re.search(r"extra == '([^']+)'", mk)
            if e and e.group(1) in want:
                print(s.strip().replace(" ", ""))
EOF
}

# Hard-links the wheels for pins $@ from EFSIGN_WHEEL_CACHE, then downloads the rest.
get_wheels() {
  local pin f d missing=()
  mkdir -p "$WHL" || return
  for pin in "$@"; do
    [[ -n $(wheel_in "$pin" "$WHL") ]] && continue
    for d in ${EFSIGN_WHEEL_CACHE:+${EFSIGN_WHEEL_CACHE//:/ }}; do
      f=$(wheel_in "$pin" "$d")
      [[ -n $f ]] && { ln -f "$f" "$WHL/" 2>/dev/null || cp "$f" "$WHL/"; } && break
    done
    [[ -n $(wheel_in "$pin" "$WHL") ]] || missing+=("$pin")
  done
  ((${#missing[@]} == 0)) && return 0
  echo "downloading: ${missing[*]}"
  python3 -m pip download -q --no-deps "${PIP_TARGET[@]}" -d "$WHL" "${missing[@]}"
}

stage_wheels() {
  local torch toolkit pins
  get_wheels "$TORCH_PIN" || return
  torch=$(wheel_in "$TORCH_PIN" "$WHL")
  get_wheels $(torch_pins "$torch" | grep '^cuda-toolkit') || return
  toolkit=$(compgen -G "$WHL/cuda_toolkit-*.whl" | head -1)
  mapfile -t pins < <(torch_pins "$torch" "$toolkit")
  ((${#pins[@]} > 5)) || gpu_fail "could not read torch's nvidia pins from $torch" || return
  get_wheels "${pins[@]}" "${TOOL_PINS[@]}" || return
  echo "efsign-note: ${#pins[@]} nvidia wheels pinned by $(basename "$torch"): ${pins[*]}"
  echo "efsign-note: torch wheel: $(unzip -p "$torch" torch/version.py | sed -n "s/^__version__ = '\(.*\)'/version \1/p;s/^cuda: Optional\[str\] = '\(.*\)'/built for CUDA \1/p" | paste -sd,)"
  echo "efsign-note: $(ls "$WHL"/*.whl | wc -l) wheels, $(du -sh "$WHL" --exclude=site | cut -f1) in $WHL"
}

stage_site() {
  local stamp
  stamp=$(ls "$WHL"/*.whl | xargs -n1 basename | sort | md5sum | cut -c1-32)
  if [[ -f $SITE/.stamp && $(cat "$SITE/.stamp") == "$stamp" ]]; then
    echo "efsign-note: $SITE is up to date"
    return 0
  fi
  rm -rf "$SITE"
  python3 -m pip install -q --no-index --no-deps --no-compile "${PIP_TARGET[@]}" --target "$SITE" "$WHL"/*.whl 2>&1 |
    grep -v "Running pip as the 'root' user"
  [[ ${PIPESTATUS[0]} == 0 ]] || return 1
  echo "$stamp" >"$SITE/.stamp"
  echo "efsign-note: $(du -sh "$SITE" | cut -f1) in $SITE"
}

stage_debs() { bench/fetch_gpu_deps.sh; }

# ---- hiding this machine's copies (inside the namespace) -----------------------------
# Debian packages whose files are hidden: every carried one that is installed here
# (zlib1g excepted: everything here runs on it) and the LibTorch/MPI packages not
# carried; plus NCCL and cuDNN, which this machine's /usr/local/cuda has from wheels
# (the GPU machine's torch finds them through its own RPATH, in site-packages).
HIDE_EXTRA=(libtorch-dev libtorch1.13 libtorch-test python3-torch libpmix-dev libhwloc-dev libhwloc-plugins
            libevent-dev libevent-2.1-7 libevent-extra-2.1-7 libevent-openssl-2.1-7 libibverbs-dev
            mpi-default-dev mpi-default-bin)
HIDE_GLOBS=("/usr/local/cuda*/lib*/libnccl*" "/usr/local/cuda*/lib*/libcudnn*" "/usr/local/cuda*/include/nccl*"
            "/usr/local/cuda*/include/cudnn*" "/usr/lib/x86_64-linux-gnu/libnccl*" "/usr/include/nccl*")

hide_host() {
  local up=$RUN/hide pkgs=() f p
  for f in .carry/debs/*.deb .carry/debs/fallback/*.deb; do
    p=$(basename "$f")
    p=${p%%_*}
    [[ $p == zlib1g ]] || pkgs+=("$p")
  done
  mkdir -p "$up" && mount -t tmpfs tmpfs "$up" && mkdir -p "$up/upper" "$up/work" ||
    gpu_fail "tmpfs for the overlay" || return
  python3 - "$up/upper" "${pkgs[*]} ${HIDE_EXTRA[*]}" "${HIDE_GLOBS[*]}" <<'EOF' || return
import glob, os, subprocess, sys
upper, pkgs, globs = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
installed = [p for p in pkgs if subprocess.run(["dpkg-query", "-W", p], capture_output=True).returncode == 0]
listed = subprocess.run(["dpkg", "-L"] + installed, capture_output=True, text=True).stdout.splitlines()
paths = set()
for p in listed + [q for g in globs for q in glob.glob(g)]:
    if not p.startswith("/") or not os.path.lexists(p) or (os.path.isdir(p) and not os.path.islink(p)):
        continue
    real = os.path.join(os.path.realpath(os.path.dirname(p)), os.path.basename(p))
    if real.startswith("/usr/"):
        paths.add(real)
for real in sorted(paths):  # an overlay whiteout: a 0/0 character device
    w = os.path.join(upper, real[len("/usr/"):])
    os.makedirs(os.path.dirname(w), exist_ok=True)
    if not os.path.lexists(w):
        os.mknod(w, 0o600 | 0o020000, os.makedev(0, 0))
print(f"efsign-note: hidden {len(paths)} files of {len(installed)} packages ({' '.join(installed)}) and NCCL/cuDNN in /usr/local/cuda")
EOF
  mount -t overlay overlay -o "lowerdir=/usr,upperdir=$up/upper,workdir=$up/work" /usr ||
    gpu_fail "overlay on /usr" || return
  if [[ -d /etc/openmpi ]]; then mkdir -p "$up/empty" && mount --bind "$up/empty" /etc/openmpi; fi
}

stage_hidden() {
  local bad=() p
  command -v mpirun >/dev/null && bad+=("mpirun: $(command -v mpirun)")
  for p in /usr/include/fmt/format.h /usr/include/cxxopts.hpp /usr/include/catch2/catch.hpp /usr/include/zlib.h \
           /usr/local/cuda/include/nccl.h /usr/local/cuda/include/cudnn.h /etc/openmpi/openmpi-mca-params.conf; do
    [[ -e $p ]] && bad+=("$p")
  done
  # Folders of hidden packages stay, empty of files.
  for p in /usr/lib/x86_64-linux-gnu/cmake/Torch /usr/lib/x86_64-linux-gnu/cmake/Caffe2 /usr/include/torch \
           /usr/include/ATen /usr/lib/x86_64-linux-gnu/openmpi /usr/lib/x86_64-linux-gnu/cmake/fmt; do
    [[ -n $(find "$p" ! -type d 2>/dev/null | head -1) ]] && bad+=("$p/...")
  done
  # Every library of the hidden packages that the loader's cache still names must be gone.
  while read -r p; do [[ -e $p ]] && bad+=("$p"); done < <(ldconfig -p |
    awk '$1 ~ /^lib(mpi|open-pal|open-rte|pmix|hwloc|event|fmt|nccl|cudnn|torch|c10|udev|uuid|atomic)[._]/ {print $NF}')
  ((${#bad[@]} == 0)) || gpu_fail "still visible: ${bad[*]}" || return
  p=$(gpu_env_package_dir torch)
  [[ $p == "$SITE/torch" ]] || gpu_fail "python3 finds torch at '$p', not in $SITE" || return
  echo "efsign-note: python3 $(python3 -c 'import sys; print(sys.version.split()[0])') finds torch at $p;" \
    "$(cmake --version | head -1) at $(command -v cmake)"
}

# ---- checks after the build -----------------------------------------------------------
stage_link() {
  gpu_env_load || return
  local t b missing=0 lib targets
  read -ra targets <<<"$(bash bench/gpu_check.sh --targets)"  # the ones gpu_check.sh builds and runs
  for t in "${targets[@]}"; do
    b=$(find "$GPU_BUILD" -name "$t" -type f -executable | head -1)
    [[ -n $b ]] || { echo "$t: not built"; missing=1; continue; }
    if ldd "$b" | grep "not found"; then echo "$t: unresolved libraries"; missing=1; fi
  done
  b=$GPU_BUILD/efsign-train
  for lib in libtorch_cuda.so libcudnn.so.9 libnccl.so.2 libmpi.so.40 libfmt.so.9 libcudart.so.13; do
    echo "efsign-note: efsign-train: $lib => $(ldd "$b" 2>/dev/null | awk -v l="$lib" '$1 == l {print $3}')"
  done
  return "$missing"
}

stage_mpirun() {
  gpu_env_load || return
  echo "mpirun: $(command -v mpirun)"
  timeout 60 mpirun -np 2 uname -n
}

stage_train_no_gpu() {
  gpu_env_load || return
  local out rc
  out=$(mpirun -np 1 "$GPU_BUILD/efsign-train" "${REHEARSAL_TRAIN[@]}" 2>&1)
  rc=$?
  echo "$out"
  echo "efsign-note: efsign-train ${REHEARSAL_TRAIN[*]}: exit $rc: $(grep -m1 "$REHEARSAL_EXPECT" <<<"$out" | cut -c1-100)"
  [[ $rc != 0 ]] && grep -q "$REHEARSAL_EXPECT" <<<"$out" ||
    gpu_fail "expected a failure saying '$REHEARSAL_EXPECT', got exit $rc"
}

# ---- main -------------------------------------------------------------------------------
stage_env_inside() {
  export PYTHONPATH=$SITE PATH=$SITE/bin:$PATH
}

inside() {  # runs as `unshare -m ... --inside`: this process and its children see the overlay
  hide_host >"$GPU_LOGDIR/hide.log" 2>&1 || { cat "$GPU_LOGDIR/hide.log"; echo "FAILED to hide this machine's copies" >&2; return 1; }
  sed -n 's/^efsign-note: /    /p' "$GPU_LOGDIR/hide.log" | tee -a "$GPU_SUMMARY"
  stage_env_inside
  local s
  for s in hidden:120 setup:180 configure:900 build:7200 link:120 mpirun:90 train_no_gpu:300; do
    [[ -n ${REHEARSAL_SKIP:-} ]] && break
    case ${s%%:*} in
      setup | configure | build) gpu_stage "${s%%:*}" "${s##*:}" bash bench/gpu_check.sh --stage "${s%%:*}" ;;
      *) gpu_stage "${s%%:*}" "${s##*:}" bash "$SELF" --stage "${s%%:*}" ;;
    esac
    [[ ${s%%:*} == "${REHEARSAL_UNTIL:-}" ]] && REHEARSAL_SKIP=1
  done
  ((GPU_STAGES_FAILED == 0))
}

main() {
  case ${1:-} in
    -h | --help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$SELF"; return 0 ;;
    --until) export REHEARSAL_UNTIL=$2 ;;
    --stage) "stage_$2"; return ;;
    --inside)
      GPU_DEADLINE=$2 GPU_STAGES_FAILED=0
      inside
      return ;;
    "") ;;
    *) echo "unknown argument '$1' (see --help)" >&2; return 2 ;;
  esac
  mkdir -p "$RUN" || return 1
  gpu_stage_init $((4 * 3600)) "$RUN/logs" "$RUN/summary.txt"
  export GPU_LOGDIR GPU_SUMMARY EFSIGN_ROOT
  : >"$GPU_SUMMARY"
  echo "efsign device rehearsal $(git rev-parse --short HEAD 2>/dev/null) in $EFSIGN_ROOT; logs in $GPU_LOGDIR" |
    tee -a "$GPU_SUMMARY"
  local t0=$SECONDS ok=1
  gpu_stage wheels 1800 bash "$SELF" --stage wheels || ok=0
  gpu_stage site 900 bash "$SELF" --stage site || ok=0
  gpu_stage debs 300 bash "$SELF" --stage debs || ok=0
  if ((ok)); then
    unshare -m -- bash "$SELF" --inside "$GPU_DEADLINE" || ok=0
    if ! grep -q "^hidden" "$GPU_LOGDIR/stages.tsv"; then
      echo "NOT RUN  the hidden stages: unshare -m or the overlay failed (see above; both need root)" |
        tee -a "$GPU_SUMMARY"
      ok=0
    fi
  else
    echo "NOT RUN  the hidden stages (hidden, setup, configure, build, link, mpirun, train_no_gpu): a download failed" |
      tee -a "$GPU_SUMMARY"
  fi
  # The namespace's stage lines went to the same table.
  local failed
  failed=$(awk -F'\t' '$2 != "PASS"' "$GPU_LOGDIR/stages.tsv" | wc -l)
  echo "rehearsal: $(wc -l <"$GPU_LOGDIR/stages.tsv") stages, $failed not passed, $((SECONDS - t0)) s in all" |
    tee -a "$GPU_SUMMARY"
  if [[ -n ${REHEARSAL_UNTIL:-} ]]; then
    echo "REHEARSAL INCOMPLETE: stopped after '$REHEARSAL_UNTIL' (--until); not a pass" | tee -a "$GPU_SUMMARY"
    return 3
  fi
  ((ok && failed == 0)) && echo "REHEARSAL PASS" || echo "REHEARSAL FAIL"
  ((ok && failed == 0))
}

main "$@"
