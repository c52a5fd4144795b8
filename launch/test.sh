#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (ctest: unit tests, [mpi]
# tests under mpirun with 2, 3 and 4 ranks, the kernels on the CUDA emulation, CLI
# tests). Exit code: ctest's. Extra arguments go to ctest.
#   launch/test.sh --asan   instead: the core's tests (the optimizers, exchanges and
#                           CUDA codec on the emulation) built with AddressSanitizer
#                           and UndefinedBehaviorSanitizer in build-asan/
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
efsign_install_packages
if [[ ${1:-} == --asan ]]; then
  shift
  BUILD_DIR=${BUILD_DIR%/build}/build-asan
  EFSIGN_CMAKE_ARGS="-DEFSIGN_SANITIZE=address,undefined -DEFSIGN_WITH_CUDA=OFF -DEFSIGN_USE_PCH=OFF ${EFSIGN_CMAKE_ARGS:-}"
  targets=(test_device_codec test_exchange test_optim test_cuda_emu test_kernels_emu)
  cmake -S "$EFSIGN_ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $EFSIGN_CMAKE_ARGS
  cmake --build "$BUILD_DIR" -j "${EFSIGN_JOBS:-$(nproc)}" --target "${targets[@]}"
  cd "$BUILD_DIR"
  # Open MPI's own allocations are not ours to report; every error ends the run.
  export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
  exec ctest --output-on-failure --timeout 900 -R "^(test_device_codec|test_exchange|test_optim|test_cuda_emu|test_kernels_emu)(_np[0-9])?$" "$@"
fi
efsign_build
cd "$BUILD_DIR"
ctest --output-on-failure --timeout 900 "$@"
