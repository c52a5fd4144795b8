// efsign/nccl_communicator.h — the NCCL backend: device buffers, one non-blocking NCCL
// communicator per run, and the stream its collectives run on.
//
// Ordering (the device contract of Communicator, see communicator.h): every
// collective is queued on stream() inside ncclGroupStart/End and returns without
// waiting for it to complete. The caller orders its own work against stream() (an
// event recorded on its compute stream, waited on by stream(), and back) and calls
// synchronize() where the host needs the result; the communicator never touches any
// other stream. Buffers passed to a collective must stay alive and untouched until
// work queued on stream() after it, or synchronize(), has seen it complete.
//
// Watchdog. The communicator is created non-blocking (ncclConfig_t::blocking = 0), so
// no NCCL call can block the host for ever: set-up (ncclCommInitRankConfig), the
// enqueue of each group (ncclGroupEnd may answer ncclInProgress while NCCL connects
// peers on first use) and synchronize() are polled with ncclCommGetAsyncError against
// one deadline of `timeout_s` seconds (0 = wait for ever). An NCCL error or the
// deadline aborts the communicator (ncclCommAbort) and throws CommError naming what
// was waited for, the rank and host, so efsign-train takes the whole job down instead
// of hanging when a rank never arrives or dies. After that every call throws.
//
// Not thread-safe: one thread at a time. Only built with CUDA and NCCL
// (EFSIGN_HAVE_CUDA).
#pragma once

#include <memory>

#include "efsign/communicator.h"

namespace efsign {

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `bootstrap`: rank 0 makes the ncclUniqueId and broadcasts it.
  // Makes `device` (one GPU per rank: the local rank) the calling thread's current
  // device, then creates the stream, its event, a one-float barrier buffer and the
  // communicator; each is owned by the object, so a throw in set-up frees what was made.
  NcclCommunicator(HostCommunicator& bootstrap, int device, double timeout_s);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override;
  int size() const override;
  std::string backend() const override { return "nccl"; }
  MemoryKind memory() const override { return MemoryKind::kDevice; }
  // All queued on stream(), none waits (see above). alltoallv and allgatherv are
  // grouped ncclSend/ncclRecv (NCCL has neither); broadcast and barrier are not counted
  // in bytes_sent()/wire_bytes()/calls().
  void allgather(Span<const std::byte> send, Span<std::byte> recv) override;
  void allreduce_sum(Span<float> data) override;
  void alltoallv(Span<const std::byte> send, Span<const int64_t> counts, Span<std::byte> recv) override;
  void allgatherv(Span<const std::byte> send, Span<const int64_t> counts, Span<std::byte> recv) override;
  void broadcast(Span<std::byte> data, int root) override;
  // A real barrier: a one-element allreduce on the communicator's own buffer, then
  // synchronize(). (A zero-count allreduce is dropped by NCCL and orders nothing.)
  void barrier() override;

  void* stream() const override;  // a cudaStream_t, created non-blocking on device()
  void synchronize(const char* what) override;
  int device() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace efsign
