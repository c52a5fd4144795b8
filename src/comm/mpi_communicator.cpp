#include "efsign/mpi_communicator.h"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <utility>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "efsign/error.h"

namespace efsign {

namespace {
// Completes `req`: MPI_Wait, or with polite_waits() MPI_Test and growing sleeps (each
// MPI_Test also drives Open MPI's progress engine).
void complete(MPI_Request& req) {
  if (!polite_waits()) {
    EFSIGN_MPI_CHECK(MPI_Wait(&req, MPI_STATUS_IGNORE));
    return;
  }
  auto nap = std::chrono::microseconds(20);
  for (;;) {
    int done = 0;
    EFSIGN_MPI_CHECK(MPI_Test(&req, &done, MPI_STATUS_IGNORE));
    if (done) return;
    std::this_thread::sleep_for(nap);
    nap = std::min(nap * 2, std::chrono::microseconds(500));
  }
}

int checked_count(std::size_t n, const char* what) {
  if (n > static_cast<std::size_t>(INT_MAX))
    throw Error(fmt::format("{}: {} elements exceed MPI's int count limit", what, n));
  return static_cast<int>(n);
}
}  // namespace

MpiSession::MpiSession(int* argc, char*** argv) {
  int provided = 0;
  // SERIALIZED: with --overlap a communication thread issues the data collectives while
  // the main thread runs backward; the two never call MPI at the same time.
  EFSIGN_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided));
  (void)provided;  // checked where a second thread needs it: mpi_serialized_threads()
  EFSIGN_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
  EFSIGN_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size_));
}

namespace {
// (rank, size) among the processes on this host.
std::pair<int, int> local_rank_and_size() {
  int rank = 0, local_rank = 0, local_size = 1;
  EFSIGN_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  MPI_Comm local;
  EFSIGN_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &local));
  EFSIGN_MPI_CHECK(MPI_Comm_rank(local, &local_rank));
  EFSIGN_MPI_CHECK(MPI_Comm_size(local, &local_size));
  MPI_Comm_free(&local);
  return {local_rank, local_size};
}
}  // namespace

int mpi_local_rank() { return local_rank_and_size().first; }
int mpi_local_size() { return local_rank_and_size().second; }

MpiSession::~MpiSession() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

struct MpiCommunicator::Impl {
  MPI_Comm comm = MPI_COMM_NULL;
};

MpiCommunicator::MpiCommunicator() : impl_(std::make_unique<Impl>()) {
  EFSIGN_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &impl_->comm));
  EFSIGN_MPI_CHECK(MPI_Comm_rank(impl_->comm, &rank_));
  EFSIGN_MPI_CHECK(MPI_Comm_size(impl_->comm, &size_));
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && impl_->comm != MPI_COMM_NULL) MPI_Comm_free(&impl_->comm);
}

void MpiCommunicator::allgather(Span<const std::byte> send, Span<std::byte> recv) {
  if (recv.size() != send.size() * static_cast<std::size_t>(size_))
    throw Error(fmt::format("allgather: recv holds {} bytes, need {} x {}", recv.size(), size_, send.size()));
  const int n = checked_count(send.size(), "allgather");
  if (polite_waits()) {
    MPI_Request req;
    EFSIGN_MPI_CHECK(MPI_Iallgather(send.data(), n, MPI_BYTE, recv.data(), n, MPI_BYTE, impl_->comm, &req));
    complete(req);
  } else {
    EFSIGN_MPI_CHECK(MPI_Allgather(send.data(), n, MPI_BYTE, recv.data(), n, MPI_BYTE, impl_->comm));
  }
  count(static_cast<int64_t>(send.size()), ring_allgather_wire_bytes(static_cast<int64_t>(send.size()), size_));
}

namespace {
// MPI's v-collectives take int counts and displacements.
std::vector<int> int_counts(Span<const int64_t> counts, const char* what, std::vector<int>* displs) {
  std::vector<int> out(counts.size());
  int64_t off = 0;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    out[i] = checked_count(static_cast<std::size_t>(counts[i]), what);
    if (displs) displs->push_back(checked_count(static_cast<std::size_t>(off), what));
    off += counts[i];
  }
  return out;
}
}  // namespace

void MpiCommunicator::alltoallv(Span<const std::byte> send, Span<const int64_t> counts, Span<std::byte> recv) {
  check_and_count_alltoallv(send, counts, recv);
  std::vector<int> sdispl, rdispl;
  const std::vector<int> scount = int_counts(counts, "alltoallv", &sdispl);
  const int mine = scount[rank_];
  const std::vector<int> rcount(size_, mine);
  for (int w = 0; w < size_; ++w) rdispl.push_back(checked_count(static_cast<std::size_t>(w) * mine, "alltoallv"));
  MPI_Request req;
  EFSIGN_MPI_CHECK(MPI_Ialltoallv(send.data(), scount.data(), sdispl.data(), MPI_BYTE, recv.data(), rcount.data(),
                                  rdispl.data(), MPI_BYTE, impl_->comm, &req));
  complete(req);
}

void MpiCommunicator::allgatherv(Span<const std::byte> send, Span<const int64_t> counts, Span<std::byte> recv) {
  check_and_count_allgatherv(send, counts, recv);
  std::vector<int> displ;
  const std::vector<int> rcount = int_counts(counts, "allgatherv", &displ);
  MPI_Request req;
  EFSIGN_MPI_CHECK(MPI_Iallgatherv(send.data(), rcount[rank_], MPI_BYTE, recv.data(), rcount.data(), displ.data(),
                                   MPI_BYTE, impl_->comm, &req));
  complete(req);
}

void MpiCommunicator::allreduce_sum(Span<float> data) {
  const int n = checked_count(data.size(), "allreduce");
  EFSIGN_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data.data(), n, MPI_FLOAT, MPI_SUM, impl_->comm));
  count(static_cast<int64_t>(data.size_bytes()), ring_allreduce_wire_bytes(static_cast<int64_t>(data.size_bytes()), size_));
}

void MpiCommunicator::allreduce_sum(Span<double> data) {
  const int n = checked_count(data.size(), "allreduce");
  EFSIGN_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data.data(), n, MPI_DOUBLE, MPI_SUM, impl_->comm));
}

void MpiCommunicator::broadcast(Span<std::byte> data, int root) {
  const int n = checked_count(data.size(), "broadcast");
  EFSIGN_MPI_CHECK(MPI_Bcast(data.data(), n, MPI_BYTE, root, impl_->comm));
}

bool mpi_serialized_threads() {
  int provided = MPI_THREAD_SINGLE;
  EFSIGN_MPI_CHECK(MPI_Query_thread(&provided));
  return provided >= MPI_THREAD_SERIALIZED;
}

void MpiCommunicator::barrier() { EFSIGN_MPI_CHECK(MPI_Barrier(impl_->comm)); }

}  // namespace efsign
