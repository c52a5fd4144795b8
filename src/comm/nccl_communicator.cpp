// Built only with CUDA + NCCL (see CMakeLists.txt). The contract is in
// include/efsign/nccl_communicator.h.
#include "efsign/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include <fmt/format.h>

#include "cuda_check.h"
#include "efsign/error.h"

namespace efsign {

namespace {

// RAII owners: each frees what it made, also when a later step of set-up throws.
struct Stream {
  cudaStream_t s = nullptr;
  Stream() { EFSIGN_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)); }
  ~Stream() {
    if (s) cudaStreamDestroy(s);
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
};
struct Event {
  cudaEvent_t e = nullptr;
  Event() { EFSIGN_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming)); }
  ~Event() {
    if (e) cudaEventDestroy(e);
  }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
};
// One float of device memory, zero: the barrier's allreduce buffer (0 * W stays 0).
struct DeviceFloat {
  float* p = nullptr;
  DeviceFloat() {
    EFSIGN_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&p), sizeof(float)));
    EFSIGN_CUDA_CHECK(cudaMemset(p, 0, sizeof(float)));
  }
  ~DeviceFloat() {
    if (p) cudaFree(p);
  }
  DeviceFloat(const DeviceFloat&) = delete;
  DeviceFloat& operator=(const DeviceFloat&) = delete;
};
// Makes `device` current (checked against the devices this process sees). Declared
// before the resources in Impl, so that they are made on it.
struct SelectDevice {
  explicit SelectDevice(int device) {
    int count = 0;
    EFSIGN_CUDA_CHECK(cudaGetDeviceCount(&count));
    if (device < 0 || device >= count)
      throw Error(fmt::format("local rank needs GPU {} but this host has {} ({}): run at most {} ranks per node",
                              device, count, where_am_i(), count));
    EFSIGN_CUDA_CHECK(cudaSetDevice(device));
  }
};
// For calls from another thread (the --overlap communication thread): `device`
// current for the scope, the previous device restored after it.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    EFSIGN_CUDA_CHECK(cudaGetDevice(&prev_));
    if (prev_ == device) {
      prev_ = -1;
    } else {
      EFSIGN_CUDA_CHECK(cudaSetDevice(device));
    }
  }
  ~DeviceGuard() {
    if (prev_ >= 0) cudaSetDevice(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1;
};

// Non-blocking mode: a call may answer ncclInProgress (queued, finishing in the
// background); anything else but ncclSuccess is an error. Inside a group this only
// throws: the group is closed and the communicator aborted by Impl::grouped().
#define EFSIGN_NCCL_QUEUE(call)                                                                           \
  do {                                                                                                   \
    const ncclResult_t efsign_nccl_rc_ = (call);                                                         \
    if (efsign_nccl_rc_ != ncclSuccess && efsign_nccl_rc_ != ncclInProgress)                             \
      ::efsign::throw_nccl_error(static_cast<int>(efsign_nccl_rc_), ncclGetErrorString(efsign_nccl_rc_), \
                                 #call, __FILE__, __LINE__);                                             \
  } while (0)

constexpr int kSpinsBeforeSleep = 1000;  // short collectives finish within the spins
constexpr auto kPollSleep = std::chrono::microseconds(50);

}  // namespace

struct NcclCommunicator::Impl {
  int rank = 0, size = 1, device = 0;
  double timeout_s = 0;
  SelectDevice selected;  // first: everything below lives on `device`
  Stream stream;
  Event done;
  DeviceFloat barrier_buf;
  ncclComm_t comm = nullptr;
  bool aborted = false;

  Impl(const HostCommunicator& bootstrap, int dev, double t)
      : rank(bootstrap.rank()), size(bootstrap.size()), device(dev), timeout_s(t), selected(dev) {}

  // Releases in order: the communicator (after the queued work), then the members.
  ~Impl() {
    if (!comm) return;
    if (!aborted) {
      try {
        DeviceGuard guard(device);
        EFSIGN_CUDA_CHECK(cudaEventRecord(done.e, stream.s));
        wait("shutdown (work still queued on the NCCL stream)", done.e);
        const ncclResult_t r = ncclCommFinalize(comm);
        if (r != ncclSuccess && r != ncclInProgress) fail("shutdown (ncclCommFinalize)", r);
        wait("shutdown (ncclCommFinalize)", nullptr);
        ncclCommDestroy(comm);
        comm = nullptr;
        return;
      } catch (const std::exception& e) {  // a destructor does not throw: say it, then abort
        std::fprintf(stderr, "efsign: %s\n", e.what());
      }
    }
    abort_comm();
  }

  // Collective over the bootstrap communicator; polled with the watchdog, so a rank
  // that never arrives ends in CommError instead of a hang.
  void init(HostCommunicator& bootstrap) {
    ncclUniqueId id{};
    if (rank == 0) EFSIGN_NCCL_QUEUE(ncclGetUniqueId(&id));
    bootstrap.broadcast(Span<std::byte>(reinterpret_cast<std::byte*>(&id), sizeof(id)), 0);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    const ncclResult_t r = ncclCommInitRankConfig(&comm, size, id, rank, &config);
    if (r != ncclSuccess && r != ncclInProgress) {
      if (comm) abort_comm();
      throw_nccl_error(static_cast<int>(r), ncclGetErrorString(r), "ncclCommInitRankConfig", __FILE__, __LINE__);
    }
    wait("communicator set-up (ncclCommInitRankConfig; every rank must arrive)", nullptr);
  }

  void usable(const char* what) const {
    if (aborted || !comm)
      throw CommError(fmt::format("NCCL {}: the communicator was aborted by an earlier error ({})", what, where_am_i()));
  }

  // Queues `issue` (NCCL calls on `stream`) inside ncclGroupStart/End. When
  // ncclGroupEnd answers ncclInProgress, NCCL is still putting the group on the stream
  // (on first use it also connects the peers); wait, under the watchdog, until it is
  // there, so that work the caller queues on the stream next really comes after it.
  // The group is closed even when issue throws; the communicator is then aborted.
  template <typename Fn>
  void grouped(const char* what, Fn&& issue) {
    usable(what);
    DeviceGuard guard(device);
    EFSIGN_NCCL_QUEUE(ncclGroupStart());
    try {
      issue();
    } catch (...) {
      ncclGroupEnd();
      abort_comm();
      throw;
    }
    const ncclResult_t r = ncclGroupEnd();
    if (r != ncclSuccess && r != ncclInProgress) fail(what, r);
    if (r == ncclInProgress) wait(what, nullptr);
  }

  // Returns once the communicator's state is ncclSuccess and, if `event` is given, the
  // event has completed. An NCCL or CUDA error, or `timeout_s` seconds, abort.
  void wait(const char* what, cudaEvent_t event) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int spins = 0;; ++spins) {
      ncclResult_t state = ncclSuccess;
      const ncclResult_t r = ncclCommGetAsyncError(comm, &state);
      if (r != ncclSuccess) fail(what, r);
      if (state != ncclSuccess && state != ncclInProgress) fail(what, state);
      if (state == ncclSuccess) {
        if (!event) return;
        const cudaError_t q = cudaEventQuery(event);
        if (q == cudaSuccess) return;
        if (q != cudaErrorNotReady) {
          abort_comm();
          EFSIGN_CUDA_CHECK_AS(q, what);
        }
      }
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (timeout_s > 0 && waited > timeout_s) {
        abort_comm();
        throw CommError(fmt::format("NCCL {} did not complete within {:.0f} s (--comm-timeout); a peer rank is "
                                    "probably gone, stuck or was never started ({})",
                                    what, timeout_s, where_am_i()));
      }
      if (spins > kSpinsBeforeSleep) std::this_thread::sleep_for(kPollSleep);
    }
  }

  [[noreturn]] void fail(const char* what, ncclResult_t code) {
    const std::string detail = comm ? ncclGetLastError(comm) : "";
    abort_comm();
    throw CommError(fmt::format("NCCL {} failed: {}{}{} ({})", what, ncclGetErrorString(code),
                                detail.empty() ? "" : ": ", detail, where_am_i()));
  }

  void abort_comm() {
    if (comm && !aborted) ncclCommAbort(comm);
    aborted = true;
    comm = nullptr;
  }
};

