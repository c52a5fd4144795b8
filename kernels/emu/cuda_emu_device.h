// kernels/emu/cuda_emu_device.h — CUDA C++ device code compiled as host C++: the grid,
// block and warp of a kernel emulated on one host thread (library efsign::cuda_emu).
// Included, instead of nvcc's built-ins, by kernels/cuda_device.h when the compiler is
// not nvcc; a .cu file written with EFSIGN_LAUNCH and EFSIGN_DYNAMIC_SHARED compiles
// unchanged with either.
//
// Note [grid emulation]
//   * Blocks run one after another (kernels/emu/efsign_emu.h chooses the order). The
//     threads of a block are coroutines on one host thread, each with its own stack
//     (so locals are per-thread registers); they take turns round-robin, each running
//     until it waits at __syncthreads, at a warp collective (__ballot_sync,
//     __shfl*_sync, __syncwarp) or exits. A warp collective completes when every lane
//     of its mask has reached one; __syncthreads when every thread that has not exited
//     has reached it.
//   * Misuse is a kernel fault (a sticky cudaErrorLaunchFailure naming the kernel,
//     block, thread and source line), never a hang or a silent result: a lane of the
//     mask that exited or waits at another collective or with another mask, a caller
//     outside its own mask, a shuffle from a lane outside the mask, a bad width, a
//     block in which no thread can move (deadlock), an exception out of the kernel.
//   * Static __shared__ variables are `static` (one per function: blocks and their
//     threads share one host thread, and launches run one at a time); they start as
//     zero, not as garbage as on a GPU. Dynamic shared memory is filled with 0xff
//     bytes before every block. Atomics and __threadfence are plain operations: no two
//     threads ever run at once. A kernel that waits for another block (a spin lock
//     across blocks) hangs here.
//   * Floating point: plain IEEE single/double operations (x86-64 SSE, aarch64), so
//     the __f*_rn intrinsics are exact twins of the GPU's provided the file is built
//     with FMA contraction off (-ffp-contract=off; efsign_kernels_emu does), as
//     sign_kernels.cu is built with -fmad=false for the GPU.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <algorithm>
#include <type_traits>

#include "cuda_runtime_api.h"

#if defined(__FAST_MATH__)
#error "the CUDA emulation needs IEEE arithmetic: do not build it with -ffast-math"
#endif
#if FLT_EVAL_METHOD != 0
#error "the CUDA emulation needs float arithmetic in float precision (FLT_EVAL_METHOD == 0, e.g. SSE2)"
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __shared__ static
#define __launch_bounds__(...)

namespace efsign::cuda_emu::detail {

extern uint3 g_thread_idx;
extern uint3 g_block_idx;
extern dim3 g_block_dim;
extern dim3 g_grid_dim;

enum class ShuffleKind { kIndex, kDown, kUp, kXor };

// The scheduler (device_emu.cpp). file/line: the kernel's source line, for messages.
std::uint32_t warp_ballot(std::uint32_t mask, bool predicate, const char* file, int line);
std::uint64_t warp_shuffle(ShuffleKind kind, std::uint32_t mask, std::uint64_t value, int arg, int width,
                           const char* file, int line);
void warp_sync(std::uint32_t mask, const char* file, int line);
void block_sync(const char* file, int line);
void* dynamic_shared_memory();

// Validates, runs and records one launch (cuda_runtime_emu.cpp): thunk(closure) is one
// thread's call of the kernel with its arguments.
void launch_kernel(const char* name, dim3 grid, dim3 block, std::size_t dynamic_shared, cudaStream_t stream,
                   void (*thunk)(void*), void* closure);

template <typename T>
struct Identity {
  using type = T;
};

// The first sizeof(To) bytes of `from`'s representation as a To (the rest zero):
// __float_as_uint & co., and the 64-bit payload of a shuffle.
template <typename To, typename From>
To bit_cast(From from) {
  static_assert(std::is_trivially_copyable_v<From> && std::is_trivially_copyable_v<To> && sizeof(From) <= 8 &&
                    sizeof(To) <= 8,
                "at most 8 bytes of plain data");
  To to{};
  std::memcpy(&to, &from, std::min(sizeof(To), sizeof(From)));
  return to;
}

// The callable that EFSIGN_LAUNCH yields: operator() takes the kernel's parameters (so
// arguments convert as in a call) and runs the grid; every thread gets its own copy.
template <typename... P>
class Launch {
 public:
  Launch(void (*kernel)(P...), const char* name, dim3 grid, dim3 block, std::size_t dynamic_shared,
         cudaStream_t stream)
      : kernel_(kernel), name_(name), grid_(grid), block_(block), dynamic_shared_(dynamic_shared), stream_(stream) {}
  void operator()(typename Identity<P>::type... args) const {
    auto call = [&] { kernel_(args...); };
    launch_kernel(name_, grid_, block_, dynamic_shared_, stream_,
                  [](void* c) { (*static_cast<decltype(call)*>(c))(); }, &call);
  }

