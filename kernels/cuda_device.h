// kernels/cuda_device.h — what a .cu file of efsign needs beyond CUDA C++ so that the
// SAME source builds for the GPU with nvcc and, as host C++, against the CUDA
// emulation (kernels/emu, Note [grid emulation] in kernels/emu/cuda_emu_device.h):
//
//   EFSIGN_LAUNCH(kernel, grid, block, shmem, stream)(args...)
//       kernel<<<grid, block, shmem, stream>>>(args...). `kernel` is one token or
//       template-id without a comma (name an alias for a kernel template with two
//       arguments); follow it with EFSIGN_CUDA_CHECK_LAUNCH().
//   EFSIGN_DYNAMIC_SHARED(T, name);
//       declares `name`, the block's dynamic shared memory viewed as T[] (16-byte
//       aligned), as `extern __shared__ T name[]` would.
#pragma once

#if defined(__CUDACC__)

#define EFSIGN_LAUNCH(kernel, grid, block, shmem, stream) kernel<<<grid, block, shmem, stream>>>
#define EFSIGN_DYNAMIC_SHARED(T, name)                            \
  extern __shared__ __align__(16) unsigned char efsign_dynamic_shared_[]; \
  T* name = reinterpret_cast<T*>(efsign_dynamic_shared_)

#else

#include "emu/cuda_emu_device.h"
#define EFSIGN_LAUNCH(kernel, grid, block, shmem, stream) EFSIGN_EMU_LAUNCH(kernel, grid, block, shmem, stream)
#define EFSIGN_DYNAMIC_SHARED(T, name) EFSIGN_EMU_DYNAMIC_SHARED(T, name)

#endif