NcclCommunicator::NcclCommunicator(HostCommunicator& bootstrap, int device, double timeout_s)
    : impl_(std::make_unique<Impl>(bootstrap, device, timeout_s)) {
  impl_->init(bootstrap);  // on a throw impl_ is destroyed, and the communicator with it
}

NcclCommunicator::~NcclCommunicator() = default;

int NcclCommunicator::rank() const { return impl_->rank; }
int NcclCommunicator::size() const { return impl_->size; }
int NcclCommunicator::device() const { return impl_->device; }
void* NcclCommunicator::stream() const { return impl_->stream.s; }

void NcclCommunicator::allgather(Span<const std::byte> send, Span<std::byte> recv) {
  if (recv.size() != send.size() * static_cast<std::size_t>(impl_->size))
    throw Error(fmt::format("allgather: recv holds {} bytes, need {} x {}", recv.size(), impl_->size, send.size()));
  impl_->grouped("allgather", [&] {
    EFSIGN_NCCL_QUEUE(
        ncclAllGather(send.data(), recv.data(), send.size(), ncclUint8, impl_->comm, impl_->stream.s));
  });
  count(static_cast<int64_t>(send.size()), ring_allgather_wire_bytes(static_cast<int64_t>(send.size()), impl_->size));
}

void NcclCommunicator::allreduce_sum(Span<float> data) {
  impl_->grouped("allreduce", [&] {
    EFSIGN_NCCL_QUEUE(
        ncclAllReduce(data.data(), data.data(), data.size(), ncclFloat, ncclSum, impl_->comm, impl_->stream.s));
  });
  count(static_cast<int64_t>(data.size_bytes()), ring_allreduce_wire_bytes(static_cast<int64_t>(data.size_bytes()), impl_->size));
}

