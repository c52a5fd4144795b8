// kernels/emu/cuda_runtime_emu.cpp — the emulated CUDA runtime of Note [CUDA
// emulation] (cuda_runtime_api.h): host memory as device memory, synchronous copies
// and kernels, checked handles and pointers, sticky kernel faults.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <iterator>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <type_traits>

#include "cuda_runtime_api.h"
#include "efsign_emu.h"
#include "emu_internal.h"

struct CUstream_st {
  explicit CUstream_st(unsigned int f) : flags(f) {}
  unsigned int flags;
};
struct CUevent_st {
  explicit CUevent_st(unsigned int f) : flags(f) {}
  unsigned int flags;
  bool recorded = false;
  std::chrono::steady_clock::time_point when;
};

namespace efsign::cuda_emu {
namespace {

constexpr std::size_t kDeviceAlignment = 256;  // as cudaMalloc's
constexpr std::size_t kMaxDynamicShared = 48 << 10;
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxBlockDim[3] = {1024, 1024, 64};
constexpr unsigned kMaxGridDim[3] = {2147483647u, 65535u, 65535u};

enum class Where { kHost, kDevice, kPinned, kOverrun };

struct Allocation {
  std::size_t size = 0;
  bool device = false;
};

struct Runtime {
  std::mutex mu;
  std::map<std::uintptr_t, Allocation> allocations;
  std::set<cudaStream_t> streams;
  std::set<cudaEvent_t> events;
  cudaError_t last = cudaSuccess;
  cudaError_t sticky = cudaSuccess;  // a kernel fault, until cudaDeviceReset
  std::map<int, std::string> details;  // the latest explanation per error code
  std::map<int, std::string> messages;  // what cudaGetErrorString returned last, per code
  std::deque<LaunchRecord> records;
  std::uint64_t launch_count = 0;
  Schedule schedule;
};

// Never destroyed: DeviceBuffers with static storage may be freed after main returns.
Runtime& rt() {
  static Runtime* r = new Runtime;
  return *r;
}

using Lock = std::lock_guard<std::mutex>;

cudaError_t fail(Runtime& r, cudaError_t code, const std::string& detail) {
  r.last = code;
  r.details[code] = detail;
  return code;
}

const char* base_message(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
  }
  return "unrecognized error code";
}

const char* error_name(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
  }
  return "cudaErrorUnknown";
}

std::string pointer_text(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", p);
  return buf;
}

// Where [p, p + count) lives: inside one allocation (device or pinned), overrunning
// one, or outside all of them (ordinary host memory).
Where where(const Runtime& r, const void* p, std::size_t count) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  auto it = r.allocations.upper_bound(a);
  if (it == r.allocations.begin()) return Where::kHost;
  --it;
  if (a >= it->first + it->second.size && !(it->second.size == 0 && a == it->first)) return Where::kHost;
  if (count > it->first + it->second.size - a) return Where::kOverrun;
  return it->second.device ? Where::kDevice : Where::kPinned;
}

bool valid_stream(const Runtime& r, cudaStream_t s) {
  return s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread || r.streams.count(s) != 0;
}

cudaError_t check_stream(Runtime& r, cudaStream_t s, const char* who) {
  if (valid_stream(r, s)) return cudaSuccess;
  return fail(r, cudaErrorInvalidResourceHandle, std::string(who) + ": unknown stream " + pointer_text(s));
}

cudaError_t check_event(Runtime& r, cudaEvent_t e, const char* who) {
  if (r.events.count(e)) return cudaSuccess;
  return fail(r, cudaErrorInvalidResourceHandle, std::string(who) + ": unknown event " + pointer_text(e));
}

const char* kind_text(cudaMemcpyKind kind) {
  switch (kind) {
    case cudaMemcpyHostToHost: return "HostToHost";
    case cudaMemcpyHostToDevice: return "HostToDevice";
    case cudaMemcpyDeviceToHost: return "DeviceToHost";
    case cudaMemcpyDeviceToDevice: return "DeviceToDevice";
    case cudaMemcpyDefault: break;
  }
  return "Default";
}

// Creates a stream or event with `flags` (of the `known` bits) and registers it.
template <typename Handle>
cudaError_t create_handle(Runtime& r, std::set<Handle>& live, Handle* out, unsigned int flags, unsigned int known,
                          const char* who) {
  if (!out) return fail(r, cudaErrorInvalidValue, std::string(who) + ": null pointer");
  if (flags & ~known) return fail(r, cudaErrorInvalidValue, std::string(who) + ": unknown flags");
  if (r.sticky) return r.sticky;
  *out = new std::remove_pointer_t<Handle>(flags);
  live.insert(*out);
  return cudaSuccess;
}

