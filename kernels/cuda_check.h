// kernels/cuda_check.h — error checking for CUDA runtime calls. Plain C++ (no nvcc
// needed): includes <cuda_runtime_api.h> only.
//
//   EFSIGN_CUDA_CHECK(call)      evaluates `call` once; on anything but cudaSuccess
//                                throws efsign::Error naming the call, file:line, rank, host.
//   EFSIGN_CUDA_CHECK_LAUNCH()   the same for the kernel launch just issued (reads and
//                                clears cudaGetLastError; launch-configuration errors).
#pragma once

#include <cuda_runtime_api.h>

#include "efsign/error.h"

#define EFSIGN_CUDA_CHECK_AS(call, text)                                                     \
  do {                                                                                      \
    const cudaError_t efsign_cuda_rc_ = (call);                                             \
    if (efsign_cuda_rc_ != cudaSuccess)                                                     \
      ::efsign::throw_cuda_error(static_cast<int>(efsign_cuda_rc_), cudaGetErrorString(efsign_cuda_rc_), \
                                 text, __FILE__, __LINE__);                                 \
  } while (0)

#define EFSIGN_CUDA_CHECK(call) EFSIGN_CUDA_CHECK_AS(call, #call)

#define EFSIGN_CUDA_CHECK_LAUNCH() EFSIGN_CUDA_CHECK_AS(cudaGetLastError(), "kernel launch (cudaGetLastError)")
