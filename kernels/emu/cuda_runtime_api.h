// kernels/emu/cuda_runtime_api.h — the CUDA runtime API subset efsign uses, emulated on
// the host (library efsign::cuda_emu, kernels/emu/cuda_runtime_emu.cpp). A target that
// puts kernels/emu FIRST on its include path compiles code written against the real
// <cuda_runtime_api.h> (kernels/sign_kernels.h, cuda_check.h, device_buffer.h, host-side
// wrappers) unchanged, and runs it without a GPU, a CUDA toolkit or a driver.
//
// Note [CUDA emulation]
//   * One emulated device (cudaGetDeviceCount = 1). "Device" memory is host memory
//     (256-byte aligned, filled with 0xff bytes when allocated, as real device memory
//     holds garbage: a float reads as NaN, a counter as 0xffffffff). Every call is
//     synchronous: a copy, memset or kernel has finished when the call returns, so
//     streams and events only check their handles (events record host time).
//   * Misuse is an error, not silently accepted: a cudaMemcpy whose kind does not
//     match where the pointers live (HostToDevice into host memory, ...), a range that
//     overruns its allocation, cudaFree of an unknown pointer, an unknown stream or
//     event handle, a launch configuration out of range.
//   * A kernel that misuses the grid/block/warp emulation (kernels/emu/cuda_emu_device.h:
//     a __ballot_sync not reached by every lane of its mask, a deadlock, an exception)
//     is a sticky cudaErrorLaunchFailure, as a faulting kernel is on a GPU: it is
//     returned by the launch's cudaGetLastError and by every later call until
//     cudaDeviceReset(). cudaGetErrorString adds the details of the latest error with
//     that code (for a fault: kernel, block, thread, source line); its text stays
//     valid until the next cudaGetErrorString of the same code.
//   * The functions have C++ linkage (the real runtime's have C linkage), so an object
//     built against the real headers can never bind to these, nor these to libcudart:
//     mixing the two in one binary fails to link instead of running the wrong one.
//     Targets that link efsign::cuda_emu must not link CUDA::cudart.
//   * Thread-safe: calls (and kernels) from several host threads run one at a time.
// kernels/emu/efsign_emu.h has the emulation-only controls (launch records, schedule).
#pragma once

#include <cstddef>
#include <cstdint>

// Tells code (sign_kernels.h) that it is built against the emulation.
#ifndef EFSIGN_CUDA_EMULATION
#define EFSIGN_CUDA_EMULATION 1
#endif

// The numeric values are the real runtime's.
enum cudaError {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorInvalidMemcpyDirection = 21,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorNotReady = 600,
  cudaErrorLaunchFailure = 719,
};
typedef enum cudaError cudaError_t;

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};

struct CUstream_st;
typedef struct CUstream_st* cudaStream_t;
struct CUevent_st;
typedef struct CUevent_st* cudaEvent_t;

#define cudaStreamLegacy ((cudaStream_t)0x1)
#define cudaStreamPerThread ((cudaStream_t)0x2)
#define cudaStreamDefault 0x00
#define cudaStreamNonBlocking 0x01
#define cudaEventDefault 0x00
#define cudaEventBlockingSync 0x01
#define cudaEventDisableTiming 0x02
#define cudaHostAllocDefault 0x00
#define cudaHostAllocPortable 0x01
#define cudaHostAllocMapped 0x02
#define cudaHostAllocWriteCombined 0x04

struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}  // NOLINT: implicit, as CUDA's
  constexpr operator uint3() const { return uint3{x, y, z}; }
};

struct alignas(16) float4 {
  float x, y, z, w;
};

// The fields of the real cudaDeviceProp that the emulation fills (a subset).
struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  size_t sharedMemPerBlock;
  int warpSize;
  int maxThreadsPerBlock;
  int maxThreadsDim[3];
  int maxGridSize[3];
  int multiProcessorCount;
  int major;
  int minor;
};

cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t error);
const char* cudaGetErrorName(cudaError_t error);

cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaDeviceReset();
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes);

cudaError_t cudaMalloc(void** ptr, size_t size);
cudaError_t cudaFree(void* ptr);
cudaError_t cudaHostAlloc(void** ptr, size_t size, unsigned int flags);
cudaError_t cudaMallocHost(void** ptr, size_t size);
cudaError_t cudaFreeHost(void* ptr);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind, cudaStream_t stream = 0);
cudaError_t cudaMemset(void* ptr, int value, size_t count);
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t stream = 0);

cudaError_t cudaStreamCreate(cudaStream_t* stream);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaStreamQuery(cudaStream_t stream);
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags = 0);

cudaError_t cudaEventCreate(cudaEvent_t* event);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = 0);
cudaError_t cudaEventQuery(cudaEvent_t event);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);