template <typename Handle>
cudaError_t destroy_handle(Runtime& r, std::set<Handle>& live, Handle h, const char* who) {
  auto it = live.find(h);
  if (it == live.end())
    return fail(r, cudaErrorInvalidResourceHandle, std::string(who) + ": unknown handle " + pointer_text(h));
  delete h;
  live.erase(it);
  return r.sticky;
}

// Validates a copy's pointers against its kind, then copies.
cudaError_t copy(Runtime& r, void* dst, const void* src, std::size_t count, cudaMemcpyKind kind, const char* who) {
  if (r.sticky) return r.sticky;
  if (count == 0) return cudaSuccess;
  if (!dst || !src) return fail(r, cudaErrorInvalidValue, std::string(who) + ": null pointer");
  const Where d = where(r, dst, count), s = where(r, src, count);
  if (d == Where::kOverrun || s == Where::kOverrun)
    return fail(r, cudaErrorInvalidValue,
                std::string(who) + ": " + std::to_string(count) + " bytes overrun the allocation of the " +
                    (d == Where::kOverrun ? "destination " + pointer_text(dst) : "source " + pointer_text(src)));
  const bool dd = d == Where::kDevice, sd = s == Where::kDevice;
  bool ok = true;
  switch (kind) {
    case cudaMemcpyHostToHost: ok = !dd && !sd; break;
    case cudaMemcpyHostToDevice: ok = dd && !sd; break;
    case cudaMemcpyDeviceToHost: ok = !dd && sd; break;
    case cudaMemcpyDeviceToDevice: ok = dd && sd; break;
    case cudaMemcpyDefault: break;
    default: return fail(r, cudaErrorInvalidMemcpyDirection, std::string(who) + ": unknown cudaMemcpyKind");
  }
  if (!ok)
    return fail(r, cudaErrorInvalidValue,
                std::string(who) + ": the kind says " + kind_text(kind) + " but the destination " +
                    pointer_text(dst) + " is " + (dd ? "device" : "host") + " memory and the source " +
                    pointer_text(src) + " is " + (sd ? "device" : "host") + " memory");
  std::memmove(dst, src, count);
  return cudaSuccess;
}

cudaError_t set(Runtime& r, void* ptr, int value, std::size_t count, const char* who) {
  if (r.sticky) return r.sticky;
  if (count == 0) return cudaSuccess;
  if (where(r, ptr, count) != Where::kDevice)
    return fail(r, cudaErrorInvalidValue,
                std::string(who) + ": " + pointer_text(ptr) + " + " + std::to_string(count) +
                    " bytes is not inside one device allocation");
  std::memset(ptr, value, count);
  return cudaSuccess;
}

cudaError_t allocate(Runtime& r, void** ptr, std::size_t size, bool device, const char* who) {
  if (r.sticky) return r.sticky;
  if (!ptr) return fail(r, cudaErrorInvalidValue, std::string(who) + ": null result pointer");
  *ptr = nullptr;
  if (size == 0) return cudaSuccess;
  void* p = nullptr;
  if (posix_memalign(&p, kDeviceAlignment, size) != 0)
    return fail(r, cudaErrorMemoryAllocation, std::string(who) + ": " + std::to_string(size) + " bytes");
  std::memset(p, 0xff, size);  // garbage, as fresh device memory
  r.allocations[reinterpret_cast<std::uintptr_t>(p)] = Allocation{size, device};
  *ptr = p;
  return cudaSuccess;
}

cudaError_t release(Runtime& r, void* ptr, bool device, const char* who) {
  if (!ptr) return r.sticky;
  auto it = r.allocations.find(reinterpret_cast<std::uintptr_t>(ptr));
  if (it == r.allocations.end() || it->second.device != device)
    return fail(r, device ? cudaErrorInvalidDevicePointer : cudaErrorInvalidValue,
                std::string(who) + ": " + pointer_text(ptr) + " is not the start of a live " +
                    (device ? "cudaMalloc" : "cudaHostAlloc") + " allocation");
  std::free(ptr);
  r.allocations.erase(it);
  return r.sticky;  // freed even after a fault, so that nothing leaks
}

