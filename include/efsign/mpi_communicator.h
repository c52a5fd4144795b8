// efsign/mpi_communicator.h — the MPI backend (host buffers) and MPI's lifetime.
#pragma once

#include <memory>
#include <string>

#include "efsign/communicator.h"
#include "efsign/transport.h"

namespace efsign {

// Owns MPI_Init_thread/MPI_Finalize. Create exactly one, first thing in main().
// MPI_Init waits for every rank and has no deadline of its own: if it (with the set-up
// collectives here) has not returned after `init_timeout_s` seconds (0: forever), this
// rank prints one line naming the wait and exits with code 1, which makes mpirun end
// the whole job (a rank that never starts, or is stopped before MPI_Init, would
// otherwise hang every other rank in MPI_Init).
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv, double init_timeout_s = kDefaultCommTimeoutS);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  int world_rank() const { return rank_; }
  int world_size() const { return size_; }

 private:
  int rank_ = 0, size_ = 1;
};

// The value of "--comm-timeout S" or "--comm-timeout=S" in argv, else kDefaultCommTimeoutS
// (also when it does not parse: the options parser reports that later). For the
// MpiSession of a program whose options are parsed after MPI has started.
double comm_timeout_arg(int argc, char** argv);

// Rank among the processes on this host (MPI_COMM_TYPE_SHARED); MPI must be up.
int mpi_local_rank();
// Number of processes on this host (MPI_COMM_TYPE_SHARED); collective, MPI must be up.
int mpi_local_size();

// True if MPI was initialised with at least MPI_THREAD_SERIALIZED (a communication
// thread may issue collectives while no other thread does).
bool mpi_serialized_threads();

// Collectives over a private duplicate of MPI_COMM_WORLD.
//
// Note [MPI watchdog]. Every collective (and the MPI_Comm_idup that creates the
// communicator) is issued in its non-blocking form and completed by polling MPI_Test
// against a deadline of `timeout_s` seconds (0: no deadline). The polling thread spins
// (checking the clock each time), or sleeps between tests (20 us growing to 0.5 ms)
// when it asked for polite_waits(). A wait that passes the deadline throws CommError
// naming the collective, its number on this communicator, and the ranks that did not
// arrive: after its deadline a rank sends a probe to every peer over a process-wide
// side communicator, and every rank that has waited more than 0.2 s in any collective
// answers with what it waits in. A rank that does not answer within 2 s is stopped,
// hung outside MPI or dead; the others are named with where they wait (a rank may be
// one collective ahead: it can finish one before another rank has all of its data).
// If every rank answers, the ranks called collectives in different orders. Nothing is
// exchanged while collectives complete in time, so the normal path costs one MPI_Test
// and one clock read per poll (and, from 64 KiB, Open MPI's ring for the non-blocking
// allreduce, chosen through MPI_T: its default there is twice as slow).
// Of the ranks that time out together, the lowest one that answered reports (the
// others wait for its MPI_Abort, then report themselves), so the job ends with one
// message. After a CommError the communicator is unusable (its collective may still
// be pending): the caller must abort the job.
class MpiCommunicator final : public HostCommunicator {
 public:
  // `label` names the communicator in messages ("control", "data").
  explicit MpiCommunicator(double timeout_s = kDefaultCommTimeoutS, std::string label = "world");
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