// NCCL has no all-to-all or allgatherv: both are point-to-point calls inside one group.
void NcclCommunicator::alltoallv(Span<const std::byte> send, Span<const int64_t> counts, Span<std::byte> recv) {
  check_and_count_alltoallv(send, counts, recv);
  const auto* src = send.data();
  const std::size_t mine = static_cast<std::size_t>(counts[impl_->rank]);
  impl_->grouped("alltoallv", [&] {
    std::size_t off = 0;
    for (int c = 0; c < impl_->size; ++c) {
      const std::size_t n = static_cast<std::size_t>(counts[c]);
      if (n) EFSIGN_NCCL_QUEUE(ncclSend(src + off, n, ncclUint8, c, impl_->comm, impl_->stream.s));
      if (mine)
        EFSIGN_NCCL_QUEUE(ncclRecv(recv.data() + c * mine, mine, ncclUint8, c, impl_->comm, impl_->stream.s));
      off += n;
    }
  });
}

void NcclCommunicator::allgatherv(Span<const std::byte> send, Span<const int64_t> counts, Span<std::byte> recv) {
  check_and_count_allgatherv(send, counts, recv);
  std::size_t own_offset = 0;
  for (int c = 0; c < impl_->rank; ++c) own_offset += static_cast<std::size_t>(counts[c]);
  impl_->grouped("allgatherv", [&] {
    std::size_t off = 0;
    for (int c = 0; c < impl_->size; ++c) {
      const std::size_t n = static_cast<std::size_t>(counts[c]);
      if (c != impl_->rank) {
        if (!send.empty())
          EFSIGN_NCCL_QUEUE(ncclSend(send.data(), send.size(), ncclUint8, c, impl_->comm, impl_->stream.s));
        if (n) EFSIGN_NCCL_QUEUE(ncclRecv(recv.data() + off, n, ncclUint8, c, impl_->comm, impl_->stream.s));
      }
      off += n;
    }
    if (!send.empty())
      EFSIGN_CUDA_CHECK(cudaMemcpyAsync(recv.data() + own_offset, send.data(), send.size(), cudaMemcpyDeviceToDevice,
                                        impl_->stream.s));
  });
}

void NcclCommunicator::broadcast(Span<std::byte> data, int root) {
  impl_->grouped("broadcast", [&] {
    EFSIGN_NCCL_QUEUE(
        ncclBroadcast(data.data(), data.data(), data.size(), ncclUint8, root, impl_->comm, impl_->stream.s));
  });
}

void NcclCommunicator::barrier() {
  impl_->grouped("barrier", [&] {
    EFSIGN_NCCL_QUEUE(ncclAllReduce(impl_->barrier_buf.p, impl_->barrier_buf.p, 1, ncclFloat, ncclSum, impl_->comm,
                                    impl_->stream.s));
  });
  synchronize("barrier");
}

void NcclCommunicator::synchronize(const char* what) {
  impl_->usable(what);
  DeviceGuard guard(impl_->device);
  EFSIGN_CUDA_CHECK(cudaEventRecord(impl_->done.e, impl_->stream.s));
  impl_->wait(what, impl_->done.e);
}

}  // namespace efsign
