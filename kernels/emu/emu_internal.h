// kernels/emu/emu_internal.h — between the emulated runtime (cuda_runtime_emu.cpp) and
// the grid scheduler (device_emu.cpp). Not for users of the emulation.
#pragma once

#include <cstddef>
#include <string>

#include "cuda_runtime_api.h"
#include "efsign_emu.h"

namespace efsign::cuda_emu::detail {

struct GridLaunch {
  const char* name = "";
  dim3 grid, block;
  std::size_t dynamic_shared = 0;
  void (*thunk)(void*) = nullptr;
  void* closure = nullptr;
};

// Runs every block of a valid configuration under `schedule`. Returns "" or, on a
// kernel fault (Note [grid emulation]), what went wrong and where. The caller holds
// the runtime's lock: one grid at a time.
std::string run_grid(const GridLaunch& launch, const Schedule& schedule);

}  // namespace efsign::cuda_emu::detail
