// efsign/transport.h — makes the communicators, so that no caller picks a class by
// hand (or downcasts one): the control plane is always MPI over host memory; the data
// plane that moves the gradients is MPI (host memory) or NCCL (GPU memory).
#pragma once

#include <memory>
#include <string>

#include "efsign/communicator.h"

namespace efsign {

enum class Transport { kMpi, kNccl };

Transport parse_transport(const std::string& name);  // "mpi" | "nccl"; throws UsageError
std::string transport_name(Transport transport);

// Seconds a collective may wait for its peers before the job is aborted (--comm-timeout).
inline constexpr double kDefaultCommTimeoutS = 300;

struct TransportOptions {
  Transport transport = Transport::kMpi;
  // NCCL: the GPU this rank uses (-1: its local rank, one GPU per rank).
  int device = -1;
  // Seconds set-up or a collective may take before CommError (0: forever); MPI and NCCL
  // (Note [MPI watchdog] in mpi_communicator.h).
  double timeout_s = kDefaultCommTimeoutS;
};

// The control plane: collectives over every MPI rank (MPI must be initialised), each
// under a deadline of `timeout_s` seconds (0: forever).
std::shared_ptr<HostCommunicator> make_control_communicator(double timeout_s = kDefaultCommTimeoutS);

// Collective over `control`'s ranks: the data plane. MPI: a communicator of its own
// (so its byte counters see only gradient traffic); NCCL: one GPU per rank (UsageError
// when efsign was built without NCCL).
std::shared_ptr<Communicator> make_data_communicator(HostCommunicator& control, const TransportOptions& options);

}  // namespace efsign
