// efsign/communicator.h — moves bytes between ranks; knows nothing about gradients.
//
// The optimizer and the codec never call MPI or NCCL directly: they hand buffers to a
// Communicator. Every collective is blocking from the caller's point of view (for the
// NCCL backend: ordered on the caller's CUDA stream), so a buffer may be read as soon
// as the call returns and is never touched while its collective is in flight.
//
// bytes_sent() counts the bytes of the buffers handed to allgather/allreduce by this
// rank (the payload, not control traffic of the transport): it is what metrics report
// as "bytes sent per step", measured, not computed from a formula.
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
  virtual void broadcast(Span<std::byte> data, int root) = 0;
  virtual void barrier() = 0;

  int64_t bytes_sent() const { return bytes_sent_; }
  int64_t calls() const { return calls_; }

 protected:
  void count(int64_t bytes) {
    bytes_sent_ += bytes;
    ++calls_;
  }

 private:
  int64_t bytes_sent_ = 0;
  int64_t calls_ = 0;
};

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
  void broadcast(Span<std::byte>, int) override {}
  void barrier() override {}
};

// Every rank passes its own 64-bit value; throws CommError on every rank (with the
// same message) unless all values are equal. `what` names the value in the message.
void agree_or_throw(HostCommunicator& comm, uint64_t value, const std::string& what);

// Every rank passes ok = true/false; returns true on every rank only if all were ok.
bool all_ok(HostCommunicator& comm, bool ok);

// Collective. Every rank passes its error message ("" for none); every rank gets the
// message of the lowest failing rank (prefixed "rank R: " when R != 0), or "" if none.
std::string first_error(HostCommunicator& comm, const std::string& mine);

}  // namespace efsign
