// efsign/communicator.h — moves bytes between ranks; knows nothing about gradients.
//
// The optimizer and the codec never call MPI or NCCL directly: they hand buffers to a
// Communicator. Every collective is blocking from the caller's point of view (for the
// NCCL backend: ordered on the caller's CUDA stream), so a buffer may be read as soon
// as the call returns and is never touched while its collective is in flight.
//
// bytes_sent() counts the bytes of the buffers handed to the data collectives by this
// rank (the payload, not control traffic of the transport), measured per call.
// wire_bytes() counts what this rank puts on the network for those calls under the
// bandwidth-optimal algorithm of each collective, from the same buffer sizes:
//   allreduce of n bytes (ring: reduce-scatter + allgather)   2 (W-1) n / W
//   allgather of n bytes per rank (ring)                      (W-1) n
//   allgatherv, rank r contributes n_r bytes                  (W-1) n_r
//   alltoallv, n_c bytes to rank c                            sum_{c != r} n_c
// MPI and NCCL may pick other algorithms; these are the volumes the cost model in
// bench/README.md uses, and the figures the exchanges are compared by.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "efsign/span.h"

namespace efsign {

enum class MemoryKind { kHost, kDevice };

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;  // "mpi", "nccl", "self"
  // Where the buffers passed to the collectives must live.
  virtual MemoryKind memory() const = 0;

  // recv receives size() blocks of send.size() bytes, rank r's block at offset r * send.size().
  virtual void allgather(Span<const std::byte> send, Span<std::byte> recv) = 0;
  // In-place sum over ranks. Every rank receives the same bytes.
  virtual void allreduce_sum(Span<float> data) = 0;
  // counts[c] = bytes for rank c; send holds the blocks back to back in rank order.
  // Rank c receives every rank's block c: recv holds size() blocks of counts[rank()]
  // bytes, rank w's at offset w * counts[rank()]. Every rank passes the same counts.
  virtual void alltoallv(Span<const std::byte> send, Span<const int64_t> counts, Span<std::byte> recv) = 0;
  // Rank c contributes counts[c] bytes (send.size() == counts[rank()]); recv receives
  // all contributions back to back in rank order. Every rank passes the same counts.
  virtual void allgatherv(Span<const std::byte> send, Span<const int64_t> counts, Span<std::byte> recv) = 0;
  virtual void broadcast(Span<std::byte> data, int root) = 0;
  virtual void barrier() = 0;

  // Device-memory communicators (memory() == kDevice) queue their collectives on
  // stream() and do not block the host: a collective starts after everything queued
  // on stream() before it, and work queued on stream() after it sees its result.
  // synchronize(what) blocks the host until everything queued on stream() so far has
  // completed, under the --comm-timeout watchdog (an NCCL error or the deadline aborts
  // the communicator and throws CommError naming `what`, the rank and host).
  // Host communicators: collectives block; stream() is nullptr; synchronize() is a no-op.
  virtual void* stream() const { return nullptr; }
  virtual void synchronize(const char* /*what*/) {}

  int64_t bytes_sent() const { return bytes_sent_; }
  int64_t wire_bytes() const { return wire_bytes_; }
  int64_t calls() const { return calls_; }

 protected:
  void count(int64_t handed, int64_t wire) {
    bytes_sent_ += handed;
    wire_bytes_ += wire;
    ++calls_;
  }
  // Checks alltoallv/allgatherv arguments (Error on a mismatch) and counts the call.
  void check_and_count_alltoallv(Span<const std::byte> send, Span<const int64_t> counts, Span<std::byte> recv);
  void check_and_count_allgatherv(Span<const std::byte> send, Span<const int64_t> counts, Span<std::byte> recv);

 private:
  int64_t bytes_sent_ = 0;
  int64_t wire_bytes_ = 0;
  int64_t calls_ = 0;
};

// Ring volumes (see above), for the communicators and the cost model.
inline int64_t ring_allreduce_wire_bytes(int64_t bytes, int world) { return 2 * (world - 1) * bytes / world; }
inline int64_t ring_allgather_wire_bytes(int64_t bytes_per_rank, int world) { return (world - 1) * bytes_per_rank; }

// A host-memory communicator also offers double sums (metrics) and is what control
// traffic (hash agreement, metrics, checksums) goes through on every backend.
class HostCommunicator : public Communicator {
 public:
  MemoryKind memory() const override { return MemoryKind::kHost; }
  virtual void allreduce_sum(Span<double> data) = 0;
  using Communicator::allreduce_sum;
};

// World of one: allgather copies, sums are the identity. For tests and single runs.
class SelfCommunicator final : public HostCommunicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "self"; }
  void allgather(Span<const std::byte> send, Span<std::byte> recv) override;
  void allreduce_sum(Span<float> data) override;
  void allreduce_sum(Span<double> data) override;
  void alltoallv(Span<const std::byte> send, Span<const int64_t> counts, Span<std::byte> recv) override;
  void allgatherv(Span<const std::byte> send, Span<const int64_t> counts, Span<std::byte> recv) override;
  void broadcast(Span<std::byte>, int) override {}
  void barrier() override {}
};

// Collectives called from a thread that turned this on wait without spinning a core:
// the MPI backend issues the non-blocking form and polls it with short, growing
// sleeps (20 µs up to 0.5 ms). For the --overlap communication thread, which would
// otherwise busy-poll the network while backward needs the same cores. Per thread.
void set_polite_waits(bool on);
bool polite_waits();

// Every rank passes its own 64-bit value; throws CommError on every rank (with the
// same message) unless all values are equal. `what` names the value in the message.
void agree_or_throw(HostCommunicator& comm, uint64_t value, const std::string& what);

// Collective. Every rank passes its error message ("" for none); every rank gets the
// message of the lowest failing rank (prefixed "rank R: " when R != 0), or "" if none.
std::string first_error(HostCommunicator& comm, const std::string& mine);

}  // namespace efsign
