// efsign/nccl_communicator.h — the NCCL backend: device buffers, one communicator
// per run, a dedicated communication stream.
//
// Ordering: each collective waits (cudaStreamWaitEvent) for the work already queued
// on the caller's compute stream, runs on the communication stream inside
// ncclGroupStart/End, and the compute stream then waits for it. The host also waits,
// polling ncclCommGetAsyncError: an NCCL error or a collective that does not finish
// within `timeout_s` aborts the communicator (ncclCommAbort) and throws CommError
// naming the rank, so efsign-train can take the whole job down instead of hanging.
// Only available when built with CUDA and NCCL (EFSIGN_HAVE_CUDA).
#pragma once

#include <memory>

#include "efsign/communicator.h"

namespace efsign {

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `bootstrap`: rank 0 makes the ncclUniqueId and broadcasts it.
  // Sets the current CUDA device to `device` first (one GPU per rank: the local rank).
  // compute_stream: the stream the caller's kernels run on (nullptr = legacy default,
  // which is LibTorch's default stream).
  NcclCommunicator(HostCommunicator& bootstrap, int device, double timeout_s, void* compute_stream = nullptr);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override;
  int size() const override;
  std::string backend() const override { return "nccl"; }
  MemoryKind memory() const override { return MemoryKind::kDevice; }
  void allgather(Span<const std::byte> send, Span<std::byte> recv) override;
  void allreduce_sum(Span<float> data) override;
  void alltoallv(Span<const std::byte> send, Span<const int64_t> counts, Span<std::byte> recv) override;
  void allgatherv(Span<const std::byte> send, Span<const int64_t> counts, Span<std::byte> recv) override;
  void broadcast(Span<std::byte> data, int root) override;
  void barrier() override;
  int device() const;

  // --overlap. The caller enqueues its own kernels on comm_stream() (a cudaStream_t)
  // after an event from the compute stream; allgather_enqueued() queues an allgather
  // there without any wait; synchronize() makes the compute stream wait for everything
  // queued on the comm stream and the host wait for it too, with the watchdog.
  void* comm_stream() const;
  void allgather_enqueued(Span<const std::byte> send, Span<std::byte> recv);
  void synchronize(const char* what);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace efsign
