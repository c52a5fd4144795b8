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

struct TransportOptions {
  Transport transport = Transport::kMpi;
  // NCCL: the GPU this rank uses (-1: its local rank, one GPU per rank).
  int device = -1;
  // NCCL: seconds set-up or a collective may take before the job is aborted (0: forever).
  double timeout_s = 300;
};

// The control plane: collectives over every MPI rank (MPI must be initialised).
std::shared_ptr<HostCommunicator> make_control_communicator();

// Collective over `control`'s ranks: the data plane. MPI: a communicator of its own
// (so its byte counters see only gradient traffic); NCCL: one GPU per rank (UsageError
// when efsign was built without NCCL).
std::shared_ptr<Communicator> make_data_communicator(HostCommunicator& control, const TransportOptions& options);

}  // namespace efsign
