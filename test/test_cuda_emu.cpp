// The CUDA emulation itself (kernels/emu, Note [CUDA emulation] and Note [grid
// emulation]): built-in variables, barriers, warp collectives and shared memory give
// what CUDA specifies; misuse is a loud, sticky kernel fault (never a hang); the
// runtime checks pointers, handles and configurations. Built twice: with the
// assembly context switch (test_cuda_emu) and with ucontext (test_cuda_emu_ucontext).
#include <catch2/catch.hpp>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda_check.h"
#include "cuda_device.h"
#include "device_buffer.h"
#include "efsign_emu.h"

namespace emu = efsign::cuda_emu;
using efsign::kernels::DeviceBuffer;

namespace {

constexpr unsigned kFull = 0xffffffffu;

// ---- kernels that record what the emulation gives them

// out[global thread] = its linear ids and the launch shape, to compare with the CUDA rules.
__global__ void record_indices(unsigned* out) {
  const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned per_block = blockDim.x * blockDim.y * blockDim.z;
  out[b * per_block + t] = b * 100000u + t;
}

// Per thread: ballot of (lane % 3 == 0), a broadcast of lane 5, the down/up/xor
// shuffles of lane*10 (width 32 and 8), and a shuffle of a double.
__global__ void warp_collectives(unsigned* ballot, int* idx, int* down, int* up, int* xr, int* down8, int* idx_neg,
                                 double* dbl) {
  const unsigned i = threadIdx.x;
  const int lane = static_cast<int>(i & 31);
  ballot[i] = __ballot_sync(kFull, lane % 3 == 0);
  idx[i] = __shfl_sync(kFull, lane * 10, 5);
  down[i] = __shfl_down_sync(kFull, lane * 10, 3);
  up[i] = __shfl_up_sync(kFull, lane * 10, 2);
  xr[i] = __shfl_xor_sync(kFull, lane * 10, 6);
  down8[i] = __shfl_down_sync(kFull, lane * 10, 3, 8);
  idx_neg[i] = __shfl_sync(kFull, lane * 10, -1, 8);  // srcLane modulo width
  dbl[i] = __shfl_xor_sync(kFull, 0.5 + lane, 1);
}

// Lanes 0-15 take a ballot among themselves (a partial mask), then all sync.
__global__ void partial_mask(unsigned* out) {
  const int lane = static_cast<int>(threadIdx.x & 31);
  unsigned v = 0;
  if (lane < 16) v = __ballot_sync(0x0000ffffu, lane & 1);
  __syncwarp();
  out[threadIdx.x] = v;
}

// Reverses `in` through static shared memory (needs the barrier), and reports what
// dynamic shared memory held before anyone wrote it (0xff bytes: garbage).
__global__ void reverse_block(const int* in, int* out, unsigned* dynamic_before) {
  __shared__ int tile[128];
  EFSIGN_DYNAMIC_SHARED(unsigned, scratch);
  const unsigned t = threadIdx.x;
  if (t == 0) dynamic_before[blockIdx.x] = scratch[0];
  __syncthreads();
  scratch[t] = t;
  tile[t] = in[blockIdx.x * blockDim.x + t];
  __syncthreads();
  out[blockIdx.x * blockDim.x + t] = tile[blockDim.x - 1 - t] + static_cast<int>(scratch[blockDim.x - 1 - t]) * 0;
}

// Threads that exited count as arrived at later barriers (CUDA on sm_70+).
__global__ void barrier_after_exit(int* out) {
  if (threadIdx.x >= 64) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

// Each block takes a ticket: the order in which blocks ran.
__global__ void block_tickets(unsigned* counter, unsigned* ticket) {
  if (threadIdx.x == 0) ticket[blockIdx.x] = atomicAdd(counter, 1u);
}

// ---- kernels that misuse the emulation (each must fault)

__global__ void ballot_with_exited_lane(unsigned* out) {
  if ((threadIdx.x & 31) == 31) return;
  out[threadIdx.x] = __ballot_sync(kFull, 1);
}

__global__ void ballot_and_shuffle_mixed(unsigned* out) {
  if ((threadIdx.x & 31) == 0)
    out[threadIdx.x] = static_cast<unsigned>(__shfl_sync(kFull, 1, 0));
  else
    out[threadIdx.x] = __ballot_sync(kFull, 1);
}

__global__ void lane_outside_its_mask(unsigned* out) { out[threadIdx.x] = __ballot_sync(0x1u, 1); }

__global__ void barrier_versus_ballot(unsigned* out) {
  if (threadIdx.x == 0) __syncthreads();
  out[threadIdx.x] = __ballot_sync(kFull, 1);
}

__global__ void throws(unsigned* out) {
  if (threadIdx.x == 7) throw std::runtime_error("thrown by thread 7");
  out[threadIdx.x] = 1;
}

// Runs a misusing kernel; returns cudaGetErrorString's text after checking that the
// fault is sticky, then resets the device (which frees `out`, so no DeviceBuffer).
template <typename Kernel>
std::string expect_fault(Kernel kernel, const char* name, unsigned threads) {
  void* out = nullptr;
  REQUIRE(cudaMalloc(&out, threads * sizeof(unsigned)) == cudaSuccess);
  kernel(static_cast<unsigned*>(out), threads);
  const cudaError_t rc = cudaGetLastError();
  INFO(name);
  REQUIRE(rc == cudaErrorLaunchFailure);
  std::string what = cudaGetErrorString(rc);
  // Sticky until reset, as a faulting kernel on a GPU.
  CHECK(cudaDeviceSynchronize() == cudaErrorLaunchFailure);
  CHECK(cudaGetLastError() == cudaErrorLaunchFailure);
  std::vector<unsigned> host(threads);
  CHECK(cudaMemcpy(host.data(), out, threads * sizeof(unsigned), cudaMemcpyDeviceToHost) ==
        cudaErrorLaunchFailure);
  CHECK(cudaDeviceReset() == cudaSuccess);
  CHECK(cudaGetLastError() == cudaSuccess);
  return what;
}

#define LAUNCH_FN(kernel)                                             \
  [](unsigned* out, unsigned threads) {                               \
    EFSIGN_LAUNCH(kernel, 1, threads, 0, nullptr)(out);               \
  }

}  // namespace

TEST_CASE("emulation: threadIdx, blockIdx, blockDim and gridDim in 1, 2 and 3 dimensions", "[emu]") {
  const dim3 shapes[][2] = {{dim3(3), dim3(64)}, {dim3(2, 3), dim3(8, 4)}, {dim3(2, 2, 2), dim3(4, 2, 3)}};
  for (const auto& s : shapes) {
    const unsigned blocks = s[0].x * s[0].y * s[0].z, per_block = s[1].x * s[1].y * s[1].z;
    DeviceBuffer<unsigned> out(blocks * per_block);
    EFSIGN_LAUNCH(record_indices, s[0], s[1], 0, nullptr)(out.get());
    EFSIGN_CUDA_CHECK_LAUNCH();
    std::vector<unsigned> want(blocks * per_block);
    for (unsigned b = 0; b < blocks; ++b)
      for (unsigned t = 0; t < per_block; ++t) want[b * per_block + t] = b * 100000u + t;
    CHECK(out.download() == want);
  }
}

TEST_CASE("emulation: ballots and shuffles give CUDA's results, widths and partial masks included", "[emu]") {
  const unsigned n = 64;  // two warps
  DeviceBuffer<unsigned> ballot(n), partial(n);
  DeviceBuffer<int> idx(n), down(n), up(n), xr(n), down8(n), idx_neg(n);
  DeviceBuffer<double> dbl(n);
  EFSIGN_LAUNCH(warp_collectives, 1, n, 0, nullptr)(ballot.get(), idx.get(), down.get(), up.get(), xr.get(),
                                                    down8.get(), idx_neg.get(), dbl.get());
  EFSIGN_CUDA_CHECK_LAUNCH();
  EFSIGN_LAUNCH(partial_mask, 1, n, 0, nullptr)(partial.get());
  EFSIGN_CUDA_CHECK_LAUNCH();
  unsigned thirds = 0;
  for (int lane = 0; lane < 32; lane += 3) thirds |= 1u << lane;
  const auto b = ballot.download(), p = partial.download();
  const auto i = idx.download(), d = down.download(), u = up.download(), x = xr.download(), d8 = down8.download(),
             in = idx_neg.download();
  const auto db = dbl.download();
  for (unsigned t = 0; t < n; ++t) {
    const int lane = static_cast<int>(t & 31), seg = lane & ~7;
    INFO("thread " << t);
    CHECK(b[t] == thirds);
    CHECK(i[t] == 50);
    CHECK(d[t] == (lane + 3 < 32 ? lane + 3 : lane) * 10);
    CHECK(u[t] == (lane >= 2 ? lane - 2 : lane) * 10);
    CHECK(x[t] == (lane ^ 6) * 10);
    CHECK(d8[t] == ((lane & 7) + 3 < 8 ? lane + 3 : lane) * 10);
    CHECK(in[t] == (seg + 7) * 10);
    CHECK(db[t] == 0.5 + (lane ^ 1));
    CHECK(p[t] == (lane < 16 ? 0xaaaau : 0u));
  }
}

TEST_CASE("emulation: __syncthreads, static and dynamic shared memory, exited threads at a barrier", "[emu]") {
  const unsigned blocks = 3, threads = 128;
  std::vector<int> in(blocks * threads);
  std::iota(in.begin(), in.end(), 0);
  DeviceBuffer<int> d_in(in), d_out(blocks * threads), flags(128);
  DeviceBuffer<unsigned> before(blocks);
  EFSIGN_LAUNCH(reverse_block, blocks, threads, threads * sizeof(unsigned), nullptr)(d_in.get(), d_out.get(),
                                                                                     before.get());
  EFSIGN_CUDA_CHECK_LAUNCH();
  std::vector<int> want(in.size());
  for (unsigned b = 0; b < blocks; ++b)
    for (unsigned t = 0; t < threads; ++t) want[b * threads + t] = in[b * threads + threads - 1 - t];
  CHECK(d_out.download() == want);
  CHECK(before.download() == std::vector<unsigned>(blocks, 0xffffffffu));  // fresh for every block

  EFSIGN_CUDA_CHECK(cudaMemset(flags.get(), 0, 128 * sizeof(int)));
  EFSIGN_LAUNCH(barrier_after_exit, 1, 128, 0, nullptr)(flags.get());
  EFSIGN_CUDA_CHECK_LAUNCH();
  std::vector<int> f = flags.download();
  CHECK(std::count(f.begin(), f.begin() + 64, 1) == 64);
  CHECK(std::count(f.begin() + 64, f.end(), 0) == 64);
}

TEST_CASE("emulation: blocks run in the order the schedule asks for", "[emu]") {
  const unsigned blocks = 40;
  for (emu::Order order : {emu::Order::kForward, emu::Order::kReverse, emu::Order::kShuffled}) {
    INFO("order " << static_cast<int>(order));
    DeviceBuffer<unsigned> counter(1), ticket(blocks);
    EFSIGN_CUDA_CHECK(cudaMemset(counter.get(), 0, sizeof(unsigned)));
    emu::set_schedule({order, order, 7});
    EFSIGN_LAUNCH(block_tickets, blocks, 64, 0, nullptr)(counter.get(), ticket.get());
    emu::set_schedule({});
    EFSIGN_CUDA_CHECK_LAUNCH();
    const std::vector<unsigned> t = ticket.download();
    std::vector<unsigned> sorted = t;
    std::sort(sorted.begin(), sorted.end());
    std::vector<unsigned> all(blocks);
    std::iota(all.begin(), all.end(), 0u);
    REQUIRE(sorted == all);  // every block ran once
    std::vector<unsigned> reversed(all.rbegin(), all.rend());
    if (order == emu::Order::kForward) CHECK(t == all);
    if (order == emu::Order::kReverse) CHECK(t == reversed);
    if (order == emu::Order::kShuffled) CHECK((t != all && t != reversed));
  }
}

TEST_CASE("emulation: misuse of barriers and warp collectives is a sticky launch failure that says where", "[emu]") {
  std::string what = expect_fault(LAUNCH_FN(ballot_with_exited_lane), "exited lane", 64);
  CHECK(what.find("deadlock") != std::string::npos);
  CHECK(what.find("exited") != std::string::npos);
  CHECK(what.find("ballot_with_exited_lane") != std::string::npos);

  what = expect_fault(LAUNCH_FN(ballot_and_shuffle_mixed), "ballot and shuffle", 32);
  CHECK(what.find("__shfl_sync") != std::string::npos);
  CHECK(what.find("__ballot_sync") != std::string::npos);
  CHECK(what.find("test_cuda_emu.cpp:") != std::string::npos);  // the kernel's source line

  what = expect_fault(LAUNCH_FN(lane_outside_its_mask), "lane outside its mask", 32);
  CHECK(what.find("not in the mask") != std::string::npos);

  what = expect_fault(LAUNCH_FN(barrier_versus_ballot), "barrier versus ballot", 64);
  CHECK(what.find("deadlock") != std::string::npos);
  CHECK(what.find("__syncthreads") != std::string::npos);

  what = expect_fault(LAUNCH_FN(throws), "exception", 32);
  CHECK(what.find("thrown by thread 7") != std::string::npos);
}

TEST_CASE("emulation: bad launch configurations fail the launch, not the device", "[emu]") {
  DeviceBuffer<unsigned> out(64);
  const struct {
    dim3 grid, block;
    size_t shared;
  } bad[] = {{dim3(1), dim3(1025), 0},   {dim3(0), dim3(32), 0},         {dim3(1), dim3(32, 32, 2), 0},
             {dim3(1, 65536), dim3(32), 0}, {dim3(1), dim3(32), 48 * 1024 + 1}};
  for (const auto& c : bad) {
    emu::clear_launches();
    EFSIGN_LAUNCH(record_indices, c.grid, c.block, c.shared, nullptr)(out.get());
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
    CHECK(cudaGetLastError() == cudaSuccess);  // not sticky
    CHECK(emu::launches().empty());
  }
  cudaStream_t unknown = reinterpret_cast<cudaStream_t>(&out);
  EFSIGN_LAUNCH(record_indices, 1, 32, 0, unknown)(out.get());
  CHECK(cudaGetLastError() == cudaErrorInvalidResourceHandle);
}

TEST_CASE("emulation: the runtime checks copy directions, ranges and handles", "[emu]") {
  int count = 0;
  REQUIRE(cudaGetDeviceCount(&count) == cudaSuccess);
  CHECK(count == 1);
  CHECK(cudaSetDevice(1) == cudaErrorInvalidDevice);
  CHECK(cudaGetLastError() == cudaErrorInvalidDevice);
  CHECK(cudaSetDevice(0) == cudaSuccess);

  void* dev = nullptr;
  void* pinned = nullptr;
  REQUIRE(cudaMalloc(&dev, 64) == cudaSuccess);
  REQUIRE(cudaHostAlloc(&pinned, 64, cudaHostAllocDefault) == cudaSuccess);
  CHECK(reinterpret_cast<std::uintptr_t>(dev) % 256 == 0);
  std::vector<char> host(64, 1);
  CHECK(cudaMemcpy(dev, host.data(), 64, cudaMemcpyHostToDevice) == cudaSuccess);
  CHECK(cudaMemcpy(pinned, dev, 64, cudaMemcpyDeviceToHost) == cudaSuccess);
  CHECK(cudaMemcpy(host.data(), pinned, 64, cudaMemcpyHostToHost) == cudaSuccess);
  CHECK(cudaMemcpy(dev, pinned, 64, cudaMemcpyDefault) == cudaSuccess);
  // Wrong direction, overrun, memset of host memory, unknown pointers.
  CHECK(cudaMemcpy(host.data(), dev, 64, cudaMemcpyHostToDevice) == cudaErrorInvalidValue);
  CHECK(std::string(cudaGetErrorString(cudaErrorInvalidValue)).find("HostToDevice") != std::string::npos);
  CHECK(cudaMemcpy(dev, host.data(), 64, cudaMemcpyDeviceToHost) == cudaErrorInvalidValue);
  CHECK(cudaMemcpy(dev, host.data(), 65, cudaMemcpyHostToDevice) == cudaErrorInvalidValue);
  CHECK(std::string(cudaGetErrorString(cudaErrorInvalidValue)).find("overrun") != std::string::npos);
  CHECK(cudaMemsetAsync(static_cast<char*>(dev) + 1, 0, 64, nullptr) == cudaErrorInvalidValue);
  CHECK(cudaMemset(host.data(), 0, 4) == cudaErrorInvalidValue);
  CHECK(cudaFree(host.data()) == cudaErrorInvalidDevicePointer);
  CHECK(cudaFree(pinned) == cudaErrorInvalidDevicePointer);  // not a cudaMalloc pointer
  CHECK(cudaGetLastError() == cudaErrorInvalidDevicePointer);
  CHECK(cudaGetLastError() == cudaSuccess);
  CHECK(cudaFree(dev) == cudaSuccess);
  CHECK(cudaFree(dev) == cudaErrorInvalidDevicePointer);  // twice
  CHECK(cudaFreeHost(pinned) == cudaSuccess);
  cudaGetLastError();

  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr, untimed = nullptr;
  REQUIRE(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess);
  REQUIRE(cudaEventCreate(&start) == cudaSuccess);
  REQUIRE(cudaEventCreate(&stop) == cudaSuccess);
  REQUIRE(cudaEventCreateWithFlags(&untimed, cudaEventDisableTiming) == cudaSuccess);
  float ms = -1.0f;
  CHECK(cudaEventElapsedTime(&ms, start, stop) == cudaErrorInvalidResourceHandle);  // not recorded yet
  CHECK(cudaEventRecord(start, stream) == cudaSuccess);
  CHECK(cudaEventRecord(stop, stream) == cudaSuccess);
  CHECK(cudaEventRecord(untimed, stream) == cudaSuccess);
  CHECK(cudaEventElapsedTime(&ms, start, stop) == cudaSuccess);
  CHECK(ms >= 0.0f);
  CHECK(cudaEventElapsedTime(&ms, start, untimed) == cudaErrorInvalidResourceHandle);
  CHECK(cudaStreamWaitEvent(stream, stop, 0) == cudaSuccess);
  CHECK(cudaEventQuery(stop) == cudaSuccess);
  CHECK(cudaStreamSynchronize(stream) == cudaSuccess);
  CHECK(cudaEventDestroy(start) == cudaSuccess);
  CHECK(cudaEventDestroy(start) == cudaErrorInvalidResourceHandle);
  CHECK(cudaEventRecord(start, stream) == cudaErrorInvalidResourceHandle);
  CHECK(cudaEventDestroy(stop) == cudaSuccess);
  CHECK(cudaEventDestroy(untimed) == cudaSuccess);
  CHECK(cudaStreamDestroy(stream) == cudaSuccess);
  CHECK(cudaStreamSynchronize(stream) == cudaErrorInvalidResourceHandle);
  CHECK(std::string(cudaGetErrorName(cudaErrorInvalidResourceHandle)) == "cudaErrorInvalidResourceHandle");
  cudaGetLastError();
}

TEST_CASE("emulation: how fast threads switch", "[emu]") {
  // A ballot per element, as compress: every lane switches once per word.
  const unsigned blocks = 64, threads = 256, words = 32;
  DeviceBuffer<unsigned> out(blocks * threads);
  auto kernel = [](unsigned* o) {
    unsigned acc = 0;
    for (unsigned w = 0; w < 32; ++w) acc += __ballot_sync(kFull, (threadIdx.x + w) & 1);
    o[blockIdx.x * blockDim.x + threadIdx.x] = acc;
  };
  void (*k)(unsigned*) = kernel;
  const auto t0 = std::chrono::steady_clock::now();
  EFSIGN_LAUNCH(k, blocks, threads, 0, nullptr)(out.get());
  EFSIGN_CUDA_CHECK_LAUNCH();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double switches = static_cast<double>(blocks) * threads * words;
  std::printf("emulation (%s): %.1f ns per thread switch (%.0f switches in %.3f s)\n", emu::context_switch_name(),
              1e9 * s / switches, switches, s);
  CHECK(out.download() == std::vector<unsigned>(blocks * threads, 16u * 0x55555555u + 16u * 0xaaaaaaaau));
}
