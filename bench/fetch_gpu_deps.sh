#!/usr/bin/env bash
# Run HERE (Debian 12, with apt access) before bench/gpu_check.sh: downloads the
# Debian packages the GPU machine lacks (OpenMPI, fmt, cxxopts, Catch2) into
# .carry/debs (git-ignored), to be carried with `device run --carry .carry`.
# Only leaf libraries are fetched: never libc/libstdc++, which the GPU image has.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .carry/debs
cd .carry/debs
pkgs=(libopenmpi-dev libopenmpi3 openmpi-bin openmpi-common libpmix2 libhwloc15 libevent-2.1-7
      libevent-core-2.1-7 libevent-pthreads-2.1-7 libfabric1 libucx0 libibverbs1 librdmacm1 libnl-3-200
      libnl-route-3-200 libpsm2-2 libpsm-infinipath1 libefa1 libmunge2 libltdl7 libnuma1 libxnvctrl0
      libfmt-dev libfmt9 libcxxopts-dev catch2)
apt-get download "${pkgs[@]}"
du -sh .