std::size_t physical_bytes(int pages_name) {
  const long pages = sysconf(pages_name), page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<std::size_t>(pages) * static_cast<std::size_t>(page) : 0;
}

}  // namespace

std::vector<LaunchRecord> launches() {
  Runtime& r = rt();
  Lock lock(r.mu);
  return {r.records.begin(), r.records.end()};
}

std::uint64_t launch_count() {
  Runtime& r = rt();
  Lock lock(r.mu);
  return r.launch_count;
}

void clear_launches() {
  Runtime& r = rt();
  Lock lock(r.mu);
  r.records.clear();
}

void set_schedule(const Schedule& schedule) {
  Runtime& r = rt();
  Lock lock(r.mu);
  r.schedule = schedule;
}

Schedule schedule() {
  Runtime& r = rt();
  Lock lock(r.mu);
  return r.schedule;
}

namespace detail {

void launch_kernel(const char* name, dim3 grid, dim3 block, std::size_t dynamic_shared, cudaStream_t stream,
                   void (*thunk)(void*), void* closure) {
  Runtime& r = rt();
  Lock lock(r.mu);
  if (r.sticky) return;  // cudaGetLastError reports the earlier fault
  if (check_stream(r, stream, name) != cudaSuccess) return;
  const unsigned b[3] = {block.x, block.y, block.z}, g[3] = {grid.x, grid.y, grid.z};
  std::string bad;
  for (int i = 0; i < 3; ++i) {
    if (b[i] < 1 || b[i] > kMaxBlockDim[i]) bad = "block dimension " + std::to_string(i) + " = " + std::to_string(b[i]);
    if (g[i] < 1 || g[i] > kMaxGridDim[i]) bad = "grid dimension " + std::to_string(i) + " = " + std::to_string(g[i]);
  }
  if (bad.empty() && std::uint64_t{block.x} * block.y * block.z > kMaxThreadsPerBlock)
    bad = std::to_string(std::uint64_t{block.x} * block.y * block.z) + " threads per block";
  if (bad.empty() && dynamic_shared > kMaxDynamicShared)
    bad = std::to_string(dynamic_shared) + " bytes of dynamic shared memory";
  if (!bad.empty()) {
    fail(r, cudaErrorInvalidConfiguration, std::string(name) + ": " + bad);
    return;
  }
  ++r.launch_count;
  r.records.push_back(LaunchRecord{name, grid, block, dynamic_shared, stream});
  if (r.records.size() > kMaxLaunchRecords) r.records.pop_front();
  const std::string fault = run_grid(GridLaunch{name, grid, block, dynamic_shared, thunk, closure}, r.schedule);
  if (!fault.empty()) {
    r.sticky = cudaErrorLaunchFailure;
    r.last = cudaErrorLaunchFailure;
    r.details[cudaErrorLaunchFailure] = fault;
    std::fprintf(stderr, "efsign CUDA emulation: kernel fault: %s\n", fault.c_str());
  }
}

}  // namespace detail
}  // namespace efsign::cuda_emu

using efsign::cuda_emu::Lock;
using efsign::cuda_emu::rt;
using efsign::cuda_emu::Runtime;