 private:
  void (*kernel_)(P...);
  const char* name_;
  dim3 grid_, block_;
  std::size_t dynamic_shared_;
  cudaStream_t stream_;
};

template <typename... P>
Launch<P...> make_launch(void (*kernel)(P...), const char* name, dim3 grid, dim3 block, std::size_t dynamic_shared,
                         cudaStream_t stream) {
  return Launch<P...>(kernel, name, grid, block, dynamic_shared, stream);
}

}  // namespace efsign::cuda_emu::detail

#define EFSIGN_EMU_LAUNCH(kernel, grid, block, shmem, stream) \
  ::efsign::cuda_emu::detail::make_launch(kernel, #kernel, grid, block, shmem, stream)
#define EFSIGN_EMU_DYNAMIC_SHARED(T, name) \
  T* name = static_cast<T*>(::efsign::cuda_emu::detail::dynamic_shared_memory())

// ---- built-in variables (read-only views of the scheduler's current thread)
inline const uint3& threadIdx = ::efsign::cuda_emu::detail::g_thread_idx;
inline const uint3& blockIdx = ::efsign::cuda_emu::detail::g_block_idx;
inline const dim3& blockDim = ::efsign::cuda_emu::detail::g_block_dim;
inline const dim3& gridDim = ::efsign::cuda_emu::detail::g_grid_dim;
constexpr int warpSize = 32;

// ---- synchronisation and warp collectives
inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  ::efsign::cuda_emu::detail::block_sync(file, line);
}
inline void __syncwarp(unsigned int mask = 0xffffffffu, const char* file = __builtin_FILE(),
                       int line = __builtin_LINE()) {
  ::efsign::cuda_emu::detail::warp_sync(mask, file, line);
}
inline unsigned int __ballot_sync(unsigned int mask, int predicate, const char* file = __builtin_FILE(),
                                  int line = __builtin_LINE()) {
  return ::efsign::cuda_emu::detail::warp_ballot(mask, predicate != 0, file, line);
}
inline int __any_sync(unsigned int mask, int predicate, const char* file = __builtin_FILE(),
                      int line = __builtin_LINE()) {
  return ::efsign::cuda_emu::detail::warp_ballot(mask, predicate != 0, file, line) != 0;
}
inline int __all_sync(unsigned int mask, int predicate, const char* file = __builtin_FILE(),
                      int line = __builtin_LINE()) {
  return ::efsign::cuda_emu::detail::warp_ballot(mask, predicate != 0, file, line) == mask;
}

#define EFSIGN_EMU_SHUFFLE(fn, kind, ArgType)                                                                  \
  template <typename T>                                                                                        \
  T fn(unsigned int mask, T var, ArgType arg, int width = 32, const char* file = __builtin_FILE(),            \
       int line = __builtin_LINE()) {                                                                          \
    namespace d = ::efsign::cuda_emu::detail;                                                                  \
    return d::bit_cast<T>(d::warp_shuffle(kind, mask, d::bit_cast<std::uint64_t>(var), static_cast<int>(arg), width, \
                                          file, line));                                                        \
  }
EFSIGN_EMU_SHUFFLE(__shfl_sync, ::efsign::cuda_emu::detail::ShuffleKind::kIndex, int)
EFSIGN_EMU_SHUFFLE(__shfl_down_sync, ::efsign::cuda_emu::detail::ShuffleKind::kDown, unsigned int)
EFSIGN_EMU_SHUFFLE(__shfl_up_sync, ::efsign::cuda_emu::detail::ShuffleKind::kUp, unsigned int)
EFSIGN_EMU_SHUFFLE(__shfl_xor_sync, ::efsign::cuda_emu::detail::ShuffleKind::kXor, int)
#undef EFSIGN_EMU_SHUFFLE

inline void __threadfence() {}
inline void __threadfence_block() {}

// ---- atomics (no two emulated threads run at once)
template <typename T>
T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}
inline unsigned int atomicInc(unsigned int* address, unsigned int limit) {
  const unsigned int old = *address;
  *address = old >= limit ? 0u : old + 1u;
  return old;
}
template <typename T>
T atomicExch(T* address, T value) {
  const T old = *address;
  *address = value;
  return old;
}
template <typename T>
T atomicCAS(T* address, T compare, T value) {
  const T old = *address;
  if (old == compare) *address = value;
  return old;
}

// ---- loads through the read-only / L2-only caches
template <typename T>
T __ldg(const T* p) {
  return *p;
}
template <typename T>
T __ldcg(const T* p) {
  return *p;
}

// ---- arithmetic: IEEE round-to-nearest operations, never contracted (see the Note)
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline float __double2float_rn(double a) { return static_cast<float>(a); }
inline unsigned int __float_as_uint(float f) { return ::efsign::cuda_emu::detail::bit_cast<unsigned int>(f); }
inline float __uint_as_float(unsigned int u) { return ::efsign::cuda_emu::detail::bit_cast<float>(u); }
inline int __float_as_int(float f) { return ::efsign::cuda_emu::detail::bit_cast<int>(f); }
inline float __int_as_float(int i) { return ::efsign::cuda_emu::detail::bit_cast<float>(i); }
inline int __popc(unsigned int x) { return __builtin_popcount(x); }

using std::isfinite;
using std::max;
using std::min;
