// kernels/emu/efsign_emu.h — controls that only the CUDA emulation has (library
// efsign::cuda_emu; Note [CUDA emulation] in cuda_runtime_api.h, Note [grid emulation]
// in cuda_emu_device.h). For tests: which kernels ran on which stream, and in which
// order blocks and threads are scheduled.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "cuda_runtime_api.h"

namespace efsign::cuda_emu {

// One kernel launch that reached the device (a valid configuration).
struct LaunchRecord {
  std::string kernel;  // as written in EFSIGN_LAUNCH
  dim3 grid, block;
  std::size_t dynamic_shared = 0;
  cudaStream_t stream = nullptr;  // as given: 0 is the legacy default stream
};

// The launches since the last clear_launches(), oldest first (at most the last
// kMaxLaunchRecords of them; launch_count() counts all).
constexpr std::size_t kMaxLaunchRecords = 4096;
std::vector<LaunchRecord> launches();
std::uint64_t launch_count();
void clear_launches();

// The order in which the blocks of a grid run (one after another), and the order in
// which the threads of a block take turns. Results of a correct kernel do not depend
// on either; tests run kernels under several orders to show that they do not.
enum class Order { kForward, kReverse, kShuffled };
struct Schedule {
  Order blocks = Order::kForward;
  Order threads = Order::kForward;
  std::uint64_t seed = 0;  // for kShuffled
};
void set_schedule(const Schedule& schedule);
Schedule schedule();

// How threads switch: "x86-64 assembly" or "ucontext" (other CPUs, or the
// EFSIGN_EMU_UCONTEXT build option).
const char* context_switch_name();

}  // namespace efsign::cuda_emu