cudaError_t cudaGetLastError() {
  Runtime& r = rt();
  Lock lock(r.mu);
  const cudaError_t e = r.sticky ? r.sticky : r.last;
  r.last = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError() {
  Runtime& r = rt();
  Lock lock(r.mu);
  return r.sticky ? r.sticky : r.last;
}

const char* cudaGetErrorString(cudaError_t error) {
  Runtime& r = rt();
  Lock lock(r.mu);
  std::string& m = r.messages[error];
  m = efsign::cuda_emu::base_message(error);
  auto it = r.details.find(error);
  if (error != cudaSuccess && it != r.details.end()) m += " (CUDA emulation: " + it->second + ")";
  return m.c_str();
}

const char* cudaGetErrorName(cudaError_t error) { return efsign::cuda_emu::error_name(error); }

cudaError_t cudaGetDeviceCount(int* count) {
  Runtime& r = rt();
  Lock lock(r.mu);
  if (!count) return efsign::cuda_emu::fail(r, cudaErrorInvalidValue, "cudaGetDeviceCount: null pointer");
  *count = 1;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  Runtime& r = rt();
  Lock lock(r.mu);
  if (device != 0)
    return efsign::cuda_emu::fail(r, cudaErrorInvalidDevice,
                                  "cudaSetDevice(" + std::to_string(device) + "): the emulation has device 0 only");
  return r.sticky;
}

cudaError_t cudaGetDevice(int* device) {
  Runtime& r = rt();
  Lock lock(r.mu);
  if (!device) return efsign::cuda_emu::fail(r, cudaErrorInvalidValue, "cudaGetDevice: null pointer");
  *device = 0;
  return r.sticky;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  Runtime& r = rt();
  Lock lock(r.mu);
  if (!prop) return efsign::cuda_emu::fail(r, cudaErrorInvalidValue, "cudaGetDeviceProperties: null pointer");
  if (device != 0) return efsign::cuda_emu::fail(r, cudaErrorInvalidDevice, "cudaGetDeviceProperties: device 0 only");
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof prop->name, "efsign CUDA emulation (host, %s)",
                efsign::cuda_emu::context_switch_name());
  prop->totalGlobalMem = efsign::cuda_emu::physical_bytes(_SC_PHYS_PAGES);
  prop->sharedMemPerBlock = efsign::cuda_emu::kMaxDynamicShared;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = static_cast<int>(efsign::cuda_emu::kMaxThreadsPerBlock);
  for (int i = 0; i < 3; ++i) {
    prop->maxThreadsDim[i] = static_cast<int>(efsign::cuda_emu::kMaxBlockDim[i]);
    prop->maxGridSize[i] = static_cast<int>(efsign::cuda_emu::kMaxGridDim[i]);
  }
  prop->multiProcessorCount = 1;
  prop->major = 9;  // the architecture the kernels are tuned for (sm_90)
  prop->minor = 0;
  return r.sticky;
}

cudaError_t cudaDeviceSynchronize() {
  Runtime& r = rt();
  Lock lock(r.mu);
  return r.sticky;
}

cudaError_t cudaDeviceReset() {
  Runtime& r = rt();
  Lock lock(r.mu);
  for (auto& [address, a] : r.allocations) std::free(reinterpret_cast<void*>(address));
  r.allocations.clear();
  for (cudaStream_t s : r.streams) delete s;
  r.streams.clear();
  for (cudaEvent_t e : r.events) delete e;
  r.events.clear();
  r.sticky = cudaSuccess;
  r.last = cudaSuccess;
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  Runtime& r = rt();
  Lock lock(r.mu);
  if (!free_bytes || !total_bytes)
    return efsign::cuda_emu::fail(r, cudaErrorInvalidValue, "cudaMemGetInfo: null pointer");
  *free_bytes = efsign::cuda_emu::physical_bytes(_SC_AVPHYS_PAGES);
  *total_bytes = efsign::cuda_emu::physical_bytes(_SC_PHYS_PAGES);
  return r.sticky;
}

cudaError_t cudaMalloc(void** ptr, size_t size) {
  Runtime& r = rt();
  Lock lock(r.mu);
  return efsign::cuda_emu::allocate(r, ptr, size, true, "cudaMalloc");
}

cudaError_t cudaFree(void* ptr) {
  Runtime& r = rt();
  Lock lock(r.mu);
  return efsign::cuda_emu::release(r, ptr, true, "cudaFree");
}

cudaError_t cudaHostAlloc(void** ptr, size_t size, unsigned int flags) {
  Runtime& r = rt();
  Lock lock(r.mu);
  if (flags & ~0x7u) return efsign::cuda_emu::fail(r, cudaErrorInvalidValue, "cudaHostAlloc: unknown flags");
  return efsign::cuda_emu::allocate(r, ptr, size, false, "cudaHostAlloc");
}

cudaError_t cudaMallocHost(void** ptr, size_t size) { return cudaHostAlloc(ptr, size, cudaHostAllocDefault); }

cudaError_t cudaFreeHost(void* ptr) {
  Runtime& r = rt();
  Lock lock(r.mu);
  return efsign::cuda_emu::release(r, ptr, false, "cudaFreeHost");
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t count, cudaMemcpyKind kind) {
  Runtime& r = rt();
  Lock lock(r.mu);
  return efsign::cuda_emu::copy(r, dst, src, count, kind, "cudaMemcpy");
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t count, cudaMemcpyKind kind, cudaStream_t stream) {
  Runtime& r = rt();
  Lock lock(r.mu);
  if (const cudaError_t e = efsign::cuda_emu::check_stream(r, stream, "cudaMemcpyAsync")) return e;
  return efsign::cuda_emu::copy(r, dst, src, count, kind, "cudaMemcpyAsync");
}

