// efsign/mpi_communicator.h — the MPI backend (host buffers) and MPI's lifetime.
#pragma once

#include <memory>

#include "efsign/communicator.h"

namespace efsign {

// Owns MPI_Init_thread/MPI_Finalize. Create exactly one, first thing in main().
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  int world_rank() const { return rank_; }
  int world_size() const { return size_; }

 private:
  int rank_ = 0, size_ = 1;
};

// Rank among the processes on this host (MPI_COMM_TYPE_SHARED), and how many there
// are; MPI must be up.
int mpi_local_rank();
int mpi_local_size();

// True if MPI was initialised with at least MPI_THREAD_SERIALIZED (a communication
// thread may issue collectives while no other thread does).
bool mpi_serialized_threads();

// Collectives over a private duplicate of MPI_COMM_WORLD.
class MpiCommunicator final : public HostCommunicator {
 public:
  MpiCommunicator();
  ~MpiCommunicator() override;
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }
  void allgather(Span<const std::byte> send, Span<std::byte> recv) override;
  void allreduce_sum(Span<float> data) override;
  void allreduce_sum(Span<double> data) override;
  void alltoallv(Span<const std::byte> send, Span<const int64_t> counts, Span<std::byte> recv) override;
  void allgatherv(Span<const std::byte> send, Span<const int64_t> counts, Span<std::byte> recv) override;
  void broadcast(Span<std::byte> data, int root) override;
  void barrier() override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int rank_ = 0, size_ = 1;
};

}  // namespace efsign
