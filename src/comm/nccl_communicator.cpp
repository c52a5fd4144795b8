// Built only with CUDA + NCCL (see CMakeLists.txt).
#include "efsign/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <chrono>
#include <thread>

#include <fmt/format.h>

#include "cuda_check.h"
#include "efsign/error.h"
#include "nccl_check.h"

namespace efsign {

namespace {

// RAII owners for the stream and events (no cudaFree/Destroy on error paths).
struct Stream {
  cudaStream_t s = nullptr;
  Stream() { EFSIGN_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)); }
  ~Stream() {
    if (s) cudaStreamDestroy(s);
  }
};
struct Event {
  cudaEvent_t e = nullptr;
  Event() { EFSIGN_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming)); }
  ~Event() {
    if (e) cudaEventDestroy(e);
  }
};

}  // namespace

struct NcclCommunicator::Impl {
  int rank = 0, size = 1, device = 0;
  double timeout_s = 0;
  cudaStream_t compute = nullptr;
  ncclComm_t comm = nullptr;
  bool aborted = false;
  std::unique_ptr<Stream> stream;
  std::unique_ptr<Event> ready, done;

  // Queue `issue` on the comm stream after the compute stream's work; make the
  // compute stream and the host wait for it, with the watchdog.
  template <typename Fn>
  void run(const char* what, Fn&& issue) {
    EFSIGN_CUDA_CHECK(cudaEventRecord(ready->e, compute));
    EFSIGN_CUDA_CHECK(cudaStreamWaitEvent(stream->s, ready->e, 0));
    grouped(issue);
    EFSIGN_CUDA_CHECK(cudaEventRecord(done->e, stream->s));
    EFSIGN_CUDA_CHECK(cudaStreamWaitEvent(compute, done->e, 0));
    wait(what);
  }

  // --overlap: the work before it on the comm stream (the caller's compress kernel)
  // orders it; nothing waits.
  template <typename Fn>
  void enqueue(Fn&& issue) {
    grouped(issue);
  }

  // ncclGroupStart/End around `issue`; the group is closed even when issue throws, so
  // the thread is never left inside an open group.
  template <typename Fn>
  void grouped(Fn&& issue) {
    EFSIGN_NCCL_CHECK(ncclGroupStart());
    try {
      issue();
    } catch (...) {
      ncclGroupEnd();
      throw;
    }
    EFSIGN_NCCL_CHECK(ncclGroupEnd());
  }