cudaError_t cudaMemset(void* ptr, int value, size_t count) {
  Runtime& r = rt();
  Lock lock(r.mu);
  return efsign::cuda_emu::set(r, ptr, value, count, "cudaMemset");
}

cudaError_t cudaMemsetAsync(void* ptr, int value, size_t count, cudaStream_t stream) {
  Runtime& r = rt();
  Lock lock(r.mu);
  if (const cudaError_t e = efsign::cuda_emu::check_stream(r, stream, "cudaMemsetAsync")) return e;
  return efsign::cuda_emu::set(r, ptr, value, count, "cudaMemsetAsync");
}

cudaError_t cudaStreamCreate(cudaStream_t* stream) { return cudaStreamCreateWithFlags(stream, cudaStreamDefault); }

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags) {
  Runtime& r = rt();
  Lock lock(r.mu);
  return efsign::cuda_emu::create_handle(r, r.streams, stream, flags, cudaStreamNonBlocking,
                                         "cudaStreamCreateWithFlags");
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  Runtime& r = rt();
  Lock lock(r.mu);
  return efsign::cuda_emu::destroy_handle(r, r.streams, stream, "cudaStreamDestroy");
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  Runtime& r = rt();
  Lock lock(r.mu);
  if (const cudaError_t e = efsign::cuda_emu::check_stream(r, stream, "cudaStreamSynchronize")) return e;
  return r.sticky;
}

cudaError_t cudaStreamQuery(cudaStream_t stream) { return cudaStreamSynchronize(stream); }

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags) {
  Runtime& r = rt();
  Lock lock(r.mu);
  if (flags != 0) return efsign::cuda_emu::fail(r, cudaErrorInvalidValue, "cudaStreamWaitEvent: unknown flags");
  if (const cudaError_t e = efsign::cuda_emu::check_stream(r, stream, "cudaStreamWaitEvent")) return e;
  if (const cudaError_t e = efsign::cuda_emu::check_event(r, event, "cudaStreamWaitEvent")) return e;
  return r.sticky;
}

cudaError_t cudaEventCreate(cudaEvent_t* event) { return cudaEventCreateWithFlags(event, cudaEventDefault); }

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags) {
  Runtime& r = rt();
  Lock lock(r.mu);
  return efsign::cuda_emu::create_handle(r, r.events, event, flags,
                                         cudaEventBlockingSync | cudaEventDisableTiming | 0x4u /* interprocess */,
                                         "cudaEventCreateWithFlags");
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  Runtime& r = rt();
  Lock lock(r.mu);
  return efsign::cuda_emu::destroy_handle(r, r.events, event, "cudaEventDestroy");
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  Runtime& r = rt();
  Lock lock(r.mu);
  if (const cudaError_t e = efsign::cuda_emu::check_event(r, event, "cudaEventRecord")) return e;
  if (const cudaError_t e = efsign::cuda_emu::check_stream(r, stream, "cudaEventRecord")) return e;
  if (r.sticky) return r.sticky;
  event->recorded = true;
  event->when = std::chrono::steady_clock::now();
  return cudaSuccess;
}

cudaError_t cudaEventQuery(cudaEvent_t event) {
  Runtime& r = rt();
  Lock lock(r.mu);
  if (const cudaError_t e = efsign::cuda_emu::check_event(r, event, "cudaEventQuery")) return e;
  return r.sticky;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) { return cudaEventQuery(event); }

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  Runtime& r = rt();
  Lock lock(r.mu);
  if (!ms) return efsign::cuda_emu::fail(r, cudaErrorInvalidValue, "cudaEventElapsedTime: null pointer");
  if (const cudaError_t e = efsign::cuda_emu::check_event(r, start, "cudaEventElapsedTime")) return e;
  if (const cudaError_t e = efsign::cuda_emu::check_event(r, end, "cudaEventElapsedTime")) return e;
  if (!start->recorded || !end->recorded || ((start->flags | end->flags) & cudaEventDisableTiming))
    return efsign::cuda_emu::fail(r, cudaErrorInvalidResourceHandle,
                                  "cudaEventElapsedTime: an event was never recorded or has timing disabled");
  if (r.sticky) return r.sticky;
  *ms = std::chrono::duration<float, std::milli>(end->when - start->when).count();
  return cudaSuccess;
}
