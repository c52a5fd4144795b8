#include "efsign/mpi_communicator.h"

#include <mpi.h>

#include <climits>

#include <fmt/format.h>

#include "efsign/error.h"

namespace efsign {

namespace {
int checked_count(std::size_t n, const char* what) {
  if (n > static_cast<std::size_t>(INT_MAX))
    throw Error(fmt::format("{}: {} elements exceed MPI's int count limit", what, n));
  return static_cast<int>(n);
}
}  // namespace

MpiSession::MpiSession(int* argc, char*** argv) {
  int provided = 0;
  EFSIGN_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
  EFSIGN_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
  EFSIGN_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size_));
  local_rank_ = mpi_local_rank();
}

int mpi_local_rank() {
  int rank = 0, local_rank = 0;
  EFSIGN_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  MPI_Comm local;
  EFSIGN_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &local));
  EFSIGN_MPI_CHECK(MPI_Comm_rank(local, &local_rank));
  MPI_Comm_free(&local);
  return local_rank;
}

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
  EFSIGN_MPI_CHECK(MPI_Allgather(send.data(), n, MPI_BYTE, recv.data(), n, MPI_BYTE, impl_->comm));
  count(static_cast<int64_t>(send.size()));
}

void MpiCommunicator::allreduce_sum(Span<float> data) {
  const int n = checked_count(data.size(), "allreduce");
  EFSIGN_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data.data(), n, MPI_FLOAT, MPI_SUM, impl_->comm));
  count(static_cast<int64_t>(data.size_bytes()));
}

void MpiCommunicator::allreduce_sum(Span<double> data) {
  const int n = checked_count(data.size(), "allreduce");
  EFSIGN_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data.data(), n, MPI_DOUBLE, MPI_SUM, impl_->comm));
}

void MpiCommunicator::broadcast(Span<std::byte> data, int root) {
  const int n = checked_count(data.size(), "broadcast");
  EFSIGN_MPI_CHECK(MPI_Bcast(data.data(), n, MPI_BYTE, root, impl_->comm));
}

void MpiCommunicator::barrier() { EFSIGN_MPI_CHECK(MPI_Barrier(impl_->comm)); }

}  // namespace efsign