  void wait(const char* what) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int spins = 0;; ++spins) {
      const cudaError_t q = cudaEventQuery(done->e);
      if (q == cudaSuccess) return;
      if (q != cudaErrorNotReady) EFSIGN_CUDA_CHECK(q);
      ncclResult_t async = ncclSuccess;
      EFSIGN_NCCL_CHECK(ncclCommGetAsyncError(comm, &async));
      if (async != ncclSuccess) {
        abort_comm();
        throw CommError(fmt::format("NCCL {} failed asynchronously: {} ({})", what, ncclGetErrorString(async),
                                    where_am_i()));
      }
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (timeout_s > 0 && waited > timeout_s) {
        abort_comm();
        throw CommError(fmt::format("NCCL {} did not complete within {:.0f} s (--comm-timeout); a peer rank is "
                                    "probably gone or stuck ({})",
                                    what, timeout_s, where_am_i()));
      }
      if (spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  void abort_comm() {
    if (comm && !aborted) {
      ncclCommAbort(comm);
      aborted = true;
      comm = nullptr;
    }
  }
};

NcclCommunicator::NcclCommunicator(HostCommunicator& bootstrap, int device, double timeout_s, void* compute_stream)
    : impl_(std::make_unique<Impl>()) {
  impl_->rank = bootstrap.rank();
  impl_->size = bootstrap.size();
  impl_->device = device;
  impl_->timeout_s = timeout_s;
  impl_->compute = static_cast<cudaStream_t>(compute_stream);
  int count = 0;
  EFSIGN_CUDA_CHECK(cudaGetDeviceCount(&count));
  if (device < 0 || device >= count)
    throw Error(fmt::format("local rank needs GPU {} but this host has {} ({}): run at most {} ranks per node",
                            device, count, where_am_i(), count));
  EFSIGN_CUDA_CHECK(cudaSetDevice(device));
  impl_->stream = std::make_unique<Stream>();
  impl_->ready = std::make_unique<Event>();
  impl_->done = std::make_unique<Event>();
  ncclUniqueId id{};
  if (impl_->rank == 0) EFSIGN_NCCL_CHECK(ncclGetUniqueId(&id));
  bootstrap.broadcast(Span<std::byte>(reinterpret_cast<std::byte*>(&id), sizeof(id)), 0);
  EFSIGN_NCCL_CHECK(ncclCommInitRank(&impl_->comm, impl_->size, id, impl_->rank));
}

NcclCommunicator::~NcclCommunicator() {
  if (impl_ && impl_->comm && !impl_->aborted) {
    cudaStreamSynchronize(impl_->stream->s);
    ncclCommDestroy(impl_->comm);
  }
}

int NcclCommunicator::rank() const { return impl_->rank; }
int NcclCommunicator::size() const { return impl_->size; }
int NcclCommunicator::device() const { return impl_->device; }

void NcclCommunicator::allgather(Span<const std::byte> send, Span<std::byte> recv) {
  if (recv.size() != send.size() * static_cast<std::size_t>(impl_->size))
    throw Error(fmt::format("allgather: recv holds {} bytes, need {} x {}", recv.size(), impl_->size, send.size()));
  impl_->run("allgather", [&] {
    EFSIGN_NCCL_CHECK(ncclAllGather(send.data(), recv.data(), send.size(), ncclUint8, impl_->comm, impl_->stream->s));
  });
  count(static_cast<int64_t>(send.size()), ring_allgather_wire_bytes(static_cast<int64_t>(send.size()), impl_->size));
}

// NCCL has no all-to-all or allgatherv: both are grouped point-to-point calls, one
// ncclGroupStart/End around all of them (run() opens the group).
void NcclCommunicator::alltoallv(Span<const std::byte> send, Span<const int64_t> counts, Span<std::byte> recv) {
  check_and_count_alltoallv(send, counts, recv);
  const auto* src = send.data();
  const std::size_t mine = static_cast<std::size_t>(counts[impl_->rank]);
  impl_->run("alltoallv", [&] {
    std::size_t off = 0;
    for (int c = 0; c < impl_->size; ++c) {
      const std::size_t n = static_cast<std::size_t>(counts[c]);
      if (n) EFSIGN_NCCL_CHECK(ncclSend(src + off, n, ncclUint8, c, impl_->comm, impl_->stream->s));
      if (mine)
        EFSIGN_NCCL_CHECK(ncclRecv(recv.data() + c * mine, mine, ncclUint8, c, impl_->comm, impl_->stream->s));
      off += n;
    }
  });
}

void NcclCommunicator::allgatherv(Span<const std::byte> send, Span<const int64_t> counts, Span<std::byte> recv) {
  check_and_count_allgatherv(send, counts, recv);
  std::size_t own_offset = 0;
  for (int c = 0; c < impl_->rank; ++c) own_offset += static_cast<std::size_t>(counts[c]);
  impl_->run("allgatherv", [&] {
    std::size_t off = 0;
    for (int c = 0; c < impl_->size; ++c) {
      const std::size_t n = static_cast<std::size_t>(counts[c]);
      if (c != impl_->rank) {
        if (!send.empty())
          EFSIGN_NCCL_CHECK(ncclSend(send.data(), send.size(), ncclUint8, c, impl_->comm, impl_->stream->s));
        if (n) EFSIGN_NCCL_CHECK(ncclRecv(recv.data() + off, n, ncclUint8, c, impl_->comm, impl_->stream->s));
      }
      off += n;
    }
    if (!send.empty())
      EFSIGN_CUDA_CHECK(cudaMemcpyAsync(recv.data() + own_offset, send.data(), send.size(), cudaMemcpyDeviceToDevice,
                                        impl_->stream->s));
  });
}

void* NcclCommunicator::comm_stream() const { return impl_->stream->s; }

void NcclCommunicator::allgather_enqueued(Span<const std::byte> send, Span<std::byte> recv) {
  if (recv.size() != send.size() * static_cast<std::size_t>(impl_->size))
    throw Error(fmt::format("allgather: recv holds {} bytes, need {} x {}", recv.size(), impl_->size, send.size()));
  impl_->enqueue([&] {
    EFSIGN_NCCL_CHECK(ncclAllGather(send.data(), recv.data(), send.size(), ncclUint8, impl_->comm, impl_->stream->s));
  });
  count(static_cast<int64_t>(send.size()), ring_allgather_wire_bytes(static_cast<int64_t>(send.size()), impl_->size));
}

void NcclCommunicator::synchronize(const char* what) {
  EFSIGN_CUDA_CHECK(cudaEventRecord(impl_->done->e, impl_->stream->s));
  EFSIGN_CUDA_CHECK(cudaStreamWaitEvent(impl_->compute, impl_->done->e, 0));
  impl_->wait(what);
}

void NcclCommunicator::allreduce_sum(Span<float> data) {
  impl_->run("allreduce", [&] {
    EFSIGN_NCCL_CHECK(
        ncclAllReduce(data.data(), data.data(), data.size(), ncclFloat, ncclSum, impl_->comm, impl_->stream->s));
  });
  count(static_cast<int64_t>(data.size_bytes()), ring_allreduce_wire_bytes(static_cast<int64_t>(data.size_bytes()), impl_->size));
}

void NcclCommunicator::broadcast(Span<std::byte> data, int root) {
  impl_->run("broadcast", [&] {
    EFSIGN_NCCL_CHECK(ncclBroadcast(data.data(), data.data(), data.size(), ncclUint8, root, impl_->comm,
                                    impl_->stream->s));
  });
}

void NcclCommunicator::barrier() {
  // An empty allreduce orders every rank's streams; the host waits inside run().
  impl_->run("barrier", [&] {
    EFSIGN_NCCL_CHECK(ncclAllReduce(nullptr, nullptr, 0, ncclFloat, ncclSum, impl_->comm, impl_->stream->s));
  });
}

}  // namespace efsign
