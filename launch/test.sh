#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (ctest: unit tests, [mpi]
# tests under mpirun with 2 and 3 ranks, CLI tests). Exit code: ctest's.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
efsign_install_packages
efsign_build
cd "$BUILD_DIR"
ctest --output-on-failure --timeout 900 "$@"
