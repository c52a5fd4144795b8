// kernels/emu/cuda_runtime.h — the emulated <cuda_runtime.h>: the runtime API
// (cuda_runtime_api.h, Note [CUDA emulation]) plus the typed cudaMalloc overload the
// real header adds.
#pragma once

#include "cuda_runtime_api.h"

template <typename T>
cudaError_t cudaMalloc(T** ptr, size_t size) {
  return cudaMalloc(reinterpret_cast<void**>(ptr), size);
}
